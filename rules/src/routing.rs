//! The cross-key protocol's receiving end: bringing refunds, deletes and completions to the person they concern.
//!
//! Shopify's `refunds/create` and `orders/delete` carry only an order id, and `checkouts/delete`
//! only a checkout id, so they arrive on entity keys (`o/{order}`, `k/{checkout}`). The person's
//! key links them (`tillstream/order-link`, `tillstream/checkout-link`; the messages and their
//! senders are in `messages`). An entity key remembers its owner (newest link wins) and forwards
//! refunds and deletes to it as the original envelope; what arrives before the link is parked
//! (bounded) and forwarded when the link comes.
use schemas::{CustomerKey, EventSource, ShopifyEnvelope};

use crate::aggregate::{Link, Owner, Parked, State};
use crate::checkout;
use crate::domain::RuleError;
use crate::emit::Cx;
use crate::ids;
use crate::messages::{CHECKOUT_LINK, CompletionMsg, LinkMsg, ORDER_LINK, REDACT};

/// At most this many envelopes wait on an entity key for their owner.
const MAX_PARKED: usize = 32;

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
