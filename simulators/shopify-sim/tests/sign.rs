//! Signature tests: `sign` matches an independent RFC 2104 HMAC-SHA256 and `verify` rejects other keys.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use shopify_sim::{ScenarioConfig, generate, sign, verify};

/// HMAC-SHA256 built from the RFC 2104 definition with plain SHA-256 (no `hmac` crate),
/// so a bug in how the library drives `hmac` can't hide behind the same code.
fn rfc2104(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn sign_matches_independent_hmac_and_rejects_other_keys() {
    let long_key = [7u8; 100];
    let cases: [(&[u8], &[u8]); 4] = [
        (
            b"hush",
            br#"{"id":820982911946154508,"url":"https:\/\/x\/a?b=1\u0026c=2"}"#,
        ),
        (b"", b""),
        (&long_key, b"body"),
        (b"secret", "Crème Brûlée \u{2014} Salt & Pepper".as_bytes()),
    ];
    for (key, body) in cases {
        let got = sign(body, key);
        assert_eq!(got, STANDARD.encode(rfc2104(key, body)));
        assert_eq!(got.len(), 44);
        assert!(got.ends_with('='));
        assert!(verify(body, key, &got));
        assert!(!verify(body, b"store-notification-key", &got));
        assert!(!verify(b"tampered", key, &got));
    }
    assert!(!verify(b"x", b"k", "not base64!"));
    assert!(!verify(b"x", b"k", &STANDARD.encode([0u8; 16])));
}

#[test]
fn delivery_headers_are_shopify_shaped_and_verify() {
    let cfg = ScenarioConfig {
        customers: 15,
        ..ScenarioConfig::default()
    };
    let run = generate(&cfg).unwrap();
    assert!(!run.deliveries.is_empty());
    for d in run.deliveries.iter().take(300) {
        let h = d.headers("app-secret");
        let get = |name: &str| {
            h.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("missing {name}"))
        };
        assert_eq!(get("X-Shopify-Topic"), d.topic);
        assert_eq!(
            get("X-Shopify-Shop-Domain"),
            "tillstream-demo.myshopify.com"
        );
        assert_eq!(get("X-Shopify-API-Version"), d.api_version);
        assert_eq!(get("X-Shopify-Webhook-Id"), d.webhook_id);
        assert_eq!(get("X-Shopify-Event-Id"), d.event_id);
        assert_eq!(get("Content-Type"), "application/json");
        let trig = get("X-Shopify-Triggered-At");
        // 2026-01-05T14:00:00.123456Z
        assert_eq!(trig.len(), 27, "{trig}");
        assert!(trig.ends_with('Z') && trig.as_bytes()[19] == b'.');
        assert!(verify(
            &d.body,
            b"app-secret",
            &get("X-Shopify-Hmac-Sha256")
        ));
        assert!(!verify(&d.body, b"other", &get("X-Shopify-Hmac-Sha256")));
        for id in [&d.webhook_id, &d.event_id] {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
        }
    }
}
