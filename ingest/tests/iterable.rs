//! The Iterable system-webhook endpoint: every status with the in-memory sink, and against the
//! real broker (records on the raw topic only after the ack; a forged secret publishes nothing).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use ingest::{AppState, IngestConfig, KafkaSink, MemoryMode, MemorySink, app};
use runtime::testing::{fresh_topics, kafka};
use runtime::{KafkaConfig, Secret};
use schemas::ShopifyEnvelope;
use tower::ServiceExt;

const HEADER: &str = "X-Tillstream-Webhook-Secret";
const CURRENT: &str = "iterable-current";
const PREVIOUS: &str = "iterable-previous";
const SHOP: &str = "tour.myshopify.com";

fn iterable_config(kafka: KafkaConfig, topic: &str) -> IngestConfig {
    let mut c = config(kafka, topic);
    c.iterable.secrets = vec![Secret::new(CURRENT), Secret::new(PREVIOUS)];
    c.http.read_timeout = Duration::from_millis(300);
    c.http.ack_timeout = Duration::from_millis(300);
    c
}

fn post(shop: &str, secret: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::post(format!("/webhooks/iterable/{shop}"))
        .header("content-type", "application/json");
    if let Some(s) = secret {
        r = r.header(HEADER, s);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

async fn send(router: &Router, request: Request<Body>) -> StatusCode {
    router.clone().oneshot(request).await.unwrap().status()
}

fn unsubscribe(user: &str, at: &str) -> String {
    format!(
        r#"{{"email":"ada@example.com","userId":"{user}","eventName":"emailUnSubscribe","dataFields":{{"createdAt":"{at}","unsubSource":"EmailLink","channelIds":[11]}}}}"#
    )
}

#[tokio::test]
async fn statuses_and_what_is_published() {
    let c = iterable_config(KafkaConfig::default(), "unused");
    let sink = MemorySink::with_mode(MemoryMode::Ack);
    let router = app(AppState::new(&c, sink.clone()).unwrap());
    let body = unsubscribe("7001", "2025-06-01 10:00:00 +00:00");

    // Unauthenticated, forged, repeated: 401 and nothing published.
    assert_eq!(
        send(&router, post(SHOP, None, &body)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&router, post(SHOP, Some("forged"), &body)).await,
        StatusCode::UNAUTHORIZED
    );
    let twice = Request::post(format!("/webhooks/iterable/{SHOP}"))
        .header(HEADER, CURRENT)
        .header(HEADER, CURRENT)
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(send(&router, twice).await, StatusCode::UNAUTHORIZED);
    assert!(sink.is_empty());

    // Bad shop, not a webhook, no user: 400; too large: 413.
    assert_eq!(
        send(&router, post("not_a_shop", Some(CURRENT), &body)).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), "[1,2]")).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            &router,
            post(
                SHOP,
                Some(CURRENT),
                r#"{"eventName":"emailUnSubscribe","email":null}"#
            )
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    let huge = format!(
        r#"{{"eventName":"emailSubscribe","email":"a@b.c","pad":"{}"}}"#,
        "x".repeat(c.http.body_limit)
    );
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), &huge)).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Not a consent event: acknowledged, not published.
    assert_eq!(
        send(
            &router,
            post(
                SHOP,
                Some(CURRENT),
                r#"{"eventName":"emailOpen","email":"a@b.c"}"#
            )
        )
        .await,
        StatusCode::OK
    );
    assert!(sink.is_empty());

    // The current and the previous secret (rotation) are both accepted.
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), &body)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&router, post(SHOP, Some(PREVIOUS), &body)).await,
        StatusCode::OK
    );
    let records = sink.take();
    assert_eq!(records.len(), 2);
    let env = ShopifyEnvelope::decode(&records[0].value).unwrap();
    assert_eq!(records[0].key, "tour.myshopify.com/c/7001");
    assert_eq!(env.topic, "iterable/emailUnSubscribe");
    assert_eq!(env.shop_domain, SHOP);
    assert_eq!(env.body, body.as_bytes());
    assert_eq!(env.triggered_at_ms, Some(1_748_772_000_000));
    // A retry carries the same delivery id (the processor drops it).
    let again = ShopifyEnvelope::decode(&records[1].value).unwrap();
    assert_eq!(env.delivery_id, again.delivery_id);
    assert!(env.delivery_id.starts_with("iterable-"));

    // No ack: 503, never 200.
    sink.set_mode(MemoryMode::Hang);
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), &body)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    sink.set_mode(MemoryMode::Fail);
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), &body)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn disabled_without_a_secret() {
    let c = config(KafkaConfig::default(), "unused");
    let sink = MemorySink::new();
    let router = app(AppState::new(&c, sink.clone()).unwrap());
    let body = unsubscribe("1", "2025-06-01 10:00:00 +00:00");
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), &body)).await,
        StatusCode::NOT_FOUND
    );
    assert!(sink.is_empty());
}

#[tokio::test]
async fn real_broker_gets_authenticated_events_only() {
    let kafka = kafka();
    let topics = fresh_topics(&kafka, 3).await;
    let mut c = iterable_config(kafka.clone(), &topics.raw);
    c.http.ack_timeout = Duration::from_secs(4);
    let sink = Arc::new(KafkaSink::new(&c.kafka, &topics.raw, c.http.body_limit).unwrap());
    let router = app(AppState::new(&c, sink).unwrap());
    warm_up(&router).await;

    let forged = unsubscribe("666", "2025-06-01 10:00:00 +00:00");
    assert_eq!(
        send(&router, post(SHOP, Some("guess"), &forged)).await,
        StatusCode::UNAUTHORIZED
    );
    let sms = r#"{"email":null,"userId":"7002","eventName":"smsReceived","dataFields":{"createdAt":"2025-06-01 10:00:05 +00:00","smsMessage":"STOP"}}"#;
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), sms)).await,
        StatusCode::OK
    );
    let genuine = unsubscribe("7001", "2025-06-01 10:00:00 +00:00");
    assert_eq!(
        send(&router, post(SHOP, Some(CURRENT), &genuine)).await,
        StatusCode::OK
    );

    let got = consume_until(&kafka, &topics.raw, Duration::from_secs(30), |r| {
        r.iter().filter(|c| !is_warmup(c)).count() >= 2
    })
    .await;
    let got: Vec<_> = got.into_iter().filter(|c| !is_warmup(c)).collect();
    let mut keys: Vec<_> = got.iter().map(|c| c.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["tour.myshopify.com/c/7001", "tour.myshopify.com/c/7002"]
    );
    assert!(
        got.iter()
            .all(|c| c.envelope.topic.starts_with("iterable/"))
    );
    // The forged one (user 666) is nowhere: read a moment longer to be sure nothing follows.
    let later = consume_until(&kafka, &topics.raw, Duration::from_secs(2), |_| false).await;
    assert!(!later.iter().any(|c| c.key.ends_with("/c/666")));
}
