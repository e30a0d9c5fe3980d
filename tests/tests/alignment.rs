//! Same outcome live, as a backlog and on replay, through the whole stack: one shopify-sim store
//! (registered customers checking out as guests, partial refunds near tier thresholds, refunds
//! delivered before their orders, redacts of customers whose refunds are parked on the order
//! key) gives identical commands (ids and payloads) processed live as sent, read as a backlog by
//! a processor started afterwards, and replayed from the earliest offset, and Iterable equals the
//! store's ground truth.
//!
//! The store's timeline ends now, so ingest's heartbeats (the wall clock) are past every timer
//! the truth expects and before none it does not; the timers use the production rule
//! (`engine.timers.clock = "inputs"`) with its late-arrival hold scaled down to 5 s.
//! `TILLSTREAM_TEST_TIMER_CLOCK=stream_time` runs the previous firing rule (stream time of the
//! raw input alone), which fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemas::{Action, IterableCommand};
use tests::{Stack, StackOptions, check_outcome, lock, send_all};

/// How long a lapse or abandonment due after the timeline's end may be, at least, for the
/// test to be exact: the truth stops at the end, the heartbeats go on for the test's duration.
const QUIET_AFTER_END_MS: i64 = 3 * 3_600_000;

fn scenario() -> shopify_sim::Scenario {
    let mut cfg = tests::ci_scenario();
    cfg.seed = 21;
    cfg.customers = 36;
    cfg.days = 120;
    cfg.registered_guest_checkout_fraction = 0.3;
    cfg.refund_fraction = 0.25;
    cfg.partial_refund_fraction = 0.4;
    cfg.redact_fraction = 0.12;
    cfg.faults.reorder_probability = 0.1;
    tests::scenario_ending_now(cfg, QUIET_AFTER_END_MS).expect("scenario")
}

fn options() -> StackOptions {
    StackOptions::historical(runtime::testing::kafka()).live_timers(&[])
}

/// Waits until the processor holds no due timer back and everything is delivered.
async fn settle(stack: &Stack, what: &str) {
    stack
        .wait_no_timer_held(Duration::from_secs(240))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    stack.wait_drained(Duration::from_secs(240)).await.unwrap();
}

/// The commands of the topic, per partition, in the order they were written.
fn commands(stack: &Stack) -> Vec<Vec<IterableCommand>> {
    let mut by_partition = vec![Vec::new(); usize::try_from(stack.topics.partitions).unwrap()];
    for (p, _, v, _) in runtime::testing::read_committed(
        &stack.kafka,
        &stack.topics.commands,
        stack.topics.partitions,
    ) {
        if let Some(v) = v {
            by_partition[usize::try_from(p).unwrap()].push(IterableCommand::decode(&v).unwrap());
        }
    }
    by_partition
}

/// What two runs must agree on: every command other than profile sync by id (its last
/// payload), and every key's final profile (profile updates folded in order).
type Outcome = (
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, serde_json::Value>>,
);

fn outcome<'a>(cmds: impl IntoIterator<Item = &'a IterableCommand>) -> Outcome {
    let (mut by_id, mut profiles) = (BTreeMap::new(), BTreeMap::<_, BTreeMap<_, _>>::new());
    for c in cmds {
        match &c.action {
            Action::UpsertUser { data_fields, .. } => {
                let p = profiles.entry(c.customer_key.clone()).or_default();
                for (f, v) in data_fields {
                    p.insert(f.clone(), v.clone());
                }
            }
            // A cart is replaced by the next one; which intermediate carts are sent depends
            // on arrival order by design.
            Action::UpdateCart { .. } => {}
            // The action, not the key that sent it: a registered customer's guest order read
            // before the claim (a backlog reads the raw topic ahead of the repartition topic)
            // has its purchase and order events held by the email key and handed to the
            // customer key with the claim, while live they are forwarded; the truth check
            // verifies where they landed.
            other => {
                by_id.insert(c.command_id.clone(), format!("{other:?}"));
            }
        }
    }
    (by_id, profiles)
}

fn assert_same(name: &str, a: &Outcome, b: &Outcome) {
    let missing: Vec<_> = a.0.keys().filter(|id| !b.0.contains_key(*id)).collect();
    let extra: Vec<_> =
        b.0.iter()
            .filter(|(id, _)| !a.0.contains_key(*id))
            .collect();
    let differ: Vec<_> =
        a.0.iter()
            .filter_map(|(id, v)| {
                b.0.get(id)
                    .filter(|w| *w != v)
                    .map(|w| format!("{id}:\n    live: {v}\n    {name}: {w}"))
            })
            .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "live vs {name}: missing {missing:?}, extra {extra:?}, {} different payloads:\n  {}",
        differ.len(),
        differ.join("\n  ")
    );
    let profiles: Vec<_> =
        a.1.iter()
            .filter(|(key, v)| b.1.get(*key) != Some(*v))
            .map(|(key, _)| key)
            .collect();
    assert!(
        profiles.is_empty() && a.1.len() == b.1.len(),
        "live vs {name}: final profiles differ for {profiles:?}"
    );
}

