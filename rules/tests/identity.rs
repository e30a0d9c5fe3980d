//! Identity: one Iterable user, one writer, whatever the arrival order and the project type.
//!
//! The commands the rules emit are folded into a small model of Iterable's user store (reference
//! §3.1 and §6.4): users are found by `userId` or `email` as the project type identifies them, a
//! hybrid project keeps both unique, and an email held by another user is held back (as the
//! publisher does on `EmailAlreadyExists`) while the rest of the update lands.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use rules::config::{GuestPolicy, IdentityMode, RulesConfig};
use schemas::{Action, IterableCommand, ShopifyEnvelope};
use serde_json::{Map, Value};

const C: u64 = 6_210_000_000_042;
const EMAIL: &str = "maya.lopez@example.com";

#[derive(Debug, Default, Clone)]
struct User {
    user_id: Option<String>,
    email: Option<String>,
    fields: Map<String, Value>,
}

/// Iterable's user store as the commands leave it.
struct Iterable {
    mode: IdentityMode,
    users: Vec<User>,
}

impl Iterable {
    fn new(mode: IdentityMode) -> Self {
        Self {
            mode,
            users: Vec::new(),
        }
    }

    fn by_user_id(&self, u: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|x| x.user_id.as_deref() == Some(u))
    }

    fn by_email(&self, e: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|x| x.email.as_deref() == Some(e))
    }

    /// The user a command addresses, created if missing (the publisher's identifier choice).
    fn locate(&mut self, c: &IterableCommand) -> Option<usize> {
        let (uid, email) = (c.user.user_id.as_deref(), c.user.email.as_deref());
        let by_uid = |s: &mut Self, u: &str| {
            s.by_user_id(u).unwrap_or_else(|| {
                s.users.push(User {
                    user_id: Some(u.to_owned()),
                    ..User::default()
                });
                s.users.len() - 1
            })
        };
        let by_email = |s: &mut Self, e: &str| {
            s.by_email(e).unwrap_or_else(|| {
                s.users.push(User {
                    email: Some(e.to_owned()),
                    ..User::default()
                });
                s.users.len() - 1
            })
        };
        match (self.mode, uid, email) {
            (IdentityMode::Hybrid | IdentityMode::UserId, Some(u), _) => Some(by_uid(self, u)),
            (IdentityMode::Hybrid, None, Some(e)) => Some(by_email(self, e)),
            (IdentityMode::Email, _, Some(e)) => Some(by_email(self, e)),
            (IdentityMode::Email, Some(u), None) => Some(by_uid(self, u)),
            // userID-based projects cannot address a user by email: the publisher refuses.
            _ => None,
        }
    }

    fn set_email(&mut self, i: usize, e: &str) {
        let taken = self.by_email(e).is_some_and(|j| j != i);
        if !(taken && self.mode != IdentityMode::UserId) {
            self.users[i].email = Some(e.to_owned());
        }
    }

    fn apply(&mut self, c: &IterableCommand) {
        match &c.action {
            Action::UpsertUser { data_fields, .. } => {
                let Some(i) = self.locate(c) else { return };
                if self.mode != IdentityMode::Email
                    && let Some(e) = data_fields.get("email").and_then(Value::as_str)
                {
                    self.set_email(i, e);
                }
                for (k, v) in data_fields {
                    self.users[i].fields.insert(k.clone(), v.clone());
                }
            }
            Action::ChangeEmail { new_email, .. } => {
                if let Some(i) = self.locate(c) {
                    self.set_email(i, new_email);
                }
            }
            Action::DeleteUser { .. } => {
                if let Some(i) = self.locate(c) {
                    self.users.remove(i);
                }
            }
            _ => {}
        }
    }

    /// The customer's Iterable user.
    fn customer(&self) -> &User {
        let i = match self.mode {
            IdentityMode::Email => self.by_email(EMAIL),
            _ => self.by_user_id(&C.to_string()),
        };
        &self.users[i.unwrap_or_else(|| panic!("no user for the customer in {:?}", self.users))]
    }
}

