//! The profile fields a customer's state implies, and the difference two states make: the only
//! part of a profile upsert built for every input, so it compares without building JSON.

use rust_decimal::Decimal;
use schemas::{ConsentChannel, CustomerKey, DataFields, KeyKind};
use serde_json::Value;

use crate::aggregate::{P_RECENT_REFUND, Profile, State};
use crate::config::{IdentityMode, RulesConfig};
use crate::format::{self, text};
use crate::ltv::Summary;
use crate::profile::{email, is_person, tier_name};
use crate::two_way;

/// A profile field's value as the state holds it. Every input builds the profile twice (before
/// and after its change) to send the difference: comparing these costs no JSON, no string and no
/// decimal formatting, which only the fields that changed need ([`diff`]). Two values are equal
/// exactly when their JSON would be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldValue<'a> {
    Text(&'a str),
    /// Unix ms, sent to the second (`format::date`).
    Date(i64),
    /// Sent with at most two decimals (`format::money`).
    Money(Decimal),
    Count(u32),
    /// An id sent as text.
    Id(u64),
    Bool(bool),
    /// Shopify's comma-separated tags, sent as an array without the empty ones.
    Tags(&'a str),
}

impl FieldValue<'_> {
    fn to_json(self) -> Value {
        match self {
            FieldValue::Text(s) => Value::String(s.to_owned()),
            FieldValue::Date(ms) => format::date(ms),
            FieldValue::Money(d) => format::money(d),
            FieldValue::Count(n) => Value::from(n),
            FieldValue::Id(id) => Value::String(id.to_string()),
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Tags(t) => {
                Value::Array(tags(t).map(|t| Value::String(t.to_owned())).collect())
            }
        }
    }
}

fn tags(t: &str) -> impl Iterator<Item = &str> {
    t.split(',').filter(|t| !t.is_empty())
}

/// The second a date is sent as (`format::date` writes seconds), `None` out of chrono's range.
fn date_second(ms: i64) -> Option<i64> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.timestamp())
}

impl PartialEq for FieldValue<'_> {
    fn eq(&self, other: &Self) -> bool {
        use FieldValue as F;
        match (*self, *other) {
            (F::Text(a), F::Text(b)) => a == b,
            (F::Date(a), F::Date(b)) => date_second(a) == date_second(b),
            (F::Money(a), F::Money(b)) => format::cents(a) == format::cents(b),
            (F::Count(a), F::Count(b)) => a == b,
            (F::Id(a), F::Id(b)) => a == b,
            (F::Bool(a), F::Bool(b)) => a == b,
            (F::Tags(a), F::Tags(b)) => tags(a).eq(tags(b)),
            // Only the same field's values are compared, so kinds never mix.
            _ => false,
        }
    }
}

/// The profile fields the state implies: every field in a fixed order, `None` where the state
/// has no value (a field not sent, or removed with `null`). The caller sends the difference.
#[derive(Debug, Default)]
pub(crate) struct ProfileFields<'a>(Vec<(&'a str, Option<FieldValue<'a>>)>);

/// How many fields [`fields`] can give (a test keeps it exact). Built twice per input, the
/// list is allocated at this size once: grown past it (or past the allocator's per-thread
/// cache, 1,032 bytes) each build cost a trip through glibc's slow path, which first merges
/// every freed small chunk (`malloc_consolidate`, 1 % of the processor's CPU in perf).
const SLOTS: usize = 25;

