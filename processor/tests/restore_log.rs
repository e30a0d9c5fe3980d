//! What an operator reads when a processor restores its state: one info line per partition,
//! no error (issue 16: every restore of a non-empty changelog logged a spurious ERROR
//! "Changelog reader error ... PartitionEOF").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};

#[tokio::test(flavor = "multi_thread")]
async fn restoring_a_non_empty_changelog_logs_one_info_line_per_partition_and_no_error() {
    let k = kafka();
    let topics = fresh_topics(&k, 2).await;
    let d = Deployment::new(&k, &topics, unique("restore-log"));
    let at = runtime::now_ms() - 60_000;
    let orders: Vec<_> = (1..=20)
        .map(|c| order(c, 1000 + c, &format!("d-{c}"), at))
        .collect();
    produce(&k, &topics.raw, &orders).await;

    let mut first = d.spawn("a");
    wait_for(
        "the first instance to count every order",
        Duration::from_secs(90),
        || (commands(&k, &topics).len() >= orders.len()).then_some(()),
    );
    assert!(first.terminate().success());
    // Both changelog partitions hold state, so both restores read records and reach the end.
    let changelog = read_all(&k, &topics.changelog, topics.partitions);
    for p in 0..topics.partitions {
        assert!(
            changelog.iter().any(|r| r.0 == p),
            "changelog partition {p} is empty"
        );
    }

    // One engine thread: with several, a partition is restored once per assignment, and on a
    // broker without an initial rebalance delay the threads' joins can take two rebalances.
    let second = d.spawn_with(
        "a",
        &[
            ("TILLSTREAM_LOG_JSON", "true"),
            ("RUST_LOG", "info"),
            ("TILLSTREAM__ENGINE__THREADS", "1"),
        ],
    );
    wait_for("the restarted instance", Duration::from_secs(90), || {
        second.ready().then_some(())
    });
    let log = std::fs::read_to_string(&second.log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "errors logged on restart: {errors:?}");
    let mut restore_lines: BTreeMap<i64, usize> = BTreeMap::new();
    for l in &lines {
        // The engine's modules log under `processor::engine::*` (restore, rebalance, ...).
        if l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("processor::engine"))
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Restored"))
        {
            assert_eq!(l["level"], "INFO", "{l}");
            let p = l["fields"]["partition"].as_i64().unwrap();
            *restore_lines.entry(p).or_default() += 1;
        }
    }
    assert_eq!(
        restore_lines,
        (0..i64::from(topics.partitions)).map(|p| (p, 1)).collect(),
        "restore lines per partition; log:\n{log}"
    );
}
