//! Forgotten users, identity conflicts, lists and subscriptions, deletes and lookups, project types.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, events, profile, sim};
use iterable_sim::SimConfig;
use serde_json::{Value, json};

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