/// The profile fields the state implies (the full set; the caller sends the difference).
pub(crate) fn fields<'a>(
    cfg: &'a RulesConfig,
    key: &'a CustomerKey,
    state: &'a State,
    s: &Summary,
) -> ProfileFields<'a> {
    use FieldValue as F;
    let mut m = Vec::with_capacity(SLOTS);
    if !is_person(key) {
        return ProfileFields(m);
    }
    let n = &cfg.fields;
    let mut put = |name: &'a str, v: Option<FieldValue<'a>>| m.push((name, v));
    let txt = |s: Option<&'a str>| text(s).map(F::Text);
    let date = |ms: Option<i64>| ms.filter(|ms| date_second(*ms).is_some()).map(F::Date);
    if key.kind() == KeyKind::Customer {
        put(&n.customer_id, Some(F::Text(key.id())));
    }
    if cfg.identity.mode != IdentityMode::Email && key.kind() == KeyKind::Customer {
        // UserID-based and hybrid projects identify a customer by userId; the address is set
        // through the standard `email` profile field (iterable-api.md §3.1), so it reaches the
        // profile and later changes follow it.
        put("email", txt(email(key, state)));
    }
    let person = state.person.as_deref();
    // Every field has its slot whatever the state holds, so two builds for the same key line
    // up slot by slot.
    let profile = person.and_then(|p| p.profile.as_ref());
    let field = |f: fn(&'a Profile) -> Option<&'a str>| txt(profile.and_then(f));
    put(&n.first_name, field(|p| p.first_name.as_deref()));
    put(&n.last_name, field(|p| p.last_name.as_deref()));
    put(&n.phone, field(|p| p.phone.as_deref()));
    put(&n.customer_state, field(|p| p.state.as_deref()));
    put(&n.created_at, date(profile.and_then(|p| p.created_ms)));
    put(&n.city, field(|p| p.city.as_deref()));
    put(&n.province_code, field(|p| p.province_code.as_deref()));
    put(&n.country_code, field(|p| p.country_code.as_deref()));
    put(&n.zip, field(|p| p.zip.as_deref()));
    put(
        &n.tags,
        person
            .and_then(|p| p.tags.as_ref())
            .map(|t| F::Tags(&t.value)),
    );
    put(&n.lifetime_value, Some(F::Money(s.value)));
    put(&n.orders_count, Some(F::Count(s.count)));
    put(&n.average_order_value, Some(F::Money(s.aov())));
    put(&n.first_order_at, date(s.first_ms));
    put(&n.last_order_at, date(s.last.map(|l| l.0)));
    put(&n.last_order_id, s.last.map(|l| F::Id(l.1)));
    put(&n.currency, txt(person.and_then(|p| p.currency.as_deref())));
    let tier = person.map_or(0, |p| p.tier);
    put(&n.vip_tier, Some(F::Text(tier_name(cfg, tier))));
    put(
        &n.lapsed,
        Some(F::Bool(person.is_some_and(|p| p.lapse.is_some()))),
    );
    put(
        &n.recent_refund,
        Some(F::Bool(
            person.is_some_and(|p| p.flags & P_RECENT_REFUND != 0),
        )),
    );
    put(
        &n.last_refund_at,
        date(person.and_then(|p| p.last_refund_ms)),
    );
    put(
        &n.email_consent,
        person
            .and_then(|p| two_way::effective(cfg, p, ConsentChannel::Email))
            .map(|c| F::Text(c.state.as_str())),
    );
    put(
        &n.sms_consent,
        person
            .and_then(|p| two_way::effective(cfg, p, ConsentChannel::Sms))
            .map(|c| F::Text(c.state.as_str())),
    );
    ProfileFields(m)
}

/// The fields that changed (removed ones are sent as `null`); only these become JSON.
pub(crate) fn diff(before: &ProfileFields<'_>, after: &ProfileFields<'_>) -> DataFields {
    let mut out = DataFields::new();
    let mut put = |name: &str, v: Value| {
        out.insert(name.to_owned(), v);
    };
    if before.0.len() == after.0.len() {
        // The same key's two builds: slot by slot.
        for ((name, b), (_, a)) in before.0.iter().zip(&after.0) {
            match (b, a) {
                (_, Some(a)) if *b != Some(*a) => put(name, a.to_json()),
                (Some(_), None) => put(name, Value::Null),
                _ => {}
            }
        }
        return out;
    }
    for (name, v) in &after.0 {
        if let Some(v) = v
            && before.get(name) != Some(*v)
        {
            put(name, v.to_json());
        }
    }
    for (name, v) in &before.0 {
        if v.is_some() && after.get(name).is_none() {
            put(name, Value::Null);
        }
    }
    out
}

