//! Abandoned checkouts: a timer per checkout from its last update; Iterable's cart kept current.
//!
//! A checkout with an email or phone and no `completed_at` arms `abandoned_checkout` at
//! `updated_at + abandon_after_minutes`; later updates up to that decision time re-arm it (the
//! first quiet window decides). The cart travels in the
//! timer's payload, so the aggregate keeps only a few numbers per checkout. On firing, nothing
//! is sent if, at or before the due time, the checkout completed (`completed_at`, or an order
//! carrying its `checkout_token`), was deleted, or the person placed any order after the
//! checkout's last update. The checks compare business times, not arrival order, so the result
//! is the same whether the engine fires the timer before or after a late event; for the same
//! reason a completion after the due time leaves the timer in place, and an update that reports
//! the completion does not restart the clock.

use rust_decimal::Decimal;
use schemas::{Action, CommerceItem, DataFields, KeyKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{
    CheckoutFact, K_CONTACT, K_FIRED, K_LINKED, O_KNOWN, O_TEST, State, keep_earliest,
};
use crate::domain::{RuleError, Timer};
use crate::emit::{Cx, Kind};
use crate::format::{self, text};
use crate::ids::{self, Hasher};
use crate::shopify::{Checkout, CheckoutDelete};
use crate::{items, messages, profile};

/// Timer kind.
pub(crate) const CHECKOUT_TIMER: &str = "abandoned_checkout";

/// At most this many checkouts are remembered per person (oldest resolved ones go first).
const MAX_CHECKOUTS: usize = 32;

fn timer_id(hash: u64) -> String {
    format!("{CHECKOUT_TIMER}:{hash:016x}")
}

/// One cart line as kept in the timer payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
    name: String,
    price: Decimal,
    quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_url: Option<String>,
}

/// What the abandonment event needs, frozen at the checkout's last update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    token: String,
    updated_ms: i64,
    /// The decision time: `updated_ms + abandon_after_minutes`.
    due_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_ms: Option<i64>,
    src: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subtotal: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presentment_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    discount_codes: Vec<String>,
    items: Vec<Line>,
}

