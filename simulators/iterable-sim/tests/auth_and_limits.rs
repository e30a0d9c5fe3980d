//! Authentication, published rate limits, 429 shapes, body caps.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Sim, eventually};
use iterable_sim::{EndpointLimit, RateLimitBody, SimConfig, TooLargeResponse};
use serde_json::{Value, json};

fn track_body() -> Value {
    json!({"email": "a@example.com", "eventName": "x"})
}

#[tokio::test]
async fn api_key_header_spellings_and_401_body() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    let body = json!({"email": "a@example.com", "dataFields": {"n": 1}}).to_string();
    for header in ["Api-Key", "Api_Key", "api_key", "API-KEY"] {
        let r = sim
            .send(
                reqwest::Method::POST,
                "/api/users/update",
                Some((header, iterable_sim::DEFAULT_API_KEY)),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 200, "{header}: {}", r.text);
        assert_eq!(r.json["code"], "Success");
    }
    for header in [Some(("Api-Key", "wrong")), None] {
        let r = sim
            .send(
                reqwest::Method::POST,
                "/api/users/update",
                header,
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json["code"], "BadApiKey");
        assert_eq!(r.json["msg"], "Invalid API key");
        assert_eq!(r.json["params"]["endpoint"], "/api/users/update");
        assert_eq!(r.json["params"]["ip"], "127.0.0.1");
    }
    let s = sim.stats().await;
    assert_eq!(s.endpoints["users/update"].client_errors, 2);
    assert_eq!(s.endpoints["users/update"].success, 4);
}

#[tokio::test]
async fn keys_of_one_project_share_its_bucket_and_projects_are_isolated() {
    let config = SimConfig::from_toml_str(
        r#"
        [[projects]]
        id = 1
        api_keys = ["k1", "k1b"]
        [[projects]]
        id = 2
        api_keys = ["k2"]
        [rate_limits.endpoints."events/trackBulk"]
        per_second = 0.001
        burst = 2
        "#,
    )
    .unwrap();
    let sim = Sim::start(config).await;
    let body = json!({"events": []});
    let statuses = [
        sim.post_with_key("/api/events/trackBulk", "k1", body.clone())
            .await
            .status,
        sim.post_with_key("/api/events/trackBulk", "k1b", body.clone())
            .await
            .status,
        sim.post_with_key("/api/events/trackBulk", "k1b", body.clone())
            .await
            .status,
        sim.post_with_key("/api/events/trackBulk", "k2", body.clone())
            .await
            .status,
    ];
    assert_eq!(statuses, [200, 200, 429, 200]);
    let r = sim.post_with_key("/api/events/trackBulk", "k1", body).await;
    assert_eq!(
        r.json["msg"],
        "Exceeded rate limit for endpoint: /api/events/trackBulk, project: 1 "
    );
}

/// Fires requests as fast as possible and checks the limiter admitted exactly what the
/// token-bucket model allows: at least the burst, at most burst + rate × elapsed (+1 for the
/// token that may refill while the last request is in flight).
async fn check_published_limit(path: &str, endpoint: &str, body: Value, rate: f64, n: usize) {
    let sim = Sim::start(SimConfig::default()).await;
    // Warm the connection pool so the burst is not slowed by connects.
    let started = Instant::now();
    let statuses = sim.burst(path, body, n, 32).await;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = sim.stats().await;
    let s = &stats.endpoints[endpoint];
    let non_429 = statuses.iter().filter(|s| **s != 429).count() as u64;
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(
        s.admitted, non_429,
        "{endpoint}: admitted == answered non-429"
    );
    assert_eq!(s.rate_limited, limited);
    let max = rate + rate * elapsed + 1.0;
    assert!(
        s.admitted as f64 >= rate && s.admitted as f64 <= max,
        "{endpoint}: admitted {} of {n} in {elapsed:.3}s, allowed [{rate}, {max:.1}]",
        s.admitted
    );
    // Only a client faster than the limit can be limited; on a very slow machine the burst may
    // not exceed it, and then the bounds above are the whole check.
    if n as f64 > max {
        assert!(
            limited > 0,
            "{endpoint}: nothing was limited in {elapsed:.3}s"
        );
    }
}

