//! Library error type: everything that can go wrong loading a scenario, generating or sending.

use thiserror::Error;

/// Errors returned by the shopify-sim library. None of the library's code paths panic on
/// bad input; they end up here instead.
#[derive(Debug, Error)]
pub enum SimError {
    /// The scenario configuration is invalid (out-of-range fraction, bad version string, …).
    #[error("invalid scenario config: {0}")]
    Config(String),
    /// A timestamp or UTC offset in the configuration could not be parsed.
    #[error("invalid {field} {value:?}: {reason}")]
    Time {
        /// Which configuration field was being parsed.
        field: &'static str,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The scenario start is `now`/`now-<N>d` and was not resolved against a clock before
    /// calling [`crate::generate`]; generation itself never reads the wall clock.
    #[error(
        "scenario start {0:?} is relative to the current time; call ScenarioConfig::resolve_start first"
    )]
    UnresolvedStart(String),
    /// TOML scenario file could not be parsed.
    #[error("cannot parse scenario TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// Serialising a scenario back to TOML failed.
    #[error("cannot serialise scenario TOML: {0}")]
    TomlSer(#[from] toml::ser::Error),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Filesystem error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// File or directory being accessed.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// A required fixture topic was not produced by the fixture scenario.
    #[error("fixture scenario produced no delivery for topic {0}")]
    MissingFixture(String),
}

impl SimError {
    pub(crate) fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        SimError::Io {
            path: path.into(),
            source,
        }
    }
}
