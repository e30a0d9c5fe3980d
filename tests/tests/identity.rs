//! End to end: a registered customer who also checks out as a guest ends with one Iterable user
//! holding the lifetime value of all their orders (ingest → Kafka → processor → publisher →
//! iterable-sim, hybrid project).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use iterable_sim::Filter;
use serde_json::{Value, json};
use shopify_sim::Delivery;
use tests::{Stack, StackOptions, send_all, wait_until};

const SHOP: &str = "identity-e2e.myshopify.com";
const CUSTOMER: u64 = 6_240_000_000_017;
const EMAIL: &str = "rowan.hale@example.org";
/// 2026-03-02T10:00:00Z.
const T0: i64 = 1_772_445_600_000;
const MIN: i64 = 60_000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn delivery(topic: &str, id: &str, ms: i64, body: &serde_json::Value) -> Delivery {
    tests::delivery(SHOP, topic, id, ms, body)
}

fn order(id: u64, customer: bool, ms: i64, total: &str, token: Option<&str>) -> Value {
    let money = |a: &str| json!({"shop_money": {"amount": a, "currency_code": "USD"}, "presentment_money": {"amount": a, "currency_code": "USD"}});
    json!({
        "id": id, "name": format!("#{}", id % 10_000), "email": EMAIL, "contact_email": EMAIL,
        "created_at": at(ms).to_rfc3339(), "updated_at": at(ms).to_rfc3339(), "processed_at": at(ms).to_rfc3339(),
        "currency": "USD", "presentment_currency": "USD", "total_price": total, "total_price_set": money(total),
        "financial_status": "paid", "test": false, "checkout_token": token,
        // A real-world oddity on a secondary field: the checkbox as a string.
        "buyer_accepts_marketing": "FALSE",
        "customer": if customer {
            json!({"id": CUSTOMER, "email": EMAIL, "first_name": "Rowan", "last_name": "Hale", "state": "enabled",
                "created_at": at(T0).to_rfc3339(), "updated_at": at(T0).to_rfc3339()})
        } else { Value::Null },
        "line_items": [{"id": id + 1, "variant_id": 40_001, "product_id": 30_001, "sku": "TK-1", "title": "Kettle",
            "name": "Kettle", "quantity": 1, "price": total, "price_set": money(total)}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_customers_guest_checkout_counts_for_the_customer_in_iterable() {
    let kafka = runtime::testing::kafka();
    // The production timer rule: the email key's deferred profile write waits until every
    // partition's inputs up to it are in, the customer's forwarded claim included. (Stream
    // time of the raw input alone let the write go out before the claim was read.)
    let stack = Stack::start(StackOptions::historical(kafka).live_timers(&[]))
        .await
        .unwrap();
    let customer = json!({"id": CUSTOMER, "email": EMAIL, "first_name": "Rowan", "last_name": "Hale",
        "state": "enabled", "created_at": at(T0).to_rfc3339(), "updated_at": at(T0).to_rfc3339()});
    let checkout = json!({"id": 98_001, "token": "tok-guest-1", "email": EMAIL, "customer": null,
        "created_at": at(T0 + 60 * MIN).to_rfc3339(), "updated_at": at(T0 + 60 * MIN).to_rfc3339(),
        "currency": "USD", "total_price": "50.00", "line_items": [{"variant_id": 40_001, "title": "Kettle", "quantity": 1, "price": "50.00"}]});
    let deliveries = vec![
        delivery("customers/create", "cc", T0, &customer),
        delivery(
            "orders/paid",
            "o1",
            T0 + 10 * MIN,
            &order(71_001, true, T0 + 10 * MIN, "100.00", None),
        ),
        delivery("checkouts/update", "k1", T0 + 60 * MIN, &checkout),
        delivery(
            "orders/paid",
            "o2",
            T0 + 70 * MIN,
            &order(71_002, false, T0 + 70 * MIN, "50.00", Some("tok-guest-1")),
        ),
    ];
    send_all(&stack.webhook_url(), deliveries, 50.0)
        .await
        .unwrap();
    // Ingest's heartbeats (the wall clock, months after the timeline) move time past every
    // timer: wait for the customer's figures, then for every timer to have fired.
    wait_until(
        "the customer's user holds both orders",
        Duration::from_secs(120),
        || {
            let done = stack
                .sim_state()
                .profiles(&Filter::default())
                .iter()
                .any(|p| {
                    p.user_id.as_deref() == Some(CUSTOMER.to_string().as_str())
                        && p.data_fields
                            .get("shopify_orders_count")
                            .and_then(Value::as_f64)
                            == Some(2.0)
                });
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap();
    stack
        .wait_no_timer_held(Duration::from_secs(120))
        .await
        .unwrap();
    stack.wait_drained(Duration::from_secs(120)).await.unwrap();

    let sim = stack.sim_state();
    let profiles = sim.profiles(&Filter::default());
    let with_ltv: Vec<_> = profiles
        .iter()
        .filter(|p| p.data_fields.contains_key("shopify_lifetime_value"))
        .collect();
    assert_eq!(
        with_ltv.len(),
        1,
        "one Iterable user holds the figures: {with_ltv:#?}"
    );
    let p = with_ltv[0];
    assert_eq!(p.user_id.as_deref(), Some(CUSTOMER.to_string().as_str()));
    assert_eq!(p.email.as_deref(), Some(EMAIL), "{profiles:#?}");
    assert_eq!(
        p.data_fields["shopify_lifetime_value"].as_f64(),
        Some(150.0),
        "{:?}",
        p.data_fields
    );
    assert_eq!(p.data_fields["shopify_orders_count"].as_f64(), Some(2.0));
    let abandoned = sim.events(&Filter {
        name: Some("checkout_abandoned".into()),
        ..Filter::default()
    });
    assert!(
        abandoned.is_empty(),
        "the guest checkout was completed: {abandoned:?}"
    );
    assert_eq!(stack.side_topic_records(&stack.topics.processor_dlq), 0);
    stack.shutdown().await;
}
