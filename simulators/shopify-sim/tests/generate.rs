//! Generation tests: determinism, Shopify payload invariants, and ground truth recomputed from payloads.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;
use shopify_sim::{
    DeliveryKind, NotFireReason, Scenario, ScenarioConfig, SimError, fixtures, generate,
    is_legacy_api_version, verify,
};

fn small(seed: u64) -> ScenarioConfig {
    ScenarioConfig {
        seed,
        customers: 60,
        ..ScenarioConfig::default()
    }
}

fn run(cfg: &ScenarioConfig) -> Scenario {
    generate(cfg).unwrap()
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn same_seed_is_byte_identical_and_other_seed_differs() {
    let a = run(&small(7));
    let b = run(&small(7));
    assert_eq!(a.deliveries, b.deliveries);
    assert_eq!(
        serde_json::to_vec(&a.expected).unwrap(),
        serde_json::to_vec(&b.expected).unwrap()
    );
    let c = run(&small(8));
    assert_ne!(a.deliveries, c.deliveries);
    assert_ne!(a.expected.customers, c.expected.customers);
}

#[test]
fn payloads_look_like_shopify() {
    let s = run(&small(11));
    let two53 = 1u64 << 53;
    let mut big_ids = 0;
    let mut escapes = 0;
    let mut shapes = BTreeSet::new();
    let mut checkout_tokens = BTreeSet::new();
    let mut order_checkout_tokens = BTreeSet::new();
    let mut guest_orders = 0;
    let mut topics = BTreeSet::new();
    for d in &s.deliveries {
        topics.insert(d.topic.clone());
        let text = std::str::from_utf8(&d.body).unwrap();
        if text.contains("\\/") && text.contains("\\u0026") {
            escapes += 1;
        }
        let v = parse(&d.body);
        walk(&v, "", &mut |key, val| {
            if (key == "id" || key.ends_with("_id")) && val.is_number() {
                // Integers only, and they must survive as u64.
                let id = val
                    .as_u64()
                    .unwrap_or_else(|| panic!("{key}={val} not u64"));
                if id > two53 {
                    big_ids += 1;
                    assert_eq!(val.to_string(), id.to_string());
                }
            }
            if let Some(s) = val.as_str() {
                let money_key = key == "amount"
                    || key == "price"
                    || key.starts_with("total_")
                    || key.starts_with("current_total")
                    || key.starts_with("current_subtotal")
                    || key == "subtotal_price"
                    || key == "line_price"
                    || key == "total_spent";
                if money_key && key != "total_unsettled_set" {
                    let (int, frac) = s.split_once('.').unwrap_or_else(|| panic!("{key}={s}"));
                    // Unsettled amounts are "0.0" in Shopify samples; everything else 2 dp.
                    assert!(frac.len() == 2 || s == "0.0", "{key}={s} in {}", d.topic);
                    assert!(int.chars().all(|c| c.is_ascii_digit() || c == '-'));
                }
                if key == "created_at" || key == "updated_at" || key == "processed_at" {
                    if d.topic.starts_with("carts/") {
                        assert!(s.ends_with(".000Z") || s.ends_with('Z'), "{s}");
                        assert_eq!(s.len(), 24, "{s}");
                    } else {
                        assert!(s.ends_with("-05:00"), "{key}={s} in {}", d.topic);
                    }
                }
            }
        });
        match d.topic.as_str() {
            "customers/create" | "customers/update" => {
                let legacy = is_legacy_api_version(&d.api_version);
                assert_eq!(v.get("tags").is_some(), legacy);
                assert_eq!(v.get("email_marketing_consent").is_some(), legacy);
                assert_eq!(v.get("orders_count").is_some(), legacy);
                assert_eq!(v.get("total_spent").is_some(), legacy);
                assert!(
                    v["admin_graphql_api_id"]
                        .as_str()
                        .unwrap()
                        .starts_with("gid://shopify/Customer/")
                );
                shapes.insert(legacy);
            }
            "checkouts/create" | "checkouts/update" => {
                let token = v["token"].as_str().unwrap().to_owned();
                assert!(
                    v["abandoned_checkout_url"]
                        .as_str()
                        .unwrap()
                        .contains(&token)
                );
                if d.topic == "checkouts/create" {
                    assert!(v["completed_at"].is_null());
                }
                checkout_tokens.insert(token);
            }
            "checkouts/delete" => {
                assert!(v.get("token").is_none());
                assert!(v["cart_token"].is_string());
            }
            "orders/create" => {
                order_checkout_tokens.insert(v["checkout_token"].as_str().unwrap().to_owned());
                if v.get("customer").is_none() {
                    guest_orders += 1;
                    assert!(v["email"].as_str().unwrap().contains('@'));
                }
                for li in v["line_items"].as_array().unwrap() {
                    for f in [
                        "product_id",
                        "variant_id",
                        "sku",
                        "title",
                        "price",
                        "quantity",
                    ] {
                        assert!(!li[f].is_null(), "line item {f}");
                    }
                }
                for set in ["total_price_set", "current_total_price_set"] {
                    assert!(v[set]["shop_money"]["amount"].is_string());
                    assert!(v[set]["presentment_money"]["currency_code"].is_string());
                }
            }
            "orders/delete" => {
                assert_eq!(v.as_object().unwrap().len(), 1);
                assert!(v["id"].is_u64());
            }
            "refunds/create" => {
                for rl in v["refund_line_items"].as_array().unwrap() {
                    assert!(rl["subtotal"].is_number() && !rl["subtotal"].is_string());
                    assert!(rl["total_tax"].is_number());
                }
                for t in v["transactions"].as_array().unwrap() {
                    assert_eq!(t["kind"], "refund");
                    assert!(t["total_unsettled_set"]["shop_money"]["currency"].is_string());
                }
            }
            _ => {}
        }
    }
    assert!(big_ids > 100, "ids above 2^53: {big_ids}");
    assert!(escapes > 100, "bodies with \\/ and \\u0026: {escapes}");
    assert_eq!(shapes.len(), 2, "both customer shapes");
    assert!(guest_orders > 0);
    assert!(order_checkout_tokens.is_subset(&checkout_tokens));
    for t in [
        "customers/create",
        "customers/update",
        "customers_email_marketing_consent/update",
        "customers_marketing_consent/update",
        "checkouts/create",
        "checkouts/update",
        "orders/create",
        "orders/paid",
        "orders/updated",
        "orders/fulfilled",
        "refunds/create",
    ] {
        assert!(topics.contains(t), "missing {t}");
    }
}

fn walk(v: &Value, key: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(key, v);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                walk(x, k, f);
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, key, f);
            }
        }
        _ => {}
    }
}

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).unwrap(),
        _ => panic!("not money: {v}"),
    }
}

