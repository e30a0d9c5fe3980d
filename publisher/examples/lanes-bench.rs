//! Benchmark of the delivery lanes: end-to-end age per lane (produced to Kafka → accepted by
//! the simulator at the published limits), p50/p99/max, in two regimes: (a) every lane below
//! its limit; (b) Black Friday, `updateCart` offered at 3× its limit. Prints JSON.
//! Run: `cargo run --release -p publisher --example lanes-bench -- --seconds 30`.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::time::{Duration, Instant};

use clap::Parser;
use iterable_sim::SimConfig;
use publisher::PublisherConfig;
use publisher::lanes::Lane;
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::Secret;
use rust_decimal::Decimal;
use schemas::command::{Action, DataFields, IterableCommand};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::{command, fields, item};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of offered load per regime.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Shoppers the load is spread over.
    #[arg(long, default_value_t = 5000)]
    users: usize,
    /// Longest wait for the backlog to drain after the load stops.
    #[arg(long, default_value_t = 600)]
    drain_timeout_secs: u64,
}

/// Offered commands per second per lane: (profile, events, purchases, carts).
struct Load {
    name: &'static str,
    per_second: [f64; 4],
}

const REGIMES: [Load; 2] = [
    Load {
        name: "below_limits",
        per_second: [200.0, 800.0, 40.0, 40.0],
    },
    Load {
        name: "black_friday_carts_saturated",
        per_second: [200.0, 800.0, 40.0, 270.0],
    },
];

fn make(lane: usize, n: u64, user: usize) -> IterableCommand {
    let action = match lane {
        0 => Action::UpsertUser {
            data_fields: fields(json!({"n": n, "tier": "gold"})),
            merge_nested_objects: false,
        },
        1 => Action::TrackEvent {
            event_name: "abandoned_checkout".into(),
            created_at_s: 1_700_000_000,
            data_fields: fields(json!({"n": n})),
        },
        2 => Action::TrackPurchase {
            created_at_s: 1_700_000_000,
            total: Decimal::new(1250, 2),
            items: vec![item("bought".into())],
            data_fields: DataFields::new(),
        },
        _ => Action::UpdateCart {
            items: vec![item(format!("sku-{n}"))],
        },
    };
    command(format!("lanes-{lane}-{n}"), user, action)
}

