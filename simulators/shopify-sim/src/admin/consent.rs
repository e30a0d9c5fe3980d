//! Consent mutations of the Admin API fake: `customerEmailMarketingConsentUpdate` and
//! `customerSmsMarketingConsentUpdate` (shopify.md "Writing consent back", S30).
//!
//! Input comes from the `input` variable (`{customerId, emailMarketingConsent |
//! smsMarketingConsent: {marketingState, marketingOptInLevel?, consentUpdatedAt?}}`); the
//! answer is `{customer{id, email|smsMarketingConsent{...}}, userErrors[{field, message,
//! code}]}` whatever the selection set asks for (the fake does not parse GraphQL). Only
//! `SUBSCRIBED`, `UNSUBSCRIBED` and `PENDING` can be set; other states of the enum are
//! `userErrors`, values outside the enums are top-level GraphQL errors, as enum coercion
//! fails before the resolver runs. A change of state or opt-in level updates the customer
//! (and its bulk-query node) and makes Shopify send the consent topic
//! (`customers_email_marketing_consent/update` / `customers_marketing_consent/update`) and
//! `customers/update` (2025-01+ shape, without consent fields), signed, to the configured
//! receiver. Setting what is already there changes nothing and sends nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::admin::store::AdminStore;
use crate::delivery::{Delivery, DeliveryKind, uuid};
use crate::model::{Action, Consent, ConsentState, CustomerSnap, Subject, Topic};
use crate::payloads::{Ctx, render};
use crate::sender::SendOptions;

/// Which mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Email,
    Sms,
}

impl Channel {
    /// Recognises the mutation by its root field.
    pub(crate) fn of_query(query: &str) -> Option<Channel> {
        if query.contains("customerEmailMarketingConsentUpdate") {
            Some(Channel::Email)
        } else if query.contains("customerSmsMarketingConsentUpdate") {
            Some(Channel::Sms)
        } else {
            None
        }
    }

    fn root(self) -> &'static str {
        match self {
            Channel::Email => "customerEmailMarketingConsentUpdate",
            Channel::Sms => "customerSmsMarketingConsentUpdate",
        }
    }

    fn input_field(self) -> &'static str {
        match self {
            Channel::Email => "emailMarketingConsent",
            Channel::Sms => "smsMarketingConsent",
        }
    }

    fn topic(self) -> Topic {
        match self {
            Channel::Email => Topic::EmailConsentUpdate,
            Channel::Sms => Topic::SmsConsentUpdate,
        }
    }
}

/// API version the fake's webhooks are serialised with (2025-01+ customer shape).
const WEBHOOK_API_VERSION: &str = "2026-07";

/// Cost of a mutation in points (Shopify: 10 per mutation).
pub(crate) const MUTATION_COST: f64 = 10.0;

/// Result of a mutation: the GraphQL body and the webhooks to send.
pub(crate) struct Outcome {
    pub(crate) body: Value,
    pub(crate) webhooks: Vec<Delivery>,
    /// The customer changed, if any.
    pub(crate) customer_id: Option<u64>,
}

fn top_level_error(message: String) -> Outcome {
    Outcome {
        body: json!({"errors": [{"message": message, "extensions": {"code": "INVALID_VARIABLE"}}]}),
        webhooks: Vec::new(),
        customer_id: None,
    }
}

fn user_error(ch: Channel, field: &[&str], message: &str, code: &str) -> Outcome {
    Outcome {
        body: json!({"data": {ch.root(): {"customer": null, "userErrors": [
            {"field": field, "message": message, "code": code}]}}}),
        webhooks: Vec::new(),
        customer_id: None,
    }
}

/// The answer for a store that has no customers to change (a synthetic store).
pub(crate) fn not_found(ch: Channel) -> Outcome {
    user_error(ch, &["customerId"], "Customer not found", "INVALID")
}

fn parse_state(s: &str) -> Option<ConsentState> {
    Some(match s {
        "SUBSCRIBED" => ConsentState::Subscribed,
        "UNSUBSCRIBED" => ConsentState::Unsubscribed,
        "PENDING" => ConsentState::Pending,
        "NOT_SUBSCRIBED" => ConsentState::NotSubscribed,
        _ => return None,
    })
}