#[derive(Default)]
struct OrderSeen {
    key: String,
    total: Decimal,
    test: bool,
    paid: bool,
    deleted: bool,
    cancelled: bool,
    refunds: BTreeMap<u64, Decimal>,
}

/// Recompute LTV and counted orders from the payloads alone, applying the documented
/// rules, and compare with the generator's expected outcome.
#[test]
fn expected_ltv_matches_recomputation_from_payloads() {
    let cfg = small(23);
    let s = run(&cfg);
    let mut orders: BTreeMap<u64, OrderSeen> = BTreeMap::new();
    let mut seen_webhooks = BTreeSet::new();
    for d in &s.deliveries {
        if !seen_webhooks.insert(d.webhook_id.clone()) {
            continue;
        }
        let v = parse(&d.body);
        match d.topic.as_str() {
            "orders/create" | "orders/updated" | "orders/paid" | "orders/cancelled"
            | "orders/fulfilled" => {
                let id = v["id"].as_u64().unwrap();
                let o = orders.entry(id).or_default();
                o.key = match v.get("customer") {
                    Some(c) => c["id"].as_u64().unwrap().to_string(),
                    None => format!("email:{}", v["email"].as_str().unwrap().to_lowercase()),
                };
                o.total = dec(&v["total_price_set"]["shop_money"]["amount"]);
                assert_eq!(o.total, dec(&v["total_price"]));
                o.test = v["test"].as_bool().unwrap();
                o.cancelled |= !v["cancelled_at"].is_null();
                o.paid |= d.topic == "orders/paid";
            }
            "orders/delete" => orders.entry(v["id"].as_u64().unwrap()).or_default().deleted = true,
            "refunds/create" => {
                let order_id = v["order_id"].as_u64().unwrap();
                let txns = v["transactions"].as_array().unwrap();
                let in_shop = txns
                    .iter()
                    .all(|t| t["currency"] == cfg.shop_currency.as_str());
                let amount: Decimal = if in_shop {
                    txns.iter()
                        .filter(|t| t["status"] == "success")
                        .map(|t| dec(&t["amount"]))
                        .sum()
                } else {
                    let lines: Decimal = v["refund_line_items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| {
                            dec(&l["subtotal_set"]["shop_money"]["amount"])
                                + dec(&l["total_tax_set"]["shop_money"]["amount"])
                        })
                        .sum();
                    let ship: Decimal = v["refund_shipping_lines"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| dec(&l["subtotal_amount_set"]["shop_money"]["amount"]))
                        .sum();
                    lines + ship
                };
                orders
                    .entry(order_id)
                    .or_default()
                    .refunds
                    .insert(v["id"].as_u64().unwrap(), amount);
            }
            _ => {}
        }
    }
    let mut ltv: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut counted: BTreeMap<String, u32> = BTreeMap::new();
    for o in orders.values() {
        if o.key.is_empty() || o.test || o.deleted || !o.paid {
            continue;
        }
        let refunded: Decimal = o.refunds.values().copied().sum();
        let value = (o.total - refunded).max(Decimal::ZERO);
        *ltv.entry(o.key.clone()).or_default() += value;
        if !(o.cancelled && refunded >= o.total) {
            *counted.entry(o.key.clone()).or_default() += 1;
        }
    }
    let mut nonzero = 0;
    let mut downgrades_avoided = 0;
    let tiers = &cfg.rules.tiers;
    for (key, exp) in &s.expected.customers {
        let want = ltv.get(key).copied().unwrap_or_default();
        let got = Decimal::from_str(&exp.lifetime_value).unwrap();
        assert_eq!(got, want, "LTV of {key}");
        assert_eq!(exp.lifetime_value.split_once('.').unwrap().1.len(), 2);
        assert_eq!(
            exp.orders_count,
            counted.get(key).copied().unwrap_or(0),
            "count of {key}"
        );
        if got > Decimal::ZERO {
            nonzero += 1;
        }
        // Tiers are kept once reached: the tier follows the peak value, which is never
        // below the final one.
        let tier_of = |v: Decimal| {
            tiers
                .iter()
                .rev()
                .find(|t| t.min_spend.is_some_and(|m| v >= m))
                .map_or(cfg.rules.base_tier.as_str(), |t| t.name.as_str())
        };
        let peak = Decimal::from_str(&exp.peak_lifetime_value).unwrap();
        assert!(peak >= got, "peak below final for {key}");
        assert_eq!(exp.tier, tier_of(peak), "tier of {key}");
        if exp.tier != tier_of(got) {
            downgrades_avoided += 1;
        }
        assert_eq!(exp.first_order_at.is_some(), exp.orders_count > 0);
        assert!(exp.reactivations.len() <= exp.lapses.len());
        if let Some(id) = exp.customer_id {
            assert_eq!(key, &id.to_string());
            assert!(!exp.guest);
        } else {
            assert!(key.starts_with("email:") && key == &key.to_lowercase());
        }
    }
    assert!(nonzero > 20, "customers with value: {nonzero}");
    eprintln!("customers whose tier is above their final value's tier: {downgrades_avoided}");
}

