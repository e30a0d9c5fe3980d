//! Refunds: shop-money amounts, `order_refunded`, and the "recent refund" profile flag.
//!
//! The amount of a refund is the sum of its successful, non-test refund transactions. A
//! transaction in another currency than the shop's (multi-currency orders are refunded in the
//! buyer's currency) is never added as is: its `amount_set.shop_money` is used when present,
//! else the refund's line and shipping amounts in shop money, else it is kept in presentment
//! money and converted with the order's own shop/presentment ratio.

use rust_decimal::Decimal;
use schemas::DataFields;
use serde_json::{Value, json};

use crate::aggregate::{
    O_DELETED, O_TEST, OrderFact, P_RECENT_REFUND, PendingRefund, RefundFact, State,
};
use crate::domain::Timer;
use crate::emit::{Cx, Kind};
use crate::format::{self, text};
use crate::ids;
use crate::ltv;
use crate::shopify::{MoneySet, Order, Refund};

/// Timer kind that clears the recent-refund flag.
pub(crate) const RECENT_REFUND_TIMER: &str = "recent_refund";

/// A refund's money in shop currency; `None` when no money moved.
pub(crate) fn fact(
    r: &Refund,
    shop_currency: Option<&str>,
    fallback_ms: i64,
) -> Option<RefundFact> {
    // Refunded lines first, then transactions: the first money set that names a currency.
    let line_sets = r.refund_line_items.iter().map(|l| l.subtotal_set.as_ref());
    let txn_sets = r.transactions.iter().map(|t| t.amount_set.as_ref());
    let shop_cur = shop_currency
        .or_else(|| {
            line_sets
                .chain(txn_sets)
                .find_map(|s| s.and_then(MoneySet::shop_currency))
        })
        .map(str::to_owned);
    let mut shop = Decimal::ZERO;
    let mut foreign = Decimal::ZERO;
    for t in &r.transactions {
        let kind_ok = t
            .kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case("refund"));
        let ok = t
            .status
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case("success"));
        if !kind_ok || !ok || t.test == Some(true) {
            continue;
        }
        if let Some(s) = t.amount_set.as_ref().and_then(|s| s.shop()) {
            shop += s;
            continue;
        }
        let amount = t.amount.map(|m| m.0).unwrap_or_default();
        match (t.currency.as_deref(), shop_cur.as_deref()) {
            (Some(tc), Some(sc)) if !tc.eq_ignore_ascii_case(sc) => foreign += amount,
            _ => shop += amount,
        }
    }
    let mut presentment = None;
    if !foreign.is_zero() {
        let set = |s: &Option<crate::shopify::MoneySet>| {
            s.as_ref().and_then(|m| m.shop()).unwrap_or_default()
        };
        let lines: Decimal = r
            .refund_line_items
            .iter()
            .map(|l| set(&l.subtotal_set) + set(&l.total_tax_set))
            .sum::<Decimal>()
            + r.refund_shipping_lines
                .iter()
                .map(|l| set(&l.subtotal_amount_set) + set(&l.tax_amount_set))
                .sum::<Decimal>();
        if shop.is_zero() && lines > Decimal::ZERO {
            shop = lines;
        } else {
            presentment = Some(foreign);
        }
    }
    if shop.is_zero() && presentment.is_none() {
        return None;
    }
    let at = r.processed_at.or(r.created_at).map_or(fallback_ms, |t| t.0);
    Some(RefundFact {
        id: r.id.0,
        at_ms: at,
        shop,
        presentment,
    })
}

/// Adds a refund to its order; `false` if it was already there.
pub(crate) fn insert(o: &mut OrderFact, f: RefundFact) -> bool {
    match o.refunds.binary_search_by_key(&f.id, |r| r.id) {
        Ok(_) => false,
        Err(i) => {
            o.refunds.insert(i, f);
            true
        }
    }
}

/// `refunds/create` (forwarded by the order key to the customer who placed the order).
pub(crate) fn on_refund(cx: &mut Cx<'_>, state: &mut State, r: &Refund) {
    let Some(order_id) = r.order_id else { return };
    let currency = state.person.as_ref().and_then(|p| p.currency.clone());
    let Some(f) = fact(r, currency.as_deref(), cx.ctx.event_time_ms) else {
        return;
    };
    if insert(state.order_mut(order_id.0), f.clone()) {
        announce(cx, state, order_id.0, &f, r.note.as_deref(), None);
    }
}

/// Timer kind of a pending `order_refunded`.
pub(crate) const REFUND_TIMER: &str = "refund";

fn refund_timer_id(order_id: u64, refund_id: u64) -> String {
    format!("{REFUND_TIMER}:{order_id}:{refund_id}")
}

/// `order_refunded` for a refund seen for the first time: announced when its timer fires at
/// the refund's time, once every fact up to then is in, because the event carries the lifetime
/// value as of the refund (an order of the same person placed before it, still in flight from
/// another key, counts) and cannot be taken back.
pub(crate) fn announce(
    cx: &mut Cx<'_>,
    state: &mut State,
    order_id: u64,
    r: &RefundFact,
    note: Option<&str>,
    _o: Option<&Order>,
) {
    arm(
        cx,
        state,
        PendingRefund {
            order_id,
            refund_id: r.id,
            note: text(note).map(str::to_owned),
        },
        r.at_ms,
    );
}