fn harness(mode: IdentityMode, guests: Option<GuestPolicy>) -> Harness {
    let mut cfg = RulesConfig::default();
    cfg.identity.mode = mode;
    cfg.identity.guests = guests;
    Harness::new(cfg)
}

const MODES: [(IdentityMode, Option<GuestPolicy>); 4] = [
    (IdentityMode::Hybrid, None),
    (IdentityMode::Email, None),
    (IdentityMode::UserId, None),
    (IdentityMode::UserId, Some(GuestPolicy::Email)),
];

fn fold(mode: IdentityMode, commands: &[IterableCommand]) -> Iterable {
    let mut it = Iterable::new(mode);
    for c in commands {
        it.apply(c);
    }
    it
}

fn num(u: &User, field: &str) -> f64 {
    u.fields
        .get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{field} missing in {:?}", u.fields))
}

fn customer_created(at: i64) -> ShopifyEnvelope {
    envelope(
        "customers/create",
        &customer_json(C, EMAIL, at, at, false),
        "cc",
        at,
    )
}

fn order(id: u64, customer: Option<u64>, at: i64, total: &'static str) -> ShopifyEnvelope {
    envelope(
        "orders/paid",
        &OrderSpec::new(id, customer, EMAIL, at, total).json(),
        &format!("paid-{id}"),
        at,
    )
}

fn guest_checkout(token: &str, id: u64, at: i64) -> ShopifyEnvelope {
    envelope(
        "checkouts/update",
        &checkout_json(token, id, Some(EMAIL), None, at, at, None),
        &format!("co-{token}"),
        at,
    )
}

fn guest_order_completing(id: u64, token: &str, at: i64, total: &'static str) -> ShopifyEnvelope {
    let mut o = OrderSpec::new(id, None, EMAIL, at, total);
    o.checkout_token = Some(token.into());
    envelope("orders/paid", &o.json(), &format!("paid-{id}"), at)
}

/// Asserts that the email key sent nothing to Iterable.
fn assert_email_key_silent(h: &Harness, mode: IdentityMode) {
    let from_email_key: Vec<_> = h
        .commands
        .iter()
        .filter(|c| c.customer_key.contains("/e/"))
        .map(|c| (&c.command_id, &c.action))
        .collect();
    assert!(
        from_email_key.is_empty(),
        "{mode:?}: the email key wrote {from_email_key:#?}"
    );
}

/// The case: a registered customer checks out as a guest. The guest order counts for the
/// customer, and the email key never writes the customer's Iterable user.
#[test]
fn a_registered_customers_guest_checkout_reaches_the_customer() {
    for (mode, guests) in MODES {
        let mut h = harness(mode, guests);
        h.deliver(customer_created(T0));
        h.deliver(order(4001, Some(C), T0 + HOUR, "100.00"));
        h.deliver(guest_checkout("tokG1", 3901, T0 + DAY));
        h.deliver(guest_order_completing(
            4002,
            "tokG1",
            T0 + DAY + 10 * MIN,
            "50.00",
        ));
        h.finish();
        let it = fold(mode, &h.commands);
        let u = it.customer();
        assert_eq!(num(u, "shopify_lifetime_value"), 150.0, "{mode:?}");
        assert_eq!(num(u, "shopify_orders_count"), 2.0, "{mode:?}");
        assert_email_key_silent(&h, mode);
        assert!(h.events("checkout_abandoned").is_empty(), "{mode:?}");
        assert_eq!(h.purchases().len(), 2, "{mode:?}");
    }
}

