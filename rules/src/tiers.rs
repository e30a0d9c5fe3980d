//! VIP tiers: the highest configured level whose thresholds (spend and/or orders) are met.
//!
//! Tiers are evaluated over the business-time timeline of the order facts (each counted order
//! adds its total when placed, refunds subtract when made, a cancellation with nothing kept
//! takes the rest back when cancelled), not over the order in which events happened to arrive.
//! "Reached gold" is therefore a fact about the customer's history, and any arrival order of
//! the same events reaches the same tiers. Each tier reached is announced once in the life of
//! the customer with `vip_tier_upgraded` (a jump over several tiers announces each, lowest
//! first). `tiers.refunds_can_downgrade` decides whether the profile field follows the current
//! figures down, or keeps the highest tier reached.
//!
//! An announcement cannot be taken back, so it waits for its facts: reaching a tier arms a
//! timer at the crossing's business time, and the tier is announced when that timer fires, that
//! is once the engine knows every fact up to that time is in (a partial refund of an earlier
//! order, forwarded from the order's key, may still undo the crossing). The profile field, which
//! a later update can correct, moves at once.

use rust_decimal::Decimal;
use schemas::DataFields;
use serde_json::{Value, json};

use crate::aggregate::State;
use crate::config::{RulesConfig, TierLevel};
use crate::domain::Timer;
use crate::emit::{Cx, Kind};
use crate::ids;
use crate::ltv::{self, Summary};
use crate::{format, profile};

fn reached(l: &TierLevel, s: &Summary) -> bool {
    l.min_spend.is_none_or(|m| s.value >= m) && l.min_orders.is_none_or(|m| s.count >= m)
}

/// The tier the figures reach (0 = base tier, i = `levels[i-1]`).
pub(crate) fn tier_for(cfg: &RulesConfig, s: &Summary) -> u8 {
    cfg.tiers
        .levels
        .iter()
        .enumerate()
        .filter(|(_, l)| reached(l, s))
        .map(|(i, _)| u8::try_from(i + 1).unwrap_or(u8::MAX))
        .max()
        .unwrap_or(0)
}

/// Where a level was first reached on the timeline.
#[derive(Debug, Clone, Copy)]
struct Crossing {
    at: i64,
    order_id: u64,
    value: Decimal,
    count: u32,
}

/// Every level ever reached on the timeline (bit i = `levels[i]`) and where.
fn timeline(cfg: &RulesConfig, state: &State) -> (u32, Vec<Option<Crossing>>) {
    let deltas = ltv::deltas(state);
    let levels = &cfg.tiers.levels;
    let mut bits = 0u32;
    let mut crossings = vec![None; levels.len()];
    let (mut value, mut count) = (Decimal::ZERO, 0i64);
    for ltv::Delta {
        at,
        order_id,
        value: dv,
        count: dc,
        ..
    } in deltas
    {
        value += dv;
        count += dc;
        let s = Summary {
            value,
            count: u32::try_from(count).unwrap_or(0),
            first_ms: None,
            last: None,
        };
        for (i, l) in levels.iter().enumerate() {
            let bit = 1u32
                .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(0);
            if bits & bit == 0 && reached(l, &s) {
                bits |= bit;
                if let Some(c) = crossings.get_mut(i) {
                    *c = Some(Crossing {
                        at,
                        order_id,
                        value,
                        count: s.count,
                    });
                }
            }
        }
    }
    (bits, crossings)
}

/// Timer kind of a pending announcement; one timer per tier.
pub(crate) const TIER_TIMER: &str = "tier";

fn bit(i: usize) -> u32 {
    1u32.checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// `tier:001-silver`: timers due at one instant fire in id order, so a jump over several tiers
/// announces the lowest first.
fn timer_id(cfg: &RulesConfig, level: u8) -> String {
    format!("{TIER_TIMER}:{level:03}-{}", profile::tier_name(cfg, level))
}

/// Moves the tier after a change of the facts and arms (or moves, or cancels) the timers of
/// tiers reached but not announced yet.
pub(crate) fn derive(cx: &mut Cx<'_>, state: &mut State, s: &Summary) {
    let cfg = cx.cfg;
    let (bits, crossings) = timeline(cfg, state);
    let now_tier = tier_for(cfg, s);
    let Some(p) = state.person.as_deref_mut() else {
        return;
    };
    let highest = u8::try_from(32 - bits.leading_zeros()).unwrap_or(0);
    // The highest tier on the business timeline, not a maximum over what the state looked
    // like after each arrival: an order applied before the refund that precedes it must not
    // leave a tier the customer never held.
    p.tier = if cfg.tiers.refunds_can_downgrade {
        now_tier
    } else {
        highest.max(now_tier)
    };
    let mut armed = p.tiers_armed;
    for (i, c) in crossings.iter().enumerate() {
        let level = u8::try_from(i + 1).unwrap_or(u8::MAX);
        if p.tiers_announced & bit(i) != 0 {
            continue;
        }
        match c {
            Some(c) => {
                cx.set_timer(
                    TIER_TIMER,
                    timer_id(cfg, level),
                    c.at,
                    json!({ "level": level }),
                );
                armed |= bit(i);
            }
            // A later fact (a refund with an earlier business time) undid the crossing.
            None if armed & bit(i) != 0 => {
                cx.cancel_timer(timer_id(cfg, level));
                armed &= !bit(i);
            }
            None => {}
        }
    }
    p.tiers_armed = armed;
}

/// A tier's timer fired: every fact up to its crossing is in, so announce it if it still holds.
pub(crate) fn fire(cx: &mut Cx<'_>, state: &mut State, timer: &Timer) {
    let cfg = cx.cfg;
    let Some(level) = timer
        .payload
        .get("level")
        .and_then(Value::as_u64)
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| *l >= 1)
    else {
        return;
    };
    let i = usize::from(level - 1);
    let (_, crossings) = timeline(cfg, state);
    let Some(p) = state.person.as_deref_mut() else {
        return;
    };
    p.tiers_armed &= !bit(i);
    if p.tiers_announced & bit(i) != 0 {
        return;
    }
    // The crossing may have moved later (then `derive` re-armed the timer for it) or gone.
    let Some(Some(c)) = crossings.get(i).copied() else {
        return;
    };
    if cx.due_for(c.at) > timer.due_ms {
        return;
    }
    p.tiers_announced |= bit(i);
    let currency = p.currency.clone();
    {
        let mut f = DataFields::new();
        f.insert(
            "tier".into(),
            Value::String(profile::tier_name(cfg, level).to_owned()),
        );
        f.insert(
            "previous_tier".into(),
            Value::String(profile::tier_name(cfg, level - 1).to_owned()),
        );
        f.insert("lifetime_value".into(), format::money(c.value));
        f.insert("orders_count".into(), Value::from(c.count));
        f.insert("order_id".into(), Value::String(c.order_id.to_string()));
        if let Some(cur) = currency.as_deref() {
            f.insert("currency".into(), Value::String(cur.to_owned()));
        }
        let name = cfg.events.vip_tier_upgraded.clone();
        let id = ids::command_id(
            cx.shop(),
            "vip-tier-upgraded",
            &[&ids::subject(cx.key), profile::tier_name(cfg, level)],
        );
        cx.event(Kind::TierUpgraded, &name, id, c.at, f);
    }
}
