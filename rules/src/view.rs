//! The business view of a key's aggregate, for operators (`GET /customers/{key}`,
//! `tillstream customer`): what the packed [`State`] means in the rules' own terms.
//!
//! The rules own the meaning of their aggregate, so the translation lives here, next to the
//! figures it reuses ([`ltv::summary`], the tier names, the consent test), rather than in the
//! processor, which only sees JSON. Pure: the caller passes the time "now" for relative times.

use chrono::DateTime;
use rust_decimal::Decimal;
use schemas::{CustomerKey, KeyKind, ShopDomain};
use serde::Serialize;
use serde_json::Value;

use crate::aggregate::{
    ConsentFact, K_FIRED, Owner, P_CREATED, P_FIRST_PURCHASE, P_RECENT_REFUND, State,
};
use crate::checkout::CHECKOUT_TIMER;
use crate::config::RulesConfig;
use crate::domain::Timer;
use crate::email_index::GUEST_PROFILE;
use crate::first_purchase::FIRST_PURCHASE_TIMER;
use crate::refunds::{RECENT_REFUND_TIMER, REFUND_TIMER};
use crate::tiers::TIER_TIMER;
use crate::winback::WINBACK_TIMER;
use crate::{format, ltv, profile};

/// Everything the view says about one key (fields without a value are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerView {
    /// Who the key is.
    pub identity: Identity,
    /// The Shopify profile snapshot (person keys that saw one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileView>,
    /// Lifetime figures, tier, win-back and refunds (person keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Lifetime>,
    /// Marketing consent per channel (person keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consents>,
    /// Checkouts this key tracks, newest update first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkouts: Vec<CheckoutView>,
    /// For order and checkout keys: who owns the entity, and what waits for that answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
}

/// Who the key is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The key, `{shop}/{kind}/{id}`.
    pub key: String,
    /// Shop domain.
    pub shop: String,
    /// `customer`, `email`, `order`, `checkout`, `cart`, `product` or `shop`.
    pub kind: &'static str,
    /// Shopify customer id (customer keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Current email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The Iterable user this key writes (per the identity mode), if it writes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterable_user: Option<IterableUser>,
    /// Other keys that hold part of this person's or entity's facts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linked_keys: Vec<String>,
}

/// An Iterable user reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterableUser {
    /// `userId`.
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The Shopify profile snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileView {
    /// First and last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Shopify's customer state (`enabled`, `disabled`, `invited`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the customer was created in the shop (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// City, province and country, as far as known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `updated_at` of the snapshot (RFC 3339).
    pub updated_at: String,
}

/// An amount of money in the shop's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Money {
    /// Two decimals, as text (exact).
    pub amount: String,
    /// ISO 4217 code, when an order told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The last counted order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRef {
    /// Shopify order id.
    pub id: String,
    /// When it was placed (RFC 3339).
    pub placed_at: String,
}

/// Lifetime figures, as the rules compute them for the profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lifetime {
    /// What the shop kept of the counted orders.
    pub lifetime_value: Money,
    /// Counted orders (paid, not test, not deleted, not cancelled with nothing kept).
    pub orders: u32,
    /// Lifetime value / orders.
    pub average_order_value: Money,
    /// First counted order (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_order_at: Option<String>,
    /// Last counted order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_order: Option<OrderRef>,
    /// Orders the state knows, counted or not (test, unpaid, cancelled, deleted included).
    pub orders_known: usize,
    /// Current VIP tier's name.
    pub tier: String,
    /// Tiers whose upgrade was announced, lowest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers_announced: Vec<String>,
    /// No counted order for `winback.lapse_days`.
    pub lapsed: bool,
    /// When the lapse came due (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lapsed_since: Option<String>,
    /// Within `refunds.recent_refund_days` of a refund.
    pub recent_refund: bool,
    /// Latest refund (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refund_at: Option<String>,
    /// `customers/create` was seen.
    pub created_seen: bool,
    /// `first_purchase` was handled (sent, or suppressed by its freshness horizon).
    pub first_purchase_handled: bool,
    /// Iterable lists tillstream subscribed this person to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iterable_lists: Vec<i64>,
}

