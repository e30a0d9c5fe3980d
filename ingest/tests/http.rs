//! The endpoint contract through `app().oneshot` with the in-memory sink: every status, the
//! envelope contents, and the metrics each refusal increments.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::*;
use ingest::{AppState, IngestConfig, MemoryMode, MemorySink, app};
use runtime::KafkaConfig;
use schemas::{EventSource, ShopifyEnvelope};
use tower::ServiceExt;

fn test_config() -> IngestConfig {
    let mut c = config(KafkaConfig::default(), "unused");
    c.http.read_timeout = Duration::from_millis(300);
    c.http.ack_timeout = Duration::from_millis(300);
    c
}

fn setup(c: &IngestConfig, mode: MemoryMode) -> (Router, Arc<MemorySink>, AppState) {
    let sink = MemorySink::with_mode(mode);
    let state = AppState::new(c, sink.clone()).unwrap();
    (app(state.clone()), sink, state)
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn metric(state: &AppState, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&state.registry().gather(), &mut buf)
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
        if metric_name == name
            && labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            return value.parse().unwrap();
        }
    }
    0.0
}

fn rejected(state: &AppState, reason: &str) -> f64 {
    metric(
        state,
        "tillstream_ingest_rejected_total",
        &[("reason", reason)],
    )
}

#[tokio::test]
async fn every_fixture_is_accepted_with_exact_bytes_key_and_headers() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let fixtures = fixtures();
    for (f, body) in &fixtures {
        let (status, text) = send(&router, signed(f, body)).await;
        assert_eq!(status, StatusCode::OK, "{}: {text}", f.file);
    }
    let records = sink.records();
    assert_eq!(records.len(), fixtures.len());
    for ((f, body), record) in fixtures.iter().zip(&records) {
        let e = ShopifyEnvelope::decode(&record.value).unwrap();
        assert_eq!(&e.body, body, "{}: body must be the received bytes", f.file);
        assert_eq!(record.key, f.expected_key, "{}", f.file);
        assert_eq!(e.routing_key, f.expected_key);
        assert_eq!(e.topic, f.topic);
        assert_eq!(e.shop_domain, SHOP);
        assert_eq!(e.delivery_id, f.webhook_id);
        assert_eq!(e.api_version.as_deref(), Some(f.api_version.as_str()));
        assert_eq!(e.source, EventSource::Webhook);
        assert_eq!(e.webhook_name, f.subscription_name);
        if f.omit_optional {
            assert_eq!(e.event_id, None);
            assert_eq!(e.triggered_at_ms, None);
        } else {
            assert_eq!(e.event_id.as_deref(), Some(f.event_id.as_str()));
            assert!(e.triggered_at_ms.unwrap() > 1_750_000_000_000);
        }
        assert!(e.received_at_ms > 0);
    }
    // Unused topics are published and counted.
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_unused_topic_total",
            &[("topic", "inventory_levels/update")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_requests_total",
            &[("topic", "orders/create"), ("status", "200")]
        ),
        2.0
    );
}

#[tokio::test]
async fn compliance_topics_with_a_bad_signature_get_401_and_nothing_is_published() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    for (f, body) in fixtures().iter().filter(|(f, _)| {
        matches!(
            f.topic.as_str(),
            "customers/redact" | "customers/data_request" | "shop/redact"
        )
    }) {
        let (status, _) = send(
            &router,
            request(&headers_for(f, body, NOTIFICATION_KEY), body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", f.file);
        let (status, _) = send(&router, signed(f, body)).await;
        assert_eq!(status, StatusCode::OK, "{}", f.file);
    }
    assert_eq!(sink.records().len(), 3);
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_hmac_failures_total",
            &[("reason", "mismatch")]
        ),
        3.0
    );
}

