//! GDPR: `customers/redact` purges and forgets, `customers/data_request` reports, `shop/redact`.
//!
//! A redaction sends the configured Iterable call (`users/forget` by default) for the identity
//! as it was, asks the person's email key and order keys to purge as well, then purges the key
//! (the engine writes a changelog tombstone and drops its timers). `shop/redact` arrives on the
//! shop key `{shop}/s/-`; the rules answer with `Purge` there, and the engine treats a purge of
//! the shop key as a purge of every key of that shop (see `Effect::Purge`).
//!
//! Every purge is final: the engine records the purged key in its erasure registry, and drops
//! any later input for it, including this module's own forwarded redacts on a replay
//! (processor/src/erasure.rs). The rules therefore never see an erased person again.

use schemas::{Action, DeleteMode, KeyKind};
use serde_json::{Value, json};

use crate::aggregate::State;
use crate::config::RedactMode;
use crate::emit::{Cx, Pending};
use crate::format;
use crate::messages::{DATA_REQUEST, REDACT};
use crate::shopify::Compliance;
use crate::{ids, ltv, profile};
use schemas::{CustomerKey, ShopDomain};

fn key(cx: &Cx<'_>, kind: KeyKind, id: &str) -> Option<CustomerKey> {
    ShopDomain::parse(cx.shop())
        .ok()
        .map(|s| CustomerKey::new(&s, kind, id))
}

/// The person's email key: the payload's address, else the one the state knows.
fn email_key(cx: &Cx<'_>, state: &State, c: Option<&Compliance>) -> Option<CustomerKey> {
    let email = c
        .and_then(|c| c.customer.as_ref())
        .and_then(|p| format::text(p.email.as_deref()))
        .map(str::to_lowercase);
    let e = email.or_else(|| profile::email(cx.key, state).map(str::to_owned))?;
    key(cx, KeyKind::Email, &e)
}

/// Asks each entity key of `kind` to purge what it holds of this person.
fn redact_entities(cx: &mut Cx<'_>, kind: KeyKind, label: &str, ids: Vec<u64>) {
    for id in ids {
        if let Some(to) = key(cx, kind, &id.to_string()) {
            cx.send(
                to,
                REDACT,
                &format!("redact-{label}-{id}"),
                &json!({ "reason": "customers/redact" }),
            );
        }
    }
}

/// `customers/redact` (or a forwarded `tillstream/redact`) on a person key.
pub(crate) fn redact(cx: &mut Cx<'_>, state: &mut State, c: Option<&Compliance>) {
    let mode = match cx.cfg.gdpr.redact {
        RedactMode::Forget => Some(DeleteMode::Forget),
        RedactMode::Delete => Some(DeleteMode::Delete),
        RedactMode::None => None,
    };
    if let (Some(mode), Some(user)) = (mode, profile::erasure_identity(cx.cfg, cx.key, state)) {
        // A guest key that never reached Iterable has nothing there to delete.
        if cx.key.kind() == KeyKind::Customer || state.person.is_some() || !state.orders.is_empty()
        {
            let id = ids::command_id(cx.shop(), "redact", &[&ids::subject(cx.key), &cx.tag]);
            cx.pre.push(Pending {
                id,
                time_ms: cx.ctx.event_time_ms,
                action: Action::DeleteUser { mode },
                user: Some(user),
            });
        }
    }
    if cx.key.kind() == KeyKind::Customer {
        // The same person may have shopped as a guest before registering.
        if let Some(to) = email_key(cx, state, c) {
            cx.send(
                to,
                REDACT,
                "redact-email",
                &json!({ "reason": "customers/redact" }),
            );
        }
    }
    // Order and checkout keys remember this person as an owner and may hold parked payloads.
    let mut orders: Vec<u64> = c
        .map(|c| c.orders_to_redact.iter().map(|i| i.0).collect())
        .unwrap_or_default();
    orders.extend(state.orders.iter().map(|o| o.id));
    orders.sort_unstable();
    orders.dedup();
    redact_entities(cx, KeyKind::Order, "order", orders);
    let checkouts: Vec<u64> = state.checkouts.iter().filter_map(|k| k.id).collect();
    redact_entities(cx, KeyKind::Checkout, "checkout", checkouts);
    *state = State::default();
    cx.purge = true;
}

/// `customers/data_request` (or a forwarded `tillstream/data-request`): what the state holds.
pub(crate) fn data_request(cx: &mut Cx<'_>, state: &State, c: Option<&Compliance>) {
    let s = ltv::summary(state);
    let person = state.person.as_deref();
    let orders: Vec<Value> = state
        .orders
        .iter()
        .map(|o| {
            json!({
                "order_id": o.id.to_string(),
                "placed_at": (o.placed_ms != 0).then(|| format::date(o.placed_ms)),
                "total": format::money(o.total),
                "financial_status": o.status.as_str(),
                "counted": ltv::counted(o),
                "kept": format::money(ltv::kept(o)),
                "refunds": o.refunds.iter().map(|r| json!({"refund_id": r.id.to_string(), "at": format::date(r.at_ms), "amount": format::money(r.shop)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let request_id = c
        .and_then(|c| c.data_request.as_ref())
        .and_then(|d| d.id)
        .map(|i| i.0.to_string());
    let report = json!({
        "key": cx.key.as_str(),
        "shop_domain": cx.shop(),
        "request_id": request_id,
        "email": profile::email(cx.key, state),
        "profile": person.and_then(|p| p.profile.clone()).map(|p| json!({
            "first_name": p.first_name, "last_name": p.last_name, "phone": p.phone, "state": p.state,
            "created_at": p.created_ms.map(format::date), "city": p.city, "province_code": p.province_code,
            "country_code": p.country_code, "zip": p.zip,
        })),
        "tags": person.and_then(|p| p.tags.as_ref()).map(|t| t.value.clone()),
        "email_consent": person.and_then(|p| p.email_consent).map(|c| c.state.as_str()),
        "sms_consent": person.and_then(|p| p.sms_consent).map(|c| c.state.as_str()),
        "lifetime_value": format::money(s.value),
        "orders_count": s.count,
        "vip_tier": profile::tier_name(cx.cfg, person.map_or(0, |p| p.tier)),
        "lapsed": person.is_some_and(|p| p.lapse.is_some()),
        "orders": orders,
        "checkouts": state.checkouts.len(),
        "iterable_lists": person.map(|p| p.lists.clone()).unwrap_or_default(),
    });
    cx.tail.push(crate::domain::Effect::DataReport(report));
    if c.is_some()
        && cx.key.kind() == KeyKind::Customer
        && let Some(to) = email_key(cx, state, c)
    {
        cx.send(
            to,
            DATA_REQUEST,
            "data-request",
            &json!({ "request_id": request_id }),
        );
    }
}
