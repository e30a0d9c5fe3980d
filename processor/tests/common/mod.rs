//! Harness for the processor's real-Kafka tests: topics, input records, child processes, reads.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{
    Action, CustomerKey, EventSource, IterableCommand, KeyKind, ShopDomain, ShopifyEnvelope,
};

pub const SHOP: &str = "test-shop.myshopify.com";

pub fn shop() -> ShopDomain {
    ShopDomain::parse(SHOP).unwrap()
}

/// An input event for the raw topic.
pub fn envelope(topic: &str, delivery: &str, event_time_ms: i64, body: &str) -> ShopifyEnvelope {
    let key = schemas::routing_key(&shop(), topic, body.as_bytes());
    ShopifyEnvelope {
        delivery_id: delivery.into(),
        event_id: None,
        topic: topic.into(),
        shop_domain: SHOP.into(),
        api_version: Some("2026-07".into()),
        triggered_at_ms: Some(event_time_ms),
        received_at_ms: event_time_ms,
        routing_key: key.as_str().to_owned(),
        source: EventSource::Webhook,
        webhook_name: None,
        body: body.as_bytes().to_vec(),
    }
}

pub fn order(customer: u64, order_id: u64, delivery: &str, at: i64) -> ShopifyEnvelope {
    envelope(
        "orders/paid",
        delivery,
        at,
        &format!(r#"{{"id":{order_id},"customer":{{"id":{customer}}},"updated_at":"{at}"}}"#),
    )
}

pub fn refund(order_id: u64, refund_id: u64, delivery: &str, at: i64) -> ShopifyEnvelope {
    envelope(
        "refunds/create",
        delivery,
        at,
        &format!(r#"{{"id":{refund_id},"order_id":{order_id},"created_at":"{at}"}}"#),
    )
}

pub fn customer_key(customer: u64) -> String {
    CustomerKey::new(&shop(), KeyKind::Customer, &customer.to_string())
        .as_str()
        .to_owned()
}

/// Produces envelopes to the raw topic with the idempotent producer, keyed by routing key.
pub async fn produce(kafka: &KafkaConfig, topic: &str, events: &[ShopifyEnvelope]) {
    let p: FutureProducer = kafka.producer("test-ingest").create().unwrap();
    for e in events {
        let bytes = e.encode().unwrap();
        p.send(
            FutureRecord::to(topic).key(&e.routing_key).payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
}

/// Produces raw bytes (poison) to a topic.
pub async fn produce_raw(kafka: &KafkaConfig, topic: &str, key: &str, payload: &[u8]) {
    let p: FutureProducer = kafka.producer("test-poison").create().unwrap();
    p.send(
        FutureRecord::to(topic).key(key).payload(payload),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

/// One record read back: partition, key, value, headers.
pub type Record = runtime::testing::ReadRecord;

/// Reads every committed record of a topic (all partitions) from the beginning to its end.
pub fn read_all(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Vec<Record> {
    runtime::testing::read_committed(kafka, topic, partitions)
}

/// Decoded commands of a commands topic.
pub fn commands(kafka: &KafkaConfig, topics: &TopicsConfig) -> Vec<IterableCommand> {
    read_all(kafka, &topics.commands, topics.partitions)
        .into_iter()
        .filter_map(|(_, _, v, _)| v.map(|v| IterableCommand::decode(&v).unwrap()))
        .collect()
}

/// A refund body with one successful refund transaction of `amount` (shop currency USD).
pub fn refund_body(refund_id: u64, order_id: u64, amount: &str, at: i64) -> String {
    format!(
        r#"{{"id":{refund_id},"order_id":{order_id},"created_at":"{t}","processed_at":"{t}","restock":false,"refund_line_items":[],"order_adjustments":[],"refund_shipping_lines":[],"transactions":[{{"id":{tx},"order_id":{order_id},"kind":"refund","status":"success","amount":"{amount}","currency":"USD","gateway":"manual","created_at":"{t}"}}]}}"#,
        t = iso(at),
        tx = refund_id + 1
    )
}

/// An email-only (guest) checkout body with one line, created and updated at `at`.
pub fn guest_checkout_body(token: &str, email: &str, total: &str, at: i64) -> String {
    format!(
        r##"{{"token":"{token}","cart_token":"cart-{token}","email":"{email}","name":"#{token}","abandoned_checkout_url":"https:\/\/shop.example\/checkouts\/{token}","created_at":"{t}","updated_at":"{t}","completed_at":null,"currency":"USD","presentment_currency":"USD","subtotal_price":"{total}","total_price":"{total}","total_tax":"0.00","total_discounts":"0.00","line_items":[{{"key":"l1","variant_id":12,"product_id":11,"sku":"SKU-1","title":"Salt \u0026 Pepper","quantity":1,"price":"{total}","line_price":"{total}"}}]}}"##,
        t = iso(at)
    )
}

/// An ingest heartbeat for raw partition `p` at `at_ms`.
pub fn heartbeat(p: i32, at_ms: i64) -> ShopifyEnvelope {
    ShopifyEnvelope::heartbeat("test-ingest", p, at_ms)
}

/// Produces records to the raw topic in the given order, as ingest would: deliveries keyed by
/// routing key, heartbeats to their own partition (`Some(p)`).
pub async fn produce_in_order(
    kafka: &KafkaConfig,
    topic: &str,
    records: &[(Option<i32>, ShopifyEnvelope)],
) {
    let p: FutureProducer = kafka.producer("test-ingest").create().unwrap();
    let mut acks = Vec::new();
    for (partition, e) in records {
        let bytes = e.encode().unwrap();
        let mut r = FutureRecord::to(topic).key(&e.routing_key).payload(&bytes);
        if let Some(part) = partition {
            r = r.partition(*part);
        }
        acks.push(p.send_result(r).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// The `orders` figure of every `order_counted` command, by key, in ascending order (the
/// order counter's run of counts, 1..=n when state moved intact).
pub fn order_counts(cmds: &[IterableCommand]) -> BTreeMap<String, Vec<i64>> {
    let mut counts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in cmds.iter().filter(|c| event_name(c) == "order_counted") {
        counts
            .entry(c.customer_key.clone())
            .or_default()
            .push(event_field(c, "orders").unwrap());
    }
    for seen in counts.values_mut() {
        seen.sort_unstable();
    }
    counts
}

/// A metric's value from a processor's `/metrics` (first sample whose line starts with `name`).
pub fn metric(proc: &Proc, name: &str) -> Option<f64> {
    let (_, body) = proc.get("/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls until `f` returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Command ids with their multiplicity.
pub fn id_counts(cmds: &[IterableCommand]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in cmds {
        *m.entry(c.command_id.clone()).or_insert(0) += 1;
    }
    m
}

/// The count carried by each customer's latest `order_counted`.
pub fn event_field(c: &IterableCommand, field: &str) -> Option<i64> {
    match &c.action {
        Action::TrackEvent { data_fields, .. } => {
            data_fields.get(field).and_then(serde_json::Value::as_i64)
        }
        _ => None,
    }
}

pub fn event_name(c: &IterableCommand) -> &str {
    match &c.action {
        Action::TrackEvent { event_name, .. } => event_name,
        other => other.kind(),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A processor child process running the order-counter rules.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

/// Settings of one processor deployment under test.
#[derive(Clone)]
pub struct Deployment {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub application_id: String,
    pub timer_delay: String,
}

impl Deployment {
    /// A deployment of the order counter (its timer a day out) on `topics`.
    pub fn new(
        kafka: &KafkaConfig,
        topics: &TopicsConfig,
        application_id: impl Into<String>,
    ) -> Self {
        Self {
            kafka: kafka.clone(),
            topics: topics.clone(),
            application_id: application_id.into(),
            timer_delay: "1day".into(),
        }
    }

    pub fn spawn(&self, instance: &str) -> Proc {
        self.spawn_with(instance, &[])
    }

    /// Like `spawn`, with extra environment (later values override earlier ones).
    pub fn spawn_with(&self, instance: &str, extra: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let dir = std::env::temp_dir().join("tillstream-processor-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}-{instance}-{port}.log", self.application_id));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_processor"))
            .envs(runtime::testing::service_env(&self.kafka, &self.topics))
            .env("TILLSTREAM__APPLICATION_ID", &self.application_id)
            .env("TILLSTREAM__INSTANCE_ID", instance)
            .env("TILLSTREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("TILLSTREAM__RULES__KIND", "order-counter")
            .env("TILLSTREAM__RULES__COUNTER_TIMER_DELAY", &self.timer_delay)
            .env("TILLSTREAM__ENGINE__TRANSACTION_TIMEOUT", "10s")
            .env("TILLSTREAM__ENGINE__SESSION_TIMEOUT", "6s")
            .env("TILLSTREAM__ENGINE__COMMIT_INTERVAL", "50ms")
            .env("TILLSTREAM__ENGINE__COMMIT_MAX_RECORDS", "200")
            // These tests write the raw topic themselves, without ingest's heartbeats.
            .env("TILLSTREAM__ENGINE__TIMERS__CLOCK", "stream_time")
            .env("RUST_LOG", "info,processor=debug")
            .envs(extra.iter().copied())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Proc { child, port, log }
    }
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "processor did not stop on SIGTERM; log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET a path on this processor: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        probe::get(&format!("127.0.0.1:{}", self.port), path)
    }

    pub fn ready(&self) -> bool {
        probe::get_ok(&format!("http://127.0.0.1:{}/readyz", self.port))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod probe {
    /// GET over a raw socket: (status, body).
    pub fn get(host: &str, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(host).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        let status = buf.get(9..12)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    /// A tiny blocking GET over a raw socket (the tests avoid pulling in a blocking client).
    pub fn get_ok(url: &str) -> bool {
        use std::io::{Read, Write};
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200")
    }
}

/// A Shopify-style UTC timestamp for `ms`.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("timestamp in range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A registered customer's Shopify order payload.
pub fn order_body(
    id: u64,
    customer: u64,
    email: &str,
    total: &str,
    token: &str,
    at: i64,
) -> String {
    order_json(id, Some(customer), email, total, token, at)
}

/// A guest's Shopify order payload: no customer, known only by its email.
pub fn guest_order_body(id: u64, email: &str, total: &str, token: &str, at: i64) -> String {
    order_json(id, None, email, total, token, at)
}

fn order_json(
    id: u64,
    customer: Option<u64>,
    email: &str,
    total: &str,
    token: &str,
    at: i64,
) -> String {
    let customer = customer.map_or_else(
        || "null".to_owned(),
        |c| {
            format!(
                r#"{{"id":{c},"email":"{email}","first_name":"Ada","last_name":"Byron","state":"enabled"}}"#
            )
        },
    );
    format!(
        r##"{{"id":{id},"admin_graphql_api_id":"gid://shopify/Order/{id}","name":"#{id}","email":"{email}","created_at":"{t}","updated_at":"{t}","processed_at":"{t}","cancelled_at":null,"currency":"USD","presentment_currency":"USD","total_price":"{total}","subtotal_price":"{total}","total_tax":"0.00","total_discounts":"0.00","total_price_set":{{"shop_money":{{"amount":"{total}","currency_code":"USD"}},"presentment_money":{{"amount":"{total}","currency_code":"USD"}}}},"financial_status":"paid","fulfillment_status":null,"test":false,"checkout_token":"{token}","customer":{customer},"line_items":[{{"id":{li},"product_id":11,"variant_id":12,"sku":"SKU-1","title":"Salt \u0026 Pepper","quantity":1,"price":"{total}","total_discount":"0.00"}}],"refunds":[]}}"##,
        t = iso(at),
        li = id * 10
    )
}

/// Whether the processor group `group` has committed every raw record and every repartition
/// record. Commit markers may follow the last repartition record, one per producer whose
/// transactions interleaved there (every engine thread of every instance writes every
/// repartition partition), so a gap on the repartition topic is read through: drained when
/// no committed record lies in it.
pub fn drained(kafka: &KafkaConfig, topics: &TopicsConfig, group: &str) -> bool {
    let t = Duration::from_secs(10);
    let mut cfg = kafka.client("test-drained");
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().unwrap();
    [&topics.raw, &topics.repartition].into_iter().all(|topic| {
        let mut tpl = TopicPartitionList::new();
        for p in 0..topics.partitions {
            tpl.add_partition(topic, p);
        }
        let Ok(got) = c.committed_offsets(tpl, t) else {
            return false;
        };
        (0..topics.partitions).all(|p| {
            let high = c.fetch_watermarks(topic, p, t).map_or(i64::MAX, |w| w.1);
            let done = got
                .find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            high == 0
                || done >= high
                || (*topic == topics.repartition
                    && done >= 0
                    && nothing_committed_from(kafka, topic, p, done))
        })
    })
}

/// Whether a `read_committed` reader starting at `offset` of `topic`/`p` reaches the end without
/// a record (only commit markers or aborted records lie there).
fn nothing_committed_from(kafka: &KafkaConfig, topic: &str, p: i32, offset: i64) -> bool {
    let mut cfg = kafka.client("test-drained-tail");
    cfg.set("group.id", "test-drained-tail")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let c: BaseConsumer = cfg.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(offset))
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return false,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return true,
            _ => {}
        }
    }
    false
}

/// Waits until [`drained`] holds with an unchanged commands topic for 2 s; returns the commands.
pub fn wait_drained(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    group: &str,
) -> Vec<IterableCommand> {
    let mut last: Option<(usize, Instant)> = None;
    wait_for(
        "the processor to drain its input",
        Duration::from_secs(120),
        || {
            if !drained(kafka, topics, group) {
                last = None;
                return None;
            }
            let cmds = commands(kafka, topics);
            match last {
                Some((n, at)) if n == cmds.len() && at.elapsed() >= Duration::from_secs(2) => {
                    Some(cmds)
                }
                Some((n, _)) if n == cmds.len() => None,
                _ => {
                    last = Some((cmds.len(), Instant::now()));
                    None
                }
            }
        },
    )
}