fn parse_level(s: &str) -> Option<&'static str> {
    Some(match s {
        "SINGLE_OPT_IN" => "single_opt_in",
        "CONFIRMED_OPT_IN" => "confirmed_opt_in",
        "UNKNOWN" => "unknown",
        _ => return None,
    })
}

/// The consent object of the GraphQL answer and the inspection view.
pub(crate) fn consent_json(c: Option<&Consent>, sms: bool) -> Value {
    let Some(c) = c else {
        return Value::Null;
    };
    let mut v = json!({
        "marketingState": c.state.as_str().to_uppercase(),
        "marketingOptInLevel": c.opt_in_level.to_uppercase(),
        "consentUpdatedAt": c.updated_at.map(|t| t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true)),
    });
    if sms {
        v["consentCollectedFrom"] = json!("OTHER");
    }
    v
}

/// `GET /_sim/customers/{id}`: the customer's current consent.
pub(crate) fn customer_view(c: &CustomerSnap, updates: u64) -> Value {
    json!({
        "id": format!("gid://shopify/Customer/{}", c.id),
        "legacyResourceId": c.id.to_string(),
        "email": c.email,
        "phone": c.phone,
        "updatedAt": c.updated_at.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true),
        "emailMarketingConsent": consent_json(Some(&c.email_consent), false),
        "smsMarketingConsent": consent_json(c.sms_consent.as_ref(), true),
        "consentMutationsApplied": updates,
    })
}

/// Runs a consent mutation against `store` at wall-clock time `now`; `seq` numbers the
/// webhooks it produces (it seeds their ids).
pub(crate) fn mutate(
    store: &mut AdminStore,
    ch: Channel,
    vars: &Value,
    now: DateTime<Utc>,
    seq: u64,
) -> Outcome {
    let Some(input) = vars.get("input").filter(|v| v.is_object()) else {
        return top_level_error(format!(
            "Variable $input of type {}Input! was provided invalid value",
            ch.root()
                .chars()
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(ch.root().chars().skip(1))
                .collect::<String>()
        ));
    };
    let Some(consent) = input.get(ch.input_field()).filter(|v| v.is_object()) else {
        return top_level_error(format!("Variable $input.{} is required", ch.input_field()));
    };
    let Some(state) = consent.get("marketingState").and_then(Value::as_str) else {
        return top_level_error("Variable $input marketingState is required".into());
    };
    let Some(state) = parse_state(state) else {
        return top_level_error(format!(
            "Variable $input.{}.marketingState has an invalid value ({state})",
            ch.input_field()
        ));
    };
    let level = match consent.get("marketingOptInLevel") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().and_then(parse_level) {
            Some(l) => Some(l),
            None => {
                return top_level_error(format!(
                    "Variable $input.{}.marketingOptInLevel has an invalid value ({v})",
                    ch.input_field()
                ));
            }
        },
    };
    let at = match consent.get("consentUpdatedAt") {
        None | Some(Value::Null) => now,
        Some(v) => match v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            Some(t) => t.with_timezone(&Utc),
            None => {
                return top_level_error(format!(
                    "Variable $input.{}.consentUpdatedAt is not a DateTime ({v})",
                    ch.input_field()
                ));
            }
        },
    };
    let field = |f: &'static str| [ch.input_field(), f];
    if state == ConsentState::NotSubscribed {
        return user_error(
            ch,
            &field("marketingState"),
            "Marketing state can only be SUBSCRIBED, UNSUBSCRIBED or PENDING",
            "INCLUSION",
        );
    }
    if at > now {
        return user_error(
            ch,
            &field("consentUpdatedAt"),
            "Consent updated at cannot be in the future",
            "INVALID",
        );
    }
    let id = input
        .get("customerId")
        .and_then(Value::as_str)
        .and_then(|g| g.strip_prefix("gid://shopify/Customer/"))
        .and_then(|n| n.parse::<u64>().ok());
    let Some(snap) = id.and_then(|id| store.snaps.get_mut(&id)) else {
        return user_error(ch, &["customerId"], "Customer not found", "INVALID");
    };
    let offset: FixedOffset = *snap.updated_at.offset();
    let at_local = at.with_timezone(&offset);
    let current = match ch {
        Channel::Email => Some(&mut snap.email_consent),
        Channel::Sms => {
            if snap.phone.is_none() {
                return user_error(
                    ch,
                    &["smsMarketingConsent"],
                    "A phone number is required to set the SMS consent state.",
                    "MISSING_ARGUMENT",
                );
            }
            if snap.sms_consent.is_none() {
                snap.sms_consent = Some(Consent {
                    state: ConsentState::NotSubscribed,
                    opt_in_level: "unknown",
                    updated_at: None,
                });
            }
            snap.sms_consent.as_mut()
        }
    };
    let Some(current) = current else {
        return user_error(ch, &["customerId"], "Customer not found", "INVALID");
    };
    let level = level.unwrap_or(current.opt_in_level);
    let changed = current.state != state || current.opt_in_level != level;
    if changed {
        *current = Consent {
            state,
            opt_in_level: level,
            updated_at: Some(at_local),
        };
        snap.updated_at = snap.updated_at.max(now.with_timezone(&offset));
    }
    let customer_id = snap.id;
    let snap = snap.clone();
    let answer = match ch {
        Channel::Email => {
            json!({"id": format!("gid://shopify/Customer/{customer_id}"), "emailMarketingConsent": consent_json(Some(&snap.email_consent), false)})
        }
        Channel::Sms => {
            json!({"id": format!("gid://shopify/Customer/{customer_id}"), "smsMarketingConsent": consent_json(snap.sms_consent.as_ref(), true)})
        }
    };
    let webhooks = if changed {
        store.refresh_customer(customer_id);
        webhooks_for(store, ch, &snap, now, seq)
    } else {
        Vec::new()
    };
    Outcome {
        body: json!({"data": {ch.root(): {"customer": answer, "userErrors": []}}}),
        webhooks,
        customer_id: Some(customer_id),
    }
}

