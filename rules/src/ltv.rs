//! Lifetime value in shop currency, order count, average order value, first and last orders.
//!
//! An order counts when it is not a test, is not deleted, reached `paid`/`partially_paid` at
//! some point, and was not cancelled with nothing kept. Its value is what the shop kept: the
//! shop-money total minus successful refund transactions, floored at zero, and zero outright
//! once Shopify reports it `refunded` or `voided`. The figures are recomputed from the order
//! facts every time, so they never drift and do not depend on the order events arrived in.

use rust_decimal::Decimal;

use crate::aggregate::{
    FinStatus, O_CANCELLED, O_DELETED, O_KNOWN, O_PAID, O_TEST, OrderFact, RefundFact, State,
    keep_earliest,
};
use crate::format;

/// The lifetime figures of one person.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Σ kept value of counted orders, shop currency.
    pub value: Decimal,
    /// Counted orders.
    pub count: u32,
    /// First counted order (Unix ms).
    pub first_ms: Option<i64>,
    /// Last counted order (Unix ms) and its id.
    pub last: Option<(i64, u64)>,
}

impl Summary {
    /// Average order value, 2 dp (0 without orders).
    pub fn aov(&self) -> Decimal {
        if self.count == 0 {
            Decimal::ZERO
        } else {
            format::cents(self.value / Decimal::from(self.count))
        }
    }
}

/// One refund of an order in shop money; a presentment-only part uses the order's own rate.
pub fn refund_amount(o: &OrderFact, r: &RefundFact) -> Decimal {
    let converted = match (r.presentment, o.presentment_total) {
        (Some(p), Some(pt)) if !pt.is_zero() => p * o.total / pt,
        (Some(p), _) => p,
        (None, _) => Decimal::ZERO,
    };
    r.shop + converted
}

/// Σ refunds of an order in shop money.
pub fn refunded(o: &OrderFact) -> Decimal {
    o.refunds.iter().map(|r| refund_amount(o, r)).sum()
}

/// What the shop kept of an order.
pub fn kept(o: &OrderFact) -> Decimal {
    if matches!(o.status, FinStatus::Refunded | FinStatus::Voided) {
        return Decimal::ZERO;
    }
    (o.total - refunded(o)).max(Decimal::ZERO)
}

/// Whether an order may be sent as a purchase (paid at some point, real, not deleted).
pub fn purchasable(o: &OrderFact) -> bool {
    o.has(O_KNOWN) && o.has(O_PAID) && !o.has(O_TEST) && !o.has(O_DELETED)
}

/// Whether an order was a purchase while it existed: paid at some point, real, and placed
/// before any deletion. A deletion takes the order out of the figures from then on; what the
/// order did before (the first purchase it was, a tier it reached) stands, so the outcome is
/// the same whether a timer fired before the deletion arrived or after (a replay, a backlog).
/// A deletion of unknown time (state written before it was kept) counts from the placing.
pub fn was_purchase(o: &OrderFact) -> bool {
    o.has(O_KNOWN) && o.has(O_PAID) && !o.has(O_TEST) && deleted_after_placed(o).unwrap_or(true)
}

/// `Some(true)`: deleted after it was placed; `Some(false)`: deleted at or before (or at an
/// unknown time); `None`: not deleted.
fn deleted_after_placed(o: &OrderFact) -> Option<bool> {
    o.has(O_DELETED)
        .then(|| o.deleted_ms.is_some_and(|d| d > o.placed_ms))
}

/// Whether an order counts towards the lifetime figures.
pub fn counted(o: &OrderFact) -> bool {
    purchasable(o) && !(o.has(O_CANCELLED) && kept(o).is_zero())
}

/// One change of the lifetime figures on the business timeline.
pub(crate) struct Delta {
    /// When (Unix ms).
    pub at: i64,
    /// The order it belongs to.
    pub order_id: u64,
    /// Orders the deltas of one order at one instant: placed, refunds, final correction,
    /// deletion.
    step: u8,
    /// Change of the value.
    pub value: Decimal,
    /// Change of the count.
    pub count: i64,
}

