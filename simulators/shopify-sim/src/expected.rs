//! Expected outcome (ground truth) of a run, computed from the timeline's truth ledger.
//!
//! The rules are documented in the crate docs and README; they are evaluated on the
//! final state of each order, which agrees with real-time evaluation because the
//! generator cancels and deletes orders within days while lapses are months away. The
//! exceptions are what happened before an order was taken back: the first purchase, the
//! tiers it reached and the reactivation it was.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::{ScenarioConfig, TruthRules};
use crate::delivery::{Delivery, DeliveryKind};
use crate::expected_products::ProductsExpectation;
use crate::model::ts;
use crate::model::{Ts, money};
use crate::timeline::{CheckoutTruth, OrderTruth, PersonTruth, Timeline};

/// Ground truth for a whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedOutcome {
    /// Bumped when the shape changes.
    pub schema_version: u32,
    /// Seed of the run.
    pub seed: u64,
    /// Shop domain of the run.
    pub shop_domain: String,
    /// Currency of every amount below.
    pub shop_currency: String,
    /// First instant of the timeline (shop offset).
    pub timeline_start: String,
    /// End of the timeline; lapses due at or after it are not expected.
    pub timeline_end: String,
    /// Rule parameters the truth was computed with.
    pub rules: TruthRules,
    /// What the delivery stream contains.
    pub deliveries: DeliveryStats,
    /// Per person: registered customers keyed by decimal customer id, guests by
    /// `email:<lower-cased email>`.
    pub customers: BTreeMap<String, CustomerExpectation>,
    /// Checkouts with neither email nor phone: never attributable, must not fire.
    pub unattributed_checkouts: Vec<AbandonedCheckout>,
    /// Whether the run ends with `shop/redact`.
    pub shop_redacted: bool,
    /// The product catalogue and item enrichment (`[products] enabled` only; absent
    /// otherwise, so the default output is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<ProductsExpectation>,
}

/// Counts over the delivery stream (for ingest/dedupe assertions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStats {
    /// Deliveries in the stream, including duplicates.
    pub total: u64,
    /// Distinct `X-Shopify-Webhook-Id` values (= records after correct deduplication).
    pub unique_webhook_ids: u64,
    /// Distinct `X-Shopify-Event-Id` values.
    pub unique_event_ids: u64,
    /// Deliveries by [`DeliveryKind`].
    pub by_kind: BTreeMap<String, u64>,
    /// Distinct webhook ids per topic.
    pub by_topic: BTreeMap<String, u64>,
    /// Distinct webhook ids per API version.
    pub by_api_version: BTreeMap<String, u64>,
}

/// Why an abandoned-checkout message must not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotFireReason {
    /// The checkout completed at or before the due time.
    Completed,
    /// The same person placed a (non-test) order between checkout creation and due time.
    OrderedInBetween,
    /// `checkouts/delete` arrived at or before the due time.
    Deleted,
    /// The checkout never had an email or phone.
    NoContact,
    /// The due time falls at or after the end of the timeline.
    DueAfterEnd,
}

/// An abandoned-checkout decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonedCheckout {
    /// Checkout `token`.
    pub token: String,
    /// When the abandonment is due (last update before the deadline + abandon_after_minutes).
    pub due_at: String,
    /// Set for checkouts that must not fire.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<NotFireReason>,
}

/// Per-order truth, for debugging mismatches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderExpectation {
    /// Order id.
    pub id: u64,
    /// `processed_at` (shop offset).
    pub processed_at: String,
    /// Money kept in shop currency (2 dp); `0.00` when excluded.
    pub value: String,
    /// Counted in `orders_count`, first/last order and lapses.
    pub counted: bool,
    /// Test order.
    pub test: bool,
    /// Deleted via `orders/delete`.
    pub deleted: bool,
    /// Cancelled.
    pub cancelled: bool,
    /// Ever reached `paid`.
    pub paid: bool,
}

