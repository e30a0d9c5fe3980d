//! `POST /webhooks/iterable/{shop}`: Iterable system webhooks (two-way consent), shared-secret auth.
//!
//! Iterable signs nothing: it sends the headers configured on the webhook, so the endpoint
//! checks one configured header against the configured secrets in constant time before reading
//! the body. Order: endpoint enabled (404) → in-flight limit (503) → secret header (401) →
//! declared length (413) → body (413, 408) → shop in the path (400, 403) → JSON with an
//! `eventName` (400) → consent event? (others: 200, counted, not published) → a user to route to
//! (400) → publish to the raw topic with the ack timeout (200 only after the ack, else 503).
//!
//! The record goes to the raw topic as `iterable/{eventName}` (see ARCHITECTURE.md, "Iterable
//! system webhooks", for why not a topic of its own), with a delivery id derived from the event's
//! identity so Iterable's retries are deduplicated by the processor like Shopify's.

use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemas::{
    EventSource, ITERABLE_CONSENT_EVENTS, ITERABLE_TOPIC_PREFIX, KeyKind, ShopDomain,
    ShopifyEnvelope,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::handler::{AppState, declared_length, read_body};
use crate::sink::{Record, SinkError};

/// The route (axum path syntax); the shop is the `*.myshopify.com` domain the Iterable project
/// belongs to, set in the webhook's URL.
pub const ITERABLE_PATH: &str = "/webhooks/iterable/{shop}";

use crate::iterable_endpoint::IterableEndpoint;
pub use crate::iterable_endpoint::IterableError;

/// The fields of a system webhook ingest reads (reference §10b); the body is published verbatim.
#[derive(Deserialize)]
struct SystemWebhook {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(default)]
    email: Option<Value>,
    #[serde(default, rename = "userId")]
    user_id: Option<Value>,
    #[serde(default, rename = "dataFields")]
    data_fields: Option<Map<String, Value>>,
}

