//! Table tests of the abandoned-checkout rule, with realistic payloads, through the in-memory engine.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use schemas::Action;
use serde_json::json;

#[test]
fn abandoned_checkout_fires_after_the_last_update_with_the_cart() {
    let mut h = Harness::default();
    checkout(&mut h, "tok1", 3001, Some(EMAIL), Some(C), T0);
    checkout(&mut h, "tok1", 3001, Some(EMAIL), Some(C), T0 + 30 * MIN);
    h.advance(T0 + 89 * MIN);
    assert!(h.events("checkout_abandoned").is_empty());
    h.advance(T0 + 90 * MIN);
    assert!(
        h.events("checkout_abandoned").is_empty(),
        "fires after the out-of-order grace"
    );
    h.advance(T0 + 95 * MIN);
    let ab = h.event_fields("checkout_abandoned");
    assert_eq!(ab.len(), 1);
    let f = &ab[0];
    assert_eq!(
        f["checkout_url"],
        json!(format!("https://{SHOP}/checkouts/tok1/recover"))
    );
    assert_eq!(num(&f["value"]), 483.0);
    assert_eq!(
        f["items"][0]["name"],
        json!("Salt & Pepper Grinder Set - Walnut")
    );
    assert_eq!(f["items"][0]["variant"], json!("Walnut"));
    assert_eq!(num(&f["items"][1]["price"]), 449.0);
    assert_eq!(f["item_count"], json!(2));
    assert_eq!(
        h.events("checkout_abandoned")[0].source_ids,
        vec![format!("co-tok1-{}", T0 + 30 * MIN)]
    );
    // updateCart kept Iterable's cart current (once per content change).
    let carts = h
        .commands
        .iter()
        .filter(|c| matches!(c.action, Action::UpdateCart { .. }))
        .count();
    assert_eq!(carts, 1);
    h.finish();
    assert_eq!(h.events("checkout_abandoned").len(), 1);
}

/// A `checkouts/update` reporting checkout `tokA` completed at `at`.
fn completion_update_tok_a(h: &mut Harness, at: i64) {
    let body = checkout_json(
        "tokA",
        3101,
        Some(EMAIL),
        Some(C),
        T0 - 5 * MIN,
        at,
        Some(at),
    );
    h.deliver(envelope(
        "checkouts/update",
        &body,
        &format!("co-done-{at}"),
        at,
    ));
}

/// A paid order carrying checkout `tokA`'s token (it completes that checkout).
fn order_completing_tok_a(h: &mut Harness, id: u64, at: i64) {
    let mut o = OrderSpec::new(id, Some(C), EMAIL, at, "483.00");
    o.checkout_token = Some("tokA".into());
    h.deliver(envelope("orders/paid", &o.json(), &format!("o-{id}"), at));
}

#[test]
fn abandoned_checkout_edge_cases() {
    // (name, what happens after the checkout's last update at T0, expected abandonment count)
    type Step = fn(&mut Harness);
    let cases: Vec<(&str, Step, usize)> = vec![
        (
            "completed_at",
            |h| completion_update_tok_a(h, T0 + 10 * MIN),
            0,
        ),
        (
            "order with its checkout_token",
            |h| order_completing_tok_a(h, 801, T0 + 20 * MIN),
            0,
        ),
        (
            "another order in between",
            |h| paid(h, 802, T0 + 40 * MIN, "20.00"),
            0,
        ),
        (
            "order after the due time",
            |h| paid(h, 803, T0 + 2 * HOUR, "20.00"),
            1,
        ),
        (
            "deleted before due (via the checkout key)",
            |h| {
                h.deliver(envelope(
                    "checkouts/delete",
                    &json!({"id": 3101, "cart_token": "cart-tokA", "presentment_currency": "USD"}),
                    "del",
                    T0 + 30 * MIN,
                ));
            },
            0,
        ),
        (
            "deleted after due",
            |h| {
                h.advance(T0 + 3 * HOUR);
                h.deliver(envelope(
                    "checkouts/delete",
                    &json!({"id": 3101, "cart_token": "cart-tokA"}),
                    "del",
                    T0 + 3 * HOUR,
                ));
            },
            1,
        ),
        (
            "order with its checkout_token 3 minutes after due (inside the grace)",
            |h| order_completing_tok_a(h, 804, T0 + 63 * MIN),
            1,
        ),
        (
            "completed_at update 2 minutes after due (inside the grace)",
            |h| completion_update_tok_a(h, T0 + 62 * MIN),
            1,
        ),
        (
            "buyer back 62 minutes later, then completes: the first quiet hour decided",
            |h| {
                checkout(h, "tokA", 3101, Some(EMAIL), Some(C), T0 + 62 * MIN);
                order_completing_tok_a(h, 805, T0 + 70 * MIN);
            },
            1,
        ),
        (
            "buyer back 50 minutes later, then completes: the clock restarted",
            |h| {
                checkout(h, "tokA", 3101, Some(EMAIL), Some(C), T0 + 50 * MIN);
                order_completing_tok_a(h, 806, T0 + 100 * MIN);
            },
            0,
        ),
        ("nothing", |_| {}, 1),
    ];
    for (name, step, expected) in cases {
        for timers_first in [true, false] {
            let mut h = Harness::default();
            h.timers_first = timers_first;
            checkout(&mut h, "tokA", 3101, Some(EMAIL), Some(C), T0);
            step(&mut h);
            h.finish();
            assert_eq!(
                h.events("checkout_abandoned").len(),
                expected,
                "{name} (timers_first={timers_first})"
            );
        }
    }
}

