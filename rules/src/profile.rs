//! Profile, consent and identity: who a key is in Iterable, what its profile says, what it joined.
//!
//! Identity follows the Iterable project type (`identity.mode`):
//! * `user_id`: `userId` = Shopify customer id; email goes in the profile's `email` field; guests
//!   (email-only keys) are skipped unless `identity.guests = "email"`.
//! * `email`: users are identified by email; customers without a known email are not sent yet
//!   (their full profile is sent once an email is known); email changes use `updateEmail`.
//! * `hybrid`: `userId` when the key is a customer, plus the current email; guests by email.
//!
//! Consent: the effective consent per channel (`two_way::effective`: Shopify's, or Iterable's
//! under the configured source of truth) decides. A list is joined only while the matching consent is
//! `subscribed` (and, with `require_confirmed_opt_in`, confirmed); withdrawal leaves the lists
//! and unsubscribes the configured channel. Unknown consent counts as "not subscribed".

use schemas::{
    Action, ConsentChannel, CustomerKey, DataFields, DeleteMode, KeyKind, SubscriptionUpdate,
    UserRef,
};
use serde_json::Value;

use crate::aggregate::{
    ConsentFact, ConsentState, K_CONTACT, Lww, P_CREATED, P_CREATED_SENT, P_GUEST_SENT, Person,
    Profile, State,
};
use crate::config::{CustomerDeletePolicy, GuestPolicy, IdentityMode, RulesConfig};
use crate::emit::{Cx, Kind, Pending};
use crate::format::{self, text};
use crate::ids;
use crate::shopify::{
    self, Customer, CustomerDelete, EmailConsentUpdate, SmsConsentUpdate, TagsChange,
};
use crate::{messages, two_way};

/// Whether a key names a person (customer or email) rather than an entity.
pub(crate) fn is_person(key: &CustomerKey) -> bool {
    matches!(key.kind(), KeyKind::Customer | KeyKind::Email)
}

/// The person's current email.
pub(crate) fn email<'a>(key: &'a CustomerKey, state: &'a State) -> Option<&'a str> {
    match key.kind() {
        KeyKind::Email => Some(key.id()),
        KeyKind::Customer => state
            .person
            .as_ref()
            .and_then(|p| p.email.as_ref())
            .map(|e| e.value.as_str()),
        _ => None,
    }
}

/// Whether the key knows enough about its person to have a profile in Iterable. An email key
/// that only heard "an order by this address was placed under a customer key" must not create
/// a guest profile, and a key that only saw ignored topics has nothing to say.
pub(crate) fn known(key: &CustomerKey, state: &State) -> bool {
    match key.kind() {
        KeyKind::Customer => {
            state.person.is_some() || !state.orders.is_empty() || !state.checkouts.is_empty()
        }
        // An email key owned by a customer writes nothing: the customer key does (one writer
        // per Iterable user, see `email_index`).
        KeyKind::Email if state.email_owner().is_some() => false,
        KeyKind::Email => {
            !state.orders.is_empty()
                || state.checkouts.iter().any(|k| k.flags & K_CONTACT != 0)
                || state
                    .person
                    .as_ref()
                    .is_some_and(|p| p.email_consent.is_some())
        }
        _ => false,
    }
}

/// The Iterable user for this key and state, per identity mode (`None`: cannot or must not send).
pub(crate) fn identity(cfg: &RulesConfig, key: &CustomerKey, state: &State) -> Option<UserRef> {
    if !known(key, state) || !is_person(key) {
        return None;
    }
    let customer = (key.kind() == KeyKind::Customer).then(|| key.id().to_owned());
    user_ref(cfg, customer, email(key, state).map(str::to_owned))
}

/// The Iterable user an erasure must reach: [`identity`], or for an email key a customer has
/// claimed, the guest profile it wrote before the claim.
pub(crate) fn erasure_identity(
    cfg: &RulesConfig,
    key: &CustomerKey,
    state: &State,
) -> Option<UserRef> {
    identity(cfg, key, state).or_else(|| {
        let guest_sent = state
            .person
            .as_ref()
            .is_some_and(|p| p.flags & P_GUEST_SENT != 0);
        (key.kind() == KeyKind::Email && guest_sent)
            .then(|| user_ref(cfg, None, Some(key.id().to_owned())))
            .flatten()
    })
}

