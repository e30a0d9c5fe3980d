//! Benchmark: sustained throughput per endpoint against the simulator enforcing the published
//! limits. Prints JSON. Run: `cargo run --release -p publisher --example publisher-bench -- --seconds 10`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use iterable_sim::{Filter, SimConfig};
use publisher::PublisherConfig;
use publisher::mapping::Endpoint;
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::Secret;
use rust_decimal::Decimal;
use schemas::command::{Action, DataFields, DeleteMode, IterableCommand, SubscriptionUpdate};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod common;
use common::{command, fields, item};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of traffic per endpoint at its configured rate (bulk endpoints: × records per batch).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Only these endpoints (names as in the output); default all.
    #[arg(long)]
    only: Vec<String>,
}

/// The command for endpoint `e`, number `i`; every command is a different user so that the
/// per-user ordering never limits the rate.
fn make(e: Endpoint, i: usize) -> IterableCommand {
    let id = format!("bench-{}-{i}", e.name().replace('/', "-"));
    let action = match e {
        Endpoint::UsersUpdate | Endpoint::UsersBulkUpdate => Action::UpsertUser {
            data_fields: fields(json!({"n": i, "plan": "gold"})),
            merge_nested_objects: false,
        },
        Endpoint::EventsTrack | Endpoint::EventsTrackBulk => Action::TrackEvent {
            event_name: "viewed".into(),
            created_at_s: 1_700_000_000,
            data_fields: fields(json!({"n": i})),
        },
        Endpoint::CommerceTrackPurchase => Action::TrackPurchase {
            created_at_s: 1_700_000_000,
            total: Decimal::new(1250, 2),
            items: vec![item("v1".into())],
            data_fields: DataFields::new(),
        },
        Endpoint::CommerceUpdateCart => Action::UpdateCart {
            items: vec![item("v1".into())],
        },
        Endpoint::UsersUpdateSubscriptions => Action::UpdateSubscriptions(SubscriptionUpdate {
            email_list_ids: Some(vec![1]),
            ..SubscriptionUpdate::default()
        }),
        Endpoint::ListsSubscribe => Action::ListMembership {
            list_id: 1,
            subscribe: true,
        },
        Endpoint::ListsUnsubscribe => Action::ListMembership {
            list_id: 1,
            subscribe: false,
        },
        Endpoint::UsersUpdateEmail => Action::ChangeEmail {
            current_email: Some(format!("u{i}@example.com")),
            current_user_id: None,
            new_email: format!("new{i}@example.com"),
        },
        Endpoint::UsersForget => Action::DeleteUser {
            mode: DeleteMode::Forget,
        },
        Endpoint::UsersDeleteByEmail | Endpoint::UsersDeleteByUserId => Action::DeleteUser {
            mode: DeleteMode::Delete,
        },
        // Catalog writes (not among the scenarios below; the match stays total).
        Endpoint::CatalogsCreate | Endpoint::CatalogsReplaceItem => Action::CatalogUpsert {
            catalog: "bench".into(),
            item_id: format!("item-{i}"),
            document: fields(json!({"name": format!("Item {i}")})),
        },
        Endpoint::CatalogsBulkDeleteItems => Action::CatalogDelete {
            catalog: "bench".into(),
            item_id: format!("item-{i}"),
        },
    };
    let mut c = command(id, i, action);
    if e == Endpoint::UsersUpdateEmail || e == Endpoint::UsersDeleteByEmail {
        c.user.user_id = None;
    }
    c
}

