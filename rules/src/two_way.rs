//! Two-way consent (issue 20): Iterable's consent events, the per-channel policy, writes to Shopify.
//!
//! Per channel the person has two facts, each with its origin and event time: what Shopify
//! holds (`Person::email_consent`, from Shopify's webhooks) and what the user last did in
//! Iterable (`TwoWay::iterable_*`, from Iterable's system webhooks). [`effective`] combines them
//! by the configured [`SourceOfTruth`]; Iterable is then told the effective consent through the
//! existing list and channel reconciliation, and Shopify through a [`ShopifyCommand`] whenever
//! what it is believed to hold differs.
//!
//! Loops: each side echoes our own writes back. Shopify's echo carries the state and the
//! `consent_updated_at` we wrote (the decision's event time), so it equals the fact it came
//! from and changes nothing under any policy; while it is awaited, the write is "pending" and
//! Shopify is believed to hold it (no second write). Iterable's echo (a system webhook fired by
//! our own API call) carries Iterable's time, so it is recognised as the state we told
//! Iterable last and is not recorded as a user change.

use schemas::{ConsentChannel, KeyKind, MarketingState, ShopifyCommand};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::aggregate::{ConsentFact, ConsentState, Person, ShopifyWrite, State, TwoWay};
use crate::config::{RulesConfig, SourceOfTruth};
use crate::domain::{Effect, RuleError};
use crate::emit::Cx;
use crate::ids;
use crate::shopify::parse;

const CHANNELS: [ConsentChannel; 2] = [ConsentChannel::Email, ConsentChannel::Sms];

/// How long after its decision time a write to Shopify may still land (the writer's normal
/// lag, retries and throttling): a different change made in Shopify within this window may
/// have been overwritten by our write, so it is written again to settle it.
pub(crate) const WRITE_SETTLE_MS: i64 = 10 * 60 * 1000;

/// The body of an Iterable system webhook (reference §10b), as far as consent needs it.
#[derive(Debug, Deserialize)]
struct SystemWebhook {
    #[serde(default, rename = "dataFields")]
    data_fields: Option<Map<String, Value>>,
}

fn policy(cfg: &RulesConfig, ch: ConsentChannel) -> SourceOfTruth {
    match ch {
        ConsentChannel::Email => cfg.consent.source_of_truth.email,
        ConsentChannel::Sms => cfg.consent.source_of_truth.sms,
    }
}

fn shopify_fact(p: &Person, ch: ConsentChannel) -> Option<ConsentFact> {
    match ch {
        ConsentChannel::Email => p.email_consent,
        ConsentChannel::Sms => p.sms_consent,
    }
}

impl TwoWay {
    fn iterable(&self, ch: ConsentChannel) -> Option<ConsentFact> {
        match ch {
            ConsentChannel::Email => self.iterable_email,
            ConsentChannel::Sms => self.iterable_sms,
        }
    }

    fn iterable_mut(&mut self, ch: ConsentChannel) -> &mut Option<ConsentFact> {
        match ch {
            ConsentChannel::Email => &mut self.iterable_email,
            ConsentChannel::Sms => &mut self.iterable_sms,
        }
    }

    fn pending_mut(&mut self, ch: ConsentChannel) -> &mut Option<ShopifyWrite> {
        match ch {
            ConsentChannel::Email => &mut self.shopify_pending_email,
            ConsentChannel::Sms => &mut self.shopify_pending_sms,
        }
    }

    fn told_mut(&mut self, ch: ConsentChannel) -> &mut Option<bool> {
        match ch {
            ConsentChannel::Email => &mut self.told_email,
            ConsentChannel::Sms => &mut self.told_sms,
        }
    }

    fn seen_mut(&mut self, ch: ConsentChannel) -> &mut Option<i64> {
        match ch {
            ConsentChannel::Email => &mut self.iterable_seen_email,
            ConsentChannel::Sms => &mut self.iterable_seen_sms,
        }
    }

    fn echo_mut(&mut self, ch: ConsentChannel) -> &mut Option<bool> {
        match ch {
            ConsentChannel::Email => &mut self.iterable_echo_email,
            ConsentChannel::Sms => &mut self.iterable_echo_sms,
        }
    }
}

