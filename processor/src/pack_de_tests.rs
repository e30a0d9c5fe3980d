//! Reading packed bytes gives what reading their text gives: any JSON, typed shapes (maps keyed
//! by numbers, options, enums, newtypes), and the rules' real aggregates.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::{pack_json_near, tests::arb_json};
use super::from_packed_near;

/// Both readings of `text` packed near `base`: straight from the bytes, and through the text.
fn both<T: serde::de::DeserializeOwned>(text: &str, base: i64) -> (Option<T>, Option<T>) {
    let packed = pack_json_near(text, base).unwrap();
    (
        from_packed_near::<T>(&packed, base).ok(),
        serde_json::from_str::<T>(text).ok(),
    )
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Tagged(u32),
    Pair(i64, String),
    Named { at: u64, note: Option<String> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Id(u64);

#[derive(Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
struct Shape {
    by_id: BTreeMap<u64, String>,
    by_signed: HashMap<i32, bool>,
    by_flag: BTreeMap<bool, u8>,
    kinds: Vec<Kind>,
    id: Option<Id>,
    money: Option<String>,
    ratio: f64,
    tuple: (u8, String),
    #[serde(skip_serializing_if = "Option::is_none")]
    maybe: Option<Box<Shape>>,
    skipped_by_reader: (),
}

#[test]
fn typed_shapes_read_as_serde_json_reads_their_text() {
    let shape = Shape {
        by_id: [(6_000_000_000_000, "a".into()), (7, "b".into())].into(),
        by_signed: [(-3, true), (4, false)].into(),
        by_flag: [(true, 1), (false, 0)].into(),
        kinds: vec![
            Kind::Plain,
            Kind::Tagged(9),
            Kind::Pair(-1_767_366_000_000, "x".into()),
            Kind::Named {
                at: 1_767_366_000_000,
                note: None,
            },
        ],
        id: Some(Id(5_000_001)),
        money: Some("120.50".into()),
        ratio: 0.25,
        tuple: (3, "USD".into()),
        maybe: Some(Box::new(Shape::default())),
        skipped_by_reader: (),
    };
    let text = serde_json::to_string(&shape).unwrap();
    let (direct, via_text) = both::<Shape>(&text, 1_767_000_000_000);
    assert_eq!(direct, via_text);
    assert_eq!(direct.unwrap(), shape);
    // A type reading fewer fields than the text holds skips the rest, timestamps included.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Few {
        ratio: f64,
    }
    let (direct, via_text) = both::<Few>(&text, 0);
    assert_eq!(direct, via_text);
    assert!(direct.is_some());
}

#[test]
fn what_the_text_refuses_the_bytes_refuse() {
    for (text, _why) in [
        (r#"{"a":1}"#, "a map key that is not a number"),
        (r#"[1,2,3]"#, "more members than a tuple takes"),
        (r#""Nope""#, "an unknown variant"),
    ] {
        let (direct, via_text) = both::<(BTreeMap<u64, u8>,)>(text, 0);
        assert_eq!(direct, via_text, "{text}");
        let (direct, via_text) = both::<(u8, u8)>(text, 0);
        assert_eq!(direct, via_text, "{text}");
        let (direct, via_text) = both::<Kind>(text, 0);
        assert_eq!(direct, via_text, "{text}");
    }
}

#[test]
fn edge_values_read_as_their_text_does() {
    for text in [
        r#"[true,false,null,0,27,28,-1,-28,-29,9223372036854775807,-9223372036854775808,18446744073709551615]"#,
        r#"["0","0.0","-0.00","120.50","00.5","1.","-","1e5","12345678901234567890","0.12345678901234","x\"y\\z\u0001é"]"#,
        r#"[1.5,-2.25e-10,1e300,-18446744073709551616,18446744073709551616]"#,
        r#"[1767366000000,1767366000000,1767279600000,11655343354940486776,1767279600001,{"t":4294967296},[9007199254740991],9007199254740992,4294967295,-1767366000000]"#,
    ] {
        let (direct, via_text) = both::<Value>(text, 0);
        assert_eq!(direct, via_text, "{text}");
        assert!(direct.is_some(), "{text}");
    }
}

/// The rules' own aggregates, as shopify-sim's customers build them input by input.
#[test]
fn the_rules_aggregates_read_back_equal() {
    use rules::{Ctx, Rules};
    let rules = rules::MarketingRules::new(rules::RulesConfig::default());
    let cfg = shopify_sim::ScenarioConfig {
        customers: 40,
        ..Default::default()
    };
    let scenario = shopify_sim::generate(&cfg).unwrap();
    let shop = schemas::ShopDomain::parse(&cfg.shop_domain).unwrap();
    let mut states: HashMap<String, rules::State> = HashMap::new();
    let mut checked = 0;
    for d in scenario.deliveries {
        let key = schemas::routing_key(&shop, &d.topic, &d.body);
        let at = d.triggered_at.timestamp_millis();
        let env = schemas::ShopifyEnvelope {
            delivery_id: d.webhook_id,
            event_id: Some(d.event_id),
            topic: d.topic,
            shop_domain: shop.as_str().to_owned(),
            api_version: Some(d.api_version),
            triggered_at_ms: Some(at),
            received_at_ms: at,
            routing_key: key.as_str().to_owned(),
            source: schemas::EventSource::Webhook,
            webhook_name: None,
            body: d.body,
        };
        let ctx = Ctx {
            now_ms: at,
            event_time_ms: at,
            wall_clock_ms: at,
        };
        let state = states.entry(key.as_str().to_owned()).or_default();
        if rules.on_event(&key, state, &env, &ctx).is_err() {
            continue;
        }
        let text = serde_json::to_string(state).unwrap();
        let packed = pack_json_near(&text, at).unwrap();
        let direct: rules::State = from_packed_near(&packed, at).unwrap();
        assert_eq!(&direct, state, "{text}");
        checked += 1;
    }
    assert!(checked > 500, "only {checked} aggregates checked");
}

proptest! {
    #[test]
    fn any_json_reads_as_its_text_does(v in arb_json(), base in any::<i64>()) {
        let (direct, via_text) = both::<Value>(&v.to_string(), base);
        prop_assert_eq!(direct, via_text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = from_packed_near::<Value>(&bytes, 0);
        let _ = from_packed_near::<Shape>(&bytes, 0);
    }
}
