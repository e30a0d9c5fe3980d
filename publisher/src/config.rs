//! The publisher's configuration: embedded defaults, then a file, then `TILLSTREAM__*` variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::{ConfigError, KafkaConfig, Secret, TopicsConfig};
use serde::Deserialize;

use crate::request::Endpoint;
pub use crate::request::ProjectType;

/// The defaults compiled into the binary (`src/defaults.toml`).
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Everything the publisher needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    /// Kafka connection settings (brokers, extra librdkafka properties).
    pub kafka: KafkaConfig,
    /// Topic names: the publisher reads `commands` and writes `publisher_dlq`.
    pub topics: TopicsConfig,
    /// Consumer group of the publisher. Default `tillstream-publisher`.
    pub group_id: String,
    /// The operations HTTP server.
    pub http: HttpConfig,
    /// Where and how to reach Iterable.
    pub iterable: IterableConfig,
    /// Rate limits and in-flight bounds per endpoint.
    pub limits: LimitsConfig,
    /// When and how to use the bulk endpoints.
    pub batching: BatchingConfig,
    /// Backoff for retryable failures.
    pub retry: RetryConfig,
    /// Backpressure, commits and shutdown.
    pub pipeline: PipelineConfig,
}

/// The operations HTTP server (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `0.0.0.0:8082`; port 0 picks a free port (tests).
    pub listen: SocketAddr,
}

/// Where and how to reach Iterable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterableConfig {
    /// API base URL without `/api`: `https://api.iterable.com` (US, default),
    /// `https://api.eu.iterable.com` (EU) or the simulator's address.
    pub base_url: String,
    /// Server-side API key, usually from `TILLSTREAM__ITERABLE__API_KEY`. Redacted in logs.
    #[serde(default)]
    pub api_key: Secret,
    /// File holding the API key (Docker/Kubernetes secret), read when `api_key` is empty.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Project type: `hybrid` (default), `userId` or `email`.
    pub project_type: ProjectType,
    /// TCP/TLS connect timeout. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout of single-record endpoints. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Whole-request timeout of bulk endpoints (Iterable says 3 s is normally enough). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub bulk_request_timeout: Duration,
    /// Check the key at start-up (`GET /api/users/getByEmail`): 401/403 stop the publisher.
    /// Default true.
    pub check_key: bool,
}

impl IterableConfig {
    /// The API key: `api_key` when set, else the contents of `api_key_file`.
    pub fn resolve_key(&self) -> Result<Secret, ConfigError> {
        if !self.api_key.is_empty() {
            return Ok(self.api_key.clone());
        }
        match &self.api_key_file {
            Some(path) => {
                let key = Secret::from_file(Path::new(path))?;
                if key.is_empty() {
                    return Err(ConfigError::Rejected(format!(
                        "iterable.api_key_file {} is empty",
                        path.display()
                    )));
                }
                Ok(key)
            }
            None => Err(ConfigError::Rejected(
                "no Iterable API key: set TILLSTREAM__ITERABLE__API_KEY or iterable.api_key_file"
                    .into(),
            )),
        }
    }
}

/// One endpoint's limit, per project (all publishers of a project share it: divide it
/// between instances).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLimit {
    /// Sustained requests per second. Defaults are 90 % of Iterable's published limit, and
    /// 90 req/s for endpoints without a published limit.
    pub per_second: f64,
    /// Requests allowed at once after an idle period. Default 5 % of a second's worth, at
    /// least 1: enough to absorb timer granularity, far below Iterable's bucket.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Optional second cap per 24 hours (users/forget: 1000/day published, 900 default).
    #[serde(default)]
    pub per_day: Option<u32>,
    /// Most requests of this endpoint in flight (waiting for the limiter or the answer).
    pub concurrency: usize,
}

impl EndpointLimit {
    /// The burst actually used.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| {
            // Truncation is fine: this is a small positive count.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let b = (self.per_second * 0.05).floor() as u32;
            b.max(1)
        })
    }
}

