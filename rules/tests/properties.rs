//! Property tests: duplicates change nothing, reordering within the out-of-order window gives
//! the same outcome, and replaying a log gives identical commands, ids included.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use schemas::{Action, IterableCommand, ShopifyEnvelope};
use serde_json::json;

const C: u64 = 7_513_594_000_123;
const EMAIL: &str = "ava.smith@example.org";
const GUEST: &str = "guest.buyer@example.net";

#[derive(Debug, Clone)]
struct OrderPlan {
    day: u32,
    minute: u32,
    cents: u32,
    pending_first: bool,
    fulfilled: bool,
    refund_pct: Option<u32>,
    cancel: bool,
    guest: bool,
    foreign: bool,
    checkout_minutes_before: Option<u32>,
    /// Minutes `processed_at` precedes `created_at` (0: equal).
    processed_minutes_before: u32,
    /// Optional fields some deliveries lack (bit i: the i-th delivery of the order, in log order):
    /// `processed_at` and line ids (low byte), `financial_status` (high byte); bit 7: the
    /// checkouts' numeric `id`.
    drops: u16,
}

#[derive(Debug, Clone)]
struct History {
    legacy: bool,
    orders: Vec<OrderPlan>,
    /// Checkouts nobody orders from: (day, minute, minutes from the first update to each
    /// later one, minutes after the first update at which a `completed_at` update arrives).
    abandoned: Vec<(u32, u32, Vec<u32>, Option<u32>)>,
    consents: Vec<(u32, u8)>,
}

fn order_plan() -> impl Strategy<Value = OrderPlan> {
    (
        (
            0u32..200,
            0u32..1440,
            500u32..300_000,
            any::<bool>(),
            any::<bool>(),
        ),
        (
            prop::option::of(10u32..=100),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.2),
        ),
        (prop::option::of(2u32..70), 0u32..30, any::<u16>()),
    )
        .prop_map(
            |(
                (day, minute, cents, pending_first, fulfilled),
                (refund_pct, cancel, guest, foreign),
                (checkout, processed_minutes_before, drops),
            )| OrderPlan {
                day,
                minute,
                cents,
                pending_first,
                fulfilled,
                refund_pct,
                cancel,
                guest,
                foreign,
                checkout_minutes_before: checkout,
                processed_minutes_before,
                drops,
            },
        )
}

/// Removes what real senders sometimes leave out: `processed_at`, `financial_status` (per the
/// plan's bits for the `n`-th delivery of an order), and the numeric ids of lines.
fn thin(mut body: serde_json::Value, drops: u16, n: u32) -> serde_json::Value {
    let m = body.as_object_mut().unwrap();
    if drops & (1 << n) != 0 {
        m.remove("processed_at");
        if let Some(lines) = m.get_mut("line_items").and_then(|l| l.as_array_mut()) {
            for l in lines {
                l.as_object_mut().unwrap().remove("id");
            }
        }
    }
    if drops & (1 << (8 + n)) != 0 {
        m.remove("financial_status");
    }
    body
}

fn history() -> impl Strategy<Value = History> {
    (
        any::<bool>(),
        prop::collection::vec(order_plan(), 0..5),
        prop::collection::vec(
            (
                0u32..200,
                0u32..1440,
                prop::collection::vec(1u32..140, 0..3),
                prop::option::weighted(0.3, 1u32..140),
            ),
            0..3,
        ),
        prop::collection::vec((0u32..200, 0u8..3), 0..3),
    )
        .prop_map(|(legacy, orders, abandoned, consents)| History {
            legacy,
            orders,
            abandoned,
            consents,
        })
}

fn money(cents: u64) -> &'static str {
    Box::leak(format!("{}.{:02}", cents / 100, cents % 100).into_boxed_str())
}