/// The consent topic and `customers/update`, one merchant action (shared event id).
fn webhooks_for(
    store: &AdminStore,
    ch: Channel,
    snap: &CustomerSnap,
    now: DateTime<Utc>,
    seq: u64,
) -> Vec<Delivery> {
    let numbers = BTreeMap::new();
    let ctx = Ctx {
        shop_domain: &store.shop_domain,
        shop_id: store.shop_id,
        currency: &store.currency,
        catalogue: &[],
        order_numbers: &numbers,
        catalog: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(snap.id ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let event_id = uuid(&mut rng);
    [ch.topic(), Topic::CustomersUpdate]
        .into_iter()
        .map(|topic| {
            let action = Action {
                at: snap.updated_at,
                topic,
                subject: Subject::Customer(Box::new(snap.clone())),
                group: 0,
                person: 0,
                seq: 0,
            };
            Delivery {
                topic: topic.as_str().to_owned(),
                shop_domain: store.shop_domain.clone(),
                api_version: WEBHOOK_API_VERSION.to_owned(),
                webhook_id: uuid(&mut rng),
                event_id: event_id.clone(),
                triggered_at: now,
                name: None,
                body: render(&ctx, &action, WEBHOOK_API_VERSION),
                kind: DeliveryKind::Original,
            }
        })
        .collect()
}

/// Runs a consent mutation for the fake (after its cost was taken) and sends the webhooks
/// of a change to the configured receiver in the background; returns the GraphQL body.
pub(super) fn handle(s: &mut super::Inner, ch: Channel, vars: &Value) -> Value {
    let seq = s.stats.requests;
    let outcome = match &mut s.store {
        super::Source::Scenario(store) => mutate(store, ch, vars, Utc::now(), seq),
        super::Source::Synthetic(_) => not_found(ch),
    };
    if outcome.webhooks.is_empty() {
        return outcome.body;
    }
    if let Some(id) = outcome.customer_id {
        *s.consent_updates.entry(id).or_default() += 1;
    }
    match s.customer_webhook.clone() {
        Some(hook) => {
            let options = SendOptions {
                rate_per_sec: 0.0,
                concurrency: 1,
                ..SendOptions::new(hook.url, hook.secret)
            };
            let webhooks = outcome.webhooks;
            tokio::spawn(async move {
                if let Err(e) = crate::sender::send(webhooks, options).await {
                    tracing::warn!(error = %e, "consent webhooks not delivered");
                }
            });
        }
        None => tracing::debug!("consent changed; no customer webhook configured"),
    }
    outcome.body
}