fn line(c: &CommerceItem) -> Line {
    let df = |k: &str| {
        c.data_fields
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Line {
        id: c.id.clone(),
        sku: c.sku.clone(),
        name: c.name.clone(),
        price: c.price,
        quantity: c.quantity,
        variant: df("variant"),
        product_id: df("product_id"),
        variant_id: df("variant_id"),
        url: c.url.clone(),
        image_url: c.image_url.clone(),
    }
}

/// `checkouts/create`, `checkouts/update` on a customer or email key.
pub(crate) fn on_checkout(cx: &mut Cx<'_>, state: &mut State, co: &Checkout) {
    if !profile::is_person(cx.key) {
        // Checkout keys hold checkouts without contact details: they can never be abandoned
        // towards anyone, so there is nothing to keep.
        return;
    }
    let Some(token) = text(co.token.as_deref())
        .map(str::to_owned)
        .or_else(|| co.checkout_id().map(|i| i.0.to_string()))
    else {
        return;
    };
    let hash = ids::token_hash(&token);
    let ev = cx.ctx.event_time_ms;
    let updated = co.updated_at.or(co.created_at).map_or(ev, |t| t.0);
    if let Some(c) = &co.customer {
        profile::learn_customer(cx, state, c, updated);
    }
    profile::guest_checkout_consent(cx, state, co.buyer_accepts_marketing, updated);
    let contact = co.email().is_some()
        || co.phone().is_some()
        || (cx.key.kind() == KeyKind::Customer && profile::email(cx.key, state).is_some());
    let cart_hash = text(co.cart_token.as_deref()).map_or(0, ids::token_hash);
    let checkout_id = co.checkout_id().map(|i| i.0);

    // A delete that arrived first left a placeholder: fold it into the real checkout.
    let placeholder = state.checkouts.iter().position(|f| {
        f.token_hash != hash
            && f.updated_ms == 0
            && f.deleted_ms.is_some()
            && ((f.id.is_some() && f.id == checkout_id)
                || (cart_hash != 0 && f.cart_hash == cart_hash))
    });
    let early_delete = placeholder
        .map(|i| state.checkouts.remove(i))
        .and_then(|f| f.deleted_ms);

    let window = abandon_window_ms(cx);
    let fact = state.checkout_mut(hash);
    let was_armed = timer_armed(fact, window);
    // Whether the abandonment clock runs: a timer was armed (or has fired) for this checkout.
    let clocked = fact.flags & K_CONTACT != 0 && fact.updated_ms != 0;
    if let Some(id) = checkout_id {
        fact.id = Some(id);
    }
    if cart_hash != 0 {
        fact.cart_hash = cart_hash;
    }
    if let Some(d) = early_delete {
        keep_earliest(&mut fact.deleted_ms, d);
    }
    if contact {
        fact.flags |= K_CONTACT;
    }
    // An update that reports the completion is bookkeeping, not the buyer at work: its
    // `updated_at` must not restart the abandonment clock, or the outcome would depend on
    // whether it arrived before or after the timer fired.
    let activity = co.completed_at.is_none();
    if let Some(c) = co.completed_at {
        keep_earliest(&mut fact.completed_ms, c.0);
    }
    // The first quiet window decides: an update after the decision time (last update plus the
    // window) neither restarts nor moves the clock, whether it arrives before the timer fires
    // (inside the out-of-order grace) or after.
    let before_decision = !clocked || updated <= fact.updated_ms.saturating_add(window);
    let newer = activity && before_decision && updated > fact.updated_ms;
    if newer {
        fact.updated_ms = updated;
    }
    let latest = activity && updated > fact.last_update_ms;
    if latest {
        fact.last_update_ms = updated;
    }
    let settled = fact.completed_ms.is_some() || fact.deleted_ms.is_some();
    if settled {
        // A settled checkout never sends another cart, so what was sent no longer matters;
        // forgetting it keeps the state the same whether the cart updates arrived before or
        // after the order that completed the checkout.
        fact.cart_sent_hash = 0;
    }
    let link = checkout_id.filter(|_| fact.flags & K_LINKED == 0);
    if link.is_some() {
        fact.flags |= K_LINKED;
    }
    let fact = fact.clone();
    if let Some(id) = link {
        messages::link_checkout(cx, id, co.created_at.map_or(updated, |t| t.0));
    }

    if settled_in_time(&fact, window) {
        if was_armed {
            cx.cancel_timer(timer_id(hash));
        }
        prune(state);
        return;
    }
    if !contact || !activity {
        return;
    }
    let items: Vec<CommerceItem> = co
        .line_items
        .iter()
        .map(|li| items::item(cx.cfg, li, false))
        .collect();
    if newer && cx.cfg.checkout.enabled && fact.flags & K_FIRED == 0 {
        let due = updated + window;
        let snap = Snapshot {
            token: token.clone(),
            updated_ms: updated,
            due_ms: due,
            created_ms: co.created_at.map(|t| t.0),
            src: cx.sources.clone(),
            url: text(co.abandoned_checkout_url.as_deref()).map(str::to_owned),
            value: co.total_price.map(|m| m.0),
            subtotal: co.subtotal_price.map(|m| m.0),
            currency: text(co.currency.as_deref()).map(str::to_owned),
            presentment_currency: text(co.presentment_currency.as_deref()).map(str::to_owned),
            discount_codes: co
                .discount_codes
                .iter()
                .filter_map(|d| text(d.code.as_deref()))
                .map(str::to_owned)
                .collect(),
            items: items.iter().map(line).collect(),
        };
        let payload = serde_json::to_value(&snap).unwrap_or(Value::Null);
        cx.set_timer(CHECKOUT_TIMER, timer_id(hash), due, payload);
    }
    if cx.cfg.checkout.update_cart && !settled && latest {
        let mut h = Hasher::new();
        for i in &items {
            h.add(&i.id)
                .add(&i.price.normalize().to_string())
                .add(&i.quantity.to_string());
        }
        let content = h.finish();
        if content != fact.cart_sent_hash && cx.fresh(Kind::CartUpdated, updated) {
            state.checkout_mut(hash).cart_sent_hash = content;
            let id = ids::command_id(
                cx.shop(),
                "cart",
                &[
                    &ids::subject(cx.key),
                    &format!("{hash:016x}"),
                    &updated.to_string(),
                ],
            );
            cx.command(id, updated, Action::UpdateCart { items });
        }
    }
    prune(state);
}

/// Marks a checkout completed (by an order with its token, or a forwarded completion).
pub(crate) fn complete(cx: &mut Cx<'_>, state: &mut State, hash: u64, at: i64) {
    settle(cx, state, hash, |f| &mut f.completed_ms, at);
}

/// `checkouts/delete` (directly, or forwarded by the checkout key).
pub(crate) fn on_delete(cx: &mut Cx<'_>, state: &mut State, d: &CheckoutDelete) {
    let at = cx.ctx.event_time_ms;
    let id = d.id.map(|i| i.0);
    let by_token = text(d.token.as_deref()).map(ids::token_hash);
    let cart = text(d.cart_token.as_deref()).map_or(0, ids::token_hash);
    let found = state.checkouts.iter().position(|f| {
        by_token == Some(f.token_hash)
            || (id.is_some() && f.id == id)
            || (cart != 0 && f.cart_hash == cart && f.updated_ms != 0)
    });
    let hash = match found.and_then(|i| state.checkouts.get(i)) {
        Some(f) => f.token_hash,
        None => {
            // The checkout has not arrived yet: leave a placeholder it will pick up.
            let tag = format!(
                "delete:{}:{}",
                id.unwrap_or_default(),
                d.cart_token.as_deref().unwrap_or_default()
            );
            let h = ids::fnv64(tag.as_bytes());
            let f = state.checkout_mut(h);
            f.id = id;
            f.cart_hash = cart;
            h
        }
    };
    settle(cx, state, hash, |f| &mut f.deleted_ms, at);
}

/// The abandonment window in milliseconds.
fn abandon_window_ms(cx: &Cx<'_>) -> i64 {
    i64::from(cx.cfg.checkout.abandon_after_minutes) * 60_000
}

/// Whether the checkout completed or was deleted at or before its decision time (last update
/// plus the window). A settlement after that time does not stop the abandonment: `fire`
/// decides on the same business times, so arrival order cannot change the outcome.
fn settled_in_time(f: &CheckoutFact, window: i64) -> bool {
    let due = f.updated_ms.saturating_add(window);
    f.completed_ms.is_some_and(|c| c <= due) || f.deleted_ms.is_some_and(|d| d <= due)
}

/// Whether a checkout's abandonment timer is pending: seen, not settled in time, not fired.
fn timer_armed(f: &CheckoutFact, window: i64) -> bool {
    f.updated_ms != 0 && f.flags & K_FIRED == 0 && !settled_in_time(f, window)
}

/// Records the earliest completion or deletion (`slot` picks which) and cancels a pending timer
/// when that settles the checkout in time.
fn settle(
    cx: &mut Cx<'_>,
    state: &mut State,
    hash: u64,
    slot: fn(&mut CheckoutFact) -> &mut Option<i64>,
    at: i64,
) {
    let window = abandon_window_ms(cx);
    let fact = state.checkout_mut(hash);
    let was_armed = timer_armed(fact, window);
    keep_earliest(slot(fact), at);
    // Settled: no cart is sent for it again (see `on_checkout`).
    fact.cart_sent_hash = 0;
    if was_armed && !timer_armed(fact, window) {
        cx.cancel_timer(timer_id(hash));
    }
    prune(state);
}

/// Drops the oldest resolved checkouts beyond [`MAX_CHECKOUTS`].
fn prune(state: &mut State) {
    while state.checkouts.len() > MAX_CHECKOUTS {
        let resolved = |f: &CheckoutFact| {
            f.flags & K_FIRED != 0 || f.completed_ms.is_some() || f.deleted_ms.is_some()
        };
        let victim = state
            .checkouts
            .iter()
            .enumerate()
            .filter(|(_, f)| resolved(f))
            .min_by_key(|(_, f)| (f.updated_ms, f.token_hash))
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                state.checkouts.remove(i);
            }
            None => break,
        }
    }
}

