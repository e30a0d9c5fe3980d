//! Shared helpers for the publisher's integration tests: Kafka topics, command builders,
//! an in-process publisher, the dead-letter reader, polling with deadlines.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use publisher::PublisherConfig;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::{KafkaConfig, Secret, TopicsConfig};
use schemas::command::{Action, CommerceItem, DataFields, IterableCommand, UserRef};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const KEY: &str = iterable_sim::DEFAULT_API_KEY;

/// A publisher config for tests: the simulator, fresh topics, a unique group, fast backoff.
pub fn config(kafka: &KafkaConfig, topics: &TopicsConfig, base_url: &str) -> PublisherConfig {
    let mut c = PublisherConfig::defaults().unwrap();
    c.kafka = kafka.clone();
    c.topics = topics.clone();
    c.group_id = runtime::testing::unique("publisher-test");
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.iterable.base_url = base_url.to_owned();
    c.iterable.api_key = Secret::new(KEY);
    c.retry.initial_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(500);
    c.pipeline.commit_interval = Duration::from_millis(200);
    c.pipeline.shutdown_timeout = Duration::from_secs(5);
    c
}

/// Starts the publisher in-process.
pub fn start(
    config: PublisherConfig,
) -> (CancellationToken, JoinHandle<Result<(), publisher::Error>>) {
    runtime::telemetry::init(false);
    let token = CancellationToken::new();
    let handle = tokio::spawn(publisher::run(config, token.clone()));
    (token, handle)
}

pub fn fields(v: Value) -> DataFields {
    match v {
        Value::Object(m) => m,
        _ => DataFields::new(),
    }
}

/// A command for customer `user` (userId = `u{user}`).
pub fn command(id: &str, user: usize, action: Action) -> IterableCommand {
    IterableCommand {
        command_id: id.to_owned(),
        shop_domain: "demo.myshopify.com".into(),
        customer_key: format!("demo.myshopify.com/{user}"),
        user: UserRef {
            user_id: Some(format!("u{user}")),
            email: Some(format!("u{user}@example.com")),
        },
        event_time_ms: runtime::now_ms(),
        source_ids: vec![format!("src-{id}")],
        action,
    }
}

pub fn event(id: &str, user: usize, seq: usize) -> IterableCommand {
    command(
        id,
        user,
        Action::TrackEvent {
            event_name: "viewed".into(),
            created_at_s: 1_700_000_000,
            data_fields: fields(serde_json::json!({"seq": seq})),
        },
    )
}

pub fn upsert(id: &str, user: usize, data: Value) -> IterableCommand {
    command(
        id,
        user,
        Action::UpsertUser {
            data_fields: fields(data),
            merge_nested_objects: false,
        },
    )
}

/// A one-piece line item with id and sku `sku`.
pub fn item(sku: &str) -> CommerceItem {
    CommerceItem {
        id: sku.into(),
        sku: Some(sku.into()),
        name: format!("product {sku}"),
        price: rust_decimal::Decimal::new(1999, 2),
        quantity: 1,
        categories: vec![],
        url: None,
        image_url: None,
        data_fields: None,
    }
}

/// A cart of customer `user` holding one item `sku`.
pub fn cart(id: &str, user: usize, sku: &str) -> IterableCommand {
    command(
        id,
        user,
        Action::UpdateCart {
            items: vec![item(sku)],
        },
    )
}

pub fn producer(kafka: &KafkaConfig) -> FutureProducer {
    kafka.producer("publisher-test-producer").create().unwrap()
}

/// Produces commands keyed by customer key, in order.
pub async fn produce(producer: &FutureProducer, topic: &str, commands: &[IterableCommand]) {
    let mut pending = Vec::with_capacity(commands.len());
    for c in commands {
        let payload = c.encode().unwrap();
        let key = c.customer_key.clone();
        let fut = producer
            .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        pending.push(fut);
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Produces a raw value (for undecodable records).
pub async fn produce_raw(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Polls `f` until it returns `Some` or the deadline passes (then panics with `what`).
pub async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dead letter as read back from the topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads the dead-letter topic until `count` records arrived (or the deadline).
pub async fn read_dead_letters(
    kafka: &KafkaConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = {
        let mut c: ClientConfig = kafka.consumer(
            "publisher-test-dlq",
            &runtime::testing::unique("dlq-reader"),
            false,
        );
        c.set("auto.offset.reset", "earliest");
        c.create().unwrap()
    };
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {count} dead letters, got {out:?}"
        );
        if let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await {
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let hdr = h.get(i);
                    headers.insert(
                        hdr.key.to_owned(),
                        String::from_utf8_lossy(hdr.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(DeadLetter {
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    out
}

/// Event ids stored in the simulator.
pub fn sim_event_ids(sim: &iterable_sim::SimHandle) -> std::collections::BTreeSet<String> {
    sim.state()
        .events(&iterable_sim::Filter::default())
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Sum of 429 answers over all endpoints.
pub fn sim_429s(sim: &iterable_sim::SimHandle) -> u64 {
    sim.state().stats().totals.rate_limited
}