/// The consent that counts for `ch`, by the configured source of truth. Without any Iterable
/// fact this is Shopify's, as before two-way consent existed.
pub(crate) fn effective(cfg: &RulesConfig, p: &Person, ch: ConsentChannel) -> Option<ConsentFact> {
    let shop = shopify_fact(p, ch);
    let Some(it) = p.two_way.as_ref().and_then(|t| t.iterable(ch)) else {
        return shop;
    };
    match policy(cfg, ch) {
        SourceOfTruth::Shopify => shop,
        SourceOfTruth::Iterable => Some(it),
        SourceOfTruth::Latest => match shop {
            Some(s) if s.at >= it.at => Some(s),
            _ => Some(it),
        },
    }
}

/// Where the effective consent came from, for the customer view.
pub(crate) fn origin(cfg: &RulesConfig, p: &Person, ch: ConsentChannel) -> Option<&'static str> {
    let eff = effective(cfg, p, ch)?;
    Some(if Some(eff) == shopify_fact(p, ch) {
        "shopify"
    } else {
        "iterable"
    })
}

/// A consent report from Shopify's webhooks. Our own write's echo replaces what Shopify holds
/// even when a newer fact is recorded (Shopify holds our write now, whatever its timestamp).
pub(crate) fn record_shopify(p: &mut Person, ch: ConsentChannel, f: ConsentFact) {
    let slot = match ch {
        ConsentChannel::Email => &mut p.email_consent,
        ConsentChannel::Sms => &mut p.sms_consent,
    };
    let Some(pending) = p.two_way.as_deref_mut().map(|t| t.pending_mut(ch)) else {
        ConsentFact::merge(slot, f);
        return;
    };
    match *pending {
        Some(ShopifyWrite::Pending(w)) if w.at == f.at && w.state == f.state => {
            // Our echo: Shopify holds our write, whatever its timestamp.
            *pending = Some(ShopifyWrite::Landed(w));
            *slot = Some(f);
        }
        Some(ShopifyWrite::Pending(w) | ShopifyWrite::Landed(w))
            if w.state != f.state
                && f.at >= w.at
                && f.at < w.at.saturating_add(WRITE_SETTLE_MS) =>
        {
            // Changed in Shopify after our decision, close to our write: which one Shopify
            // applied last is unknown (webhooks are not ordered, and our write carries the
            // decision's time), so decide() writes again.
            *pending = Some(ShopifyWrite::Contested(w));
            ConsentFact::merge(slot, f);
        }
        Some(ShopifyWrite::Landed(w)) if f.at >= w.at.saturating_add(WRITE_SETTLE_MS) => {
            *pending = None;
            ConsentFact::merge(slot, f);
        }
        _ => {
            ConsentFact::merge(slot, f);
        }
    }
}

