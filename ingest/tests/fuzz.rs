//! Property-based fuzzing of the request path through `app().oneshot` with the memory sink:
//! random headers, bodies (in random chunks), signatures and lengths never panic, always get a
//! documented status, and a record is published exactly when the answer is 200.
//!
//! `INGEST_FUZZ_CASES` sets the number of cases (default 20,000); the count of executions is
//! printed (run with `--nocapture` to see it).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use common::*;
use ingest::{AppState, MemorySink, app};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use runtime::KafkaConfig;
use schemas::ShopifyEnvelope;
use tower::ServiceExt;

/// How the signature header is made.
#[derive(Debug, Clone)]
enum Sig {
    None,
    Valid,
    Previous,
    WrongKey,
    Garbage(Vec<u8>),
    Twice,
}

#[derive(Debug, Clone)]
struct Case {
    topic: Option<Vec<u8>>,
    shop: Option<Vec<u8>>,
    webhook_id: Option<Vec<u8>>,
    optional: Vec<(&'static str, Vec<u8>)>,
    extra: Vec<(String, Vec<u8>)>,
    sig: Sig,
    body: Vec<u8>,
    chunks: Vec<usize>,
    content_length: Option<u64>,
    lower_case: bool,
}

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"orders/paid".to_vec()),
        1 => Just(b"customers/redact".to_vec()),
        1 => Just(SHOP.as_bytes().to_vec()),
        1 => Just(b"  ".to_vec()),
        2 => "[ -~]{0,40}".prop_map(String::into_bytes),
        // Any bytes a header value may hold (no CR/LF/NUL): obs-text, tabs, long values.
        1 => proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..300),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        4 => "\\{\"id\":[0-9]{1,20},\"customer\":\\{\"id\":[0-9]{1,20}\\},\"email\":\"[a-z@.]{0,12}\"\\}".prop_map(String::into_bytes),
        2 => any::<String>().prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..2048),
        1 => Just(br#"{"note":"a\/b \u0026 c","id":820982911946154508}"#.to_vec()),
    ]
}

