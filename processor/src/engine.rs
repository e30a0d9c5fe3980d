//! The exactly-once engine: consume, run the rules, write everything in one Kafka transaction.
//!
//! # The cycle
//! An engine thread (one per instance, or several: `engine.threads`, engine_threads.rs) owns a
//! `BaseConsumer` (group = `application_id`, `read_committed`, no auto commit, range assignment
//! so partition *p* of the raw and repartition topics go to the same group member) and a
//! transactional producer. For every input record it:
//! 1. advances the partition's stream time and fires the timers that are due *before* the
//!    input (so "an order after the checkout's due time" does not cancel an abandonment that
//!    was already due);
//! 2. drops it if its delivery id or content fingerprint is in the key's dedup window;
//! 3. runs the rules and queues their effects: commands, forwards to other keys, timers;
//! 4. marks the key dirty.
//!
//! Every `commit_interval` or `commit_max_records` inputs it writes each dirty key's full state
//! to the compacted changelog, adds the consumed offsets with the consumer's group metadata
//! (`send_offsets_to_transaction`) and commits. Outputs, state and offsets become visible
//! together or not at all, so a crash at any instant replays exactly the uncommitted inputs
//! against exactly the committed state: no command is lost or duplicated.
//!
//! The commit itself runs on a helper thread while the loop goes on with the next inputs,
//! holding their records in memory until the commit ends and the next transaction begins (at
//! most one commit in flight, at most `commit_max_records` inputs held). The broker round
//! trips of a commit were the largest share of each cycle; overlapping them with the rules'
//! work nearly doubles throughput (docs/benchmarks.md) without changing what is committed.
//!
//! # Failures
//! * retriable transaction errors are retried;
//! * abortable ones abort, seek every owned partition back to its committed offset and rebuild
//!   the in-memory state from the committed changelog;
//! * fatal ones (this instance was fenced by a newer one with the same transactional id, or the
//!   group moved on without it) end the engine with an error, and the process exits non-zero
//!   so the orchestrator restarts it.
//!
//! # Rebalances
//! Before partitions are revoked the open transaction is committed (or aborted) and their state
//! dropped; when partitions are assigned their state is restored from the changelog before any
//! of their records is processed (the restore runs inside the assignment callback, which
//! librdkafka calls before it fetches for the new assignment).
//!
//! # Layout
//! This file holds the engine's state and its poll loop; its jobs live in child modules:
//! `engine_txn.rs` (transactions, driven by `crate::txn`), `engine_input.rs` (input
//! application), `engine_timers.rs`, `engine_restore.rs`, `engine_rebalance.rs` (the consumer
//! context) and `engine_clock.rs` (the late-data rule's plumbing).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rules::Rules;
use runtime::{Health, KafkaConfig, TopicsConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{EngineConfig, TimerClock};
use crate::erasure::{ErasureConfig, ErasureError, Registry as Erasures};
use crate::metrics::Metrics;
use crate::partitioner::partition_for;
use crate::state::PartitionState;
use crate::txn::{CommitThread, Recovery, Txn};
use crate::watermark::WatermarkConfig;

#[path = "engine_clock.rs"]
mod clock;
#[path = "engine_input.rs"]
mod input;
#[path = "engine_producer.rs"]
mod producer;
#[path = "engine_catalog.rs"]
mod products;
use producer::{TxnProducer, transactional_producer};
#[path = "engine_rebalance.rs"]
mod rebalance;
#[path = "engine_restore.rs"]
mod restore;
#[path = "engine_shred.rs"]
mod shred;
#[path = "engine_threads.rs"]
mod threads;
#[path = "engine_timers.rs"]
mod timers;
#[path = "engine_txn.rs"]
mod txn;

pub use products::CatalogPart;
pub use rebalance::EngineContext;
pub use threads::thread_count;
use threads::{Shared, Slot};

/// How long a single Kafka admin or transaction call may take before it counts as failed.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A Kafka call failed in a way the engine cannot recover from.
    #[error("kafka error: {0}")]
    Kafka(#[from] KafkaError),
    /// The producer was fenced or hit a fatal error: another instance owns this work now.
    #[error("fatal transaction error, exiting so the orchestrator restarts this instance: {0}")]
    Fatal(String),
    /// A partition's state could not be restored from the changelog.
    #[error("cannot restore partition {partition} from the changelog: {message}")]
    Restore {
        /// The partition.
        partition: i32,
        /// What went wrong.
        message: String,
    },
    /// The erasure registry could not be loaded (see [`crate::erasure`]).
    #[error(transparent)]
    Erasures(#[from] ErasureError),
    /// The product table could not be loaded (see [`crate::catalog`]).
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// A question to the engine about one key (`GET /customers/{key}`).
pub struct Query {
    /// The key asked about.
    pub key: String,
    /// Where to send the answer.
    pub reply: tokio::sync::oneshot::Sender<QueryAnswer>,
}

/// The engine's answer to a [`Query`].
#[derive(Debug)]
pub enum QueryAnswer {
    /// This instance owns the key's partition; the key's state (or `null` if unknown).
    Owned {
        /// The partition.
        partition: i32,
        /// The key's aggregate, timers and dedup size, as JSON.
        state: serde_json::Value,
    },
    /// Another instance owns the partition (or nobody does yet).
    NotOwned {
        /// The partition.
        partition: i32,
    },
}

/// The engine state shared between the poll loop and the rebalance callbacks (both run on the
/// engine thread, so the lock is never contended; it exists to satisfy the callback API).
pub struct Engine<R: Rules> {
    rules: Arc<R>,
    cfg: EngineConfig,
    topics: TopicsConfig,
    kafka: KafkaConfig,
    application_id: String,
    producer: Arc<TxnProducer>,
    /// The producer's configuration, to replace a producer whose client got stuck.
    producer_cfg: rdkafka::ClientConfig,
    partitions: HashMap<i32, PartitionState>,
    /// The transaction's state (crate::txn): open, committing on a helper thread while the
    /// next work's records are held, failed, rewinding, fenced.
    txn: Txn<CommitThread>,
    txn_records: usize,
    txn_started: Instant,
    offsets: BTreeMap<(String, i32), i64>,
    metrics: Metrics,
    /// This thread's share of readiness, gauges and query routing (engine_threads.rs).
    slot: Slot,
    /// An error raised inside a rebalance callback (which cannot return one), returned by the
    /// poll loop right after.
    fatal: Option<EngineError>,
    /// Aborts so far: a revocation hands its partitions' state over only when its commit
    /// ended without one (the state is then exactly what the changelog holds).
    aborts: u64,
    clock: fn() -> i64,
    /// The late-data rule's settings, in milliseconds (from `cfg.timers`).
    watermark: WatermarkConfig,
    /// Erased subjects (GDPR): their inputs are dropped before the rules see them.
    erasures: Erasures,
    /// The product table and `[catalog]` (`None`: rules without products).
    catalog: Option<CatalogPart>,
    /// The data keys of the owned partitions (crypto-shredding; `None`: no master key).
    keys: Option<runtime::shred::KeyRing>,
    /// The envelope every input is decoded into: its buffers (a body is often several KiB)
    /// are reused instead of allocated per record.
    input: schemas::ShopifyEnvelope,
}

impl<R: Rules> Engine<R> {
    fn update_gauges(&self) {
        let keys: usize = self.partitions.values().map(PartitionState::len).sum();
        let timers: usize = self
            .partitions
            .values()
            .map(PartitionState::timers_pending)
            .sum();
        let deferred = (self.cfg.timers.clock == TimerClock::Inputs).then(|| {
            let grace = self.watermark.grace_ms;
            let deferred: usize = self
                .partitions
                .values()
                .map(|s| match s.clock.horizon(&self.watermark) {
                    crate::watermark::Horizon::Known {
                        complete_ms,
                        fire_up_to_ms,
                    } => s.timers_due_between(fire_up_to_ms, complete_ms - grace, 1 << 20),
                    crate::watermark::Horizon::Unknown => 0,
                })
                .sum();
            i64::try_from(deferred).unwrap_or(i64::MAX)
        });
        self.slot.set_gauges(
            i64::try_from(keys).unwrap_or(i64::MAX),
            i64::try_from(timers).unwrap_or(i64::MAX),
            deferred,
        );
    }

    fn answer(&self, q: Query) {
        let partition = partition_for(&q.key, self.topics.partitions);
        let answer = match self.partitions.get(&partition) {
            None => QueryAnswer::NotOwned { partition },
            Some(state) => {
                let value = match state.get(q.key.as_str()) {
                    None => serde_json::Value::Null,
                    Some(e) => serde_json::json!({
                        "key": q.key,
                        "shop": crate::state::shop_of(&q.key),
                        "updated_at_ms": e.updated_at_ms,
                        "aggregate": serde_json::from_str::<serde_json::Value>(&e.aggregate_json()).unwrap_or_default(),
                        "timers": e.timers.iter().map(|t| { let t = t.to_timer(); serde_json::json!({"kind": t.kind, "timer_id": t.timer_id, "due_ms": t.due_ms, "payload": t.payload}) }).collect::<Vec<_>>(),
                        "dedup_entries": e.dedup.len(),
                    }),
                };
                QueryAnswer::Owned {
                    partition,
                    state: value,
                }
            }
        };
        let _ = q.reply.send(answer);
    }
}

/// Everything the engine thread needs.
pub struct EngineParts<R: Rules> {
    /// The rules.
    pub rules: R,
    /// Engine settings.
    pub cfg: EngineConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Group id / transactional id prefix.
    pub application_id: String,
    /// Transactional id of this instance.
    pub transactional_id: String,
    /// Consumer client id (carries the advertised URL so peers can point at the owner).
    pub client_id: String,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Arc<Health>,
    /// Queries from the HTTP server.
    pub queries: Receiver<Query>,
    /// Stop signal.
    pub shutdown: CancellationToken,
    /// The erasure registry's hash key.
    pub erasure: ErasureConfig,
    /// The product table and `[catalog]` (`None`: rules without products).
    pub catalog: Option<CatalogPart>,
}

/// What one engine thread needs (engine_threads.rs builds one per thread).
struct ThreadParts<R: Rules> {
    rules: Arc<R>,
    cfg: EngineConfig,
    topics: TopicsConfig,
    kafka: KafkaConfig,
    application_id: String,
    transactional_id: String,
    client_id: String,
    metrics: Metrics,
    slot: Slot,
    queries: Receiver<Query>,
    shutdown: CancellationToken,
    erasure: ErasureConfig,
    /// This thread's product table (each thread loads its own, see `CatalogPart::for_thread`).
    catalog: Option<CatalogPart>,
    /// With several threads: met by all of them before they join the group.
    start: Option<Arc<std::sync::Barrier>>,
}

/// Runs the engine until shutdown or a fatal error: on the current (blocking) thread, or with
/// `engine.threads` > 1 on that many threads (engine_threads.rs).
pub fn run_engine<R: Rules>(parts: EngineParts<R>) -> Result<(), EngineError> {
    // A thread beyond the partition count could never own a partition.
    let threads = thread_count(parts.cfg.threads)
        .min(usize::try_from(parts.topics.partitions).unwrap_or(1).max(1));
    tracing::info!(threads, "Engine threads.");
    if threads > 1 {
        return threads::run_threads(parts, threads);
    }
    let shared = Shared::new(Arc::clone(&parts.health), parts.metrics.clone(), 1);
    run_thread(ThreadParts {
        rules: Arc::new(parts.rules),
        cfg: parts.cfg,
        topics: parts.topics,
        kafka: parts.kafka,
        application_id: parts.application_id,
        transactional_id: parts.transactional_id,
        client_id: parts.client_id,
        metrics: parts.metrics,
        slot: shared.slot(0),
        queries: parts.queries,
        shutdown: parts.shutdown,
        erasure: parts.erasure,
        catalog: parts.catalog,
        start: None,
    })
}

/// One engine: a consumer, a transactional producer and the partitions the group gives it.
fn run_thread<R: Rules>(mut parts: ThreadParts<R>) -> Result<(), EngineError> {
    let catalog = parts.catalog.take();
    let built = build_engine(&parts, catalog);
    // The threads of one instance join the group together (also when one failed to start,
    // so none waits forever): a broker without an initial rebalance delay would otherwise
    // hand every partition to the first thread, which restores them all, and move half of
    // them at the next thread's join, restoring those again.
    if let Some(start) = &parts.start {
        start.wait();
    }
    let (engine, consumer) = built?;
    consumer.subscribe(&[&parts.topics.raw, &parts.topics.repartition])?;
    tracing::info!(group = %parts.application_id, transactional_id = %parts.transactional_id, "Processor engine started.");

    let lock = || {
        engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut last_idle = Instant::now();
    loop {
        if parts.shutdown.is_cancelled() {
            let mut e = lock();
            tracing::info!("Shutting down: committing the open transaction.");
            let result = e.commit(&consumer, Recovery::Rewind);
            e.slot.set_ready(false, "shutting down");
            // Nothing stays in this instance: the revocation that leaving the group causes
            // has no state to hand over (engine_rebalance.rs) and need not look for any.
            e.partitions.clear();
            drop(e);
            // Leave the group now so partitions move at once instead of after a session timeout.
            consumer.unsubscribe();
            return result;
        }
        let polled = consumer.poll(parts.cfg.poll_timeout);
        let idle = polled.is_none();
        let mut e = lock();
        if let Some(fatal) = e.fatal.take() {
            return Err(fatal);
        }
        while let Ok(q) = parts.queries.try_recv() {
            e.answer(q);
        }
        e.settle_commit(&consumer, false, Recovery::Rewind)?;
        match polled {
            Some(Ok(msg)) => e.on_message(&msg)?,
            // A fatal consumer error (e.g. a static member fenced after a coordinator
            // failover) leaves a consumer that never delivers again: exit so the orchestrator
            // restarts the instance instead of stalling with lag 0.
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                return Err(EngineError::Fatal(format!("consumer: {code}")));
            }
            Some(Err(error)) => tracing::warn!(%error, "Consumer error."),
            None => {}
        }
        if e.txn.is_committing() && e.txn_records >= e.cfg.commit_max_records {
            // A full transaction is waiting for the previous commit: bound what is held.
            e.settle_commit(&consumer, true, Recovery::Rewind)?;
        }
        if idle || last_idle.elapsed() >= Duration::from_millis(200) {
            e.on_idle(&consumer)?;
            last_idle = Instant::now();
        }
        if e.should_commit(idle) {
            e.start_commit(&consumer, Recovery::Rewind)?;
        }
    }
}

/// How often a member heartbeats: a quarter of the session, at most 3 s (Kafka's default).
/// A member learns of a rebalance (another thread or instance joining) from its heartbeat, so
/// a long session must not slow that down: with the 30 s session a quarter (7.5 s) held a
/// two-thread instance's first assignment for seconds.
fn heartbeat_interval(session: Duration) -> Duration {
    (session / 4).clamp(Duration::from_millis(100), Duration::from_secs(3))
}

/// An engine thread's state (shared with its consumer's rebalance callbacks) and consumer.
type Built<R> = (Arc<Mutex<Engine<R>>>, BaseConsumer<EngineContext<R>>);

/// An engine thread's transactional producer (initialised, so older ones with its id are
/// fenced), its engine state and its consumer (not yet subscribed).
fn build_engine<R: Rules>(
    parts: &ThreadParts<R>,
    catalog: Option<CatalogPart>,
) -> Result<Built<R>, EngineError> {
    let mut producer_cfg = parts
        .kafka
        .transactional_producer(&parts.client_id, &parts.transactional_id);
    producer_cfg.set(
        "transaction.timeout.ms",
        parts.cfg.transaction_timeout.as_millis().to_string(),
    );
    let keys = runtime::shred::KeyRing::new(&parts.erasure, &parts.kafka, &parts.topics.keys)
        .map_err(|e| EngineError::Fatal(e.to_string()))?;
    let producer = transactional_producer(&producer_cfg)?;

    let engine = Arc::new(Mutex::new(Engine {
        rules: Arc::clone(&parts.rules),
        cfg: parts.cfg.clone(),
        topics: parts.topics.clone(),
        kafka: parts.kafka.clone(),
        application_id: parts.application_id.clone(),
        producer: Arc::new(producer),
        producer_cfg,
        txn: Txn::Idle,
        partitions: HashMap::new(),
        txn_records: 0,
        txn_started: Instant::now(),
        offsets: BTreeMap::new(),
        metrics: parts.metrics.clone(),
        slot: parts.slot.clone(),
        fatal: None,
        aborts: 0,
        clock: runtime::now_ms,
        watermark: parts.cfg.timers.watermark(),
        erasures: Erasures::new(&parts.erasure.hash_key),
        catalog,
        keys,
        input: schemas::ShopifyEnvelope::default(),
    }));
    let mut consumer_cfg = parts
        .kafka
        .consumer(&parts.client_id, &parts.application_id, true);
    consumer_cfg
        // Range assignment keeps partition p of the raw and repartition topics together.
        .set("partition.assignment.strategy", "range")
        .set(
            "session.timeout.ms",
            parts.cfg.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            heartbeat_interval(parts.cfg.session_timeout)
                .as_millis()
                .to_string(),
        )
        .set("max.poll.interval.ms", "600000")
        .set("statistics.interval.ms", "500");
    let consumer: BaseConsumer<EngineContext<R>> =
        consumer_cfg.create_with_context(EngineContext::new(engine.clone()))?;
    Ok((engine, consumer))
}
