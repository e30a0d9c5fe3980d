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

/// Maps every configured key to the index of its project.
pub(crate) struct KeyTable {
    keys: HashMap<String, usize>,
}

impl KeyTable {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let mut keys = HashMap::new();
        for (i, p) in config.projects.iter().enumerate() {
            for k in &p.api_keys {
                keys.insert(k.clone(), i);
            }
        }
        KeyTable { keys }
    }

    /// Resolves the request's key to a project index, or the 401 `BadApiKey` answer.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        endpoint: Endpoint,
        peer: Option<SocketAddr>,
    ) -> Result<usize, ApiError> {
        let key = headers
            .get("api-key")
            .or_else(|| headers.get("api_key"))
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match key.and_then(|k| self.keys.get(k)) {
            Some(&project) => Ok(project),
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
