//! `tillstream explain` through the whole stack: with the processor's decision trail on, a
//! customer's decisions come back with their inputs and outcomes (applied, duplicate,
//! dead-lettered with its reason), the commands and timers each produced, and what the
//! publisher did with every command.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shopify_sim::Delivery;
use tests::{Stack, StackOptions, TIMER_GRACE_MS, bin_path, send_all, wait_until};

const SHOP: &str = "explain-e2e.myshopify.com";
const CUSTOMER: u64 = 6_250_000_000_021;
const EMAIL: &str = "noor.west@example.org";
/// 2026-03-02T10:00:00Z.
const T0: i64 = 1_772_445_600_000;
const MIN: i64 = 60_000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn delivery(topic: &str, id: &str, ms: i64, body: &Value) -> Delivery {
    tests::delivery(SHOP, topic, id, ms, body)
}

fn explain(stack: &Stack, key: &str) -> Vec<Value> {
    let out = Command::new(bin_path("tillstream"))
        .envs(runtime::testing::service_env(&stack.kafka, &stack.topics))
        .env("TILLSTREAM_PUBLISHER_GROUP", &stack.publisher_group)
        .args(["explain", key, "--json", "--since", "1h", "--last", "50"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tillstream explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_shows_a_customers_decisions_and_their_delivery() {
    let kafka = runtime::testing::kafka();
    let mut options = StackOptions::historical(kafka);
    options
        .processor_env
        .push(("TILLSTREAM__ENGINE__TRAIL".into(), "true".into()));
    let stack = Stack::start(options).await.unwrap();
    let customer = json!({"id": CUSTOMER, "email": EMAIL, "first_name": "Noor", "last_name": "West",
        "state": "enabled", "created_at": at(T0).to_rfc3339(), "updated_at": at(T0).to_rfc3339()});
    let created = delivery("customers/create", "cc", T0, &customer);
    // The same webhook delivered twice (Shopify retries), and an order whose money does not
    // parse (strict field: dead-lettered with the reason).
    let bad_order = json!({"id": 81_001, "email": EMAIL, "customer": {"id": CUSTOMER},
        "created_at": at(T0 + MIN).to_rfc3339(), "financial_status": "paid",
        "total_price": "12,50", "currency": "USD", "line_items": []});
    let deliveries = vec![
        created.clone(),
        created,
        delivery("orders/paid", "bad", T0 + MIN, &bad_order),
    ];
    send_all(&stack.webhook_url(), deliveries, 20.0)
        .await
        .unwrap();
    stack
        .produce_clock_ticks(T0 + 60 * MIN + TIMER_GRACE_MS, SHOP)
        .await
        .unwrap();
    stack.wait_drained(Duration::from_secs(120)).await.unwrap();

    let key = format!("{SHOP}/c/{CUSTOMER}");
    // The publisher commits shortly after delivering: poll until the welcome shows delivered.
    let decisions = wait_until(
        "explain to show the welcome delivered",
        Duration::from_secs(60),
        || {
            let d = explain(&stack, &key);
            let delivered = d.iter().any(|x| {
                x["commands"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["action"] == "trackEvent:customer_created")
                }) && x["delivery"]
                    .as_object()
                    .is_some_and(|m| m.values().all(|v| v["status"] == "delivered"))
            });
            std::future::ready(delivered.then_some(d))
        },
    )
    .await
    .unwrap();

    let created: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["input"]["topic"] == "customers/create")
        .collect();
    assert_eq!(created.len(), 2, "{decisions:#?}");
    assert_eq!(created[0]["outcome"], "applied", "{decisions:#?}");
    assert_eq!(created[0]["input"]["delivery_id"], "wh-cc");
    assert_eq!(created[1]["outcome"], "duplicate", "{decisions:#?}");
    let bad = decisions
        .iter()
        .find(|d| d["input"]["topic"] == "orders/paid")
        .unwrap_or_else(|| panic!("no decision for the bad order: {decisions:#?}"));
    assert_eq!(bad["outcome"], "dead_letter", "{bad:#}");
    assert!(
        bad["reason"].as_str().unwrap().contains("total_price"),
        "the reason names the field: {bad:#}"
    );
    // The win-back timer armed on the first order would show as a timer; here the customer has
    // none, but the welcome's command id is the one Iterable received.
    let sim = stack.sim_state();
    let id = created[0]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "trackEvent:customer_created")
        .unwrap()["id"]
        .clone();
    assert!(
        sim.events(&iterable_sim::Filter::default())
            .iter()
            .any(|e| Some(e.id.as_str()) == id.as_str()),
        "iterable-sim holds the event {id}"
    );
    // The text form an operator reads.
    let out = Command::new(bin_path("tillstream"))
        .envs(runtime::testing::service_env(&stack.kafka, &stack.topics))
        .env("TILLSTREAM_PUBLISHER_GROUP", &stack.publisher_group)
        .args(["explain", &key, "--since", "1h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(text.contains("dropped: a duplicate"), "{text}");
    assert!(text.contains("dead-lettered: rule_error"), "{text}");
    assert!(
        text.contains("command trackEvent:customer_created") && text.contains("delivered"),
        "{text}"
    );
    stack.shutdown().await;
}
