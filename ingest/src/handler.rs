//! `POST /webhooks/shopify`: read, verify, route, publish, and answer 200 only once durable.
//!
//! Order of checks (each refusal has its own status and `tillstream_ingest_rejected_total` reason):
//! in-flight limit → signature header shape → declared length → body (size, read timeout) →
//! HMAC over the exact bytes → required headers → shop allow-list → empty body → publish with
//! the ack timeout. Nothing looks at the body's content before the HMAC matched.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus::Registry;
use runtime::Health;
use runtime::shred::{Sealer, ShredError};
use schemas::{CustomerKey, EventSource, KeyKind, ShopDomain, ShopifyEnvelope};
use serde::de::IgnoredAny;
use tokio::sync::Semaphore;

use crate::Error;
use crate::config::IngestConfig;
use crate::headers::{self, HeaderError};
use crate::metrics::{self, Metrics};
use crate::sink::{EventSink, Record, SinkError};
use crate::verify::{Signature, SignatureError, Verifier};

/// Everything the handler shares across requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) sink: Arc<dyn EventSink>,
    verifier: Verifier,
    pub(crate) allowed_shops: Option<HashSet<ShopDomain>>,
    pub(crate) body_limit: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) permits: Semaphore,
    metrics: Metrics,
    registry: Registry,
    health: Arc<Health>,
    /// The Iterable system-webhook endpoint (`None`: no secret configured, answers 404).
    pub(crate) iterable: Option<crate::iterable_endpoint::IterableEndpoint>,
    /// Crypto-shredding (`None`: no `erasure.master_key`, bodies are stored in clear).
    pub(crate) sealer: Option<Sealer>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("verifier", &self.inner.verifier)
            .field("allowed_shops", &self.inner.allowed_shops)
            .field("body_limit", &self.inner.body_limit)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state from a validated config and a sink, with a fresh metrics registry and
    /// a not-yet-ready health flag.
    pub fn new(config: &IngestConfig, sink: Arc<dyn EventSink>) -> Result<Self, Error> {
        Self::with_sealer(config, sink, None)
    }

    /// [`AppState::new`] with crypto-shredding: bodies about a person are sealed by `sealer`
    /// (whose key writes count in this state's metrics).
    pub fn with_sealer(
        config: &IngestConfig,
        sink: Arc<dyn EventSink>,
        sealer: Option<Sealer>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let secrets = config.secrets()?;
        let allowed_shops = config.allowed_shops()?.map(|v| v.into_iter().collect());
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).map_err(|e| Error::Metrics(e.to_string()))?;
        let iterable =
            crate::iterable_endpoint::IterableEndpoint::new(&config.iterable, &registry)?;
        if let Some(sealer) = &sealer {
            registry
                .register(Box::new(sealer.keys_created()))
                .map_err(|e| Error::Metrics(e.to_string()))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                sink,
                verifier: Verifier::new(&secrets),
                allowed_shops,
                body_limit: config.http.body_limit,
                read_timeout: config.http.read_timeout,
                ack_timeout: config.http.ack_timeout,
                permits: Semaphore::new(config.http.max_in_flight),
                metrics,
                registry,
                health: Health::new(),
                iterable,
                sealer,
            }),
        })
    }

    /// The registry `/metrics` serves.
    pub fn registry(&self) -> Registry {
        self.inner.registry.clone()
    }

    /// The readiness flag `/readyz` reports.
    pub fn health(&self) -> Arc<Health> {
        self.inner.health.clone()
    }

    /// The endpoint's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// Why a webhook request was not answered 200. Each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// More than `max_in_flight` requests are being handled.
    #[error("too many requests in flight; retry later")]
    Overloaded,
    /// The body is larger than `body_limit`.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The client did not send the body within `read_timeout`.
    #[error("body not received within {0:?}")]
    ReadTimeout(Duration),
    /// The body stream broke (client went away, bad chunked encoding).
    #[error("cannot read body")]
    BodyRead,
    /// Signature missing, malformed or not matching.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// A required header is missing, repeated or invalid.
    #[error("{0}")]
    Header(#[from] HeaderError),
    /// The shop is not on the allow-list.
    #[error("shop {0} is not allowed")]
    ShopNotAllowed(String),
    /// A verified but empty body: Shopify never sends one.
    #[error("empty body")]
    EmptyBody,
    /// The envelope could not be encoded (a bug, not the sender's fault).
    #[error("cannot encode envelope: {0}")]
    Encode(String),
    /// The broker did not acknowledge within `ack_timeout`.
    #[error("kafka did not acknowledge within {0:?}; retry later")]
    AckTimeout(Duration),
    /// The broker refused the record or could not be reached.
    #[error("cannot publish: {0}")]
    Publish(SinkError),
    /// The subject's new data key could not be written to the keys topic (crypto-shredding).
    #[error("cannot store the data key: {0}")]
    Seal(String),
}

