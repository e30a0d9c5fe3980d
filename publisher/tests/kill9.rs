//! Crash safety: the publisher binary is killed with SIGKILL mid-stream and restarted; every
//! command still reaches the simulator (the uncommitted tail is redelivered).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use iterable_sim::{FaultSpec, SimConfig};
use serde_json::json;

fn spawn_publisher(config_path: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_publisher"))
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Writes the publisher's config for a kill test into a fresh directory; returns it and the
/// log path. `kafka_extra` goes into `[kafka]` (`{group}` is replaced by the group id),
/// `sections` after the common ones.
fn write_config(
    name: &str,
    kafka: &runtime::KafkaConfig,
    topics: &runtime::TopicsConfig,
    base: &str,
    kafka_extra: &str,
    sections: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(runtime::testing::unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("publisher.toml");
    let group = runtime::testing::unique(name);
    let kafka_extra = kafka_extra.replace("{group}", &group);
    std::fs::write(
        &config_path,
        format!(
            r#"group_id = "{group}"
[kafka]
bootstrap_servers = "{servers}"
{kafka_extra}[topics]
commands = "{commands}"
publisher_dlq = "{dlq}"
[http]
listen = "127.0.0.1:0"
[iterable]
base_url = "{base}"
api_key = "{KEY}"
[retry]
initial_backoff = "20ms"
max_backoff = "500ms"
[pipeline]
commit_interval = "300ms"
{sections}"#,
            servers = kafka.bootstrap_servers,
            commands = topics.commands,
            dlq = topics.publisher_dlq,
        ),
    )
    .unwrap();
    (config_path, dir.join("publisher.log"))
}

/// Stops a publisher gracefully (SIGTERM) and waits for it.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_loses_nothing() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let mut sc = SimConfig::default();
    sc.behaviour.track_creates_unknown_users = true;
    // Slow answers so that requests and batches are in flight when the process dies.
    sc.faults = FaultSpec {
        latency_ms: 30,
        latency_jitter_ms: 30,
        ..FaultSpec::default()
    };
    let sim = iterable_sim::spawn(sc).await.unwrap();

    let (config_path, log) = write_config(
        "publisher-kill9",
        &kafka,
        &topics,
        &sim.base_url(),
        r#"[kafka.properties]
# The killed member stays in the group until its session expires; keep that short.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"#,
        r#"[batching]
backlog_threshold = 300
flush_interval = "200ms"
"#,
    );

    let mut commands = Vec::new();
    for u in 0..300 {
        commands.push(upsert(&format!("up-{u}"), u, json!({"n": u})));
        for s in 0..10 {
            commands.push(event(&format!("ev-{u}-{s}"), u, s));
        }
    }
    let expected: BTreeSet<String> = (0..300)
        .flat_map(|u| (0..10).map(move |s| format!("ev-{u}-{s}")))
        .collect();
    produce(&producer(&kafka), &topics.commands, &commands).await;

    let mut child = spawn_publisher(&config_path, &log);
    wait_for(
        "some progress before the kill",
        Duration::from_secs(60),
        || (sim_event_ids(&sim).len() >= 600).then_some(()),
    )
    .await;
    // SIGKILL: no drain, no final commit.
    child.kill().unwrap();
    child.wait().unwrap();
    let seen_at_kill = sim_event_ids(&sim).len();
    assert!(
        seen_at_kill < expected.len(),
        "killed too late to prove anything ({seen_at_kill})"
    );

    let mut child = spawn_publisher(&config_path, &log);
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        wait_for(
            "every event after the restart",
            Duration::from_secs(120),
            || (sim_event_ids(&sim) == expected).then_some(()),
        )
        .await;
        wait_for("every profile", Duration::from_secs(60), || {
            (sim.state().profiles(&iterable_sim::Filter::default()).len() == 300).then_some(())
        })
        .await;
    })
    .await;
    // Stop the second instance gracefully (SIGTERM) before asserting, so it never outlives the test.
    let status = terminate(&mut child);
    assert!(
        result.is_ok(),
        "not every command arrived; log at {}",
        log.display()
    );
    assert!(
        status.success(),
        "graceful exit after SIGTERM: {status:?}; log at {}",
        log.display()
    );
    // Redelivery of the uncommitted tail only updates records by id: no duplicates exist.
    let events = sim.state().events(&iterable_sim::Filter::default());
    assert_eq!(events.len(), expected.len());
    assert_eq!(sim_429s(&sim), 0);
}