/// A registered customer's guest checkout and guest order read before the customer's claim
/// reaches the email key (the raw topic read ahead of the repartition topic): the email key
/// sends nothing, not even the cart or the purchase, because in Iterable a command by email
/// creates a second user holding the customer's address (the customer's own profile is then
/// refused the email). The purchase reaches the customer's user instead.
#[test]
fn a_guest_read_before_the_claim_never_creates_a_second_user() {
    for (mode, guests) in MODES {
        let mut h = harness(mode, guests);
        // Both before the claim, and before the email key's deferral is due (the production
        // timer rule cannot fire it while the customer's earlier input is still unread).
        h.deliver(guest_checkout("tokG7", 3907, T0 + DAY));
        h.deliver(guest_order_completing(4077, "tokG7", T0 + DAY, "40.00"));
        h.deliver(customer_created(T0));
        h.finish();
        assert_email_key_silent(&h, mode);
        if guests.is_none() && mode == IdentityMode::UserId {
            continue;
        }
        let purchases = h.purchases();
        assert_eq!(purchases.len(), 1, "{mode:?}: {purchases:#?}");
        assert!(purchases[0].customer_key.contains("/c/"), "{mode:?}");
        let u = fold(mode, &h.commands);
        assert_eq!(num(u.customer(), "shopify_orders_count"), 1.0, "{mode:?}");
    }
}

/// `first_purchase` is the person's earliest paid order, whichever key saw it first: a
/// registered customer's guest order delivered before the customer's first payload (so before
/// the claim reaches the email key) and placed before their first customer order is announced
/// once, for the guest order, with its payload's fields, by the customer key, and the email key
/// writes no profile meanwhile.
#[test]
fn first_purchase_is_the_persons_earliest_order_whatever_key_saw_it_first() {
    for (mode, guests) in MODES {
        let mut h = harness(mode, guests);
        h.deliver(order(4051, None, T0 + HOUR, "30.00"));
        h.deliver(customer_created(T0));
        h.deliver(order(4052, Some(C), T0 + 2 * HOUR, "80.00"));
        h.finish();
        let fp = h.events("first_purchase");
        assert_eq!(fp.len(), 1, "{mode:?}: {fp:#?}");
        let f = &h.event_fields("first_purchase")[0];
        assert_eq!(f["order_id"], "4051", "{mode:?}");
        assert!(f.contains_key("item_names"), "{mode:?}: {f:?}");
        assert!(fp[0].customer_key.contains("/c/"), "{mode:?}");
        // Nor did the email key write anything in the meantime: its profile and its commands
        // wait until no claim can still be in flight, and the claim hands the held purchase
        // to the customer key, which sends it under the order's own id.
        assert_email_key_silent(&h, mode);
        // Both purchases reach Iterable. (A user-id project that skips guests cannot: the
        // email key had no identity when it read the guest order, and the customer key gets
        // only the order's facts, not the payload a purchase is built from; a later payload of
        // the order re-sends it, see ARCHITECTURE.md, Identity.)
        if guests.is_none() && mode == IdentityMode::UserId {
            continue;
        }
        let mut purchases: Vec<&str> = h
            .purchases()
            .iter()
            .map(|c| c.command_id.as_str())
            .collect();
        purchases.dedup();
        assert_eq!(purchases.len(), 2, "{mode:?}: {purchases:?}");
    }
}

/// `order_refunded` carries the person's lifetime value as of the refund, so it waits for the
/// facts: a refund of a registered customer's guest order, read by the email key before the
/// customer's own payloads, is announced by the customer with the customer's figures.
#[test]
fn a_guest_order_refund_is_announced_with_the_customers_figures() {
    let mut h = harness(IdentityMode::Hybrid, None);
    h.deliver(order(4072, None, T0 + 2 * HOUR, "50.00"));
    h.deliver(envelope(
        "refunds/create",
        &refund_json(9172, 4072, T0 + 3 * HOUR, "20.00", "USD", None),
        "r-9172",
        T0 + 3 * HOUR,
    ));
    h.deliver(customer_created(T0));
    h.deliver(order(4071, Some(C), T0 + HOUR, "100.00"));
    h.finish();
    let refunded = h.events("order_refunded");
    assert_eq!(refunded.len(), 1, "{refunded:#?}");
    assert!(refunded[0].customer_key.contains("/c/"), "{refunded:#?}");
    let f = &h.event_fields("order_refunded")[0];
    assert_eq!(f["lifetime_value"].as_f64(), Some(130.0), "{f:?}");
    assert_eq!(f["note"], "Damaged in transit", "{f:?}");
}

