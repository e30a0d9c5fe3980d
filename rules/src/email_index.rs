//! The email → customer index: one writer per Iterable user, whatever key an event arrives on.
//!
//! Guest checkouts and guest orders are keyed `e/{email}`; a registered customer is keyed
//! `c/{id}`. Both would address the same Iterable user (by email, or by the customer whose
//! email it is), so exactly one of them may write it: **a customer key owns the email key of
//! its current email**. The customer key tells the email key through internal messages:
//!
//! | Topic | To | Body | Meaning |
//! |---|---|---|---|
//! | `tillstream/email-claim` | `e/{email}` | `{owner, at_ms, held}` | this is (`held`) / is no longer my current email (sent by `messages`) |
//! | `tillstream/guest-history` | `c/{id}` | `{orders, checkouts, external_orders, first_pending, first_announced}` | what the email key knew before it was claimed |
//! | `tillstream/checkout-due` | `c/{id}` | a checkout timer | a guest checkout's abandonment is due: decide it |
//!
//! An owned email key sends nothing to Iterable and keeps nothing but the claims: it forwards
//! every person event (orders, checkouts, refunds, deletes, completions) to its owner as the
//! original envelope, and when it becomes owned it hands its guest history over (orders and
//! checkouts merge into the customer's, so they count once), then forgets it. Its abandonment
//! timers still fire where they were armed and are handed to the owner to decide, once. Claims
//! are last-writer-wins per customer on the email's business time, so the owner is the same
//! whatever order the messages arrive in; an email change releases the old address, which is
//! a guest's again from then on.

