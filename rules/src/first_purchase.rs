//! First purchase: announced once per person, for the earliest paid order, once its facts are in.
//!
//! `first_purchase` cannot be taken back, so like a VIP tier it waits for its facts instead of
//! following the first paid order that happens to arrive: the earliest paid order (by placed
//! time, then id) arms a timer at its placed time, and the announcement is made when the timer
//! fires, that is once the engine knows every input up to then is in. Any arrival order of the
//! same events then announces the same order under the same id with the same fields:
//!
//! * an earlier order delivered late (a Shopify retry, a backlog on another partition) moves the
//!   timer earlier instead of producing a second announcement;
//! * a registered customer's guest order, placed before their first order under the customer
//!   key, reaches the customer key (forwarded, or in the guest history when the claim arrives)
//!   before the timer fires, and the email key, which would otherwise have announced it under
//!   the guest's identity, hands its pending announcement over with the history.
//!
//! The fields are those of the order's newest payload (kept in [`FirstPending`] until the
//! announcement); an order known only as a fact (its payloads went to another key that had no
//! pending announcement for it) is announced with the fact's fields. A later payload of the
//! announced order that corrects its placed time re-sends the event under the same id.

use schemas::DataFields;
use serde_json::json;

use crate::aggregate::{FirstPending, OrderFact, P_FIRST_PURCHASE, State};
use crate::domain::Timer;
use crate::emit::{Cx, Kind};
use crate::{ids, ltv};

/// Timer kind (and id: one per person) of the pending announcement.
pub(crate) const FIRST_PURCHASE_TIMER: &str = "first-purchase";

/// The earliest paid order: `(placed ms, order id)`.
fn earliest(state: &State) -> Option<(i64, u64)> {
    state
        .orders
        .iter()
        .filter(|o| ltv::was_purchase(o))
        .map(|o| (o.placed_ms, o.id))
        .min()
}

fn announced(state: &State) -> bool {
    state
        .person
        .as_ref()
        .is_some_and(|p| p.flags & P_FIRST_PURCHASE != 0)
}

/// A payload of order `fact` was applied. `newest`: it is the order's newest payload, whose
/// fields the announcement carries; `fields` builds them (only called when needed).
pub(crate) fn on_order(
    cx: &mut Cx<'_>,
    state: &mut State,
    fact: &OrderFact,
    newest: bool,
    placed_changed: bool,
    fields: impl FnOnce() -> DataFields,
) {
    if !ltv::was_purchase(fact) {
        return;
    }
    if announced(state) {
        // A correction of the announced order's placed time: the same event, updated.
        let person = state.person_mut();
        if placed_changed && person.first_purchase_order == Some(fact.id) {
            emit(cx, fact.placed_ms, fields());
        }
        return;
    }
    if earliest(state).map(|(_, id)| id) != Some(fact.id) {
        return;
    }
    let person = state.person_mut();
    match person.first_pending.as_mut() {
        Some(p) if p.order_id == fact.id => {
            if newest || p.fields.is_empty() {
                p.fields = fields();
            }
        }
        _ => {
            person.first_pending = Some(FirstPending {
                order_id: fact.id,
                armed_ms: i64::MIN,
                fields: fields(),
            });
        }
    }
}

/// After every input: (re)arms the timer for the earliest paid order, or cancels it when there
/// is none any more.
pub(crate) fn derive(cx: &mut Cx<'_>, state: &mut State) {
    if state.person.is_none() || announced(state) {
        return;
    }
    let target = earliest(state);
    let person = state.person_mut();
    match target {
        Some((at, id)) => {
            let pending = match person.first_pending.as_mut() {
                Some(p) if p.order_id == id => p,
                // Another order became the earliest: its payload never reached this key (or
                // the previous one stopped counting); the fact's fields stand in.
                _ => person.first_pending.insert(FirstPending {
                    order_id: id,
                    armed_ms: i64::MIN,
                    fields: DataFields::new(),
                }),
            };
            if pending.armed_ms != at {
                pending.armed_ms = at;
                cx.set_timer(
                    FIRST_PURCHASE_TIMER,
                    FIRST_PURCHASE_TIMER.to_owned(),
                    at,
                    json!({ "order_id": id }),
                );
            }
        }
        None => {
            if person
                .first_pending
                .take()
                .is_some_and(|p| p.armed_ms != i64::MIN)
            {
                cx.cancel_timer(FIRST_PURCHASE_TIMER.to_owned());
            }
        }
    }
}

