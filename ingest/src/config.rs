//! Ingest's configuration: embedded defaults, a TOML file and `TILLSTREAM__*` overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::{KafkaConfig, Secret, TopicsConfig};
use schemas::ShopDomain;
use serde::Deserialize;

use crate::Error;

/// The defaults compiled into the binary; every key is documented on the structs below.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Shopify gives up on a delivery after 5 s; the ack bound must leave room for the network.
const SHOPIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything ingest needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Kafka connection; the producer is idempotent with `acks=all` whatever is set here.
    pub kafka: KafkaConfig,
    /// Topic catalogue; ingest writes only to `topics.raw`.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The HTTP server and its limits.
    pub http: HttpConfig,
    /// Shopify app settings: signing secrets and the shops allowed to deliver.
    pub shopify: ShopifyConfig,
    /// Heartbeats to every raw partition, which the processor's timers wait on.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// Iterable system webhooks (`POST /webhooks/iterable/{shop}`, two-way consent).
    #[serde(default)]
    pub iterable: IterableWebhookConfig,
    /// GDPR: with `master_key` set, bodies about a person are sealed under that person's data
    /// key (crypto-shredding, runtime::shred); `hash_key` must equal the processors'.
    #[serde(default)]
    pub erasure: runtime::shred::ErasureConfig,
}

/// Iterable system webhooks: a shared secret in a header (Iterable signs nothing, see
/// ingest/README.md). No secret configured = the endpoint answers 404.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IterableWebhookConfig {
    /// The header Iterable is configured to send (custom header of the system webhook).
    pub header: String,
    /// Accepted secrets, current first; keep the previous one while Iterable's webhook
    /// settings are switched over (rotation, like `shopify.secrets`).
    pub secrets: Vec<Secret>,
    /// Files holding one secret each, tried after `secrets`.
    pub secret_files: Vec<PathBuf>,
}

impl Default for IterableWebhookConfig {
    fn default() -> Self {
        Self {
            header: "X-Tillstream-Webhook-Secret".into(),
            secrets: Vec::new(),
            secret_files: Vec::new(),
        }
    }
}

impl IterableWebhookConfig {
    /// The configured secrets followed by those read from `secret_files` (may be empty).
    pub fn resolve(&self) -> Result<Vec<Secret>, Error> {
        let mut out: Vec<Secret> = self
            .secrets
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        for path in &self.secret_files {
            let secret = Secret::from_file(path).map_err(|e| Error::Config(e.to_string()))?;
            if !secret.is_empty() {
                out.push(secret);
            }
        }
        Ok(out)
    }
}

/// Heartbeats (ingest/src/heartbeat.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Write them (default true). Without heartbeats the processor's timers (abandoned
    /// checkouts, win-back) never fire unless it runs with `engine.timers.clock = "stream_time"`.
    pub enabled: bool,
    /// How often (default 5 s). The processor treats heartbeats further apart than its
    /// `engine.timers.heartbeat_gap` (30 s) as an outage.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Names this instance in heartbeat delivery ids; empty = the host name.
    pub instance_id: String,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(5),
            instance_id: String::new(),
        }
    }
}

/// The HTTP server and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the webhook endpoint and `/healthz` `/readyz` `/metrics` listen on.
    pub listen: SocketAddr,
    /// Largest accepted body in bytes (default 5 MiB); larger → 413. The raw topic's
    /// `max.message.bytes` must admit a compressed record of this size plus the envelope.
    pub body_limit: usize,
    /// How long a client may take to send its headers, and then its body (each); slower → 408
    /// (body) or a closed connection (headers). Shopify's own total timeout is 5 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How long to wait for the broker's acknowledgement before answering 503 so Shopify
    /// retries (default 3 s; must stay under Shopify's 5 s).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Most webhook requests handled at once; more → 503 at once (Shopify retries), so a
    /// stalled broker cannot pile up unbounded bodies in memory.
    pub max_in_flight: usize,
    /// On shutdown, how long in-flight requests may take to finish before they are dropped.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often `/readyz` refreshes the raw topic's metadata from the broker; ready means
    /// the last refresh succeeded.
    #[serde(with = "humantime_serde")]
    pub ready_check_interval: Duration,
}

/// Shopify app settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyConfig {
    /// App client secrets used to verify `X-Shopify-Hmac-Sha256`, current first. Keep the
    /// previous one for an hour after rotating: Shopify may sign with it that long.
    pub secrets: Vec<Secret>,
    /// Files holding one secret each (Docker/Kubernetes secrets), tried after `secrets`.
    pub secret_files: Vec<PathBuf>,
    /// Shop domains (`name.myshopify.com`) allowed to deliver; empty = every shop.
    pub allowed_shops: Vec<String>,
}

impl IngestConfig {
    /// Loads defaults, then `file`, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let config: Self =
            runtime::load_config(DEFAULTS_TOML, file).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults alone: no file, no environment (tests and tools).
    pub fn defaults() -> Result<Self, Error> {
        // Defaults only: no file, no environment (so tests that set variables cannot leak in).
        runtime::load_defaults(DEFAULTS_TOML).map_err(|e| Error::Config(e.to_string()))
    }