/// The clean, time-ordered log of a history.
fn log(h: &History) -> Vec<ShopifyEnvelope> {
    let mut ev: Vec<(i64, ShopifyEnvelope)> = Vec::new();
    let mut push = |t: i64, topic: &str, body: serde_json::Value, id: String| {
        let e = envelope(topic, &body, &id, t);
        ev.push((t, if h.legacy { legacy(e) } else { e }));
    };
    push(
        T0,
        "customers/create",
        customer_json(C, EMAIL, T0, T0, h.legacy),
        "cust-create".into(),
    );
    for (i, (day, state)) in h.consents.iter().enumerate() {
        let t = T0 + i64::from(*day) * DAY + 1000 * i as i64;
        let s = ["subscribed", "unsubscribed", "not_subscribed"][usize::from(*state)];
        push(
            t,
            "customers_email_marketing_consent/update",
            email_consent_json(C, EMAIL, s, t),
            format!("consent-{i}"),
        );
    }
    for (i, p) in h.orders.iter().enumerate() {
        let id = 5_000_000 + i as u64;
        let t = T0 + HOUR + i64::from(p.day) * DAY + i64::from(p.minute) * MIN;
        let total = money(u64::from(p.cents));
        let email = if p.guest { GUEST } else { EMAIL };
        let customer = (!p.guest).then_some(C);
        let token = format!("tok{i}");
        if let Some(before) = p.checkout_minutes_before {
            let start = t - i64::from(before) * MIN;
            for (at, topic, label) in [
                (start, "checkouts/create", "co-create"),
                (start + MIN, "checkouts/update", "co-upd"),
            ] {
                let mut body = checkout_json(
                    &token,
                    900 + i as u64,
                    Some(email),
                    customer,
                    start,
                    at,
                    None,
                );
                // Bit 7 (no order has that many deliveries): checkouts without their numeric id.
                if p.drops & (1 << 7) != 0 {
                    body.as_object_mut().unwrap().remove("id");
                }
                push(at, topic, body, format!("{label}-{i}"));
            }
        }
        let mut o = OrderSpec::new(id, customer, email, t, total);
        o.processed_offset = -i64::from(p.processed_minutes_before) * MIN;
        let mut n = 0u32;
        let mut thinned = |body: serde_json::Value| {
            n += 1;
            thin(body, p.drops, n - 1)
        };
        if p.foreign {
            o.presentment = Some(("EUR", money(u64::from(p.cents) * 92 / 100)));
        }
        o.checkout_token = p.checkout_minutes_before.map(|_| token.clone());
        let paid_at = if p.pending_first { t + 2 * HOUR } else { t };
        if p.pending_first {
            o.financial_status = "pending";
            push(
                t,
                "orders/create",
                thinned(o.json()),
                format!("o-create-{i}"),
            );
        }
        o.financial_status = "paid";
        o.updated = paid_at;
        if !p.pending_first {
            push(
                t,
                "orders/create",
                thinned(o.json()),
                format!("o-create-{i}"),
            );
        }
        push(
            paid_at,
            "orders/paid",
            thinned(o.json()),
            format!("o-paid-{i}"),
        );
        o.updated = paid_at + MIN;
        push(
            paid_at + MIN,
            "orders/updated",
            thinned(o.json()),
            format!("o-upd-{i}"),
        );
        let mut refunded = 0u64;
        if let Some(pct) = p.refund_pct {
            let amount = u64::from(p.cents) * u64::from(pct) / 100;
            refunded = amount;
            let at = paid_at + 3 * DAY;
            let (amt, cur, lines) = if p.foreign {
                (money(amount * 92 / 100), "EUR", Some(money(amount)))
            } else {
                (money(amount), "USD", None)
            };
            push(
                at,
                "refunds/create",
                refund_json(7_000 + i as u64 * 10, id, at, amt, cur, lines),
                format!("refund-{i}"),
            );
        }
        if p.fulfilled && !p.cancel {
            o.fulfillment_status = Some("fulfilled");
            o.updated = paid_at + DAY;
            push(
                paid_at + DAY,
                "orders/fulfilled",
                thinned(o.json()),
                format!("o-ful-{i}"),
            );
        }
        if p.cancel {
            let at = paid_at + 30 * MIN;
            let rest = u64::from(p.cents).saturating_sub(refunded);
            let r = refund_json(8_000 + i as u64 * 10, id, at, money(rest), "USD", None);
            o.updated = at;
            o.cancelled_at = Some(at);
            o.financial_status = "refunded";
            o.refunds = vec![r.clone()];
            push(at, "orders/cancelled", o.json(), format!("o-cancel-{i}"));
            push(at + 1000, "refunds/create", r, format!("refund-cancel-{i}"));
        }
    }
    for (i, (day, minute, later, completed)) in h.abandoned.iter().enumerate() {
        let t = T0 + i64::from(*day) * DAY + i64::from(*minute) * MIN + 7;
        let token = format!("ab{i}");
        let mut at: Vec<i64> = std::iter::once(0)
            .chain(later.iter().map(|m| i64::from(*m) * MIN))
            .map(|d| t + d)
            .collect();
        at.sort_unstable();
        at.dedup();
        for (j, u) in at.iter().enumerate() {
            let mut body = checkout_json(
                &token,
                800 + i as u64,
                Some(EMAIL),
                Some(C),
                t - MIN,
                *u,
                None,
            );
            // Each update changes the cart, as a buyer at work does.
            body["line_items"][0]["quantity"] = json!(j + 1);
            push(*u, "checkouts/update", body, format!("ab-{i}-{j}"));
        }
        if let Some(m) = completed {
            let c = t + i64::from(*m) * MIN + 3;
            push(
                c,
                "checkouts/update",
                checkout_json(
                    &token,
                    800 + i as u64,
                    Some(EMAIL),
                    Some(C),
                    t - MIN,
                    c,
                    Some(c),
                ),
                format!("ab-{i}-done"),
            );
        }
    }
    // Stable by time: the log as Shopify would ideally deliver it.
    ev.sort_by_key(|(t, _)| *t);
    ev.into_iter().map(|(_, e)| e).collect()
}