fn user_ref(cfg: &RulesConfig, customer: Option<String>, email: Option<String>) -> Option<UserRef> {
    match cfg.identity.mode {
        IdentityMode::UserId => match customer {
            Some(id) => Some(UserRef {
                user_id: Some(id),
                email: None,
            }),
            None => match cfg.identity.guest_policy() {
                GuestPolicy::Email => email.map(|e| UserRef {
                    user_id: None,
                    email: Some(e),
                }),
                GuestPolicy::Skip => None,
            },
        },
        IdentityMode::Email => email.map(|e| UserRef {
            user_id: None,
            email: Some(e),
        }),
        IdentityMode::Hybrid => {
            if customer.is_none() && cfg.identity.guest_policy() == GuestPolicy::Skip {
                return None;
            }
            (customer.is_some() || email.is_some()).then_some(UserRef {
                user_id: customer,
                email,
            })
        }
    }
}

/// A tier's name (0 = base tier).
pub(crate) fn tier_name(cfg: &RulesConfig, tier: u8) -> &str {
    match tier
        .checked_sub(1)
        .and_then(|i| cfg.tiers.levels.get(usize::from(i)))
    {
        Some(l) => &l.name,
        None => &cfg.tiers.base_tier,
    }
}

/// The profile upsert for a change, if anything changed.
pub(crate) fn upsert(cx: &Cx<'_>, changed: DataFields) -> Option<Pending> {
    if changed.is_empty() {
        return None;
    }
    Some(Pending {
        id: ids::command_id(cx.shop(), "profile", &[&ids::subject(cx.key), &cx.tag]),
        time_ms: cx.ctx.event_time_ms,
        action: Action::UpsertUser {
            data_fields: changed,
            merge_nested_objects: false,
        },
        user: None,
    })
}

/// Whether a consent counts as permission to subscribe.
pub(crate) fn consents(cfg: &RulesConfig, c: Option<ConsentFact>) -> bool {
    c.is_some_and(|c| {
        c.state == ConsentState::Subscribed
            && (c.confirmed || !cfg.consent.require_confirmed_opt_in)
    })
}

fn consent_fact(c: &shopify::Consent, fallback_ms: i64) -> Option<ConsentFact> {
    let state = ConsentState::parse(c.state.as_deref()?)?;
    Some(ConsentFact {
        at: c.consent_updated_at.map_or(fallback_ms, |t| t.0),
        state,
        confirmed: c
            .opt_in_level
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case("confirmed_opt_in")),
    })
}

