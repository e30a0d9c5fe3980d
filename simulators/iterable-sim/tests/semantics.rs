//! Upsert, merge, type locking, forgotten users, identity, commerce and list semantics.
#![allow(clippy::unwrap_used)]

mod common;

use common::Sim;
use iterable_sim::{EventView, ProfileView, PurchaseView, SimConfig};
use serde_json::{Value, json};

async fn sim() -> Sim {
    Sim::start(SimConfig::without_rate_limits()).await
}

async fn profile(sim: &Sim, email: &str) -> ProfileView {
    let v = sim.inspect(&format!("/_sim/profiles?email={email}")).await;
    let mut list: Vec<ProfileView> = serde_json::from_value(v).unwrap();
    assert_eq!(list.len(), 1, "profile {email}");
    list.remove(0)
}

async fn events(sim: &Sim, query: &str) -> Vec<EventView> {
    serde_json::from_value(sim.inspect(&format!("/_sim/events{query}")).await).unwrap()
}

#[tokio::test]
async fn malformed_json_and_wrong_types() {
    let sim = sim().await;
    let key = Some(("Api-Key", iterable_sim::DEFAULT_API_KEY));
    let r = sim
        .send(
            reqwest::Method::POST,
            "/api/users/update",
            key,
            Some("{not json".into()),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BadJsonBody")));
    let r = sim.post("/api/users/update", json!({"email": 5})).await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));
    let r = sim.post("/api/events/trackBulk", json!({"evts": []})).await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));
    let r = sim
        .post("/api/events/track", json!({"email": "a@example.com"}))
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));
    let r = sim
        .post("/api/users/update", json!({"email": "not an email"}))
        .await;
    assert_eq!(r.status_and_code(), (400, Some("InvalidEmailAddressError")));
    let r = sim
        .post("/api/users/update", json!({"userId": "x".repeat(53)}))
        .await;
    assert_eq!(r.status_and_code(), (400, Some("InvalidUserIdError")));
}

