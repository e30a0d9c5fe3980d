//! Sender tests against a local axum server: retries resend identical bytes with the same webhook id.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use shopify_sim::{Delivery, ScenarioConfig, SendOptions, generate, send, verify};

#[derive(Clone, Copy)]
enum Mode {
    /// Fail the first N attempts per webhook id with 500, then 200.
    Fail(usize),
    /// Redirect the first attempt (3xx must count as failure), then 200.
    Redirect,
    /// Stall the first attempt past the client timeout, then 200.
    Stall(Duration),
}

/// Attempts seen per webhook id: (body, hmac header, event id).
type Seen = Arc<Mutex<BTreeMap<String, Vec<(Vec<u8>, String, String)>>>>;

#[derive(Clone)]
struct Server {
    mode: Mode,
    /// webhook id → (body, hmac header, event id) per attempt.
    seen: Seen,
}

async fn handler(State(s): State<Server>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = h("x-shopify-webhook-id");
    let attempt = {
        let mut seen = s.seen.lock().unwrap();
        let v = seen.entry(id).or_default();
        v.push((
            body.to_vec(),
            h("x-shopify-hmac-sha256"),
            h("x-shopify-event-id"),
        ));
        v.len()
    };
    match s.mode {
        Mode::Fail(n) if attempt <= n => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Redirect if attempt == 1 => StatusCode::FOUND,
        Mode::Stall(d) if attempt == 1 => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
        _ => StatusCode::OK,
    }
}

async fn start(mode: Mode) -> (String, Server) {
    let server = Server {
        mode,
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/webhooks/shopify", post(handler))
        .with_state(server.clone());
    // Bound before spawning, so the server accepts connections as soon as we return.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/webhooks/shopify"), server)
}

fn sample(n: usize) -> Vec<Delivery> {
    let cfg = ScenarioConfig {
        customers: 4,
        ..ScenarioConfig::default()
    };
    generate(&cfg)
        .unwrap()
        .deliveries
        .into_iter()
        .take(n)
        .collect()
}

fn options(url: &str) -> SendOptions {
    SendOptions {
        rate_per_sec: 0.0,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        concurrency: 4,
        ..SendOptions::new(url, "test-secret")
    }
}

#[tokio::test]
async fn retries_resend_identical_bytes_with_same_webhook_id() {
    let (url, server) = start(Mode::Fail(3)).await;
    let deliveries = sample(5);
    let report = send(deliveries.clone(), options(&url)).await.unwrap();
    assert_eq!(report.deliveries, 5);
    assert_eq!(report.sent, 5);
    assert_eq!(report.failed, 0);
    assert_eq!(report.retried, 15);
    assert_eq!(report.attempts, 20);
    assert_eq!(report.status_counts.get("500"), Some(&15));
    assert_eq!(report.status_counts.get("200"), Some(&5));
    let seen = server.seen.lock().unwrap();
    for d in &deliveries {
        let attempts = seen.get(&d.webhook_id).unwrap();
        assert_eq!(attempts.len(), 4);
        for (body, hmac, event_id) in attempts {
            assert_eq!(body, &d.body, "retry must resend identical bytes");
            assert_eq!(event_id, &d.event_id);
            assert!(verify(body, b"test-secret", hmac));
        }
    }
    // Serialisable as the CLI prints it.
    assert!(
        serde_json::to_string(&report)
            .unwrap()
            .contains("\"retried\":15")
    );
}

#[tokio::test]
async fn gives_up_after_eight_retries() {
    let (url, server) = start(Mode::Fail(usize::MAX)).await;
    let deliveries = sample(2);
    let report = send(deliveries.clone(), options(&url)).await.unwrap();
    assert_eq!(report.sent, 0);
    assert_eq!(report.failed, 2);
    assert_eq!(report.attempts, 18);
    assert_eq!(report.retried, 16);
    assert_eq!(report.failed_webhook_ids.len(), 2);
    let seen = server.seen.lock().unwrap();
    for d in &deliveries {
        assert_eq!(
            seen.get(&d.webhook_id).unwrap().len(),
            9,
            "1 attempt + 8 retries"
        );
    }
}

#[tokio::test]
async fn redirects_and_timeouts_are_failures() {
    let (url, server) = start(Mode::Redirect).await;
    let report = send(sample(1), options(&url)).await.unwrap();
    assert_eq!((report.sent, report.retried), (1, 1));
    assert_eq!(report.status_counts.get("302"), Some(&1));
    assert_eq!(
        server.seen.lock().unwrap().values().next().unwrap().len(),
        2
    );

    let (url, _server) = start(Mode::Stall(Duration::from_secs(2))).await;
    let opts = SendOptions {
        timeout: Duration::from_millis(200),
        ..options(&url)
    };
    let report = send(sample(1), opts).await.unwrap();
    assert_eq!((report.sent, report.retried), (1, 1));
    assert_eq!(report.status_counts.get("timeout"), Some(&1));
}

#[tokio::test]
async fn paces_at_the_offered_rate() {
    let (url, _server) = start(Mode::Fail(0)).await;
    let opts = SendOptions {
        rate_per_sec: 100.0,
        ..options(&url)
    };
    let report = send(sample(21), opts).await.unwrap();
    assert_eq!(report.sent, 21);
    // 21 sends at 100/s need at least 20 gaps of 10 ms.
    assert!(report.elapsed_ms >= 190, "elapsed {} ms", report.elapsed_ms);
}
