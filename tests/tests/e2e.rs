//! End to end: a seeded store's webhooks through ingest → Kafka → processor → publisher → iterable-sim equal the scenario's expected outcome; a replay into fresh state only upserts.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iterable_sim::Filter;
use tests::{
    DEFAULT_RULES, Stack, StackOptions, TIMER_GRACE_MS, check_outcome, ci_scenario, rfc3339_ms,
    scenario, send_all,
};

/// Journey events: a replay with default freshness horizons must not send them again.
const JOURNEY: &[&str] = &[
    "customer_created",
    "first_purchase",
    "vip_tier_upgraded",
    "customer_lapsed",
    "customer_reactivated",
    "checkout_abandoned",
    "order_fulfilled",
    "order_refunded",
    "order_cancelled",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_outcome_in_iterable_equals_expected_then_replay_only_upserts() {
    let started = Instant::now();
    let kafka = runtime::testing::kafka();
    let cfg = ci_scenario();
    let sc = scenario(&cfg).unwrap();
    let mut stack = Stack::start(StackOptions::historical(kafka)).await.unwrap();
    eprintln!(
        "stack up in {:?}; logs in {}",
        started.elapsed(),
        stack.dir.display()
    );

    let report = send_all(
        &stack.webhook_url(),
        sc.deliveries.clone(),
        cfg.rate_per_sec,
    )
    .await
    .unwrap();
    eprintln!(
        "sent {} deliveries in {} ms ({:.0}/s)",
        report.sent, report.elapsed_ms, report.achieved_rate_per_sec
    );
    let end = rfc3339_ms(&sc.expected.timeline_end).unwrap();
    stack
        .produce_clock_ticks(end + TIMER_GRACE_MS + 1000, &sc.expected.shop_domain)
        .await
        .unwrap();
    stack.wait_drained(Duration::from_secs(180)).await.unwrap();
    eprintln!("drained at {:?}", started.elapsed());

    let sim = stack.sim_state();
    let outcome = check_outcome(&sc.expected, sim);
    eprintln!("{}", outcome.summary(60));
    eprintln!(
        "processor DLQ {} records, publisher DLQ {} records",
        stack.side_topic_records(&stack.topics.processor_dlq),
        stack.side_topic_records(&stack.topics.publisher_dlq)
    );
    assert!(
        outcome.mismatches.is_empty(),
        "Iterable differs from expected.json:\n{}",
        outcome.summary(200)
    );
    assert_eq!(
        stack.side_topic_records(&stack.topics.processor_dlq),
        0,
        "processor dead letters"
    );

    // The comparison has teeth: one cent more on one person and one abandoned checkout moved
    // to "must not fire" are each reported, and nothing else is.
    let mut wrong = sc.expected.clone();
    let (_, c) = wrong
        .customers
        .iter_mut()
        .find(|(_, c)| {
            !c.redacted && c.orders_count > 0 && !c.abandoned_checkouts_must_fire.is_empty()
        })
        .unwrap();
    c.lifetime_value = format!("{:.2}", c.lifetime_value.parse::<f64>().unwrap() + 0.01);
    let moved = c.abandoned_checkouts_must_fire.remove(0);
    c.abandoned_checkouts_must_not_fire.push(moved);
    let bad = check_outcome(&wrong, sim);
    assert_eq!(
        (
            bad.of_kind("ltv:").len(),
            bad.of_kind("checkout-unwanted:").len(),
            bad.mismatches.len()
        ),
        (1, 1, 2),
        "{}",
        bad.summary(10)
    );

    // Replay: a new processor deployment reads the raw topic from the beginning into fresh
    // state with the default rules (freshness horizons on), into the same commands topic.
    let events_before: BTreeMap<String, (String, u64)> = sim
        .events(&Filter::default())
        .into_iter()
        .map(|e| (e.id, (e.name, e.update_count)))
        .collect();
    let purchases_before: BTreeMap<String, u64> = sim
        .purchases(&Filter::default())
        .into_iter()
        .map(|p| (p.id, p.update_count))
        .collect();
    let requests_before = sim.stats().totals.requests;
    stack
        .replace_processor_with_fresh_replay(DEFAULT_RULES)
        .await
        .unwrap();
    stack.wait_drained(Duration::from_secs(180)).await.unwrap();
    let sim = stack.sim_state();
    eprintln!(
        "replay drained at {:?}: {} more Iterable requests",
        started.elapsed(),
        sim.stats().totals.requests - requests_before
    );

    let events_after: BTreeMap<String, (String, u64)> = sim
        .events(&Filter::default())
        .into_iter()
        .map(|e| (e.id, (e.name, e.update_count)))
        .collect();
    let purchases_after: BTreeMap<String, u64> = sim
        .purchases(&Filter::default())
        .into_iter()
        .map(|p| (p.id, p.update_count))
        .collect();
    let new_ids: Vec<_> = events_after
        .keys()
        .filter(|id| !events_before.contains_key(*id))
        .collect();
    assert!(
        new_ids.is_empty(),
        "the replay created new event ids: {new_ids:?}"
    );
    assert_eq!(
        purchases_after.keys().collect::<Vec<_>>(),
        purchases_before.keys().collect::<Vec<_>>(),
        "purchase ids changed"
    );
    let retriggered: Vec<_> = events_after
        .iter()
        .filter(|(id, (name, n))| {
            JOURNEY.contains(&name.as_str()) && events_before.get(*id).is_some_and(|(_, b)| b != n)
        })
        .collect();
    assert!(
        retriggered.is_empty(),
        "the replay re-sent stale journey events: {retriggered:?}"
    );
    let upserted = purchases_after
        .iter()
        .filter(|(id, n)| purchases_before.get(*id).is_some_and(|b| *n > b))
        .count();
    assert!(
        upserted > 0,
        "the replay did not re-send any purchase (did it run?)"
    );
    eprintln!(
        "replay: {upserted} of {} purchases upserted again, no new ids, no journey event re-sent",
        purchases_after.len()
    );
    let outcome = check_outcome(&sc.expected, sim);
    assert!(
        outcome.mismatches.is_empty(),
        "after the replay Iterable differs from expected.json:\n{}",
        outcome.summary(200)
    );
    eprintln!("total {:?}", started.elapsed());
    stack.shutdown().await;
}