/// Applies what a customer object says (from `customers/*`, or embedded in orders/checkouts):
/// email, profile snapshot, legacy tags and consent. Emits an email change when the newest
/// email differs from the one Iterable knows.
pub(crate) fn learn_customer(cx: &mut Cx<'_>, state: &mut State, c: &Customer, fallback_ms: i64) {
    if cx.key.kind() != KeyKind::Customer || c.id.is_some_and(|id| id.0.to_string() != cx.key.id())
    {
        return;
    }
    let at = c.updated_at.map_or(fallback_ms, |t| t.0);
    let before = identity(cx.cfg, cx.key, state);
    let old_email = email(cx.key, state).map(str::to_owned);
    let person = state.person_mut();
    if let Some(e) = text(c.email.as_deref()) {
        let e = e.to_lowercase();
        let changed = old_email.as_deref() != Some(e.as_str());
        if Lww::merge(&mut person.email, at, &e) {
            // Every advance of the register is claimed (not only a new value), so the email
            // key holds the same claim time whatever order the payloads came in.
            messages::email_changed(cx, old_email.as_deref().filter(|_| changed), &e, at);
            if let Some(old) = old_email.filter(|_| changed) {
                change_email(cx, before, &old, &e, at);
            }
        } else if let Some(cur) = person.email.as_ref().filter(|c| at < c.at) {
            // An older payload arriving late: its address was ours from its time on. Claim it
            // at that time, so the email key knows since when whatever order the payloads
            // came in, and if it is no longer our address, release it as of the newer one, as
            // its key would have heard had the payloads come in order.
            let (cur_at, same) = (cur.at, cur.value == e);
            messages::email_changed(cx, None, &e, at);
            if !same {
                messages::release(cx, &e, cur_at);
            }
        }
    }
    let addr = c.default_address.clone().unwrap_or_default();
    let snapshot = Profile {
        updated_ms: at,
        first_name: text(c.first_name.as_deref()).map(str::to_owned),
        last_name: text(c.last_name.as_deref()).map(str::to_owned),
        phone: text(c.phone.as_deref()).map(str::to_owned),
        state: text(c.state.as_deref()).map(str::to_owned),
        created_ms: c.created_at.map(|t| t.0),
        city: text(addr.city.as_deref()).map(str::to_owned),
        province_code: text(addr.province_code.as_deref()).map(str::to_owned),
        country_code: text(addr.country_code.as_deref()).map(str::to_owned),
        zip: text(addr.zip.as_deref()).map(str::to_owned),
    };
    if person.profile.as_ref().is_none_or(|p| snapshot > *p) {
        person.profile = Some(snapshot);
    }
    if let Some(tags) = &c.tags {
        Lww::merge(&mut person.tags, at, &tags.join(","));
    }
    // Pre-2025-01 payloads embed consent; newer ones leave it to the consent topics.
    if let Some(f) = c
        .email_marketing_consent
        .as_ref()
        .and_then(|x| consent_fact(x, at))
    {
        ConsentFact::merge(&mut person.email_consent, f);
    } else if let Some(accepts) = c.accepts_marketing {
        let state = if accepts {
            ConsentState::Subscribed
        } else {
            ConsentState::NotSubscribed
        };
        let confirmed = c
            .marketing_opt_in_level
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case("confirmed_opt_in"));
        let at = c.accepts_marketing_updated_at.map_or(at, |t| t.0);
        ConsentFact::merge(
            &mut person.email_consent,
            ConsentFact {
                at,
                state,
                confirmed,
            },
        );
    }
    if let Some(f) = c
        .sms_marketing_consent
        .as_ref()
        .and_then(|x| consent_fact(x, at))
    {
        ConsentFact::merge(&mut person.sms_consent, f);
    }
}

/// Queues the email-change call the identity mode requires.
fn change_email(cx: &mut Cx<'_>, before: Option<UserRef>, old: &str, new: &str, at: i64) {
    let Some(user) = before else { return };
    let action = match cx.cfg.identity.mode {
        // Email-based projects must move the profile with `users/updateEmail`.
        IdentityMode::Email => Action::ChangeEmail {
            current_email: Some(old.to_owned()),
            current_user_id: None,
            new_email: new.to_owned(),
        },
        // userID-based and hybrid projects change the email on the userId's profile.
        IdentityMode::UserId | IdentityMode::Hybrid => Action::ChangeEmail {
            current_email: None,
            current_user_id: Some(cx.key.id().to_owned()),
            new_email: new.to_owned(),
        },
    };
    let id = ids::command_id(
        cx.shop(),
        "email-change",
        &[
            &ids::subject(cx.key),
            &ids::fnv64(new.as_bytes()).to_string(),
            &at.to_string(),
        ],
    );
    cx.pre.push(Pending {
        id,
        time_ms: at,
        action,
        user: Some(user),
    });
}

/// `customers/create|update|enable|disable`.
pub(crate) fn on_customer(cx: &mut Cx<'_>, state: &mut State, topic: &str, c: &Customer) {
    if cx.key.kind() != KeyKind::Customer {
        return;
    }
    learn_customer(cx, state, c, cx.ctx.event_time_ms);
    if topic == "customers/create" {
        let person = state.person_mut();
        person.flags |= P_CREATED;
        if person.flags & P_CREATED_SENT == 0 {
            person.flags |= P_CREATED_SENT;
            let at = c.created_at.map_or(cx.ctx.event_time_ms, |t| t.0);
            let mut f = DataFields::new();
            f.insert("customer_id".into(), Value::String(cx.key.id().to_owned()));
            if let Some(v) = text(c.first_name.as_deref()) {
                f.insert("first_name".into(), Value::String(v.to_owned()));
            }
            if let Some(v) = text(c.last_name.as_deref()) {
                f.insert("last_name".into(), Value::String(v.to_owned()));
            }
            if let Some(v) = text(c.state.as_deref()) {
                f.insert("state".into(), Value::String(v.to_owned()));
            }
            f.insert("created_at".into(), format::date(at));
            f.insert(
                "email_consent".into(),
                Value::Bool(consents(
                    cx.cfg,
                    state
                        .person
                        .as_ref()
                        .and_then(|p| two_way::effective(cx.cfg, p, ConsentChannel::Email)),
                )),
            );
            let id = ids::command_id(cx.shop(), "customer-created", &[&ids::subject(cx.key)]);
            let name = cx.cfg.events.customer_created.clone();
            cx.event(Kind::CustomerCreated, &name, id, at, f);
        }
    }
}

