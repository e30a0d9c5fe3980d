//! The packing is lossless, compact, equal to the text path, and never panics on bad bytes.

use super::*;
use proptest::prelude::*;
use serde_json::Value;

fn round_trip(v: &Value) -> Value {
    let text = v.to_string();
    let packed = pack_json(&text).unwrap();
    serde_json::from_str(&unpack_json(&packed).unwrap()).unwrap()
}

#[test]
fn an_aggregate_round_trips_at_about_half_the_size() {
    let text = r#"{"p":{"e":{"t":1767366000000,"v":"a@example.com"},"pf":{"t":1767366000000,"fn":"Ada","ln":"Lovelace"},"cu":"USD","f":4},"o":[{"i":5000000,"t":1767279600000,"u":1767279600000,"v":"120.50","s":"paid","f":773,"h":11655343354940486776},{"i":5000001,"t":1767366000000,"u":1767366000000,"v":"89.99","s":"paid","f":773,"h":4077970261497705237}]}"#;
    let packed = pack_json(text).unwrap();
    assert_eq!(unpack_json(&packed).unwrap(), text, "byte for byte");
    // 338 bytes of JSON pack into 137 (timestamps chained as differences) when its names
    // have one-byte ids; up to 160 when other tests (run alongside, same process-wide
    // table) interned over 127 names first and these take two bytes each.
    assert!(packed.len() <= 160, "{} packed bytes", packed.len());
}

#[test]
fn edge_values_round_trip_exactly() {
    for text in [
        r#"{}"#,
        r#"[]"#,
        r#"null"#,
        r#"[true,false,null,0,27,28,-1,-28,-29,9223372036854775807,-9223372036854775808,18446744073709551615]"#,
        r#"["0","0.0","-0.00","120.50","00.5","1.","-","1e5","12345678901234567890","0.12345678901234","x\"y\\z\u0001é"]"#,
        r#"[1.5,-2.25e-10,1e300]"#,
        r#"[1767366000000,1767366000000,1767279600000,11655343354940486776,1767279600001,{"t":4294967296},[9007199254740991],9007199254740992,4294967295,-1767366000000]"#,
        r#"{"a":{"b":{"c":[{"d":"e"}]}}}"#,
    ] {
        let packed = pack_json(text).unwrap();
        let back = unpack_json(&packed).unwrap();
        let a: Value = serde_json::from_str(text).unwrap();
        let b: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(a, b, "{text} -> {back}");
    }
    // Decimal-looking strings come back as the same text, not as numbers.
    assert_eq!(
        unpack_json(&pack_json(r#"["-0.00","120.50","7"]"#).unwrap()).unwrap(),
        r#"["-0.00","120.50","7"]"#
    );
}

#[test]
fn a_base_time_shortens_the_first_timestamp() {
    let text = r#"{"last_order_id":"5000001","last_order_ms":1767366000000}"#;
    let base = 1_767_366_000_000 + 90 * 86_400_000;
    let near = pack_json_near(text, base).unwrap();
    let far = pack_json(text).unwrap();
    assert!(near.len() < far.len(), "{} vs {}", near.len(), far.len());
    assert_eq!(unpack_json_near(&near, base).unwrap(), text);
    assert_eq!(unpack_json(&far).unwrap(), text);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(pack_json("{").is_err());
    assert!(pack_json("1 2").is_err());
    for bytes in [
        &[0xff][..],
        &[0xbc],
        &[0x81],
        &[0x63, b'a'],
        &[0xa1, 0x00, 0x05],
        &[0x5e, 0x01],
    ] {
        assert!(unpack_json(bytes).is_err(), "{bytes:?}");
    }
    assert!(
        unpack_json(&[
            0x9c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .is_err()
    );
}

/// Any JSON without floats (aggregates hold none; a float is carried as serde_json prints
/// it, which `edge_values_round_trip_exactly` covers).
pub(super) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[-0-9.]{0,8}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn wide_containers_round_trip() {
    let v: Value = (0..300u64).map(|i| 1_767_366_000_000 + i).collect();
    let mut m = serde_json::Map::new();
    for i in 0..40 {
        m.insert(format!("k{i}"), Value::from(vec![i; i as usize]));
    }
    for v in [v, Value::Object(m)] {
        assert_eq!(round_trip(&v), v);
        assert_eq!(
            pack_value_near(&v, 5).unwrap(),
            pack_json_near(&v.to_string(), 5).unwrap()
        );
    }
}

proptest! {
    #[test]
    fn any_json_round_trips(v in arb_json()) {
        prop_assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them(s in "\\PC{0,8}|.{0,8}|[\\x00-\\x7f]{0,8}") {
        let mut out = String::new();
        write_string(&mut out, &s);
        prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn a_value_packs_as_its_text_does(v in arb_json(), base in any::<i64>()) {
        prop_assert_eq!(
            pack_value_near(&v, base).unwrap(),
            pack_json_near(&v.to_string(), base).unwrap()
        );
    }

    #[test]
    fn timestamp_chains_round_trip(v in prop::collection::vec(prop_oneof![(1u64 << 31..1 << 54), any::<u64>(), 1_767_000_000_000u64..1_768_000_000_000], 0..12)) {
        let v = Value::from(v);
        prop_assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = unpack_json(&bytes);
    }
}