fn sig() -> impl Strategy<Value = Sig> {
    prop_oneof![
        2 => Just(Sig::None),
        6 => Just(Sig::Valid),
        1 => Just(Sig::Previous),
        2 => Just(Sig::WrongKey),
        1 => proptest::collection::vec(0x20u8..0x7f, 0..80).prop_map(Sig::Garbage),
        1 => Just(Sig::Twice),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let optional_names = prop_oneof![
        Just("X-Shopify-Event-Id"),
        Just("X-Shopify-Triggered-At"),
        Just("X-Shopify-API-Version"),
        Just("X-Shopify-Name"),
        Just("X-Shopify-Topic"),
        Just("X-Shopify-Webhook-Id"),
        Just("Content-Length"),
    ];
    (
        (
            proptest::option::weighted(0.9, header_bytes()),
            proptest::option::weighted(0.9, prop_oneof![4 => Just(SHOP.as_bytes().to_vec()), 1 => header_bytes()]),
            proptest::option::weighted(0.9, prop_oneof![4 => "[a-f0-9-]{1,36}".prop_map(String::into_bytes), 1 => header_bytes()]),
            proptest::collection::vec((optional_names, header_bytes()), 0..4),
            proptest::collection::vec(("x-[a-z-]{1,20}", header_bytes()), 0..4),
        ),
        (
            sig(),
            body(),
            proptest::collection::vec(1usize..512, 0..5),
            proptest::option::weighted(0.2, 0u64..20_000),
            any::<bool>(),
        ),
    )
        .prop_map(|((topic, shop, webhook_id, optional, extra), (sig, body, chunks, content_length, lower_case))| Case {
            topic,
            shop,
            webhook_id,
            optional,
            extra,
            sig,
            body,
            chunks,
            content_length,
            lower_case,
        })
}

fn build(case: &Case) -> Option<Request<Body>> {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut push = |k: &str, v: Vec<u8>| headers.push((k.to_owned(), v));
    if let Some(v) = &case.topic {
        push("X-Shopify-Topic", v.clone());
    }
    if let Some(v) = &case.shop {
        push("X-Shopify-Shop-Domain", v.clone());
    }
    if let Some(v) = &case.webhook_id {
        push("X-Shopify-Webhook-Id", v.clone());
    }
    match &case.sig {
        Sig::None => {}
        Sig::Valid => push(
            "X-Shopify-Hmac-Sha256",
            ingest::sign(SECRET, &case.body).into_bytes(),
        ),
        Sig::Previous => push(
            "X-Shopify-Hmac-Sha256",
            ingest::sign(PREVIOUS_SECRET, &case.body).into_bytes(),
        ),
        Sig::WrongKey => push(
            "X-Shopify-Hmac-Sha256",
            ingest::sign(NOTIFICATION_KEY, &case.body).into_bytes(),
        ),
        Sig::Garbage(g) => push("X-Shopify-Hmac-Sha256", g.clone()),
        Sig::Twice => {
            push(
                "X-Shopify-Hmac-Sha256",
                ingest::sign(SECRET, &case.body).into_bytes(),
            );
            push(
                "X-Shopify-Hmac-Sha256",
                ingest::sign(SECRET, &case.body).into_bytes(),
            );
        }
    }
    for (k, v) in &case.optional {
        push(k, v.clone());
    }
    for (k, v) in &case.extra {
        push(k, v.clone());
    }
    if let Some(n) = case.content_length {
        push("Content-Length", n.to_string().into_bytes());
    }
    let mut request = Request::post("/webhooks/shopify");
    for (k, v) in headers {
        let k = if case.lower_case { k.to_lowercase() } else { k };
        // Values http refuses to represent cannot arrive from hyper either: skip the case.
        let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(&v).ok()?;
        request = request.header(name, value);
    }
    // Split the body at the random chunk sizes, as a chunked upload would arrive.
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let mut rest = &case.body[..];
    for size in &case.chunks {
        let (head, tail) = rest.split_at((*size).min(rest.len()));
        chunks.push(Ok(Bytes::copy_from_slice(head)));
        rest = tail;
    }
    chunks.push(Ok(Bytes::copy_from_slice(rest)));
    request
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .ok()
}

#[test]
fn the_request_path_never_panics_and_answers_a_documented_status() {
    let cases: u32 = std::env::var("INGEST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = config(KafkaConfig::default(), "unused");
    c.http.body_limit = 1500;
    c.http.read_timeout = Duration::from_secs(1);
    c.http.ack_timeout = Duration::from_secs(1);
    let sink = MemorySink::new();
    let state = AppState::new(&c, sink.clone()).unwrap();
    let router = app(state);
    let executions = AtomicU64::new(0);
    let published = AtomicU64::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    let documented = [200u16, 400, 401, 403, 408, 413, 503];

    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let Some(request) = build(&case) else {
            return Ok(());
        };
        executions.fetch_add(1, Ordering::Relaxed);
        let before = sink.len();
        let response = rt.block_on(router.clone().oneshot(request)).unwrap();
        let status = response.status();
        let after = sink.len();
        *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
        prop_assert!(
            documented.contains(&status.as_u16()),
            "undocumented status {status} for {case:?}"
        );
        // Published exactly when answered 200, and then with the exact bytes.
        prop_assert_eq!(after - before, usize::from(status == StatusCode::OK));
        if status == StatusCode::OK {
            published.fetch_add(1, Ordering::Relaxed);
            let record = sink.take().pop().unwrap();
            let envelope = ShopifyEnvelope::decode(&record.value).unwrap();
            prop_assert_eq!(&envelope.body, &case.body);
            prop_assert!(matches!(case.sig, Sig::Valid | Sig::Previous));
        }
        // An unsigned or wrongly signed body is never anything but 401 once its length is fine.
        let small = case.body.len() <= 1500 && case.content_length.is_none_or(|n| n <= 1500);
        if small && !matches!(case.sig, Sig::Valid | Sig::Previous) {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        Ok(())
    });
    println!(
        "fuzz: {} executions through app().oneshot, {} published, statuses {:?}",
        executions.load(Ordering::Relaxed),
        published.load(Ordering::Relaxed),
        statuses.lock().unwrap()
    );
    result.unwrap();
    assert!(executions.load(Ordering::Relaxed) > u64::from(cases) / 2);
    assert!(published.load(Ordering::Relaxed) > 0);
}