/// Ground truth for one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerExpectation {
    /// Shopify customer id (absent for guests).
    pub customer_id: Option<u64>,
    /// Guest (never registered; orders carry only `email`).
    pub guest: bool,
    /// Final email as last sent by Shopify (original case).
    pub email: String,
    /// Final email marketing consent state (`subscribed`, …); null for guests.
    pub email_consent: Option<String>,
    /// Final SMS consent state; null without a phone.
    pub sms_consent: Option<String>,
    /// Whether `customers/redact` was delivered for this customer.
    pub redacted: bool,
    /// When the redact was triggered.
    pub redacted_at: Option<String>,
    /// Lifetime value in shop currency, 2 dp.
    pub lifetime_value: String,
    /// Counted orders.
    pub orders_count: u32,
    /// First counted order's `processed_at`.
    pub first_order_at: Option<String>,
    /// Last counted order's `processed_at`.
    pub last_order_at: Option<String>,
    /// First non-test order to reach `paid` (by paid time), even if later cancelled.
    pub first_purchase_order_id: Option<u64>,
    /// Tier: the highest reached at any time (tiers are kept by default), or from the
    /// final value and count when `rules.refunds_can_downgrade`.
    pub tier: String,
    /// Highest lifetime value at any moment (refunds and cancellations lower it later).
    pub peak_lifetime_value: String,
    /// Due times of `customer_lapsed` events.
    pub lapses: Vec<String>,
    /// `processed_at` of the first counted order after each lapse, and of each order placed
    /// after a lapse that counted when paid and was taken back later (deleted, or cancelled
    /// and refunded in full): a reactivation announced stands.
    pub reactivations: Vec<String>,
    /// Abandoned checkouts whose message must fire, with due time.
    pub abandoned_checkouts_must_fire: Vec<AbandonedCheckout>,
    /// Checkouts whose abandonment message must not fire, with reason.
    pub abandoned_checkouts_must_not_fire: Vec<AbandonedCheckout>,
    /// All orders with their contribution.
    pub orders: Vec<OrderExpectation>,
}

/// Money kept on an order (cents) if it contributes to LTV at all.
fn order_value(o: &OrderTruth) -> Option<i64> {
    if o.test || o.deleted || o.paid_at.is_none() {
        return None;
    }
    Some((o.total_shop - o.refunded_shop).max(0))
}

fn order_counted(o: &OrderTruth) -> bool {
    order_value(o).is_some() && !(o.cancelled && o.refunded_shop >= o.total_shop)
}

/// Index of the highest tier reached (0 = base tier, i = `tiers[i-1]`).
fn tier_index(rules: &TruthRules, ltv_cents: i64, orders: u32) -> usize {
    let ltv = Decimal::new(ltv_cents, 2);
    rules
        .tiers
        .iter()
        .enumerate()
        .rev()
        .find(|(_, t)| {
            t.min_spend.is_none_or(|m| ltv >= m) && t.min_orders.is_none_or(|n| orders >= n)
        })
        .map_or(0, |(i, _)| i + 1)
}

fn tier_name(rules: &TruthRules, idx: usize) -> String {
    idx.checked_sub(1)
        .and_then(|i| rules.tiers.get(i))
        .map_or_else(|| rules.base_tier.clone(), |t| t.name.clone())
}