/// The delay a reordered delivery gets: `jitter`, cut so that it arrives at most 4 minutes
/// after its *business* time. An order processed before it was created (a POS or imported
/// order) is sent at its creation, already late for the decision it settles: the window is
/// about the business time (the engine's late-arrival rule covers the rest, processor tests
/// `late_data`), and this harness has no such rule.
fn within_window(e: &ShopifyEnvelope, jitter: i64) -> i64 {
    let sent = e.triggered_at_ms.unwrap_or(e.received_at_ms);
    let business = serde_json::from_slice::<serde_json::Value>(&e.body)
        .ok()
        .and_then(|b| b["processed_at"].as_str().map(str::to_owned))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map_or(sent, |t| t.timestamp_millis().min(sent));
    jitter.min((4 * MIN - (sent - business)).max(0))
}

fn run(log: &[ShopifyEnvelope], wall: Option<i64>) -> Harness {
    let mut h = Harness::default();
    h.wall = wall;
    for e in log {
        h.deliver(e.clone());
    }
    h.finish();
    h
}

/// What a journey sees: event ids (a re-send under the same id updates the one event in
/// Iterable), and each purchase's final content.
fn journeys(h: &Harness) -> (Vec<String>, BTreeMap<String, String>) {
    let mut ids: Vec<String> = Vec::new();
    let mut purchases = BTreeMap::new();
    for c in &h.commands {
        match &c.action {
            Action::TrackEvent { event_name, .. } => {
                ids.push(format!("{event_name}:{}", c.command_id))
            }
            Action::TrackPurchase { .. } => {
                purchases.insert(c.command_id.clone(), format!("{:?}", c.action));
            }
            _ => {}
        }
    }
    ids.sort();
    ids.dedup();
    (ids, purchases)
}

fn profiles(h: &Harness) -> BTreeMap<String, serde_json::Map<String, serde_json::Value>> {
    let keys: std::collections::BTreeSet<&str> =
        h.commands.iter().map(|c| c.customer_key.as_str()).collect();
    keys.into_iter()
        .map(|k| {
            (
                k.to_owned(),
                h.profile(k.trim_start_matches(&format!("{SHOP}/"))),
            )
        })
        .collect()
}

fn strip(cmds: &[IterableCommand]) -> Vec<String> {
    cmds.iter().map(|c| format!("{c:?}")).collect()
}

