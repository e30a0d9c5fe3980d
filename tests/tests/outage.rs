//! Late data end to end with the real binaries: an abandoned-checkout email is never sent to a
//! buyer whose order is still in Shopify's retry queue, after an ingest outage or while a
//! stopped processor drains its backlog; every truly abandoned checkout is sent exactly once.
//!
//! The same holds for win-back: a customer whose lapse comes due during the outage but who
//! ordered again (the order being retried) is not announced as lapsed.
//!
//! Time is scaled down: checkouts are abandoned after one minute, Shopify's four-hour retry
//! horizon is 40 s (`engine.timers.retry_horizon`), ingest heartbeats every 500 ms. shopify-sim's
//! sender retries failed deliveries with identical bytes and exponential backoff, as Shopify does.
//! `TILLSTREAM_TEST_TIMER_CLOCK=stream_time` runs the previous firing rule, which fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shopify_sim::{Delivery, DeliveryKind};
use tests::{SECRET, Stack, StackOptions, lock, wait_until};

const SHOP: &str = "outage-test.myshopify.com";
const CHECKOUTS: u64 = 8;
const LAPSING: u64 = 4;
const DAY: i64 = 86_400_000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("in range")
}

fn iso(ms: i64) -> String {
    at(ms).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn delivery(topic: &str, id: &str, ms: i64, body: String) -> Delivery {
    Delivery {
        topic: topic.into(),
        shop_domain: SHOP.into(),
        api_version: "2026-07".into(),
        webhook_id: id.into(),
        event_id: format!("ev-{id}"),
        triggered_at: at(ms),
        name: None,
        body: body.into_bytes(),
        kind: DeliveryKind::Original,
    }
}

fn email(i: u64) -> String {
    format!("g{i}@outage.example")
}

/// A guest checkout (keyed by its e-mail) created at `ms`.
fn checkout(i: u64, ms: i64) -> Delivery {
    let body = format!(
        r#"{{"token":"otok{i}","cart_token":"ocart{i}","email":"{e}","abandoned_checkout_url":"https://{SHOP}/checkouts/otok{i}","created_at":"{t}","updated_at":"{t}","completed_at":null,"currency":"USD","presentment_currency":"USD","subtotal_price":"40.00","total_price":"40.00","total_tax":"0.00","total_discounts":"0.00","line_items":[{{"key":"l1","variant_id":12,"product_id":11,"sku":"SKU-1","title":"Mug","quantity":1,"price":"40.00","line_price":"40.00"}}]}}"#,
        e = email(i),
        t = iso(ms)
    );
    delivery("checkouts/create", &format!("o-checkout-{i}"), ms, body)
}

/// The order completing checkout `i`, placed by a registered customer with the same e-mail:
/// the completion reaches the e-mail key through the repartition topic.
fn completing_order(i: u64, ms: i64) -> Delivery {
    order(
        9_900_000 + i,
        77_000 + i,
        &email(i),
        &format!("otok{i}"),
        ms,
    )
}

/// Customer `j` of the win-back cases (lapse after one day without an order).
fn lapsing_email(j: u64) -> String {
    format!("l{j}@outage.example")
}

/// Order `n` of win-back customer `j`.
fn lapsing_order(j: u64, n: u64, ms: i64) -> Delivery {
    order(
        9_800_000 + 10 * j + n,
        88_000 + j,
        &lapsing_email(j),
        &format!("ltok{j}-{n}"),
        ms,
    )
}

/// A paid order by a registered customer.
fn order(id: u64, customer: u64, email: &str, checkout_token: &str, ms: i64) -> Delivery {
    let body = format!(
        r##"{{"id":{id},"name":"#{id}","email":"{email}","created_at":"{t}","updated_at":"{t}","processed_at":"{t}","currency":"USD","presentment_currency":"USD","total_price":"40.00","subtotal_price":"40.00","total_tax":"0.00","total_discounts":"0.00","total_price_set":{{"shop_money":{{"amount":"40.00","currency_code":"USD"}},"presentment_money":{{"amount":"40.00","currency_code":"USD"}}}},"financial_status":"paid","test":false,"checkout_token":"{checkout_token}","customer":{{"id":{customer},"email":"{email}","first_name":"Ada","last_name":"Byron","state":"enabled"}},"line_items":[{{"id":{li},"product_id":11,"variant_id":12,"sku":"SKU-1","title":"Mug","quantity":1,"price":"40.00","total_discount":"0.00"}}],"refunds":[]}}"##,
        t = iso(ms),
        li = id * 10
    );
    delivery("orders/paid", &format!("o-order-{id}"), ms, body)
}

/// The stack with live timers scaled down.
async fn stack() -> Stack {
    let mut o = StackOptions::historical(runtime::testing::kafka())
        .live_timers(&[("HEARTBEAT_GAP", "3s"), ("RETRY_HORIZON", "40s")]);
    o.rules_toml = "[checkout]\nabandon_after_minutes = 1\n[winback]\nlapse_days = 1\n\
                    [timing]\nout_of_order_grace = \"2s\"\n"
        .to_owned();
    let s = Stack::start(o).await.expect("stack");
    s.wait_ready(Duration::from_secs(120)).await.expect("ready");
    s
}

/// Shopify's sender: retries with identical bytes, backoff doubling from 1 s up to 8 s.
async fn send(url: String, deliveries: Vec<Delivery>) {
    let mut o = shopify_sim::SendOptions::new(url, SECRET);
    o.rate_per_sec = 0.0;
    o.max_retries = 30;
    o.backoff_base = Duration::from_secs(1);
    o.backoff_max = Duration::from_secs(8);
    let report = shopify_sim::send(deliveries, o).await.expect("send");
    assert_eq!(report.failed, 0, "{:?}", report.failed_webhook_ids);
}

/// Waits for the `event` events of the users `expected` (e-mails) and checks that nobody else
/// got one (the users in `cancelled` above all).
async fn check(stack: &Stack, event: &str, expected: &[String], cancelled: &[String]) {
    let abandoned = || {
        let mut by_user: BTreeMap<String, usize> = BTreeMap::new();
        let filter = iterable_sim::inspect::Filter {
            name: Some(event.into()),
            ..Default::default()
        };
        for e in stack.sim_state().events(&filter) {
            *by_user.entry(e.user.email.unwrap_or_default()).or_default() += 1;
        }
        by_user
    };
    wait_until(
        &format!("every expected {event} in iterable-sim"),
        Duration::from_secs(240),
        || {
            let fired = abandoned();
            async move { expected.iter().all(|e| fired.contains_key(e)).then_some(()) }
        },
    )
    .await
    .expect("abandoned checkouts");
    // The completed ones were due at the same time as the abandoned ones: had any fired, it
    // would be in iterable-sim by now; let the publisher drain to be sure.
    stack
        .wait_drained(Duration::from_secs(60))
        .await
        .expect("drained");
    let fired = abandoned();
    let false_alarms: Vec<_> = cancelled
        .iter()
        .filter(|e| fired.contains_key(*e))
        .collect();
    assert!(
        false_alarms.is_empty(),
        "{event} sent to customers whose order was being retried: {false_alarms:?}"
    );
    assert!(
        fired.values().all(|n| *n == 1),
        "not exactly once: {fired:?}"
    );
    assert_eq!(
        fired.len(),
        expected.len(),
        "{event}: precision and recall: {fired:?}"
    );
}

/// Waits until the checkouts created at `t0` are past their decision time (one minute + grace):
/// the outage or downtime must outlast it.
async fn past_the_decision_time(t0: i64) {
    wait_until(
        "the decision time to pass",
        Duration::from_secs(120),
        || async { (runtime::now_ms() > t0 + 70_000).then_some(()) },
    )
    .await
    .unwrap();
}

/// What must and must not fire: abandoned checkouts (half completed) and lapses (half of the
/// customers ordered again in time).
async fn check_all(stack: &Stack) {
    let completed: Vec<_> = (0..CHECKOUTS).filter(|i| i % 2 == 0).map(email).collect();
    let abandoned: Vec<_> = (0..CHECKOUTS).filter(|i| i % 2 == 1).map(email).collect();
    check(stack, "checkout_abandoned", &abandoned, &completed).await;
    let reordered: Vec<_> = (0..LAPSING)
        .filter(|j| j % 2 == 0)
        .map(lapsing_email)
        .collect();
    let lapsed: Vec<_> = (0..LAPSING)
        .filter(|j| j % 2 == 1)
        .map(lapsing_email)
        .collect();
    check(stack, "customer_lapsed", &lapsed, &reordered).await;
}

/// The store at `t0`: checkouts now, and win-back customers whose last order lapses with the
/// checkouts' decision time (one day after it).
fn opening(t0: i64) -> Vec<Delivery> {
    let mut d: Vec<_> = (0..CHECKOUTS).map(|i| checkout(i, t0)).collect();
    d.extend((0..LAPSING).map(|j| lapsing_order(j, 0, t0 - DAY + 60_000)));
    d
}

/// What cancels: the orders completing half of the checkouts, and new orders of half of the
/// win-back customers, ten seconds after `t0`.
fn cancelling(t0: i64) -> Vec<Delivery> {
    let mut d: Vec<_> = (0..CHECKOUTS)
        .filter(|i| i % 2 == 0)
        .map(|i| completing_order(i, t0 + 10_000))
        .collect();
    d.extend(
        (0..LAPSING)
            .filter(|j| j % 2 == 0)
            .map(|j| lapsing_order(j, 1, t0 + 10_000)),
    );
    d
}

/// Ingest is down from just after the checkouts until after their decision time; the orders
/// that complete half of them, and the new orders of half of the lapsing customers, fail and
/// are retried by Shopify, arriving after the outage.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_outage_longer_than_the_abandonment_delay() {
    let stack = stack().await;
    let t0 = runtime::now_ms();
    let url = stack.webhook_url();
    send(url.clone(), opening(t0)).await;
    lock(&stack.ingest).kill9();
    let retried = tokio::spawn(send(url, cancelling(t0)));
    past_the_decision_time(t0).await;
    lock(&stack.ingest).start();
    retried.await.expect("retries delivered");
    check_all(&stack).await;
    stack.shutdown().await;
}

/// The processor is down while the store trades (ingest keeps accepting); it comes back after
/// the decision time and drains the backlog.
#[tokio::test(flavor = "multi_thread")]
async fn processor_downtime_longer_than_the_abandonment_delay() {
    let stack = stack().await;
    let t0 = runtime::now_ms();
    lock(&stack.processor).kill9();
    let mut deliveries = opening(t0);
    deliveries.extend(cancelling(t0));
    send(stack.webhook_url(), deliveries).await;
    past_the_decision_time(t0).await;
    lock(&stack.processor).start();
    check_all(&stack).await;
    stack.shutdown().await;
}
