//! The engine against the real broker: crashes, scaling, replay, timers, fencing, poison.
//!
//! Every test runs processor binaries as child processes with the order-counter rules, so a
//! `kill -9` is a real crash. The order counter makes state visible in its output: the n-th
//! order of a customer emits `order_counted` with `orders = n`, so lost or duplicated state
//! shows up as a wrong count, and lost or duplicated commands as missing or repeated ids.
//!
//! The children inherit the environment, so `TILLSTREAM__ENGINE__THREADS=2 cargo test -p
//! processor --test exactly_once` runs every test with two engine threads per instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};

/// `customers` customers with `orders_each` orders each, and one refund for every third
/// order; event times an hour ago so no one-day timer fires during the test.
fn workload(customers: u64, orders_each: u64, tag: &str) -> (Vec<schemas::ShopifyEnvelope>, usize) {
    let base = runtime::now_ms() - 3_600_000;
    let mut out = Vec::new();
    let mut refunds = 0;
    for c in 0..customers {
        let customer = 9_007_199_254_740_993 + c; // above 2^53 on purpose
        for o in 0..orders_each {
            let order_id = customer * 100 + o;
            let at = base + (o * customers + c) as i64;
            out.push(order(customer, order_id, &format!("{tag}-o-{c}-{o}"), at));
            if (c + o) % 3 == 0 {
                out.push(refund(
                    order_id,
                    order_id + 7,
                    &format!("{tag}-r-{c}-{o}"),
                    at + 1,
                ));
                refunds += 1;
            }
        }
    }
    let expected = (customers * orders_each) as usize + refunds;
    (out, expected)
}

/// (id, name, order count, key) of every command, the comparable content of a run. Refund
/// counts are left out: refunds reach the customer from other partitions, so how they
/// interleave with the customer's own events depends on timing (rules must be insensitive to
/// that order; the counter deliberately is not, which makes the interleaving visible).
fn content(cmds: &[schemas::IterableCommand]) -> BTreeSet<(String, String, Option<i64>, String)> {
    cmds.iter()
        .map(|c| {
            (
                c.command_id.clone(),
                event_name(c).to_owned(),
                event_field(c, "orders"),
                c.customer_key.clone(),
            )
        })
        .collect()
}

fn assert_same(a: &[schemas::IterableCommand], b: &[schemas::IterableCommand], what: &str) {
    let (a, b) = (content(a), content(b));
    let only_a: Vec<_> = a.difference(&b).take(5).collect();
    let only_b: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}: only in first {only_a:?}; only in second {only_b:?}"
    );
}

fn assert_no_duplicates(cmds: &[schemas::IterableCommand]) {
    let dups: Vec<_> = id_counts(cmds)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(dups.is_empty(), "duplicate commands: {dups:?}");
}

/// `inputs` into fresh topics, processed by one uninterrupted instance: the topics and the
/// commands every other run of the same input must give.
async fn reference_run(
    k: &runtime::KafkaConfig,
    inputs: &[schemas::ShopifyEnvelope],
    expected: usize,
    tag: &str,
) -> (runtime::TopicsConfig, Vec<schemas::IterableCommand>) {
    let reference = fresh_topics(k, 4).await;
    produce(k, &reference.raw, inputs).await;
    let mut p = on_topics(k, &reference, &format!("{tag}-ref")).spawn("ref");
    let cmds = wait_commands(k, &reference, expected, "the uninterrupted run");
    assert!(p.terminate().success(), "clean shutdown exits 0");
    assert_no_duplicates(&cmds);
    assert_eq!(cmds.len(), expected);
    (reference, cmds)
}

/// A deployment of its own (group, changelog, commands) reading `reference`'s raw topic.
async fn on_the_same_raw(
    k: &runtime::KafkaConfig,
    reference: &runtime::TopicsConfig,
    tag: &str,
) -> (runtime::TopicsConfig, Deployment) {
    let mut topics = fresh_topics(k, 4).await;
    topics.raw = reference.raw.clone();
    let d = on_topics(k, &topics, tag);
    (topics, d)
}