/// Records a pending announcement and arms its timer (once per refund).
pub(crate) fn arm(cx: &mut Cx<'_>, state: &mut State, p: PendingRefund, at_ms: i64) {
    let person = state.person_mut();
    if person
        .refunds_pending
        .iter()
        .any(|x| (x.order_id, x.refund_id) == (p.order_id, p.refund_id))
    {
        return;
    }
    cx.set_timer(
        REFUND_TIMER,
        refund_timer_id(p.order_id, p.refund_id),
        at_ms,
        json!({ "order_id": p.order_id, "refund_id": p.refund_id }),
    );
    person.refunds_pending.push(p);
}

/// The pending announcements of `orders`, taken (their timers cancelled) to hand them over.
pub(crate) fn take_pending(
    cx: &mut Cx<'_>,
    state: &mut State,
    moved: impl Fn(u64) -> bool,
) -> Vec<PendingRefund> {
    let Some(person) = state.person.as_deref_mut() else {
        return Vec::new();
    };
    let (out, keep) = std::mem::take(&mut person.refunds_pending)
        .into_iter()
        .partition(|p| moved(p.order_id));
    person.refunds_pending = keep;
    for p in &out {
        cx.cancel_timer(refund_timer_id(p.order_id, p.refund_id));
    }
    out
}

/// A refund's timer fired: every fact up to the refund is in; announce it.
pub(crate) fn fire(cx: &mut Cx<'_>, state: &mut State, timer: &Timer) {
    let ids = |k: &str| timer.payload.get(k).and_then(Value::as_u64);
    let (Some(order_id), Some(refund_id)) = (ids("order_id"), ids("refund_id")) else {
        return;
    };
    let Some(person) = state.person.as_deref_mut() else {
        return;
    };
    let Some(i) = person
        .refunds_pending
        .iter()
        .position(|x| (x.order_id, x.refund_id) == (order_id, refund_id))
    else {
        return;
    };
    let pending = person.refunds_pending.remove(i);
    let Some(fact) = state.orders.iter().find(|o| o.id == order_id) else {
        return;
    };
    let Some(r) = fact.refunds.iter().find(|x| x.id == refund_id).cloned() else {
        return;
    };
    if fact.has(O_TEST) || fact.has(O_DELETED) {
        return;
    }
    let mut f: DataFields = ltv::fact_fields(fact);
    let amount = ltv::refund_amount(fact, &r);
    // Figures as of this refund on the business timeline, not as of whatever else has arrived:
    // the event must be the same in a live run, a backlog and a replay.
    let refunded_by_then: rust_decimal::Decimal = fact
        .refunds
        .iter()
        .filter(|x| (x.at_ms, x.id) <= (r.at_ms, r.id))
        .map(|x| ltv::refund_amount(fact, x))
        .sum();
    f.insert("refund_id".into(), Value::String(r.id.to_string()));
    f.insert("amount".into(), format::money(amount));
    f.insert("refunded_total".into(), format::money(refunded_by_then));
    f.insert(
        "fully_refunded".into(),
        Value::Bool(refunded_by_then >= fact.total),
    );
    if let Some(c) = state.person.as_ref().and_then(|p| p.currency.as_deref()) {
        f.insert("currency".into(), Value::String(c.to_owned()));
    }
    if let Some(n) = pending.note {
        f.insert("note".into(), Value::String(n));
    }
    f.insert(
        "lifetime_value".into(),
        format::money(ltv::value_at(state, r.at_ms)),
    );
    let name = cx.cfg.events.order_refunded.clone();
    let id = ids::command_id(
        cx.shop(),
        "order-refunded",
        &[&order_id.to_string(), &r.id.to_string()],
    );
    cx.event(Kind::OrderRefunded, &name, id, r.at_ms, f);
}

/// The latest refund with money on a real order.
fn last_refund_ms(state: &State) -> Option<i64> {
    state
        .orders
        .iter()
        .filter(|o| !o.has(O_TEST) && !o.has(O_DELETED))
        .flat_map(|o| o.refunds.iter().map(|r| r.at_ms))
        .max()
}

/// Keeps the recent-refund flag and its expiry timer in step with the refunds.
pub(crate) fn derive_recent(cx: &mut Cx<'_>, state: &mut State) {
    let window = i64::from(cx.cfg.refunds.recent_refund_days) * 86_400_000;
    let last = last_refund_ms(state);
    let Some(person) = state.person.as_deref_mut() else {
        return;
    };
    if person.last_refund_ms == last {
        return;
    }
    person.last_refund_ms = last;
    match last {
        Some(at) if window > 0 => {
            // Set even when the refund is already older than the window: the timer (due in the
            // past) clears it at once, so every processing order ends with the same profile.
            person.flags |= P_RECENT_REFUND;
            cx.set_timer(
                RECENT_REFUND_TIMER,
                RECENT_REFUND_TIMER.into(),
                at + window,
                json!({ "last_refund_ms": at }),
            );
        }
        _ => {
            person.flags &= !P_RECENT_REFUND;
            cx.cancel_timer(RECENT_REFUND_TIMER.into());
        }
    }
}

/// The recent-refund window ended (unless a newer refund re-armed it).
pub(crate) fn expire(state: &mut State, payload: &Value) {
    let armed_for = payload.get("last_refund_ms").and_then(Value::as_i64);
    if let Some(p) = state.person.as_deref_mut()
        && p.last_refund_ms.is_some()
        && p.last_refund_ms == armed_for
    {
        p.flags &= !P_RECENT_REFUND;
    }
}
