//! Scenarios for the end-to-end tests: generating them, sending them, and comparing the outcome.

use super::*;

/// The CI scenario shared by the end-to-end and fault suites: 40 people over 180 days of 2026
/// (about 1,500 deliveries) with the scenario's default delivery faults (duplicates, second
/// subscriptions, stale retries, local reordering).
pub fn ci_scenario() -> shopify_sim::ScenarioConfig {
    shopify_sim::ScenarioConfig {
        seed: 11,
        customers: 40,
        days: 180,
        rate_per_sec: 0.0,
        ..Default::default()
    }
}

/// Generates a scenario and prints its size.
///
/// # Errors
/// On an invalid scenario.
pub fn scenario(cfg: &shopify_sim::ScenarioConfig) -> anyhow::Result<shopify_sim::Scenario> {
    let s = shopify_sim::generate(cfg)?;
    eprintln!(
        "scenario seed {} customers {}: {} deliveries ({} unique webhook ids), {} people in expected.json",
        cfg.seed,
        cfg.customers,
        s.deliveries.len(),
        s.expected.deliveries.unique_webhook_ids,
        s.expected.customers.len()
    );
    Ok(s)
}

/// Generates `cfg` with its timeline ending now (`start = now-{days}d`), for stacks on the
/// production timer clock (`inputs`): ingest's heartbeats carry the wall clock, so every timer
/// due before the test ends fires, while `expected.json` stops at the timeline's end.
///
/// # Errors
/// On an invalid scenario, or when a customer's lapse is due within `quiet_ms` after the
/// timeline's end (the comparison with the truth would not be exact: pick another seed).
pub fn scenario_ending_now(
    mut cfg: shopify_sim::ScenarioConfig,
    quiet_ms: i64,
) -> anyhow::Result<shopify_sim::Scenario> {
    cfg.start = format!("now-{}d", cfg.days);
    let cfg = cfg.resolve_start(chrono::Utc::now())?;
    let sc = scenario(&cfg)?;
    let due = lapses_due_after_end(&sc, quiet_ms);
    anyhow::ensure!(
        due == 0,
        "seed {}: {due} lapses due within {quiet_ms} ms after the timeline's end; pick another seed",
        cfg.seed
    );
    Ok(sc)
}

/// How many customers' lapses come due in `(end, end + quiet_ms]`: timers that would fire
/// during a run on the wall clock although the truth ends at the timeline's end.
pub fn lapses_due_after_end(sc: &shopify_sim::Scenario, quiet_ms: i64) -> usize {
    let Some(end) = rfc3339_ms(&sc.expected.timeline_end) else {
        return 0;
    };
    let lapse_ms = i64::from(sc.expected.rules.lapse_days) * 86_400_000;
    sc.expected
        .customers
        .values()
        .filter_map(|c| c.last_order_at.as_deref().and_then(rfc3339_ms))
        .filter(|last| (end..=end + quiet_ms).contains(&(last + lapse_ms)))
        .count()
}

/// Sends deliveries to ingest one at a time (in order, so the log is in the scenario's order)
/// with Shopify's retry semantics and enough retries to ride out a restart of ingest or of
/// the broker.
///
/// # Errors
/// When a delivery fails for good.
pub async fn send_all(
    url: &str,
    deliveries: Vec<shopify_sim::Delivery>,
    rate_per_sec: f64,
) -> anyhow::Result<shopify_sim::SendReport> {
    let mut o = shopify_sim::SendOptions::new(url, SECRET);
    o.rate_per_sec = rate_per_sec;
    o.concurrency = 1;
    // Up to about five minutes of retries: a broker restart on a loaded CI machine (JVM start,
    // KRaft log recovery) can take far longer than on a quiet one, and Shopify itself keeps
    // retrying for hours.
    o.max_retries = 150;
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_secs(2);
    let report = shopify_sim::send(deliveries, o).await?;
    anyhow::ensure!(
        report.failed == 0,
        "{} deliveries failed for good: {:?}",
        report.failed,
        report.failed_webhook_ids
    );
    Ok(report)
}

/// Lets the timeline's last timers come due and waits until the stack has drained everything:
/// clock ticks past the timeline's end on the stream-time clock, the late-data hold's release
/// on the `inputs` clock.
///
/// # Panics
/// When it does not drain within four minutes.
#[allow(clippy::unwrap_used, clippy::print_stderr)]
pub async fn drain_past_timeline_end(stack: &Stack, sc: &shopify_sim::Scenario, started: Instant) {
    if stack.options.event_time_only {
        let end = rfc3339_ms(&sc.expected.timeline_end).unwrap();
        stack
            .produce_clock_ticks(end + TIMER_GRACE_MS + 1000, &sc.expected.shop_domain)
            .await
            .unwrap();
    } else {
        // The inputs clock: heartbeats move it, and the timers held by the late-data rule
        // fire once the late arrivals (a compressed timeline is all late) have settled.
        stack
            .wait_no_timer_held(Duration::from_secs(240))
            .await
            .unwrap();
    }
    stack.wait_drained(Duration::from_secs(240)).await.unwrap();
    eprintln!(
        "drained at {:?}; unexpected exits {:?}",
        started.elapsed(),
        stack.unexpected_exits()
    );
}

/// Ends a scenario run under a fault: lets the timeline's last timers come due, waits until
/// everything is drained, and asserts that Iterable equals `expected.json`.
///
/// # Panics
/// When the stack does not drain or the outcome differs (naming `fault`).
#[allow(clippy::unwrap_used, clippy::print_stderr)]
pub async fn finish_and_compare(
    stack: &Stack,
    sc: &shopify_sim::Scenario,
    report: &shopify_sim::SendReport,
    started: Instant,
    fault: &str,
) {
    eprintln!(
        "sent {} deliveries ({} retried attempts, statuses {:?})",
        report.sent, report.retried, report.status_counts
    );
    drain_past_timeline_end(stack, sc, started).await;
    let outcome = check_outcome(&sc.expected, stack.sim_state());
    eprintln!("{}", outcome.summary(60));
    assert!(
        outcome.mismatches.is_empty(),
        "Iterable differs from expected.json after {fault}:\n{}",
        outcome.summary(200)
    );
}
