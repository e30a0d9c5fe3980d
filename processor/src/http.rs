//! The processor's HTTP surface: `GET /customers/{key}` answered by the owning instance.
//!
//! The engine thread owns the state; a query travels to it over a channel and is answered
//! between two polls. When this instance does not own the key's partition, the answer names
//! the partition and, from the consumer group's member list, the instance that owns it.
//! The answer is the readable view (the rules' business view, timers in words, the dedup
//! window); `?raw=true` gives the engine's internal form for debugging.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use rdkafka::consumer::{BaseConsumer, Consumer};
use runtime::KafkaConfig;
use schemas::CustomerKey;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{Query, QueryAnswer};

/// Shared state of the query handler.
#[derive(Clone)]
pub struct QueryState {
    /// Channel to the engine thread.
    pub queries: Sender<Query>,
    /// For the group member lookup.
    pub kafka: KafkaConfig,
    /// The consumer group (application id).
    pub group: String,
    /// Raw topic name, to read partition ownership from member assignments.
    pub raw_topic: String,
    /// The rules' business view of an aggregate (JSON) under a key; `None` when the rules
    /// have none (the answer then shows the aggregate as stored).
    pub describe: Option<Describe>,
    /// The dedup settings, to say what the remembered entries cover.
    pub dedup: DedupSettings,
}

/// Turns a key's aggregate (as stored, JSON) into the rules' business view.
pub type Describe = Arc<dyn Fn(&CustomerKey, &Value) -> Option<Value> + Send + Sync>;

/// What bounds a key's dedup memory (`engine.dedup_window`, `engine.dedup_max_per_key`).
#[derive(Debug, Clone, Copy)]
pub struct DedupSettings {
    /// Event-time span a delivery id is remembered.
    pub window: Duration,
    /// Most entries kept per key.
    pub max_per_key: usize,
}

/// `?raw=true`: the engine's internal form.
#[derive(Debug, Default, Deserialize)]
struct Form {
    #[serde(default)]
    raw: bool,
}

/// Routes of the query API.
pub fn query_router(state: QueryState) -> Router {
    Router::new()
        .route("/customers/{*key}", get(customer))
        .with_state(state)
}

async fn customer(
    State(s): State<QueryState>,
    Path(key): Path<String>,
    UrlQuery(form): UrlQuery<Form>,
) -> Response {
    let Ok(parsed) = CustomerKey::parse(&key) else {
        let body = serde_json::json!({"error": "not a tillstream key; expected {shop}/{kind}/{id}, e.g. demo.myshopify.com/c/123"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.queries
        .send(Query {
            key: key.clone(),
            reply: tx,
        })
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "engine stopped"})),
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(QueryAnswer::Owned { partition, state })) if state.is_null() => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({"key": key, "partition": partition, "owned_here": true, "state": null}))).into_response()
        }
        Ok(Ok(QueryAnswer::Owned { partition, state })) if form.raw => {
            (StatusCode::OK, Json(serde_json::json!({"key": key, "partition": partition, "owned_here": true, "state": state}))).into_response()
        }
        Ok(Ok(QueryAnswer::Owned { partition, state })) => {
            let mut body = readable(&parsed, &state, &s, runtime::now_ms());
            body["partition"] = partition.into();
            body["owned_here"] = true.into();
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(Ok(QueryAnswer::NotOwned { partition })) => {
            let owner = tokio::task::spawn_blocking(move || owner_of(&s.kafka, &s.group, &s.raw_topic, partition)).await.ok().flatten();
            let body = serde_json::json!({"key": key, "partition": partition, "owned_here": false, "owner": owner});
            (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response()
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "engine busy; retry"}))).into_response(),
    }
}

/// The readable answer for a key's state as the engine reports it (`key`, `updated_at_ms`,
/// `aggregate`, `timers`, `dedup_entries`).
fn readable(key: &CustomerKey, state: &Value, s: &QueryState, now_ms: i64) -> Value {
    let timers: Vec<Value> = state["timers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let timer = rules::Timer {
                kind: t["kind"].as_str().unwrap_or_default().to_owned(),
                timer_id: t["timer_id"].as_str().unwrap_or_default().to_owned(),
                due_ms: t["due_ms"].as_i64().unwrap_or_default(),
                payload: t["payload"].clone(),
            };
            serde_json::to_value(rules::view::timer_view(&timer, now_ms)).unwrap_or_default()
        })
        .collect();
    let aggregate = &state["aggregate"];
    let view = s.describe.as_ref().and_then(|d| d(key, aggregate));
    let mut body = json!({
        "key": key.as_str(),
        "updated_at": state["updated_at_ms"].as_i64().map(rules::view::rfc3339),
        "timers": timers,
        "dedup": {
            "remembered": state["dedup_entries"],
            "max_per_key": s.dedup.max_per_key,
            "window": humantime::format_duration(s.dedup.window).to_string(),
        },
    });
    match view {
        Some(v) => body["customer"] = v,
        None => body["aggregate"] = aggregate.clone(),
    }
    body
}

/// Finds the group member (its client id, which carries its advertised URL) that owns the
/// raw topic's `partition`, by decoding the members' assignments.
fn owner_of(kafka: &KafkaConfig, group: &str, raw_topic: &str, partition: i32) -> Option<String> {
    let client: BaseConsumer = kafka.client("tillstream-processor-lookup").create().ok()?;
    let groups = client
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()?;
    for g in groups.groups() {
        for m in g.members() {
            let Some(assignment) = m.assignment() else {
                continue;
            };
            if decode_assignment(assignment)
                .iter()
                .any(|(t, p)| t == raw_topic && *p == partition)
            {
                return Some(m.client_id().to_owned());
            }
        }
    }
    None
}

/// Decodes a consumer-protocol assignment: version, [topic, [partition]], user data.
pub fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = b.split_at_checked(N)?;
        *b = rest;
        head.try_into().ok()
    }
    let mut b = bytes;
    let mut out = Vec::new();
    let parse = |b: &mut &[u8], out: &mut Vec<(String, i32)>| -> Option<()> {
        take::<2>(b)?;
        let topics = i32::from_be_bytes(take::<4>(b)?);
        for _ in 0..topics.max(0) {
            let len = usize::try_from(i16::from_be_bytes(take::<2>(b)?)).ok()?;
            let (name, rest) = b.split_at_checked(len)?;
            *b = rest;
            let name = String::from_utf8_lossy(name).into_owned();
            let count = i32::from_be_bytes(take::<4>(b)?);
            for _ in 0..count.max(0) {
                out.push((name.clone(), i32::from_be_bytes(take::<4>(b)?)));
            }
        }
        Some(())
    };
    let _ = parse(&mut b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_assignment_and_survives_garbage() {
        let mut b = vec![0, 1, 0, 0, 0, 1, 0, 3];
        b.extend_from_slice(b"raw");
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(
            decode_assignment(&b),
            vec![("raw".into(), 4), ("raw".into(), 7)]
        );
        assert!(decode_assignment(&[0xff; 3]).is_empty());
        assert!(decode_assignment(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty());
    }
}
