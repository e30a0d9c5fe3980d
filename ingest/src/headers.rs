//! Typed extraction of the `X-Shopify-*` headers a delivery carries (required and optional).
//!
//! `http::HeaderMap` stores names lower-cased, so lookups are case-insensitive as Shopify's
//! docs require (HTTP/2 deliveries arrive lower-cased). A header sent twice is refused rather
//! than guessed at: two topics or two delivery ids on one request cannot both be right.

use axum::http::{HeaderMap, HeaderName};
use chrono::DateTime;
use schemas::ShopDomain;

/// `X-Shopify-Hmac-Sha256`.
pub const HMAC: &str = "x-shopify-hmac-sha256";
/// `X-Shopify-Topic`.
pub const TOPIC: &str = "x-shopify-topic";
/// `X-Shopify-Shop-Domain`.
pub const SHOP_DOMAIN: &str = "x-shopify-shop-domain";
/// `X-Shopify-Webhook-Id`.
pub const WEBHOOK_ID: &str = "x-shopify-webhook-id";
/// `X-Shopify-Event-Id`.
pub const EVENT_ID: &str = "x-shopify-event-id";
/// `X-Shopify-Triggered-At`.
pub const TRIGGERED_AT: &str = "x-shopify-triggered-at";
/// `X-Shopify-API-Version`.
pub const API_VERSION: &str = "x-shopify-api-version";
/// `X-Shopify-Name`.
pub const NAME: &str = "x-shopify-name";

/// Longest value accepted for any of these headers; real ones are under 100 characters.
pub const MAX_VALUE_LEN: usize = 256;