use base64::Engine as _;
use schemas::{Action, CustomerKey, IterableCommand, KeyKind, ShopifyEnvelope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use serde_json::json;

use crate::aggregate::{
    CheckoutFact, FirstPending, O_CANCEL_SENT, O_FULFILL_SENT, OrderFact, P_GUEST_RELEASED,
    P_GUEST_SENT, PendingRefund, Person, State, keep_earliest,
};
use crate::domain::{Effect, RuleError, Timer};
use crate::emit::Cx;
use crate::messages::{CHECKOUT_COMPLETED, ClaimMsg, CompletionMsg, EMAIL_CLAIM};
use crate::shopify::Placement;
use crate::{checkout, first_purchase, ids, profile, refunds};

/// See the module table.
pub(crate) const GUEST_HISTORY: &str = "tillstream/guest-history";
/// See the module table.
pub(crate) const CHECKOUT_DUE: &str = "tillstream/checkout-due";

/// Timer kind (and id) of an unclaimed email key's deferred profile write.
pub(crate) const GUEST_PROFILE: &str = "guest-profile";

/// An email key nobody claims writes its profile only once every input up to `at` is in. A
/// customer who registered before that time has claimed the address by then (the claim is
/// dated by the customer's email, which precedes the guest activity), so a registered
/// customer's guest checkout never writes the email key's figures over the customer's user,
/// whatever order the raw and forwarded inputs are read in.
pub(crate) fn defer_profile(cx: &mut Cx<'_>) {
    let at = cx.ctx.event_time_ms;
    cx.set_timer(GUEST_PROFILE, GUEST_PROFILE.to_owned(), at, json!({}));
}

/// Whether the key's Iterable commands are held: an email key nobody claims now that has not
/// released anything yet. A guest's command addresses the user by email, and in Iterable that
/// creates the user if missing; if the address is a registered customer's whose claim is still
/// in flight, the customer's own profile then finds its email taken by a second user. So the
/// guest's first commands wait for the same point as its profile ([`defer_profile`]): every
/// input up to them is in, and a customer who registered earlier has claimed the address.
pub(crate) fn holds(key: &CustomerKey, state: &State) -> bool {
    key.kind() == KeyKind::Email && state.email_owner().is_none() && !released(state)
}

/// Whether the guest's commands went out (released, or written before an earlier claim).
fn released(state: &State) -> bool {
    state
        .person
        .as_ref()
        .is_some_and(|p| p.flags & (P_GUEST_RELEASED | P_GUEST_SENT) != 0)
}

/// On a key that [`holds`]: keeps the output's commands in the state, or with `release` (its
/// deferred profile write is due and nobody claimed the address) sends what was held first
/// and lets later commands go out at once. A newer cart replaces a held one.
pub(crate) fn hold(state: &mut State, out: Vec<Effect>, release: bool) -> Vec<Effect> {
    if release {
        state.person_mut().flags |= P_GUEST_RELEASED;
        let mut all: Vec<Effect> = decode_held(&std::mem::take(&mut state.held))
            .into_iter()
            .map(Effect::Command)
            .collect();
        all.extend(out);
        return all;
    }
    let mut rest = Vec::with_capacity(out.len());
    for e in out {
        match e {
            Effect::Command(c) => {
                let Ok(bytes) = c.encode() else {
                    // Every command the rules build encodes; never drop one silently.
                    rest.push(Effect::Command(c));
                    continue;
                };
                if matches!(c.action, Action::UpdateCart { .. }) {
                    state.held.retain(|h| {
                        decode_one(h).is_none_or(|h| !matches!(h.action, Action::UpdateCart { .. }))
                    });
                }
                state.held.push(b64().encode(bytes));
            }
            other => rest.push(other),
        }
    }
    rest
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

/// Held commands back from [`State::held`] (an entry that does not decode is skipped: the
/// rules wrote every one of them).
fn decode_held(held: &[String]) -> Vec<IterableCommand> {
    held.iter().filter_map(|h| decode_one(h)).collect()
}

fn decode_one(held: &str) -> Option<IterableCommand> {
    IterableCommand::decode(&b64().decode(held).ok()?).ok()
}

/// Body of `tillstream/guest-history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HistoryMsg {
    /// The guest's orders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<OrderFact>,
    /// The guest's checkouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkouts: Vec<CheckoutFact>,
    /// Orders placed by this email under customer keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_orders: Vec<(u64, i64)>,
    /// The guest's `first_purchase` waiting for its facts, with its order's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_pending: Option<FirstPending>,
    /// The order the guest already announced as its `first_purchase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_announced: Option<u64>,
    /// The guest's `order_refunded` announcements still waiting, for orders handed over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds_pending: Vec<PendingRefund>,
    /// The shop currency the guest's orders taught (events carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The guest's commands about these orders that were held and never sent (see [`holds`]),
    /// encoded as in [`State::held`]: the owner sends them as its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order_commands: Vec<String>,
}

/// `tillstream/email-claim` on an email key: record it; a new owner receives the guest history.
pub(crate) fn on_claim(cx: &mut Cx<'_>, state: &mut State, m: &ClaimMsg) -> Result<(), RuleError> {
    if cx.key.kind() != KeyKind::Email {
        return Ok(());
    }
    let owner = CustomerKey::parse(&m.owner).map_err(|_| RuleError::Unparseable {
        topic: EMAIL_CLAIM.into(),
        message: format!("bad owner key {:?}", m.owner),
    })?;
    // Only what the guest released reached Iterable under the address (see [`holds`]).
    let released = released(state);
    let guest_sent = released && profile::erasure_identity(cx.cfg, cx.key, state).is_some();
    // Without an identity (a user-id project that skips guests) nothing the guest "sent"
    // left tillstream: the owner must send it.
    let had_identity = profile::identity(cx.cfg, cx.key, state).is_some();
    state.merge_claim(owner.as_str(), m.at_ms, m.held);
    // Held commands never went out. The owner sends the ones an order's payload made (the
    // purchase, fulfilment, cancellation: it gets the orders' facts, not the payloads, and
    // their ids depend on the order only); it re-derives the rest, the first purchase
    // included (its id names the key that announces it).
    let held: Vec<String> = if state.email_owner().is_some() {
        std::mem::take(&mut state.held)
    } else {
        Vec::new()
    };
    // Each order and checkout goes to whoever held the address when it happened, so the
    // split is the same whichever claim or release arrived first.
    let mut parts: BTreeMap<String, HistoryMsg> = BTreeMap::new();
    for o in std::mem::take(&mut state.orders) {
        match state.email_owner_at(o.placed_ms) {
            Some(w) => parts.entry(w.to_owned()).or_default().orders.push(o),
            None => state.orders.push(o),
        }
    }
    for k in std::mem::take(&mut state.checkouts) {
        match state.email_owner_at(k.updated_ms) {
            Some(w) => parts.entry(w.to_owned()).or_default().checkouts.push(k),
            None => state.checkouts.push(k),
        }
    }
    let part_of = |parts: &BTreeMap<String, HistoryMsg>, order: u64| {
        parts
            .iter()
            .find(|(_, h)| h.orders.iter().any(|o| o.id == order))
            .map(|(w, _)| w.clone())
    };
    let (pending, announced) =
        first_purchase::hand_over(cx, state, |id| part_of(&parts, id).is_some());
    let announced = announced.filter(|_| had_identity && released);
    for p in refunds::take_pending(cx, state, |id| part_of(&parts, id).is_some()) {
        if let Some(w) = part_of(&parts, p.order_id) {
            parts.entry(w).or_default().refunds_pending.push(p);
        }
    }
    // Passed on encoded, as held.
    for encoded in held {
        let Some(c) = decode_one(&encoded) else {
            continue;
        };
        let of_order = |o: &OrderFact| {
            ["purchase", "order-fulfilled", "order-cancelled"]
                .iter()
                .any(|kind| ids::command_id(cx.shop(), kind, &[&o.id.to_string()]) == c.command_id)
        };
        let order = parts
            .iter()
            .find_map(|(w, h)| h.orders.iter().any(of_order).then(|| w.clone()));
        if let Some(w) = order {
            parts.entry(w).or_default().order_commands.push(encoded);
        }
    }
    let currency = state.person.as_ref().and_then(|p| p.currency.clone());
    for h in parts.values_mut() {
        h.currency.clone_from(&currency);
        if !had_identity {
            for o in &mut h.orders {
                o.flags &= !(O_FULFILL_SENT | O_CANCEL_SENT);
                o.purchase_hash = 0;
            }
        }
    }
    if let Some(p) = pending
        && let Some(w) = part_of(&parts, p.order_id)
    {
        parts.entry(w).or_default().first_pending = Some(p);
    }
    if let Some(id) = announced
        && let Some(w) = part_of(&parts, id)
    {
        parts.entry(w).or_default().first_announced = Some(id);
    }
    // Nothing of the guest left: what only the person knew goes to the current owner.
    if state.orders.is_empty()
        && state.checkouts.is_empty()
        && let Some(current) = state.email_owner().map(str::to_owned)
    {
        let external = state
            .person
            .take()
            .map(|p| p.external_orders)
            .unwrap_or_default();
        parts.entry(current).or_default().external_orders = external;
        if guest_sent {
            state.person_mut().flags |= P_GUEST_SENT;
        }
    }
    for (w, history) in parts {
        let Ok(to) = CustomerKey::parse(&w) else {
            continue;
        };
        if !(history.orders.is_empty()
            && history.order_commands.is_empty()
            && history.refunds_pending.is_empty()
            && history.checkouts.is_empty()
            && history.external_orders.is_empty()
            && history.first_announced.is_none())
        {
            cx.send(to, GUEST_HISTORY, "guest-history", &json!(history));
        }
    }
    Ok(())
}

/// On an owned email key, forwards a person event to the owner; returns whether it did.
/// Completions from the owner itself are dropped: the owner already knows its orders.
pub(crate) fn forward_if_owned(
    cx: &mut Cx<'_>,
    state: &State,
    input: &ShopifyEnvelope,
) -> Result<bool, RuleError> {
    if cx.key.kind() != KeyKind::Email {
        return Ok(false);
    }
    if state.claims.is_empty() {
        return Ok(false);
    }
    let topic = input.topic.as_str();
    // Orders belong to whoever held the address when they were placed (an `orders/updated`
    // months later included); everything else to whoever held it when it happened.
    let at = if topic.starts_with("orders/") && topic != "orders/delete" {
        let p: Placement = crate::shopify::parse(topic, &input.body).unwrap_or_default();
        p.processed_at
            .or(p.created_at)
            .map_or(cx.ctx.event_time_ms, |t| t.0)
    } else {
        cx.ctx.event_time_ms
    };
    let Some(owner) = state
        .email_owner_at(at)
        .and_then(|o| CustomerKey::parse(o).ok())
    else {
        return Ok(false);
    };
    let person_event = topic.starts_with("orders/")
        || topic.starts_with("checkouts/")
        || topic == "refunds/create"
        || topic == "order_transactions/create"
        || topic == CHECKOUT_COMPLETED;
    if !person_event {
        return Ok(false);
    }
    if topic == CHECKOUT_COMPLETED {
        let m: CompletionMsg = crate::shopify::parse(topic, &input.body)?;
        if m.owner == owner.as_str() {
            return Ok(true);
        }
    }
    cx.forward_input(owner);
    Ok(true)
}

/// A checkout timer on an owned email key: the owner decides it (once: the email key no longer
/// holds the checkout).
pub(crate) fn hand_due_timer(cx: &mut Cx<'_>, state: &State, timer: &Timer) -> bool {
    if cx.key.kind() != KeyKind::Email {
        return false;
    }
    let Some(owner) = state.email_owner().and_then(|o| CustomerKey::parse(o).ok()) else {
        return false;
    };
    let body = json!({
        "kind": timer.kind,
        "timer_id": timer.timer_id,
        "due_ms": timer.due_ms,
        "payload": timer.payload,
    });
    cx.send(owner, CHECKOUT_DUE, "checkout-due", &body);
    true
}

/// Body of `tillstream/checkout-due`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DueMsg {
    kind: String,
    timer_id: String,
    due_ms: i64,
    payload: serde_json::Value,
}

