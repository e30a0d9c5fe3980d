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

use rust_decimal::Decimal;
use schemas::DataFields;
use serde_json::Value;

use crate::aggregate::State;
use crate::config::{RulesConfig, TierLevel};
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
    // (time, order id, step, Δvalue, Δcount); step orders the deltas of one order at one instant.
    let mut deltas: Vec<(i64, u64, u8, Decimal, i64)> = Vec::new();
    for o in state.orders.iter().filter(|o| ltv::purchasable(o)) {
        deltas.push((o.placed_ms, o.id, 0, o.total, 1));
        let mut refunded = Decimal::ZERO;
        let mut end = o.placed_ms;
        for r in &o.refunds {
            let a = ltv::refund_amount(o, r);
            refunded += a;
            end = end.max(r.at_ms);
            deltas.push((r.at_ms.max(o.placed_ms), o.id, 1, -a, 0));
        }
        end = end.max(o.cancelled_ms.unwrap_or(end));
        let counted = ltv::counted(o);
        let final_value = if counted { ltv::kept(o) } else { Decimal::ZERO };
        let dv = final_value - (o.total - refunded);
        let dc = i64::from(counted) - 1;
        if !dv.is_zero() || dc != 0 {
            deltas.push((end, o.id, 2, dv, dc));
        }
    }
    deltas.sort_by_key(|d| (d.0, d.1, d.2));
    let levels = &cfg.tiers.levels;
    let mut bits = 0u32;
    let mut crossings = vec![None; levels.len()];
    let (mut value, mut count) = (Decimal::ZERO, 0i64);
    for (at, order_id, _, dv, dc) in deltas {
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

/// Moves the tier after a change of the facts and announces newly reached tiers.
pub(crate) fn derive(cx: &mut Cx<'_>, state: &mut State, s: &Summary) {
    let cfg = cx.cfg;
    let (bits, crossings) = timeline(cfg, state);
    let now_tier = tier_for(cfg, s);
    let Some(p) = state.person.as_deref_mut() else {
        return;
    };
    let highest = u8::try_from(32 - bits.leading_zeros()).unwrap_or(0);
    p.tier = if cfg.tiers.refunds_can_downgrade {
        now_tier
    } else {
        p.tier.max(highest).max(now_tier)
    };
    let fresh = bits & !p.tiers_announced;
    p.tiers_announced |= bits;
    let currency = p.currency.clone();
    for (i, c) in crossings.iter().enumerate() {
        let bit = 1u32
            .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let (Some(c), true) = (c, fresh & bit != 0) else {
            continue;
        };
        let level = u8::try_from(i + 1).unwrap_or(u8::MAX);
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