#[tokio::test]
async fn track_bulk_is_limited_to_10_per_second() {
    check_published_limit(
        "/api/events/trackBulk",
        "events/trackBulk",
        json!({"events": []}),
        10.0,
        30,
    )
    .await;
}

#[tokio::test]
async fn bulk_update_is_limited_to_5_per_second() {
    check_published_limit(
        "/api/users/bulkUpdate",
        "users/bulkUpdate",
        json!({"users": []}),
        5.0,
        20,
    )
    .await;
}

#[tokio::test]
async fn forget_is_limited_to_3_per_second() {
    check_published_limit(
        "/api/users/forget",
        "users/forget",
        json!({"email": "f@example.com"}),
        3.0,
        12,
    )
    .await;
}

#[tokio::test]
async fn delete_and_lookup_are_limited_to_100_per_second() {
    let sim = Sim::start(SimConfig::default()).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..300 {
        let req = sim
            .client
            .delete(sim.url(&format!("/api/users/nobody{i}@example.com")))
            .header("Api-Key", iterable_sim::DEFAULT_API_KEY);
        set.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    }
    while let Some(r) = set.join_next().await {
        statuses.push(r.unwrap().unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|s| **s == 404).count() as f64;
    assert!(
        admitted >= 100.0 && admitted <= 100.0 + 100.0 * elapsed + 1.0,
        "{admitted} in {elapsed}"
    );
    assert!(statuses.contains(&429));
}

#[tokio::test]
async fn users_update_is_limited_to_500_per_second() {
    check_published_limit(
        "/api/users/update",
        "users/update",
        json!({"email": "a@example.com", "dataFields": {"n": 1}}),
        500.0,
        1500,
    )
    .await;
}

#[tokio::test]
async fn events_track_is_limited_to_2000_per_second() {
    let sim = Sim::start(SimConfig::default()).await;
    sim.post("/api/users/update", json!({"email": "a@example.com"}))
        .await;
    let started = Instant::now();
    let statuses = sim.burst("/api/events/track", track_body(), 6000, 64).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|s| **s == 200).count() as f64;
    let max = 2000.0 + 2000.0 * elapsed + 1.0;
    assert!(
        admitted >= 2000.0 && admitted <= max,
        "{admitted} admitted in {elapsed:.3}s (max {max:.0})"
    );
    // If the burst took longer than 2 s the machine is too slow to exceed 2000/s; the bound
    // above still holds, only the "some were limited" check needs the speed.
    if elapsed < 2.0 {
        assert!(statuses.contains(&429));
    }
}

#[tokio::test]
async fn forget_daily_cap_with_a_short_day() {
    let mut config = SimConfig::default();
    config.rate_limits.day_seconds = 2;
    config.rate_limits.endpoints.insert(
        "users/forget".into(),
        EndpointLimit {
            per_second: Some(1000.0),
            burst: None,
            per_day: Some(4),
        },
    );
    let sim = Sim::start(config).await;
    let body = json!({"email": "gone@example.com"});
    let statuses = sim.burst("/api/users/forget", body.clone(), 10, 1).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    // Once the (two-second) day has rolled over the cap admits again.
    eventually(Duration::from_secs(6), || async {
        (sim.post("/api/users/forget", body.clone()).await.status == 200).then_some(())
    })
    .await;
}

/// bulkUpdate with a bucket that never refills within a test: one request, then 429s.
fn one_shot_bulk_update() -> SimConfig {
    let mut config = SimConfig::default();
    config.rate_limits.endpoints.insert(
        "users/bulkUpdate".into(),
        EndpointLimit {
            per_second: Some(0.001),
            burst: Some(1.0),
            per_day: None,
        },
    );
    config
}