/// Why the headers are unusable; each is a 400 naming the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required header is absent or empty.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header that must appear once appears more than once.
    #[error("header {0} is repeated")]
    Repeated(&'static str),
    /// A header's value is not usable.
    #[error("header {header} is invalid: {reason}")]
    Invalid {
        /// The header's canonical name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The delivery metadata from the headers, validated (the body is verified separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// `X-Shopify-Topic`, e.g. `orders/paid`.
    pub topic: String,
    /// `X-Shopify-Shop-Domain`, lower-cased.
    pub shop_domain: ShopDomain,
    /// `X-Shopify-Webhook-Id`: one per delivery, reused by Shopify's retries.
    pub webhook_id: String,
    /// `X-Shopify-Event-Id`, shared by all deliveries of one merchant action.
    pub event_id: Option<String>,
    /// `X-Shopify-Triggered-At` in Unix milliseconds, when present and parseable.
    pub triggered_at_ms: Option<i64>,
    /// `X-Shopify-API-Version`.
    pub api_version: Option<String>,
    /// `X-Shopify-Name` (the subscription's name).
    pub name: Option<String>,
}

/// The canonical spelling of a header, for messages.
fn display_name(name: &'static str) -> &'static str {
    match name {
        HMAC => "X-Shopify-Hmac-Sha256",
        TOPIC => "X-Shopify-Topic",
        SHOP_DOMAIN => "X-Shopify-Shop-Domain",
        WEBHOOK_ID => "X-Shopify-Webhook-Id",
        EVENT_ID => "X-Shopify-Event-Id",
        TRIGGERED_AT => "X-Shopify-Triggered-At",
        API_VERSION => "X-Shopify-API-Version",
        NAME => "X-Shopify-Name",
        other => other,
    }
}

/// The single value of `name` as bytes: `Ok(None)` when absent, an error when repeated.
pub fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a [u8]>, HeaderError> {
    let key = HeaderName::from_static(name);
    let mut values = headers.get_all(&key).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(HeaderError::Repeated(display_name(name)));
    }
    Ok(first.map(|v| v.as_bytes()))
}

/// The value as a trimmed, printable-ASCII string of bounded length; `None` when absent or
/// empty.
fn text(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, HeaderError> {
    let Some(raw) = single(headers, name)? else {
        return Ok(None);
    };
    let invalid = |reason| HeaderError::Invalid {
        header: display_name(name),
        reason,
    };
    let value = std::str::from_utf8(raw)
        .map_err(|_| invalid("not ASCII"))?
        .trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid("longer than 256 characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid("not printable ASCII"));
    }
    Ok(Some(value.to_owned()))
}

fn required(headers: &HeaderMap, name: &'static str) -> Result<String, HeaderError> {
    text(headers, name)?.ok_or(HeaderError::Missing(display_name(name)))
}

/// Topics are short slash/dot names (`orders/paid`, `customer.tags_added`); anything else is
/// refused so the raw log and the metric labels never carry arbitrary text.
fn valid_topic(topic: &str) -> bool {
    topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-' | b':'))
}

/// Parses `2025-07-10T16:15:47.000000Z` (any RFC 3339 form) to Unix milliseconds.
pub fn parse_triggered_at(value: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Extracts and validates the delivery headers. Call only after the body is verified.
pub fn extract(headers: &HeaderMap) -> Result<WebhookHeaders, HeaderError> {
    let topic = required(headers, TOPIC)?;
    if !valid_topic(&topic) {
        return Err(HeaderError::Invalid {
            header: display_name(TOPIC),
            reason: "not a topic name",
        });
    }
    let shop = required(headers, SHOP_DOMAIN)?;
    let shop_domain = ShopDomain::parse(&shop).map_err(|_| HeaderError::Invalid {
        header: display_name(SHOP_DOMAIN),
        reason: "not a domain name",
    })?;
    let webhook_id = required(headers, WEBHOOK_ID)?;
    let event_id = text(headers, EVENT_ID)?;
    // Optional and informational: a malformed timestamp is dropped, not a reason to refuse
    // (and so lose) the delivery.
    let triggered_at_ms = text(headers, TRIGGERED_AT)?.and_then(|t| parse_triggered_at(&t));
    let api_version = text(headers, API_VERSION)?;
    let name = text(headers, NAME)?;
    Ok(WebhookHeaders {
        topic,
        shop_domain,
        webhook_id,
        event_id,
        triggered_at_ms,
        api_version,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    const BASE: [(&str, &[u8]); 3] = [
        ("X-Shopify-Topic", b"orders/paid"),
        ("X-Shopify-Shop-Domain", b"Demo.myshopify.com"),
        (
            "X-Shopify-Webhook-Id",
            b"b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ];

    #[test]
    fn required_only_and_names_are_case_insensitive() {
        let lower: Vec<(String, &[u8])> =
            BASE.iter().map(|(k, v)| (k.to_lowercase(), *v)).collect();
        let lower: Vec<(&str, &[u8])> = lower.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        for h in [map(&BASE), map(&lower)] {
            let w = extract(&h).unwrap();
            assert_eq!(w.topic, "orders/paid");
            assert_eq!(w.shop_domain.as_str(), "demo.myshopify.com");
            assert_eq!(w.event_id, None);
            assert_eq!(w.triggered_at_ms, None);
        }
    }

    #[test]
    fn optional_headers_are_parsed() {
        let mut pairs = BASE.to_vec();
        pairs.push((
            "x-shopify-event-id",
            b"98880550-7158-44d4-b7cd-2c97c8a091b5",
        ));
        pairs.push(("X-SHOPIFY-TRIGGERED-AT", b"2025-07-10T16:15:47.000000Z"));
        pairs.push(("X-Shopify-API-Version", b"2026-07"));
        pairs.push(("X-Shopify-Name", b"product-sync"));
        let w = extract(&map(&pairs)).unwrap();
        assert_eq!(
            w.event_id.as_deref(),
            Some("98880550-7158-44d4-b7cd-2c97c8a091b5")
        );
        assert_eq!(w.triggered_at_ms, Some(1_752_164_147_000));
        assert_eq!(w.api_version.as_deref(), Some("2026-07"));
        assert_eq!(w.name.as_deref(), Some("product-sync"));
        // A garbled timestamp is dropped, not fatal.
        let mut pairs = BASE.to_vec();
        pairs.push(("X-Shopify-Triggered-At", b"yesterday"));
        assert_eq!(extract(&map(&pairs)).unwrap().triggered_at_ms, None);
    }

    #[test]
    fn missing_repeated_and_invalid_headers_are_named() {
        for (i, name) in [
            "X-Shopify-Topic",
            "X-Shopify-Shop-Domain",
            "X-Shopify-Webhook-Id",
        ]
        .iter()
        .enumerate()
        {
            let mut pairs = BASE.to_vec();
            pairs.remove(i);
            assert_eq!(extract(&map(&pairs)), Err(HeaderError::Missing(name)));
            let mut pairs = BASE.to_vec();
            pairs[i].1 = b"  ";
            assert_eq!(extract(&map(&pairs)), Err(HeaderError::Missing(name)));
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("x-shopify-topic", b"orders/create"));
        assert_eq!(
            extract(&map(&pairs)),
            Err(HeaderError::Repeated("X-Shopify-Topic"))
        );
        let mut pairs = BASE.to_vec();
        pairs[1].1 = b"evil/../x";
        assert!(matches!(
            extract(&map(&pairs)),
            Err(HeaderError::Invalid {
                header: "X-Shopify-Shop-Domain",
                ..
            })
        ));
        let mut pairs = BASE.to_vec();
        pairs[0].1 = b"orders paid{}";
        assert!(matches!(
            extract(&map(&pairs)),
            Err(HeaderError::Invalid {
                header: "X-Shopify-Topic",
                ..
            })
        ));
        let long = "a".repeat(300);
        let mut pairs = BASE.to_vec();
        pairs[2].1 = long.as_bytes();
        assert!(matches!(
            extract(&map(&pairs)),
            Err(HeaderError::Invalid {
                header: "X-Shopify-Webhook-Id",
                ..
            })
        ));
        let mut pairs = BASE.to_vec();
        pairs[2].1 = b"caf\xc3\xa9";
        assert!(matches!(
            extract(&map(&pairs)),
            Err(HeaderError::Invalid {
                header: "X-Shopify-Webhook-Id",
                ..
            })
        ));
    }
}
