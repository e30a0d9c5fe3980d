//! Round trips, golden byte vectors and backward compatibility of every schema.
//!
//! Golden vectors pin the wire format: if a change alters the bytes of an existing record the
//! test fails, because old records on the raw topic must stay readable forever. Regenerate them
//! only for a deliberate new schema version: `UPDATE_GOLDEN=1 cargo test -p schemas`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use proptest::prelude::*;
use rust_decimal::Decimal;
use schemas::{
    Action, CommerceItem, DedupRecord, DeleteMode, EventSource, IterableCommand, KeyStateRecord,
    ShopifyEnvelope, SubscriptionUpdate, TimerRecord, UserRef,
};

fn envelope() -> ShopifyEnvelope {
    ShopifyEnvelope {
        delivery_id: "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".into(),
        event_id: Some("a7ba7d0a-51c3-4b42-9b9e-3c2a5e4f1234".into()),
        topic: "orders/paid".into(),
        shop_domain: "demo.myshopify.com".into(),
        api_version: Some("2026-07".into()),
        triggered_at_ms: Some(1_767_621_600_000),
        received_at_ms: 1_767_621_600_123,
        routing_key: "demo.myshopify.com/c/820982911946154508".into(),
        source: EventSource::Webhook,
        webhook_name: None,
        body: br#"{"id":820982911946154508,"note":"a\/b \u0026 c"}"#.to_vec(),
    }
}

