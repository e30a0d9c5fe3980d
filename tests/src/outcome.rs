//! What iterable-sim holds compared with a scenario's `expected.json`.

use std::collections::{BTreeMap, BTreeSet};

use iterable_sim::{EventView, Filter, ProfileView, SimState};
use shopify_sim::{CustomerExpectation, ExpectedOutcome};

/// The abandoned-checkout event id the rules use for a checkout token.
pub fn checkout_event_id(shop: &str, token: &str) -> String {
    schemas::iterable_id(&[shop, "checkout-abandoned", token])
}

/// What [`check_outcome`] found.
#[derive(Debug, Default)]
pub struct OutcomeReport {
    /// Every difference from the expected outcome, one line each.
    pub mismatches: Vec<String>,
    /// Counts of what was compared.
    pub compared: BTreeMap<&'static str, usize>,
}

impl OutcomeReport {
    /// Mismatch lines that start with `prefix` (e.g. `"ltv"`).
    pub fn of_kind(&self, prefix: &str) -> Vec<&String> {
        self.mismatches
            .iter()
            .filter(|m| m.starts_with(prefix))
            .collect()
    }

    /// A printable summary (the first `n` mismatches).
    pub fn summary(&self, n: usize) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &self.mismatches {
            *kinds.entry(m.split(':').next().unwrap_or("")).or_default() += 1;
        }
        let mut s = format!(
            "compared {:?}; {} mismatches by kind {:?}\n",
            self.compared,
            self.mismatches.len(),
            kinds
        );
        for m in self.mismatches.iter().take(n) {
            s.push_str("  ");
            s.push_str(m);
            s.push('\n');
        }
        s
    }
}

fn field_str(p: &ProfileView, f: &str) -> Option<String> {
    p.data_fields.get(f).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn cents(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(|f| (f * 100.0).round() as i64),
        serde_json::Value::String(s) => s.parse::<f64>().ok().map(|f| (f * 100.0).round() as i64),
        _ => None,
    }
}

fn str_cents(s: &str) -> Option<i64> {
    s.parse::<f64>().ok().map(|f| (f * 100.0).round() as i64)
}

fn value_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

/// Compares what iterable-sim holds with a scenario's expected outcome, for the default field
/// and event names: per person the profile's lifetime value (to the cent), counted orders and
/// VIP tier; `first_purchase` (once, the right order), `customer_lapsed` and
/// `customer_reactivated` (as many as expected), `vip_tier_upgraded` (each tier up to the
/// expected one, once); every must-fire abandoned checkout present once for its person and no
/// must-not-fire one anywhere; redacted people absent; every event and purchase written once
/// (`occurrences == 1`; needs `count_updates_as_occurrences = false`).
pub fn check_outcome(expected: &ExpectedOutcome, sim: &SimState) -> OutcomeReport {
    let mut r = OutcomeReport::default();
    let shop = expected.shop_domain.as_str();
    let all_events = sim.events(&Filter::default());
    let events_by_id: BTreeMap<&str, &EventView> =
        all_events.iter().map(|e| (e.id.as_str(), e)).collect();
    let tiers: Vec<&str> = expected
        .rules
        .tiers
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let base = expected.rules.base_tier.as_str();

    for (key, c) in &expected.customers {
        let filter = person_filter(c);
        let profiles = sim.profiles(&filter);
        *r.compared.entry("people").or_default() += 1;
        if c.redacted {
            *r.compared.entry("redacted").or_default() += 1;
            if !profiles.is_empty() {
                r.mismatches.push(format!(
                    "redact: {key} was redacted but Iterable still has a profile"
                ));
            }
            continue;
        }
        let Some(p) = profiles.first() else {
            let has_something = c.orders_count > 0
                || !c.abandoned_checkouts_must_fire.is_empty()
                || c.first_purchase_order_id.is_some();
            if has_something {
                r.mismatches.push(format!(
                    "profile: {key} has no Iterable profile (expected ltv {} orders {})",
                    c.lifetime_value, c.orders_count
                ));
            }
            continue;
        };
        check_profile(&mut r, key, c, p, base);
        let events = sim.events(&filter);
        check_events(&mut r, key, c, &events, &tiers, base);
        for a in &c.abandoned_checkouts_must_fire {
            *r.compared.entry("checkouts_must_fire").or_default() += 1;
            let id = checkout_event_id(shop, &a.token);
            match events_by_id.get(id.as_str()) {
                None => r.mismatches.push(format!(
                    "checkout-missing: {key} checkout {} due {} did not fire",
                    a.token, a.due_at
                )),
                Some(e) if !events.iter().any(|x| x.id == e.id) => r.mismatches.push(format!(
                    "checkout-user: {key} checkout {} fired for another user {:?}",
                    a.token, e.user
                )),
                Some(_) => {}
            }
        }
        for a in &c.abandoned_checkouts_must_not_fire {
            *r.compared.entry("checkouts_must_not_fire").or_default() += 1;
            if events_by_id.contains_key(checkout_event_id(shop, &a.token).as_str()) {
                r.mismatches.push(format!(
                    "checkout-unwanted: {key} checkout {} due {} fired but must not ({:?})",
                    a.token, a.due_at, a.reason
                ));
            }
        }
    }
    for a in &expected.unattributed_checkouts {
        *r.compared.entry("checkouts_must_not_fire").or_default() += 1;
        if events_by_id.contains_key(checkout_event_id(shop, &a.token).as_str()) {
            r.mismatches.push(format!(
                "checkout-unwanted: unattributed checkout {} fired ({:?})",
                a.token, a.reason
            ));
        }
    }
    for e in &all_events {
        *r.compared.entry("events").or_default() += 1;
        if e.occurrences != 1 {
            r.mismatches.push(format!(
                "duplicate: event {} {} has {} occurrences",
                e.name, e.id, e.occurrences
            ));
        }
    }
    for p in sim.purchases(&Filter::default()) {
        *r.compared.entry("purchases").or_default() += 1;
        if p.occurrences != 1 {
            r.mismatches.push(format!(
                "duplicate: purchase {} has {} occurrences",
                p.id, p.occurrences
            ));
        }
    }
    let stats = sim.stats();
    if stats.totals.rate_limited != 0 {
        r.mismatches.push(format!(
            "429: iterable-sim answered {} requests with 429",
            stats.totals.rate_limited
        ));
    }
    r
}

