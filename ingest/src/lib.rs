//! Webhook receiver: verify Shopify's HMAC (or Iterable's shared secret), publish the raw
//! delivery to Kafka, answer 200 only once the broker acknowledged it.
//!
//! * [`app`] builds the router (webhook endpoint plus `/healthz`, `/readyz`, `/metrics`) over an
//!   [`AppState`], so tests drive it with `tower::ServiceExt::oneshot` and a [`MemorySink`].
//! * [`run`] wires the real pieces: config, the Kafka producer, the HTTP server, readiness
//!   checks and graceful shutdown.
//!
//! See `ingest/README.md` for the endpoint contract, configuration, routing table and metrics.

pub mod config;
pub mod handler;
pub mod headers;
pub mod heartbeat;
pub mod iterable;
mod iterable_endpoint;
pub mod metrics;
pub mod server;
pub mod sink;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use rdkafka::producer::Producer;
use runtime::Health;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULTS_TOML, HttpConfig, IngestConfig, ShopifyConfig};
pub use handler::{AppState, RequestError};
pub use sink::{EventSink, KafkaSink, MemoryMode, MemorySink, Record, SinkError};
pub use verify::{Signature, SignatureError, Verifier, sign};

/// The webhook path.
pub const WEBHOOK_PATH: &str = "/webhooks/shopify";

/// How long shutdown waits for the producer to deliver what is still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why ingest could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The Kafka producer could not be created.
    #[error("cannot create Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(String),
}

/// The router: `POST /webhooks/shopify` plus `/healthz`, `/readyz` and `/metrics`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(handler::webhook))
        .route(iterable::ITERABLE_PATH, post(iterable::webhook))
        .with_state(state.clone())
        .merge(runtime::ops_router(state.health(), state.registry()))
}

/// Runs ingest on `config.http.listen` until `shutdown` is cancelled.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let addr = config.http.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    run_with_listener(config, listener, shutdown).await
}

/// Runs ingest on an already bound listener (tests bind port 0 and read the address first).
///
/// Shutdown: stop accepting, let in-flight requests finish (at most `http.drain_timeout`),
/// flush the producer, return `Ok`.
pub async fn run_with_listener(
    config: IngestConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let sink = Arc::new(KafkaSink::new(
        &config.kafka,
        &config.topics.raw,
        config.http.body_limit,
    )?);
    let sealer = runtime::shred::Sealer::for_kafka(&config.erasure, &config.kafka, &config.topics)
        .map_err(|e| Error::Config(e.to_string()))?;
    if sealer.is_none() {
        tracing::warn!(
            "erasure.master_key is not set: bodies are stored in clear, and an erased customer's raw records stay readable until `tillstream raw rewrite` (README, GDPR)."
        );
    }
    let state = AppState::with_sealer(&config, sink.clone(), sealer)?;
    let local = listener.local_addr().ok();
    tracing::info!(
        listen = ?local,
        topic = %config.topics.raw,
        secrets = config.secrets()?.len(),
        allowed_shops = config.shopify.allowed_shops.len(),
        iterable_endpoint = state.inner.iterable.is_some(),
        sealed = state.inner.sealer.is_some(),
        kafka = ?config.kafka,
        "ingest starting"
    );

    let readiness = tokio::spawn(readiness_loop(
        sink.clone(),
        state.health(),
        config.http.ready_check_interval,
        shutdown.clone(),
    ));
    let heartbeats = if config.heartbeat.enabled {
        let metrics = heartbeat::HeartbeatMetrics::new(&state.registry())
            .map_err(|e| Error::Metrics(e.to_string()))?;
        let instance = if config.heartbeat.instance_id.is_empty() {
            std::env::var("HOSTNAME").unwrap_or_else(|_| format!("ingest-{}", std::process::id()))
        } else {
            config.heartbeat.instance_id.clone()
        };
        Some(tokio::spawn(heartbeat::run(
            sink.clone(),
            config.topics.partitions,
            instance,
            config.heartbeat.interval,
            metrics,
            shutdown.clone(),
        )))
    } else {
        None
    };
    let options = server::ServeOptions {
        header_read_timeout: config.http.read_timeout,
        drain_timeout: config.http.drain_timeout,
    };
    server::serve(listener, app(state.clone()), options, shutdown.clone()).await;
    state.health().set_ready(false, "shutting down");
    readiness.abort();
    if let Some(h) = heartbeats {
        h.abort();
    }

    // Everything answered 200 is already acknowledged; this only gives records whose request
    // got 503 (ack timeout) a last chance, so Shopify's retry finds them already there.
    let flushed = tokio::task::spawn_blocking(move || sink.flush(FLUSH_TIMEOUT)).await;
    match flushed {
        Ok(Ok(())) => tracing::info!("producer flushed; ingest stopped"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "producer flush incomplete; Shopify will retry those deliveries")
        }
        Err(error) => tracing::warn!(%error, "producer flush task failed"),
    }
    Ok(())
}

/// Refreshes the raw topic's metadata every `interval`; ready means the last refresh reached
/// a broker and found the topic with partitions.
async fn readiness_loop(
    sink: Arc<KafkaSink>,
    health: Arc<Health>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let timeout = interval.min(Duration::from_secs(5));
    loop {
        let probe = sink.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let metadata = probe
                .producer()
                .client()
                .fetch_metadata(Some(probe.topic()), timeout);
            match metadata {
                Err(error) => Err(format!("kafka metadata: {error}")),
                Ok(m) => match m.topics().iter().find(|t| t.name() == probe.topic()) {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                    _ => Err(format!("topic {} not found on the broker", probe.topic())),
                },
            }
        })
        .await;
        if shutdown.is_cancelled() {
            return;
        }
        match checked {
            Ok(Ok(())) => health.set_ready(true, "ready"),
            Ok(Err(reason)) => {
                if health.is_ready() {
                    tracing::warn!(%reason, "not ready");
                }
                health.set_ready(false, &reason);
            }
            Err(error) => health.set_ready(false, &format!("readiness check failed: {error}")),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