#[test]
fn expected_outcome_covers_every_rule() {
    let s = run(&ScenarioConfig {
        customers: 150,
        ..ScenarioConfig::default()
    });
    let c = &s.expected.customers;
    let tiers: BTreeSet<&str> = c.values().map(|e| e.tier.as_str()).collect();
    for t in ["none", "silver", "gold"] {
        assert!(tiers.contains(t), "tier {t} never reached: {tiers:?}");
    }
    assert!(c.values().any(|e| !e.lapses.is_empty()));
    assert!(c.values().any(|e| !e.reactivations.is_empty()));
    assert!(c.values().any(|e| e.guest && e.orders_count > 0));
    assert!(
        c.values()
            .any(|e| !e.abandoned_checkouts_must_fire.is_empty())
    );
    let reasons: BTreeSet<String> = c
        .values()
        .flat_map(|e| e.abandoned_checkouts_must_not_fire.iter())
        .chain(s.expected.unattributed_checkouts.iter())
        .filter_map(|a| a.reason)
        .map(|r| format!("{r:?}"))
        .collect();
    for r in [
        NotFireReason::Completed,
        NotFireReason::OrderedInBetween,
        NotFireReason::Deleted,
        NotFireReason::NoContact,
    ] {
        assert!(
            reasons.contains(&format!("{r:?}")),
            "reason {r:?} missing: {reasons:?}"
        );
    }
    // Lapses are due before the end of the timeline, 90 days after a counted order.
    let end = chrono::DateTime::parse_from_rfc3339(&s.expected.timeline_end).unwrap();
    for e in c.values() {
        for l in &e.lapses {
            assert!(chrono::DateTime::parse_from_rfc3339(l).unwrap() < end);
        }
    }
    // Fault injection happened, and the stats describe it.
    let st = &s.expected.deliveries;
    for k in [
        "duplicate",
        "second_subscription",
        "stale_retry",
        "original",
    ] {
        assert!(st.by_kind.get(k).copied().unwrap_or(0) > 0, "no {k}");
    }
    assert_eq!(st.total as usize, s.deliveries.len());
    assert!(st.unique_webhook_ids < st.total);
    // Second subscriptions share the event id but not the webhook id of an original.
    let originals: BTreeMap<&str, &str> = s
        .deliveries
        .iter()
        .filter(|d| d.kind == DeliveryKind::Original)
        .map(|d| (d.event_id.as_str(), d.webhook_id.as_str()))
        .collect();
    for d in s
        .deliveries
        .iter()
        .filter(|d| d.kind == DeliveryKind::SecondSubscription)
    {
        assert!(originals.contains_key(d.event_id.as_str()));
        assert_ne!(originals[d.event_id.as_str()], d.webhook_id);
        assert!(d.name.is_some());
    }
    // Out of order: some deliveries are sent before an earlier-triggered one.
    assert!(
        s.deliveries
            .windows(2)
            .any(|w| w[1].triggered_at < w[0].triggered_at)
    );
}

