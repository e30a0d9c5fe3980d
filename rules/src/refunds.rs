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

use crate::aggregate::{O_DELETED, O_TEST, OrderFact, P_RECENT_REFUND, RefundFact, State};
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

/// `order_refunded` for a refund seen for the first time.
pub(crate) fn announce(
    cx: &mut Cx<'_>,
    state: &mut State,
    order_id: u64,
    r: &RefundFact,
    note: Option<&str>,
    o: Option<&Order>,
) {
    let Some(fact) = state.orders.iter().find(|o| o.id == order_id) else {
        return;
    };
    if fact.has(O_TEST) || fact.has(O_DELETED) {
        return;
    }
    let mut f: DataFields = ltv::fact_fields(fact);
    if let Some(o) = o
        && let Some(n) = text(o.name.as_deref())
    {
        f.insert("order_name".into(), Value::String(n.to_owned()));
    }
    let amount = ltv::refund_amount(fact, r);
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
    if let Some(n) = text(note) {
        f.insert("note".into(), Value::String(n.to_owned()));
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
