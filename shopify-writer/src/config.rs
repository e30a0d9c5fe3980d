//! The Shopify writer's configuration: embedded defaults, a TOML file and `TILLSTREAM__*` overrides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use publisher::config::RetryConfig;
use runtime::{ConfigError, KafkaConfig, Secret, TopicsConfig};
use serde::Deserialize;

/// The defaults compiled into the binary.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Everything the writer needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Consumer group; offsets are committed only after a command succeeded or was dead-lettered.
    pub group_id: String,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Topic catalogue: reads `topics.shopify_commands`, dead-letters to `topics.shopify_writer_dlq`.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The operations server (`/healthz`, `/readyz`, `/metrics`).
    pub http: HttpConfig,
    /// The Admin API and the shops' tokens.
    pub shopify: ShopifyConfig,
    /// Backoff for transient failures (the publisher's policy: full jitter, unbounded attempts).
    pub retry: RetryConfig,
    /// librdkafka statistics interval, the source of the consumer-lag gauge. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

/// The operations server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: SocketAddr,
}

/// The Admin GraphQL API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyConfig {
    /// URL template with `{shop}` and `{version}` (tests and simulators point it elsewhere).
    pub endpoint: String,
    /// Admin API version.
    pub api_version: String,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Access tokens by shop domain (`name.myshopify.com`).
    pub shops: BTreeMap<String, ShopAuth>,
}

/// One shop's Admin API access token (scope `write_customers`), inline or from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopAuth {
    /// The token (printed as `**REDACTED**`).
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// A file holding it (Docker/Kubernetes secrets).
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
}

impl WriterConfig {
    /// Loads defaults, then `file`, then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let c: Self = runtime::load_config(DEFAULTS_TOML, file)?;
        c.validate()?;
        Ok(c)
    }

    /// The embedded defaults alone (tests).
    pub fn defaults() -> Result<Self, ConfigError> {
        runtime::load_defaults(DEFAULTS_TOML)
    }

    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let reject = |m: String| Err(ConfigError::Rejected(m));
        if !self.shopify.endpoint.contains("{version}")
            && !self.shopify.endpoint.contains("graphql")
        {
            return reject("shopify.endpoint must be a GraphQL URL template".into());
        }
        if self.stats_interval.is_zero() {
            return reject("stats_interval must be positive".into());
        }
        if self.shopify.request_timeout.is_zero() {
            return reject("shopify.request_timeout must be positive".into());
        }
        for (shop, auth) in &self.shopify.shops {
            if schemas::ShopDomain::parse(shop).is_err() {
                return reject(format!("shopify.shops: {shop:?} is not a shop domain"));
            }
            if auth.access_token.is_none() == auth.access_token_file.is_none() {
                return reject(format!(
                    "shopify.shops.{shop:?}: set exactly one of access_token, access_token_file"
                ));
            }
        }
        Ok(())
    }

    /// The tokens by shop, files read.
    pub fn tokens(&self) -> Result<BTreeMap<String, Secret>, ConfigError> {
        let mut out = BTreeMap::new();
        for (shop, auth) in &self.shopify.shops {
            let token = match (&auth.access_token, &auth.access_token_file) {
                (Some(t), _) => t.clone(),
                (None, Some(path)) => Secret::from_file(path)?,
                (None, None) => continue,
            };
            out.insert(shop.to_ascii_lowercase(), token);
        }
        Ok(out)
    }

    /// The GraphQL URL of `shop`.
    pub fn url(&self, shop: &str) -> String {
        self.shopify
            .endpoint
            .replace("{shop}", shop)
            .replace("{version}", &self.shopify.api_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours.
    fn tokens_from_env_and_files_are_redacted() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("b.token", "from-file\n")?;
            jail.set_env(
                "TILLSTREAM__SHOPIFY__SHOPS",
                r#"{"a.myshopify.com"={access_token="shpat_secret"},"b.myshopify.com"={access_token_file="b.token"}}"#,
            );
            let c = WriterConfig::load(None).map_err(|e| e.to_string())?;
            let t = c.tokens().map_err(|e| e.to_string())?;
            assert_eq!(t["a.myshopify.com"].expose(), "shpat_secret");
            assert_eq!(t["b.myshopify.com"].expose(), "from-file");
            assert!(!format!("{c:?}").contains("shpat_secret"));
            assert_eq!(
                c.url("a.myshopify.com"),
                "https://a.myshopify.com/admin/api/2025-07/graphql.json"
            );
            Ok(())
        });
    }
}
