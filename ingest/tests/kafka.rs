//! Against the real broker (127.0.0.1:9092 or `TILLSTREAM_TEST_KAFKA`): every fixture is
//! published with the received bytes and the expected key, a wrong key publishes nothing, and
//! an unreachable broker gets 503 within the ack bound.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use ingest::{AppState, KafkaSink, app};
use runtime::KafkaConfig;
use runtime::testing::{fresh_topics, kafka};
use tower::ServiceExt;

fn kafka_app(kafka: &KafkaConfig, topic: &str, ack_timeout: Duration) -> Router {
    let mut c = config(kafka.clone(), topic);
    c.http.ack_timeout = ack_timeout;
    let sink = Arc::new(KafkaSink::new(&c.kafka, topic, c.http.body_limit).unwrap());
    app(AppState::new(&c, sink).unwrap())
}

async fn status(router: &Router, request: Request<Body>) -> StatusCode {
    router.clone().oneshot(request).await.unwrap().status()
}

/// A realistic order with `n` line items: well over 1 MB for n = 3000.
fn big_order(n: usize) -> Vec<u8> {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":{},"variant_id":{},"product_id":632910392,"sku":"SKU\/{i}","title":"Item {i} \u0026 more","quantity":1,"price":"9.99","price_set":{{"shop_money":{{"amount":"9.99","currency_code":"USD"}},"presentment_money":{{"amount":"9.99","currency_code":"USD"}}}},"total_discount":"0.00","discount_allocations":[],"properties":[{{"name":"note","value":"gift wrap please, handle with care {i}"}}]}}"#,
                9_007_199_254_740_993u64 + i as u64,
                808_950_810 + i
            )
        })
        .collect();
    format!(
        r#"{{"id":9007199254740993,"email":"big@example.com","customer":{{"id":9007199254740995,"email":"big@example.com"}},"line_items":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

#[tokio::test]
async fn fixtures_are_published_byte_for_byte_with_the_expected_key() {
    let kafka = kafka();
    let topics = fresh_topics(&kafka, 6).await;
    let router = kafka_app(&kafka, &topics.raw, Duration::from_secs(4));
    warm_up(&router).await;
    let fixtures = fixtures();
    for (f, body) in &fixtures {
        assert_eq!(
            status(&router, signed(f, body)).await,
            StatusCode::OK,
            "{}",
            f.file
        );
    }
    // A retry of the first delivery (same bytes, same ids) and a body over 1 MB.
    let (first, first_body) = &fixtures[0];
    assert_eq!(
        status(&router, signed(first, first_body)).await,
        StatusCode::OK
    );
    let big = big_order(3000);
    assert!(big.len() > 1_000_000, "{}", big.len());
    assert_eq!(
        status(&router, delivery("orders/updated", "big-1", &big, SECRET)).await,
        StatusCode::OK
    );

    let want = fixtures.len() + 2;
    let got = consume_until(&kafka, &topics.raw, Duration::from_secs(30), |r| {
        r.iter().filter(|c| !is_warmup(c)).count() >= want
    })
    .await;
    let got: Vec<_> = got.into_iter().filter(|c| !is_warmup(c)).collect();
    assert_eq!(got.len(), want);
    let mut partitions_by_key: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for (f, body) in &fixtures {
        let found: Vec<_> = got
            .iter()
            .filter(|c| c.envelope.delivery_id == f.webhook_id)
            .collect();
        let expected_copies = if f.webhook_id == first.webhook_id {
            2
        } else {
            1
        };
        assert_eq!(found.len(), expected_copies, "{}", f.file);
        for c in found {
            assert_eq!(
                &c.envelope.body, body,
                "{}: bytes changed on the way to Kafka",
                f.file
            );
            assert_eq!(c.key, f.expected_key, "{}", f.file);
            assert_eq!(c.envelope.topic, f.topic);
            assert_eq!(c.envelope.shop_domain, SHOP);
            partitions_by_key
                .entry(&f.expected_key)
                .or_default()
                .insert(c.partition);
        }
    }
    // Everything about one customer is on one partition.
    for (key, partitions) in partitions_by_key {
        assert_eq!(partitions.len(), 1, "{key} spread over {partitions:?}");
    }
    let big_record = got
        .iter()
        .find(|c| c.envelope.delivery_id == "big-1")
        .unwrap();
    assert_eq!(big_record.envelope.body, big);
    assert_eq!(big_record.key, format!("{SHOP}/c/9007199254740995"));
}

#[tokio::test]
async fn a_wrong_key_gets_401_and_nothing_is_published() {
    let kafka = kafka();
    // One partition: the sentinel is read only after everything produced before it.
    let topics = fresh_topics(&kafka, 1).await;
    let router = kafka_app(&kafka, &topics.raw, Duration::from_secs(4));
    warm_up(&router).await;
    let all = fixtures();
    for (f, body) in all.iter().take(5) {
        let bad = request(&headers_for(f, body, NOTIFICATION_KEY), body.clone());
        assert_eq!(
            status(&router, bad).await,
            StatusCode::UNAUTHORIZED,
            "{}",
            f.file
        );
    }
    // A sentinel sent afterwards: once it is visible, anything published before it would be too.
    let sentinel = br#"{"shop_id":1,"shop_domain":"tillstream-demo.myshopify.com"}"#;
    assert_eq!(
        status(
            &router,
            delivery("shop/redact", "sentinel", sentinel, SECRET)
        )
        .await,
        StatusCode::OK
    );
    let got = consume_until(&kafka, &topics.raw, Duration::from_secs(20), |r| {
        r.iter().any(|c| c.envelope.delivery_id == "sentinel")
    })
    .await;
    let got: Vec<_> = got.into_iter().filter(|c| !is_warmup(c)).collect();
    assert_eq!(
        got.len(),
        1,
        "only the sentinel: {:?}",
        got.iter()
            .map(|c| &c.envelope.delivery_id)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_unreachable_broker_gets_503_within_the_ack_bound() {
    let dead = KafkaConfig::new(format!("127.0.0.1:{}", dead_port()));
    let bound = Duration::from_secs(2);
    let router = kafka_app(&dead, "tillstream.shopify.raw", bound);
    let (f, body) = &fixtures()[0];
    for _ in 0..2 {
        let started = Instant::now();
        let s = status(&router, signed(f, body)).await;
        let elapsed = started.elapsed();
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            elapsed < bound + Duration::from_secs(1),
            "answered after {elapsed:?}"
        );
    }
}