/// 48 cases per property by default (each case runs whole histories); `PROPTEST_CASES=N`
/// runs more when hunting for rare orderings.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 48;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// (a) A duplicated event changes nothing: same states, same commands in the same order.
    #[test]
    fn duplicates_change_nothing(h in history(), picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..6)) {
        let clean = log(&h);
        let mut dup = clean.clone();
        for (which, gap) in picks {
            let i = which.index(clean.len());
            // The copy arrives some time after the original (a retry or second subscription).
            let pos = dup.iter().position(|e| e.delivery_id == clean[i].delivery_id).unwrap();
            let at = pos + 1 + gap.index(dup.len() - pos);
            let copy = clean[i].clone();
            dup.insert(at.min(dup.len()), copy);
        }
        let a = run(&clean, None);
        let b = run(&dup, None);
        prop_assert_eq!(&a.states, &b.states);
        prop_assert_eq!(strip(&a.commands), strip(&b.commands));
    }

    /// (b) Any reordering within the out-of-order window (deliveries up to 4 minutes late, less
    /// than the 5-minute timer grace) gives the same final state, the same journey events and
    /// purchases, and the same profiles in Iterable.
    #[test]
    fn reordering_within_the_window_gives_the_same_outcome(h in history(), jitter in prop::collection::vec(0i64..=4 * MIN, 80)) {
        let clean = log(&h);
        let mut shuffled: Vec<(i64, usize, ShopifyEnvelope)> = clean
            .iter()
            .enumerate()
            .map(|(i, e)| (e.triggered_at_ms.unwrap() + within_window(e, jitter[i % jitter.len()]), i, e.clone()))
            .collect();
        shuffled.sort_by_key(|(arrival, i, _)| (*arrival, *i));
        let shuffled: Vec<ShopifyEnvelope> = shuffled.into_iter().map(|(_, _, e)| e).collect();
        let a = run(&clean, None);
        let b = run(&shuffled, None);
        prop_assert_eq!(&a.states, &b.states);
        prop_assert_eq!(journeys(&a), journeys(&b));
        prop_assert_eq!(profiles(&a), profiles(&b));
    }

    /// (c) Replaying a log gives identical commands, ids included (live and as a late replay).
    #[test]
    fn replay_gives_identical_commands(h in history()) {
        let l = log(&h);
        for wall in [None, Some(T0 + 400 * DAY)] {
            let a = run(&l, wall);
            let b = run(&l, wall);
            prop_assert_eq!(strip(&a.commands), strip(&b.commands));
            prop_assert_eq!(&a.states, &b.states);
            prop_assert_eq!(&a.reports, &b.reports);
        }
    }
}

#[test]
fn a_rich_history_exercises_every_rule() {
    let h = History {
        legacy: false,
        orders: vec![
            OrderPlan {
                day: 0,
                minute: 10,
                cents: 30_000,
                pending_first: true,
                fulfilled: true,
                refund_pct: Some(20),
                cancel: false,
                guest: false,
                foreign: false,
                checkout_minutes_before: Some(20),
                processed_minutes_before: 0,
                drops: 0,
            },
            OrderPlan {
                day: 150,
                minute: 0,
                cents: 90_000,
                pending_first: false,
                fulfilled: false,
                refund_pct: None,
                cancel: true,
                guest: false,
                foreign: true,
                checkout_minutes_before: None,
                processed_minutes_before: 0,
                drops: 0,
            },
            OrderPlan {
                day: 151,
                minute: 0,
                cents: 5_000,
                pending_first: false,
                fulfilled: false,
                refund_pct: Some(100),
                cancel: false,
                guest: true,
                foreign: false,
                checkout_minutes_before: Some(5),
                processed_minutes_before: 0,
                drops: 0,
            },
        ],
        abandoned: vec![(3, 100, vec![30], None)],
        consents: vec![(1, 0)],
    };
    let a = run(&log(&h), None);
    let (ids, purchases) = journeys(&a);
    for name in [
        "customer_created",
        "first_purchase",
        "vip_tier_upgraded",
        "customer_lapsed",
        "customer_reactivated",
        "checkout_abandoned",
        "order_fulfilled",
        "order_refunded",
        "order_cancelled",
    ] {
        assert!(
            ids.iter().any(|i| i.starts_with(&format!("{name}:"))),
            "{name} missing from {ids:#?}"
        );
    }
    assert_eq!(purchases.len(), 3);
    assert_eq!(
        a.profile(&format!("c/{C}"))["shopify_vip_tier"],
        json!("gold")
    );
}