impl RequestError {
    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Overloaded | Self::AckTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Publish(SinkError::TooLarge(_)) | Self::TooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Publish(_) | Self::Seal(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::BodyRead | Self::Header(_) | Self::EmptyBody => StatusCode::BAD_REQUEST,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::ShopNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `tillstream_ingest_rejected_total` reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::TooLarge(_) => "too_large",
            Self::ReadTimeout(_) => "read_timeout",
            Self::BodyRead => "body_read_error",
            Self::Signature(_) => "hmac",
            Self::Header(HeaderError::Missing(_)) => "missing_header",
            Self::Header(HeaderError::Repeated(_)) => "repeated_header",
            Self::Header(HeaderError::Invalid { .. }) => "invalid_header",
            Self::ShopNotAllowed(_) => "shop_not_allowed",
            Self::EmptyBody => "empty_body",
            Self::Encode(_) => "encode_error",
            Self::AckTimeout(_) => "ack_timeout",
            Self::Publish(SinkError::TooLarge(_)) => "record_too_large",
            Self::Publish(SinkError::QueueFull) => "producer_queue_full",
            Self::Publish(SinkError::Failed(_)) => "publish_failed",
            Self::Seal(_) => "key_write_failed",
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Shopify ignores it and uses its own backoff; other senders may honour it.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a successful request published (for logs and tests).
#[derive(Debug)]
struct Accepted {
    topic_label: &'static str,
}

/// Decrements `tillstream_ingest_in_flight` however the request ends (including a dropped future).
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `POST /webhooks/shopify` handler.
pub async fn webhook(State(state): State<AppState>, request: Request) -> Response {
    let metrics = &state.inner.metrics;
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let mut topic_label = "unverified";
    let outcome = handle(&state, request, &mut topic_label).await;
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    metrics
        .requests
        .with_label_values(&[topic_label, status.as_str()])
        .inc();
    match outcome {
        Ok(accepted) => {
            tracing::trace!(topic = accepted.topic_label, "published");
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(error) => {
            metrics.rejected.with_label_values(&[error.reason()]).inc();
            match &error {
                RequestError::Encode(_)
                | RequestError::Publish(_)
                | RequestError::AckTimeout(_) => {
                    tracing::warn!(%error, topic = topic_label, "webhook not published");
                }
                _ => tracing::debug!(%error, topic = topic_label, "webhook refused"),
            }
            error.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    request: Request,
    topic_label: &mut &'static str,
) -> Result<Accepted, RequestError> {
    let s = &*state.inner;
    let received_at_ms = runtime::now_ms();
    // Shed load before reading anything: a stalled broker must not pile up bodies in memory.
    let _permit = s
        .permits
        .try_acquire()
        .map_err(|_| RequestError::Overloaded)?;
    let (parts, body) = request.into_parts();

    // A missing or malformed signature needs no body to refuse.
    let signature = signature(&parts.headers).inspect_err(|e| {
        s.metrics
            .hmac_failures
            .with_label_values(&[e.label()])
            .inc();
    })?;
    if declared_length(&parts.headers).is_some_and(|n| n > s.body_limit) {
        return Err(RequestError::TooLarge(s.body_limit));
    }
    let body = match tokio::time::timeout(s.read_timeout, read_body(body, s.body_limit)).await {
        Ok(body) => body?,
        Err(_) => return Err(RequestError::ReadTimeout(s.read_timeout)),
    };
    s.metrics.body_bytes.observe(body.len() as f64);

    let secret = s.verifier.verify(&signature, &body).inspect_err(|e| {
        s.metrics
            .hmac_failures
            .with_label_values(&[e.label()])
            .inc();
    })?;
    s.metrics
        .hmac_verified
        .with_label_values(&[secret_label(secret)])
        .inc();

    // Verified: from here on the headers and body are Shopify's.
    let h = headers::extract(&parts.headers).inspect_err(|_| *topic_label = "invalid")?;
    *topic_label = metrics::topic_label(&h.topic);
    if let Some(allowed) = &s.allowed_shops
        && !allowed.contains(&h.shop_domain)
    {
        return Err(RequestError::ShopNotAllowed(h.shop_domain.to_string()));
    }
    if body.is_empty() {
        return Err(RequestError::EmptyBody);
    }
    let key = schemas::routing_key(&h.shop_domain, &h.topic, &body);
    // Published verbatim either way (the raw topic is the record of what Shopify sent); the
    // processor dead-letters what it cannot parse. Counted so a misbehaving sender shows. A
    // key other than the shop key means routing already parsed the whole body as JSON, so the
    // second parse is only needed for the (rare) shop-keyed events.
    if std::str::from_utf8(&body).is_err() {
        s.metrics
            .suspect_bodies
            .with_label_values(&["invalid_utf8"])
            .inc();
    } else if key.kind() == KeyKind::Shop && serde_json::from_slice::<IgnoredAny>(&body).is_err() {
        s.metrics
            .suspect_bodies
            .with_label_values(&["not_json"])
            .inc();
    }
    let envelope = ShopifyEnvelope {
        delivery_id: h.webhook_id,
        event_id: h.event_id,
        topic: h.topic,
        shop_domain: h.shop_domain.to_string(),
        api_version: h.api_version,
        triggered_at_ms: h.triggered_at_ms,
        received_at_ms,
        routing_key: key.as_str().to_owned(),
        source: EventSource::Webhook,
        webhook_name: h.name,
        body: Vec::new(),
    };
    let deadline = tokio::time::Instant::now() + s.ack_timeout;
    let envelope = ShopifyEnvelope {
        body: tokio::time::timeout_at(deadline, stored_body(s, &key, &body))
            .await
            .map_err(|_| RequestError::AckTimeout(s.ack_timeout))?
            .map_err(|e| RequestError::Seal(e.to_string()))?,
        ..envelope
    };
    let value = envelope
        .encode()
        .map_err(|e| RequestError::Encode(e.to_string()))?;
    let record = Record {
        key: key.as_str().to_owned(),
        value,
    };

    let started = Instant::now();
    // On timeout the publish future is dropped but the record stays in the producer's queue
    // and may still land after we answered 503. That is safe: Shopify retries with the same
    // X-Shopify-Webhook-Id and the processor deduplicates on (shop, webhook id). What must
    // never happen is the reverse — a 200 for a record the broker has not acknowledged — and
    // this is the only place that answers 200.
    match tokio::time::timeout_at(deadline, s.sink.publish(record)).await {
        Ok(Ok(())) => s.metrics.observe_publish("ok", started.elapsed()),
        Ok(Err(error)) => {
            s.metrics.observe_publish("error", started.elapsed());
            return Err(RequestError::Publish(error));
        }
        Err(_) => {
            s.metrics.observe_publish("timeout", started.elapsed());
            return Err(RequestError::AckTimeout(s.ack_timeout));
        }
    }
    if envelope.topic == "customers/redact" {
        forget_keys(s, &key, &body);
    }
    if !metrics::is_used(&envelope.topic) {
        s.metrics
            .unused_topics
            .with_label_values(&[*topic_label])
            .inc();
    }
    Ok(Accepted { topic_label })
}

/// The body as the raw topic stores it: sealed under its subject's data key when
/// crypto-shredding is on and the key names a person (runtime::shred), else as received.
pub(crate) async fn stored_body(
    s: &Inner,
    key: &CustomerKey,
    body: &[u8],
) -> Result<Vec<u8>, ShredError> {
    match &s.sealer {
        Some(sealer) if key.kind().names_person() => sealer.seal(key.as_str(), body).await,
        _ => Ok(body.to_vec()),
    }
}

/// After a redact was stored: later records of the person (a new registration, a guest order
/// with the same address) get new data keys, which the erasure does not delete.
fn forget_keys(s: &Inner, key: &CustomerKey, body: &[u8]) {
    let Some(sealer) = &s.sealer else {
        return;
    };
    sealer.forget(key.as_str());
    let email = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|b| b["customer"]["email"].as_str().map(str::to_owned));
    if let (Some(email), Ok(shop)) = (email, ShopDomain::parse(key.shop())) {
        sealer.forget(CustomerKey::new(&shop, KeyKind::Email, &email).as_str());
    }
}

fn secret_label(index: usize) -> &'static str {
    match index {
        0 => "0",
        1 => "1",
        2 => "2",
        _ => "3+",
    }
}

fn signature(headers: &HeaderMap) -> Result<Signature, SignatureError> {
    match headers::single(headers, headers::HMAC) {
        Ok(Some(value)) => Signature::parse(value),
        Ok(None) => Err(SignatureError::Missing),
        // Two signatures: refuse rather than pick one.
        Err(_) => Err(SignatureError::Malformed),
    }
}

pub(crate) fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Collects the body, refusing it as soon as it exceeds `limit`.
pub(crate) async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, RequestError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| RequestError::BodyRead)?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(RequestError::TooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