/// `customers/delete`, per `identity.customer_delete`: `keep` changes nothing; `delete` deletes
/// the Iterable user as it was, releases the email and purges the key.
pub(crate) fn on_delete(cx: &mut Cx<'_>, state: &mut State, d: &CustomerDelete) {
    if cx.key.kind() != KeyKind::Customer
        || d.id.0.to_string() != cx.key.id()
        || cx.cfg.identity.customer_delete == CustomerDeletePolicy::Keep
    {
        return;
    }
    if let Some(user) = identity(cx.cfg, cx.key, state) {
        let id = ids::command_id(
            cx.shop(),
            "customer-delete",
            &[&ids::subject(cx.key), &cx.tag],
        );
        cx.pre.push(Pending {
            id,
            time_ms: cx.ctx.event_time_ms,
            action: Action::DeleteUser {
                mode: DeleteMode::Delete,
            },
            user: Some(user),
        });
    }
    let held = state.person.as_ref().and_then(|p| p.email.clone());
    if let Some(e) = held {
        messages::release(cx, &e.value, e.at.max(cx.ctx.event_time_ms));
    }
    *state = State::default();
    cx.purge = true;
}

/// `customers_email_marketing_consent/update`.
pub(crate) fn on_email_consent(cx: &mut Cx<'_>, state: &mut State, u: &EmailConsentUpdate) {
    if cx.key.kind() != KeyKind::Customer || u.customer_id.0.to_string() != cx.key.id() {
        return;
    }
    let at = cx.ctx.event_time_ms;
    let person = state.person_mut();
    if let Some(e) = text(u.email_address.as_deref()) {
        // Only a fallback: consent timestamps do not order profile versions.
        if person.email.is_none() {
            let e = e.to_lowercase();
            Lww::merge(&mut person.email, i64::MIN, &e);
            messages::email_changed(cx, None, &e, i64::MIN);
        }
    }
    if let Some(f) = u
        .email_marketing_consent
        .as_ref()
        .and_then(|c| consent_fact(c, at))
    {
        two_way::record_shopify(person, ConsentChannel::Email, f);
    }
}

/// `customers_marketing_consent/update` (SMS).
pub(crate) fn on_sms_consent(cx: &mut Cx<'_>, state: &mut State, u: &SmsConsentUpdate) {
    if cx.key.kind() != KeyKind::Customer || u.id.0.to_string() != cx.key.id() {
        return;
    }
    let at = cx.ctx.event_time_ms;
    if let Some(f) = u
        .sms_marketing_consent
        .as_ref()
        .and_then(|c| consent_fact(c, at))
    {
        two_way::record_shopify(state.person_mut(), ConsentChannel::Sms, f);
    }
}

