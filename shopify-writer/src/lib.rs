//! Shopify writer: runs the processor's consent decisions against each shop's Admin GraphQL API.
//!
//! Reads `tillstream.shopify.commands` (written by the processor in its transactions), runs
//! `customerEmailMarketingConsentUpdate` / `customerSmsMarketingConsentUpdate` with the shop's
//! access token, waits on the shop's cost bucket (`extensions.cost`, `THROTTLED`), retries
//! transient failures with the publisher's backoff, dead-letters refusals (`userErrors`) with
//! their reason, and commits a record's offset only after it was applied or dead-lettered.
//! Why a binary of its own rather than a second sink of the publisher: ARCHITECTURE.md.

pub mod config;
pub mod graphql;
pub mod lag;
pub mod writer;

use std::collections::BTreeMap;

use prometheus::Registry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use runtime::{ConfigError, Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WriterConfig;

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration or an unreadable token file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The operations server could not bind.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: WriterConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let listener = TcpListener::bind(config.http.listen).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Runs on a bound listener (tests bind port 0).
pub async fn run_with_listener(
    config: WriterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let tokens = config.tokens()?;
    let urls: BTreeMap<String, String> =
        tokens.keys().map(|s| (s.clone(), config.url(s))).collect();
    let registry = Registry::new();
    let metrics = writer::Metrics::new(&registry)?;
    let health = Health::new();
    let ops = tokio::spawn(runtime::serve(
        listener,
        runtime::ops_router(health.clone(), registry.clone()),
        shutdown.clone(),
    ));
    let context = lag::LagContext {
        topic: config.topics.shopify_commands.clone(),
        gauge: metrics.consumer_lag.clone(),
    };
    let mut consumer_config =
        config
            .kafka
            .consumer("tillstream-shopify-writer", &config.group_id, true);
    consumer_config.set(
        "statistics.interval.ms",
        config.stats_interval.as_millis().to_string(),
    );
    let consumer: StreamConsumer<lag::LagContext> = consumer_config.create_with_context(context)?;
    consumer.subscribe(&[&config.topics.shopify_commands])?;
    let producer = config
        .kafka
        .producer("tillstream-shopify-writer")
        .create()?;
    let http = reqwest::Client::builder()
        .timeout(config.shopify.request_timeout)
        .build()?;
    tracing::info!(shops = tokens.len(), topic = %config.topics.shopify_commands, kafka = ?config.kafka, "shopify-writer starting");
    health.set_ready(true, "ready");
    let mut w = writer::Writer {
        http,
        tokens,
        urls,
        backoff: publisher::retry::Backoff::new(&config.retry),
        throttle: graphql::Throttle::default(),
        producer,
        source_topic: config.topics.shopify_commands.clone(),
        dlq_topic: config.topics.shopify_writer_dlq.clone(),
        metrics,
    };
    w.run(&consumer, &shutdown).await;
    health.set_ready(false, "shutting down");
    shutdown.cancel();
    let _ = ops.await;
    tracing::info!("shopify-writer stopped");
    Ok(())
}
