//! `engine.threads = 2`: one instance runs two engines that split its partitions, each with its
//! own transactional producer; commands stay exactly-once, the customer query reaches the
//! thread that owns the key, and the gauges are the sum over threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};

/// Polls `f` until it answers or `timeout` passes.
fn wait_for_or_none<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_engine_threads_split_the_partitions_of_one_instance() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let d = Deployment::new(&k, &topics, unique("threads"));
    let at = runtime::now_ms() - 3_600_000;
    let customers: Vec<u64> = (1..=40).collect();
    let mut orders = Vec::new();
    for c in &customers {
        for o in 0..2 {
            orders.push(order(*c, c * 10 + o, &format!("t-{c}-{o}"), at + o as i64));
        }
    }
    let p = d.spawn_with(
        "a",
        &[
            ("TILLSTREAM__ENGINE__THREADS", "2"),
            ("TILLSTREAM_LOG_JSON", "true"),
        ],
    );
    wait_for("the instance", Duration::from_secs(90), || {
        p.ready().then_some(())
    });
    produce(&k, &topics.raw, &orders).await;
    let cmds = wait_for("every order counted", Duration::from_secs(120), || {
        let c = commands(&k, &topics);
        (c.len() >= orders.len()).then_some(c)
    });
    let dups: Vec<_> = id_counts(&cmds)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(dups.is_empty(), "duplicate commands: {dups:?}");
    assert_eq!(cmds.len(), orders.len());

    // Every key, whichever thread owns its partition, is answered by this instance.
    let mut partitions = BTreeMap::new();
    for c in &customers {
        let key = customer_key(*c);
        let (status, body) = p.get(&format!("/customers/{key}")).unwrap();
        assert_eq!(status, 200, "{key}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        *partitions.entry(v["partition"].as_i64()).or_insert(0) += 1;
    }
    assert_eq!(
        partitions.len(),
        4,
        "keys on every partition: {partitions:?}"
    );
    // The keys gauge sums both threads' keys: every live key of the changelog (the customers
    // and the order keys the counter keeps), not one thread's share.
    let mut live: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for (_, key, value, _) in read_all(&k, &topics.changelog, topics.partitions) {
        if let Some(key) = key.filter(|k| !k.starts_with(b"tillstream/clock/")) {
            live.insert(key, value.is_some());
        }
    }
    let keys = live.values().filter(|v| **v).count();
    assert!(keys > customers.len(), "{keys} keys in the changelog");
    let expected = Some(keys as f64);
    let mut last = None;
    let gauge = wait_for_or_none(Duration::from_secs(30), || {
        last = metric(&p, "tillstream_processor_keys");
        (last == expected).then_some(())
    });
    assert!(
        gauge.is_some(),
        "keys gauge {last:?}, expected {expected:?}"
    );

    // Two engines, each with its own transactional id and half of the partitions.
    let log = std::fs::read_to_string(&p.log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut ids: Vec<String> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "Processor engine started.")
        .map(|l| l["fields"]["transactional_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let base = format!("{}-a", d.application_id);
    assert_eq!(ids, [base.clone(), format!("{base}-t1")], "log:\n{log}");
    let owned: Vec<i64> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "Partitions assigned and restored.")
        .map(|l| l["fields"]["partitions"].as_i64().unwrap())
        .collect();
    // Thread 0 may have held all four until thread 1 joined; the final assignment splits them.
    assert!(
        owned.ends_with(&[2, 2]),
        "each thread owns two partitions: {owned:?}; log:\n{log}"
    );
    drop(p);
}
