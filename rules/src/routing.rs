//! The cross-key protocol: bringing refunds, deletes and completions to the person they concern.
//!
//! Shopify's `refunds/create` and `orders/delete` carry only an order id, and `checkouts/delete`
//! only a checkout id, so they arrive on entity keys (`o/{order}`, `k/{checkout}`). Internal
//! messages (topic `tillstream/...`, JSON body, delivery id = source delivery id + purpose):
//!
//! | Topic | To | Body | Meaning |
//! |---|---|---|---|
//! | `tillstream/order-link` | `o/{order_id}` | `{order_id, owner, at_ms}` | this person owns the order |
//! | `tillstream/checkout-link` | `k/{checkout_id}` | `{checkout_id, owner, at_ms}` | this person owns the checkout |
//! | `tillstream/checkout-completed` | `e/{email}` | `{order_id, checkout_token, placed_ms, owner}` | an order by this email was placed under a customer key |
//! | `tillstream/redact` | `e/{email}`, `o/{id}`, `k/{id}` | `{reason}` | purge (GDPR) |
//! | `tillstream/data-request` | `e/{email}` | `{request_id}` | report what the key holds |
//!
//! An entity key remembers its owner (newest link wins) and forwards refunds and deletes to it
//! as the original envelope; what arrives before the link is parked (bounded) and forwarded
//! when the link comes.

use schemas::{CustomerKey, EventSource, KeyKind, ShopDomain, ShopifyEnvelope};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aggregate::{Link, O_LINKED, Owner, Parked, State};
use crate::domain::RuleError;
use crate::emit::Cx;
use crate::ids;
use crate::{checkout, profile};

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

/// At most this many envelopes wait on an entity key for their owner.
const MAX_PARKED: usize = 32;

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

/// Tells `o/{order}` that this person owns the order (once per order).
pub(crate) fn link_order(cx: &mut Cx<'_>, state: &mut State, order_id: u64, at_ms: i64) {
    if !profile::is_person(cx.key) {
        return;
    }
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

/// `tillstream/checkout-completed` on an email key.
pub(crate) fn on_completion(cx: &mut Cx<'_>, state: &mut State, m: &CompletionMsg) {
    if let Some(t) = m.checkout_token.as_deref().filter(|t| !t.trim().is_empty()) {
        checkout::complete(cx, state, ids::token_hash(t), m.placed_ms);
    }
    let Ok(order_id) = m.order_id.parse::<u64>() else {
        return;
    };
    crate::email_index::note_external_order(state.person_mut(), order_id, m.placed_ms);
}

fn park(input: &ShopifyEnvelope) -> Result<Parked, RuleError> {
    let body = String::from_utf8(input.body.clone()).map_err(|_| RuleError::Unparseable {
        topic: input.topic.clone(),
        message: "body is not UTF-8".into(),
    })?;
    Ok(Parked {
        topic: input.topic.clone(),
        delivery_id: input.delivery_id.clone(),
        event_id: input.event_id.clone(),
        api_version: input.api_version.clone(),
        triggered_at_ms: input.triggered_at_ms,
        received_at_ms: input.received_at_ms,
        backfill: input.source == EventSource::Backfill,
        webhook_name: input.webhook_name.clone(),
        body,
    })
}

fn unpark(p: Parked, to: &CustomerKey) -> ShopifyEnvelope {
    ShopifyEnvelope {
        delivery_id: p.delivery_id,
        event_id: p.event_id,
        topic: p.topic,
        shop_domain: to.shop().to_owned(),
        api_version: p.api_version,
        triggered_at_ms: p.triggered_at_ms,
        received_at_ms: p.received_at_ms,
        routing_key: to.as_str().to_owned(),
        source: if p.backfill {
            EventSource::Backfill
        } else {
            EventSource::Webhook
        },
        webhook_name: p.webhook_name,
        body: p.body.into_bytes(),
    }
}

/// Everything an order or checkout key does.
pub(crate) fn on_entity(
    cx: &mut Cx<'_>,
    state: &mut State,
    input: &ShopifyEnvelope,
) -> Result<(), RuleError> {
    match input.topic.as_str() {
        ORDER_LINK | CHECKOUT_LINK => {
            let m: LinkMsg = crate::shopify::parse(&input.topic, &input.body)?;
            let Ok(owner) = CustomerKey::parse(&m.owner) else {
                return Err(RuleError::Unparseable {
                    topic: input.topic.clone(),
                    message: format!("bad owner key {:?}", m.owner),
                });
            };
            let link = state.link.get_or_insert_with(Box::default);
            let newer = match &link.owner {
                Owner::Unknown => true,
                Owner::Key(k) => (m.at_ms, m.owner.as_str()) > (link.at_ms, k.as_str()),
            };
            if newer {
                link.owner = Owner::Key(m.owner.clone());
                link.at_ms = m.at_ms;
            }
            let Owner::Key(current) = &link.owner else {
                return Ok(());
            };
            let to = CustomerKey::parse(current).unwrap_or(owner);
            for p in std::mem::take(&mut link.parked) {
                cx.tail.push(crate::domain::Effect::Forward {
                    to: to.clone(),
                    envelope: Box::new(unpark(p, &to)),
                });
            }
        }
        "refunds/create" | "orders/delete" | "checkouts/delete" | "order_transactions/create" => {
            let link = state.link.get_or_insert_with(Box::default);
            match &link.owner {
                Owner::Key(k) => match CustomerKey::parse(k) {
                    Ok(to) => cx.forward_input(to),
                    Err(_) => link.owner = Owner::Unknown,
                },
                Owner::Unknown => {
                    let p = park(input)?;
                    if !link.parked.iter().any(|x| x.delivery_id == p.delivery_id) {
                        link.parked.push(p);
                        if link.parked.len() > MAX_PARKED {
                            link.parked.remove(0);
                        }
                    }
                }
            }
        }
        REDACT => cx.purge = true,
        _ => {}
    }
    if state.link.as_ref().is_some_and(|l| **l == Link::default()) {
        state.link = None;
    }
    Ok(())
}
