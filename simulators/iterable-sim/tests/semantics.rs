//! Upsert, merge and type locking of profiles, events, purchases and carts.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, events, profile, sim};
use iterable_sim::{PurchaseView, SimConfig};
use serde_json::{Value, json};

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
