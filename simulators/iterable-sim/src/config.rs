//! Simulator configuration: projects and keys, rate limits, body caps, behaviour flags, faults.
//!
//! Every struct deserialises from TOML or JSON with all fields optional (missing fields take the
//! documented default), so a config file only needs to say what differs from the defaults.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::faults::FaultSpec;

/// API key of the default project when no project is configured.
pub const DEFAULT_API_KEY: &str = "iterable-sim-key";

/// Top-level simulator configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Projects served. Default: one hybrid project, id 1, key [`DEFAULT_API_KEY`], lists 1-3.
    pub projects: Vec<ProjectConfig>,
    /// Per-project, per-endpoint rate limits (published numbers by default).
    pub rate_limits: RateLimitConfig,
    /// Request body caps.
    pub body_limits: BodyLimits,
    /// Semantics switches for behaviour the reference marks as inferred.
    pub behaviour: BehaviourConfig,
    /// Fault injection active from start-up (changeable at run time via `POST /_sim/faults`).
    pub faults: FaultSpec,
    /// System webhooks (reference §10b): where Iterable POSTs subscription events.
    pub system_webhooks: SystemWebhookConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            projects: vec![ProjectConfig::default()],
            rate_limits: RateLimitConfig::default(),
            body_limits: BodyLimits::default(),
            behaviour: BehaviourConfig::default(),
            faults: FaultSpec::default(),
            system_webhooks: SystemWebhookConfig::default(),
        }
    }
}

impl SimConfig {
    /// Parses a TOML document (all fields optional) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        let config: SimConfig =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// A configuration with rate limits switched off (benchmarks, functional tests).
    pub fn without_rate_limits() -> Self {
        let mut config = SimConfig::default();
        config.rate_limits.enabled = false;
        config
    }

    /// Checks cross-field invariants (unique ids and keys, sane numbers).
    pub fn validate(&self) -> Result<(), Error> {
        if self.projects.is_empty() {
            return Err(Error::Config("at least one project is required".into()));
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for p in &self.projects {
            if !ids.insert(p.id) {
                return Err(Error::Config(format!("duplicate project id {}", p.id)));
            }
            if let Some(bad) = p
                .catalogs
                .iter()
                .find(|c| !crate::store::catalogs::valid_name(c))
            {
                return Err(Error::Config(format!(
                    "project {}: invalid catalog name {bad:?}",
                    p.id
                )));
            }
            if p.api_keys.is_empty() {
                return Err(Error::Config(format!("project {} has no api_keys", p.id)));
            }
            for k in &p.api_keys {
                if k.is_empty() {
                    return Err(Error::Config(format!("project {} has an empty key", p.id)));
                }
                if !keys.insert(k.as_str()) {
                    return Err(Error::Config(format!("api key {k:?} used twice")));
                }
            }
        }
        let rl = &self.rate_limits;
        if !(rl.burst_seconds.is_finite() && rl.burst_seconds > 0.0) {
            return Err(Error::Config(
                "rate_limits.burst_seconds must be > 0".into(),
            ));
        }
        if rl.day_seconds == 0 {
            return Err(Error::Config("rate_limits.day_seconds must be > 0".into()));
        }
        for (name, limit) in &rl.endpoints {
            if Endpoint::from_name(name).is_none() {
                return Err(Error::Config(format!(
                    "rate_limits.endpoints: unknown endpoint {name:?}"
                )));
            }
            if let Some(r) = limit.per_second
                && !(r.is_finite() && r >= 0.0)
            {
                return Err(Error::Config(format!("{name}: per_second must be >= 0")));
            }
            if let Some(b) = limit.burst
                && !(b.is_finite() && b >= 1.0)
            {
                return Err(Error::Config(format!("{name}: burst must be >= 1")));
            }
        }
        let wh = &self.system_webhooks;
        if let Some(url) = &wh.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "system_webhooks.url must be http(s): {url:?}"
            )));
        }
        if wh.auth_header.is_empty() || wh.auth_header.contains([' ', ':', '\n']) {
            return Err(Error::Config(format!(
                "system_webhooks.auth_header is not a header name: {:?}",
                wh.auth_header
            )));
        }
        self.faults.validate()
    }

    /// The effective limit of `endpoint`: published defaults overlaid with configuration.
    pub fn effective_limit(&self, endpoint: Endpoint) -> EffectiveLimit {
        let rl = &self.rate_limits;
        let published = endpoint.published_limit();
        let over = rl.endpoints.get(endpoint.name());
        let per_second = over
            .and_then(|o| o.per_second)
            .or(published.map(|p| p.per_second))
            .or(rl.unpublished_per_second)
            .filter(|r| *r > 0.0);
        let per_day = over
            .and_then(|o| o.per_day)
            .or(published.and_then(|p| p.per_day))
            .filter(|d| *d > 0);
        let burst = per_second.map(|r| {
            over.and_then(|o| o.burst)
                .unwrap_or((r * rl.burst_seconds).max(1.0))
        });
        EffectiveLimit {
            per_second,
            burst,
            per_day,
        }
    }
}

