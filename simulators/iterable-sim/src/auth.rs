//! API-key authentication: `Api-Key` or `Api_Key` header (any case) → project.
//!
//! HTTP header names are case-insensitive and the `http` crate stores them lower-cased, so
//! looking up `api-key` and `api_key` covers `Api-Key`, `API-KEY`, `Api_Key`, `api_key`, ...

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::config::SimConfig;
use crate::endpoint::Endpoint;
use crate::error::ApiError;

/// Who is calling: the project and the API key (catalog limits count per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Index of the project in the configuration.
    pub(crate) project: usize,
    /// Index of the key among all configured keys (see [`key_count`]).
    pub(crate) key: usize,
}

/// Number of API keys over all projects, in configuration order (the key index space).
pub(crate) fn key_count(config: &SimConfig) -> usize {
    config.projects.iter().map(|p| p.api_keys.len()).sum()
}

/// Maps every configured key to its caller.
pub(crate) struct KeyTable {
    keys: HashMap<String, Caller>,
}

impl KeyTable {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let mut keys = HashMap::new();
        let mut key = 0;
        for (project, p) in config.projects.iter().enumerate() {
            for k in &p.api_keys {
                keys.insert(k.clone(), Caller { project, key });
                key += 1;
            }
        }
        KeyTable { keys }
    }

    /// Resolves the request's key to its caller, or the 401 `BadApiKey` answer.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        endpoint: Endpoint,
        peer: Option<SocketAddr>,
    ) -> Result<Caller, ApiError> {
        let key = headers
            .get("api-key")
            .or_else(|| headers.get("api_key"))
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match key.and_then(|k| self.keys.get(k)) {
            Some(&caller) => Ok(caller),
            None => Err(
                ApiError::new(StatusCode::UNAUTHORIZED, "BadApiKey", "Invalid API key")
                    .with_params(json!({
                        "ip": peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                        "endpoint": endpoint.path(),
                    })),
            ),
        }
    }
}
