//! `tillstream replay` against the real broker: refusal with live members, dry run, reset.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use runtime::testing::{fresh_topics, kafka, unique};
use runtime::{KafkaConfig, TopicsConfig};

const T: Duration = Duration::from_secs(10);

/// Runs the CLI against the test broker and the test's topic names.
fn cli(k: &KafkaConfig, t: &TopicsConfig, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(args)
        .env_remove("TILLSTREAM_CONFIG")
        .env_remove("TILLSTREAM__APPLICATION_ID")
        .envs(runtime::testing::service_env(k, t))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes `n` records to `partition` of `topic`, with the given timestamps when any.
async fn produce(k: &KafkaConfig, topic: &str, partition: i32, timestamps: &[i64]) {
    let p: FutureProducer = k.producer("test").create().unwrap();
    for (i, ts) in timestamps.iter().enumerate() {
        let key = format!("k{i}");
        let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic)
            .partition(partition)
            .key(key.as_str())
            .payload("v");
        if *ts > 0 {
            r = r.timestamp(*ts);
        }
        p.send(r, T).await.unwrap();
    }
    p.flush(T).unwrap();
}

fn consumer(k: &KafkaConfig, group: &str) -> BaseConsumer {
    k.consumer("test", group, true).create().unwrap()
}

fn commit(k: &KafkaConfig, group: &str, offsets: &[(&str, i32, i64)]) {
    let c = consumer(k, group);
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

fn committed(k: &KafkaConfig, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let c = consumer(k, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    match c
        .committed_offsets(tpl, T)
        .unwrap()
        .find_partition(topic, partition)
        .unwrap()
        .offset()
    {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn high(k: &KafkaConfig, topic: &str, partition: i32) -> i64 {
    consumer(k, "unused")
        .fetch_watermarks(topic, partition, T)
        .unwrap()
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_while_the_group_has_a_live_member() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let group = unique("replay-live");
    produce(&k, &t.changelog, 0, &[0]).await;

    // A member that stays in the group for the whole test (librdkafka heartbeats in the
    // background; polling keeps it within max.poll.interval).
    let member = consumer(&k, &group);
    member.subscribe(&[t.raw.as_str()]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let joined = Arc::new(AtomicBool::new(false));
    let handle = {
        let (stop, joined) = (stop.clone(), joined.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = member.poll(Duration::from_millis(100));
                if member.assignment().is_ok_and(|a| a.count() > 0) {
                    joined.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !joined.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the test member never joined {group}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let dry = cli(
        &k,
        &t,
        &[
            "replay",
            "--from",
            "earliest",
            "--group",
            &group,
            "--dry-run",
        ],
    );
    assert!(!dry.status.success(), "{}", text(&dry));
    let out = cli(&k, &t, &["replay", "--from", "earliest", "--group", &group]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("live member"), "{}", text(&out));
    assert!(err.contains("Stop the processors first"), "{}", text(&out));
    assert!(
        err.contains("client test"),
        "the member is named: {}",
        text(&out)
    );
    assert_eq!(high(&k, &t.changelog, 0), 1, "the changelog is untouched");

    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_changes_nothing_then_earliest_resets_offsets_and_recreates_state() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let group = unique("replay-earliest");
    produce(&k, &t.raw, 0, &[0, 0, 0]).await;
    produce(&k, &t.raw, 1, &[0, 0]).await;
    produce(&k, &t.changelog, 0, &[0, 0]).await;
    produce(&k, &t.changelog, 1, &[0]).await;
    produce(&k, &t.repartition, 1, &[0, 0]).await;
    produce(&k, &t.erasures, 0, &[0]).await;
    // As if a processor had consumed everything and left.
    commit(
        &k,
        &group,
        &[
            (&t.raw, 0, 3),
            (&t.raw, 1, 2),
            (&t.repartition, 0, 0),
            (&t.repartition, 1, 2),
        ],
    );

    let dry = cli(
        &k,
        &t,
        &[
            "replay",
            "--from",
            "earliest",
            "--group",
            &group,
            "--dry-run",
        ],
    );
    assert!(dry.status.success(), "{}", text(&dry));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("dry run: nothing is changed"), "{out}");
    assert!(
        out.contains("3 →  0"),
        "per-partition committed → new: {out}"
    );
    assert!(out.contains("Would delete and recreate"), "{out}");
    assert!(
        out.contains(&format!("{:<44} 3 records", t.changelog)),
        "{out}"
    );
    assert!(out.contains("deterministic"), "{out}");
    assert!(out.contains("freshness horizons"), "{out}");
    assert_eq!(committed(&k, &group, &t.raw, 0), Some(3));
    assert_eq!(committed(&k, &group, &t.repartition, 1), Some(2));
    assert_eq!(high(&k, &t.changelog, 0), 2);

    let run = cli(&k, &t, &["replay", "--from", "earliest", "--group", &group]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(committed(&k, &group, &t.raw, 0), Some(0));
    assert_eq!(committed(&k, &group, &t.raw, 1), Some(0));
    assert_eq!(committed(&k, &group, &t.repartition, 0), Some(0));
    assert_eq!(committed(&k, &group, &t.repartition, 1), Some(0));
    for p in 0..2 {
        assert_eq!(
            high(&k, &t.changelog, p),
            0,
            "changelog partition {p} recreated empty"
        );
        assert_eq!(
            high(&k, &t.repartition, p),
            0,
            "repartition partition {p} recreated empty"
        );
        assert_eq!(
            high(&k, &t.raw, p),
            [3, 2][usize::try_from(p).unwrap()],
            "raw kept"
        );
    }
    assert_eq!(
        high(&k, &t.erasures, 0),
        1,
        "the erasure registry survives a replay: erased customers stay erased"
    );
    // Recreated with the catalogue's partitions and configs (compaction included).
    t.apply(&k).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamp_replay_moves_back_to_the_first_record_at_that_time_and_keeps_state() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let group = unique("replay-ts");
    let now = runtime::now_ms();
    let hour = 3_600_000;
    produce(&k, &t.raw, 0, &[now - 3 * hour, now - 2 * hour, now - hour]).await;
    produce(&k, &t.raw, 1, &[now - 3 * hour]).await;
    produce(&k, &t.changelog, 0, &[0]).await;
    commit(&k, &group, &[(&t.raw, 0, 3), (&t.raw, 1, 1)]);

    let from = chrono::DateTime::from_timestamp_millis(now - 90 * 60_000)
        .unwrap()
        .to_rfc3339();
    let run = cli(&k, &t, &["replay", "--from", &from, "--group", &group]);
    assert!(run.status.success(), "{}", text(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        out.contains("WARNING: the changelog (current state) is kept"),
        "{out}"
    );
    assert_eq!(
        committed(&k, &group, &t.raw, 0),
        Some(2),
        "the record of an hour ago is read again"
    );
    assert_eq!(
        committed(&k, &group, &t.raw, 1),
        Some(1),
        "nothing after the time: unchanged"
    );
    assert_eq!(high(&k, &t.changelog, 0), 1, "state kept");

    // Older than the dedup window: refused, pointing at `earliest`.
    let old = cli(
        &k,
        &t,
        &[
            "replay",
            "--from",
            "2020-01-01T00:00:00Z",
            "--group",
            &group,
        ],
    );
    assert!(!old.status.success(), "{}", text(&old));
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("--from earliest"),
        "{}",
        text(&old)
    );
}