/// Limits per endpoint. Field names are the endpoint paths in snake case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `users/update` (published 500/s).
    pub users_update: EndpointLimit,
    /// `users/bulkUpdate` (published 5/s).
    pub users_bulk_update: EndpointLimit,
    /// `users/updateEmail` (unpublished).
    pub users_update_email: EndpointLimit,
    /// `users/updateSubscriptions` (unpublished).
    pub users_update_subscriptions: EndpointLimit,
    /// `users/forget` (published 3/s and 1000/day).
    pub users_forget: EndpointLimit,
    /// `DELETE users/{email}` and `DELETE users/byUserId/{userId}` (published 100/s each;
    /// one shared limiter here, so the default is conservative).
    pub users_delete: EndpointLimit,
    /// `events/track` (published 2000/s).
    pub events_track: EndpointLimit,
    /// `events/trackBulk` (published 10/s).
    pub events_track_bulk: EndpointLimit,
    /// `commerce/trackPurchase` (unpublished).
    pub commerce_track_purchase: EndpointLimit,
    /// `commerce/updateCart` (unpublished).
    pub commerce_update_cart: EndpointLimit,
    /// `lists/subscribe` (unpublished).
    pub lists_subscribe: EndpointLimit,
    /// `lists/unsubscribe` (unpublished).
    pub lists_unsubscribe: EndpointLimit,
    /// `POST catalogs/{name}` (unpublished).
    pub catalogs_create: EndpointLimit,
    /// `PUT catalogs/{name}/items/{id}` (published 1000/s per API key).
    pub catalogs_replace_item: EndpointLimit,
    /// `DELETE catalogs/{name}/items` (unpublished; bulk item writes are 100/s per API key).
    pub catalogs_bulk_delete_items: EndpointLimit,
}

impl LimitsConfig {
    /// The limit of one endpoint (both delete endpoints share `users_delete`).
    pub fn get(&self, endpoint: Endpoint) -> &EndpointLimit {
        match endpoint {
            Endpoint::UsersUpdate => &self.users_update,
            Endpoint::UsersBulkUpdate => &self.users_bulk_update,
            Endpoint::UsersUpdateEmail => &self.users_update_email,
            Endpoint::UsersUpdateSubscriptions => &self.users_update_subscriptions,
            Endpoint::UsersForget => &self.users_forget,
            Endpoint::UsersDeleteByEmail | Endpoint::UsersDeleteByUserId => &self.users_delete,
            Endpoint::EventsTrack => &self.events_track,
            Endpoint::EventsTrackBulk => &self.events_track_bulk,
            Endpoint::CommerceTrackPurchase => &self.commerce_track_purchase,
            Endpoint::CommerceUpdateCart => &self.commerce_update_cart,
            Endpoint::ListsSubscribe => &self.lists_subscribe,
            Endpoint::ListsUnsubscribe => &self.lists_unsubscribe,
            Endpoint::CatalogsCreate => &self.catalogs_create,
            Endpoint::CatalogsReplaceItem => &self.catalogs_replace_item,
            Endpoint::CatalogsBulkDeleteItems => &self.catalogs_bulk_delete_items,
        }
    }

    /// Mutable access, for tests and the benchmark.
    pub fn get_mut(&mut self, endpoint: Endpoint) -> &mut EndpointLimit {
        match endpoint {
            Endpoint::UsersUpdate => &mut self.users_update,
            Endpoint::UsersBulkUpdate => &mut self.users_bulk_update,
            Endpoint::UsersUpdateEmail => &mut self.users_update_email,
            Endpoint::UsersUpdateSubscriptions => &mut self.users_update_subscriptions,
            Endpoint::UsersForget => &mut self.users_forget,
            Endpoint::UsersDeleteByEmail | Endpoint::UsersDeleteByUserId => &mut self.users_delete,
            Endpoint::EventsTrack => &mut self.events_track,
            Endpoint::EventsTrackBulk => &mut self.events_track_bulk,
            Endpoint::CommerceTrackPurchase => &mut self.commerce_track_purchase,
            Endpoint::CommerceUpdateCart => &mut self.commerce_update_cart,
            Endpoint::ListsSubscribe => &mut self.lists_subscribe,
            Endpoint::ListsUnsubscribe => &mut self.lists_unsubscribe,
            Endpoint::CatalogsCreate => &mut self.catalogs_create,
            Endpoint::CatalogsReplaceItem => &mut self.catalogs_replace_item,
            Endpoint::CatalogsBulkDeleteItems => &mut self.catalogs_bulk_delete_items,
        }
    }
}

/// When and how to use the bulk endpoints (`users/bulkUpdate`, `events/trackBulk`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Use bulk endpoints at all. Default true.
    pub enabled: bool,
    /// A user whose path is not pinned goes bulk when at least this many commands of the same
    /// family (profile updates or custom events) are waiting; 0 = always bulk. Default 500.
    pub backlog_threshold: usize,
    /// Most records per bulk request. Default 1000 (what peers use; Iterable publishes no cap).
    pub max_records: usize,
    /// Most bytes per bulk request body. Default 4,000,000 (the strict reading of "4 MB").
    pub max_bytes: usize,
    /// A partly filled batch is sent after this long, if no earlier batch of the endpoint is
    /// still waiting for the rate limiter. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A user stays on the path (single or bulk) last used for this long, because Iterable
    /// processes the two pipelines separately and may reorder writes across them. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub path_stickiness: Duration,
    /// Most consecutive commands of one user combined into one request item (profile updates
    /// are merged) or one batch (events). Default 100.
    pub max_coalesce: usize,
}