/// `kill -9` while carts are being coalesced: the superseded carts' offsets were completed,
/// yet every user's cart ends as the last one and every event arrives. The restarted
/// instance is a static group member (`kafka.group_instance_id`) and, with the default 45 s
/// session timeout, must deliver again well before the session of the killed one expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_coalescing_loses_nothing_and_restarts_fast() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let mut sc = SimConfig::default();
    sc.behaviour.track_creates_unknown_users = true;
    sc.rate_limits.endpoints.insert(
        "commerce/updateCart".into(),
        iterable_sim::EndpointLimit {
            per_second: Some(10.0),
            burst: None,
            per_day: None,
        },
    );
    let sim = iterable_sim::spawn(sc).await.unwrap();

    // Static membership, default 45 s session timeout.
    let (config_path, log) = write_config(
        "publisher-kill9-carts",
        &kafka,
        &topics,
        &sim.base_url(),
        "group_instance_id = \"{group}-0\"\n",
        r#"[limits.commerce_update_cart]
per_second = 9.0
concurrency = 2
"#,
    );

    let users = 60;
    let rounds = 20;
    let mut commands = Vec::new();
    for r in 0..rounds {
        for u in 0..users {
            commands.push(cart(&format!("cart-{u}-{r}"), u, &format!("sku-{u}-{r}")));
            if r == rounds / 2 {
                commands.push(event(&format!("ev-{u}"), u, 0));
            }
        }
    }
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let cart_requests = || sim.state().stats().endpoints["commerce/updateCart"].success;

    let mut child = spawn_publisher(&config_path, &log);
    wait_for(
        "some carts before the kill",
        Duration::from_secs(60),
        || (cart_requests() >= 15).then_some(()),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = std::time::Instant::now();
    let before = cart_requests();
    assert!(
        before < users as u64,
        "killed too late to prove anything ({before})"
    );

    let mut child = spawn_publisher(&config_path, &log);
    let restarted = tokio::time::timeout(Duration::from_secs(40), async {
        wait_for(
            "a delivery after the restart",
            Duration::from_secs(40),
            || (cart_requests() > before).then_some(()),
        )
        .await;
    })
    .await;
    let restart_to_delivery = killed_at.elapsed();
    eprintln!("restart-to-first-delivery: {restart_to_delivery:?}");
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        wait_for("every user's last cart", Duration::from_secs(120), || {
            (0..users)
                .all(|u| {
                    sim.state()
                        .carts(&iterable_sim::Filter {
                            user_id: Some(format!("u{u}")),
                            ..iterable_sim::Filter::default()
                        })
                        .first()
                        .is_some_and(|c| {
                            c.items.len() == 1
                                && c.items[0]["id"] == json!(format!("sku-{u}-{}", rounds - 1))
                        })
                })
                .then_some(())
        })
        .await;
    })
    .await;
    let status = terminate(&mut child);
    assert!(
        restarted.is_ok() && restart_to_delivery < Duration::from_secs(30),
        "no delivery within 30 s of the restart (session timeout 45 s); log at {}",
        log.display()
    );
    assert!(
        done.is_ok(),
        "not every last cart arrived; log at {}",
        log.display()
    );
    assert!(status.success(), "graceful exit: {status:?}");
    let events: BTreeSet<String> = sim_event_ids(&sim)
        .into_iter()
        .filter(|id| id.starts_with("ev-"))
        .collect();
    assert_eq!(events.len(), users);
    assert!(
        cart_requests() < (users * rounds) as u64 / 2,
        "carts were not coalesced: {}",
        cart_requests()
    );
    assert_eq!(sim_429s(&sim), 0);
}