/// Replay a person's money and counted-order changes in time order; returns the highest
/// tier index reached and the peak lifetime value.
fn peak(rules: &TruthRules, orders: &[OrderTruth]) -> (usize, i64) {
    let mut events: Vec<(Ts, i64, i32)> = Vec::new();
    for o in orders.iter().filter(|o| !o.test) {
        let Some(paid) = o.paid_at else { continue };
        if o.deleted_at.is_some_and(|d| d <= paid) {
            continue;
        }
        events.push((paid, o.total_shop, 1));
        let mut refunded = 0;
        for (t, amount) in &o.refunds {
            if o.deleted_at.is_some_and(|d| *t >= d) {
                continue;
            }
            events.push((*t, -amount, 0));
            refunded += amount;
        }
        let cancelled_full = o.cancelled && o.refunded_shop >= o.total_shop;
        let uncounted_at = if cancelled_full { o.cancelled_at } else { None };
        if let Some(c) = uncounted_at.filter(|c| o.deleted_at.is_none_or(|d| *c < d)) {
            events.push((c, 0, -1));
        }
        if let Some(d) = o.deleted_at {
            let still_counted = uncounted_at.is_none_or(|c| c >= d);
            events.push((
                d,
                -(o.total_shop - refunded),
                if still_counted { -1 } else { 0 },
            ));
        }
    }
    events.sort_by_key(|e| e.0);
    let (mut ltv, mut count, mut best, mut peak_ltv) = (0i64, 0i32, 0usize, 0i64);
    for (_, dv, dc) in events {
        ltv += dv;
        count += dc;
        peak_ltv = peak_ltv.max(ltv);
        best = best.max(tier_index(rules, ltv, count.max(0) as u32));
    }
    (best, peak_ltv)
}

/// Lapses (due times) and reactivations (`processed_at`) of one person.
///
/// A lapse is due `lapse` after a counted order unless the next counted order comes at or
/// before it. The next counted order after a lapse reactivates, and so does an order placed
/// after a lapse that counted when it was paid and stopped counting later (deleted, or
/// cancelled and refunded in full): what it did before then stands, as a sent event cannot
/// be taken back. The generator takes such orders back within days, long before the lapse
/// they leave behind is due again, so the lapse itself is the counted orders' one.
fn winback(
    orders: &[OrderTruth],
    counted: &[&OrderTruth],
    lapse: Duration,
    horizon: Ts,
) -> (Vec<String>, Vec<String>) {
    let mut lapses = Vec::new();
    let mut reactivations = Vec::new();
    for (i, o) in counted.iter().enumerate() {
        let due = o.processed_at + lapse;
        let next = counted.get(i + 1).map(|n| n.processed_at);
        if next.is_some_and(|n| n <= due) || due >= horizon {
            continue;
        }
        lapses.push((due, ts(due)));
        if let Some(n) = next {
            reactivations.push((n, ts(n)));
        }
    }
    for o in orders.iter().filter(|o| counted_then_taken_back(o)) {
        let previous = counted
            .iter()
            .map(|c| c.processed_at)
            .filter(|t| *t < o.processed_at)
            .max();
        if previous.is_some_and(|t| t + lapse < o.processed_at && t + lapse < horizon) {
            reactivations.push((o.processed_at, ts(o.processed_at)));
        }
    }
    reactivations.sort();
    let strings = |v: Vec<(Ts, String)>| v.into_iter().map(|(_, s)| s).collect();
    (strings(lapses), strings(reactivations))
}

/// A real order that counted once it was paid and no longer counts: deleted after its
/// payment, or cancelled and refunded in full.
fn counted_then_taken_back(o: &OrderTruth) -> bool {
    let Some(paid) = o.paid_at else { return false };
    !o.test && !order_counted(o) && o.deleted_at.is_none_or(|d| d > paid)
}

/// Due time of a checkout: each update received before the deadline re-arms it. The
/// completing update is not an "update" for this purpose (completion is judged apart).
fn checkout_due(c: &CheckoutTruth, after: Duration) -> Option<Ts> {
    let mut updates = c
        .updates
        .iter()
        .copied()
        .filter(|u| c.completed_at.is_none_or(|done| *u < done));
    let mut due = updates.next()? + after;
    for u in updates {
        if u < due {
            due = u + after;
        } else {
            break;
        }
    }
    Some(due)
}