async fn produce(producer: &FutureProducer, topic: &str, commands: &[IterableCommand]) {
    for chunk in commands.chunks(5000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for c in chunk {
            let payload = c.encode().unwrap();
            pending.push(
                producer
                    .send_result(
                        FutureRecord::to(topic)
                            .key(&c.customer_key)
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for p in pending {
            p.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
}

/// Counters sampled over time, to measure the steady state between 10 % and 90 % done.
struct Sample {
    at: Instant,
    requests: u64,
    records: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let kafka = runtime::testing::kafka();
    let producer: FutureProducer = kafka.producer("publisher-bench").create().unwrap();
    let defaults = PublisherConfig::defaults().unwrap();
    let scenarios = [
        Endpoint::EventsTrack,
        Endpoint::UsersUpdate,
        Endpoint::EventsTrackBulk,
        Endpoint::UsersBulkUpdate,
        Endpoint::CommerceTrackPurchase,
        Endpoint::CommerceUpdateCart,
        Endpoint::UsersUpdateSubscriptions,
        Endpoint::ListsSubscribe,
        Endpoint::ListsUnsubscribe,
        Endpoint::UsersDeleteByUserId,
        Endpoint::UsersForget,
    ];
    let mut results = Vec::new();
    for endpoint in scenarios {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == endpoint.name()) {
            continue;
        }
        let limit = defaults.limits.get(endpoint).per_second;
        let per_request = if endpoint.is_bulk() {
            defaults.batching.max_records
        } else {
            1
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let n = ((limit * args.seconds).ceil() as usize * per_request).max(20);
        let topics = runtime::testing::fresh_topics(&kafka, 12).await;
        let commands: Vec<_> = (0..n).map(|i| make(endpoint, i)).collect();
        produce(&producer, &topics.commands, &commands).await;
        drop(commands);

        // The simulator enforces the published limits; unpublished endpoints get 100/s, the
        // number our defaults assume.
        let mut sc = SimConfig::default();
        sc.behaviour.track_creates_unknown_users = true;
        sc.rate_limits.unpublished_per_second = Some(100.0);
        let sim = iterable_sim::spawn(sc).await.unwrap();
        // Users that deletes and email changes act on must exist; events need no user.
        let mut config = defaults.clone();
        config.kafka = kafka.clone();
        config.topics = topics.clone();
        config.group_id = runtime::testing::unique("publisher-bench");
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.iterable.base_url = sim.base_url();
        config.iterable.api_key = Secret::new(iterable_sim::DEFAULT_API_KEY);
        config.batching.backlog_threshold = if endpoint.is_bulk() { 0 } else { usize::MAX };
        let token = CancellationToken::new();
        let handle = tokio::spawn(publisher::run(config, token.clone()));

        let sim_name = endpoint.name();
        let mut samples: Vec<Sample> = Vec::new();
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.seconds * 4.0 + 60.0);
        loop {
            let s = sim.state().stats();
            let e = s.endpoints.get(sim_name).copied().unwrap_or_default();
            let done = e.records_succeeded + e.records_failed + e.client_errors;
            samples.push(Sample {
                at: Instant::now(),
                requests: e.admitted,
                records: done,
            });
            if done >= n as u64 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        token.cancel();
        let _ = handle.await;
        let stats = sim.state().stats();
        let e = stats.endpoints.get(sim_name).copied().unwrap_or_default();
        let done = samples.last().map_or(0, |s| s.records);
        let at = |frac: f64| {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let target = (n as f64 * frac) as u64;
            samples.iter().find(|s| s.records >= target)
        };
        let (rate, records_rate) = match (at(0.1), at(0.9)) {
            (Some(a), Some(b)) if b.at > a.at => {
                let secs = (b.at - a.at).as_secs_f64();
                #[allow(clippy::cast_precision_loss)]
                (
                    (b.requests - a.requests) as f64 / secs,
                    (b.records - a.records) as f64 / secs,
                )
            }
            _ => (0.0, 0.0),
        };
        let published = match endpoint {
            Endpoint::EventsTrack => Some(2000.0),
            Endpoint::UsersUpdate => Some(500.0),
            Endpoint::EventsTrackBulk => Some(10.0),
            Endpoint::UsersBulkUpdate => Some(5.0),
            Endpoint::UsersForget => Some(3.0),
            Endpoint::UsersDeleteByUserId | Endpoint::UsersDeleteByEmail => Some(100.0),
            _ => None,
        };
        let profiles = sim.state().profiles(&Filter::default()).len();
        results.push(json!({
            "endpoint": sim_name,
            "commands": n,
            "completed_records": done,
            "requests": e.requests,
            "configured_limit_rps": limit,
            "published_limit_rps": published,
            "steady_rps": (rate * 100.0).round() / 100.0,
            "steady_records_per_s": (records_rate * 10.0).round() / 10.0,
            "ratio_to_configured": ((rate / limit) * 1000.0).round() / 1000.0,
            "rate_limited_429": e.rate_limited,
            "client_errors": e.client_errors,
            "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "profiles_in_sim": profiles,
        }));
        eprintln!(
            "{}",
            results.last().map(ToString::to_string).unwrap_or_default()
        );
        let _ = sim.shutdown().await;
    }
    let cpu = runtime::testing::cpu_model();
    let out = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": { "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "seconds_per_endpoint": args.seconds,
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
