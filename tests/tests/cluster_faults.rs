//! The e2e scenario on a private three-broker cluster (RF 3, `min.insync.replicas` 2): kill -9
//! of the broker leading most raw and command partitions mid-stream, kept down while
//! deliveries flow, then brought back; Iterable must end exactly as `expected.json` says.
//!
//! Starts its own cluster through `scripts/kafka cluster` on free ports (never the shared
//! broker) and stops it at the end. One command:
//! `cargo build -p ingest -p processor -p publisher && cargo test -p tests --test cluster_faults -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use runtime::KafkaConfig;
use tests::cluster::Cluster;
use tests::{Stack, StackOptions, ci_scenario, finish_and_compare, scenario, send_all, wait_until};

/// Partitions of `topics` led by each broker (node id).
fn leaders(kafka: &KafkaConfig, topics: &[&str]) -> BTreeMap<i32, usize> {
    let c: BaseConsumer = kafka.client("cluster-faults-probe").create().unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(30)).unwrap();
    let mut out = BTreeMap::new();
    for t in md.topics().iter().filter(|t| topics.contains(&t.name())) {
        for p in t.partitions() {
            *out.entry(p.leader()).or_default() += 1;
        }
    }
    out
}

/// Replicas of each partition of `topic` (all must be 3 on this cluster).
fn replicas(kafka: &KafkaConfig, topic: &str) -> Vec<usize> {
    let c: BaseConsumer = kafka.client("cluster-faults-probe").create().unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    md.topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.replicas().len()))
        .collect()
}

// Heavy (three JVM brokers, ~4-7 min) and not yet reliable enough for CI (1 of 3 runs passed,
// see docs/benchmarks.md): a documented command, `cargo test -p tests --test cluster_faults --
// --ignored`, like the soak.
#[ignore = "three-broker cluster suite: cargo test -p tests --test cluster_faults -- --ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_the_leading_broker_mid_stream_reaches_the_expected_outcome() {
    let started = Instant::now();
    let cluster = Arc::new(
        tokio::task::spawn_blocking(Cluster::start)
            .await
            .unwrap()
            .unwrap(),
    );
    eprintln!(
        "cluster {} up at {:?}",
        cluster.bootstrap(),
        started.elapsed()
    );
    let kafka = KafkaConfig::new(cluster.bootstrap());
    let cfg = ci_scenario();
    let sc = scenario(&cfg).unwrap();
    let n = sc.deliveries.len() as i64;
    let mut o = StackOptions::historical(kafka.clone());
    o.publisher_env
        .push(("TILLSTREAM__RETRY__MAX_BACKOFF".into(), "3s".into()));
    let stack = Arc::new(Stack::start(o).await.unwrap());
    eprintln!("logs in {}", stack.dir.display());
    let t = &stack.topics;
    assert!(
        replicas(&kafka, &t.raw).iter().all(|r| *r == 3),
        "topics apply on a three-broker cluster creates RF 3 topics"
    );
    let sender = {
        let (url, deliveries) = (stack.webhook_url(), sc.deliveries.clone());
        tokio::spawn(async move { send_all(&url, deliveries, n as f64 / 40.0).await })
    };
    wait_until(
        "a quarter of the deliveries in Kafka and Iterable requests",
        Duration::from_secs(180),
        || {
            let ok = stack.total(&t.raw, t.partitions) >= n / 4
                && stack.sim_state().stats().totals.requests > 0;
            async move { ok.then_some(()) }
        },
    )
    .await
    .unwrap();

    // kill -9 the broker leading most raw and command partitions, keep it down while a
    // further sixth of the deliveries goes through the two survivors, then bring it back.
    // Counted before the kill: while a leader is gone, watermark reads of its partitions fail.
    let down_at = stack.total(&t.raw, t.partitions);
    let led = leaders(&kafka, &[&t.raw, &t.commands]);
    let (&victim, &count) = led.iter().max_by_key(|(_, c)| **c).unwrap();
    let node = victim.to_string();
    let c = cluster.clone();
    let v = node.clone();
    tokio::task::spawn_blocking(move || c.run(&["kill", &v]))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "kill -9 broker {victim} (leader of {count} of {} raw+commands partitions: {led:?}) at {:?}, {down_at} raw records",
        2 * t.partitions,
        started.elapsed()
    );
    wait_until(
        "deliveries accepted through the two surviving brokers",
        Duration::from_secs(180),
        || {
            let ok = stack.total(&t.raw, t.partitions) >= down_at + n / 6;
            async move { ok.then_some(()) }
        },
    )
    .await
    .unwrap();
    let moved = leaders(&kafka, &[&t.raw, &t.commands]);
    assert!(
        !moved.contains_key(&victim),
        "leadership left the dead broker: {moved:?}"
    );
    eprintln!(
        "{} raw records with broker {victim} down; leaders now {moved:?}; restarting it at {:?}",
        stack.total(&t.raw, t.partitions) - down_at,
        started.elapsed()
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.run(&["restart", &node]))
        .await
        .unwrap()
        .unwrap();
    eprintln!("broker {victim} back at {:?}", started.elapsed());

    let report = sender.await.unwrap().unwrap();
    finish_and_compare(
        &stack,
        &sc,
        &report,
        started,
        "a broker kill on the cluster",
    )
    .await;
    for dlq in [&t.processor_dlq, &t.publisher_dlq] {
        assert_eq!(stack.side_topic_records(dlq), 0, "dead letters in {dlq}");
    }

    // With two brokers of three down no write can reach min.insync.replicas (2): ingest must
    // refuse the delivery (503, Shopify retries later), never answer 2xx for a record only one
    // broker would hold.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.kill(1).unwrap();
        c.kill(2).unwrap();
    })
    .await
    .unwrap();
    let d = &sc.deliveries[0];
    let mut req = reqwest::Client::new()
        .post(stack.webhook_url())
        .timeout(Duration::from_secs(20))
        .body(d.body.clone());
    for (k, v) in d.headers(tests::SECRET) {
        req = req.header(k, v);
    }
    let status = req.send().await.unwrap().status();
    eprintln!("with brokers 1 and 2 down, ingest answered {status}");
    assert_eq!(
        status,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "a record below min.insync.replicas must not be acknowledged"
    );
    eprintln!("total {:?}", started.elapsed());
    if let Ok(stack) = Arc::try_unwrap(stack) {
        stack.shutdown().await;
    }
    drop(cluster);
}
