//! The messages keys send each other: topics, bodies and the senders (handled in `routing`, `email_index` and `gdpr`).
//!
//! Shopify's `refunds/create` and `orders/delete` carry only an order id, and `checkouts/delete`
//! only a checkout id, so they arrive on entity keys (`o/{order}`, `k/{checkout}`); a guest's
//! activity arrives on its email key (`e/{email}`), which a customer key may own. Internal
//! messages (topic `tillstream/...`, JSON body, delivery id = source delivery id + purpose):
//!
//! | Topic | To | Body | Meaning |
//! |---|---|---|---|
//! | `tillstream/order-link` | `o/{order_id}` | `{order_id, owner, at_ms}` | this person owns the order |
//! | `tillstream/checkout-link` | `k/{checkout_id}` | `{checkout_id, owner, at_ms}` | this person owns the checkout |
//! | `tillstream/checkout-completed` | `e/{email}` | `{order_id, checkout_token, placed_ms, owner}` | an order by this email was placed under a customer key |
//! | `tillstream/email-claim` | `e/{email}` | `{owner, at_ms, held}` | this is (`held`) / is no longer my current email |
//! | `tillstream/redact` | `e/{email}`, `o/{id}`, `k/{id}` | `{reason}` | purge (GDPR) |
//! | `tillstream/data-request` | `e/{email}` | `{request_id}` | report what the key holds |
//!
//! The email key's replies (`tillstream/guest-history`, `tillstream/checkout-due`) are its own
//! (`email_index`). Senders here depend on nothing but the state and the output context, so
//! every rule module can send without importing the one that handles the message.

use schemas::{CustomerKey, KeyKind, ShopDomain};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aggregate::{O_LINKED, State};
use crate::emit::Cx;

/// Internal topics.
pub const ORDER_LINK: &str = "tillstream/order-link";
/// See the module table.
pub const CHECKOUT_LINK: &str = "tillstream/checkout-link";
/// See the module table.
pub const CHECKOUT_COMPLETED: &str = "tillstream/checkout-completed";
/// See the module table.
pub const REDACT: &str = "tillstream/redact";
/// See the module table.
pub const DATA_REQUEST: &str = "tillstream/data-request";
/// See the module table.
pub const EMAIL_CLAIM: &str = "tillstream/email-claim";

/// Body of `tillstream/order-link` and `tillstream/checkout-link`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkMsg {
    /// The owning key.
    pub owner: String,
    /// The order (order links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The checkout (checkout links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    /// Business time of the linking payload; the newest link wins.
    pub at_ms: i64,
}

/// Body of `tillstream/checkout-completed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionMsg {
    /// The order.
    pub order_id: String,
    /// The checkout it completed, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_token: Option<String>,
    /// When the order was placed.
    pub placed_ms: i64,
    /// The key that holds the order.
    pub owner: String,
}

fn key(cx: &Cx<'_>, kind: KeyKind, id: &str) -> Option<CustomerKey> {
    ShopDomain::parse(cx.shop())
        .ok()
        .map(|s| CustomerKey::new(&s, kind, id))
}

/// Tells `o/{order}` that this person owns the order (once per order; the caller checks that
/// the key is a person).
pub(crate) fn link_order(cx: &mut Cx<'_>, state: &mut State, order_id: u64, at_ms: i64) {
    let fact = state.order_mut(order_id);
    if fact.has(O_LINKED) {
        return;
    }
    fact.flags |= O_LINKED;
    if let Some(to) = key(cx, KeyKind::Order, &order_id.to_string()) {
        let body = json!(LinkMsg {
            owner: cx.key.as_str().to_owned(),
            order_id: Some(order_id.to_string()),
            checkout_id: None,
            at_ms
        });
        cx.send(to, ORDER_LINK, "order-link", &body);
    }
}

/// Tells `k/{checkout}` that this person owns the checkout.
pub(crate) fn link_checkout(cx: &mut Cx<'_>, checkout_id: u64, at_ms: i64) {
    if let Some(to) = key(cx, KeyKind::Checkout, &checkout_id.to_string()) {
        let body = json!(LinkMsg {
            owner: cx.key.as_str().to_owned(),
            order_id: None,
            checkout_id: Some(checkout_id.to_string()),
            at_ms
        });
        cx.send(to, CHECKOUT_LINK, "checkout-link", &body);
    }
}

/// Tells `e/{email}` that an order by that email was placed here, so a guest checkout pending
/// there does not fire.
pub(crate) fn send_completion(
    cx: &mut Cx<'_>,
    email: &str,
    order_id: u64,
    token: Option<&str>,
    placed_ms: i64,
) {
    if let Some(to) = key(cx, KeyKind::Email, email) {
        let body = json!(CompletionMsg {
            order_id: order_id.to_string(),
            checkout_token: token.map(str::to_owned),
            placed_ms,
            owner: cx.key.as_str().to_owned(),
        });
        cx.send(to, CHECKOUT_COMPLETED, "checkout-completed", &body);
    }
}

/// Body of `tillstream/email-claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimMsg {
    /// The customer key.
    pub owner: String,
    /// Business time of the email change.
    pub at_ms: i64,
    /// Claimed (true) or released (false).
    pub held: bool,
}

/// A customer key's current email changed from `old` to `new` (at the email's business time):
/// release the old address, claim the new one.
pub(crate) fn email_changed(cx: &mut Cx<'_>, old: Option<&str>, new: &str, at_ms: i64) {
    if let Some(old) = old {
        send_claim(cx, old, false, at_ms);
    }
    send_claim(cx, new, true, at_ms);
}

/// The customer key lets go of its email (the customer was deleted).
pub(crate) fn release(cx: &mut Cx<'_>, email: &str, at_ms: i64) {
    send_claim(cx, email, false, at_ms);
}

fn send_claim(cx: &mut Cx<'_>, email: &str, held: bool, at_ms: i64) {
    let Some(to) = key(cx, KeyKind::Email, email) else {
        return;
    };
    let body = json!(ClaimMsg {
        owner: cx.key.as_str().to_owned(),
        at_ms,
        held
    });
    let purpose = if held { "email-claim" } else { "email-release" };
    cx.send(to, EMAIL_CLAIM, purpose, &body);
}
