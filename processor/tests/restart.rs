//! Fast restart: a processor that is a static group member (`engine.static_membership`) resumes within seconds of a `kill -9`, not after the session timeout.
//!
//! Without static membership a restarted instance joins as a new member, and the group waits
//! for the killed member's session (45 s by default) to expire before anyone gets its
//! partitions. With the same `group.instance.id` the coordinator hands the partitions straight
//! back to the restarted instance; the transactional id fences the killed one's producer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};

/// `n` orders of `customers` customers, event times an hour ago (no counter timer fires).
fn orders(customers: u64, from: u64, n: u64, tag: &str) -> Vec<schemas::ShopifyEnvelope> {
    let base = runtime::now_ms() - 3_600_000;
    (from..from + n)
        .map(|i| {
            let customer = 7_000_000 + i % customers;
            order(
                customer,
                80_000_000 + i,
                &format!("{tag}-{i}"),
                base + i as i64,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_resumes_within_seconds_of_a_kill_9() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let app = unique("static");
    let d = Deployment::new(&k, &topics, app.clone());
    // The default session timeout (45 s): what a restart would wait without static membership.
    // Its group.instance.id is the instance id, which the restart keeps.
    let env = [
        ("TILLSTREAM__ENGINE__SESSION_TIMEOUT", "45s"),
        ("TILLSTREAM__ENGINE__STATIC_MEMBERSHIP", "true"),
    ];

    produce(&k, &topics.raw, &orders(20, 0, 200, "first")).await;
    let mut p = d.spawn_with("static", &env);
    wait_for("the first batch", Duration::from_secs(120), || {
        (commands(&k, &topics).len() >= 200).then_some(())
    });
    p.kill9();
    let killed = Instant::now();
    // What the killed instance committed; its open transaction (if any) is aborted by the
    // restarted producer, so this count is final.
    let before = commands(&k, &topics).len();

    produce(&k, &topics.raw, &orders(20, 200, 200, "second")).await;
    let mut p = d.spawn_with("static", &env);
    let resumed = wait_for(
        "a command from the restarted instance",
        Duration::from_secs(60),
        || (commands(&k, &topics).len() > before).then(|| killed.elapsed()),
    );
    eprintln!("kill -9 to first command of the restarted instance: {resumed:?}");
    assert!(
        resumed < Duration::from_secs(20),
        "resumed after {resumed:?}, about the 45 s session timeout: static membership not in effect; log {}",
        p.log.display()
    );
    let all = wait_for("every command", Duration::from_secs(120), || {
        let c = commands(&k, &topics);
        (c.len() >= 400).then_some(c)
    });
    p.terminate();
    let counts = id_counts(&all);
    assert_eq!(all.len(), 400, "nothing lost, nothing extra");
    assert!(counts.values().all(|n| *n == 1), "no duplicate command ids");
}
