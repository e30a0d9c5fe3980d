//! Real-world payload oddities: lenient on secondary fields, strict on money and identity.
//!
//! Public fixtures and real senders carry strings where booleans are expected, numbers where
//! text is expected, nulls anywhere, and drop fields such as `processed_at`. A secondary field
//! is coerced (and counted) or ignored; a field that decides money or identity dead-letters the
//! input with a reason naming the problem.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rules::{Ctx, MarketingRules, RuleError, Rules, RulesConfig, State};
use schemas::{Action, CustomerKey};
use serde_json::{Value, json};

const C: u64 = 7_300_000_000_011;
const EMAIL: &str = "odd.payloads@example.com";

fn odd_order() -> Value {
    let mut o = OrderSpec::new(6001, Some(C), EMAIL, T0, "120.00").json();
    o["test"] = json!("FALSE");
    o["buyer_accepts_marketing"] = json!("TRUE");
    o["order_number"] = json!("1001");
    o["source_name"] = json!(580111);
    o["cancel_reason"] = Value::Null;
    o["line_items"][0]["quantity"] = json!("2");
    o["line_items"][0]["vendor"] = json!(null);
    o["line_items"][1]["sku"] = json!(12345);
    o["customer"]["accepts_marketing"] = json!("0");
    o["customer"]["first_name"] = json!(false);
    o
}

#[test]
fn string_booleans_and_odd_secondary_fields_are_coerced_not_dead_lettered() {
    let rules = MarketingRules::new(RulesConfig::default());
    let mut h = Harness::new(RulesConfig::default());
    h.rules = rules.clone();
    h.deliver(envelope("orders/paid", &odd_order(), "odd-1", T0));
    let p = h.profile(&format!("c/{C}"));
    assert_eq!(p["shopify_lifetime_value"].as_f64(), Some(120.0), "{p:?}");
    assert_eq!(p["shopify_orders_count"].as_f64(), Some(1.0));
    let purchase = h.purchases()[0];
    let Action::TrackPurchase {
        items, data_fields, ..
    } = &purchase.action
    else {
        unreachable!()
    };
    assert_eq!(items[0].quantity, 2);
    assert_eq!(items[1].sku.as_deref(), Some("12345"));
    assert_eq!(data_fields["order_number"], json!(1001));
    assert_eq!(data_fields["source_name"], json!("580111"));
    // Each coercion is counted, by kind, for the engine's metrics.
    let counts = rules.coercions();
    assert!(counts.boolean >= 3, "{counts:?}");
    assert!(counts.integer >= 2, "{counts:?}");
    assert!(counts.text >= 2, "{counts:?}"); // sku, source_name
    // first_name: false
    assert!(counts.ignored >= 1, "{counts:?}");
}

#[test]
fn a_test_order_flagged_as_a_string_is_still_a_test_order() {
    let mut o = OrderSpec::new(6002, Some(C), EMAIL, T0, "50.00").json();
    o["test"] = json!("TRUE");
    let mut h = Harness::default();
    h.deliver(envelope("orders/paid", &o, "odd-2", T0));
    assert!(h.purchases().is_empty(), "a test order is never a purchase");
    assert_eq!(
        h.profile(&format!("c/{C}"))["shopify_lifetime_value"].as_f64(),
        Some(0.0)
    );
}

#[test]
fn an_order_without_processed_at_is_placed_at_its_creation() {
    let mut o = OrderSpec::new(6003, Some(C), EMAIL, T0, "50.00").json();
    o.as_object_mut().unwrap().remove("processed_at");
    let mut h = Harness::default();
    h.deliver(envelope("orders/paid", &o, "odd-3", T0 + HOUR));
    let Action::TrackPurchase { created_at_s, .. } = &h.purchases()[0].action else {
        unreachable!()
    };
    assert_eq!(*created_at_s, T0 / 1000);
}

fn apply(topic: &str, body: &Value) -> Result<Vec<rules::Effect>, RuleError> {
    let rules = MarketingRules::new(RulesConfig::default());
    let e = envelope(topic, body, "strict", T0);
    let key = CustomerKey::parse(&e.routing_key).unwrap();
    let ctx = Ctx {
        now_ms: T0,
        event_time_ms: T0,
        wall_clock_ms: T0,
    };
    rules.on_event(&key, &mut State::default(), &e, &ctx)
}

/// Money and identity stay strict: the input is dead-lettered with a reason that names the
/// field, so an operator can see what to fix.
#[test]
fn money_and_identity_fields_dead_letter_with_a_clear_reason() {
    let mut no_id = OrderSpec::new(6004, Some(C), EMAIL, T0, "50.00").json();
    no_id.as_object_mut().unwrap().remove("id");
    let mut bad_money = OrderSpec::new(6005, Some(C), EMAIL, T0, "50.00").json();
    bad_money["total_price"] = json!("12,50");
    bad_money["total_price_set"] = Value::Null;
    let mut maybe_test = OrderSpec::new(6006, Some(C), EMAIL, T0, "50.00").json();
    maybe_test["test"] = json!("perhaps");
    let mut bad_email = OrderSpec::new(6007, Some(C), EMAIL, T0, "50.00").json();
    bad_email["email"] = json!(42);
    for (body, field) in [
        (no_id, "id"),
        (bad_money, "total_price"),
        (maybe_test, "test"),
        (bad_email, "email"),
    ] {
        match apply("orders/paid", &body) {
            Err(RuleError::Unparseable { message, .. }) => {
                assert!(message.contains(field), "{field}: {message}")
            }
            other => panic!("{field}: expected a dead-letter, got {other:?}"),
        }
    }
}
