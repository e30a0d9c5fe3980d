//! The processor: keyed, exactly-once aggregation of raw Shopify events into Iterable commands.
//!
//! Layout: [`engine`] (Kafka transactions, rebalances, restore, timers), [`state`] (per-partition
//! in-memory state mirrored to the changelog), [`http`] (customer queries), [`counter`] (the
//! engine's diagnostic rule set), [`erasure`] (the GDPR erasure registry), [`catalog`] (the
//! product table for the enrichment join), [`config`], [`metrics`],
//! [`partitioner`]. The marketing rules
//! live in the `rules` crate, which has no Kafka in it.

pub mod catalog;
pub mod config;
pub mod content;
pub mod counter;
pub mod engine;
pub mod erasure;
pub mod http;
pub mod metrics;
pub mod pack;
/// Kafka's partitioner (lives in `runtime`: ingest seals with it too).
pub use runtime::partitioner;
pub mod state;
pub mod trail;
mod txn;
pub mod watermark;

use std::sync::Arc;

use prometheus::Registry;
use rules::Rules;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ProcessorConfig, RulesKind};
pub use engine::EngineError;

/// Why the processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The engine failed (see [`EngineError`]).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The rules file is invalid.
    #[error("invalid rules: {0}")]
    Rules(String),
    /// Metrics could not be registered (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The engine thread panicked.
    #[error("engine thread ended abnormally: {0}")]
    Join(String),
}

/// Runs the processor until `shutdown` is cancelled or the engine fails.
pub async fn run(
    config: ProcessorConfig,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let listener = TcpListener::bind(&config.http.listen)
        .await
        .map_err(|source| ProcessorError::Listen {
            addr: config.http.listen.clone(),
            source,
        })?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`] with an already bound listener (tests bind port 0).
pub async fn run_with_listener(
    config: ProcessorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    match config.rules.kind {
        RulesKind::OrderCounter => {
            let delay =
                i64::try_from(config.rules.counter_timer_delay.as_millis()).unwrap_or(i64::MAX);
            serve(
                config,
                listener,
                shutdown,
                counter::OrderCounter {
                    timer_delay_ms: delay,
                },
                None,
                None,
                None,
            )
            .await
        }
        RulesKind::Marketing => {
            let rules_config = match &config.rules.file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| ProcessorError::Rules(format!("{}: {e}", path.display())))?;
                    rules::RulesConfig::from_toml_str(&text)
                        .map_err(|e| ProcessorError::Rules(e.to_string()))?
                }
                None => rules::RulesConfig::default(),
            };
            let view_config = Arc::new(rules_config.clone());
            let products = Products {
                cfg: rules_config.catalog.clone(),
                checkout_event: rules_config.events.checkout_abandoned.clone(),
            };
            let describe: http::Describe = Arc::new(
                move |key: &schemas::CustomerKey, aggregate: &serde_json::Value| {
                    let state: rules::State = serde_json::from_value(aggregate.clone()).ok()?;
                    serde_json::to_value(rules::view::customer_view(&view_config, key, &state)).ok()
                },
            );
            let rules = rules::MarketingRules::new(rules_config);
            let coerced = metrics::CoercedFields::new(rules.clone())?;
            serve(
                config,
                listener,
                shutdown,
                rules,
                Some(describe),
                Some(products),
                Some(Box::new(coerced)),
            )
            .await
        }
    }
}

/// The rules' product settings, for the engine's product table.
struct Products {
    cfg: rules::catalog::CatalogConfig,
    checkout_event: String,
}

async fn serve<R: Rules>(
    config: ProcessorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    rules: R,
    describe: Option<http::Describe>,
    products: Option<Products>,
    extra_metrics: Option<Box<dyn prometheus::core::Collector>>,
) -> Result<(), ProcessorError> {
    let registry = Registry::new();
    let metrics = metrics::Metrics::new(&registry)?;
    if let Some(c) = extra_metrics {
        registry.register(c)?;
    }
    let catalog = match products {
        Some(p) => Some(engine::CatalogPart {
            catalog: catalog::Catalog::new(
                config.kafka.clone(),
                config.topics.products.clone(),
                catalog::CatalogMetrics::new(&registry)?,
            ),
            cfg: Arc::new(p.cfg),
            checkout_event: p.checkout_event,
        }),
        None => None,
    };
    let health = runtime::Health::new();
    let (queries_tx, queries_rx) = std::sync::mpsc::channel();
    let router = http::query_router(http::QueryState {
        queries: queries_tx,
        kafka: config.kafka.clone(),
        group: config.application_id.clone(),
        raw_topic: config.topics.raw.clone(),
        describe,
        dedup: http::DedupSettings {
            window: config.engine.dedup_window,
            max_per_key: config.engine.dedup_max_per_key,
        },
    })
    .merge(runtime::ops_router(health.clone(), registry));
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(runtime::serve(listener, router, http_stop.clone()));

    let parts = engine::EngineParts {
        rules,
        cfg: config.engine.clone(),
        topics: config.topics.clone(),
        kafka: config.kafka.clone(),
        application_id: config.application_id.clone(),
        transactional_id: config.transactional_id(),
        client_id: config.http.advertised_url.clone(),
        metrics,
        health: Arc::clone(&health),
        queries: queries_rx,
        shutdown: shutdown.clone(),
        erasure: config.erasure.clone(),
        catalog,
    };
    let result = tokio::task::spawn_blocking(move || engine::run_engine(parts)).await;
    // The engine is done (shutdown or failure): stop answering HTTP too.
    http_stop.cancel();
    let _ = server.await;
    match result {
        Ok(r) => r.map_err(ProcessorError::from),
        Err(e) => Err(ProcessorError::Join(e.to_string())),
    }
}
