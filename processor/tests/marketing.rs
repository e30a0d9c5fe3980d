//! The engine with the marketing rules: events that arrive on entity keys reach their customer.
//!
//! Required outcomes of the routing mechanism (issue: processor engine, item 5): a refund,
//! keyed by its order, reaches the state of the customer who placed the order; an email-only
//! checkout and the order that completes it meet in one state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};
use schemas::Action;

fn latest_ltv(cmds: &[schemas::IterableCommand], key: &str) -> Option<f64> {
    cmds.iter()
        .filter(|c| c.customer_key == key)
        .filter_map(|c| match &c.action {
            Action::UpsertUser { data_fields, .. } => data_fields
                .get("shopify_lifetime_value")
                .and_then(serde_json::Value::as_f64)
                .map(|v| (c.event_time_ms, v)),
            _ => None,
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread")]
async fn refunds_reach_the_customer_and_guest_checkouts_meet_their_order() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let now = runtime::now_ms();
    let customer = 820_982_911_946_154_508u64;
    let order_id = 5_550_000_000_001u64;
    // A registered customer's order, then its refund (keyed by the order id only).
    let order = envelope(
        "orders/paid",
        "d-order",
        now - 60_000,
        &order_body(
            order_id,
            customer,
            "ada@example.com",
            "100.00",
            "tok-ada",
            now - 60_000,
        ),
    );
    let refund = envelope(
        "refunds/create",
        "d-refund",
        now - 30_000,
        &refund_body(990001, order_id, "30.00", now - 30_000),
    );
    // A guest checkout (email only), completed by an order placed as a registered customer.
    let checkout = envelope(
        "checkouts/create",
        "d-checkout",
        now - 120_000,
        &guest_checkout_body("tok-guest", "guest@example.com", "40.00", now - 120_000),
    );
    let completing = envelope(
        "orders/paid",
        "d-guest-order",
        now - 90_000,
        &order_body(
            order_id + 1,
            77,
            "guest@example.com",
            "40.00",
            "tok-guest",
            now - 90_000,
        ),
    );
    // The refund is produced first on purpose: it waits on the order key until the link arrives.
    produce(&k, &topics.raw, &[refund, checkout, order, completing]).await;

    let d = Deployment::new(&k, &topics, unique("mkt"));
    let mut p = d.spawn_with("m", &[("TILLSTREAM__RULES__KIND", "marketing")]);
    let ada = customer_key(customer);
    let cmds = wait_for(
        "the refund to correct the lifetime value",
        Duration::from_secs(90),
        || {
            let c = commands(&k, &topics);
            (latest_ltv(&c, &ada) == Some(70.0)).then_some(c)
        },
    );
    // `order_refunded` waits for the facts up to the refund (a timer; this deployment has no
    // ingest heartbeats, so it stays pending and shows in the view below).
    assert!(!cmds.iter().any(|c| c.customer_key == ada && matches!(&c.action, Action::TrackEvent { event_name, .. } if event_name == "order_refunded")));

    // The readable view (issue 16): the aggregate in business terms, timers in words.
    let (status, body) = p.get(&format!("/customers/{ada}")).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let c = &v["customer"];
    assert_eq!(c["identity"]["email"], "ada@example.com", "{body}");
    assert_eq!(
        c["lifetime"]["lifetime_value"],
        serde_json::json!({"amount": "70.00", "currency": "USD"}),
        "{body}"
    );
    assert_eq!(c["lifetime"]["orders"], 1, "{body}");
    assert_eq!(c["lifetime"]["recent_refund"], true, "{body}");
    let winback = v["timers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "winback"))
        .unwrap_or_else(|| panic!("no winback timer: {body}"));
    assert!(
        winback["due_in"].as_str().unwrap().starts_with("in "),
        "{body}"
    );
    let refund = v["timers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "refund"))
        .unwrap_or_else(|| panic!("no refund announcement pending: {body}"));
    assert!(
        refund["effect"].as_str().unwrap().contains("refund 990001"),
        "{body}"
    );
    assert!(v["dedup"]["remembered"].as_u64().unwrap() >= 1, "{body}");

    // The checkout met the order that completed it. The address belongs to customer 77 (who
    // placed that order), so the e-mail key handed the guest checkout to the customer's key
    // (one writer per Iterable user): the completed checkout lives there.
    let owner = customer_key(77);
    let state = wait_for(
        "the completion to reach the checkout's state",
        Duration::from_secs(60),
        || {
            let (status, body) = p.get(&format!("/customers/{owner}?raw=true"))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let completed = v["state"]["aggregate"]["k"]
                .as_array()?
                .iter()
                .any(|c| c.get("c").is_some());
            (status == 200 && completed).then_some(v)
        },
    );
    p.terminate();
    assert_eq!(state["owned_here"], true);
    assert!(!cmds.iter().any(|c| matches!(&c.action, Action::TrackEvent { event_name, .. } if event_name == "checkout_abandoned")));
}