impl<'a> ProfileFields<'a> {
    /// A field's value (the last one under that name, as a JSON object would keep it).
    fn get(&self, name: &str) -> Option<FieldValue<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }
}

#[cfg(test)]
mod field_value_tests {
    use super::{FieldValue as F, ProfileFields, SLOTS, diff, fields};
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn pin(a: F<'_>, b: F<'_>) -> Result<(), TestCaseError> {
        prop_assert_eq!(a == b, a.to_json() == b.to_json(), "{:?} vs {:?}", a, b);
        Ok(())
    }

    proptest! {
        /// Comparing field values says what comparing their JSON would: a date to the
        /// second, money to the cent, tags without the empty ones.
        #[test]
        fn equal_exactly_when_their_json_is(
            a in -100_000i64..100_000, d in -2_500i64..2_500,
            m in -1_000_000i64..1_000_000, s in 0u32..6, dm in -20i64..20,
            t in "[ab,]{0,6}", u in "[ab,]{0,6}",
        ) {
            let base = 1_700_000_000_000i64;
            pin(F::Date(base + a), F::Date(base + a + d))?;
            pin(F::Date(a), F::Date(a + d))?;
            pin(F::Date(i64::MAX - 5), F::Date(i64::MAX - 5 + d.min(0)))?;
            let x = Decimal::new(m, s);
            pin(F::Money(x), F::Money(x + Decimal::new(dm, s + 1)))?;
            pin(F::Money(x), F::Money(x.normalize()))?;
            pin(F::Tags(&t), F::Tags(&u))?;
            pin(F::Text(&t), F::Text(&u))?;
        }
    }

    #[test]
    fn only_changed_fields_become_json_and_removed_ones_null() {
        let before = ProfileFields(vec![
            ("a", Some(F::Count(1))),
            ("b", Some(F::Text("x"))),
            ("c", None),
        ]);
        let after = ProfileFields(vec![
            ("a", Some(F::Count(1))),
            ("b", None),
            ("c", Some(F::Bool(true))),
        ]);
        let d = diff(&before, &after);
        assert_eq!(
            serde_json::Value::Object(d),
            serde_json::json!({"b": null, "c": true})
        );
        let all = diff(&ProfileFields::default(), &after);
        assert_eq!(
            serde_json::Value::Object(all),
            serde_json::json!({"a": 1, "c": true})
        );
    }

    #[test]
    fn the_field_list_is_allocated_once_and_small() {
        use crate::config::{IdentityMode, RulesConfig};
        use schemas::{CustomerKey, KeyKind, ShopDomain};
        let shop = ShopDomain::parse("a.myshopify.com").unwrap();
        let most = [
            IdentityMode::UserId,
            IdentityMode::Email,
            IdentityMode::Hybrid,
        ]
        .into_iter()
        .flat_map(|mode| {
            let mut cfg = RulesConfig::default();
            cfg.identity.mode = mode;
            [KeyKind::Customer, KeyKind::Email].map(|kind| {
                let key = CustomerKey::new(&shop, kind, "5");
                let state = crate::aggregate::State::default();
                fields(&cfg, &key, &state, &crate::ltv::summary(&state))
                    .0
                    .len()
            })
        })
        .max();
        assert_eq!(most, Some(SLOTS), "SLOTS is the most fields a build gives");
        assert!(
            SLOTS * std::mem::size_of::<(&str, Option<F<'_>>)>() <= 1024,
            "the list fits the allocator's per-thread cache"
        );
    }
}