fn person_filter(c: &CustomerExpectation) -> Filter {
    match c.customer_id {
        Some(id) => Filter {
            user_id: Some(id.to_string()),
            ..Filter::default()
        },
        None => Filter {
            email: Some(c.email.to_lowercase()),
            ..Filter::default()
        },
    }
}

fn check_profile(
    r: &mut OutcomeReport,
    key: &str,
    c: &CustomerExpectation,
    p: &ProfileView,
    base: &str,
) {
    *r.compared.entry("profiles").or_default() += 1;
    let ltv = p
        .data_fields
        .get("shopify_lifetime_value")
        .and_then(cents)
        .unwrap_or(0);
    if Some(ltv) != str_cents(&c.lifetime_value) {
        r.mismatches.push(format!(
            "ltv: {key} lifetime value {} in Iterable, expected {} (orders {:?})",
            value_text(p.data_fields.get("shopify_lifetime_value")),
            c.lifetime_value,
            c.orders
                .iter()
                .map(|o| (o.id, o.value.as_str(), o.counted))
                .collect::<Vec<_>>()
        ));
    }
    let count = p
        .data_fields
        .get("shopify_orders_count")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    if count != i64::from(c.orders_count) {
        r.mismatches.push(format!(
            "orders-count: {key} {count} in Iterable, expected {}",
            c.orders_count
        ));
    }
    let tier = field_str(p, "shopify_vip_tier").unwrap_or_else(|| base.to_owned());
    if tier != c.tier {
        r.mismatches.push(format!(
            "tier: {key} {tier} in Iterable, expected {} (peak ltv {}, final {})",
            c.tier, c.peak_lifetime_value, c.lifetime_value
        ));
    }
}

fn check_events(
    r: &mut OutcomeReport,
    key: &str,
    c: &CustomerExpectation,
    events: &[EventView],
    tiers: &[&str],
    base: &str,
) {
    let named = |n: &str| events.iter().filter(|e| e.name == n).collect::<Vec<_>>();
    let fp = named("first_purchase");
    *r.compared.entry("first_purchase").or_default() +=
        usize::from(c.first_purchase_order_id.is_some());
    match (c.first_purchase_order_id, fp.as_slice()) {
        (None, []) => {}
        (Some(id), [e]) => {
            let got = value_text(e.data_fields.get("order_id"));
            if got != id.to_string() {
                r.mismatches.push(format!(
                    "first-purchase: {key} first_purchase for order {got}, expected {id}"
                ));
            }
        }
        (want, got) => r.mismatches.push(format!(
            "first-purchase: {key} {} first_purchase events (orders {:?}), expected {want:?}",
            got.len(),
            got.iter()
                .map(|e| value_text(e.data_fields.get("order_id")))
                .collect::<Vec<_>>()
        )),
    }
    let lapsed = named("customer_lapsed");
    *r.compared.entry("lapses").or_default() += c.lapses.len();
    if lapsed.len() != c.lapses.len() {
        r.mismatches.push(format!(
            "lapse: {key} {} customer_lapsed (at {:?}), expected {} (due {:?})",
            lapsed.len(),
            lapsed.iter().map(|e| e.created_at).collect::<Vec<_>>(),
            c.lapses.len(),
            c.lapses
        ));
    }
    let react = named("customer_reactivated");
    *r.compared.entry("reactivations").or_default() += c.reactivations.len();
    if react.len() != c.reactivations.len() {
        r.mismatches.push(format!(
            "reactivation: {key} {} customer_reactivated, expected {} ({:?})",
            react.len(),
            c.reactivations.len(),
            c.reactivations
        ));
    }
    let want: BTreeSet<&str> = match tiers.iter().position(|t| *t == c.tier) {
        Some(i) => tiers[..=i].iter().copied().collect(),
        None if c.tier == base => BTreeSet::new(),
        None => BTreeSet::new(),
    };
    let upgrades = named("vip_tier_upgraded");
    let got: Vec<String> = upgrades
        .iter()
        .map(|e| value_text(e.data_fields.get("tier")))
        .collect();
    let got_set: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    *r.compared.entry("tier_upgrades").or_default() += want.len();
    if got_set != want || got.len() != want.len() {
        r.mismatches.push(format!(
            "tier-upgrade: {key} vip_tier_upgraded {got:?}, expected {want:?}"
        ));
    }
}
