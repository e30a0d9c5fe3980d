//! A GraphQL Admin API client that paces itself from Shopify's cost and `throttleStatus`.
//!
//! Shopify's limits depend on the plan (100 to 2000 points/s, legacy buckets of 1000), so none
//! is hard-coded: every answer's `extensions.cost.throttleStatus` says how full the bucket is
//! and how fast it refills, a `THROTTLED` answer is retried after the time the missing points
//! take to restore, and a call is delayed up front when the last known bucket cannot pay for it.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use runtime::Secret;
use serde_json::Value;

/// The last bucket state Shopify reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Throttle {
    pub(crate) maximum_available: f64,
    pub(crate) currently_available: f64,
    pub(crate) restore_rate: f64,
    pub(crate) seen: std::time::Instant,
}

impl Throttle {
    fn from_extensions(v: &Value) -> Option<Self> {
        let t = v.pointer("/extensions/cost/throttleStatus")?;
        Some(Self {
            maximum_available: t.get("maximumAvailable")?.as_f64()?,
            currently_available: t.get("currentlyAvailable")?.as_f64()?,
            restore_rate: t.get("restoreRate")?.as_f64()?,
            seen: std::time::Instant::now(),
        })
    }

    /// How long until `cost` points are available, assuming nobody else spends any.
    pub(crate) fn wait_for(&self, cost: f64) -> Duration {
        let now = self.currently_available + self.seen.elapsed().as_secs_f64() * self.restore_rate;
        let missing = cost.min(self.maximum_available) - now;
        if missing <= 0.0 || self.restore_rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((missing / self.restore_rate).min(60.0))
    }
}

/// One shop's Admin API at a pinned version.
pub(crate) struct AdminClient {
    http: reqwest::Client,
    endpoint: String,
    token: Secret,
    throttle: Mutex<Option<Throttle>>,
    /// Times Shopify answered `THROTTLED` (reported at the end).
    pub(crate) throttled: std::sync::atomic::AtomicU64,
}

const MAX_ATTEMPTS: u32 = 8;
const MAX_THROTTLED: u32 = 600;

impl AdminClient {
    /// `base_url` is `https://{shop}` (or a fake's URL); the API version is part of the path.
    pub(crate) fn new(base_url: &str, api_version: &str, token: Secret) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            endpoint: format!(
                "{}/admin/api/{api_version}/graphql.json",
                base_url.trim_end_matches('/')
            ),
            token,
            throttle: Mutex::new(None),
            throttled: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The HTTP client (bulk result URLs are signed and need no token).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn last_throttle(&self) -> Option<Throttle> {
        *self
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, t: Option<Throttle>) {
        if let Some(t) = t {
            *self
                .throttle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(t);
        }
    }

    /// Runs a query and returns its `data`; `expected_cost` is used to wait for the bucket.
    pub(crate) async fn query(
        &self,
        query: &str,
        variables: Value,
        expected_cost: f64,
    ) -> anyhow::Result<Value> {
        let body = serde_json::json!({ "query": query, "variables": variables });
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 0;
        let mut throttled_in_a_row = 0u32;
        while attempt < MAX_ATTEMPTS {
            attempt += 1;
            if let Some(t) = self.last_throttle() {
                let wait = t.wait_for(expected_cost);
                if !wait.is_zero() {
                    tracing::debug!(?wait, "waiting for the Admin API bucket to refill");
                    tokio::time::sleep(wait).await;
                }
            }
            let sent = self
                .http
                .post(&self.endpoint)
                .header("X-Shopify-Access-Token", self.token.expose())
                .json(&body)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "Admin API unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("POST {}", self.endpoint)),
            };
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                bail!(
                    "the Admin API refused the access token ({status}); check TILLSTREAM_SHOPIFY__ACCESS_TOKEN and the app's scopes (read_customers, read_orders, read_all_orders)"
                );
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
                tracing::warn!(%status, attempt, "Admin API busy; retrying");
                tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                bail!(
                    "Admin API answered {status}: {}",
                    text.chars().take(500).collect::<String>()
                );
            }
            let v: Value = resp.json().await.context("Admin API answer is not JSON")?;
            let throttle = Throttle::from_extensions(&v);
            self.remember(throttle);
            if let Some(errors) = v.get("errors").filter(|e| !e.is_null()) {
                let throttled = errors.as_array().is_some_and(|a| {
                    a.iter().any(|e| {
                        e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED")
                    })
                });
                // Throttling is Shopify saying "later", not a failure: it does not use up an
                // attempt (bounded anyway, in case the bucket never refills).
                if throttled && throttled_in_a_row < MAX_THROTTLED {
                    throttled_in_a_row += 1;
                    attempt -= 1;
                    self.throttled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let requested = v
                        .pointer("/extensions/cost/requestedQueryCost")
                        .and_then(Value::as_f64)
                        .unwrap_or(expected_cost);
                    // Wait for what this query asked for, not a fixed plan figure.
                    let wait = throttle.map_or(backoff, |t| {
                        t.wait_for(requested).max(Duration::from_millis(50))
                    });
                    tracing::info!(
                        ?wait,
                        requested,
                        "throttled by Shopify; waiting for the bucket"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                bail!(
                    "Admin API GraphQL errors: {}",
                    errors.to_string().chars().take(500).collect::<String>()
                );
            }
            return v
                .get("data")
                .cloned()
                .context("Admin API answer has no `data`");
        }
        bail!("Admin API still busy after {MAX_ATTEMPTS} attempts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_missing_points_at_the_reported_rate() {
        let t = Throttle {
            maximum_available: 1000.0,
            currently_available: 10.0,
            restore_rate: 50.0,
            seen: std::time::Instant::now(),
        };
        let w = t.wait_for(110.0).as_secs_f64();
        assert!((1.9..=2.0).contains(&w), "{w}");
        assert!(t.wait_for(5.0).is_zero());
        // A query dearer than the bucket waits only for a full bucket.
        assert!(t.wait_for(5000.0).as_secs_f64() <= 20.0);
    }
}
