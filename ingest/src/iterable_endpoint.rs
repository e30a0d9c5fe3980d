//! The Iterable system-webhook endpoint's secrets and metrics, how a request authenticates, and its refusals.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::config::IterableWebhookConfig;

/// The endpoint's settings and metrics.
pub(crate) struct IterableEndpoint {
    header: HeaderName,
    /// SHA-256 of each accepted secret, current first: comparing digests keeps the check's time
    /// independent of the secrets' lengths and contents.
    digests: Vec<[u8; 32]>,
    pub(crate) metrics: IterableMetrics,
}

pub(crate) struct IterableMetrics {
    pub(crate) requests: IntCounterVec,
    pub(crate) auth_failures: IntCounterVec,
    pub(crate) auth_verified: IntCounterVec,
    pub(crate) events: IntCounterVec,
}

impl IterableEndpoint {
    /// `None` when no secret is configured (the endpoint is then disabled).
    pub(crate) fn new(
        config: &IterableWebhookConfig,
        registry: &Registry,
    ) -> Result<Option<Self>, Error> {
        let secrets = config.resolve()?;
        if secrets.is_empty() {
            return Ok(None);
        }
        let header = HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|e| Error::Config(format!("iterable.header: {e}")))?;
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .map_err(|e| Error::Metrics(e.to_string()))?;
            registry
                .register(Box::new(c.clone()))
                .map_err(|e| Error::Metrics(e.to_string()))?;
            Ok(c)
        };
        let metrics = IterableMetrics {
            requests: counter(
                "tillstream_ingest_iterable_requests_total",
                "Iterable system webhook requests by answered status.",
                &["status"],
            )?,
            auth_failures: counter(
                "tillstream_ingest_iterable_auth_failures_total",
                "Iterable webhook requests refused by the shared-secret check, by reason.",
                &["reason"],
            )?,
            auth_verified: counter(
                "tillstream_ingest_iterable_auth_verified_total",
                "Iterable webhook requests accepted, by the index of the matching secret (0 = current).",
                &["secret"],
            )?,
            events: counter(
                "tillstream_ingest_iterable_events_total",
                "Authenticated Iterable events by name and outcome (published, ignored).",
                &["event", "outcome"],
            )?,
        };
        Ok(Some(Self {
            header,
            digests: secrets
                .iter()
                .map(|s| Sha256::digest(s.expose().as_bytes()).into())
                .collect(),
            metrics,
        }))
    }

    /// The index of the secret the request carries.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<usize, IterableError> {
        let mut values = headers.get_all(&self.header).iter();
        let value = values
            .next()
            .ok_or(IterableError::Unauthenticated("missing"))?;
        if values.next().is_some() {
            return Err(IterableError::Unauthenticated("repeated"));
        }
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        // Every secret is compared, and each comparison folds all 32 bytes: no early exit
        // tells an attacker how close a guess was or which secret it nearly matched.
        let mut found = None;
        for (i, d) in self.digests.iter().enumerate() {
            let diff = d
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(i);
            }
        }
        found.ok_or(IterableError::Unauthenticated("mismatch"))
    }
}

/// Why an Iterable webhook was not answered 200.
#[derive(Debug, thiserror::Error)]
pub enum IterableError {
    /// No secret configured.
    #[error("not found")]
    Disabled,
    /// Too many requests in flight.
    #[error("too many requests in flight; retry later")]
    Overloaded,
    /// Missing, repeated or wrong secret header (the label says which).
    #[error("unauthenticated")]
    Unauthenticated(&'static str),
    /// The body is larger than the limit.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time.
    #[error("body not received in time")]
    ReadTimeout,
    /// The body stream broke, the shop is not a shop domain, or the body is not a system webhook.
    #[error("{0}")]
    BadRequest(String),
    /// The shop is not on the allow-list.
    #[error("shop {0} is not allowed")]
    ShopNotAllowed(String),
    /// The envelope could not be encoded.
    #[error("cannot encode envelope: {0}")]
    Encode(String),
    /// No ack within the timeout, or the broker refused the record.
    #[error("cannot publish: {0}")]
    Publish(String),
}

impl IterableError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Disabled => StatusCode::NOT_FOUND,
            Self::Overloaded | Self::Publish(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ReadTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ShopNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for IterableError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
