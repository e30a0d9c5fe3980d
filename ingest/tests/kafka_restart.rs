//! Broker down and back, on a private broker (the shared one on 9092 is never touched): while
//! it is down the endpoint answers 503 within the ack bound; once it is back, Shopify's retry
//! of the same delivery is answered 200 only after it is in Kafka, with the exact bytes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use ingest::{AppState, KafkaSink, app};
use runtime::KafkaConfig;
use tower::ServiceExt;

/// A broker started by `scripts/kafka` on its own port and state dir; stopped (data deleted)
/// on drop, even when the test fails.
struct PrivateBroker {
    port: u16,
    state: PathBuf,
}

impl PrivateBroker {
    fn script(&self, action: &str) -> std::process::Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka");
        Command::new("bash")
            .arg(script)
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_STATE_DIR", &self.state)
            .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx384m")
            .output()
            .unwrap()
    }

    fn run(&self, action: &str) {
        let out = self.script(action);
        assert!(
            out.status.success(),
            "scripts/kafka {action} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Self {
        let broker = Self {
            port: free_port_pair(),
            state: std::env::temp_dir().join(runtime::testing::unique("ingest-kafka")),
        };
        broker.run("start");
        broker
    }

    fn config(&self) -> KafkaConfig {
        KafkaConfig::new(format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// A port P with P+1 also free (the script's controller listens on P+1).
fn free_port_pair() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for i in 0..200u64 {
        let port =
            20_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % 20_000) as u16;
        let a = std::net::TcpListener::bind(("127.0.0.1", port));
        let b = std::net::TcpListener::bind(("127.0.0.1", port + 1));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
    panic!("no free port pair found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_gives_503_and_the_retry_after_it_is_back_is_published() {
    let test_started = Instant::now();
    let broker = tokio::task::spawn_blocking(PrivateBroker::start)
        .await
        .unwrap();
    let kafka = broker.config();
    let topics = runtime::testing::fresh_topics(&kafka, 1).await;

    let bound = Duration::from_secs(2);
    let mut c = config(kafka.clone(), &topics.raw);
    c.http.ack_timeout = bound;
    let sink = Arc::new(KafkaSink::new(&c.kafka, &topics.raw, c.http.body_limit).unwrap());
    let router = app(AppState::new(&c, sink).unwrap());
    let all = fixtures();
    let (f, body) = &all[2];

    // Broker up: accepted (retried until the fresh topic and producer id are ready).
    warm_up(&router).await;

    // Broker down (SIGKILL, data kept): 503 within the bound, so Shopify retries.
    let b = &broker;
    tokio::task::block_in_place(|| b.run("kill"));
    let started = Instant::now();
    let status = router
        .clone()
        .oneshot(signed(f, body))
        .await
        .unwrap()
        .status();
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        elapsed < bound + Duration::from_secs(1),
        "answered after {elapsed:?}"
    );

    // Broker back: Shopify's retry (same bytes, same webhook id) is answered 200 once acked.
    tokio::task::block_in_place(|| b.run("restart"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let status = router
            .clone()
            .oneshot(signed(f, body))
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "retry never accepted after {attempts} attempts"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let got = consume_until(&kafka, &topics.raw, Duration::from_secs(30), |r| {
        r.iter().any(|c| c.envelope.delivery_id == f.webhook_id)
    })
    .await;
    let copies: Vec<_> = got
        .iter()
        .filter(|c| c.envelope.delivery_id == f.webhook_id)
        .collect();
    // At least the acknowledged retry; the 503'd attempt may also have landed once the broker
    // came back (the processor deduplicates on the webhook id).
    assert!(!copies.is_empty());
    for c in copies {
        assert_eq!(&c.envelope.body, body);
        assert_eq!(c.key, f.expected_key);
    }
    println!(
        "broker down/up test took {:?} ({attempts} retries)",
        test_started.elapsed()
    );
}