#[test]
fn scenario_files_load_and_bad_configs_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for name in ["small.toml", "black-friday.toml", "history.toml"] {
        let cfg = ScenarioConfig::from_file(&dir.join(name)).unwrap();
        assert!(cfg.start_time().is_ok(), "{name}");
    }
    let bf = ScenarioConfig::from_file(&dir.join("black-friday.toml")).unwrap();
    assert!(bf.phases.iter().any(|p| p.multiplier == 10.0));
    let hist = ScenarioConfig::from_file(&dir.join("history.toml")).unwrap();
    assert!(
        hist.start_time().unwrap()
            < chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap()
    );

    for bad in [
        "abandonment_fraction = 2.0",
        "shop_utc_offset = \"-5\"",
        "shop_utc_offset = \"+é1:00\"",
        "start = \"yesterday\"",
        "api_versions = []",
        "api_versions = [\"2025-1\"]",
        "no_such_field = 1",
        "days = 0",
        "[[phases]]\nat_fraction = 0.5\nduration_fraction = 0.1\nmultiplier = -1.0",
        "[rules]\ntiers = [{ name = \"a\", min_spend = \"10\" }, { name = \"b\", min_spend = \"5\" }]",
    ] {
        assert!(
            ScenarioConfig::from_toml_str(bad).is_err(),
            "accepted: {bad}"
        );
    }
    // Live mode must be resolved explicitly; generation never reads the clock.
    let live = ScenarioConfig {
        start: "now".into(),
        ..small(1)
    };
    assert!(matches!(generate(&live), Err(SimError::UnresolvedStart(_))));
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .to_utc();
    let resolved = ScenarioConfig {
        start: "now-400d".into(),
        ..small(1)
    }
    .resolve_start(now)
    .unwrap();
    assert_eq!(resolved.start, "2025-01-25T07:00:00-05:00");
}

#[test]
fn black_friday_phase_concentrates_traffic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut cfg = ScenarioConfig::from_file(&dir.join("black-friday.toml")).unwrap();
    cfg.customers = 80;
    let phase = cfg.phases[0].clone();
    let s = run(&cfg);
    let start = cfg.start_time().unwrap().to_utc();
    let total = chrono::Duration::days(i64::from(cfg.days)).num_seconds() as f64;
    let in_phase = s
        .deliveries
        .iter()
        .filter(|d| {
            let f = (d.triggered_at - start).num_seconds() as f64 / total;
            f >= phase.at_fraction && f < phase.at_fraction + phase.duration_fraction
        })
        .count() as f64;
    let share = in_phase / s.deliveries.len() as f64;
    assert!(
        share > 3.0 * phase.duration_fraction,
        "phase share {share:.4} vs duration {:.4}",
        phase.duration_fraction
    );
}

#[test]
fn fixtures_cover_topics_and_verify() {
    let fx = fixtures("fixture-secret").unwrap();
    let names: BTreeSet<&str> = fx.iter().map(|f| f.name.as_str()).collect();
    for n in [
        "orders__create",
        "orders__delete",
        "refunds__create",
        "customers__create.2024-10",
        "customers__create.2026-07",
        "customers__redact",
        "customers__data_request",
        "shop__redact",
        "orders__create.large",
        "orders__paid.wrong-key",
    ] {
        assert!(names.contains(n), "missing fixture {n}: {names:?}");
    }
    for f in &fx {
        let hmac = f
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-shopify-hmac-sha256"))
            .map(|(_, v)| v.as_str())
            .unwrap();
        let ok = verify(&f.body, b"fixture-secret", hmac);
        assert_eq!(ok, f.expect_status != 401, "{}", f.name);
        if f.name == "orders__create.large" {
            assert!(f.body.len() > 1_000_000);
        }
    }
}