/// Backoff for retryable failures (429, 5xx, timeouts, connection errors).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Upper bound of the first delay (full jitter: the delay is uniform in 0..bound). Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest delay bound; the bound doubles per attempt up to this. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Largest `Retry-After` honoured; longer values are capped. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Attempts for "user not found" answers (Iterable may not have processed the profile
    /// yet) before the command is dead-lettered. Transient errors retry without limit, so an
    /// outage builds lag in Kafka instead of dead letters. Default 5.
    pub not_found_attempts: u32,
}

/// Backpressure, commits and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most commands read from Kafka and not yet delivered or dead-lettered; above it the
    /// consumer pauses its partitions, so an outage builds lag in Kafka, not memory. Default 100000.
    pub max_pending: usize,
    /// Most unfinished commands of one delivery lane (profile, events, purchases, carts,
    /// erasure); a full lane pauses the consumer like `max_pending`. Carts coalesce to one
    /// queued command per user, so this bounds the users with a cart waiting. Default 20000.
    pub max_pending_per_lane: usize,
    /// How often finished offsets are committed. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long shutdown waits for in-flight requests before committing and exiting. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// librdkafka statistics interval, the source of the consumer-lag gauge. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl PublisherConfig {
    /// Loads defaults, then `file`, then `TILLSTREAM__*` environment overrides, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = runtime::load_config(DEFAULTS_TOML, file)?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults (plus environment overrides); tests and the benchmark start here.
    pub fn defaults() -> Result<Self, ConfigError> {
        runtime::load_config(DEFAULTS_TOML, None)
    }

    /// Rejects values that deserialise but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let reject = |m: String| Err(ConfigError::Rejected(m));
        for endpoint in Endpoint::ALL {
            let l = self.limits.get(endpoint);
            if !(l.per_second.is_finite() && l.per_second > 0.0) {
                return reject(format!(
                    "limits for {}: per_second must be > 0",
                    endpoint.name()
                ));
            }
            if l.concurrency == 0 {
                return reject(format!(
                    "limits for {}: concurrency must be > 0",
                    endpoint.name()
                ));
            }
            if l.burst == Some(0) || l.per_day == Some(0) {
                return reject(format!(
                    "limits for {}: burst and per_day must be > 0",
                    endpoint.name()
                ));
            }
        }
        if self.batching.max_records == 0
            || self.batching.max_bytes < 1024
            || self.batching.max_coalesce == 0
        {
            return reject(
                "batching: max_records and max_coalesce must be > 0, max_bytes >= 1024".into(),
            );
        }
        if self.pipeline.max_pending == 0 || self.pipeline.max_pending_per_lane == 0 {
            return reject("pipeline.max_pending and max_pending_per_lane must be > 0".into());
        }
        if reqwest::Url::parse(&self.iterable.base_url).is_err() {
            return reject(format!(
                "iterable.base_url {:?} is not a URL",
                self.iterable.base_url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ninety_percent_of_published() {
        let c = PublisherConfig::defaults().unwrap();
        c.validate().unwrap();
        assert_eq!(c.group_id, "tillstream-publisher");
        assert_eq!(c.http.listen.port(), 8082);
        assert!((c.limits.events_track.per_second - 1800.0).abs() < 1e-9);
        assert!((c.limits.users_bulk_update.per_second - 4.5).abs() < 1e-9);
        assert_eq!(c.limits.users_forget.per_day, Some(900));
        assert_eq!(c.limits.events_track.effective_burst(), 90);
        assert_eq!(c.limits.users_bulk_update.effective_burst(), 1);
        assert_eq!(c.iterable.base_url, "https://api.iterable.com");
        assert!(format!("{c:?}").contains("api_key"));
    }

    #[test]
    fn key_comes_from_the_file_when_not_set() {
        let dir = std::env::temp_dir().join(runtime::testing::unique("publisher-key"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "secret-from-file\n").unwrap();
        let mut c = PublisherConfig::defaults().unwrap();
        assert!(c.iterable.resolve_key().is_err());
        c.iterable.api_key_file = Some(path);
        let key = c.iterable.resolve_key().unwrap();
        assert_eq!(key.expose(), "secret-from-file");
        assert!(!format!("{key:?}").contains("secret"));
    }
}
