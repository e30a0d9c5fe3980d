//! Helpers for tests that need the real Kafka broker: its address, unique names, topics.
//!
//! Tests must never pass silently without a broker: [`kafka`] fails fast with a message that
//! names `scripts/kafka start` when nothing answers metadata requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{KafkaConfig, ToTheEnd};
use crate::topics::TopicsConfig;

/// Environment variable holding the test broker's address (default `127.0.0.1:9092`).
pub const BROKER_ENV: &str = "TILLSTREAM_TEST_KAFKA";

/// The test broker's connection settings, after checking it answers metadata requests.
///
/// # Panics
/// When no broker answers within 10 s: the message says how to start one.
#[allow(clippy::panic)]
pub fn kafka() -> KafkaConfig {
    let servers = std::env::var(BROKER_ENV).unwrap_or_else(|_| "127.0.0.1:9092".into());
    let config = KafkaConfig::new(servers.clone());
    let probe: Result<BaseConsumer, _> = config.client("tillstream-test-probe").create();
    let reachable = probe
        .map(|c| c.fetch_metadata(None, Duration::from_secs(10)).is_ok())
        .unwrap_or(false);
    if !reachable {
        panic!(
            "No Kafka broker answers at {servers} ({BROKER_ENV}). These tests need the real broker: \
             run `scripts/kafka start` (or set {BROKER_ENV})."
        );
    }
    config
}

/// A name unique within this test process and across runs: `{prefix}-{pid}-{nanos}-{n}`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// A fresh topic catalogue under a unique prefix, created on the broker with `partitions`
/// partitions for the co-partitioned topics.
///
/// # Panics
/// When the topics cannot be created.
#[allow(clippy::panic)]
pub async fn fresh_topics(kafka: &KafkaConfig, partitions: i32) -> TopicsConfig {
    let mut topics = TopicsConfig::with_prefix(&format!("{}.", unique("t")));
    topics.partitions = partitions;
    topics.side_partitions = 1;
    if let Err(e) = topics.apply(kafka).await {
        panic!("cannot create test topics: {e}");
    }
    topics
}

/// The environment that points a service binary (or the CLI) at `kafka` and the topic names
/// of `topics`: `TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS` and every `TILLSTREAM__TOPICS__*`.
pub fn service_env(kafka: &KafkaConfig, topics: &TopicsConfig) -> Vec<(String, String)> {
    let t = topics;
    let mut env = vec![(
        "TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS".to_owned(),
        kafka.bootstrap_servers.clone(),
    )];
    env.extend(
        [
            ("PARTITIONS", t.partitions.to_string()),
            ("SIDE_PARTITIONS", t.side_partitions.to_string()),
            ("RAW", t.raw.clone()),
            ("COMMANDS", t.commands.clone()),
            ("CHANGELOG", t.changelog.clone()),
            ("REPARTITION", t.repartition.clone()),
            ("PROCESSOR_DLQ", t.processor_dlq.clone()),
            ("PUBLISHER_DLQ", t.publisher_dlq.clone()),
            ("DATA_REQUESTS", t.data_requests.clone()),
            ("ERASURES", t.erasures.clone()),
            ("SHOPIFY_COMMANDS", t.shopify_commands.clone()),
            ("SHOPIFY_WRITER_DLQ", t.shopify_writer_dlq.clone()),
            ("DECISIONS", t.decisions.clone()),
            ("PRODUCTS", t.products.clone()),
            ("KEYS", t.keys.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("TILLSTREAM__TOPICS__{k}"), v)),
    );
    env
}

/// One record read back by [`read_committed`]: partition, key, value, headers (lossy UTF-8).
pub type ReadRecord = (i32, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, String)>);

/// Reads every committed record of `topic` (partitions `0..partitions`) from the beginning to
/// its end, as a `read_committed` consumer sees it; gives up after 60 s.
///
/// # Panics
/// When the reader cannot be created or assigned.
#[allow(clippy::expect_used)]
pub fn read_committed(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Vec<ReadRecord> {
    let mut cfg = kafka.reader("test-reader");
    cfg.set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer<ToTheEnd> = cfg
        .create_with_context(ToTheEnd("test reader"))
        .expect("test reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let (mut eof, mut out) = (0, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while eof < partitions && std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_owned(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    headers,
                ));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    out
}

/// Resident memory of process `pid` in KiB (`VmRSS` from `/proc`), 0 if unreadable; for the
/// benchmarks' memory figures.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The CPU model (`model name` from `/proc/cpuinfo`), empty if unreadable; for the
/// benchmarks' machine description.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

/// Cumulative buckets `(le, count)` of Prometheus histogram `name` (without `_bucket`) from a
/// `/metrics` text, for the series whose labels contain `labels` (`""` = all), sorted by `le`.
pub fn histogram_buckets(metrics: &str, name: &str, labels: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut b: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(bucket.as_str()) && l.contains(labels))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let v = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// A quantile of cumulative buckets `(le, count)`, linear inside a bucket; `None` when empty.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let frac = if c > prev.1 {
                (target - prev.1) / (c - prev.1)
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    None
}

/// The levels of the `tracing` events `f` emits on this thread, in order: for tests of what a
/// component logs, and at which level.
pub fn event_levels(f: impl FnOnce()) -> Vec<tracing::Level> {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    struct Levels(Arc<Mutex<Vec<tracing::Level>>>);

    impl<S: tracing::Subscriber> Layer<S> for Levels {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if let Ok(mut v) = self.0.lock() {
                v.push(*event.metadata().level());
            }
        }
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Levels(Arc::clone(&seen)));
    tracing::subscriber::with_default(subscriber, f);
    seen.lock().map(|v| v.clone()).unwrap_or_default()
}