/// Shopify's 2026 checkout payloads carry no top-level `id` (only `name`, "#<id>"), while
/// `checkouts/delete` carries only `id` and `cart_token`: the person key must still link the
/// checkout key by the id in `name`, or the delete waits there forever and the deleted
/// checkout is abandoned (a guest whose create, without contact, came from an older
/// subscription: the soak of 2026-12-06 fired one such abandonment without faults).
#[test]
fn a_checkout_known_by_its_name_only_is_cancelled_by_its_delete() {
    for timers_first in [true, false] {
        let mut h = Harness::default();
        h.timers_first = timers_first;
        // The older subscription's create: id, no contact (a checkout key keeps nothing).
        let create = checkout_json("tokN", 3301, None, None, T0 - 5 * MIN, T0 - 5 * MIN, None);
        h.deliver(envelope(
            "checkouts/create",
            &create,
            "co-n-create",
            T0 - 5 * MIN,
        ));
        // The 2026 update with the email: no `id`, `name` = "#3301".
        let mut update = checkout_json("tokN", 3301, Some(EMAIL), None, T0 - 5 * MIN, T0, None);
        update.as_object_mut().unwrap().remove("id");
        h.deliver(envelope("checkouts/update", &update, "co-n-update", T0));
        h.deliver(envelope(
            "checkouts/delete",
            &json!({"id": 3301, "cart_token": "cart-tokN", "presentment_currency": "USD"}),
            "co-n-delete",
            T0 + 30 * MIN,
        ));
        h.finish();
        assert!(
            h.events("checkout_abandoned").is_empty(),
            "deleted before due, known by name only (timers_first={timers_first})"
        );
    }
}

#[test]
fn checkouts_without_contact_never_fire() {
    let mut h = Harness::default();
    let body = checkout_json("anon", 3201, None, None, T0, T0, None);
    h.deliver(envelope("checkouts/create", &body, "anon", T0));
    h.finish();
    assert!(h.commands.is_empty());
    assert!(h.timers.values().all(|m| m.is_empty()));
}

#[test]
fn guest_checkout_meets_its_order() {
    let guest = "guest@example.net";
    // Guest completed days later: the abandonment was due first, so it fires.
    let mut h = Harness::default();
    checkout(&mut h, "tokG", 3301, Some(guest), None, T0);
    let mut o = OrderSpec::new(901, None, guest, T0 + 2 * DAY, "483.00");
    o.checkout_token = Some("tokG".into());
    h.deliver(envelope("orders/paid", &o.json(), "o-901", T0 + 2 * DAY));
    h.finish();
    assert_eq!(h.events("checkout_abandoned").len(), 1);
    assert_eq!(h.purchases().len(), 1);
    assert_eq!(h.purchases()[0].user.email.as_deref(), Some(guest));

    // The guest logs in and orders as customer 77 before the due time: the order is on c/77,
    // the checkout on e/guest; the completion message suppresses the abandonment.
    let mut h = Harness::default();
    checkout(&mut h, "tokH", 3302, Some(guest), None, T0);
    let mut o = OrderSpec::new(902, Some(77), guest, T0 + 20 * MIN, "483.00");
    o.checkout_token = Some("tokH".into());
    h.deliver(envelope("orders/paid", &o.json(), "o-902", T0 + 20 * MIN));
    h.finish();
    assert!(h.events("checkout_abandoned").is_empty());
    assert!(h.forwards.iter().any(
        |(to, t)| to.ends_with("/e/guest@example.net") && t == "tillstream/checkout-completed"
    ));

    // Same, but a different checkout of the guest: "placed an order in between".
    let mut h = Harness::default();
    checkout(&mut h, "tokI", 3303, Some(guest), None, T0);
    h.deliver(envelope(
        "orders/paid",
        &OrderSpec::new(903, Some(77), guest, T0 + 20 * MIN, "10.00").json(),
        "o-903",
        T0 + 20 * MIN,
    ));
    h.finish();
    assert!(h.events("checkout_abandoned").is_empty());
}