/// An earlier order delivered after a later one (a Shopify retry) is still the first purchase:
/// the announcement waits for the facts instead of following the first arrival.
#[test]
fn first_purchase_waits_for_an_earlier_order_delivered_late() {
    let mut h = harness(IdentityMode::Hybrid, None);
    h.deliver(customer_created(T0));
    h.deliver(order(4062, Some(C), T0 + 2 * HOUR, "80.00"));
    h.deliver(order(4061, Some(C), T0 + HOUR, "30.00"));
    h.finish();
    let fp = h.event_fields("first_purchase");
    assert_eq!(fp.len(), 1, "{fp:#?}");
    assert_eq!(fp[0]["order_id"], "4061");
}

/// A guest who registers later: the guest history joins the customer, once.
#[test]
fn a_guest_who_registers_later_brings_their_history() {
    for (mode, guests) in MODES {
        let mut h = harness(mode, guests);
        h.deliver(guest_checkout("tokA", 3911, T0));
        h.deliver(order(4011, None, T0 + 10 * HOUR, "50.00"));
        h.deliver(customer_created(T0 + DAY));
        h.deliver(order(4012, Some(C), T0 + 2 * DAY, "100.00"));
        h.finish();
        let u = fold(mode, &h.commands).customer().clone();
        assert_eq!(num(&u, "shopify_lifetime_value"), 150.0, "{mode:?}");
        assert_eq!(num(&u, "shopify_orders_count"), 2.0, "{mode:?}");
        assert!(h.state(&format!("e/{EMAIL}")).orders.is_empty(), "{mode:?}");
        // The guest checkout was abandoned (no order within the hour): decided once.
        assert!(h.events("checkout_abandoned").len() <= 1, "{mode:?}");
    }
}

/// A guest profile written before the customer claimed the address is still erased, also
/// after the customer's later payloads claimed the address again.
#[test]
fn redacting_a_customer_forgets_the_guest_profile_written_before_the_claim() {
    let mut h = harness(IdentityMode::Hybrid, None);
    h.deliver(order(4031, None, T0, "50.00"));
    h.deliver(customer_created(T0 + DAY));
    h.deliver(order(4032, Some(C), T0 + DAY + HOUR, "20.00"));
    h.deliver(envelope(
        "customers/redact",
        &serde_json::json!({"shop_id": 1, "shop_domain": SHOP,
        "customer": {"id": C, "email": EMAIL, "phone": null}, "orders_to_redact": [4031]}),
        "rd",
        T0 + 2 * DAY,
    ));
    let forgets: Vec<_> = h
        .commands
        .iter()
        .filter(|c| matches!(c.action, Action::DeleteUser { .. }))
        .map(|c| (c.user.user_id.clone(), c.user.email.clone()))
        .collect();
    assert!(
        forgets.contains(&(Some(C.to_string()), Some(EMAIL.into()))),
        "{forgets:?}"
    );
    assert!(forgets.contains(&(None, Some(EMAIL.into()))), "{forgets:?}");
    assert!(!h.states.contains_key(&format!("{SHOP}/e/{EMAIL}")));
}