fn assert_truth(stack: &Stack, sc: &shopify_sim::Scenario, name: &str) {
    let report = check_outcome(&sc.expected, stack.sim_state());
    eprintln!("{name}: {}", report.summary(40));
    if !report.mismatches.is_empty() {
        explain_mismatches(sc, &report.mismatches);
        if let Ok(keys) = std::env::var("TILLSTREAM_TEST_SHOW_KEYS") {
            let base = lock(&stack.processor).url();
            for k in keys.split(',') {
                let url = format!("{base}/customers/{k}?raw=true");
                let body = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(async { reqwest::get(&url).await?.text().await })
                });
                eprintln!("STATE {k}: {body:?}");
            }
        }
        // The journey events as commands, to see which key sent what.
        for c in commands(stack).into_iter().flatten() {
            if let Action::TrackEvent {
                event_name,
                data_fields,
                ..
            } = &c.action
            {
                eprintln!(
                    "  {} {} {event_name} {:?}",
                    c.customer_key,
                    c.command_id,
                    data_fields.get("order_id")
                );
            }
        }
    }
    assert!(
        report.mismatches.is_empty(),
        "{name}: Iterable differs from the store's truth:\n{}",
        report.summary(200)
    );
}

/// Prints the deliveries of the people a mismatch names (their customer id, then the emails
/// their payloads carry), in send order, so a failure can be read without rerunning it.
fn explain_mismatches(sc: &shopify_sim::Scenario, mismatches: &[String]) {
    let ids: Vec<&str> = mismatches
        .iter()
        .filter_map(|m| m.split_once(": ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|id| id.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let mut needles: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    for d in &sc.deliveries {
        let body = String::from_utf8_lossy(&d.body);
        if ids.iter().any(|id| body.contains(id)) {
            let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
            for e in [&v["email"], &v["customer"]["email"]] {
                if let Some(e) = e.as_str()
                    && !needles.iter().any(|n| n == e)
                {
                    needles.push(e.to_owned());
                }
            }
        }
    }
    eprintln!("deliveries mentioning {needles:?}:");
    if let Ok(path) = std::env::var("TILLSTREAM_TEST_DUMP") {
        let dump: Vec<serde_json::Value> = sc
            .deliveries
            .iter()
            .filter(|d| {
                let body = String::from_utf8_lossy(&d.body);
                needles.iter().any(|n| body.contains(n.as_str()))
            })
            .map(|d| {
                serde_json::json!({
                    "topic": d.topic,
                    "id": d.webhook_id,
                    "at": d.triggered_at.timestamp_millis(),
                    "body": serde_json::from_slice::<serde_json::Value>(&d.body).unwrap_or_default(),
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_vec(&dump).unwrap()).unwrap();
    }
    for (i, d) in sc.deliveries.iter().enumerate() {
        let body = String::from_utf8_lossy(&d.body);
        if !needles.iter().any(|n| body.contains(n.as_str())) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
        eprintln!(
            "  #{i} {} {} {:?} id={} customer={} email={} processed={} updated={}",
            d.triggered_at.to_rfc3339(),
            d.topic,
            d.kind,
            v["id"],
            v["customer"]["id"],
            v["email"],
            v["processed_at"],
            v["updated_at"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_backlog_and_replay_of_a_store_give_the_same_commands_and_the_truth() {
    let started = Instant::now();
    let sc = scenario();

    // (a) live: the processor runs while the store's webhooks arrive.
    let live = Stack::start(options()).await.unwrap();
    send_all(&live.webhook_url(), sc.deliveries.clone(), 0.0)
        .await
        .unwrap();
    settle(&live, "live").await;
    eprintln!("live settled at {:?}", started.elapsed());
    assert_truth(&live, &sc, "live");
    let a: Vec<IterableCommand> = commands(&live).into_iter().flatten().collect();
    live.shutdown().await;

    // (b) backlog: the store is written while the processor is down, then it starts.
    let mut backlog = Stack::start(options()).await.unwrap();
    lock(&backlog.processor).terminate();
    send_all(&backlog.webhook_url(), sc.deliveries.clone(), 0.0)
        .await
        .unwrap();
    lock(&backlog.processor).start();
    settle(&backlog, "backlog").await;
    eprintln!("backlog settled at {:?}", started.elapsed());
    assert_truth(&backlog, &sc, "backlog");
    let before = commands(&backlog);
    let b: Vec<IterableCommand> = before.iter().flatten().cloned().collect();

    // (c) replay: fresh state reads the raw topic from its earliest offset, as after
    // `tillstream replay --from earliest`, into the same commands topic and Iterable.
    backlog
        .replace_processor_with_fresh_replay(&options().rules_toml)
        .await
        .unwrap();
    settle(&backlog, "replay").await;
    eprintln!("replay settled at {:?}", started.elapsed());
    assert_truth(&backlog, &sc, "replay");
    let after = commands(&backlog);
    let c: Vec<IterableCommand> = after
        .iter()
        .zip(&before)
        .flat_map(|(all, earlier)| all[earlier.len()..].iter().cloned())
        .collect();
    backlog.shutdown().await;

    // Erasure is final: the replay sends nothing for a person erased before it (the erasure
    // markers outlive the state), so it is compared with the live run without them.
    let erased: Vec<String> = a
        .iter()
        .filter(|c| matches!(c.action, Action::DeleteUser { .. }))
        .map(|c| c.customer_key.clone())
        .collect();
    assert!(!erased.is_empty(), "the store erased nobody");
    let resent: Vec<&IterableCommand> = c
        .iter()
        .filter(|x| erased.contains(&x.customer_key))
        .collect();
    assert!(
        resent.is_empty(),
        "the replay sent commands for erased people: {resent:#?}"
    );
    let live_kept: Vec<IterableCommand> = a
        .iter()
        .filter(|x| !erased.contains(&x.customer_key))
        .cloned()
        .collect();
    let (kept, a, b, c) = (outcome(&live_kept), outcome(&a), outcome(&b), outcome(&c));
    assert!(
        a.0.len() > 100,
        "the store produced too few commands: {}",
        a.0.len()
    );
    assert_same("backlog", &a, &b);
    assert_same("replay", &kept, &c);
}
