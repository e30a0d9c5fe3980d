//! publisher: reads Iterable commands from Kafka and delivers them to Iterable's REST API,
//! rate-limited, batched, retried, dead-lettered, committing only finished work.
//!
//! Layout (Vector's sink roles): [`config`] (settings), [`mapping`] (command → request),
//! [`batch`] (path choice, coalescing, caps), [`limits`] (governor per endpoint), [`client`]
//! (HTTP), [`retry`] (classification and backoff), [`offsets`] (contiguous commits), [`dlq`]
//! (dead letters), [`metrics`]; `deliver` and `pipeline` wire them together.

pub mod batch;
pub mod client;
pub mod config;
pub mod conflict;
mod deliver;
mod deliver_bulk;
mod dispatch;
pub mod dlq;
pub mod lanes;
pub mod limits;
pub mod mapping;
pub mod mapping_catalog;
pub mod metrics;
pub mod offsets;
mod pipeline;
pub mod request;
pub mod retry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use runtime::{ConfigError, Health};
use tokio_util::sync::CancellationToken;

pub use config::PublisherConfig;

use crate::client::{ClientError, IterableClient};
use crate::deliver::Deliverer;
use crate::dispatch::Dispatcher;
use crate::dlq::DeadLetters;
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;
use crate::pipeline::PublisherContext;
use crate::retry::{Attempt, Backoff};

/// Why the publisher could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration or unreadable key file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Iterable refused the API key at the start-up check.
    #[error(
        "Iterable rejected the API key at start-up (HTTP {status}): check TILLSTREAM__ITERABLE__API_KEY and the data center of iterable.base_url"
    )]
    BadApiKey {
        /// 401 or 403.
        status: u16,
    },
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The operations server could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Checks the key with a harmless read: 401/403 mean a wrong key or data center. Transient
/// failures are retried until `shutdown` (then `Ok(false)`).
async fn check_key(
    client: &IterableClient,
    backoff: &Backoff,
    shutdown: &CancellationToken,
) -> Result<bool, Error> {
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            r = client.probe_key(Duration::from_secs(10)) => r,
            () = shutdown.cancelled() => return Ok(false),
        };
        match result {
            Attempt::Response {
                status: status @ (401 | 403),
                ..
            } => return Err(Error::BadApiKey { status }),
            Attempt::Response { status, .. } if status < 500 && status != 429 => {
                tracing::info!(status, "Iterable API key accepted.");
                return Ok(true);
            }
            other => {
                tracing::warn!(status = %other.status_label(), "Iterable key check failed transiently; retrying.");
                let delay = backoff.delay(attempt, None).max(Duration::from_millis(200));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(false),
                }
            }
        }
    }
}

/// Runs the publisher until `shutdown` is cancelled, then drains in-flight requests (within
/// `pipeline.shutdown_timeout`), commits finished offsets and returns.
pub async fn run(config: PublisherConfig, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate()?;
    // Fail before binding anything when no key is configured.
    config.iterable.resolve_key()?;
    let config = Arc::new(config);
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry)?;
    let health = Health::new();
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.http.listen,
            source,
        })?;
    let ops_stop = CancellationToken::new();
    tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Operations server listening.");
    let ops = tokio::spawn(runtime::serve(
        listener,
        runtime::ops_router(health.clone(), registry),
        ops_stop.clone(),
    ));

    let result = run_inner(config, metrics, &health, shutdown).await;
    health.set_ready(false, "stopped");
    ops_stop.cancel();
    let _ = ops.await;
    result
}

async fn run_inner(
    config: Arc<PublisherConfig>,
    metrics: Metrics,
    health: &Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let key = config.iterable.resolve_key()?;
    let client = IterableClient::new(&config.iterable, &key)?;
    let backoff = Backoff::new(&config.retry);
    tracing::info!(base_url = %config.iterable.base_url, api_key = %key, project_type = ?config.iterable.project_type, "Starting publisher.");
    if config.iterable.check_key {
        health.set_ready(false, "checking the Iterable API key");
        if !check_key(&client, &backoff, &shutdown).await? {
            return Ok(());
        }
    }
    let producer: FutureProducer = config.kafka.producer("tillstream-publisher-dlq").create()?;
    let offsets = Arc::new(Mutex::new(OffsetTracker::new()));
    let context = PublisherContext {
        offsets: offsets.clone(),
        topic: config.topics.commands.clone(),
        metrics: metrics.clone(),
    };
    let mut consumer_config = config
        .kafka
        .consumer("tillstream-publisher", &config.group_id, true);
    consumer_config.set(
        "statistics.interval.ms",
        config.pipeline.stats_interval.as_millis().to_string(),
    );
    let consumer: StreamConsumer<PublisherContext> =
        consumer_config.create_with_context(context)?;
    consumer.subscribe(&[config.topics.commands.as_str()])?;

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let dlq = DeadLetters::new(
        producer.clone(),
        config.topics.commands.clone(),
        config.topics.publisher_dlq.clone(),
        metrics.clone(),
    );
    let deliverer = Arc::new(Deliverer::new(
        client,
        Limiters::new(&config.limits),
        metrics,
        config.retry.clone(),
        &config.iterable,
        dlq,
        tx,
    ));
    let dispatcher = Dispatcher::new(config.clone(), deliverer, offsets);
    health.set_ready(true, "running");
    tracing::info!(topic = %config.topics.commands, group = %config.group_id, "Publisher running.");
    let result = pipeline::run_loop(config, consumer, dispatcher, rx, shutdown).await;
    let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(5));
    tracing::info!("Publisher stopped.");
    Ok(result?)
}