/// The `POST /webhooks/iterable/{shop}` handler.
pub async fn webhook(
    State(state): State<AppState>,
    Path(shop): Path<String>,
    request: Request,
) -> Response {
    let Some(endpoint) = state.inner.iterable.as_ref() else {
        return IterableError::Disabled.into_response();
    };
    let outcome = handle(&state, endpoint, &shop, request).await;
    let status = match &outcome {
        Ok(()) => StatusCode::OK,
        Err(e) => e.status(),
    };
    endpoint
        .metrics
        .requests
        .with_label_values(&[status.as_str()])
        .inc();
    match outcome {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(error) => {
            match &error {
                IterableError::Publish(_) | IterableError::Encode(_) => {
                    tracing::warn!(%error, "iterable webhook not published")
                }
                _ => tracing::debug!(%error, "iterable webhook refused"),
            }
            error.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    endpoint: &IterableEndpoint,
    shop: &str,
    request: Request,
) -> Result<(), IterableError> {
    let s = &*state.inner;
    let received_at_ms = runtime::now_ms();
    let _permit = s
        .permits
        .try_acquire()
        .map_err(|_| IterableError::Overloaded)?;
    let (parts, body) = request.into_parts();
    let secret = endpoint.authenticate(&parts.headers).inspect_err(|e| {
        if let IterableError::Unauthenticated(reason) = e {
            endpoint
                .metrics
                .auth_failures
                .with_label_values(&[reason])
                .inc();
        }
    })?;
    endpoint
        .metrics
        .auth_verified
        .with_label_values(&[match secret {
            0 => "0",
            1 => "1",
            _ => "2+",
        }])
        .inc();
    if declared_length(&parts.headers).is_some_and(|n| n > s.body_limit) {
        return Err(IterableError::TooLarge(s.body_limit));
    }
    let body = match tokio::time::timeout(s.read_timeout, read_body(body, s.body_limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(crate::RequestError::TooLarge(n))) => return Err(IterableError::TooLarge(n)),
        Ok(Err(_)) => return Err(IterableError::BadRequest("cannot read body".into())),
        Err(_) => return Err(IterableError::ReadTimeout),
    };
    let shop = ShopDomain::parse(shop)
        .map_err(|e| IterableError::BadRequest(format!("shop in the path: {e}")))?;
    if let Some(allowed) = &s.allowed_shops
        && !allowed.contains(&shop)
    {
        return Err(IterableError::ShopNotAllowed(shop.to_string()));
    }
    let event: SystemWebhook = serde_json::from_slice(&body)
        .map_err(|e| IterableError::BadRequest(format!("not an Iterable system webhook: {e}")))?;
    let known = ITERABLE_CONSENT_EVENTS.contains(&event.event_name.as_str());
    if !known {
        // Opens, clicks, sends...: not consent, and far more numerous; acknowledged so Iterable
        // does not retry them, counted so an operator sees what the webhook is configured with.
        endpoint
            .metrics
            .events
            .with_label_values(&["other", "ignored"])
            .inc();
        return Ok(());
    }
    let topic = format!("{ITERABLE_TOPIC_PREFIX}{}", event.event_name);
    let key = schemas::routing_key(&shop, &topic, &body);
    if key.kind() == KeyKind::Shop {
        return Err(IterableError::BadRequest(
            "the event names no user (email or userId)".into(),
        ));
    }
    let event_time_ms = event
        .data_fields
        .as_ref()
        .and_then(|d| d.get("createdAt"))
        .and_then(parse_created_at);
    let envelope = ShopifyEnvelope {
        delivery_id: delivery_id(&event, &body),
        event_id: None,
        topic,
        shop_domain: shop.to_string(),
        api_version: None,
        triggered_at_ms: event_time_ms,
        received_at_ms,
        routing_key: key.as_str().to_owned(),
        source: EventSource::Webhook,
        webhook_name: None,
        body: Vec::new(),
    };
    let deadline = tokio::time::Instant::now() + s.ack_timeout;
    let stored = tokio::time::timeout_at(deadline, crate::handler::stored_body(s, &key, &body))
        .await
        .map_err(|_| IterableError::Publish(format!("no ack within {:?}", s.ack_timeout)))?
        .map_err(|e| IterableError::Publish(format!("cannot store the data key: {e}")))?;
    let envelope = ShopifyEnvelope {
        body: stored,
        ..envelope
    };
    let value = envelope
        .encode()
        .map_err(|e| IterableError::Encode(e.to_string()))?;
    let record = Record {
        key: key.as_str().to_owned(),
        value,
    };
    let started = Instant::now();
    // As for Shopify: the only 200 is after the broker's ack; a timed-out record may still
    // land, and Iterable's retry carries the same derived delivery id.
    match tokio::time::timeout_at(deadline, s.sink.publish(record)).await {
        Ok(Ok(())) => {}
        Ok(Err(SinkError::TooLarge(_))) => return Err(IterableError::TooLarge(s.body_limit)),
        Ok(Err(e)) => return Err(IterableError::Publish(e.to_string())),
        Err(_) => {
            return Err(IterableError::Publish(format!(
                "no ack within {:?}",
                s.ack_timeout
            )));
        }
    }
    tracing::trace!(elapsed = ?started.elapsed(), "iterable event published");
    endpoint
        .metrics
        .events
        .with_label_values(&[event_label(&event.event_name), "published"])
        .inc();
    Ok(())
}

/// The event name as a bounded metric label.
fn event_label(name: &str) -> &'static str {
    ITERABLE_CONSENT_EVENTS
        .iter()
        .find(|e| **e == name)
        .copied()
        .unwrap_or("other")
}

/// Iterable sends no delivery id: one is derived from what identifies the occurrence (reference
/// §10b: event, user, time, campaign, message), so a retry gets the same id and the processor
/// drops it. Without a `createdAt` the whole body identifies it.
fn delivery_id(event: &SystemWebhook, body: &[u8]) -> String {
    let mut h = Sha256::new();
    let fields = event.data_fields.as_ref();
    match fields.and_then(|d| d.get("createdAt")) {
        Some(created) => {
            let text = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_default();
            for part in [
                Value::String(event.event_name.clone()).to_string(),
                text(event.email.as_ref()),
                text(event.user_id.as_ref()),
                created.to_string(),
                text(fields.and_then(|d| d.get("campaignId"))),
                text(fields.and_then(|d| d.get("messageId"))),
                text(fields.and_then(|d| d.get("emailId"))),
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
        }
        None => h.update(body),
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("iterable-{hex}")
}

/// `createdAt` as Unix ms: Iterable's `yyyy-MM-dd HH:mm:ss +00:00`, RFC 3339, or epoch ms.
fn parse_created_at(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S %:z")
            .or_else(|_| chrono::DateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S %z"))
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(s.trim()))
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_formats() {
        let t = parse_created_at(&Value::String("2025-06-01 10:00:00 +00:00".into()));
        assert_eq!(t, Some(1_748_772_000_000));
        let r = parse_created_at(&Value::String("2025-06-01T10:00:00Z".into()));
        assert_eq!(r, t);
        assert_eq!(parse_created_at(&Value::String("yesterday".into())), None);
    }

    #[test]
    fn delivery_ids_identify_the_occurrence() {
        let parse = |s: &str| serde_json::from_str::<SystemWebhook>(s).unwrap();
        let a = r#"{"eventName":"emailUnSubscribe","email":"a@b.c","dataFields":{"createdAt":"2025-06-01 10:00:00 +00:00","campaignId":1}}"#;
        // Same occurrence, fields in another order (a retry re-serialised): same id.
        let a2 = r#"{"dataFields":{"campaignId":1,"createdAt":"2025-06-01 10:00:00 +00:00"},"email":"a@b.c","eventName":"emailUnSubscribe"}"#;
        let b = r#"{"eventName":"emailUnSubscribe","email":"a@b.c","dataFields":{"createdAt":"2025-06-01 10:00:01 +00:00","campaignId":1}}"#;
        let id = |s| delivery_id(&parse(s), s.as_bytes());
        assert_eq!(id(a), id(a2));
        assert_ne!(id(a), id(b));
    }
}