/// Consent per channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consents {
    /// Email marketing.
    pub email: ConsentView,
    /// SMS marketing.
    pub sms: ConsentView,
}

/// One channel's consent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsentView {
    /// Shopify's state (`subscribed`, `unsubscribed`, ...), or `unknown` when never told.
    pub state: &'static str,
    /// Opt-in level was `confirmed_opt_in`.
    pub confirmed_opt_in: bool,
    /// Whether the rules count it as permission (see `consent.require_confirmed_opt_in`).
    pub counts_as_consent: bool,
    /// When it last changed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// One tracked checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutView {
    /// Shopify checkout id, when payloads carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `completed`, `deleted`, `abandoned` (the abandonment was handled) or `open`.
    pub status: &'static str,
    /// The latest update (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// The owner of an order or checkout key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkView {
    /// The customer or email key that owns it, or `None` while unknown.
    pub owner: Option<String>,
    /// Inputs parked until the owner is known.
    pub parked: usize,
}

/// A pending timer, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimerView {
    /// The rule's timer kind (`abandoned_checkout`, `winback`, `recent_refund`, ...).
    pub kind: String,
    /// Unique within the key.
    pub timer_id: String,
    /// When it is due, in event time (RFC 3339).
    pub due_at: String,
    /// Relative to now: `in 42 min`, `in 3 days`, `due 5 min ago` (a due timer fires once
    /// the partition's event time or, when caught up, the wall clock reaches it).
    pub due_in: String,
    /// What happens when it fires.
    pub effect: String,
}