/// Sum of a metric's samples whose line contains `filter`.
fn sample(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Upper bound of the highest non-empty bucket: the maximum is at most this.
fn max_le(b: &[(f64, f64)]) -> Option<f64> {
    let total = b.last()?.1;
    b.iter().find(|(_, c)| *c >= total).map(|(le, _)| *le)
}

async fn run_regime(args: &Args, load: &Load, producer: &FutureProducer) -> Value {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 12).await;
    let mut sc = SimConfig::default();
    sc.behaviour.track_creates_unknown_users = true;
    sc.rate_limits.unpublished_per_second = Some(100.0);
    let sim = iterable_sim::spawn(sc).await.unwrap();
    let mut config = PublisherConfig::defaults().unwrap();
    config.kafka = kafka.clone();
    config.topics = topics.clone();
    config.group_id = runtime::testing::unique("lanes-bench");
    let ops = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.http.listen = ops;
    config.iterable.base_url = sim.base_url();
    config.iterable.api_key = Secret::new(iterable_sim::DEFAULT_API_KEY);
    let token = CancellationToken::new();
    let handle = tokio::spawn(publisher::run(config, token.clone()));
    let metrics_url = format!("http://{ops}/metrics");
    let metrics = || async { reqwest_text(&metrics_url).await };

    // Offer the load in 100 ms ticks, event time = produce time.
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let mut owed = [0.0f64; 4];
    let mut counts = [0u64; 4];
    let mut max_cart_pending = 0.0f64;
    let mut max_pending = 0.0f64;
    let mut rng = rand::rng();
    let mut last = Instant::now();
    let mut ticks = 0u64;
    let mut acks = Vec::new();
    while started.elapsed().as_secs_f64() < args.seconds {
        let t0 = Instant::now();
        // What is owed since the last tick, so a slow tick does not lower the offered rate.
        let dt = t0.duration_since(last).as_secs_f64();
        last = t0;
        ticks += 1;
        let mut batch = Vec::new();
        for lane in 0..4 {
            owed[lane] += load.per_second[lane] * dt;
            while owed[lane] >= 1.0 {
                owed[lane] -= 1.0;
                let user = rng.random_range(0..args.users);
                batch.push(make(lane, counts[lane], user));
                counts[lane] += 1;
            }
        }
        for c in &batch {
            let payload = c.encode().unwrap();
            let ack = producer
                .send_result(
                    FutureRecord::to(&topics.commands)
                        .key(&c.customer_key)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            acks.push(ack);
        }
        if ticks.is_multiple_of(10) {
            let m = metrics().await;
            max_cart_pending = max_cart_pending.max(sample(
                &m,
                "tillstream_publisher_lane_pending",
                "lane=\"carts\"",
            ));
            max_pending = max_pending.max(sample(&m, "tillstream_publisher_pending_commands", ""));
        }
        tokio::time::sleep(tick.saturating_sub(t0.elapsed())).await;
    }
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let offered_secs = started.elapsed().as_secs_f64();
    let cart_backlog_at_end = sample(
        &metrics().await,
        "tillstream_publisher_lane_pending",
        "lane=\"carts\"",
    );
    // Drain: every command delivered or dead-lettered.
    let drain_started = Instant::now();
    let mut drained = false;
    while drain_started.elapsed() < Duration::from_secs(args.drain_timeout_secs) {
        let m = metrics().await;
        let done = sample(&m, "tillstream_publisher_delivered_total", "")
            + sample(&m, "tillstream_publisher_dead_letters_total", "")
            + sample(
                &m,
                "tillstream_publisher_coalesced_total",
                "family=\"carts\"",
            );
        if done >= counts.iter().sum::<u64>() as f64
            && sample(&m, "tillstream_publisher_pending_commands", "") == 0.0
        {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let m = metrics().await;
    let rss_kib = runtime::testing::rss_kib(std::process::id());
    token.cancel();
    let _ = handle.await;
    let stats = sim.state().stats();
    let mut lanes = serde_json::Map::new();
    for (i, lane) in [Lane::Profile, Lane::Events, Lane::Purchases, Lane::Carts]
        .into_iter()
        .enumerate()
    {
        let b = runtime::testing::histogram_buckets(
            &m,
            "tillstream_publisher_lane_age_seconds",
            &format!("lane=\"{}\"", lane.name()),
        );
        let q = |x: f64| {
            runtime::testing::histogram_quantile(&b, x).map(|v| (v * 1000.0).round() / 1000.0)
        };
        lanes.insert(
            lane.name().into(),
            json!({
                "offered_per_s": load.per_second[i],
                "offered": counts[i],
                "delivered": b.last().map(|x| x.1),
                "age_p50_s": q(0.5),
                "age_p99_s": q(0.99),
                "age_max_at_most_s": max_le(&b),
            }),
        );
    }
    let _ = sim.shutdown().await;
    json!({
        "regime": load.name,
        "offered_seconds": (offered_secs * 10.0).round() / 10.0,
        "lanes": lanes,
        "carts": {
            "requests": stats.endpoints.get("commerce/updateCart").map(|e| e.requests),
            "coalesced": sample(&m, "tillstream_publisher_coalesced_total", "family=\"carts\""),
            "max_lane_pending": max_cart_pending,
            "backlog_when_load_stopped": cart_backlog_at_end,
        },
        "max_pending_commands": max_pending,
        "drained": drained,
        "drain_seconds_after_load": (drain_secs * 10.0).round() / 10.0,
        "total_429": stats.totals.rate_limited,
        "bench_process_rss_kib": rss_kib,
    })
}

async fn reqwest_text(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let kafka = runtime::testing::kafka();
    let producer: FutureProducer = kafka.producer("lanes-bench").create().unwrap();
    let mut results = Vec::new();
    for load in &REGIMES {
        let r = run_regime(&args, load, &producer).await;
        eprintln!("{r}");
        results.push(r);
    }
    let cpu = runtime::testing::cpu_model();
    let out = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": { "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "seconds_per_regime": args.seconds,
        "users": args.users,
        "note": "age = produced to the commands topic -> accepted by iterable-sim (publisher in-process, published limits); the RSS is the whole bench process (publisher + simulator + producer)",
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