fn item() -> CommerceItem {
    CommerceItem {
        id: "808950810".into(),
        sku: Some("IPOD-342-N".into()),
        name: "Salt & Pepper".into(),
        price: Decimal::new(19999, 2),
        quantity: 2,
        categories: vec!["Kitchen".into()],
        url: Some("https://demo.example/products/salt".into()),
        image_url: None,
        data_fields: Some(serde_json::from_str(r#"{"variant":"Large"}"#).unwrap()),
    }
}

fn commands() -> Vec<IterableCommand> {
    let base = |id: &str, action| IterableCommand {
        command_id: id.into(),
        shop_domain: "demo.myshopify.com".into(),
        customer_key: "demo.myshopify.com/c/5".into(),
        user: UserRef {
            user_id: Some("5".into()),
            email: Some("a@example.com".into()),
        },
        event_time_ms: 1_767_621_600_000,
        source_ids: vec!["d1".into(), "d2".into()],
        action,
    };
    let fields = |t: &str| serde_json::from_str(t).unwrap();
    vec![
        base(
            "u1",
            Action::UpsertUser {
                data_fields: fields(r#"{"shopify_lifetime_value":412.5}"#),
                merge_nested_objects: true,
            },
        ),
        base(
            "e1",
            Action::TrackEvent {
                event_name: "first_purchase".into(),
                created_at_s: 1_767_621_600,
                data_fields: fields("{}"),
            },
        ),
        base(
            "p1",
            Action::TrackPurchase {
                created_at_s: 1_767_621_600,
                total: Decimal::new(41250, 2),
                items: vec![item()],
                data_fields: fields(r##"{"order_name":"#1001"}"##),
            },
        ),
        base(
            "c1",
            Action::UpdateCart {
                items: vec![item(), item()],
            },
        ),
        base(
            "s1",
            Action::UpdateSubscriptions(SubscriptionUpdate {
                unsubscribed_channel_ids: Some(vec![1, 2]),
                ..Default::default()
            }),
        ),
        base(
            "l1",
            Action::ListMembership {
                list_id: 77,
                subscribe: false,
            },
        ),
        base(
            "m1",
            Action::ChangeEmail {
                current_email: Some("a@example.com".into()),
                current_user_id: None,
                new_email: "b@example.com".into(),
            },
        ),
        base(
            "f1",
            Action::DeleteUser {
                mode: DeleteMode::Forget,
            },
        ),
        base(
            "g1",
            Action::CatalogUpsert {
                catalog: "shopify-products".into(),
                item_id: "632910392".into(),
                document: serde_json::json!({"name": "IPod Nano", "categories": ["Cult Products"]})
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
        ),
        base(
            "g2",
            Action::CatalogDelete {
                catalog: "shopify-products".into(),
                item_id: "632910392".into(),
            },
        ),
    ]
}

fn state() -> KeyStateRecord {
    KeyStateRecord {
        key: "demo.myshopify.com/c/5".into(),
        shop_domain: "demo.myshopify.com".into(),
        updated_at_ms: 1_767_621_600_000,
        aggregate_json: r#"{"orders":2}"#.into(),
        timers: vec![TimerRecord {
            kind: "lapse".into(),
            timer_id: "lapse".into(),
            due_ms: 1_775_000_000_000,
            payload_json: "{}".into(),
        }],
        dedup: vec![DedupRecord {
            fingerprint: "d1".into(),
            event_time_ms: 1_767_621_600_000,
        }],
    }
}

#[test]
fn every_record_type_round_trips() {
    let e = envelope();
    assert_eq!(ShopifyEnvelope::decode(&e.encode().unwrap()).unwrap(), e);
    for c in commands() {
        assert_eq!(
            IterableCommand::decode(&c.encode().unwrap()).unwrap(),
            c,
            "{}",
            c.action.kind()
        );
    }
    let s = state();
    assert_eq!(KeyStateRecord::decode(&s.encode().unwrap()).unwrap(), s);
}

fn golden(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let want = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1 once", path.display()));
    assert_eq!(bytes, want.as_slice(), "wire format of {name} changed");
}

#[test]
fn golden_vectors_pin_the_wire_format() {
    golden("envelope.bin", &envelope().encode().unwrap());
    for c in commands() {
        golden(
            &format!("command-{}.bin", c.action.kind()),
            &c.encode().unwrap(),
        );
    }
    golden("state.bin", &state().encode().unwrap());
    // And they decode back to the same values (reading old bytes is what replays do).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    assert_eq!(
        ShopifyEnvelope::decode(&std::fs::read(dir.join("envelope.bin")).unwrap()).unwrap(),
        envelope()
    );
    // Bytes written with the released v1 command schema (before the catalog branches) still
    // decode: the commands topic holds them across an upgrade.
    let v1 =
        IterableCommand::decode(&std::fs::read(dir.join("command-v1-track_purchase.bin")).unwrap())
            .unwrap();
    assert!(commands().contains(&v1), "{v1:?}");
}

#[test]
fn framing_is_single_object_encoding() {
    let bytes = envelope().encode().unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(
        &bytes[2..10],
        &ShopifyEnvelope::codec().fingerprint().to_le_bytes()
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"{}",
        b"\xC3\x01",
        b"\xC3\x01\0\0\0\0\0\0\0\0\x01",
        &[0xC3, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert!(ShopifyEnvelope::decode(bad).is_err());
        assert!(IterableCommand::decode(bad).is_err());
        assert!(KeyStateRecord::decode(bad).is_err());
    }
    let mut truncated = envelope().encode().unwrap();
    truncated.truncate(truncated.len() - 5);
    assert!(ShopifyEnvelope::decode(&truncated).is_err());
}

/// Every released version (schemas/avro/released/*.vN.avsc) must stay readable by the current
/// schema: records on the raw topic are kept forever and replayed with new code.
#[test]
fn current_schemas_read_every_released_version() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("avro");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("released")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let base = file.split('.').next().unwrap();
        let current =
            Schema::parse_str(&std::fs::read_to_string(dir.join(format!("{base}.avsc"))).unwrap())
                .unwrap();
        let old = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        SchemaCompatibility::can_read(&old, &current)
            .unwrap_or_else(|e| panic!("{file} is not readable by {base}.avsc: {e}"));
        checked += 1;
    }
    assert!(
        checked >= 3,
        "released versions of all three schemas are checked"
    );
}

#[test]
fn the_compatibility_check_catches_a_breaking_change() {
    // A new required field without a default breaks old data: the checker must say so, or
    // the test above proves nothing.
    let old = Schema::parse_str(include_str!("../avro/released/shopify_event.v1.avsc")).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(include_str!("../avro/shopify_event.avsc")).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "new_required", "type": "string"}));
    let broken = Schema::parse_str(&json.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&old, &broken).is_err());
}

proptest! {
    #[test]
    fn envelopes_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2048), ev in proptest::option::of("[a-z0-9-]{1,40}"), t in proptest::option::of(any::<i64>()), backfill in any::<bool>()) {
        let mut e = envelope();
        e.body = body;
        e.event_id = ev;
        e.triggered_at_ms = t;
        e.source = if backfill { EventSource::Backfill } else { EventSource::Webhook };
        prop_assert_eq!(ShopifyEnvelope::decode(&e.encode().unwrap()).unwrap(), e);
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut framed = vec![0xC3, 0x01];
        framed.extend_from_slice(&ShopifyEnvelope::codec().fingerprint().to_le_bytes());
        framed.extend_from_slice(&bytes);
        let _ = ShopifyEnvelope::decode(&framed);
        let _ = ShopifyEnvelope::decode(&bytes);
    }
}
