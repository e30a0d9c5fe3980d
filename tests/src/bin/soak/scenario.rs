//! The soak's load: the CI scenario's mix scaled to a delivery count, its timeline placed for the timer clock.

use crate::args::Clock;
use tests::{ci_scenario, lapses_due_after_end};

/// Generates the CI scenario's mix scaled to about `target` deliveries: the delivery count
/// grows with the number of customers, so a pilot run gives deliveries per customer, and one
/// correction step brings the count within a few percent.
///
/// With the production clock ([`Clock::Inputs`]) the timeline ends now: timers are due by the
/// same wall clock the heartbeats carry. Every timer due before the run ends then fires, and
/// `expected.json` knows nothing after the timeline's end, so the seed moves on (seed + 1, ...)
/// until no customer's lapse is due within `quiet_ms` after the end (as the alignment suite
/// picks its seed).
pub(crate) fn sized_scenario(
    seed: u64,
    target: usize,
    clock: Clock,
    quiet_ms: i64,
) -> anyhow::Result<(shopify_sim::ScenarioConfig, shopify_sim::Scenario)> {
    let mut cfg = ci_scenario();
    cfg.seed = seed;
    if clock == Clock::Inputs {
        cfg.start = format!("now-{}d", cfg.days);
    }
    let generate = |cfg: &shopify_sim::ScenarioConfig| {
        let cfg = cfg.resolve_start(chrono::Utc::now())?;
        let sc = shopify_sim::generate(&cfg)?;
        anyhow::Ok((cfg, sc))
    };
    let (mut resolved, mut sc) = generate(&cfg)?;
    for _ in 0..3 {
        let n = sc.deliveries.len().max(1);
        if (n as f64 - target as f64).abs() <= target as f64 * 0.03 {
            break;
        }
        let customers = (f64::from(cfg.customers) * target as f64 / n as f64).round() as u32;
        cfg.customers = customers.max(1);
        (resolved, sc) = generate(&cfg)?;
    }
    if clock == Clock::StreamTime {
        return Ok((resolved, sc));
    }
    for _ in 0..50 {
        if lapses_due_after_end(&sc, quiet_ms) == 0 {
            return Ok((resolved, sc));
        }
        cfg.seed += 1;
        (resolved, sc) = generate(&cfg)?;
    }
    anyhow::bail!(
        "no seed from {seed} to {} leaves {quiet_ms} ms after the timeline's end without a lapse due",
        cfg.seed
    )
}
