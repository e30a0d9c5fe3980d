//! `EmailAlreadyExists` keeps the data: the profile is delivered without the contested email,
//! the conflict is recorded on the dead-letter topic and counted, single and bulk alike.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use iterable_sim::{Filter, SimConfig};
use serde_json::json;

/// A free local port for the publisher's operations server (to read `/metrics`).
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn conflict_keeps_the_rest(bulk: bool) {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let mut sc = SimConfig::default();
    sc.behaviour.track_creates_unknown_users = true;
    let sim = iterable_sim::spawn(sc).await.unwrap();
    // Another Iterable user already owns customer 1's address (an earlier import).
    let r = reqwest::Client::new()
        .post(format!("{}/api/users/update", sim.base_url()))
        .header("Api-Key", KEY)
        .json(&json!({"userId": "imported-7", "email": "u1@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut c = config(&kafka, &topics, &sim.base_url());
    let ops = free_addr();
    c.http.listen = ops;
    if bulk {
        c.batching.backlog_threshold = 0;
    } else {
        c.batching.enabled = false;
    }
    let commands = vec![
        upsert(
            "conflicted",
            1,
            json!({"email": "u1@example.com", "firstName": "Ann", "ltv": 12.5}),
        ),
        event("after-conflict", 1, 0),
        upsert(
            "plain",
            2,
            json!({"email": "u2@example.com", "firstName": "Bo"}),
        ),
    ];
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let (stop, handle) = start(c);

    let by_user = |u: &str| {
        sim.state()
            .profiles(&Filter {
                user_id: Some(u.into()),
                ..Filter::default()
            })
            .into_iter()
            .next()
    };
    let p1 = wait_for("customer 1's profile data", Duration::from_secs(30), || {
        by_user("u1").filter(|p| p.data_fields.get("firstName") == Some(&json!("Ann")))
    })
    .await;
    assert_eq!(p1.data_fields.get("ltv"), Some(&json!(12.5)));
    assert_ne!(p1.email.as_deref(), Some("u1@example.com"));
    assert_eq!(
        by_user("imported-7").unwrap().email.as_deref(),
        Some("u1@example.com"),
        "the owner keeps the address"
    );
    wait_for(
        "the event after the conflict",
        Duration::from_secs(30),
        || sim_event_ids(&sim).contains("after-conflict").then_some(()),
    )
    .await;
    wait_for("customer 2", Duration::from_secs(30), || by_user("u2")).await;

    let dead = read_dead_letters(&kafka, &topics.publisher_dlq, 1, Duration::from_secs(30)).await;
    let d = &dead[0];
    assert_eq!(
        d.headers["tillstream.reason.kind"], "identifier_conflict",
        "{d:?}"
    );
    assert_eq!(d.headers["tillstream.command_id"], "conflicted");
    assert!(
        d.headers["tillstream.reason"].contains("u1@example.com"),
        "{d:?}"
    );
    let conflicts = metric(ops, "tillstream_publisher_conflicts_total").await;
    assert!(
        (conflicts - 1.0).abs() < f64::EPSILON,
        "conflicts_total = {conflicts}"
    );
    // The conflict record is the only dead letter: nothing else of the profile was lost.
    let dead_total = metric(ops, "tillstream_publisher_dead_letters_total").await;
    assert!(
        (dead_total - 1.0).abs() < f64::EPSILON,
        "dead letters = {dead_total}"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_update_conflict_delivers_the_rest_and_records_it() {
    conflict_keeps_the_rest(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_update_conflict_delivers_the_rest_and_records_it() {
    conflict_keeps_the_rest(true).await;
}
