//! End-to-end tests of the publisher against real Kafka and the in-process Iterable simulator.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use iterable_sim::{EndpointLimit, FaultSpec, FaultWindow, Filter, SimConfig};
use schemas::command::{Action, DeleteMode};
use serde_json::json;

fn sim_config() -> SimConfig {
    let mut c = SimConfig::default();
    c.behaviour.track_creates_unknown_users = true;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_with_zero_429s() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    // Small limits at the simulator so the publisher's limiter, not its speed, is what binds.
    let mut sc = sim_config();
    sc.rate_limits.endpoints.insert(
        "events/track".into(),
        EndpointLimit {
            per_second: Some(100.0),
            burst: None,
            per_day: None,
        },
    );
    sc.rate_limits.endpoints.insert(
        "users/update".into(),
        EndpointLimit {
            per_second: Some(50.0),
            burst: None,
            per_day: None,
        },
    );
    let sim = iterable_sim::spawn(sc).await.unwrap();
    let mut c = config(&kafka, &topics, &sim.base_url());
    c.limits.events_track.per_second = 90.0;
    c.limits.users_update.per_second = 45.0;
    c.batching.enabled = false;

    let mut commands = Vec::new();
    for u in 0..100 {
        commands.push(upsert(&format!("up-{u}"), u, json!({"n": u})));
        for s in 0..3 {
            commands.push(event(&format!("ev-{u}-{s}"), u, s));
        }
    }
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let start = Instant::now();
    let (stop, handle) = start_publisher(c);
    wait_for("all events and profiles", Duration::from_secs(60), || {
        let ok = sim_event_ids(&sim).len() == 300
            && sim.state().profiles(&Filter::default()).len() == 100;
        ok.then_some(())
    })
    .await;
    let took = start.elapsed();
    stop.cancel();
    handle.await.unwrap().unwrap();
    let stats = sim.state().stats();
    assert_eq!(stats.totals.rate_limited, 0, "{stats:?}");
    // 300 events at 90/s cannot take less than ~3.3 s minus the small burst.
    assert!(
        took >= Duration::from_millis(2800),
        "limiter not enforced: {took:?}"
    );
    assert_eq!(stats.endpoints["events/track"].success, 300);
}