/// `customers/delete`: kept by default; with `delete`, the Iterable user is deleted, the state
/// purged and the address is a guest's again.
#[test]
fn customers_delete_keeps_or_deletes_as_configured() {
    let delete = |h: &mut Harness| {
        h.deliver(envelope(
            "customers/delete",
            &serde_json::json!({"id": C}),
            "cdel",
            T0 + DAY,
        ))
    };
    let mut h = harness(IdentityMode::Hybrid, None);
    h.deliver(customer_created(T0));
    h.deliver(order(4041, Some(C), T0 + HOUR, "80.00"));
    // `first_purchase` is announced once the order's facts are in, before the delete.
    h.advance(T0 + DAY - 1);
    let before = h.commands.len();
    delete(&mut h);
    assert_eq!(h.commands.len(), before, "keep sends nothing");
    assert_eq!(h.state(&format!("c/{C}")).orders.len(), 1);

    let mut cfg = RulesConfig::default();
    cfg.identity.customer_delete = rules::config::CustomerDeletePolicy::Delete;
    let mut h = Harness::new(cfg);
    h.deliver(customer_created(T0));
    h.deliver(order(4041, Some(C), T0 + HOUR, "80.00"));
    delete(&mut h);
    let last = h.commands.last().unwrap();
    assert_eq!(
        last.action,
        Action::DeleteUser {
            mode: schemas::DeleteMode::Delete
        }
    );
    assert_eq!(last.user.user_id.as_deref(), Some(C.to_string().as_str()));
    assert!(h.purged.contains(&format!("{SHOP}/c/{C}")));
    // The address is released: a later guest order is the guest's.
    h.deliver(order(4042, None, T0 + 2 * DAY, "20.00"));
    // A guest's profile is written once no claim can still be in flight.
    h.finish();
    assert_eq!(
        h.profile(&format!("e/{EMAIL}"))["shopify_lifetime_value"].as_f64(),
        Some(20.0)
    );
}

/// An email change moves the index: activity of the old address is a guest's again, the new
/// address's history joins the customer.
#[test]
fn an_email_change_moves_the_index() {
    let mut h = harness(IdentityMode::Hybrid, None);
    h.deliver(customer_created(T0));
    h.deliver(envelope(
        "customers/update",
        &customer_json(C, "maya.new@example.com", T0, T0 + DAY, false),
        "cu",
        T0 + DAY,
    ));
    let mut o = OrderSpec::new(4021, None, "maya.new@example.com", T0 + 2 * DAY, "30.00");
    o.lines.truncate(1);
    h.deliver(envelope("orders/paid", &o.json(), "p-4021", T0 + 2 * DAY));
    h.deliver(order(4022, None, T0 + 3 * DAY, "20.00"));
    h.finish();
    let c = h.profile(&format!("c/{C}"));
    assert_eq!(c["shopify_lifetime_value"].as_f64(), Some(30.0));
    let g = h.profile(&format!("e/{EMAIL}"));
    assert_eq!(g["shopify_lifetime_value"].as_f64(), Some(20.0));
}

/// An order placed with the old address before the email change belongs to the customer even
/// when it is delivered after the change (a backlog, a replay, a retry): the email key attributes
/// activity by when it happened, not by which claim or release it heard first.
#[test]
fn an_order_placed_before_an_email_change_stays_the_customers_whenever_it_arrives() {
    let mut h = harness(IdentityMode::Hybrid, None);
    h.deliver(customer_created(T0));
    h.deliver(envelope(
        "customers/update",
        &customer_json(C, "maya.new@example.com", T0, T0 + 10 * DAY, false),
        "cu",
        T0 + 10 * DAY,
    ));
    // Placed with the old address a day after registering, delivered after the change.
    h.deliver(order(4031, None, T0 + DAY, "45.00"));
    h.finish();
    let c = h.profile(&format!("c/{C}"));
    assert_eq!(c["shopify_lifetime_value"].as_f64(), Some(45.0));
    let fp = h.events("first_purchase");
    assert_eq!(fp.len(), 1, "{fp:#?}");
    assert!(fp[0].customer_key.contains("/c/"), "{fp:#?}");
    assert!(h.state(&format!("e/{EMAIL}")).orders.is_empty());
}

#[derive(Debug, Clone)]
struct Plan {
    /// Days after `T0` the customer registers (guest activity may come before or after).
    registers: u32,
    /// Customer orders: (day, cents).
    orders: Vec<(u32, u32)>,
    /// Guest orders: (day, cents, refund percent, completes a guest checkout).
    guest: Vec<(u32, u32, Option<u32>, bool)>,
    /// Guest checkouts nobody completes: day.
    abandoned: Vec<u32>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        0u32..20,
        prop::collection::vec((0u32..30, 100u32..50_000), 0..3),
        prop::collection::vec(
            (
                0u32..30,
                100u32..50_000,
                prop::option::of(10u32..=100),
                any::<bool>(),
            ),
            1..4,
        ),
        prop::collection::vec(0u32..30, 0..2),
    )
        .prop_map(|(registers, orders, guest, abandoned)| Plan {
            registers,
            orders,
            guest,
            abandoned,
        })
}