/// `tillstream/checkout-due` on a customer key.
pub(crate) fn on_due(cx: &mut Cx<'_>, state: &mut State, m: DueMsg) -> Result<(), RuleError> {
    if cx.key.kind() != KeyKind::Customer {
        return Ok(());
    }
    let timer = Timer {
        kind: m.kind,
        timer_id: m.timer_id,
        due_ms: m.due_ms,
        payload: m.payload,
    };
    checkout::fire(cx, state, &timer)
}

/// `tillstream/guest-history` on a customer key: the guest's orders and checkouts become the
/// customer's, merged with what the customer already knows of them.
pub(crate) fn on_history(cx: &mut Cx<'_>, state: &mut State, m: HistoryMsg) {
    if cx.key.kind() != KeyKind::Customer {
        return;
    }
    for o in m.orders {
        absorb_order(state.order_mut(o.id), o);
    }
    for k in m.checkouts {
        absorb_checkout(state.checkout_mut(k.token_hash), k);
    }
    let person = state.person_mut();
    for (id, at) in m.external_orders {
        note_external_order(person, id, at);
    }
    profile::learn_currency(state, m.currency.as_deref());
    // The guest's pending refund announcements are the owner's now, due when they were.
    for p in m.refunds_pending {
        let at = state
            .orders
            .iter()
            .find(|o| o.id == p.order_id)
            .and_then(|o| o.refunds.iter().find(|r| r.id == p.refund_id))
            .map(|r| r.at_ms);
        if let Some(at) = at {
            refunds::arm(cx, state, p, at);
        }
    }
    first_purchase::adopt(cx, state, m.first_pending, m.first_announced);
    // The guest's held order commands go to this key's user, under their own ids.
    for c in decode_held(&m.order_commands) {
        cx.command(c.command_id, c.event_time_ms, c.action);
    }
}