/// What an Iterable event says: a channel and subscribed (true) or not.
fn meaning(
    cfg: &RulesConfig,
    event: &str,
    data: &Map<String, Value>,
) -> Option<(ConsentChannel, bool)> {
    let ids = |name: &str| -> Vec<i64> {
        data.get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    // Which channel a (un)subscribe is about: the configured channel ids it names; a list
    // (un)subscribe counts only for the consent lists; without either it is the email channel.
    let scope = || -> Option<ConsentChannel> {
        let channels = ids("channelIds");
        let c = &cfg.consent;
        if !channels.is_empty() {
            if c.sms_channel_id.is_some_and(|id| channels.contains(&id)) {
                return Some(ConsentChannel::Sms);
            }
            if c.email_channel_id.is_none_or(|id| channels.contains(&id)) {
                return Some(ConsentChannel::Email);
            }
            return None;
        }
        let lists = ids("emailListIds");
        if !lists.is_empty() {
            if lists.iter().any(|l| c.sms_list_ids.contains(l)) {
                return Some(ConsentChannel::Sms);
            }
            return lists
                .iter()
                .any(|l| c.email_list_ids.contains(l))
                .then_some(ConsentChannel::Email);
        }
        Some(ConsentChannel::Email)
    };
    let ev = &cfg.consent.iterable_events;
    match event {
        "emailUnSubscribe" | "hostedUnsubscribeClick" => scope().map(|c| (c, false)),
        "emailSubscribe" => scope().map(|c| (c, true)),
        "emailComplaint" if ev.complaint_unsubscribes => Some((ConsentChannel::Email, false)),
        "emailBounce" if ev.hard_bounce_unsubscribes && is_hard_bounce(data) => {
            Some((ConsentChannel::Email, false))
        }
        "smsReceived" => {
            let text = ["smsMessage", "body", "message", "text"]
                .iter()
                .find_map(|k| data.get(*k).and_then(Value::as_str))?;
            let word = text.split_whitespace().next()?;
            ev.sms_stop_keywords
                .iter()
                .any(|k| k.eq_ignore_ascii_case(word))
                .then_some((ConsentChannel::Sms, false))
        }
        _ => None,
    }
}

/// A bounce is hard when the payload says so (`bounceType`/`recipientState` naming a hard or
/// permanent bounce, or `hardBounce: true`); an unqualified bounce is not.
fn is_hard_bounce(data: &Map<String, Value>) -> bool {
    let says = |k: &str| {
        data.get(k).and_then(Value::as_str).is_some_and(|s| {
            let s = s.to_ascii_lowercase();
            s.contains("hard") || s.contains("permanent")
        })
    };
    says("bounceType")
        || says("recipientState")
        || data.get("hardBounce") == Some(&Value::Bool(true))
}

/// `iterable/{eventName}`: a consent change made in Iterable (or our own write echoed).
pub(crate) fn on_iterable(
    cx: &mut Cx<'_>,
    state: &mut State,
    topic: &str,
    body: &[u8],
) -> Result<(), RuleError> {
    let event = topic
        .strip_prefix(schemas::ITERABLE_TOPIC_PREFIX)
        .unwrap_or(topic);
    let hook: SystemWebhook = parse(topic, body)?;
    let data = hook.data_fields.unwrap_or_default();
    let Some((ch, subscribed)) = meaning(cx.cfg, event, &data) else {
        return Ok(());
    };
    let at = cx.ctx.event_time_ms;
    let cfg = cx.cfg;
    let person = state.person_mut();
    if person.two_way.is_none() {
        // First Iterable fact: remember what Iterable was told so far, so decide() does not
        // mistake the present state for news.
        let mut t = TwoWay::default();
        for c in CHANNELS {
            *t.told_mut(c) = Some(is_subscribed(effective(cfg, person, c)));
        }
        person.two_way = Some(Box::default());
        if let Some(slot) = person.two_way.as_deref_mut() {
            *slot = t;
        }
    }
    let Some(t) = person.two_way.as_deref_mut() else {
        return Ok(());
    };
    // Only the latest report (by Iterable's event time) says what Iterable holds now.
    let latest = t.seen_mut(ch).is_none_or(|seen| at >= seen);
    if latest {
        *t.seen_mut(ch) = Some(at);
    }
    let echoed = t.echo_mut(ch).take() == Some(subscribed);
    if echoed || api_sourced(&data) {
        // Our own write echoed (Iterable fires system webhooks for API changes too): not a
        // user change, but it says what Iterable holds now, so reconciliation corrects it if
        // a later decision was overtaken by it.
        if latest {
            iterable_holds(cfg, person, ch, subscribed);
        }
        return Ok(());
    }
    let fact = ConsentFact {
        at,
        state: if subscribed {
            ConsentState::Subscribed
        } else {
            ConsentState::Unsubscribed
        },
        confirmed: false,
    };
    if !ConsentFact::merge(t.iterable_mut(ch), fact) {
        // Older than what Iterable already reported (delivered out of order): says nothing
        // about what Iterable holds now.
        return Ok(());
    }
    // Iterable holds this now: tell reconciliation, so a policy that disagrees overwrites it.
    if latest {
        iterable_holds(cfg, person, ch, subscribed);
    }
    Ok(())
}

/// Changes made through Iterable's API (`unsubSource`/`subscribeSource` = `API`) are writes
/// by an integration, in practice tillstream's own: never a person's consent action.
fn api_sourced(data: &Map<String, Value>) -> bool {
    ["unsubSource", "subscribeSource"].iter().any(|k| {
        data.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("API"))
    })
}