/// The timer fired: send `checkout_abandoned` unless something settled the checkout in time.
pub(crate) fn fire(cx: &mut Cx<'_>, state: &mut State, timer: &Timer) -> Result<(), RuleError> {
    let snap: Snapshot =
        serde_json::from_value(timer.payload.clone()).map_err(|e| RuleError::Failed {
            rule: "abandoned_checkout",
            message: format!("bad timer payload: {e}"),
        })?;
    let hash = ids::token_hash(&snap.token);
    let due = snap.due_ms;
    let Ok(i) = state
        .checkouts
        .binary_search_by_key(&hash, |f| f.token_hash)
    else {
        return Ok(());
    };
    let Some(fact) = state.checkouts.get_mut(i) else {
        return Ok(());
    };
    if fact.updated_ms != snap.updated_ms || fact.flags & K_FIRED != 0 {
        return Ok(());
    }
    fact.flags |= K_FIRED;
    let settled = fact.completed_ms.is_some_and(|c| c <= due)
        || fact.deleted_ms.is_some_and(|d| d <= due)
        || fact.flags & K_CONTACT == 0;
    let since = fact.updated_ms;
    let ordered =
        state.orders.iter().any(|o| {
            o.has(O_KNOWN) && !o.has(O_TEST) && o.placed_ms >= since && o.placed_ms <= due
        }) || state.person.as_ref().is_some_and(|p| {
            p.external_orders
                .iter()
                .any(|(_, t)| *t >= since && *t <= due)
        });
    if settled || ordered || !cx.cfg.checkout.enabled {
        return Ok(());
    }
    cx.sources.clone_from(&snap.src);
    let mut f = DataFields::new();
    if let Some(u) = &snap.url {
        f.insert("checkout_url".into(), Value::String(u.clone()));
    }
    if let Some(v) = snap.value {
        f.insert("value".into(), format::money(v));
    }
    if let Some(v) = snap.subtotal {
        f.insert("subtotal".into(), format::money(v));
    }
    for (k, v) in [
        ("currency", &snap.currency),
        ("presentment_currency", &snap.presentment_currency),
    ] {
        if let Some(v) = v {
            f.insert(k.into(), Value::String(v.clone()));
        }
    }
    if !snap.discount_codes.is_empty() {
        f.insert(
            "discount_codes".into(),
            Value::from(snap.discount_codes.clone()),
        );
    }
    let items: Vec<Value> = snap
        .items
        .iter()
        .map(|l| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), Value::String(l.id.clone()));
            m.insert("name".into(), Value::String(l.name.clone()));
            m.insert("price".into(), format::money(l.price));
            m.insert("quantity".into(), Value::from(l.quantity));
            for (k, v) in [
                ("sku", &l.sku),
                ("variant", &l.variant),
                ("product_id", &l.product_id),
                ("variant_id", &l.variant_id),
                ("url", &l.url),
                ("imageUrl", &l.image_url),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), Value::String(v.clone()));
                }
            }
            Value::Object(m)
        })
        .collect();
    f.insert(
        "item_count".into(),
        Value::from(snap.items.iter().map(|l| l.quantity).sum::<i64>()),
    );
    f.insert(
        "item_names".into(),
        Value::from(
            snap.items
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>(),
        ),
    );
    f.insert("items".into(), Value::Array(items));
    f.insert("abandoned_at".into(), format::date(snap.updated_ms));
    if let Some(c) = snap.created_ms {
        f.insert("created_at".into(), format::date(c));
    }
    let name = cx.cfg.events.checkout_abandoned.clone();
    let id = ids::command_id(cx.shop(), "checkout-abandoned", &[&snap.token]);
    cx.event(Kind::CheckoutAbandoned, &name, id, due, f);
    Ok(())
}
