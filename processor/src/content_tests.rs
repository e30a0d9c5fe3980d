//! The top-level walk agrees with the full parse on every JSON object with string timestamps.

use proptest::prelude::*;

use super::*;

fn env(topic: &str, delivery: &str, body: &str) -> ShopifyEnvelope {
    ShopifyEnvelope {
        delivery_id: delivery.into(),
        event_id: None,
        topic: topic.into(),
        shop_domain: "s.myshopify.com".into(),
        api_version: None,
        triggered_at_ms: Some(1),
        received_at_ms: 1,
        routing_key: "s.myshopify.com/c/1".into(),
        source: schemas::EventSource::Webhook,
        webhook_name: None,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn content_fingerprint_ignores_the_delivery_id() {
    let body = r#"{"id":5,"updated_at":"2026-01-01T00:00:00-05:00"}"#;
    let a = fingerprints(&env("orders/updated", "d1", body));
    let b = fingerprints(&env("orders/updated", "d2", body));
    assert_ne!(a[0], b[0], "different deliveries");
    assert_eq!(a[1], b[1], "same content");
    let c = fingerprints(&env("orders/paid", "d2", body));
    assert_ne!(a[1], c[1], "another topic is another change");
    assert_eq!(fingerprints(&env("orders/paid", "d3", "not json")).len(), 1);
    assert_eq!(
        fingerprints(&env("tillstream/order-link", "d4", body)).len(),
        1
    );
}

/// The fingerprints are stored in the changelog's dedup entries: the ones written by earlier
/// versions (SHA-256 of `d:{shop}:{delivery}` and `c:{shop}:{topic}:{id}:{at}`, first 8 bytes)
/// must keep matching, whatever way they are computed.
#[test]
fn fingerprints_keep_the_values_in_changelogs_written_before() {
    let body = r#"{"id":5,"updated_at":"2026-01-01T00:00:00-05:00"}"#;
    let prints = fingerprints(&env("orders/updated", "d1", body));
    let sha = |text: &str| {
        use sha2::Digest;
        let d = sha2::Sha256::digest(text.as_bytes());
        u64::from_be_bytes(d[..8].try_into().unwrap())
    };
    assert_eq!(
        prints,
        [
            sha("d:s.myshopify.com:d1"),
            sha("c:s.myshopify.com:orders/updated:5:2026-01-01T00:00:00-05:00"),
        ]
    );
    assert_eq!(prints[0], 12_700_549_261_733_113_089, "golden value");
}

fn both(body: &str) -> Option<(String, String)> {
    let fast = content_fields(body.as_bytes());
    let full = parsed_content_fields(body.as_bytes());
    assert_eq!(fast, full, "walk and parse disagree on {body}");
    fast
}

fn pair(id: &str, at: &str) -> Option<(String, String)> {
    Some((id.to_owned(), at.to_owned()))
}

#[test]
fn top_level_fields_only() {
    let body = r#"{"customer":{"id":9,"updated_at":"inner"},"line_items":[{"id":3}],"id":5,
        "note":"a \"quoted\" } ] { [ note","updated_at":"2026-01-01T00:00:00-05:00"}"#;
    assert_eq!(both(body), pair("5", "2026-01-01T00:00:00-05:00"));
}

#[test]
fn token_and_created_at_stand_in() {
    assert_eq!(
        both(r#"{"token":"abc","created_at":"t1"}"#),
        pair(r#""abc""#, "t1")
    );
    assert_eq!(
        both(r#"{"id":null,"token":"abc","updated_at":null,"created_at":"t1"}"#),
        pair(r#""abc""#, "t1")
    );
    assert_eq!(both(r#"{"id":1,"updated_at":null}"#), None);
    assert_eq!(both(r#"{"id":null,"updated_at":"t"}"#), None);
    assert_eq!(both(r#"{}"#), None);
    assert_eq!(
        both(r#" { "id" : 7 , "updated_at" : "t" } "#),
        pair("7", "t")
    );
}

#[test]
fn values_the_walk_cannot_render_go_to_the_parse() {
    // Escapes, big or odd numbers, other JSON types: the full parse decides.
    assert_eq!(
        both(r#"{"id":"gid:\/\/shopify\/Order\/1","updated_at":"t\u0031"}"#),
        pair(r#""gid://shopify/Order/1""#, "t1")
    );
    assert_eq!(
        both(r#"{"id":12345678901234567890,"updated_at":"t"}"#),
        pair("12345678901234567890", "t")
    );
    assert_eq!(both(r#"{"id":1.50,"updated_at":"t"}"#), pair("1.5", "t"));
    assert_eq!(both(r#"{"id":-0,"updated_at":"t"}"#), pair("-0.0", "t"));
    assert_eq!(both(r#"{"id":1e3,"updated_at":"t"}"#), pair("1000.0", "t"));
    assert_eq!(
        both(r#"{"id":{"a":1},"updated_at":"t"}"#),
        pair(r#"{"a":1}"#, "t")
    );
    assert_eq!(both(r#"{"id":true,"updated_at":"t"}"#), pair("true", "t"));
    // A timestamp that is not a string makes serde refuse the body.
    assert_eq!(both(r#"{"updated_at":5,"id":1}"#), None);
    // So does a duplicate field seen before the answer is settled.
    assert_eq!(both(r#"{"id":1,"id":2,"updated_at":"t"}"#), None);
    // Not an object.
    assert_eq!(both(r#"[1,null,"a","b"]"#), pair("1", "a"));
    assert_eq!(both("not json"), None);
    assert_eq!(both(""), None);
    assert_eq!(both(r#"{"id":1,"updated_at":"#), None);
}

/// A JSON value's text: scalars of every kind, strings with escapes, nested containers that
/// carry look-alike fields.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (-1e6f64..1e6).prop_map(|f| format!("{f:?}")),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        "[a-z0-9:/ -]{0,12}".prop_map(|s| format!("\"{s}\"")),
        "[a-z/]{0,6}".prop_map(|s| format!("\"{}\"", s.replace('/', "\\/"))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((field_name(), inner), 0..4).prop_map(|v| {
                let fields: Vec<_> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_owned()),
        Just("token".to_owned()),
        Just("updated_at".to_owned()),
        Just("created_at".to_owned()),
        "[a-z_]{1,8}",
    ]
}

/// A timestamp as Shopify sends it (or `null`).
fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        "[0-9T:+-]{0,25}".prop_map(|s| format!("\"{s}\"")),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t")]
}

proptest! {
    #[test]
    fn the_word_scan_finds_the_first_quote_or_backslash(
        bytes in prop::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), Just(0x22 ^ 0x80), Just(0x5c - 1), any::<u8>()],
            0..40,
        ),
        from in 0usize..44,
    ) {
        let naive = bytes
            .get(from..)
            .and_then(|t| t.iter().position(|c| *c == b'"' || *c == b'\\'))
            .map(|p| from + p);
        prop_assert_eq!(quote_or_backslash(&bytes, from), naive);
    }

    #[test]
    fn walk_agrees_with_the_full_parse(
        fields in prop::collection::btree_map(field_name(), (value(), timestamp()), 0..8),
        order in any::<u64>(),
        pad in ws(),
    ) {
        let mut fields: Vec<_> = fields.into_iter().collect();
        let n = fields.len().max(1);
        fields.rotate_left(usize::try_from(order).unwrap_or(0) % n);
        let text: Vec<_> = fields
            .iter()
            .map(|(k, (v, ts))| {
                let v = if k.ends_with("_at") { ts } else { v };
                format!("{pad}\"{k}\"{pad}:{pad}{v}{pad}")
            })
            .collect();
        let body = format!("{pad}{{{}}}{pad}", text.join(","));
        prop_assert_eq!(
            content_fields(body.as_bytes()),
            parsed_content_fields(body.as_bytes()),
            "body: {}", body
        );
    }
}