fn judge_checkout(
    c: &CheckoutTruth,
    orders: &[OrderTruth],
    after: Duration,
    end: Ts,
) -> AbandonedCheckout {
    let created = c.updates.first().copied();
    let due = checkout_due(c, after).or(created);
    let due_s = due.map(ts).unwrap_or_default();
    let reason = match (created, due) {
        (Some(created), Some(due)) => {
            if !c.contact {
                Some(NotFireReason::NoContact)
            } else if c.completed_at.is_some_and(|t| t <= due) {
                Some(NotFireReason::Completed)
            } else if c.deleted_at.is_some_and(|t| t <= due) {
                Some(NotFireReason::Deleted)
            } else if orders
                .iter()
                .any(|o| !o.test && o.processed_at >= created && o.processed_at <= due)
            {
                Some(NotFireReason::OrderedInBetween)
            } else if due >= end {
                Some(NotFireReason::DueAfterEnd)
            } else {
                None
            }
        }
        _ => Some(NotFireReason::NoContact),
    };
    AbandonedCheckout {
        token: c.token.clone(),
        due_at: due_s,
        reason,
    }
}

fn person(cfg: &ScenarioConfig, p: &PersonTruth, end: Ts) -> CustomerExpectation {
    let rules = &cfg.rules;
    let ltv: i64 = p.orders.iter().filter_map(order_value).sum();
    let (peak_tier, peak_ltv) = peak(rules, &p.orders);
    let mut counted: Vec<&OrderTruth> = p.orders.iter().filter(|o| order_counted(o)).collect();
    counted.sort_by_key(|o| o.processed_at);
    let first_purchase = p
        .orders
        .iter()
        .filter(|o| !o.test)
        .filter_map(|o| o.paid_at.map(|t| (t, o.id)))
        .min()
        .map(|(_, id)| id);

    let lapse = Duration::days(i64::from(rules.lapse_days));
    let horizon = p.redacted_at.map_or(end, |r| r.min(end));
    let (lapses, reactivations) = winback(&p.orders, &counted, lapse, horizon);

    let after = Duration::minutes(i64::from(rules.abandon_after_minutes));
    let mut fire = Vec::new();
    let mut no_fire = Vec::new();
    for c in &p.checkouts {
        let j = judge_checkout(c, &p.orders, after, end);
        if j.reason.is_some() {
            no_fire.push(j);
        } else {
            fire.push(j);
        }
    }

    let orders = p
        .orders
        .iter()
        .map(|o| OrderExpectation {
            id: o.id,
            processed_at: ts(o.processed_at),
            value: money(order_value(o).unwrap_or(0)),
            counted: order_counted(o),
            test: o.test,
            deleted: o.deleted,
            cancelled: o.cancelled,
            paid: o.paid_at.is_some(),
        })
        .collect();

    CustomerExpectation {
        customer_id: p.customer_id,
        guest: p.customer_id.is_none(),
        email: p.email.clone(),
        email_consent: p.email_consent.map(|s| s.as_str().to_owned()),
        sms_consent: p.sms_consent.map(|s| s.as_str().to_owned()),
        redacted: p.redacted_at.is_some(),
        redacted_at: p.redacted_at.map(ts),
        lifetime_value: money(ltv),
        orders_count: counted.len() as u32,
        first_order_at: counted.first().map(|o| ts(o.processed_at)),
        last_order_at: counted.last().map(|o| ts(o.processed_at)),
        first_purchase_order_id: first_purchase,
        tier: tier_name(
            rules,
            if rules.refunds_can_downgrade {
                tier_index(rules, ltv, counted.len() as u32)
            } else {
                peak_tier.max(tier_index(rules, ltv, counted.len() as u32))
            },
        ),
        peak_lifetime_value: money(peak_ltv),
        lapses,
        reactivations,
        abandoned_checkouts_must_fire: fire,
        abandoned_checkouts_must_not_fire: no_fire,
        orders,
    }
}

fn stats(deliveries: &[Delivery]) -> DeliveryStats {
    let mut webhook_ids = BTreeSet::new();
    let mut event_ids = BTreeSet::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_topic: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_version: BTreeMap<String, u64> = BTreeMap::new();
    for d in deliveries {
        let kind = match d.kind {
            DeliveryKind::Original => "original",
            DeliveryKind::Duplicate => "duplicate",
            DeliveryKind::SecondSubscription => "second_subscription",
            DeliveryKind::StaleRetry => "stale_retry",
        };
        *by_kind.entry(kind.to_owned()).or_default() += 1;
        event_ids.insert(d.event_id.as_str());
        if webhook_ids.insert(d.webhook_id.as_str()) {
            *by_topic.entry(d.topic.clone()).or_default() += 1;
            *by_version.entry(d.api_version.clone()).or_default() += 1;
        }
    }
    DeliveryStats {
        total: deliveries.len() as u64,
        unique_webhook_ids: webhook_ids.len() as u64,
        unique_event_ids: event_ids.len() as u64,
        by_kind,
        by_topic,
        by_api_version: by_version,
    }
}

