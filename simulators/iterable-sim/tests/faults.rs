//! Fault injection at run time: random 5xx, outage switch and windows, 429 storm, held requests.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Reply, Sim, eventually};
use iterable_sim::{FaultSpec, SimConfig};
use serde_json::{Value, json};

async fn post_faults(sim: &Sim, spec: Value) -> Reply {
    sim.send(
        reqwest::Method::POST,
        "/_sim/faults",
        None,
        Some(spec.to_string()),
    )
    .await
}

async fn set_faults(sim: &Sim, spec: Value) -> Value {
    let r = post_faults(sim, spec).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Holds every request until shutdown (a `timeout_rate` of 1).
fn hold_all(sim: &Sim) {
    sim.handle
        .state()
        .set_faults(FaultSpec {
            timeout_rate: 1.0,
            ..FaultSpec::default()
        })
        .unwrap();
}

/// A `users/update` built by hand, so the caller controls timeouts and when it is sent.
fn raw_update(sim: &Sim) -> reqwest::RequestBuilder {
    sim.client
        .post(sim.url("/api/users/update"))
        .header("Api-Key", iterable_sim::DEFAULT_API_KEY)
        .body(update().to_string())
}

fn update() -> Value {
    json!({"email": "a@example.com"})
}

#[tokio::test]
async fn error_rate_at_run_time() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 200);
    set_faults(&sim, json!({"error_rate": 1.0, "error_statuses": [503]})).await;
    let r = sim.post("/api/users/update", update()).await;
    assert_eq!(r.status_and_code(), (503, Some("GenericError")));

    set_faults(&sim, json!({"error_rate": 0.5})).await;
    let statuses = sim.burst("/api/users/update", update(), 200, 8).await;
    let errors = statuses.iter().filter(|s| **s >= 500).count();
    assert!(
        (40..=160).contains(&errors),
        "{errors} of 200 failed at rate 0.5"
    );
    assert!(statuses.iter().all(|s| [200, 500, 502, 503].contains(s)));
    let stats = sim.stats().await;
    assert_eq!(
        stats.endpoints["users/update"].server_errors as usize,
        errors + 1
    );

    set_faults(&sim, json!({})).await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 200);
}

#[tokio::test]
async fn outage_switch_and_windows() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    let status = set_faults(&sim, json!({"outage": true})).await;
    assert_eq!(status["outageNow"], true);
    let r = sim.post("/api/users/update", update()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text, "Service Unavailable");
    // The inspection API keeps working during an outage.
    assert_eq!(sim.inspect("/_sim/health").await["ok"], true);

    // A window starting now and ending after 300 ms: down, then back by itself.
    set_faults(
        &sim,
        json!({"outage_windows": [{"start_ms": 0, "end_ms": 300}]}),
    )
    .await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 503);
    eventually(Duration::from_secs(5), || async {
        (sim.post("/api/users/update", update()).await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rate_limit_storm_and_endpoint_filter() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    set_faults(
        &sim,
        json!({"rate_limit_storm": true, "endpoints": ["events/trackBulk"]}),
    )
    .await;
    let r = sim
        .post("/api/events/trackBulk", json!({"events": []}))
        .await;
    assert_eq!(r.status_and_code(), (429, Some("RateLimitExceeded")));
    assert_eq!(sim.post("/api/users/update", update()).await.status, 200);
    set_faults(&sim, json!({"rate_limit_storm_ms": 200})).await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 429);
    eventually(Duration::from_secs(5), || async {
        (sim.post("/api/users/update", update()).await.status == 200).then_some(())
    })
    .await;
    assert!(sim.stats().await.endpoints["users/update"].rate_limited >= 1);
}

#[tokio::test]
async fn held_requests_outlast_client_timeouts_and_latency_applies() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    hold_all(&sim);
    let err = raw_update(&sim)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    sim.handle
        .state()
        .set_faults(FaultSpec {
            latency_ms: 150,
            ..FaultSpec::default()
        })
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(sim.post("/api/users/update", update()).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn invalid_fault_specs_are_rejected_and_startup_faults_apply() {
    let mut config = SimConfig::without_rate_limits();
    config.faults.outage = true;
    let sim = Sim::start(config).await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 503);
    let r = post_faults(&sim, json!({"error_rate": 3})).await;
    assert_eq!(r.status, 400);
    let r = post_faults(&sim, json!({"bogus": 1})).await;
    assert_eq!(r.status, 400);
    set_faults(&sim, json!({})).await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 200);
    // Reset restores the start-up faults.
    sim.send(reqwest::Method::POST, "/_sim/reset", None, None)
        .await;
    assert_eq!(sim.post("/api/users/update", update()).await.status, 503);
}

#[tokio::test]
async fn shutdown_releases_held_requests() {
    let sim = Sim::start(SimConfig::without_rate_limits()).await;
    hold_all(&sim);
    let req = raw_update(&sim);
    let pending = tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    eventually(Duration::from_secs(5), || async {
        (sim.stats().await.endpoints["users/update"].admitted == 1).then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), sim.handle.shutdown())
        .await
        .unwrap()
        .unwrap();
    let status = pending.await.unwrap().unwrap();
    assert_eq!(status, 504);
}