/// The limit a bucket enforces, after defaults and overrides are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveLimit {
    /// Sustained requests per second; `None` = unlimited.
    pub per_second: Option<f64>,
    /// Bucket capacity (token bucket) — the largest instantaneous burst.
    pub burst: Option<f64>,
    /// Requests per `day_seconds` window; `None` = no daily cap.
    pub per_day: Option<u64>,
}

/// How a project identifies users (reference §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum ProjectType {
    /// `email` and `userId` both unique; either identifies a user.
    #[default]
    Hybrid,
    /// `userId` is the unique identifier; `email` is an ordinary, non-unique field.
    #[serde(alias = "userID", alias = "user_id")]
    UserId,
    /// `email` is the unique identifier; `userId` is not unique; placeholder emails exist.
    Email,
}

/// One Iterable project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectConfig {
    /// Project id, echoed in 429 messages and list errors. Default 1.
    pub id: u64,
    /// Identification model: `hybrid` (default), `userId` or `email`.
    #[serde(rename = "type")]
    pub project_type: ProjectType,
    /// Server-side API keys of this project; all share the project's rate-limit buckets.
    /// Default `["iterable-sim-key"]`.
    pub api_keys: Vec<String>,
    /// Static list ids that exist in this project. Default `[1, 2, 3]`.
    pub list_ids: Vec<u64>,
    /// Accept every list id as existing (then `list_ids` is ignored). Default false.
    pub any_list_id: bool,
    /// Catalogs that exist at start-up (others must be created with
    /// `POST /api/catalogs/{name}`). Default none.
    pub catalogs: Vec<String>,
    /// Id of the project's email message channel: what `unsubscribedChannelIds` holds after
    /// an email unsubscribe, complaint or hosted-unsubscribe click. Default 1.
    pub email_channel_id: i64,
    /// Id of the project's SMS channel: what a STOP reply unsubscribes. Default 2.
    pub sms_channel_id: i64,
    /// Project setting for unknown fields: add them (true, default) or drop them and report
    /// them in `filteredOutFields` (false). A request's `createNewFields` overrides it.
    pub create_new_fields: bool,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            id: 1,
            project_type: ProjectType::Hybrid,
            api_keys: vec![DEFAULT_API_KEY.to_string()],
            list_ids: vec![1, 2, 3],
            any_list_id: false,
            catalogs: Vec::new(),
            email_channel_id: 1,
            sms_channel_id: 2,
            create_new_fields: true,
        }
    }
}

/// Rate-limit configuration. See [`crate::ratelimit`] for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Master switch. Default true.
    pub enabled: bool,
    /// Admission model: `tokenBucket` (default; capacity = burst, continuous refill) or
    /// `slidingWindow` (at most `per_second` admissions in any rolling second).
    pub model: LimitModel,
    /// Default burst capacity in seconds of sustained rate: capacity = rate × this.
    /// Default 1.0 (one second's worth).
    pub burst_seconds: f64,
    /// Rate for endpoints without a published limit (trackPurchase, updateCart, updateEmail,
    /// updateSubscriptions, bulkUpdateSubscriptions, lists/*). Default `None` = unlimited.
    pub unpublished_per_second: Option<f64>,
    /// Length of the "day" used by daily caps (users/forget, users/unforget), in seconds.
    /// Default 86400; tests shrink it.
    pub day_seconds: u64,
    /// Per-endpoint overrides keyed by endpoint name (`"events/trackBulk"`, ...).
    pub endpoints: BTreeMap<String, EndpointLimit>,
    /// Shape of 429 answers.
    pub response: RateLimitResponse,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            model: LimitModel::TokenBucket,
            burst_seconds: 1.0,
            unpublished_per_second: None,
            day_seconds: 86_400,
            endpoints: BTreeMap::new(),
            response: RateLimitResponse::default(),
        }
    }
}