/// Compute the expected outcome of a generated timeline and its delivery stream.
pub(crate) fn compute(
    cfg: &ScenarioConfig,
    tl: &Timeline,
    deliveries: &[Delivery],
) -> ExpectedOutcome {
    let customers = tl
        .people
        .iter()
        .map(|p| (p.key.clone(), person(cfg, p, tl.end)))
        .collect();
    let after = Duration::minutes(i64::from(cfg.rules.abandon_after_minutes));
    let unattributed = tl
        .unattributed
        .iter()
        .map(|c| judge_checkout(c, &[], after, tl.end))
        .collect();
    ExpectedOutcome {
        schema_version: 1,
        seed: cfg.seed,
        shop_domain: cfg.shop_domain.clone(),
        shop_currency: cfg.shop_currency.clone(),
        timeline_start: ts(tl.start),
        timeline_end: ts(tl.end),
        rules: cfg.rules.clone(),
        deliveries: stats(deliveries),
        customers,
        unattributed_checkouts: unattributed,
        shop_redacted: cfg.shop_redact,
        products: crate::expected_products::compute(&cfg.shop_domain, tl),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration};

    use super::{OrderTruth, Ts, winback};

    fn day(n: i64) -> Ts {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00+00:00").unwrap() + Duration::days(n)
    }

    fn paid(id: u64, on: i64) -> OrderTruth {
        OrderTruth {
            id,
            processed_at: day(on),
            paid_at: Some(day(on)),
            test: false,
            cancelled: false,
            cancelled_at: None,
            deleted: false,
            deleted_at: None,
            total_shop: 5_000,
            refunded_shop: 0,
            refunds: Vec::new(),
        }
    }

    fn expect(orders: &[OrderTruth]) -> (Vec<String>, Vec<String>) {
        let counted: Vec<&OrderTruth> = orders.iter().filter(|o| super::order_counted(o)).collect();
        winback(orders, &counted, Duration::days(90), day(1_000))
    }

    #[test]
    fn an_order_after_a_lapse_reactivates_even_when_taken_back_later() {
        let mut deleted = paid(2, 120);
        deleted.deleted = true;
        deleted.deleted_at = Some(day(123));
        let mut refunded = paid(3, 150);
        refunded.cancelled = true;
        refunded.cancelled_at = Some(day(151));
        refunded.refunded_shop = 5_000;
        let (lapses, reactivations) = expect(&[paid(1, 0), deleted, refunded, paid(4, 200)]);
        assert_eq!(lapses, vec![super::ts(day(90)), super::ts(day(290))]);
        assert_eq!(
            reactivations,
            vec![
                super::ts(day(120)),
                super::ts(day(150)),
                super::ts(day(200))
            ]
        );
    }

    #[test]
    fn an_order_that_never_counted_reactivates_nothing() {
        let mut test = paid(2, 120);
        test.test = true;
        let mut deleted_unpaid = paid(3, 130);
        deleted_unpaid.paid_at = None;
        deleted_unpaid.deleted = true;
        deleted_unpaid.deleted_at = Some(day(131));
        let mut deleted_before_payment = paid(4, 140);
        deleted_before_payment.deleted = true;
        deleted_before_payment.paid_at = Some(day(142));
        deleted_before_payment.deleted_at = Some(day(141));
        let (lapses, reactivations) =
            expect(&[paid(1, 0), test, deleted_unpaid, deleted_before_payment]);
        assert_eq!(lapses, vec![super::ts(day(90))]);
        assert!(reactivations.is_empty(), "{reactivations:?}");
    }
}