#[tokio::test]
async fn signature_problems_are_401_with_their_reason() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let body = br#"{"id":1}"#.to_vec();
    let base = vec![
        ("X-Shopify-Topic".to_owned(), "orders/paid".to_owned()),
        ("X-Shopify-Shop-Domain".to_owned(), SHOP.to_owned()),
        ("X-Shopify-Webhook-Id".to_owned(), "w1".to_owned()),
    ];
    // Missing.
    assert_eq!(
        send(&router, request(&base, body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Malformed: hex instead of base64, and a repeated header.
    let mut h = base.clone();
    h.push(("X-Shopify-Hmac-Sha256".into(), "ab".repeat(32)));
    assert_eq!(
        send(&router, request(&h, body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut h = base.clone();
    h.push(("X-Shopify-Hmac-Sha256".into(), ingest::sign(SECRET, &body)));
    h.push(("X-Shopify-Hmac-Sha256".into(), ingest::sign(SECRET, &body)));
    assert_eq!(
        send(&router, request(&h, body.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Signed with the store's notification key instead of the app secret.
    let mut h = base.clone();
    h.push((
        "X-Shopify-Hmac-Sha256".into(),
        ingest::sign(NOTIFICATION_KEY, &body),
    ));
    let (status, text) = send(&router, request(&h, body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("does not match"), "{text}");
    // The previous secret still works (rotation), and is counted as secret 1.
    let mut h = base.clone();
    h.push((
        "x-shopify-hmac-sha256".into(),
        ingest::sign(PREVIOUS_SECRET, &body),
    ));
    assert_eq!(
        send(&router, request(&h, body.clone())).await.0,
        StatusCode::OK
    );
    assert_eq!(sink.records().len(), 1);
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_hmac_failures_total",
            &[("reason", "missing")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_hmac_failures_total",
            &[("reason", "malformed")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_hmac_failures_total",
            &[("reason", "mismatch")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_hmac_verified_total",
            &[("secret", "1")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_requests_total",
            &[("topic", "unverified"), ("status", "401")]
        ),
        4.0
    );
}

#[tokio::test]
async fn missing_required_headers_are_400_naming_the_header() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let body = br#"{"id":1}"#.to_vec();
    for missing in [
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-Webhook-Id",
    ] {
        let h: Vec<(String, String)> = [
            ("X-Shopify-Topic", "orders/paid"),
            ("X-Shopify-Shop-Domain", SHOP),
            ("X-Shopify-Webhook-Id", "w1"),
        ]
        .iter()
        .filter(|(k, _)| *k != missing)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([(
            "X-Shopify-Hmac-Sha256".to_owned(),
            ingest::sign(SECRET, &body),
        )])
        .collect();
        let (status, text) = send(&router, request(&h, body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains(missing), "{text}");
    }
    let mut h = headers_for(&fixtures()[0].0, &body, SECRET);
    h.push(("x-shopify-webhook-id".into(), "second".into()));
    let (status, text) = send(&router, request(&h, body.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("repeated"), "{text}");
    assert!(sink.records().is_empty());
    assert_eq!(rejected(&state, "missing_header"), 3.0);
    assert_eq!(rejected(&state, "repeated_header"), 1.0);
}

#[tokio::test]
async fn shops_outside_the_allow_list_get_403() {
    let mut c = test_config();
    c.shopify.allowed_shops = vec!["Other-Shop.myshopify.com".into()];
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let (f, body) = &fixtures()[0];
    assert_eq!(
        send(&router, signed(f, body)).await.0,
        StatusCode::FORBIDDEN
    );
    assert!(sink.records().is_empty());
    assert_eq!(rejected(&state, "shop_not_allowed"), 1.0);
    c.shopify.allowed_shops = vec![SHOP.to_uppercase()];
    let (router, sink, _) = setup(&c, MemoryMode::Ack);
    assert_eq!(send(&router, signed(f, body)).await.0, StatusCode::OK);
    assert_eq!(sink.records().len(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_declared_or_streamed() {
    let mut c = test_config();
    c.http.body_limit = 1024;
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let body = vec![b'x'; 2048];
    let mut h = headers_for(&fixtures()[0].0, &body, SECRET);
    h.push(("Content-Length".into(), "2048".into()));
    assert_eq!(
        send(&router, request(&h, body.clone())).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // No Content-Length (chunked): refused while reading.
    let h = headers_for(&fixtures()[0].0, &body, SECRET);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(300)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut r = request(&h, Vec::new());
    *r.body_mut() = Body::from_stream(futures::stream::iter(chunks));
    assert_eq!(send(&router, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    let body = vec![b' '; 1024];
    let h = headers_for(&fixtures()[0].0, &body, SECRET);
    assert_eq!(send(&router, request(&h, body)).await.0, StatusCode::OK);
    assert_eq!(sink.records().len(), 1);
    assert_eq!(rejected(&state, "too_large"), 2.0);
}

#[tokio::test]
async fn a_slow_body_is_408_after_the_read_timeout() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let body = b"{\"id\":1}".to_vec();
    let h = headers_for(&fixtures()[0].0, &body, SECRET);
    let mut r = request(&h, Vec::new());
    let first: Result<Bytes, std::io::Error> = Ok(Bytes::from_static(b"{\"id\""));
    *r.body_mut() = Body::from_stream(futures::StreamExt::chain(
        futures::stream::iter([first]),
        futures::stream::pending(),
    ));
    let started = Instant::now();
    assert_eq!(send(&router, r).await.0, StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < c.http.read_timeout + Duration::from_secs(2));
    assert!(sink.records().is_empty());
    assert_eq!(rejected(&state, "read_timeout"), 1.0);
}

#[tokio::test]
async fn empty_non_json_and_non_utf8_bodies() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Ack);
    let (f, _) = &fixtures()[0];
    // Empty, even correctly signed: 400.
    assert_eq!(
        send(&router, signed(f, b"")).await.0,
        StatusCode::BAD_REQUEST
    );
    // Not JSON and not UTF-8, but signed: published verbatim for the processor to dead-letter.
    let not_json = b"<html>hello & bye</html>".to_vec();
    assert_eq!(send(&router, signed(f, &not_json)).await.0, StatusCode::OK);
    let not_utf8 = vec![b'{', 0xff, 0xfe, b'}'];
    assert_eq!(send(&router, signed(f, &not_utf8)).await.0, StatusCode::OK);
    let records = sink.records();
    assert_eq!(records.len(), 2);
    assert_eq!(
        ShopifyEnvelope::decode(&records[0].value).unwrap().body,
        not_json
    );
    assert_eq!(
        ShopifyEnvelope::decode(&records[1].value).unwrap().body,
        not_utf8
    );
    // Unparseable bodies go to the shop key.
    assert_eq!(records[0].key, format!("{SHOP}/s/-"));
    assert_eq!(rejected(&state, "empty_body"), 1.0);
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_suspect_bodies_total",
            &[("kind", "not_json")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            "tillstream_ingest_suspect_bodies_total",
            &[("kind", "invalid_utf8")]
        ),
        1.0
    );
}

#[tokio::test]
async fn no_ack_within_the_bound_is_503_and_a_failing_broker_is_503() {
    let c = test_config();
    let (router, sink, state) = setup(&c, MemoryMode::Hang);
    let (f, body) = &fixtures()[0];
    let started = Instant::now();
    let (status, _) = send(&router, signed(f, body)).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        elapsed >= c.http.ack_timeout && elapsed < c.http.ack_timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    sink.set_mode(MemoryMode::Fail);
    assert_eq!(
        send(&router, signed(f, body)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    sink.set_mode(MemoryMode::Ack);
    assert_eq!(send(&router, signed(f, body)).await.0, StatusCode::OK);
    assert_eq!(sink.records().len(), 1);
    assert_eq!(rejected(&state, "ack_timeout"), 1.0);
    assert_eq!(rejected(&state, "publish_failed"), 1.0);
    assert_eq!(metric(&state, "tillstream_ingest_in_flight", &[]), 0.0);
}

#[tokio::test]
async fn requests_beyond_max_in_flight_are_shed_with_503() {
    let mut c = test_config();
    c.http.max_in_flight = 1;
    c.http.ack_timeout = Duration::from_secs(2);
    let (router, sink, state) = setup(&c, MemoryMode::Hang);
    let (f, body) = fixtures()[0].clone();
    let stuck = tokio::spawn({
        let router = router.clone();
        let (f, body) = (f.clone(), body.clone());
        async move { send(&router, signed(&f, &body)).await.0 }
    });
    // Wait until the first request holds the only permit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&state, "tillstream_ingest_in_flight", &[]) < 1.0 {
        assert!(Instant::now() < deadline, "first request never started");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        send(&router, signed(&f, &body)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(rejected(&state, "overloaded"), 1.0);
    sink.set_mode(MemoryMode::Ack);
    assert_eq!(stuck.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn ops_routes_answer() {
    let c = test_config();
    let (router, _, state) = setup(&c, MemoryMode::Ack);
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    assert_eq!(send(&router, get("/healthz")).await.0, StatusCode::OK);
    // Not ready until a broker check succeeded.
    assert_eq!(
        send(&router, get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.health().set_ready(true, "ready");
    assert_eq!(send(&router, get("/readyz")).await.0, StatusCode::OK);
    let (f, body) = &fixtures()[0];
    send(&router, signed(f, body)).await;
    let (status, text) = send(&router, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "tillstream_ingest_requests_total",
        "tillstream_ingest_publish_seconds",
        "tillstream_ingest_body_bytes",
        "tillstream_ingest_in_flight",
        "tillstream_ingest_hmac_verified_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // Wrong method and path.
    assert_eq!(
        send(&router, get("/webhooks/shopify")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(send(&router, get("/nope")).await.0, StatusCode::NOT_FOUND);
}