#[tokio::test]
async fn profile_merge_with_and_without_merge_nested_objects() {
    let sim = sim().await;
    let r = sim
        .post(
            "/api/users/update",
            json!({"email": "m@example.com", "dataFields": {"a": 1, "prefs": {"x": 1, "y": 1}}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({"msg": "", "code": "Success", "params": null})
    );
    // Fields not sent are kept; a top-level object replaces by default.
    sim.post(
        "/api/users/update",
        json!({"email": "m@example.com", "dataFields": {"b": "s", "prefs": {"z": 1}}}),
    )
    .await;
    let p = profile(&sim, "m@example.com").await;
    assert_eq!(
        Value::Object(p.data_fields),
        json!({"a": 1, "b": "s", "prefs": {"z": 1}})
    );
    // mergeNestedObjects merges the top-level object's keys.
    sim.post(
        "/api/users/update",
        json!({"email": "m@example.com", "mergeNestedObjects": true, "dataFields": {"prefs": {"w": 2}}}),
    )
    .await;
    let p = profile(&sim, "m@example.com").await;
    assert_eq!(p.data_fields["prefs"], json!({"z": 1, "w": 2}));
    assert_eq!(p.update_count, 3);
}

#[tokio::test]
async fn event_upsert_by_id_counts_updates_and_validates_ids() {
    let sim = sim().await;
    sim.post("/api/users/update", json!({"email": "e@example.com"}))
        .await;
    let body = |n: i64| {
        json!({"email": "e@example.com", "eventName": "viewed", "id": "evt-1",
               "createdAt": 1_700_000_000, "dataFields": {"n": n}})
    };
    let r = sim.post("/api/events/track", body(1)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["msg"], "Event with id: evt-1 tracked.");
    assert_eq!(r.json["params"]["id"], "evt-1");
    let r = sim
        .post("/api/events/trackBulk", json!({"events": [body(2)]}))
        .await;
    assert_eq!(r.json["successCount"], 1);
    let evs = events(&sim, "").await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].update_count, 2);
    assert_eq!(evs[0].occurrences, 2);
    assert_eq!(evs[0].data_fields["n"], 2);
    assert_eq!(evs[0].endpoint, "events/trackBulk");
    assert_eq!(evs[0].user.email.as_deref(), Some("e@example.com"));

    // Generated ids are returned.
    let r = sim
        .post(
            "/api/events/track",
            json!({"email": "e@example.com", "eventName": "x"}),
        )
        .await;
    let id = r.json["params"]["id"].as_str().unwrap().to_string();
    assert_eq!(events(&sim, &format!("?id={id}")).await.len(), 1);

    for bad in ["gid://shopify/Order/1", "a_b", "", &"a".repeat(513)] {
        let r = sim
            .post(
                "/api/events/track",
                json!({"email": "e@example.com", "eventName": "x", "id": bad}),
            )
            .await;
        assert_eq!(r.status_and_code(), (400, Some("BadParams")), "{bad:?}");
    }
    let r = sim
        .post(
            "/api/events/track",
            json!({"email": "e@example.com", "eventName": "x", "id": "a".repeat(512)}),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn created_at_milliseconds_are_tolerated_and_counted() {
    let sim = sim().await;
    sim.post("/api/users/update", json!({"email": "t@example.com"}))
        .await;
    sim.post(
        "/api/events/track",
        json!({"email": "t@example.com", "eventName": "x", "id": "ms", "createdAt": 1_700_000_000_123i64}),
    )
    .await;
    sim.post(
        "/api/events/track",
        json!({"email": "t@example.com", "eventName": "x", "id": "s", "createdAt": 1_700_000_000}),
    )
    .await;
    let ms = &events(&sim, "?id=ms").await[0];
    assert_eq!(
        (ms.created_at, ms.created_at_was_millis),
        (1_700_000_000, true)
    );
    let s = &events(&sim, "?id=s").await[0];
    assert_eq!(
        (s.created_at, s.created_at_was_millis),
        (1_700_000_000, false)
    );
    assert_eq!(sim.stats().await.created_at_millis_seen, 1);
    let r = sim
        .post(
            "/api/events/track",
            json!({"email": "t@example.com", "eventName": "x", "createdAt": 1.5}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn events_for_unknown_users_fail_unless_configured() {
    let sim = sim().await;
    let r = sim
        .post(
            "/api/events/track",
            json!({"email": "ghost@example.com", "eventName": "x"}),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("UnknownEmailError")));
    let r = sim
        .post(
            "/api/events/trackBulk",
            json!({"events": [{"userId": "ghost", "eventName": "x"}, {"email": "ghost@example.com", "eventName": "x"}]}),
        )
        .await;
    assert_eq!(r.json["failCount"], 2);
    assert_eq!(r.json["failedUpdates"]["notFoundUserIds"], json!(["ghost"]));
    assert_eq!(
        r.json["failedUpdates"]["notFoundEmails"],
        json!(["ghost@example.com"])
    );

    let mut config = SimConfig::without_rate_limits();
    config.behaviour.track_creates_unknown_users = true;
    let sim = Sim::start(config).await;
    let r = sim
        .post(
            "/api/events/track",
            json!({"email": "ghost@example.com", "eventName": "x"}),
        )
        .await;
    assert_eq!(r.status, 200);
    profile(&sim, "ghost@example.com").await;
}

#[tokio::test]
async fn purchase_upserts_by_id_and_clears_cart_and_update_cart_replaces() {
    let sim = sim().await;
    let item = |id: &str| json!({"id": id, "name": "Thing", "price": 9.5, "quantity": 1});
    let user = json!({"email": "c@example.com", "dataFields": {"tier": "gold"}});
    let r = sim
        .post(
            "/api/commerce/updateCart",
            json!({"user": user, "items": [item("a"), item("b")]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    sim.post(
        "/api/commerce/updateCart",
        json!({"user": user, "items": [item("c")]}),
    )
    .await;
    let carts = sim.inspect("/_sim/carts").await;
    assert_eq!(carts[0]["items"], json!([item("c")]));
    assert_eq!(carts[0]["updateCount"], 2);
    assert_eq!(events(&sim, "?name=updateCart").await.len(), 2);

    let purchase = |total: f64| {
        json!({"id": "shopify-order-1", "user": user, "items": [item("c")], "total": total,
               "createdAt": 1_700_000_000})
    };
    let r = sim.post("/api/commerce/trackPurchase", purchase(9.5)).await;
    assert_eq!(r.json["params"]["id"], "shopify-order-1");
    let p = profile(&sim, "c@example.com").await;
    assert_eq!(p.shopping_cart_items, Some(vec![]));
    assert_eq!(p.data_fields["tier"], "gold");
    sim.post("/api/commerce/trackPurchase", purchase(7.0)).await;
    let ps: Vec<PurchaseView> =
        serde_json::from_value(sim.inspect("/_sim/purchases").await).unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!((ps[0].total, ps[0].update_count), (7.0, 2));

    let r = sim
        .post(
            "/api/commerce/trackPurchase",
            json!({"user": user, "items": [{"id": "x"}], "total": 1}),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));
    let r = sim
        .post(
            "/api/commerce/trackPurchase",
            json!({"user": user, "items": []}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn type_mismatch_fails_the_whole_bulk_request() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "a@example.com", "dataFields": {"signupAt": "2020-01-01", "n": 1}}),
    )
    .await;
    let r = sim
        .post(
            "/api/users/bulkUpdate",
            json!({"users": [
                {"email": "b@example.com", "dataFields": {"n": 2}},
                {"email": "c@example.com", "dataFields": {"signupAt": "GGG"}},
            ]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["code"], "RequestFieldsTypesMismatched");
    let err = &r.json["params"]["validationErrors"]["signupAt"];
    assert_eq!(err["expectedType"], "date");
    assert_eq!(err["offendingValue"], "GGG");
    assert_eq!(err["category"], "user");
    assert_eq!(err["_type"], "UnexpectedType");
    assert_eq!(err["incomingTypes"], json!(["string", "keyword"]));
    // Nothing of the failed request was written.
    let all = sim.inspect("/_sim/profiles").await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    // Event fields are locked per event name.
    sim.post(
        "/api/events/track",
        json!({"email": "a@example.com", "eventName": "e1", "dataFields": {"v": 1}}),
    )
    .await;
    let r = sim
        .post(
            "/api/events/trackBulk",
            json!({"events": [
                {"email": "a@example.com", "eventName": "e2", "dataFields": {"v": "s"}},
                {"email": "a@example.com", "eventName": "e1", "dataFields": {"v": "s"}},
            ]}),
        )
        .await;
    assert_eq!(
        r.status_and_code(),
        (400, Some("RequestFieldsTypesMismatched"))
    );
    assert_eq!(events(&sim, "?name=e2").await.len(), 0);
}

#[tokio::test]
async fn forgotten_users_get_409_and_bulk_failed_updates() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "f@example.com", "userId": "u-f"}),
    )
    .await;
    sim.post(
        "/api/events/track",
        json!({"email": "f@example.com", "eventName": "x"}),
    )
    .await;
    let r = sim
        .post("/api/users/forget", json!({"email": "f@example.com"}))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        sim.inspect("/_sim/profiles")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(events(&sim, "").await.is_empty());
    for (path, body) in [
        ("/api/users/update", json!({"email": "f@example.com"})),
        ("/api/users/update", json!({"userId": "u-f"})),
        (
            "/api/events/track",
            json!({"email": "f@example.com", "eventName": "x"}),
        ),
        (
            "/api/commerce/updateCart",
            json!({"user": {"email": "f@example.com"}, "items": []}),
        ),
    ] {
        let r = sim.post(path, body).await;
        assert_eq!(
            r.status_and_code(),
            (409, Some("ForgottenUserError")),
            "{path}"
        );
    }
    let r = sim
        .post(
            "/api/users/bulkUpdate",
            json!({"users": [
                {"email": "f@example.com"}, {"userId": "u-f"}, {"email": "ok@example.com"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json["successCount"].as_u64(),
            r.json["failCount"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        r.json["failedUpdates"]["forgottenEmails"],
        json!(["f@example.com"])
    );
    assert_eq!(r.json["failedUpdates"]["forgottenUserIds"], json!(["u-f"]));
    let r = sim
        .post(
            "/api/events/trackBulk",
            json!({"events": [{"email": "f@example.com", "eventName": "x"}]}),
        )
        .await;
    assert_eq!(
        r.json["failedUpdates"]["forgottenEmails"],
        json!(["f@example.com"])
    );

    sim.post("/api/users/unforget", json!({"email": "f@example.com"}))
        .await;
    sim.post("/api/users/unforget", json!({"userId": "u-f"}))
        .await;
    let r = sim
        .post("/api/users/update", json!({"email": "f@example.com"}))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn hybrid_identity_conflicts_and_update_email() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "a@example.com", "userId": "ua"}),
    )
    .await;
    sim.post(
        "/api/users/update",
        json!({"email": "b@example.com", "userId": "ub"}),
    )
    .await;
    let r = sim
        .post(
            "/api/users/update",
            json!({"email": "a@example.com", "userId": "ub"}),
        )
        .await;
    assert_eq!(r.status, 409);
    // Changing email through dataFields (hybrid).
    let r = sim
        .post(
            "/api/users/update",
            json!({"userId": "ua", "dataFields": {"email": "a2@example.com"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        profile(&sim, "a2@example.com").await.user_id.as_deref(),
        Some("ua")
    );

    sim.post(
        "/api/events/track",
        json!({"userId": "ub", "eventName": "x", "id": "ev-b"}),
    )
    .await;
    let r = sim
        .post(
            "/api/users/updateEmail",
            json!({"currentEmail": "b@example.com", "newEmail": "b2@example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Profile and its events moved to the new email.
    assert_eq!(
        events(&sim, "?id=ev-b").await[0].user.email.as_deref(),
        Some("b2@example.com")
    );
    let r = sim
        .api_get("/api/users/getByEmail?email=b@example.com")
        .await;
    assert_eq!(r.json, json!({}));
    let r = sim
        .api_get("/api/users/getByEmail?email=b2@example.com")
        .await;
    assert_eq!(r.json["user"]["userId"], "ub");
    // Taken and invalid targets, unknown source.
    let r = sim
        .post(
            "/api/users/updateEmail",
            json!({"currentUserId": "ub", "newEmail": "a2@example.com"}),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("EmailAlreadyExists")));
    let r = sim
        .post(
            "/api/users/updateEmail",
            json!({"currentUserId": "ub", "newEmail": "nope"}),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("InvalidEmailAddressError")));
    let r = sim
        .post(
            "/api/users/updateEmail",
            json!({"currentEmail": "zz@example.com", "newEmail": "q@example.com"}),
        )
        .await;
    assert_eq!(r.status, 400);
    sim.post("/api/users/forget", json!({"email": "gone@example.com"}))
        .await;
    let r = sim
        .post(
            "/api/users/updateEmail",
            json!({"currentUserId": "ub", "newEmail": "gone@example.com"}),
        )
        .await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn email_owned_by_another_user_is_email_already_exists_and_writes_nothing() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "taken@example.com", "userId": "owner"}),
    )
    .await;
    // Single: 400 EmailAlreadyExists, and the rejected update leaves no trace.
    let r = sim
        .post(
            "/api/users/update",
            json!({"userId": "newcomer", "dataFields": {"email": "taken@example.com", "firstName": "Ann"}}),
        )
        .await;
    assert_eq!(
        r.status_and_code(),
        (400, Some("EmailAlreadyExists")),
        "{}",
        r.text
    );
    let r = sim.api_get("/api/users/byUserId/newcomer").await;
    assert_eq!(
        r.json,
        json!({}),
        "a rejected update must not create the user"
    );
    // Bulk: HTTP 200, the record fails and is named in failedUpdates.conflictEmails; the
    // other record of the request is written.
    let r = sim
        .post(
            "/api/users/bulkUpdate",
            json!({"users": [
                {"userId": "newcomer", "dataFields": {"email": "taken@example.com", "firstName": "Ann"}},
                {"userId": "other", "dataFields": {"email": "free@example.com"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["successCount"], 1);
    assert_eq!(r.json["failCount"], 1);
    assert_eq!(
        r.json["failedUpdates"]["conflictEmails"],
        json!(["taken@example.com"])
    );
    let r = sim.api_get("/api/users/byUserId/newcomer").await;
    assert_eq!(r.json, json!({}));
    assert_eq!(
        profile(&sim, "free@example.com").await.user_id.as_deref(),
        Some("other")
    );
    assert_eq!(
        profile(&sim, "taken@example.com").await.user_id.as_deref(),
        Some("owner")
    );
}

#[tokio::test]
async fn lists_subscribe_unsubscribe_and_invalid_list() {
    let sim = sim().await;
    let r = sim
        .post("/api/lists/subscribe", json!({"listId": 2, "subscribers": [
            {"email": "l1@example.com", "dataFields": {"src": "x"}}, {"email": "l2@example.com"}, {"email": "bad"}
        ]}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json["successCount"].as_u64(),
            r.json["failCount"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(r.json["failedUpdates"]["invalidEmails"], json!(["bad"]));
    let lists = sim.inspect("/_sim/lists").await;
    let l2 = lists
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["listId"] == 2)
        .unwrap();
    assert_eq!(l2["size"], 2);
    assert_eq!(profile(&sim, "l1@example.com").await.list_ids, vec![2]);

    let r = sim
        .post(
            "/api/lists/unsubscribe",
            json!({"listId": 2, "subscribers": [
                {"email": "l1@example.com"}, {"email": "nobody@example.com"}
            ]}),
        )
        .await;
    assert_eq!(r.json["successCount"], 1);
    assert_eq!(
        r.json["failedUpdates"]["notFoundEmails"],
        json!(["nobody@example.com"])
    );
    assert!(profile(&sim, "l1@example.com").await.list_ids.is_empty());

    let r = sim
        .post(
            "/api/lists/subscribe",
            json!({"listId": 999, "subscribers": []}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["code"], "Success");
    assert_eq!(r.json["msg"], "error.lists.invalidListId(999)");
    assert_eq!(r.json["params"]["listId"], 999);

    // updateExistingUsersOnly skips unknown users in hybrid projects.
    let r = sim
        .post(
            "/api/lists/subscribe",
            json!({"listId": 1, "updateExistingUsersOnly": true,
               "subscribers": [{"email": "new@example.com"}, {"email": "l2@example.com"}]}),
        )
        .await;
    assert_eq!(
        r.json["failedUpdates"]["notFoundEmails"],
        json!(["new@example.com"])
    );
}

#[tokio::test]
async fn subscriptions_overwrite_and_bulk_answers() {
    let sim = sim().await;
    let r = sim
        .post("/api/users/updateSubscriptions", json!({"email": "s@example.com", "emailListIds": [1, 2], "unsubscribedChannelIds": [5]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    sim.post(
        "/api/users/updateSubscriptions",
        json!({"email": "s@example.com", "emailListIds": [3]}),
    )
    .await;
    let p = profile(&sim, "s@example.com").await;
    assert_eq!(p.list_ids, vec![3]);
    assert_eq!(p.unsubscribed_channel_ids, vec![5]);
    let r = sim
        .post(
            "/api/users/bulkUpdateSubscriptions",
            json!({"updateSubscriptionsRequests": [
                {"email": "s@example.com", "unsubscribedMessageTypeIds": [7]}, {"email": "bad"}
            ]}),
        )
        .await;
    assert_eq!(r.json["successCount"], 1);
    assert_eq!(r.json["invalidEmails"], json!(["bad"]));
    assert_eq!(r.json["validEmailFailures"], json!([]));
    let r = sim
        .post(
            "/api/users/updateSubscriptions",
            json!({"email": "s@example.com", "subscribedMessageTypeIds": [1]}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn deletes_and_lookups() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "d@example.com", "userId": "ud", "dataFields": {"k": 1}}),
    )
    .await;
    let r = sim.api_get("/api/users/byUserId/ud").await;
    assert_eq!(r.json["user"]["dataFields"]["k"], 1);
    assert_eq!(r.json["user"]["dataFields"]["userListIds"], json!([]));
    let r = sim.api_get("/api/users/d@example.com").await;
    assert_eq!(r.json["user"]["email"], "d@example.com");
    let r = sim.api_delete("/api/users/d@example.com").await;
    assert_eq!(r.status, 200);
    let r = sim.api_delete("/api/users/d@example.com").await;
    assert_eq!(r.status_and_code(), (404, Some("NotFound")));
    // A delete does not block future writes.
    sim.post("/api/users/update", json!({"userId": "ud"})).await;
    let r = sim.api_delete("/api/users/byUserId/ud").await;
    assert_eq!(r.status, 200);
    let r = sim.api_delete("/api/users/byUserId/ud").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn user_id_and_email_project_types() {
    let config = SimConfig::from_toml_str(
        r#"
        [rate_limits]
        enabled = false
        [[projects]]
        id = 10
        type = "userId"
        api_keys = ["uid"]
        [[projects]]
        id = 20
        type = "email"
        api_keys = ["em"]
        "#,
    )
    .unwrap();
    let sim = Sim::start(config).await;
    // userID-based: email alone does not identify.
    let r = sim
        .post_with_key(
            "/api/users/update",
            "uid",
            json!({"email": "x@example.com"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = sim
        .post_with_key(
            "/api/users/update",
            "uid",
            json!({"userId": "u1", "email": "x@example.com"}),
        )
        .await;
    assert_eq!(r.status, 200);
    // Email is not unique there.
    let r = sim
        .post_with_key(
            "/api/users/update",
            "uid",
            json!({"userId": "u2", "email": "x@example.com"}),
        )
        .await;
    assert_eq!(r.status, 200);
    // Email-based: userId-only needs preferUserId for a new user (placeholder email).
    let r = sim
        .post_with_key("/api/users/update", "em", json!({"userId": "p1"}))
        .await;
    assert_eq!(r.status_and_code(), (400, Some("UnknownUserIdError")));
    let r = sim
        .post_with_key(
            "/api/users/update",
            "em",
            json!({"userId": "p1", "preferUserId": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = sim.inspect("/_sim/profiles?project=20&userId=p1").await;
    assert!(
        v[0]["email"]
            .as_str()
            .unwrap()
            .ends_with("@placeholder.email")
    );
    assert_eq!(
        sim.inspect("/_sim/profiles?project=10")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn create_new_fields_false_filters_unknown_fields() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "a@example.com", "dataFields": {"known": 1}}),
    )
    .await;
    let r = sim
        .post(
            "/api/users/bulkUpdate",
            json!({"createNewFields": false, "users": [
                {"email": "a@example.com", "dataFields": {"known": 2, "fresh": true}}
            ]}),
        )
        .await;
    assert_eq!(r.json["filteredOutFields"], json!(["fresh"]));
    let p = profile(&sim, "a@example.com").await;
    assert_eq!(Value::Object(p.data_fields), json!({"known": 2}));
    let r = sim
        .post(
            "/api/users/bulkUpdate",
            json!({"users": [{"email": "a@example.com", "dataFields": {"fresh": true}}]}),
        )
        .await;
    assert_eq!(r.json["createdFields"], json!(["fresh"]));
}

#[tokio::test]
async fn reset_clears_everything() {
    let sim = sim().await;
    sim.post(
        "/api/users/update",
        json!({"email": "a@example.com", "dataFields": {"n": 1}}),
    )
    .await;
    let r = sim
        .send(reqwest::Method::POST, "/_sim/reset", None, None)
        .await;
    assert_eq!(r.status, 200);
    assert!(
        sim.inspect("/_sim/profiles")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(sim.stats().await.totals.requests, 0);
    // Type locks are gone too.
    let r = sim
        .post(
            "/api/users/update",
            json!({"email": "a@example.com", "dataFields": {"n": "s"}}),
        )
        .await;
    assert_eq!(r.status, 200);
}