fn on_topics(k: &runtime::KafkaConfig, topics: &runtime::TopicsConfig, tag: &str) -> Deployment {
    Deployment::new(k, topics, unique(tag))
}

fn wait_commands(
    k: &runtime::KafkaConfig,
    t: &runtime::TopicsConfig,
    n: usize,
    what: &str,
) -> Vec<schemas::IterableCommand> {
    wait_for(what, Duration::from_secs(180), || {
        let c = commands(k, t);
        (c.len() >= n).then_some(c)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_nine_at_random_points_and_replay_give_the_same_commands() {
    let k = kafka();
    let (inputs, expected) = workload(40, 12, "kill");

    // 1. An uninterrupted run.
    let (reference, ref_cmds) = reference_run(&k, &inputs, expected, "kill").await;

    // 2. The same raw topic into fresh state, killed with SIGKILL at random points.
    let (crashed, d2) = on_the_same_raw(&k, &reference, "crash").await;
    let mut seen = 0usize;
    let mut rng = 0x9e37_79b9_u64 ^ std::process::id() as u64;
    for round in 0..5 {
        let mut p = d2.spawn("crash");
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let step = 1 + (rng >> 33) as usize % (expected / 6);
        let target = (seen + step).min(expected - 1);
        // Kill once the committed output has grown past a random point.
        seen = wait_for(
            &format!("progress in round {round}"),
            Duration::from_secs(120),
            || {
                let n = commands(&k, &crashed).len();
                (n >= target).then_some(n)
            },
        );
        p.kill9();
    }
    let mut p = d2.spawn("crash");
    let crash_cmds = wait_commands(&k, &crashed, expected, "the crashed run to finish");
    p.terminate();
    assert_no_duplicates(&crash_cmds);
    assert_eq!(crash_cmds.len(), expected, "nothing missing, nothing extra");
    assert_same(&crash_cmds, &ref_cmds, "crashed run vs uninterrupted run");

    // 3. Replay from offset 0 into a fresh group and changelog: same commands, ids included.
    let (replay, d3) = on_the_same_raw(&k, &reference, "replay").await;
    let mut p = d3.spawn("replay");
    let replay_cmds = wait_commands(&k, &replay, expected, "the replay");
    p.terminate();
    assert_same(&replay_cmds, &ref_cmds, "replay vs first run");

    // Refunds reached the customer who placed the order, through the repartition topic.
    let refunds: Vec<_> = ref_cmds
        .iter()
        .filter(|c| event_name(c) == "refund_counted")
        .collect();
    assert!(!refunds.is_empty());
    assert!(
        refunds.iter().all(|c| c.customer_key.contains("/c/")),
        "refunds counted on customer keys"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_and_state_move_when_instances_join_and_leave() {
    let k = kafka();
    let topics = fresh_topics(&k, 6).await;
    let d = Deployment::new(&k, &topics, unique("scale"));
    let mut a = d.spawn("a");
    let mut b = d.spawn("b");
    let mut total = 0;
    let mut per_customer: BTreeMap<String, i64> = BTreeMap::new();
    let mut batch = |tag: &str| {
        let (inputs, n) = workload(30, 2, tag);
        for e in &inputs {
            if e.topic == "orders/paid" {
                *per_customer.entry(e.routing_key.clone()).or_default() += 1;
            }
        }
        total += n;
        (inputs, total)
    };
    let (inputs, n) = batch("b1");
    produce(&k, &topics.raw, &inputs).await;
    wait_commands(&k, &topics, n, "batch 1 with two instances");

    let mut c = d.spawn("c");
    wait_for(
        "the third instance to join and restore",
        Duration::from_secs(60),
        || c.ready().then_some(()),
    );
    let (inputs, n) = batch("b2");
    produce(&k, &topics.raw, &inputs).await;
    wait_commands(&k, &topics, n, "batch 2 with three instances");

    assert!(a.terminate().success(), "graceful leave exits 0");
    let (inputs, n) = batch("b3");
    produce(&k, &topics.raw, &inputs).await;
    wait_commands(&k, &topics, n, "batch 3 after one left");

    b.kill9();
    let (inputs, n) = batch("b4");
    produce(&k, &topics.raw, &inputs).await;
    let cmds = wait_commands(&k, &topics, n, "batch 4 after a crash");
    c.terminate();

    assert_no_duplicates(&cmds);
    assert_eq!(cmds.len(), n);
    // State moved with its partitions: every customer's counts run 1..=n with no gap or repeat.
    for (key, seen) in order_counts(&cmds) {
        let want: Vec<i64> = (1..=per_customer[&key]).collect();
        assert_eq!(seen, want, "order counts of {key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lagging_replay_fires_historical_timers_in_event_time_order() {
    let k = kafka();
    let topics = fresh_topics(&k, 2).await;
    let day = 86_400_000;
    let t0 = 1_767_225_600_000; // 2026-01-01, long before the wall clock
    let c = 4242;
    let times = [t0, t0 + 2 * day, t0 + 2 * day + 3_600_000, t0 + 5 * day];
    let inputs: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(i, at)| order(c, 10 + i as u64, &format!("hist-{i}"), *at))
        .collect();
    produce(&k, &topics.raw, &inputs).await;
    let d = Deployment::new(&k, &topics, unique("hist"));
    let mut p = d.spawn("h");
    let cmds = wait_commands(&k, &topics, 7, "orders and timers");
    p.terminate();
    let key = customer_key(c);
    let seq: Vec<(String, i64)> = cmds
        .iter()
        .filter(|c| c.customer_key == key)
        .map(|c| (event_name(c).to_owned(), c.event_time_ms))
        .collect();
    let want = vec![
        ("order_counted".to_owned(), times[0]),
        ("quiet_period_ended".to_owned(), times[0] + day),
        ("order_counted".to_owned(), times[1]),
        ("order_counted".to_owned(), times[2]),
        ("quiet_period_ended".to_owned(), times[2] + day),
        ("order_counted".to_owned(), times[3]),
        // Due after the last event: fired once the partition caught up, by the wall clock.
        ("quiet_period_ended".to_owned(), times[3] + day),
    ];
    assert_eq!(seq, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn caught_up_idle_partition_fires_by_the_wall_clock() {
    let k = kafka();
    let topics = fresh_topics(&k, 2).await;
    let d = Deployment {
        kafka: k.clone(),
        topics: topics.clone(),
        application_id: unique("wall"),
        timer_delay: "3s".into(),
    };
    let mut p = d.spawn("w");
    wait_for("ready", Duration::from_secs(60), || p.ready().then_some(()));
    let now = runtime::now_ms();
    produce(&k, &topics.raw, &[order(77, 7700, "wall-1", now)]).await;
    let cmds = wait_commands(&k, &topics, 2, "the wall-clock timer");
    p.terminate();
    let fired = cmds
        .iter()
        .find(|c| event_name(c) == "quiet_period_ended")
        .expect("timer fired with no further traffic");
    assert_eq!(fired.event_time_ms, now + 3_000);
}

/// A commit that outlives `engine.commit_deadline` (a Kafka client stuck on a moved
/// coordinator, librdkafka#5456) makes the engine replace its producer and rebuild its
/// partitions, in the same process. With a deadline of 1 ms nearly every commit is given up
/// while it may still complete: whichever way each went, the output is the uninterrupted
/// run's, with no duplicate and nothing missing, and the instance never restarts.
#[tokio::test(flavor = "multi_thread")]
async fn commits_past_their_deadline_replace_the_producer_and_lose_nothing() {
    let k = kafka();
    let (inputs, expected) = workload(8, 4, "stuck");
    let (reference, ref_cmds) = reference_run(&k, &inputs, expected, "stuck").await;
    // Whether a commit is still running when the engine next looks is a race: one run in
    // about a dozen read, committed and drained before any commit was seen past 1 ms. Every
    // run must be exact; up to three runs (fresh state, same raw input) for one that gave a
    // commit up, so the path under test is taken.
    let mut replaced = 0.0;
    for _ in 0..3 {
        let (stuck, d2) = on_the_same_raw(&k, &reference, "stuck").await;
        let mut p = d2.spawn_with("stuck", &[("TILLSTREAM__ENGINE__COMMIT_DEADLINE", "1ms")]);
        let cmds = wait_commands(&k, &stuck, expected, "the run with stuck commits");
        replaced = p
            .get("/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| {
                        l.starts_with("tillstream_processor_transactions_total{outcome=\"stuck\"}")
                    })
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "the instance replaced its producer instead of exiting"
        );
        p.terminate();
        assert_no_duplicates(&cmds);
        assert_eq!(cmds.len(), expected, "nothing missing, nothing extra");
        assert_same(&cmds, &ref_cmds, "stuck-commit run vs uninterrupted run");
        if replaced >= 1.0 {
            break;
        }
    }
    assert!(
        replaced >= 1.0,
        "no producer was replaced in three runs: the test did not test"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_input_commits_without_waiting_for_the_interval() {
    // Neither full nor `commit_interval` old, a transaction commits once a poll finds nothing
    // more to read: a burst's last records (and a lone webhook) are not held back.
    let k = kafka();
    let (inputs, expected) = workload(3, 2, "drained");
    let topics = fresh_topics(&k, 4).await;
    produce(&k, &topics.raw, &inputs).await;
    let mut p = on_topics(&k, &topics, "drained").spawn_with(
        "p",
        &[
            ("TILLSTREAM__ENGINE__COMMIT_INTERVAL", "1h"),
            ("TILLSTREAM__ENGINE__COMMIT_MAX_RECORDS", "100000"),
            ("TILLSTREAM__ENGINE__TRANSACTION_TIMEOUT", "5min"),
        ],
    );
    let cmds = wait_for(
        "the commands of a drained input",
        Duration::from_secs(60),
        || {
            let c = commands(&k, &topics);
            (c.len() >= expected).then_some(c)
        },
    );
    assert!(p.terminate().success(), "clean shutdown exits 0");
    assert_no_duplicates(&cmds);
    assert_eq!(cmds.len(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_instance_is_fenced_and_exits_non_zero() {
    let k = kafka();
    // A stale engine only learns it is fenced when it next uses its producer, i.e. when it
    // owns a partition with input. Four partitions give every engine thread of both instances
    // one, also with `engine.threads = 2` (four consumers in the group).
    let topics = fresh_topics(&k, 4).await;
    let d = Deployment::new(&k, &topics, unique("fence"));
    let mut old = d.spawn("same");
    wait_for("first instance ready", Duration::from_secs(60), || {
        old.ready().then_some(())
    });
    let mut new = d.spawn("same");
    wait_for("second instance ready", Duration::from_secs(60), || {
        new.ready().then_some(())
    });
    let (inputs, n) = workload(10, 2, "fence");
    produce(&k, &topics.raw, &inputs).await;
    let status = wait_for(
        "the stale instance to exit",
        Duration::from_secs(90),
        || old.child.try_wait().unwrap(),
    );
    assert!(!status.success(), "a fenced instance must exit non-zero");
    let cmds = wait_commands(&k, &topics, n, "all records processed by the new instance");
    new.terminate();
    assert_no_duplicates(&cmds);
    assert_eq!(cmds.len(), n);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dead_letter_topic_and_processing_continues() {
    let k = kafka();
    let topics = fresh_topics(&k, 1).await;
    produce_raw(&k, &topics.raw, &customer_key(1), b"definitely not avro").await;
    produce(
        &k,
        &topics.raw,
        &[envelope(
            "orders/paid",
            "bad-json",
            runtime::now_ms(),
            "{not json",
        )],
    )
    .await;
    let mut bad_body = order(1, 100, "bad-body", runtime::now_ms());
    bad_body.routing_key = customer_key(1);
    bad_body.body = br#"{"id":"not-a-number","customer":{"id":1}}"#.to_vec();
    produce(
        &k,
        &topics.raw,
        &[bad_body.clone(), order(1, 101, "good", runtime::now_ms())],
    )
    .await;
    let d = Deployment::new(&k, &topics, unique("poison"));
    let mut p = d.spawn("p");
    let cmds = wait_commands(&k, &topics, 1, "the good record after the poison");
    wait_for("dead letters", Duration::from_secs(60), || {
        (read_all(&k, &topics.processor_dlq, 1).len() >= 3).then_some(())
    });
    // A redrive of a dead-lettered record (same delivery id, same bytes) is processed again,
    // not dropped as a duplicate: here it fails again, so it is dead-lettered a second time.
    produce(&k, &topics.raw, &[bad_body]).await;
    let dlq = wait_for("the redriven record", Duration::from_secs(60), || {
        let d = read_all(&k, &topics.processor_dlq, 1);
        (d.len() >= 4).then_some(d)
    });
    p.terminate();
    assert_eq!(cmds.len(), 1);
    let kinds: BTreeSet<String> = dlq
        .iter()
        .map(|(_, _, _, h)| {
            h.iter()
                .find(|(k, _)| k == "tillstream.error.kind")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect();
    assert!(kinds.contains("undecodable_envelope"), "{kinds:?}");
    assert!(kinds.contains("rule_error"), "{kinds:?}");
    assert!(kinds.contains("unparseable_body"), "{kinds:?}");
    let garbage = dlq
        .iter()
        .find(|(_, _, v, _)| v.as_deref() == Some(&b"definitely not avro"[..]));
    assert!(garbage.is_some(), "the original bytes are kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn shop_redact_purges_every_key_of_the_shop_on_every_partition() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let (inputs, n) = workload(12, 2, "before");
    produce(&k, &topics.raw, &inputs).await;
    let d = Deployment::new(&k, &topics, unique("purge"));
    let mut p = d.spawn("p");
    wait_commands(&k, &topics, n, "orders before the redaction");
    // The customer has state before the redaction (checked before the redaction is produced: read
    // after it, the purge may already have happened).
    let key = customer_key(9_007_199_254_740_993);
    wait_for(
        "the state before the redaction",
        Duration::from_secs(30),
        || {
            let (status, _) = p.get(&format!("/customers/{key}"))?;
            (status == 200).then_some(())
        },
    );
    // Dated before the orders that follow it: records at or before a shop's erasure time are
    // its erased past and dropped for good (processor/src/erasure.rs), later ones are a new
    // start for the shop.
    produce(
        &k,
        &topics.raw,
        &[envelope(
            "shop/redact",
            "redact-1",
            runtime::now_ms() - 2 * 3_600_000,
            r#"{"shop_id":1,"shop_domain":"test-shop.myshopify.com"}"#,
        )],
    )
    .await;
    // After the purge every customer starts from zero again.
    let (after, m) = workload(12, 1, "after");
    // Wait until the purge has been applied everywhere: the customer query answers 404.
    wait_for("the purge", Duration::from_secs(60), || {
        let (status, body) = p.get(&format!("/customers/{key}"))?;
        // 404 with a JSON answer from the owner: the key is known to be gone (not a routing 404).
        (status == 404 && body.contains("\"owned_here\":true")).then_some(())
    });
    produce(&k, &topics.raw, &after).await;
    let cmds = wait_commands(&k, &topics, n + m, "orders after the redaction");
    p.terminate();
    let counts: BTreeSet<i64> = cmds
        .iter()
        .filter(|c| {
            event_name(c) == "order_counted" && c.source_ids.iter().any(|s| s.starts_with("after-"))
        })
        .map(|c| event_field(c, "orders").unwrap())
        .collect();
    assert_eq!(
        counts,
        BTreeSet::from([1]),
        "state was purged on every partition"
    );
}
