//! The HTTP client: base URL, `Api-Key` header, timeouts, one attempt per call.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Url};
use runtime::Secret;

use crate::config::IterableConfig;
use crate::mapping::Method;
use crate::retry::{Attempt, parse_retry_after};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL does not parse or cannot carry paths.
    #[error("invalid iterable.base_url {0:?}")]
    BaseUrl(String),
    /// The key contains characters not allowed in a header.
    #[error("the API key is not a valid header value")]
    Key,
    /// reqwest could not build its client (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// A thin Iterable client: it sends one attempt and reports what happened; retrying and
/// limiting are the caller's job.
#[derive(Debug, Clone)]
pub struct IterableClient {
    http: Client,
    base: Url,
}

/// Longest response body kept (for dead-letter headers and logs).
const MAX_BODY: usize = 64 * 1024;

impl IterableClient {
    /// Builds the client; the key goes into a sensitive default header, never into logs.
    pub fn new(config: &IterableConfig, key: &Secret) -> Result<Self, ClientError> {
        let mut base = Url::parse(&config.base_url)
            .map_err(|_| ClientError::BaseUrl(config.base_url.clone()))?;
        if base.cannot_be_a_base() {
            return Err(ClientError::BaseUrl(config.base_url.clone()));
        }
        // Normalise to ".../api" so path segments can be pushed.
        {
            let mut segs = base
                .path_segments_mut()
                .map_err(|_| ClientError::BaseUrl(config.base_url.clone()))?;
            segs.pop_if_empty().push("api");
        }
        let mut key_value = HeaderValue::from_str(key.expose()).map_err(|_| ClientError::Key)?;
        key_value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("Api-Key", key_value);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .user_agent(concat!("tillstream-publisher/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base })
    }

    /// The URL of a path below `/api/`, percent-encoding each segment (emails may hold `/`).
    pub fn url(&self, path: &[String]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(path);
        }
        url
    }

    /// A harmless authenticated read (`GET users/getByEmail` of an address that cannot exist)
    /// whose status tells whether the key is accepted.
    pub async fn probe_key(&self, timeout: Duration) -> Attempt {
        let mut url = self.url(&["users".into(), "getByEmail".into()]);
        url.query_pairs_mut()
            .append_pair("email", "tillstream-key-check@example.invalid");
        match self.http.get(url).timeout(timeout).send().await {
            Ok(resp) => Attempt::Response {
                status: resp.status().as_u16(),
                retry_after: None,
                body: String::new(),
            },
            Err(error) => Attempt::Transport {
                kind: if error.is_timeout() {
                    "timeout"
                } else {
                    "connect"
                },
                message: error.to_string(),
            },
        }
    }

    /// Sends one request with `timeout` and reports the outcome; never retries.
    pub async fn send(
        &self,
        method: Method,
        path: &[String],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Attempt {
        let url = self.url(path);
        let mut req = match method {
            Method::Post => self.http.post(url),
            Method::Delete => self.http.delete(url),
            Method::Put => self.http.put(url),
        };
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        match req.timeout(timeout).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                match resp.bytes().await {
                    Ok(bytes) => {
                        let cut = &bytes[..bytes.len().min(MAX_BODY)];
                        Attempt::Response {
                            status,
                            retry_after,
                            body: String::from_utf8_lossy(cut).into_owned(),
                        }
                    }
                    // The status arrived but the body did not: for a success this is still a
                    // success; for anything else the status decides.
                    Err(error) if error.is_timeout() && !(200..300).contains(&status) => {
                        Attempt::Transport {
                            kind: "timeout",
                            message: error.to_string(),
                        }
                    }
                    Err(_) => Attempt::Response {
                        status,
                        retry_after,
                        body: String::new(),
                    },
                }
            }
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "other"
                };
                Attempt::Transport {
                    kind,
                    message: error.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublisherConfig;

    #[test]
    fn urls_are_built_under_api_and_encoded() {
        let mut c = PublisherConfig::defaults().unwrap().iterable;
        c.base_url = "http://127.0.0.1:9/".into();
        let client = IterableClient::new(&c, &Secret::new("k")).unwrap();
        assert_eq!(
            client.url(&["events".into(), "track".into()]).as_str(),
            "http://127.0.0.1:9/api/events/track"
        );
        assert_eq!(
            client.url(&["users".into(), "a/b@x.com".into()]).as_str(),
            "http://127.0.0.1:9/api/users/a%2Fb@x.com"
        );
        c.base_url = "https://api.eu.iterable.com".into();
        let client = IterableClient::new(&c, &Secret::new("k")).unwrap();
        assert_eq!(
            client.url(&["users".into(), "forget".into()]).as_str(),
            "https://api.eu.iterable.com/api/users/forget"
        );
        assert!(IterableClient::new(&c, &Secret::new("bad\nkey")).is_err());
    }
}