/// Records that Iterable holds `subscribed` for `ch`, so list and channel reconciliation
/// sends the effective consent again when it differs.
fn iterable_holds(cfg: &RulesConfig, person: &mut Person, ch: ConsentChannel, subscribed: bool) {
    if let Some(t) = person.two_way.as_deref_mut() {
        *t.told_mut(ch) = Some(subscribed);
    }
    let bit = match ch {
        ConsentChannel::Email => 1u8,
        ConsentChannel::Sms => 2u8,
    };
    if let Some(bits) = person.channels_sent.as_mut() {
        if subscribed {
            *bits &= !bit;
        } else {
            *bits |= bit;
        }
    }
    if !subscribed {
        let lists = match ch {
            ConsentChannel::Email => &cfg.consent.email_list_ids,
            ConsentChannel::Sms => &cfg.consent.sms_list_ids,
        };
        person.lists.retain(|l| !lists.contains(l));
    }
}

fn is_subscribed(f: Option<ConsentFact>) -> bool {
    f.is_some_and(|f| f.state == ConsentState::Subscribed)
}

/// After every input of a person with two-way state: write to Shopify what it must hold, and
/// remember what Iterable is being told (so its echo is recognised).
pub(crate) fn decide(cx: &mut Cx<'_>, state: &mut State) {
    let cfg = cx.cfg;
    let Some(person) = state.person.as_deref_mut() else {
        return;
    };
    if person.two_way.is_none() {
        return;
    }
    let customer_id = (cx.key.kind() == KeyKind::Customer)
        .then(|| cx.key.id().parse::<i64>().ok())
        .flatten();
    for ch in CHANNELS {
        let eff = effective(cfg, person, ch);
        let holds = shopify_fact(person, ch);
        let Some(t) = person.two_way.as_deref_mut() else {
            return;
        };
        let want = is_subscribed(eff);
        // Iterable: reconciliation sends the effective consent; expect its echo.
        if *t.told_mut(ch) != Some(want) {
            *t.told_mut(ch) = Some(want);
            *t.echo_mut(ch) = Some(want);
        }
        // Shopify: never written under `shopify` (it is the truth), nor without a customer id.
        let (Some(eff), Some(customer_id)) = (eff, customer_id) else {
            continue;
        };
        if policy(cfg, ch) == SourceOfTruth::Shopify {
            continue;
        }
        let pending = t.pending_mut(ch);
        let mut at = eff.at;
        match *pending {
            None | Some(ShopifyWrite::Landed(_)) if is_subscribed(holds) == want => continue,
            Some(ShopifyWrite::Pending(w)) if is_subscribed(Some(w)) == want => continue,
            Some(ShopifyWrite::Contested(w)) => {
                // Newer than anything reported or written, so it is the one Shopify keeps.
                at = eff.at.max(w.at).max(holds.map_or(i64::MIN, |h| h.at)) + 1;
            }
            _ => {}
        }
        let state = if want {
            MarketingState::Subscribed
        } else {
            MarketingState::Unsubscribed
        };
        *pending = Some(ShopifyWrite::Pending(ConsentFact {
            at,
            state: if want {
                ConsentState::Subscribed
            } else {
                ConsentState::Unsubscribed
            },
            confirmed: false,
        }));
        let subject = ids::subject(cx.key);
        let verb = state.graphql();
        let at_text = at.to_string();
        cx.tail.push(Effect::ShopifyCommand(ShopifyCommand {
            command_id: ids::command_id(
                cx.shop(),
                "shopify-consent",
                &[&subject, ch.name(), verb, &at_text],
            ),
            shop_domain: cx.shop().to_owned(),
            customer_key: cx.key.as_str().to_owned(),
            customer_id,
            channel: ch,
            marketing_state: state,
            consent_updated_at_ms: at,
            event_time_ms: cx.ctx.event_time_ms,
            reason: cx
                .input
                .map_or_else(|| "policy".to_owned(), |i| i.topic.clone()),
            source_ids: cx.sources.clone(),
        }));
    }
}