/// `customer.tags_added` / `customer.tags_removed` (2025-01+): applied to the tag set.
pub(crate) fn on_tags(cx: &mut Cx<'_>, state: &mut State, added: bool, t: &TagsChange) {
    if cx.key.kind() != KeyKind::Customer {
        return;
    }
    let at = t.occurred_at.map_or(cx.ctx.event_time_ms, |t| t.0);
    let person = state.person_mut();
    let mut tags: Vec<String> = person
        .tags
        .as_ref()
        .map(|t| {
            t.value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for tag in t.tags.iter().flatten() {
        if added {
            tags.push(tag.clone());
        } else {
            tags.retain(|x| x != tag);
        }
    }
    tags.sort();
    tags.dedup();
    let cur = person.tags.as_ref().map_or(i64::MIN, |t| t.at);
    person.tags = Some(Lww {
        at: at.max(cur),
        value: tags.join(","),
    });
}

/// A guest's checkbox at checkout counts as email consent (never as a withdrawal).
pub(crate) fn guest_checkout_consent(
    cx: &Cx<'_>,
    state: &mut State,
    accepts: Option<bool>,
    at: i64,
) {
    if cx.key.kind() != KeyKind::Email || !cx.cfg.consent.guest_checkout_consent {
        return;
    }
    let person = state.person_mut();
    match accepts {
        Some(true) => {
            ConsentFact::merge(
                &mut person.email_consent,
                ConsentFact {
                    at,
                    state: ConsentState::Subscribed,
                    confirmed: false,
                },
            );
        }
        Some(false) if person.email_consent.is_none() => {
            person.email_consent = Some(ConsentFact {
                at: i64::MIN,
                state: ConsentState::NotSubscribed,
                confirmed: false,
            });
        }
        _ => {}
    }
}

/// Lists this person should be on: consent lists, the welcome list and the current tier's list,
/// each only with the matching consent.
fn desired_lists(cfg: &RulesConfig, p: &Person) -> Vec<i64> {
    let mut v = Vec::new();
    let email_ok = consents(cfg, two_way::effective(cfg, p, ConsentChannel::Email));
    if email_ok {
        v.extend_from_slice(&cfg.consent.email_list_ids);
        if p.flags & P_CREATED != 0
            && let Some(id) = cfg.welcome.list_id
        {
            v.push(id);
        }
        if let Some(id) = p
            .tier
            .checked_sub(1)
            .and_then(|i| cfg.tiers.levels.get(usize::from(i)))
            .and_then(|l| l.list_id)
        {
            v.push(id);
        }
    }
    if consents(cfg, two_way::effective(cfg, p, ConsentChannel::Sms)) {
        v.extend_from_slice(&cfg.consent.sms_list_ids);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Subscribes and unsubscribes lists and channels so Iterable matches the state. Only runs
/// with an identity, so a person who cannot be sent yet gets everything once they can.
pub(crate) fn reconcile_subscriptions(cx: &Cx<'_>, state: &mut State, out: &mut Vec<Pending>) {
    let cfg = cx.cfg;
    let Some(p) = state.person.as_deref_mut() else {
        return;
    };
    let want = desired_lists(cfg, p);
    let subject = ids::subject(cx.key);
    let mut list_cmd = |list_id: i64, subscribe: bool| {
        let verb = if subscribe { "sub" } else { "unsub" };
        out.push(Pending {
            id: ids::command_id(
                cx.shop(),
                "list",
                &[&subject, &list_id.to_string(), verb, &cx.tag],
            ),
            time_ms: cx.ctx.event_time_ms,
            action: Action::ListMembership { list_id, subscribe },
            user: None,
        });
    };
    for id in &want {
        if !p.lists.contains(id) {
            list_cmd(*id, true);
        }
    }
    for id in &p.lists {
        if !want.contains(id) {
            list_cmd(*id, false);
        }
    }
    p.lists = want;

    // Channels: unsubscribed unless consent is `subscribed`; Iterable overwrites the whole
    // `unsubscribedChannelIds` array, so always send the full set tillstream manages.
    let (ec, sc) = (cfg.consent.email_channel_id, cfg.consent.sms_channel_id);
    if ec.is_none() && sc.is_none() {
        return;
    }
    let mut bits = 0u8;
    let mut unsub = Vec::new();
    if let Some(id) = ec
        && !consents(cfg, two_way::effective(cfg, p, ConsentChannel::Email))
    {
        bits |= 1;
        unsub.push(id);
    }
    if let Some(id) = sc
        && !consents(cfg, two_way::effective(cfg, p, ConsentChannel::Sms))
    {
        bits |= 2;
        unsub.push(id);
    }
    if p.channels_sent != Some(bits) {
        p.channels_sent = Some(bits);
        out.push(Pending {
            id: ids::command_id(
                cx.shop(),
                "channels",
                &[&subject, &bits.to_string(), &cx.tag],
            ),
            time_ms: cx.ctx.event_time_ms,
            action: Action::UpdateSubscriptions(SubscriptionUpdate {
                unsubscribed_channel_ids: Some(unsub),
                ..SubscriptionUpdate::default()
            }),
            user: None,
        });
    }
}

/// Records the shop currency seen on orders.
pub(crate) fn learn_currency(state: &mut State, currency: Option<&str>) {
    if let Some(c) = text(currency) {
        let person = state.person_mut();
        if person.currency.as_deref() != Some(c) {
            person.currency = Some(c.to_ascii_uppercase());
        }
    }
}