/// The lifetime figures as a business-time timeline, in time order: each order that was a
/// purchase adds its total when placed, each refund subtracts when made, whatever the order's
/// final state adds or takes back (cancelled with nothing kept, refunded, voided) comes at its
/// end, and a deletion takes back what is left when it happens (refunds and a final state
/// after the deletion no longer count). Summing every delta gives [`summary`]'s value and
/// count.
pub(crate) fn deltas(state: &State) -> Vec<Delta> {
    let mut out = Vec::new();
    for o in state.orders.iter().filter(|o| was_purchase(o)) {
        let deleted = o.deleted_ms.filter(|_| o.has(O_DELETED));
        let before_deletion = |at: i64| deleted.is_none_or(|d| at < d);
        out.push(Delta {
            at: o.placed_ms,
            order_id: o.id,
            step: 0,
            value: o.total,
            count: 1,
        });
        let mut value = o.total;
        let mut count = 1;
        let mut end = o.placed_ms;
        for r in &o.refunds {
            end = end.max(r.at_ms);
            let at = r.at_ms.max(o.placed_ms);
            if !before_deletion(at) {
                continue;
            }
            let a = refund_amount(o, r);
            value -= a;
            out.push(Delta {
                at,
                order_id: o.id,
                step: 1,
                value: -a,
                count: 0,
            });
        }
        end = end.max(o.cancelled_ms.unwrap_or(end));
        if before_deletion(end) {
            // The final state as if never deleted (a deletion comes after it, below).
            let is_counted = !(o.has(O_CANCELLED) && kept(o).is_zero());
            let final_value = if is_counted { kept(o) } else { Decimal::ZERO };
            let (dv, dc) = (final_value - value, i64::from(is_counted) - 1);
            if !dv.is_zero() || dc != 0 {
                out.push(Delta {
                    at: end,
                    order_id: o.id,
                    step: 2,
                    value: dv,
                    count: dc,
                });
            }
            value += dv;
            count += dc;
        }
        if let Some(d) = deleted
            && (!value.is_zero() || count != 0)
        {
            out.push(Delta {
                at: d,
                order_id: o.id,
                step: 3,
                value: -value,
                count: -count,
            });
        }
    }
    out.sort_by_key(|d| (d.at, d.order_id, d.step));
    out
}

/// The lifetime value as it stood at `at_ms` on the business timeline (so an event about a
/// fact carries the same figure whatever arrived before or after it).
pub(crate) fn value_at(state: &State, at_ms: i64) -> Decimal {
    deltas(state)
        .iter()
        .take_while(|d| d.at <= at_ms)
        .map(|d| d.value)
        .sum()
}

/// The figures over every counted order.
pub fn summary(state: &State) -> Summary {
    let mut s = Summary::default();
    for o in state.orders.iter().filter(|o| counted(o)) {
        s.value += kept(o);
        s.count += 1;
        keep_earliest(&mut s.first_ms, o.placed_ms);
        if s.last.is_none_or(|l| (o.placed_ms, o.id) > l) {
            s.last = Some((o.placed_ms, o.id));
        }
    }
    s
}

/// Order event fields known from the fact alone (no payload at hand).
pub(crate) fn fact_fields(fact: &OrderFact) -> schemas::DataFields {
    let mut f = schemas::DataFields::new();
    f.insert(
        "order_id".into(),
        serde_json::Value::String(fact.id.to_string()),
    );
    f.insert("order_total".into(), format::money(fact.total));
    if fact.placed_ms != 0 {
        f.insert("placed_at".into(), format::date(fact.placed_ms));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, total: i64, flags: u16) -> OrderFact {
        OrderFact {
            id,
            placed_ms: id as i64,
            total: Decimal::new(total, 2),
            status: FinStatus::Paid,
            flags: flags | O_KNOWN,
            ..OrderFact::default()
        }
    }

    #[test]
    fn kept_and_counted() {
        let mut o = order(1, 10_000, O_PAID);
        o.refunds.push(RefundFact {
            id: 1,
            at_ms: 2,
            shop: Decimal::new(2_500, 2),
            presentment: None,
        });
        assert_eq!(kept(&o), Decimal::new(7_500, 2));
        o.flags |= O_CANCELLED;
        assert!(counted(&o), "cancelled but money kept still counts");
        o.status = FinStatus::Refunded;
        assert!(!counted(&o));
        let mut f = order(2, 10_000, O_PAID);
        f.presentment_total = Some(Decimal::new(9_200, 2));
        f.refunds.push(RefundFact {
            id: 2,
            at_ms: 3,
            shop: Decimal::ZERO,
            presentment: Some(Decimal::new(4_600, 2)),
        });
        assert_eq!(kept(&f), Decimal::new(5_000, 2));
        let st = State {
            orders: vec![order(3, 100, O_PAID | O_TEST), f, order(4, 100, 0)],
            ..State::default()
        };
        let s = summary(&st);
        assert_eq!(
            (s.value, s.count, s.last),
            (Decimal::new(5_000, 2), 1, Some((2, 2)))
        );
    }
}