/// Merges another key's view of an order, the same way payloads merge.
fn absorb_order(mine: &mut OrderFact, theirs: OrderFact) {
    use crate::aggregate::O_KNOWN;
    if theirs.has(O_KNOWN) && (!mine.has(O_KNOWN) || theirs.version() > mine.version()) {
        mine.updated_ms = theirs.updated_ms;
        mine.status = theirs.status;
        mine.total = theirs.total;
        mine.presentment_total = theirs.presentment_total;
        mine.lines_hash = theirs.lines_hash;
    }
    mine.merge_placed(theirs.placed_rank, theirs.placed_ms);
    mine.flags |= theirs.flags;
    if let Some(c) = theirs.cancelled_ms {
        keep_earliest(&mut mine.cancelled_ms, c);
    }
    if let Some(d) = theirs.deleted_ms {
        keep_earliest(&mut mine.deleted_ms, d);
    }
    for r in theirs.refunds {
        refunds::insert(mine, r);
    }
    if mine.purchase_hash == 0 {
        mine.purchase_hash = theirs.purchase_hash;
    }
}

/// Merges another key's view of a checkout: the earliest settlement, the latest activity.
fn absorb_checkout(mine: &mut CheckoutFact, theirs: CheckoutFact) {
    mine.id = mine.id.or(theirs.id);
    if mine.cart_hash == 0 {
        mine.cart_hash = theirs.cart_hash;
    }
    mine.updated_ms = mine.updated_ms.max(theirs.updated_ms);
    mine.last_update_ms = mine.last_update_ms.max(theirs.last_update_ms);
    if let Some(c) = theirs.completed_ms {
        keep_earliest(&mut mine.completed_ms, c);
    }
    if let Some(d) = theirs.deleted_ms {
        keep_earliest(&mut mine.deleted_ms, d);
    }
    mine.flags |= theirs.flags;
    if mine.completed_ms.is_some() || mine.deleted_ms.is_some() {
        mine.cart_sent_hash = 0;
    }
}

/// Remembers an order placed by this person's email under another key (recent ones only: an
/// abandonment is decided within hours, so a week around the newest is plenty, and the result
/// does not depend on the order the messages came in).
pub(crate) fn note_external_order(person: &mut Person, order_id: u64, placed_ms: i64) {
    if person.external_orders.iter().any(|(id, _)| *id == order_id) {
        return;
    }
    person.external_orders.push((order_id, placed_ms));
    person
        .external_orders
        .sort_by_key(|(id, t)| (std::cmp::Reverse(*t), *id));
    let newest = person.external_orders.first().map_or(0, |(_, t)| *t);
    person
        .external_orders
        .retain(|(_, t)| *t >= newest - 7 * 86_400_000);
    person.external_orders.truncate(8);
}