#[tokio::test]
async fn text_429_with_retry_after_and_alternating_bodies() {
    let mut config = one_shot_bulk_update();
    config.rate_limits.response.body = RateLimitBody::Text;
    config.rate_limits.response.retry_after_secs = Some(7);
    let sim = Sim::start(config).await;
    let statuses = sim
        .burst("/api/users/bulkUpdate", json!({"users": []}), 2, 1)
        .await;
    assert_eq!(statuses, [200, 429]);
    let r = sim
        .post("/api/users/bulkUpdate", json!({"users": []}))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.text, "Rate limit exceeded. Please try again later.");
    assert_eq!(r.headers["retry-after"], "7");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    let mut config = one_shot_bulk_update();
    config.rate_limits.response.body = RateLimitBody::Alternate;
    config.rate_limits.response.retry_after_computed = true;
    let sim = Sim::start(config).await;
    sim.post("/api/users/bulkUpdate", json!({"users": []}))
        .await;
    let a = sim
        .post("/api/users/bulkUpdate", json!({"users": []}))
        .await;
    let b = sim
        .post("/api/users/bulkUpdate", json!({"users": []}))
        .await;
    assert_eq!((a.status, b.status), (429, 429));
    assert_eq!(a.json["code"], "RateLimitExceeded");
    assert_eq!(a.json["params"], json!({}));
    assert_eq!(b.json, Value::Null);
    // The bucket refills one token per 1000 s: Retry-After says so (rounded up).
    let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((999..=1000).contains(&secs), "{secs}");
}

#[tokio::test]
async fn json_429_has_no_retry_after_by_default() {
    let sim = Sim::start(one_shot_bulk_update()).await;
    sim.post("/api/users/bulkUpdate", json!({"users": []}))
        .await;
    let r = sim
        .post("/api/users/bulkUpdate", json!({"users": []}))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["code"], "RateLimitExceeded");
    assert!(r.headers.get("retry-after").is_none());
}

fn bulk_body_of_size(target: usize) -> String {
    // {"users":[{"email":"u@example.com","dataFields":{"pad":"xxxx"}}]}
    let prefix = r#"{"users":[{"email":"u@example.com","dataFields":{"pad":""#;
    let suffix = r#""}}]}"#;
    let pad = target - prefix.len() - suffix.len();
    format!("{prefix}{}{suffix}", "x".repeat(pad))
}

#[tokio::test]
async fn bulk_body_cap_is_4_mb() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    let key = Some(("Api-Key", iterable_sim::DEFAULT_API_KEY));
    let ok = sim
        .send(
            reqwest::Method::POST,
            "/api/users/bulkUpdate",
            key,
            Some(bulk_body_of_size(4_000_000)),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["successCount"], 1);
    let big = sim
        .send(
            reqwest::Method::POST,
            "/api/users/bulkUpdate",
            key,
            Some(bulk_body_of_size(4_000_001)),
        )
        .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.json["code"], "BatchTooLarge");

    let mut config = SimConfig::without_rate_limits();
    config.body_limits.too_large = TooLargeResponse::BatchTooLarge400;
    config.body_limits.bulk_max_records = Some(2);
    let sim = Sim::start(config).await;
    let big = sim
        .send(
            reqwest::Method::POST,
            "/api/events/trackBulk",
            key,
            Some(bulk_body_of_size(4_100_000)),
        )
        .await;
    assert_eq!(big.status_and_code(), (400, Some("BatchTooLarge")));
    let events: Vec<Value> = (0..3).map(|_| track_body()).collect();
    let r = sim
        .post("/api/events/trackBulk", json!({"events": events}))
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BatchTooLarge")));
}

#[tokio::test]
async fn limits_can_be_disabled_and_unknown_routes_are_404() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    let statuses = sim
        .burst("/api/events/trackBulk", json!({"events": []}), 40, 8)
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    let r = sim.api_get("/api/nope/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.text.contains("Not Found"));
    assert_eq!(sim.stats().await.unknown_routes, 1);
}
