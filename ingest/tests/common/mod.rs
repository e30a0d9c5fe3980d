//! Shared helpers of ingest's integration tests: fixtures, signed requests, configs, a consumer.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use ingest::IngestConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use runtime::{KafkaConfig, Secret};
use schemas::ShopifyEnvelope;
use serde::Deserialize;

/// The app secret every fixture is signed with.
pub const SECRET: &str = "fixture-app-secret";
/// The previous app secret (rotation).
pub const PREVIOUS_SECRET: &str = "fixture-previous-secret";
/// A store's notification signing key: Shopify signs admin-created webhooks with it.
pub const NOTIFICATION_KEY: &str = "store-notification-signing-key";
pub const SHOP: &str = "tillstream-demo.myshopify.com";

/// One entry of `tests/fixtures/manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    pub file: String,
    pub topic: String,
    pub api_version: String,
    pub expected_key: String,
    #[serde(default)]
    pub lower_case_headers: bool,
    #[serde(default)]
    pub omit_optional: bool,
    #[serde(default)]
    pub subscription_name: Option<String>,
    pub webhook_id: String,
    pub event_id: String,
    pub triggered_at: String,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture with its body bytes.
pub fn fixtures() -> Vec<(Fixture, Vec<u8>)> {
    let manifest = std::fs::read(fixtures_dir().join("manifest.json")).unwrap();
    let list: Vec<Fixture> = serde_json::from_slice(&manifest).unwrap();
    list.into_iter()
        .map(|f| {
            let body = std::fs::read(fixtures_dir().join(&f.file)).unwrap();
            (f, body)
        })
        .collect()
}

/// The headers Shopify would send for `fixture`, signed with `secret`.
pub fn headers_for(fixture: &Fixture, body: &[u8], secret: &str) -> Vec<(String, String)> {
    let mut h = vec![
        ("X-Shopify-Topic".to_owned(), fixture.topic.clone()),
        (
            "X-Shopify-Hmac-Sha256".to_owned(),
            ingest::sign(secret, body),
        ),
        ("X-Shopify-Shop-Domain".to_owned(), SHOP.to_owned()),
        (
            "X-Shopify-API-Version".to_owned(),
            fixture.api_version.clone(),
        ),
        (
            "X-Shopify-Webhook-Id".to_owned(),
            fixture.webhook_id.clone(),
        ),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    if !fixture.omit_optional {
        h.push(("X-Shopify-Event-Id".to_owned(), fixture.event_id.clone()));
        h.push((
            "X-Shopify-Triggered-At".to_owned(),
            fixture.triggered_at.clone(),
        ));
    }
    if let Some(name) = &fixture.subscription_name {
        h.push(("X-Shopify-Name".to_owned(), name.clone()));
    }
    if fixture.lower_case_headers {
        for (k, _) in &mut h {
            *k = k.to_lowercase();
        }
    }
    h
}

/// A `POST /webhooks/shopify` request with the given headers and body.
pub fn request(headers: &[(String, String)], body: Vec<u8>) -> Request<Body> {
    let mut r = Request::post("/webhooks/shopify");
    for (k, v) in headers {
        r = r.header(k.as_str(), v.as_str());
    }
    r.body(Body::from(body)).unwrap()
}

/// A signed request for `fixture`.
pub fn signed(fixture: &Fixture, body: &[u8]) -> Request<Body> {
    request(&headers_for(fixture, body, SECRET), body.to_vec())
}

/// A minimal valid delivery of `topic` with `body`, signed with `secret`.
pub fn delivery(topic: &str, webhook_id: &str, body: &[u8], secret: &str) -> Request<Body> {
    let headers = vec![
        ("X-Shopify-Topic".to_owned(), topic.to_owned()),
        (
            "X-Shopify-Hmac-Sha256".to_owned(),
            ingest::sign(secret, body),
        ),
        ("X-Shopify-Shop-Domain".to_owned(), SHOP.to_owned()),
        ("X-Shopify-Webhook-Id".to_owned(), webhook_id.to_owned()),
    ];
    request(&headers, body.to_vec())
}

/// Defaults plus the fixture secrets, `kafka` and short timeouts suitable for tests.
pub fn config(kafka: KafkaConfig, raw_topic: &str) -> IngestConfig {
    let mut c = IngestConfig::defaults().unwrap();
    c.kafka = kafka;
    c.topics.raw = raw_topic.to_owned();
    c.shopify.secrets = vec![Secret::new(SECRET), Secret::new(PREVIOUS_SECRET)];
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub partition: i32,
    pub envelope: ShopifyEnvelope,
}

/// Reads `topic` from the beginning until `done` holds or `timeout` passes.
/// Reads deliveries (heartbeats skipped) from every partition until `done` or the timeout.
pub async fn consume_until(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    consume_records_until(kafka, topic, timeout, false, done).await
}

/// Like [`consume_until`], keeping ingest's heartbeats when `heartbeats`.
pub async fn consume_records_until(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    heartbeats: bool,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let consumer: StreamConsumer = kafka
        .consumer(
            "ingest-test",
            &runtime::testing::unique("ingest-test"),
            false,
        )
        .create()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let partitions = known_partitions(&consumer, topic, deadline);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, i32::try_from(p).unwrap(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(m)) => {
                let envelope = ShopifyEnvelope::decode(m.payload().unwrap()).unwrap();
                if heartbeats || !envelope.is_heartbeat() {
                    out.push(Consumed {
                        key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                        partition: m.partition(),
                        envelope,
                    });
                }
            }
            Ok(Err(e)) => panic!("consumer error: {e}"),
            Err(_) => {}
        }
    }
    out
}

/// The partition count of `topic` once the broker's metadata knows the topic. Right after it
/// was created, on a loaded machine, the answer can still be "unknown topic, no partitions":
/// a reader assigned from that reads nothing at all.
fn known_partitions(consumer: &StreamConsumer, topic: &str, deadline: Instant) -> usize {
    loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
            .and_then(|md| {
                let t = md.topics().first()?;
                (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
            });
        match found {
            Some(n) => return n,
            None if Instant::now() < deadline => std::thread::yield_now(),
            None => panic!("{topic}: no partitions in the broker's metadata"),
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends throw-away deliveries (`warmup-N`) until one is acknowledged: the first produce on a
/// fresh topic waits for metadata and the idempotent producer id, which on a loaded machine
/// can exceed the ack bound. Consumers of the topic should skip [`is_warmup`] records.
pub async fn warm_up(router: &axum::Router) {
    use tower::ServiceExt;
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = br#"{"shop_id":1,"shop_domain":"tillstream-demo.myshopify.com"}"#;
    for n in 0.. {
        let request = delivery("shop/redact", &format!("warmup-{n}"), body, SECRET);
        let status = router.clone().oneshot(request).await.unwrap().status();
        if status == axum::http::StatusCode::OK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never acknowledged a warm-up record: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a consumed record is one of [`warm_up`]'s.
pub fn is_warmup(c: &Consumed) -> bool {
    c.envelope.delivery_id.starts_with("warmup-")
}
