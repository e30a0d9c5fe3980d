//! Library errors (start-up, configuration, I/O) and the Iterable-shaped API error responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Errors of the simulator library (never produced while serving a request).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent or could not be parsed.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        /// File path as given.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// Binding or serving the listener failed.
    #[error("server i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server task ended abnormally.
    #[error("server task failed: {0}")]
    Task(String),
}

/// An Iterable error answer: HTTP status plus the `{"msg","code","params"}` envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status (authoritative, reference §4.1).
    pub status: StatusCode,
    /// Iterable `code` (may be `Success` even on errors, e.g. invalid list id).
    pub code: &'static str,
    /// Human-readable message.
    pub msg: String,
    /// `params`, `null` when absent.
    pub params: Value,
}

impl ApiError {
    /// Builds an error with `params: null`.
    pub fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            msg: msg.into(),
            params: Value::Null,
        }
    }

    /// Replaces `params`.
    pub fn with_params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// 400 `BadParams`.
    pub fn bad_params(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParams", msg)
    }

    /// 400 `BadJsonBody`.
    pub fn bad_json(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadJsonBody", msg)
    }

    /// 409 `ForgottenUserError`.
    pub fn forgotten() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "ForgottenUserError",
            "Contact is GDPR forgotten",
        )
    }

    /// 409 email/userId conflict.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ExternalKeyConflict", msg)
    }

    /// 404 `NotFound` for unknown users.
    pub fn user_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", "User not found")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({"msg": self.msg, "code": self.code, "params": self.params}),
        )
    }
}

/// Serialises `body` as an `application/json` response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    // Serialising a `Value` cannot fail (string keys only); fall back to `{}` regardless so
    // no request path can panic.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A 200 `application/json` answer from already-serialised JSON.
pub(crate) fn raw_json_ok(body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The `{"msg":"","code":"Success","params":null}` answer of single-record writes.
pub(crate) fn success(msg: impl Into<String>, params: Value) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"msg": msg.into(), "code": "Success", "params": params}),
    )
}
