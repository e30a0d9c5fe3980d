//! Configuration loading: embedded defaults, then a TOML file, then environment overrides.
//!
//! Precedence, lowest first:
//! 1. the service's embedded defaults (a TOML string compiled into the binary);
//! 2. the file given with `--config` (or `TILLSTREAM_CONFIG`);
//! 3. environment variables `TILLSTREAM__<SECTION>__<KEY>`, e.g.
//!    `TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS=kafka:9092`, `TILLSTREAM__APPLICATION_ID=x`.
//!
//! Two namespaces that cannot collide: configuration keys start with `TILLSTREAM__` (two
//! underscores; double underscore = nesting), while the variables of flags, tools and scripts
//! (`TILLSTREAM_CONFIG`, `TILLSTREAM_LOG_JSON`, `TILLSTREAM_TEST_KAFKA`, ...) start with
//! `TILLSTREAM_` and a letter. So no list of variables to ignore is needed, and unknown keys
//! can still be rejected by the services' `deny_unknown_fields` structs: a typo fails at start
//! with the offending key named instead of being silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or the defaults do not form a valid configuration.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// A value is well-formed but not acceptable (checked after loading).
    #[error("invalid configuration: {0}")]
    Rejected(String),
    /// A secret file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The arguments of every service binary (and, with `config` global, of the CLI): one
/// definition, so the names, help and variables are the same everywhere.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file; `TILLSTREAM__<SECTION>__<KEY>` environment variables override it.
    #[arg(long, env = "TILLSTREAM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Logging.
    #[command(flatten)]
    pub log: crate::telemetry::LogArgs,
}

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "TILLSTREAM__";

/// Loads a service configuration from defaults, an optional file and the `TILLSTREAM__*`
/// environment; warns about variables in the retired `TILLSTREAM_<SECTION>__<KEY>` form.
pub fn load_config<T: DeserializeOwned>(
    defaults_toml: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    warn_about_old_names(std::env::vars().map(|(k, _)| k));
    load_tool_config(defaults_toml, file)
}

/// [`load_config`] without the warning, for the CLI: its own flags' variables may have any
/// single-underscore name.
pub fn load_tool_config<T: DeserializeOwned>(
    defaults_toml: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut figment = Figment::new().merge(Toml::string(defaults_toml));
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    figment
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// Names in the form configuration variables had before the `TILLSTREAM__` prefix
/// (`TILLSTREAM_KAFKA__BOOTSTRAP_SERVERS`): no longer read, which would otherwise go unnoticed.
/// A warning, not an error: a tool may legitimately use such a name for its own flag.
fn old_style_names(names: impl Iterator<Item = String>) -> Vec<String> {
    names
        .filter(|k| {
            k.strip_prefix("TILLSTREAM_")
                .is_some_and(|rest| !rest.starts_with('_') && rest.contains("__"))
        })
        .collect()
}

fn warn_about_old_names(names: impl Iterator<Item = String>) {
    for name in old_style_names(names) {
        let new = name.replacen("TILLSTREAM_", ENV_PREFIX, 1);
        tracing::warn!(
            variable = %name,
            "{name} is not read as configuration: configuration variables start with {ENV_PREFIX} (did you mean {new}?)."
        );
    }
}

/// Parses only the embedded defaults, ignoring files and the environment (for tests and
/// for printing the defaults).
pub fn load_defaults<T: DeserializeOwned>(defaults_toml: &str) -> Result<T, ConfigError> {
    Figment::new()
        .merge(Toml::string(defaults_toml))
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// A secret string (API key, HMAC secret): printed as `**REDACTED**` in logs and debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used (signing, headers).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from a file (Docker/Kubernetes secrets), trimming the trailing newline.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        std::fs::read_to_string(path)
            .map(|s| Self(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|source| ConfigError::SecretFile {
                path: path.display().to_string(),
                source,
            })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "**REDACTED**"
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Environment values are parsed by type, so a key made of digits arrives as a number:
        // accept any scalar and keep its text.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("**REDACTED**")
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error.
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        kafka: DemoKafka,
        key: Secret,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DemoKafka {
        bootstrap_servers: String,
    }

    #[test]
    fn env_overrides_file_overrides_defaults_and_secrets_are_redacted() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "key = \"from-file\"\n")?;
            jail.set_env("TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS", "kafka:9092");
            let defaults = "key = \"d\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n";
            let c: Demo =
                load_config(defaults, Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.bootstrap_servers, "kafka:9092");
            assert_eq!(c.key.expose(), "from-file");
            assert!(!format!("{c:?}").contains("from-file"));
            Ok(())
        });
    }

    #[test]
    fn tool_variables_are_not_config() {
        Jail::expect_with(|jail| {
            // Any single-underscore name, known to us or not, belongs to tools and flags.
            jail.set_env("TILLSTREAM_TEST_KAFKA", "127.0.0.1:9092");
            jail.set_env("TILLSTREAM_SOAK_ROUNDS", "20");
            jail.set_env("TILLSTREAM_LOG_JSON", "true");
            jail.set_env("TILLSTREAM_SOMETHING_NEW", "x");
            let defaults = "key = \"d\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n";
            load_config::<Demo>(defaults, None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        Jail::expect_with(|jail| {
            jail.set_env("TILLSTREAM__KAFKA__BOOTSTRAP_SERVRS", "x");
            let defaults = "key = \"d\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n";
            let err = load_config::<Demo>(defaults, None).unwrap_err().to_string();
            assert!(err.contains("bootstrap_servrs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn old_style_names_are_recognised() {
        let names = [
            "TILLSTREAM_KAFKA__BOOTSTRAP_SERVERS",
            "TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS",
            "TILLSTREAM_TEST_KAFKA",
            "OTHER_A__B",
        ]
        .map(String::from);
        assert_eq!(
            old_style_names(names.into_iter()),
            ["TILLSTREAM_KAFKA__BOOTSTRAP_SERVERS"]
        );
    }
}