/// Admission model of the per-second limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum LimitModel {
    /// Token bucket, capacity = burst, refilled continuously at the rate.
    #[default]
    TokenBucket,
    /// Sliding log: at most `per_second` (rounded down) admissions in any rolling second.
    SlidingWindow,
}

/// Override of one endpoint's limit. Absent fields keep the published/default value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointLimit {
    /// Requests per second per project; 0 = unlimited.
    pub per_second: Option<f64>,
    /// Token-bucket capacity (≥ 1); default = per_second × burst_seconds.
    pub burst: Option<f64>,
    /// Requests per `day_seconds` per project; 0 = no daily cap.
    pub per_day: Option<u64>,
}

/// Shape of the 429 response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitResponse {
    /// Body style: `json` (default), `text` or `alternate` (json, text, json, ...).
    pub body: RateLimitBody,
    /// Fixed `Retry-After` seconds to send; default none (Iterable documents none).
    pub retry_after_secs: Option<u64>,
    /// Send `Retry-After` with the seconds until the bucket admits again (rounded up).
    /// Ignored when `retry_after_secs` is set. Default false.
    pub retry_after_computed: bool,
}

/// 429 body style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitBody {
    /// `{"msg":"Exceeded rate limit for endpoint: …","code":"RateLimitExceeded","params":{}}`
    #[default]
    Json,
    /// `text/plain`: `Rate limit exceeded. Please try again later.`
    Text,
    /// Alternates json and text per 429 served.
    Alternate,
}

/// Request body caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BodyLimits {
    /// Maximum body of bulk endpoints in bytes. Default 4,000,000 (the strict reading of
    /// "4 MB"; a client that batches up to 4 MiB is caught).
    pub bulk_max_bytes: usize,
    /// Maximum body of single-record endpoints in bytes. Default 4,000,000.
    pub single_max_bytes: usize,
    /// How an oversized body is answered: `status413` (default, `413` + code `BatchTooLarge`)
    /// or `batchTooLarge400` (`400` + code `BatchTooLarge`).
    pub too_large: TooLargeResponse,
    /// Maximum records per bulk request (users, events, subscribers, subscription requests);
    /// above it: 400 `BatchTooLarge`. Default none (Iterable documents no record cap).
    pub bulk_max_records: Option<usize>,
    /// Maximum body of `POST /api/catalogs/{name}/items` in bytes. Iterable documents no
    /// byte cap there, only 1000 items of ≤ 30 KB each, so the default (32,000,000) admits
    /// any request that respects those two.
    pub catalog_bulk_max_bytes: usize,
    /// Maximum documents per catalog bulk upsert (reference §3.11: 1000). Above it:
    /// 400 `BatchTooLarge`.
    pub catalog_max_items: usize,
    /// Maximum size of one catalog item's JSON in bytes (reference §3.11: "≤ 30 KB"; the
    /// strict reading, 30,000, like `bulk_max_bytes`). Above it: 400 `BadParams`.
    pub catalog_item_max_bytes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            bulk_max_bytes: 4_000_000,
            single_max_bytes: 4_000_000,
            too_large: TooLargeResponse::Status413,
            bulk_max_records: None,
            catalog_bulk_max_bytes: 32_000_000,
            catalog_max_items: 1000,
            catalog_item_max_bytes: 30_000,
        }
    }
}

/// Answer to an oversized body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum TooLargeResponse {
    /// HTTP 413 with code `BatchTooLarge`.
    #[default]
    Status413,
    /// HTTP 400 with code `BatchTooLarge`.
    BatchTooLarge400,
}

/// Switches for behaviour the reference marks as inferred ([I]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BehaviourConfig {
    /// events/track and trackBulk for an unknown user create the user (true) or fail as
    /// not-found (false, default; reference §3.7).
    pub track_creates_unknown_users: bool,
    /// An update by id of an event or purchase counts as another occurrence (it may re-trigger
    /// journeys, reference §6.1). Default true: `occurrences == updateCount`.
    pub count_updates_as_occurrences: bool,
    /// Event names blocked from tracking (single: 200 with "is disallowed from tracking";
    /// bulk: listed in `disallowedEventNames`). Default empty.
    pub disallowed_event_names: Vec<String>,
    /// Whether the opt-in message-types feature is enabled (`subscribedMessageTypeIds` is
    /// rejected with 400 otherwise). Default false.
    pub opt_in_message_types: bool,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            track_creates_unknown_users: false,
            count_updates_as_occurrences: true,
            disallowed_event_names: Vec::new(),
            opt_in_message_types: false,
        }
    }
}

