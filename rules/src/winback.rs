//! Win-back: `customer_lapsed` after `lapse_days` without a paid order, `customer_reactivated`
//! on the next one.
//!
//! A `winback` timer is due `lapse_days` after the last counted order's `processed_at` and is
//! re-armed whenever that changes. A new order placed after the due time also closes the lapse
//! inline (announcing it first if the timer has not fired yet), so the outcome does not depend
//! on whether the engine fires the timer before or after processing the order that passed it.

use schemas::DataFields;
use serde_json::{Value, json};

use crate::aggregate::{Lapse, State};
use crate::domain::Timer;
use crate::emit::{Cx, Kind};
use crate::ids;
use crate::ltv::{self, Summary};
use crate::{format, profile};

/// Timer kind and id.
pub(crate) const WINBACK_TIMER: &str = "winback";

const DAY_MS: i64 = 86_400_000;

fn lapse_ms(cx: &Cx<'_>) -> i64 {
    i64::from(cx.cfg.winback.lapse_days) * DAY_MS
}

/// Re-arms the timer and handles reactivation after the figures changed.
pub(crate) fn derive(cx: &mut Cx<'_>, state: &mut State, before: &Summary, after: &Summary) {
    if !cx.cfg.winback.enabled || before.last == after.last {
        return;
    }
    let lapse = lapse_ms(cx);
    let Some((t, order_id)) = after.last else {
        cx.cancel_timer(WINBACK_TIMER.into());
        return;
    };
    if let Some((bt, bid)) = before.last
        && t >= bt + lapse
        && state.person.as_ref().is_some_and(|p| p.lapse.is_none())
    {
        // The timer for the previous order was due before this order: the lapse happened.
        announce_lapse(cx, state, before, bid, bt + lapse);
    }
    if let Some(l) = state.person.as_ref().and_then(|p| p.lapse)
        && l.order_id != order_id
        && t > l.due_ms - lapse
    {
        if let Some(p) = state.person.as_deref_mut() {
            p.lapse = None;
        }
        if t >= l.due_ms {
            let mut f = DataFields::new();
            f.insert("order_id".into(), Value::String(order_id.to_string()));
            f.insert(
                "days_since_previous_order".into(),
                Value::from((t - (l.due_ms - lapse)).div_euclid(DAY_MS)),
            );
            f.insert("lifetime_value".into(), format::money(after.value));
            f.insert("average_order_value".into(), format::money(after.aov()));
            f.insert("orders_count".into(), Value::from(after.count));
            let name = cx.cfg.events.customer_reactivated.clone();
            let id = ids::command_id(
                cx.shop(),
                "customer-reactivated",
                &[&ids::subject(cx.key), &order_id.to_string()],
            );
            cx.event(Kind::Reactivated, &name, id, t, f);
        }
    }
    cx.set_timer(
        WINBACK_TIMER,
        WINBACK_TIMER.into(),
        t + lapse,
        json!({ "last_order_id": order_id.to_string(), "last_order_ms": t }),
    );
}

fn announce_lapse(cx: &mut Cx<'_>, state: &mut State, s: &Summary, order_id: u64, due: i64) {
    let cfg = cx.cfg;
    let Some(p) = state.person.as_deref_mut() else {
        return;
    };
    p.lapse = Some(Lapse {
        order_id,
        due_ms: due,
    });
    let mut f = DataFields::new();
    f.insert("lifetime_value".into(), format::money(s.value));
    f.insert("average_order_value".into(), format::money(s.aov()));
    f.insert("orders_count".into(), Value::from(s.count));
    f.insert(
        "days_since_last_order".into(),
        Value::from(cfg.winback.lapse_days),
    );
    f.insert("last_order_id".into(), Value::String(order_id.to_string()));
    if let Some((t, _)) = s.last {
        f.insert("last_order_at".into(), format::date(t));
    }
    f.insert(
        "tier".into(),
        Value::String(profile::tier_name(cfg, p.tier).to_owned()),
    );
    if let Some(c) = p.currency.as_deref() {
        f.insert("currency".into(), Value::String(c.to_owned()));
    }
    let name = cfg.events.customer_lapsed.clone();
    let id = ids::command_id(
        cx.shop(),
        "customer-lapsed",
        &[&ids::subject(cx.key), &order_id.to_string()],
    );
    cx.event(Kind::Lapsed, &name, id, due, f);
}

/// The timer fired: lapse unless a newer order re-armed it (then this firing is stale).
pub(crate) fn fire(cx: &mut Cx<'_>, state: &mut State, timer: &Timer) {
    if !cx.cfg.winback.enabled {
        return;
    }
    let s = ltv::summary(state);
    let Some((t, order_id)) = s.last else { return };
    let armed_for = timer
        .payload
        .get("last_order_ms")
        .and_then(serde_json::Value::as_i64);
    if armed_for != Some(t)
        || state
            .person
            .as_ref()
            .is_some_and(|p| p.lapse.is_some_and(|l| l.order_id == order_id))
    {
        return;
    }
    let due = t + lapse_ms(cx);
    announce_lapse(cx, state, &s, order_id, due);
}