/// The timer fired: every input up to the order's placed time is in, so announce it if it is
/// still the earliest paid order. An owned email key never announces: its owner does.
pub(crate) fn fire(cx: &mut Cx<'_>, state: &mut State, timer: &Timer) {
    if announced(state) || state.email_owner().is_some() {
        return;
    }
    let target = earliest(state);
    let Some(pending) = state
        .person
        .as_deref()
        .and_then(|p| p.first_pending.clone())
    else {
        return;
    };
    let Some((at, id)) = target.filter(|(at, id)| {
        *id == pending.order_id && *at == pending.armed_ms && cx.due_for(*at) <= timer.due_ms
    }) else {
        return;
    };
    let mut fields = pending.fields;
    if fields.is_empty()
        && let Some(fact) = state.orders.iter().find(|o| o.id == id)
    {
        fields = ltv::fact_fields(fact);
    }
    let person = state.person_mut();
    person.flags |= P_FIRST_PURCHASE;
    person.first_purchase_order = Some(id);
    person.first_pending = None;
    emit(cx, at, fields);
}

fn emit(cx: &mut Cx<'_>, at: i64, fields: DataFields) {
    let name = cx.cfg.events.first_purchase.clone();
    let id = ids::command_id(cx.shop(), "first-purchase", &[&ids::subject(cx.key)]);
    cx.event(Kind::FirstPurchase, &name, id, at, fields);
}

/// What an email key hands over with the orders that `moved` to an owner: its pending
/// announcement for one of them (the timer is cancelled here: the owner decides), or the one of
/// them it already announced as a guest.
pub(crate) fn hand_over(
    cx: &mut Cx<'_>,
    state: &mut State,
    moved: impl Fn(u64) -> bool,
) -> (Option<FirstPending>, Option<u64>) {
    let Some(p) = state.person.as_deref_mut() else {
        return (None, None);
    };
    if p.flags & P_FIRST_PURCHASE != 0 {
        return (None, p.first_purchase_order.filter(|id| moved(*id)));
    }
    if !p.first_pending.as_ref().is_some_and(|f| moved(f.order_id)) {
        return (None, None);
    }
    let pending = p.first_pending.take();
    if pending.as_ref().is_some_and(|p| p.armed_ms != i64::MIN) {
        cx.cancel_timer(FIRST_PURCHASE_TIMER.to_owned());
    }
    (pending, None)
}

/// The owner receives a guest history: a guest announcement already made counts as this
/// person's; a pending one brings the fields of its order (the timer is re-armed by `derive`).
pub(crate) fn adopt(
    cx: &mut Cx<'_>,
    state: &mut State,
    pending: Option<FirstPending>,
    announced_order: Option<u64>,
) {
    if announced(state) {
        return;
    }
    let person = state.person_mut();
    if let Some(order) = announced_order {
        person.flags |= P_FIRST_PURCHASE;
        person.first_purchase_order = Some(order);
        if person
            .first_pending
            .take()
            .is_some_and(|p| p.armed_ms != i64::MIN)
        {
            cx.cancel_timer(FIRST_PURCHASE_TIMER.to_owned());
        }
        return;
    }
    let Some(theirs) = pending.filter(|p| !p.fields.is_empty()) else {
        return;
    };
    let first = earliest(state).map(|(_, id)| id);
    let person = state.person_mut();
    match person.first_pending.as_mut() {
        // Both know the order's payload: keep ours unless we only had the fact.
        Some(mine) if mine.order_id == theirs.order_id && mine.fields.is_empty() => {
            mine.fields = theirs.fields;
        }
        Some(mine) if mine.order_id == theirs.order_id => {}
        // Theirs is the earliest paid order now: `derive` arms the timer for it (the same
        // timer id, so one armed for our order is replaced).
        _ if first == Some(theirs.order_id) => {
            person.first_pending = Some(FirstPending {
                armed_ms: i64::MIN,
                ..theirs
            });
        }
        _ => {}
    }
}