/// A secret string: shown as `<redacted>` in `Debug` and when the config is served by
/// `GET /_sim/config`.
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// System webhooks: Iterable POSTs one JSON object per subscription event to a configured
/// URL with configured headers, retrying on non-2xx (reference §10b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemWebhookConfig {
    /// Receiver URL; `None` (default): events are recorded (`GET /_sim/webhooks`) but not sent.
    pub url: Option<String>,
    /// Name of the header carrying the shared secret. Default `Authorization`.
    pub auth_header: String,
    /// Its value (e.g. `Bearer s3cret`); `None`: the header is not sent.
    pub auth_value: Option<Secret>,
    /// Event names to send (`emailUnSubscribe`, ...); empty (default) = all.
    pub events: Vec<String>,
    /// Retries after the first attempt on a non-2xx answer, timeout or connection error.
    /// Default 8.
    pub max_retries: u32,
    /// Backoff before retry n: `backoff_base_ms × 2^(n-1)`, capped at `backoff_max_ms`.
    /// Default 100 ms.
    pub backoff_base_ms: u64,
    /// Default 5000 ms.
    pub backoff_max_ms: u64,
    /// Per-attempt timeout. Default 5000 ms.
    pub timeout_ms: u64,
}

impl Default for SystemWebhookConfig {
    fn default() -> Self {
        SystemWebhookConfig {
            url: None,
            auth_header: "Authorization".into(),
            auth_value: None,
            events: Vec::new(),
            max_retries: 8,
            backoff_base_ms: 100,
            backoff_max_ms: 5000,
            timeout_ms: 5000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_published_limits() {
        let c = SimConfig::default();
        let l = c.effective_limit(Endpoint::EventsTrackBulk);
        assert_eq!(l.per_second, Some(10.0));
        assert_eq!(l.burst, Some(10.0));
        let f = c.effective_limit(Endpoint::UsersForget);
        assert_eq!(f.per_day, Some(1000));
        assert_eq!(
            c.effective_limit(Endpoint::CommerceUpdateCart).per_second,
            None
        );
        // Catalog items: 100 req/s (bulk) and 1000 req/s (PUT) per API key; PATCH unpublished.
        let bulk = c.effective_limit(Endpoint::CatalogsBulkUpdateItems);
        assert_eq!((bulk.per_second, bulk.burst), (Some(100.0), Some(100.0)));
        assert!(Endpoint::CatalogsBulkUpdateItems.limited_per_api_key());
        assert_eq!(
            c.effective_limit(Endpoint::CatalogsReplaceItem).per_second,
            Some(1000.0)
        );
        assert_eq!(
            c.effective_limit(Endpoint::CatalogsUpdateItem).per_second,
            None
        );
    }

    #[test]
    fn toml_overrides() {
        let c = SimConfig::from_toml_str(
            r#"
            [[projects]]
            id = 7
            type = "email"
            api_keys = ["a", "b"]

            [rate_limits]
            unpublished_per_second = 100
            day_seconds = 2
            [rate_limits.endpoints."events/trackBulk"]
            per_second = 20
            burst = 5
            [rate_limits.endpoints."users/update"]
            per_second = 0
            "#,
        )
        .unwrap();
        assert_eq!(c.projects[0].project_type, ProjectType::Email);
        let l = c.effective_limit(Endpoint::EventsTrackBulk);
        assert_eq!((l.per_second, l.burst), (Some(20.0), Some(5.0)));
        assert_eq!(c.effective_limit(Endpoint::UsersUpdate).per_second, None);
        assert_eq!(
            c.effective_limit(Endpoint::ListsSubscribe).per_second,
            Some(100.0)
        );
    }

    #[test]
    fn rejects_duplicate_keys_and_unknown_endpoints() {
        let dup = r#"
            [[projects]]
            id = 1
            api_keys = ["a"]
            [[projects]]
            id = 2
            api_keys = ["a"]
        "#;
        assert!(SimConfig::from_toml_str(dup).is_err());
        let unknown = r#"
            [rate_limits.endpoints."events/nope"]
            per_second = 1
        "#;
        assert!(SimConfig::from_toml_str(unknown).is_err());
    }
}