/// The view of `state` held under `key`.
pub fn customer_view(cfg: &RulesConfig, key: &CustomerKey, state: &State) -> CustomerView {
    let person_key = profile::is_person(key);
    let person = state.person.as_deref();
    let email = profile::email(key, state).map(str::to_owned);
    let mut linked_keys = Vec::new();
    if key.kind() == KeyKind::Customer
        && let (Some(e), Ok(shop)) = (&email, ShopDomain::parse(key.shop()))
    {
        // `CustomerKey::new` lower-cases the address, as the routing rule does.
        linked_keys.push(
            CustomerKey::new(&shop, KeyKind::Email, e)
                .as_str()
                .to_owned(),
        );
    }
    let link = state.link.as_deref().map(|l| LinkView {
        owner: match &l.owner {
            Owner::Unknown => None,
            Owner::Key(k) => Some(k.clone()),
        },
        parked: l.parked.len(),
    });
    if let Some(LinkView { owner: Some(o), .. }) = &link {
        linked_keys.push(o.clone());
    }
    let identity = Identity {
        key: key.as_str().to_owned(),
        shop: key.shop().to_owned(),
        kind: kind_name(key.kind()),
        customer_id: (key.kind() == KeyKind::Customer).then(|| key.id().to_owned()),
        email,
        iterable_user: profile::identity(cfg, key, state).map(|u| IterableUser {
            user_id: u.user_id,
            email: u.email,
        }),
        linked_keys,
    };
    let profile = person.and_then(|p| p.profile.as_ref()).map(|p| {
        let name = [p.first_name.as_deref(), p.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let location = [
            p.city.as_deref(),
            p.province_code.as_deref(),
            p.country_code.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        ProfileView {
            name: (!name.is_empty()).then_some(name),
            phone: p.phone.clone(),
            state: p.state.clone(),
            created_at: p.created_ms.map(rfc3339),
            location: (!location.is_empty()).then_some(location),
            updated_at: rfc3339(p.updated_ms),
        }
    });
    let lifetime = person_key.then(|| lifetime(cfg, state));
    let consent = person_key.then(|| Consents {
        email: consent(cfg, person.and_then(|p| p.email_consent)),
        sms: consent(cfg, person.and_then(|p| p.sms_consent)),
    });
    let mut checkouts: Vec<CheckoutView> = state
        .checkouts
        .iter()
        .map(|c| CheckoutView {
            id: c.id.map(|i| i.to_string()),
            status: if c.completed_ms.is_some() {
                "completed"
            } else if c.deleted_ms.is_some() {
                "deleted"
            } else if c.flags & K_FIRED != 0 {
                "abandoned"
            } else {
                "open"
            },
            updated_at: (c.last_update_ms != 0).then(|| rfc3339(c.last_update_ms)),
        })
        .collect();
    checkouts.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    CustomerView {
        identity,
        profile,
        lifetime,
        consent,
        checkouts,
        link,
    }
}

fn lifetime(cfg: &RulesConfig, state: &State) -> Lifetime {
    let s = ltv::summary(state);
    let person = state.person.as_deref();
    let currency = person.and_then(|p| p.currency.clone());
    let money = |d: Decimal| Money {
        amount: format!("{:.2}", format::cents(d)),
        currency: currency.clone(),
    };
    let flags = person.map_or(0, |p| p.flags);
    let announced = person.map_or(0, |p| p.tiers_announced);
    Lifetime {
        lifetime_value: money(s.value),
        orders: s.count,
        average_order_value: money(s.aov()),
        first_order_at: s.first_ms.map(rfc3339),
        last_order: s.last.map(|(at, id)| OrderRef {
            id: id.to_string(),
            placed_at: rfc3339(at),
        }),
        orders_known: state.orders.len(),
        tier: profile::tier_name(cfg, person.map_or(0, |p| p.tier)).to_owned(),
        tiers_announced: cfg
            .tiers
            .levels
            .iter()
            .enumerate()
            .filter(|(i, _)| announced & (1 << i) != 0)
            .map(|(_, l)| l.name.clone())
            .collect(),
        lapsed: person.is_some_and(|p| p.lapse.is_some()),
        lapsed_since: person.and_then(|p| p.lapse).map(|l| rfc3339(l.due_ms)),
        recent_refund: flags & P_RECENT_REFUND != 0,
        last_refund_at: person.and_then(|p| p.last_refund_ms).map(rfc3339),
        created_seen: flags & P_CREATED != 0,
        first_purchase_handled: flags & P_FIRST_PURCHASE != 0,
        iterable_lists: person.map(|p| p.lists.clone()).unwrap_or_default(),
    }
}

fn consent(cfg: &RulesConfig, c: Option<ConsentFact>) -> ConsentView {
    ConsentView {
        state: c.map_or("unknown", |c| c.state.as_str()),
        confirmed_opt_in: c.is_some_and(|c| c.confirmed),
        counts_as_consent: profile::consents(cfg, c),
        updated_at: c.map(|c| rfc3339(c.at)),
    }
}

/// A pending timer in words; `now_ms` is the wall clock the relative time is measured from.
pub fn timer_view(timer: &Timer, now_ms: i64) -> TimerView {
    let p = &timer.payload;
    // Amounts are decimals serialised as text or numbers; ids are text.
    let text = |k: &str| match p.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let effect = match timer.kind.as_str() {
        CHECKOUT_TIMER => {
            let value = match (text("value"), text("currency")) {
                (Some(v), Some(c)) => format!(" ({v} {c})"),
                (Some(v), None) => format!(" ({v})"),
                _ => String::new(),
            };
            format!("checkout_abandoned for the cart{value}, unless an order completes it first")
        }
        WINBACK_TIMER => format!(
            "customer_lapsed, unless an order after {} arrives first",
            text("last_order_id")
                .map_or_else(|| "the last one".to_owned(), |o| format!("order {o}"))
        ),
        RECENT_REFUND_TIMER => "clears the recent-refund flag".to_owned(),
        REFUND_TIMER => format!(
            "order_refunded for refund {} of order {}, once every fact up to it is in",
            text("refund_id").unwrap_or_default(),
            text("order_id").unwrap_or_default()
        ),
        FIRST_PURCHASE_TIMER => format!(
            "first_purchase for order {}, if it is still the earliest paid order",
            text("order_id").unwrap_or_default()
        ),
        GUEST_PROFILE => {
            "writes the guest's profile, unless a customer has claimed the address by then"
                .to_owned()
        }
        TIER_TIMER => "vip_tier_upgraded, if the tier still holds at its crossing".to_owned(),
        other => format!("the {other} rule runs"),
    };
    TimerView {
        kind: timer.kind.clone(),
        timer_id: timer.timer_id.clone(),
        due_at: rfc3339(timer.due_ms),
        due_in: relative(timer.due_ms.saturating_sub(now_ms)),
        effect,
    }
}

/// `in 42 min`, `in 3 h 5 min`, `in 2 days`, `due 5 min ago`, `now`.
pub fn relative(delta_ms: i64) -> String {
    let minutes = delta_ms.unsigned_abs() / 60_000;
    let span = match minutes {
        0 => return "now".to_owned(),
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => match m % 60 {
            0 => format!("{} h", m / 60),
            r => format!("{} h {r} min", m / 60),
        },
        m => format!("{} days", m / (24 * 60)),
    };
    if delta_ms > 0 {
        format!("in {span}")
    } else {
        format!("due {span} ago")
    }
}

/// Unix ms as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Customer => "customer",
        KeyKind::Email => "email",
        KeyKind::Order => "order",
        KeyKind::Checkout => "checkout",
        KeyKind::Cart => "cart",
        KeyKind::Product => "product",
        KeyKind::Shop => "shop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{ConsentState, FinStatus, Lww, O_KNOWN, O_PAID, OrderFact, Person};

    fn key() -> CustomerKey {
        CustomerKey::parse("tour.myshopify.com/c/7001").unwrap()
    }

    fn order(id: u64, placed_ms: i64, total: i64) -> OrderFact {
        OrderFact {
            id,
            placed_ms,
            total: Decimal::new(total, 2),
            status: FinStatus::Paid,
            flags: O_KNOWN | O_PAID,
            ..OrderFact::default()
        }
    }

    #[test]
    fn a_customer_reads_in_business_terms() {
        let state = State {
            person: Some(Box::new(Person {
                email: Some(Lww {
                    at: 1,
                    value: "Ada@Example.com".into(),
                }),
                email_consent: Some(ConsentFact {
                    at: 1_764_806_400_000,
                    state: ConsentState::Subscribed,
                    confirmed: false,
                }),
                currency: Some("EUR".into()),
                flags: P_CREATED,
                ..Person::default()
            })),
            orders: vec![
                order(11, 1_764_806_400_000, 10_000),
                order(12, 1_764_892_800_000, 5_050),
            ],
            ..State::default()
        };
        let v = customer_view(&RulesConfig::default(), &key(), &state);
        assert_eq!(v.identity.kind, "customer");
        assert_eq!(v.identity.customer_id.as_deref(), Some("7001"));
        assert_eq!(
            v.identity.linked_keys,
            ["tour.myshopify.com/e/ada@example.com"]
        );
        let l = v.lifetime.unwrap();
        assert_eq!(
            l.lifetime_value,
            Money {
                amount: "150.50".into(),
                currency: Some("EUR".into())
            }
        );
        assert_eq!(l.average_order_value.amount, "75.25");
        assert_eq!(l.orders, 2);
        assert_eq!(
            l.last_order,
            Some(OrderRef {
                id: "12".into(),
                placed_at: "2025-12-05T00:00:00Z".into()
            })
        );
        assert!(!l.lapsed && l.created_seen);
        let c = v.consent.unwrap();
        assert_eq!((c.email.state, c.sms.state), ("subscribed", "unknown"));
        assert_eq!(c.email.updated_at.as_deref(), Some("2025-12-04T00:00:00Z"));
        let json = serde_json::to_value(&v.identity).unwrap();
        assert_eq!(json["iterable_user"]["userId"], "7001");
    }

    #[test]
    fn timers_say_when_and_what() {
        let now = 1_764_806_400_000;
        let t = Timer {
            kind: CHECKOUT_TIMER.into(),
            timer_id: "k-1".into(),
            due_ms: now + 42 * 60_000,
            payload: serde_json::json!({"value": "80.00", "currency": "EUR"}),
        };
        let v = timer_view(&t, now);
        assert_eq!(v.due_at, "2025-12-04T00:42:00Z");
        assert_eq!(v.due_in, "in 42 min");
        assert!(v.effect.contains("80.00 EUR"), "{}", v.effect);
        assert_eq!(relative(-5 * 60_000), "due 5 min ago");
        assert_eq!(relative(3 * 3_600_000 + 5 * 60_000), "in 3 h 5 min");
        assert_eq!(relative(90 * 86_400_000), "in 90 days");
    }
}