fn start_publisher(
    c: publisher::PublisherConfig,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), publisher::Error>>,
) {
    start(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_use_bulk_under_backlog_with_zero_429s_at_published_limits() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let sim = iterable_sim::spawn(sim_config()).await.unwrap();
    let c = config(&kafka, &topics, &sim.base_url());
    let mut commands = Vec::new();
    for u in 0..400 {
        commands.push(upsert(&format!("up-{u}"), u, json!({"n": u})));
        for s in 0..5 {
            commands.push(event(&format!("ev-{u}-{s}"), u, s));
        }
    }
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let (stop, handle) = start(c);
    wait_for("all events", Duration::from_secs(90), || {
        (sim_event_ids(&sim).len() == 2000).then_some(())
    })
    .await;
    wait_for("all profiles", Duration::from_secs(30), || {
        (sim.state().profiles(&Filter::default()).len() == 400).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let stats = sim.state().stats();
    assert_eq!(stats.totals.rate_limited, 0, "{stats:?}");
    assert!(
        stats.endpoints["events/trackBulk"].success > 0,
        "the backlog should have used trackBulk: {stats:?}"
    );
    let expected: BTreeSet<String> = (0..400)
        .flat_map(|u| (0..5).map(move |s| format!("ev-{u}-{s}")))
        .collect();
    assert_eq!(sim_event_ids(&sim), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_errors_and_outage_are_recovered_without_losing_commands() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let mut sc = sim_config();
    sc.faults = FaultSpec {
        error_rate: 0.2,
        rate_limit_storm_ms: Some(1500),
        outage_windows: vec![FaultWindow {
            start_ms: 2500,
            end_ms: 5000,
        }],
        ..FaultSpec::default()
    };
    sc.rate_limits.response.retry_after_secs = None;
    let sim = iterable_sim::spawn(sc).await.unwrap();
    let mut c = config(&kafka, &topics, &sim.base_url());
    c.batching.backlog_threshold = 50;
    c.batching.flush_interval = Duration::from_millis(200);
    // A small bound so the outage exercises backpressure (pause and resume of the consumer).
    c.pipeline.max_pending = 100;
    let mut commands = Vec::new();
    for u in 0..150 {
        commands.push(upsert(&format!("up-{u}"), u, json!({"n": u})));
        for s in 0..4 {
            commands.push(event(&format!("ev-{u}-{s}"), u, s));
        }
    }
    let p = producer(&kafka);
    produce(&p, &topics.commands, &commands).await;
    let (stop, handle) = start(c);
    // More traffic during the outage: wait until the simulator is answering with outage errors.
    wait_for(
        "the outage window to begin",
        Duration::from_secs(30),
        || sim.state().faults().outage_now.then_some(()),
    )
    .await;
    let later: Vec<_> = (150..200)
        .map(|u| event(&format!("late-{u}"), u, 0))
        .collect();
    produce(&p, &topics.commands, &later).await;
    wait_for("every event", Duration::from_secs(120), || {
        (sim_event_ids(&sim).len() == 650).then_some(())
    })
    .await;
    wait_for("every profile", Duration::from_secs(60), || {
        (sim.state()
            .profiles(&Filter::default())
            .iter()
            .filter(|p| p.data_fields.contains_key("n"))
            .count()
            == 150)
            .then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let stats = sim.state().stats();
    assert!(
        stats.totals.rate_limited > 0,
        "the storm should have produced 429s: {stats:?}"
    );
    assert!(
        stats.totals.server_errors > 0,
        "errors and the outage should have produced 5xx: {stats:?}"
    );
    let mut expected: BTreeSet<String> = (0..150)
        .flat_map(|u| (0..4).map(move |s| format!("ev-{u}-{s}")))
        .collect();
    expected.extend((150..200).map(|u| format!("late-{u}")));
    assert_eq!(sim_event_ids(&sim), expected, "nothing missing");
    // Nothing was dead-lettered: every failure was transient.
    let dlq = read_dead_letters(&kafka, &topics.publisher_dlq, 0, Duration::from_secs(1)).await;
    assert!(dlq.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_bulk_failures_and_bad_input_go_to_the_dead_letter_topic() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 1).await;
    let mut sc = sim_config();
    sc.behaviour.disallowed_event_names = vec!["blocked".into()];
    let sim = iterable_sim::spawn(sc).await.unwrap();
    let mut c = config(&kafka, &topics, &sim.base_url());
    // Always bulk for profile updates and events.
    c.batching.backlog_threshold = 0;
    c.batching.flush_interval = Duration::from_millis(300);
    let p = producer(&kafka);
    let mut commands = vec![command(
        "forget-1",
        1,
        Action::DeleteUser {
            mode: DeleteMode::Forget,
        },
    )];
    commands.push(upsert("up-forgotten", 1, json!({"a": 1})));
    for u in 2..=20 {
        commands.push(upsert(&format!("up-{u}"), u, json!({"age": 30})));
    }
    commands.push(upsert("up-mismatch", 21, json!({"age": "thirty"})));
    commands.push(command(
        "ev-blocked",
        30,
        Action::TrackEvent {
            event_name: "blocked".into(),
            created_at_s: 1_700_000_000,
            data_fields: fields(json!({})),
        },
    ));
    for u in 31..40 {
        commands.push(event(&format!("ev-{u}"), u, 0));
    }
    produce(&p, &topics.commands, &commands).await;
    produce_raw(
        &p,
        &topics.commands,
        "demo.myshopify.com/99",
        b"definitely not avro",
    )
    .await;
    commands.clear();
    commands.push(event("ev-after-garbage", 99, 1));
    produce(&p, &topics.commands, &commands).await;

    let (stop, handle) = start(c);
    let dlq = read_dead_letters(&kafka, &topics.publisher_dlq, 4, Duration::from_secs(60)).await;
    let by_id: BTreeMap<String, String> = dlq
        .iter()
        .map(|d| {
            let id = d
                .headers
                .get("tillstream.command_id")
                .cloned()
                .unwrap_or_else(|| "<undecodable>".into());
            (id, d.headers["tillstream.reason.kind"].clone())
        })
        .collect();
    assert_eq!(
        by_id.get("up-forgotten").map(String::as_str),
        Some("forgotten_user"),
        "{dlq:?}"
    );
    assert_eq!(
        by_id.get("up-mismatch").map(String::as_str),
        Some("type_mismatch"),
        "{dlq:?}"
    );
    assert_eq!(
        by_id.get("ev-blocked").map(String::as_str),
        Some("disallowed_event_name"),
        "{dlq:?}"
    );
    assert_eq!(
        by_id.get("<undecodable>").map(String::as_str),
        Some("undecodable"),
        "{dlq:?}"
    );
    let garbage = dlq
        .iter()
        .find(|d| !d.headers.contains_key("tillstream.command_id"))
        .unwrap();
    assert_eq!(garbage.payload, b"definitely not avro");
    let mismatch = dlq
        .iter()
        .find(|d| d.headers.get("tillstream.command_id").map(String::as_str) == Some("up-mismatch"))
        .unwrap();
    assert_eq!(mismatch.headers["tillstream.endpoint"], "users/bulkUpdate");
    assert_eq!(mismatch.headers["tillstream.response.status"], "400");
    assert!(mismatch.headers["tillstream.request"].contains("thirty"));
    assert!(mismatch.headers.contains_key("tillstream.response.body"));

    // Everything else was delivered, including the command after the garbage.
    wait_for("good events", Duration::from_secs(30), || {
        let ids = sim_event_ids(&sim);
        ((31..40).all(|u| ids.contains(&format!("ev-{u}"))) && ids.contains("ev-after-garbage"))
            .then_some(())
    })
    .await;
    wait_for("good profiles", Duration::from_secs(30), || {
        let n = sim
            .state()
            .profiles(&Filter::default())
            .iter()
            .filter(|p| p.data_fields.get("age") == Some(&json!(30)))
            .count();
        (n == 19).then_some(())
    })
    .await;
    assert!(!sim_event_ids(&sim).contains("ev-blocked"));
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_order_is_kept_across_single_and_bulk_paths() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 2).await;
    let sim = iterable_sim::spawn(sim_config()).await.unwrap();
    let mut c = config(&kafka, &topics, &sim.base_url());
    c.batching.backlog_threshold = 50;
    c.batching.flush_interval = Duration::from_millis(200);
    c.batching.path_stickiness = Duration::from_secs(120);
    let p = producer(&kafka);
    let (stop, handle) = start(c);

    // A burst (backlog: many users go bulk) ...
    let mut burst = Vec::new();
    for s in 0..10 {
        for u in 0..40 {
            burst.push(upsert(
                &format!("up-{u}-{s}"),
                u,
                json!({"seq": s, "last": format!("burst-{s}")}),
            ));
            burst.push(event(&format!("ev-{u}-{s}"), u, s));
        }
    }
    produce(&p, &topics.commands, &burst).await;
    wait_for("burst delivered", Duration::from_secs(60), || {
        (sim_event_ids(&sim).len() == 400).then_some(())
    })
    .await;
    // ... then a trickle for the same users and new ones. The new users' records go one user at
    // a time once nothing else is pending, so the traffic is light whatever the machine's load
    // (single path for them); the burst's users stay pinned to the bulk path.
    let mut delivered = 400;
    for s in 10..13 {
        let mut trickle = Vec::new();
        for u in 0..40 {
            trickle.push(upsert(
                &format!("up-{u}-{s}"),
                u,
                json!({"seq": s, "last": format!("trickle-{s}")}),
            ));
            trickle.push(event(&format!("ev-{u}-{s}"), u, s));
        }
        produce(&p, &topics.commands, &trickle).await;
        delivered += 40;
        wait_for(
            "pinned users' trickle delivered",
            Duration::from_secs(60),
            || (sim_event_ids(&sim).len() == delivered).then_some(()),
        )
        .await;
        for u in 100..110 {
            let one = vec![
                upsert(
                    &format!("up-{u}-{s}"),
                    u,
                    json!({"seq": s, "last": format!("trickle-{s}")}),
                ),
                event(&format!("ev-{u}-{s}"), u, s),
            ];
            produce(&p, &topics.commands, &one).await;
            delivered += 1;
            wait_for(
                "a new user's event delivered",
                Duration::from_secs(60),
                || (sim_event_ids(&sim).len() == delivered).then_some(()),
            )
            .await;
        }
    }
    wait_for("trickle delivered", Duration::from_secs(60), || {
        (sim_event_ids(&sim).len() == 400 + 150).then_some(())
    })
    .await;
    wait_for("final profile values", Duration::from_secs(30), || {
        let profiles = sim.state().profiles(&Filter::default());
        let done = profiles
            .iter()
            .filter(|p| p.data_fields.get("seq") == Some(&json!(12)))
            .count();
        (done == 50).then_some(profiles)
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();

    // Each user's events went through one pipeline only (the pin outlasts the test).
    let mut endpoints: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in sim.state().events(&Filter::default()) {
        endpoints
            .entry(e.user.user_id.clone().unwrap_or_default())
            .or_default()
            .insert(e.endpoint.clone());
    }
    let mixed: Vec<_> = endpoints.iter().filter(|(_, eps)| eps.len() > 1).collect();
    assert!(
        mixed.is_empty(),
        "users whose events used both pipelines: {mixed:?}"
    );
    let used: BTreeSet<_> = endpoints.values().flatten().cloned().collect();
    assert!(
        used.len() == 2,
        "both pipelines should have been used: {used:?}"
    );
    // Every profile ends at its last write.
    for p in sim.state().profiles(&Filter::default()) {
        assert_eq!(
            p.data_fields.get("last"),
            Some(&json!("trickle-12")),
            "{p:?}"
        );
    }
}