    /// Rejects values that would make ingest unsafe rather than merely slow.
    pub fn validate(&self) -> Result<(), Error> {
        let http = &self.http;
        let reject = |msg: String| Err(Error::Config(msg));
        if http.body_limit == 0 {
            return reject("http.body_limit must be positive".into());
        }
        if http.ack_timeout.is_zero() || http.ack_timeout >= SHOPIFY_TIMEOUT {
            return reject(format!(
                "http.ack_timeout must be between 0 and Shopify's 5s, got {:?}",
                http.ack_timeout
            ));
        }
        if http.read_timeout.is_zero() {
            return reject("http.read_timeout must be positive".into());
        }
        if http.max_in_flight == 0 {
            return reject("http.max_in_flight must be positive".into());
        }
        if http.ready_check_interval.is_zero() {
            return reject("http.ready_check_interval must be positive".into());
        }
        self.allowed_shops()?;
        if axum::http::HeaderName::from_bytes(self.iterable.header.as_bytes()).is_err() {
            return reject(format!(
                "iterable.header {:?} is not a valid header name",
                self.iterable.header
            ));
        }
        Ok(())
    }

    /// The configured secrets followed by those read from `secret_files`; at least one.
    pub fn secrets(&self) -> Result<Vec<Secret>, Error> {
        let mut secrets: Vec<Secret> = self
            .shopify
            .secrets
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        for path in &self.shopify.secret_files {
            let secret = Secret::from_file(path).map_err(|e| Error::Config(e.to_string()))?;
            if !secret.is_empty() {
                secrets.push(secret);
            }
        }
        if secrets.is_empty() {
            // Without a secret every delivery would be refused: fail at start, not per request.
            return Err(Error::Config(
                "no Shopify secret configured: set shopify.secrets (TILLSTREAM__SHOPIFY__SECRETS) or shopify.secret_files"
                    .into(),
            ));
        }
        Ok(secrets)
    }

    /// The allow-list as validated domains; `None` when every shop is allowed.
    pub fn allowed_shops(&self) -> Result<Option<Vec<ShopDomain>>, Error> {
        if self.shopify.allowed_shops.is_empty() {
            return Ok(None);
        }
        self.shopify
            .allowed_shops
            .iter()
            .map(|s| {
                ShopDomain::parse(s)
                    .map_err(|e| Error::Config(format!("shopify.allowed_shops: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_match_the_issue() {
        let c = IngestConfig::defaults().unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.http.body_limit, 5 * 1024 * 1024);
        assert_eq!(c.http.ack_timeout, Duration::from_secs(3));
        assert!(c.shopify.allowed_shops.is_empty());
        c.validate().unwrap();
        // No secret: refused at start with a message naming the setting.
        assert!(
            c.secrets()
                .unwrap_err()
                .to_string()
                .contains("shopify.secrets")
        );
    }

    #[test]
    fn unsafe_values_are_rejected() {
        let mut c = IngestConfig::defaults().unwrap();
        c.http.ack_timeout = Duration::from_secs(5);
        assert!(c.validate().is_err());
        let mut c = IngestConfig::defaults().unwrap();
        c.shopify.allowed_shops = vec!["not a domain".into()];
        assert!(c.validate().is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours.
    fn file_then_environment_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ingest.toml",
                "[http]\nack_timeout = \"2s\"\nbody_limit = 1024\n[shopify]\nallowed_shops = [\"a.myshopify.com\"]\n",
            )?;
            jail.create_file("previous.secret", "from-file\n")?;
            jail.set_env("TILLSTREAM__SHOPIFY__SECRETS", r#"["current","previous"]"#);
            jail.set_env(
                "TILLSTREAM__SHOPIFY__SECRET_FILES",
                r#"["previous.secret"]"#,
            );
            jail.set_env("TILLSTREAM__HTTP__BODY_LIMIT", "2048");
            let c =
                IngestConfig::load(Some(Path::new("ingest.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.http.ack_timeout, Duration::from_secs(2));
            assert_eq!(c.http.body_limit, 2048);
            let secrets: Vec<String> = c
                .secrets()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|s| s.expose().to_owned())
                .collect();
            assert_eq!(secrets, ["current", "previous", "from-file"]);
            assert_eq!(
                c.allowed_shops()
                    .map_err(|e| e.to_string())?
                    .map(|v| v.len()),
                Some(1)
            );
            jail.set_env("TILLSTREAM__HTTP__BODY_LIMT", "1");
            let err = IngestConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("body_limt"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_never_printed() {
        let mut c = IngestConfig::defaults().unwrap();
        c.shopify.secrets = vec![Secret::new("hush-hush")];
        assert!(!format!("{c:?}").contains("hush-hush"));
        assert_eq!(c.secrets().unwrap()[0].expose(), "hush-hush");
    }
}
