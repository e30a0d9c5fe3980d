//! Live timer latency through the whole stack: how long after its due time an abandoned
//! checkout reaches Iterable, under each timer clock, printed as JSON.
//!
//! ```sh
//! CARGO_TARGET_DIR=/root/.cache/tillstream/target cargo build --release -p ingest -p processor -p publisher -p tests
//! /root/.cache/tillstream/target/release/timer-latency --clock inputs --checkouts 6
//! /root/.cache/tillstream/target/release/timer-latency --clock stream_time --checkouts 6
//! ```
//!
//! Guest checkouts are sent live (event time = now) with a 1-minute abandonment delay and no
//! rule grace (`out_of_order_grace = "0s"`), so what is measured is the engine's own delay: with
//! `inputs` (the default late-data rule) a timer waits for ingest's heartbeats and the
//! partitions' progress announcements to show that nothing earlier can still arrive
//! (`delivery_grace` 30 s, heartbeats every 5 s, announcements every second); with
//! `stream_time` (the rule before event-time alignment) it fires on the wall clock. Each
//! latency is iterable-sim's first sight of the event minus the checkout's due time.

use std::time::{Duration, Instant};

use chrono::Utc;
use iterable_sim::Filter;
use serde_json::{Value, json};
use shopify_sim::{Delivery, DeliveryKind};
use tests::{Stack, StackOptions, get_ok, lock, prom_samples, send_all};

const SHOP: &str = "latency.myshopify.com";
const DELAY_MS: i64 = 60_000;

fn checkout(i: usize, now_ms: i64) -> Delivery {
    let at = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let body = json!({
        "id": 91_000 + i, "token": format!("lat-{i}"), "email": format!("lat{i}@example.org"),
        "customer": null, "created_at": at.to_rfc3339(), "updated_at": at.to_rfc3339(),
        "currency": "USD", "total_price": "42.00",
        "abandoned_checkout_url": format!("https://{SHOP}/checkouts/lat-{i}"),
        "line_items": [{"variant_id": 40_001, "title": "Kettle", "quantity": 1, "price": "42.00"}],
    });
    Delivery {
        topic: "checkouts/create".into(),
        shop_domain: SHOP.into(),
        api_version: "2026-01".into(),
        webhook_id: format!("lat-{i}-{now_ms}"),
        event_id: format!("lat-ev-{i}-{now_ms}"),
        triggered_at: at,
        name: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
        kind: DeliveryKind::Original,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let mut clock = "inputs".to_owned();
    let mut n = 6usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--clock" => clock = it.next().unwrap_or(clock),
            "--checkouts" => n = it.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            other => {
                anyhow::bail!("unknown flag {other} (--clock inputs|stream_time, --checkouts N)")
            }
        }
    }
    let mut o = StackOptions::historical(runtime::testing::kafka());
    o.event_time_only = false;
    o.rules_toml =
        "[checkout]\nabandon_after_minutes = 1\n[timing]\nout_of_order_grace = \"off\"\n"
            .to_owned();
    o.processor_env = vec![("TILLSTREAM__ENGINE__TIMERS__CLOCK".into(), clock.clone())];
    let stack = Stack::start(o).await?;

    // One checkout every 2 s, each due a minute after it was sent.
    let mut due = Vec::new();
    for i in 0..n {
        let now = Utc::now().timestamp_millis();
        due.push((format!("lat{i}@example.org"), now + DELAY_MS));
        send_all(&stack.webhook_url(), vec![checkout(i, now)], 0.0).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen: Vec<Option<i64>> = vec![None; n];
    while seen.iter().any(Option::is_none) && Instant::now() < deadline {
        let events = stack.sim_state().events(&Filter {
            name: Some("checkout_abandoned".into()),
            ..Filter::default()
        });
        let now = Utc::now().timestamp_millis();
        for (i, (email, _)) in due.iter().enumerate() {
            if seen[i].is_none()
                && events
                    .iter()
                    .any(|e| e.user.email.as_deref() == Some(email))
            {
                seen[i] = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latencies: Vec<i64> = seen
        .iter()
        .zip(&due)
        .filter_map(|(s, (_, d))| s.map(|s| s - d))
        .collect();
    latencies.sort_unstable();
    let metrics = get_ok(&format!("{}/metrics", lock(&stack.processor).url()))
        .await
        .unwrap_or_default();
    let sum = prom_samples(
        &metrics,
        "tillstream_processor_timer_fire_delay_seconds_sum",
    );
    let count = prom_samples(
        &metrics,
        "tillstream_processor_timer_fire_delay_seconds_count",
    );
    let mean = match (sum.first(), count.first()) {
        (Some((_, s)), Some((_, c))) if *c > 0.0 => Some(s / c),
        _ => None,
    };
    let pct = |q: f64| -> Value {
        if latencies.is_empty() {
            return Value::Null;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        json!(latencies[i.min(latencies.len() - 1)])
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "clock": clock,
            "checkouts": n,
            "arrived": latencies.len(),
            "due_to_iterable_ms": {"min": pct(0.0), "p50": pct(0.5), "max": pct(1.0)},
            "processor_timer_fire_delay_mean_s": mean,
            "settings": {"abandon_after": "1m", "out_of_order_grace": "off",
                "delivery_grace": "30s", "heartbeat": "5s", "announce_interval": "1s"},
        }))?
    );
    stack.shutdown().await;
    Ok(())
}
