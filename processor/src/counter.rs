//! The order counter: a deliberately small rule set that proves and benchmarks the engine.
//!
//! Per key it counts orders and emits `order_counted` with the running count; it arms a
//! `quiet_period` timer after each order (re-armed by the next one) that emits
//! `quiet_period_ended` when it fires; and it exercises the cross-key path the marketing rules
//! use: an order forwards a link to its order key, and a refund arriving on the order key is
//! forwarded to the key that placed the order, where it is counted. `shop/redact` purges the
//! whole shop, on every partition.

use rules::{Ctx, Effect, RuleError, Rules, Timer};
use schemas::{
    Action, CustomerKey, IterableCommand, KeyKind, ShopDomain, ShopifyEnvelope, UserRef,
    iterable_id,
};
use serde::{Deserialize, Serialize};

/// The order counter rules.
#[derive(Debug, Clone)]
pub struct OrderCounter {
    /// Delay of the quiet-period timer after each order, in ms.
    pub timer_delay_ms: i64,
}

/// Per-key state of the order counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// Orders seen on this key.
    #[serde(default)]
    pub orders: u64,
    /// Refunds that reached this key.
    #[serde(default)]
    pub refunds: u64,
    /// On an order key: the key that placed the order.
    #[serde(default)]
    pub owner: Option<String>,
    /// On an order key: refunds that arrived before the owner was known, as (delivery id,
    /// body). The delivery id travels with the refund, so the forwarded refund (and the
    /// command it leads to) has the same id whichever arrived first, link or refund.
    #[serde(default)]
    pub parked: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
}

#[derive(Deserialize, Serialize)]
struct Link {
    order_id: u64,
    owner: String,
}

fn unparseable(env: &ShopifyEnvelope, e: &serde_json::Error) -> RuleError {
    RuleError::Unparseable {
        topic: env.topic.clone(),
        message: e.to_string(),
    }
}

fn event(
    key: &CustomerKey,
    env_shop: &str,
    name: &str,
    id_parts: &[&str],
    at_ms: i64,
    sources: Vec<String>,
    fields: serde_json::Value,
) -> Effect {
    let mut parts = vec![env_shop, name];
    parts.extend_from_slice(id_parts);
    Effect::Command(IterableCommand {
        command_id: iterable_id(&parts),
        shop_domain: env_shop.to_owned(),
        customer_key: key.as_str().to_owned(),
        user: UserRef {
            user_id: Some(key.id().to_owned()),
            email: None,
        },
        event_time_ms: at_ms,
        source_ids: sources,
        action: Action::TrackEvent {
            event_name: name.to_owned(),
            created_at_s: at_ms.div_euclid(1000),
            data_fields: fields.as_object().cloned().unwrap_or_default(),
        },
    })
}

impl OrderCounter {
    /// [`Rules::on_event`] on a state it may leave half changed on an error.
    fn apply(
        &self,
        key: &CustomerKey,
        state: &mut CounterState,
        env: &ShopifyEnvelope,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError> {
        let shop = env.shop_domain.as_str();
        let mut out = Vec::new();
        match (env.topic.as_str(), key.kind()) {
            ("shop/redact", KeyKind::Shop) => out.push(Effect::Purge),
            ("tillstream/order-link", KeyKind::Order) => {
                let link: Link =
                    serde_json::from_slice(&env.body).map_err(|e| unparseable(env, &e))?;
                state.owner = Some(link.owner.clone());
                for (delivery, body) in std::mem::take(&mut state.parked) {
                    out.push(forward_refund(&link.owner, &delivery, &body, env)?);
                }
            }
            ("refunds/create", KeyKind::Order) => {
                let body = String::from_utf8_lossy(&env.body).into_owned();
                match &state.owner {
                    Some(owner) => out.push(forward_refund(owner, &env.delivery_id, &body, env)?),
                    None => state.parked.push((env.delivery_id.clone(), body)),
                }
            }
            ("refunds/create" | "tillstream/refund", _) => {
                state.refunds += 1;
                out.push(event(
                    key,
                    shop,
                    "refund_counted",
                    &[&env.delivery_id],
                    ctx.event_time_ms,
                    vec![env.delivery_id.clone()],
                    serde_json::json!({"refunds": state.refunds}),
                ));
            }
            (t, KeyKind::Customer | KeyKind::Email) if t.starts_with("orders/") => {
                let order: Order =
                    serde_json::from_slice(&env.body).map_err(|e| unparseable(env, &e))?;
                state.orders += 1;
                out.push(event(
                    key,
                    shop,
                    "order_counted",
                    &[&env.delivery_id],
                    ctx.event_time_ms,
                    vec![env.delivery_id.clone()],
                    serde_json::json!({"orders": state.orders, "order_id": order.id}),
                ));
                out.push(Effect::SetTimer(Timer {
                    kind: "quiet_period".into(),
                    timer_id: "quiet".into(),
                    due_ms: ctx.event_time_ms.saturating_add(self.timer_delay_ms),
                    payload: serde_json::json!({"after_delivery": env.delivery_id}),
                }));
                let shop_domain = ShopDomain::parse(shop).map_err(|e| RuleError::Failed {
                    rule: "order_counter",
                    message: e.to_string(),
                })?;
                let link = Link {
                    order_id: order.id,
                    owner: key.as_str().to_owned(),
                };
                out.push(Effect::Forward {
                    to: CustomerKey::new(&shop_domain, KeyKind::Order, &order.id.to_string()),
                    envelope: Box::new(ShopifyEnvelope {
                        delivery_id: format!("link-{}", env.delivery_id),
                        topic: "tillstream/order-link".into(),
                        body: serde_json::to_vec(&link).map_err(|e| RuleError::Failed {
                            rule: "order_counter",
                            message: e.to_string(),
                        })?,
                        ..env.clone()
                    }),
                });
            }
            _ => {}
        }
        Ok(out)
    }
}

impl Rules for OrderCounter {
    type State = CounterState;

    fn on_event(
        &self,
        key: &CustomerKey,
        state: &mut CounterState,
        env: &ShopifyEnvelope,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError> {
        // A failed input leaves the state as it was (the engine keeps it).
        let mut next = state.clone();
        let out = self.apply(key, &mut next, env, ctx)?;
        *state = next;
        Ok(out)
    }

    fn on_timer(
        &self,
        key: &CustomerKey,
        state: &mut CounterState,
        timer: &Timer,
        _ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError> {
        let due = timer.due_ms.to_string();
        Ok(vec![event(
            key,
            key.shop(),
            "quiet_period_ended",
            &[key.id(), &due],
            timer.due_ms,
            vec![],
            serde_json::json!({"orders": state.orders}),
        )])
    }
}

/// Forwards a refund (delivered as `delivery`) to the key that placed its order.
fn forward_refund(
    owner: &str,
    delivery: &str,
    body: &str,
    env: &ShopifyEnvelope,
) -> Result<Effect, RuleError> {
    let to = CustomerKey::parse(owner).map_err(|e| RuleError::Failed {
        rule: "order_counter",
        message: e.to_string(),
    })?;
    Ok(Effect::Forward {
        to,
        envelope: Box::new(ShopifyEnvelope {
            delivery_id: format!("refund-{delivery}"),
            topic: "tillstream/refund".into(),
            body: body.as_bytes().to_vec(),
            ..env.clone()
        }),
    })
}