fn money(cents: u64) -> &'static str {
    Box::leak(format!("{}.{:02}", cents / 100, cents % 100).into_boxed_str())
}

/// The log and the truth (lifetime value in cents, orders counted).
fn log(p: &Plan) -> (Vec<ShopifyEnvelope>, u64, u32) {
    let mut out = vec![customer_created(T0 + i64::from(p.registers) * DAY)];
    let (mut value, mut count) = (0u64, 0u32);
    for (i, (day, cents)) in p.orders.iter().enumerate() {
        let at = T0 + i64::from(*day) * DAY + 3 * HOUR + i as i64 * MIN;
        out.push(order(
            4100 + i as u64,
            Some(C),
            at,
            money(u64::from(*cents)),
        ));
        value += u64::from(*cents);
        count += 1;
    }
    for (i, (day, cents, refund, checkout)) in p.guest.iter().enumerate() {
        let at = T0 + i64::from(*day) * DAY + 5 * HOUR + i as i64 * MIN;
        let id = 4200 + i as u64;
        let token = format!("tokg{i}");
        if *checkout {
            out.push(guest_checkout(&token, 3920 + i as u64, at - 20 * MIN));
            out.push(guest_order_completing(
                id,
                &token,
                at,
                money(u64::from(*cents)),
            ));
        } else {
            out.push(order(id, None, at, money(u64::from(*cents))));
        }
        let mut kept = u64::from(*cents);
        if let Some(pct) = refund {
            let amount = u64::from(*cents) * u64::from(*pct) / 100;
            kept -= amount;
            let rt = at + DAY;
            out.push(envelope(
                "refunds/create",
                &refund_json(9100 + i as u64, id, rt, money(amount), "USD", None),
                &format!("refund-{id}"),
                rt,
            ));
        }
        value += kept;
        count += 1;
    }
    for (i, day) in p.abandoned.iter().enumerate() {
        let at = T0 + i64::from(*day) * DAY + 9 * HOUR + i as i64 * MIN;
        out.push(guest_checkout(&format!("toka{i}"), 3950 + i as u64, at));
    }
    (out, value, count)
}

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 32;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// In every arrival order and every project type, the customer's Iterable user ends with the
    /// lifetime figures of all their orders, guest ones included, and each abandoned checkout is
    /// decided at most once.
    #[test]
    fn the_customers_profile_is_right_in_any_arrival_order(p in plan(), order in prop::collection::vec(any::<u64>(), 64)) {
        let (clean, value, count) = log(&p);
        let mut shuffled: Vec<(u64, ShopifyEnvelope)> = clean
            .iter()
            .enumerate()
            .map(|(i, e)| (order[i % order.len()].rotate_left(i as u32), e.clone()))
            .collect();
        shuffled.sort_by_key(|(k, _)| *k);
        for (mode, guests) in MODES {
            for arrivals in [clean.clone(), shuffled.iter().map(|(_, e)| e.clone()).collect()] {
                let mut h = harness(mode, guests);
                for e in arrivals {
                    h.deliver(e);
                }
                h.finish();
                let it = fold(mode, &h.commands);
                let u = it.customer();
                prop_assert_eq!(
                    (num(u, "shopify_lifetime_value") * 100.0).round() as u64,
                    value,
                    "{:?} {:?}", mode, u.fields
                );
                prop_assert_eq!(num(u, "shopify_orders_count") as u32, count);
                let mut abandoned: Vec<&str> = h
                    .events("checkout_abandoned")
                    .iter()
                    .map(|c| c.command_id.as_str())
                    .collect();
                let n = abandoned.len();
                abandoned.dedup();
                prop_assert_eq!(n, abandoned.len(), "decided twice");
            }
        }
    }
}
