//! Shared helpers for the integration tests: start a simulator, call it, poll with deadlines.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use iterable_sim::{
    DEFAULT_API_KEY, EventView, ProfileView, SimConfig, SimHandle, StatsView, spawn,
};
use serde_json::Value;

pub struct Sim {
    pub handle: SimHandle,
    pub client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Status and Iterable `code`, the pair most assertions check together.
    pub fn status_and_code(&self) -> (u16, Option<&str>) {
        (self.status, self.json["code"].as_str())
    }
}

impl Sim {
    pub async fn start(config: SimConfig) -> Sim {
        let handle = spawn(config).await.unwrap();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        Sim { handle, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url(), path)
    }

    /// Sends `body` (raw) with header `name: key`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        header: Option<(&str, &str)>,
        body: Option<String>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some((n, v)) = header {
            req = req.header(n, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            path,
            Some(("Api-Key", DEFAULT_API_KEY)),
            Some(body.to_string()),
        )
        .await
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            path,
            Some(("Api-Key", key)),
            Some(body.to_string()),
        )
        .await
    }

    pub async fn api_get(&self, path: &str) -> Reply {
        self.send(
            reqwest::Method::GET,
            path,
            Some(("Api-Key", DEFAULT_API_KEY)),
            None,
        )
        .await
    }

    pub async fn api_delete(&self, path: &str) -> Reply {
        self.send(
            reqwest::Method::DELETE,
            path,
            Some(("Api-Key", DEFAULT_API_KEY)),
            None,
        )
        .await
    }

    /// `GET /_sim/...` as JSON.
    pub async fn inspect(&self, path: &str) -> Value {
        self.send(reqwest::Method::GET, path, None, None).await.json
    }

    pub async fn stats(&self) -> StatsView {
        let v = self.inspect("/_sim/stats").await;
        serde_json::from_value(v).unwrap()
    }

    /// Fires `n` identical requests with up to `concurrency` in flight; returns statuses.
    pub async fn burst(&self, path: &str, body: Value, n: usize, concurrency: usize) -> Vec<u16> {
        let body = body.to_string();
        let mut out = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        let mut sent = 0;
        while sent < n || !set.is_empty() {
            while sent < n && set.len() < concurrency {
                let req = self
                    .client
                    .post(self.url(path))
                    .header("Api-Key", DEFAULT_API_KEY)
                    .header("content-type", "application/json")
                    .body(body.clone());
                set.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
                sent += 1;
            }
            if let Some(r) = set.join_next().await {
                out.push(r.unwrap().unwrap());
            }
        }
        out
    }
}

/// Polls `f` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn config_without_limits() -> SimConfig {
    SimConfig::without_rate_limits()
}

/// A simulator without rate limits.
pub async fn sim() -> Sim {
    Sim::start(SimConfig::without_rate_limits()).await
}

pub async fn profile(sim: &Sim, email: &str) -> ProfileView {
    let v = sim.inspect(&format!("/_sim/profiles?email={email}")).await;
    let mut list: Vec<ProfileView> = serde_json::from_value(v).unwrap();
    assert_eq!(list.len(), 1, "profile {email}");
    list.remove(0)
}

pub async fn events(sim: &Sim, query: &str) -> Vec<EventView> {
    serde_json::from_value(sim.inspect(&format!("/_sim/events{query}")).await).unwrap()
}
