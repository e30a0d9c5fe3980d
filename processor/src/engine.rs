//! The exactly-once engine: consume, run the rules, write everything in one Kafka transaction.
//!
//! # The cycle
//! One thread owns a `BaseConsumer` (group = `application_id`, `read_committed`, no auto
//! commit, range assignment so partition *p* of the raw and repartition topics go to the same
//! instance) and a transactional producer. For every input record it:
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

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rules::{Ctx, Effect, Rules, Timer};
use runtime::{Health, KafkaConfig, TopicsConfig};
use schemas::{Action, CustomerKey, KeyKind, ShopifyEnvelope};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{EngineConfig, TimerClock};
use crate::erasure::{ErasureConfig, ErasureError, Registry as Erasures};
use crate::metrics::Metrics;
use crate::partitioner::partition_for;
use crate::state::{PartitionState, fingerprint};
use crate::watermark::{CLOCK_KEY_PREFIX, PROGRESS_TOPIC, PartitionClock, WatermarkConfig};

#[path = "engine_clock.rs"]
mod clock;
#[path = "engine_catalog.rs"]
mod products;
pub use products::CatalogPart;

/// Internal topic of the message that purges one shop's keys on one partition (shop/redact).
const SHOP_PURGE: &str = "tillstream/shop-purge";

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

/// Where a transaction step failed and what to do about it.
enum TxnFailure {
    Abort(String),
    Fatal(String),
}

/// A record waiting for its transaction to begin.
struct Held {
    topic: String,
    key: String,
    partition: Option<i32>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

/// Fatal errors (fenced, producer unusable) end the engine; every other failure aborts.
fn classify(error: &KafkaError) -> TxnFailure {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnFailure::Fatal(e.to_string()),
        other => TxnFailure::Abort(other.to_string()),
    }
}

/// librdkafka may ask for a plain retry of a transactional call (and only then).
fn is_retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(e) if e.is_retriable() && !e.is_fatal() && !e.txn_requires_abort())
}

/// Runs a transactional call, retrying while librdkafka says the error is retriable.
fn with_retries<T>(mut op: impl FnMut() -> Result<T, KafkaError>) -> Result<T, TxnFailure> {
    let mut attempts = 0;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if is_retriable(&e) && attempts < 10 => {
                attempts += 1;
                tracing::warn!(error = %e, attempts, "Retriable transaction error; retrying.");
                std::thread::sleep(Duration::from_millis(100 * attempts));
            }
            Err(e) => return Err(classify(&e)),
        }
    }
}

/// Fields used for the content fingerprint (two subscriptions deliver one change twice).
#[derive(Deserialize)]
struct ContentFields {
    id: Option<serde_json::Value>,
    token: Option<serde_json::Value>,
    updated_at: Option<String>,
    created_at: Option<String>,
}

/// Fingerprints of an input: its delivery, and its content when the body names a resource and
/// a timestamp (topic + resource id + `updated_at`).
fn fingerprints(env: &ShopifyEnvelope) -> Vec<u64> {
    let mut prints = vec![fingerprint(&format!(
        "d:{}:{}",
        env.shop_domain, env.delivery_id
    ))];
    if env.topic.starts_with("tillstream/") {
        return prints;
    }
    if let Ok(f) = serde_json::from_slice::<ContentFields>(&env.body) {
        let id = f.id.or(f.token).filter(|v| !v.is_null());
        let at = f.updated_at.or(f.created_at);
        if let (Some(id), Some(at)) = (id, at) {
            prints.push(fingerprint(&format!(
                "c:{}:{}:{}:{}",
                env.shop_domain, env.topic, id, at
            )));
        }
    }
    prints
}

/// Whether `body` is a JSON object (without building it).
/// Errors of a metadata or watermark request that a later attempt can get past (leadership
/// moving, a broker restarting).
fn is_transient_metadata_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// The engine state shared between the poll loop and the rebalance callbacks (both run on the
/// engine thread, so the lock is never contended; it exists to satisfy the callback API).
pub struct Engine<R: Rules> {
    rules: Arc<R>,
    cfg: EngineConfig,
    topics: TopicsConfig,
    kafka: KafkaConfig,
    application_id: String,
    producer: Arc<ThreadedProducer<DefaultProducerContext>>,
    partitions: HashMap<i32, PartitionState>,
    /// Work since the last commit started (inputs, outputs, offsets): it belongs to the next
    /// transaction.
    in_txn: bool,
    /// Whether the producer has an open transaction for that work (false while the previous
    /// transaction is still committing: the work's records are held meanwhile).
    txn_open: bool,
    /// The previous transaction, committing on a helper thread (see [`Engine::start_commit`]).
    committing: Option<std::thread::JoinHandle<(Result<(), TxnFailure>, f64)>>,
    /// Records of the next transaction produced while the previous one commits.
    held: Vec<Held>,
    /// Whether a failed transaction rebuilds the state and rewinds the consumer (false while
    /// partitions are being revoked: their state is about to be dropped).
    rewind_on_abort: bool,
    txn_records: usize,
    txn_started: Instant,
    offsets: BTreeMap<(String, i32), i64>,
    metrics: Metrics,
    health: Arc<Health>,
    fatal: Option<EngineError>,
    clock: fn() -> i64,
    /// The late-data rule's settings, in milliseconds (from `cfg.timers`).
    watermark: WatermarkConfig,
    /// Erased subjects (GDPR): their inputs are dropped before the rules see them.
    erasures: Erasures,
    /// The product table and `[catalog]` (`None`: rules without products).
    catalog: Option<CatalogPart>,
}

/// The consumer context: routes rebalance callbacks into the engine and keeps the latest
/// per-partition lag from librdkafka's statistics.
pub struct EngineContext<R: Rules> {
    engine: Arc<Mutex<Engine<R>>>,
    lags: Mutex<HashMap<(String, i32), i64>>,
}

impl<R: Rules> ClientContext for EngineContext<R> {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lags = self
            .lags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lags.clear();
        for (topic, t) in statistics.topics {
            for (p, part) in t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket. The lag is the
                // last stable offset (what read_committed can reach) minus the position: the
                // next offset the application will see, else the committed offset, else the
                // start of the log. Negative offsets mean "not known yet".
                let end = if part.ls_offset >= 0 {
                    part.ls_offset
                } else {
                    part.hi_offset
                };
                let pos = [part.app_offset, part.committed_offset, part.lo_offset]
                    .into_iter()
                    .find(|o| *o >= 0);
                tracing::trace!(topic = %topic, p, end, app = part.app_offset, committed = part.committed_offset, lo = part.lo_offset, state = %part.fetch_state, "Partition statistics.");
                if let (true, Some(pos)) = (p >= 0 && end >= 0, pos) {
                    lags.insert((topic.clone(), p), (end - pos).max(0));
                }
            }
        }
    }
}

impl<R: Rules> EngineContext<R> {
    fn lags(&self) -> HashMap<(String, i32), i64> {
        self.lags.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Engine<R>> {
        // A poisoned lock means a panic on the engine thread; keep going with the data as is,
        // the engine will stop on its own fatal flag.
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<R: Rules> ConsumerContext for EngineContext<R> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut engine = self.lock();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if consumer.assignment_lost() {
                    // The session timed out (e.g. the broker was away): the group has moved
                    // on, so a commit would carry a stale generation and be rejected. Abort;
                    // whoever owns the partitions next redoes the uncommitted inputs.
                    tracing::warn!("Assignment lost; aborting the open transaction.");
                    engine.abort_quietly();
                } else {
                    // Finish the open transaction while this instance still belongs to the
                    // group generation, so its offsets are accepted; the new owner then starts
                    // exactly where this one stopped. The partitions' state is dropped next,
                    // so a failed commit aborts without rebuilding it.
                    engine.rewind_on_abort = false;
                    if let Err(e) = engine.commit(consumer) {
                        engine.fatal.get_or_insert(e);
                    }
                    engine.rewind_on_abort = true;
                }
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in revoked {
                    engine.partitions.remove(&p);
                }
                engine.health.set_ready(false, "rebalancing");
                engine.update_gauges();
            }
            Rebalance::Error(e) => {
                tracing::error!(error = %e, "Rebalance error; aborting the open transaction.");
                engine.abort_quietly();
                engine.partitions.clear();
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut engine = self.lock();
            let raw = engine.topics.raw.clone();
            let mut assigned: Vec<i32> = tpl
                .elements()
                .iter()
                .filter(|e| e.topic() == raw)
                .map(|e| e.partition())
                .collect();
            assigned.sort_unstable();
            match engine.restore_all(&assigned) {
                Ok(states) => engine.partitions.extend(states),
                Err(e) => {
                    engine.fatal.get_or_insert(e);
                    return;
                }
            }
            // Erasure: markers other instances wrote before this assignment; and the products.
            if let Err(e) = engine
                .reload_erasures()
                .and_then(|()| engine.reload_catalog())
            {
                engine.fatal.get_or_insert(e);
                return;
            }
            engine.update_gauges();
            let owned = engine.partitions.len();
            engine.health.set_ready(true, "");
            tracing::info!(partitions = owned, "Partitions assigned and restored.");
        }
    }
}

impl<R: Rules> Engine<R> {
    fn ensure_txn(&mut self) -> Result<(), EngineError> {
        if self.in_txn {
            return Ok(());
        }
        self.in_txn = true;
        self.txn_records = 0;
        self.txn_started = Instant::now();
        if self.committing.is_none() {
            self.begin()?;
        }
        Ok(())
    }

    /// Begins the producer transaction for the pending work and sends what was held for it.
    fn begin(&mut self) -> Result<(), EngineError> {
        self.producer
            .begin_transaction()
            .map_err(|e| EngineError::Fatal(format!("begin_transaction: {e}")))?;
        self.txn_open = true;
        for h in std::mem::take(&mut self.held) {
            self.produce(
                &h.topic,
                &h.key,
                h.partition,
                h.payload.as_deref(),
                h.headers,
            )?;
        }
        Ok(())
    }

    /// Queues a record in the open transaction, or holds it while the previous transaction
    /// commits.
    fn send(
        &mut self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        self.send_to(topic, key, None, payload, headers)
    }

    /// Like [`Self::send`], to an explicit partition (`None`: by key).
    fn send_to(
        &mut self,
        topic: &str,
        key: &str,
        partition: Option<i32>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        if self.txn_open {
            return self.produce(topic, key, partition, payload, headers);
        }
        self.held.push(Held {
            topic: topic.to_owned(),
            key: key.to_owned(),
            partition,
            payload: payload.map(<[u8]>::to_vec),
            headers,
        });
        Ok(())
    }

    /// Queues a record in the open transaction, waiting while the local queue is full.
    fn produce(
        &self,
        topic: &str,
        key: &str,
        partition: Option<i32>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(key);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // The background thread drains the queue; back off briefly.
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        kind: &str,
        message: &str,
    ) -> Result<(), EngineError> {
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            kind,
            error = message,
            "Dead-lettering a record."
        );
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tillstream.error.kind",
                value: Some(kind),
            })
            .insert(Header {
                key: "tillstream.error.message",
                value: Some(message),
            })
            .insert(Header {
                key: "tillstream.source.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "tillstream.source.partition",
                value: Some(&msg.partition().to_string()),
            })
            .insert(Header {
                key: "tillstream.source.offset",
                value: Some(&msg.offset().to_string()),
            });
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let dlq = self.topics.processor_dlq.clone();
        self.send(&dlq, &key, msg.payload(), Some(headers))?;
        self.metrics.dead_letters.with_label_values(&[kind]).inc();
        Ok(())
    }

    /// Processes one consumed record inside the open transaction.
    fn on_message(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), EngineError> {
        let p = msg.partition();
        if !self.partitions.contains_key(&p) {
            // Fetched just before a revoke: not ours any more; the new owner reads it.
            return Ok(());
        }
        self.ensure_txn()?;
        self.offsets
            .insert((msg.topic().to_owned(), p), msg.offset() + 1);
        self.txn_records += 1;
        let source = if msg.topic() == self.topics.raw {
            "raw"
        } else {
            "repartition"
        };
        self.metrics.events.with_label_values(&[source]).inc();

        let env = match ShopifyEnvelope::decode(msg.payload().unwrap_or_default()) {
            Ok(env) => env,
            Err(e) => return self.dead_letter(msg, "undecodable_envelope", &e.to_string()),
        };
        if env.is_heartbeat() {
            if source == "raw" {
                self.on_heartbeat(p, &env);
            }
            return Ok(());
        }
        if env.topic == PROGRESS_TOPIC {
            return self.on_announcement(p, &env);
        }
        let key = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| CustomerKey::parse(k).ok())
            .or_else(|| CustomerKey::parse(&env.routing_key).ok());
        let Some(key) = key else {
            return self.dead_letter(msg, "bad_key", "record key is not a tillstream key");
        };
        let event_time = env.triggered_at_ms.unwrap_or(env.received_at_ms);
        let wall = (self.clock)();

        let Some(mut state) = self.partitions.remove(&p) else {
            return Ok(());
        };
        state.stream_time_ms = state.stream_time_ms.max(event_time);
        if source == "raw"
            && state
                .clock
                .on_input(event_time, env.received_at_ms, &self.watermark)
        {
            self.metrics.late_arrivals.inc();
        }
        let result = self
            .fire_due_timers(&mut state, wall)
            .and_then(|()| self.apply_input(&mut state, msg, &key, &env, event_time, wall));
        self.partitions.insert(p, state);
        result
    }

    fn apply_input(
        &mut self,
        state: &mut PartitionState,
        msg: &BorrowedMessage<'_>,
        key: &CustomerKey,
        env: &ShopifyEnvelope,
        event_time: i64,
        wall: i64,
    ) -> Result<(), EngineError> {
        if env.topic != SHOP_PURGE && self.erasures.covers(key, event_time) {
            // Erasure is final (crate::erasure): checked before the dedup window, which would
            // otherwise create an entry for the erased key.
            self.metrics.erased_inputs.inc();
            return Ok(());
        }
        let window = i64::try_from(self.cfg.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let prints = fingerprints(env);
        if state.seen_before(
            key.as_str(),
            &prints,
            event_time,
            window,
            self.cfg.dedup_max_per_key,
        ) {
            self.metrics.dedup_hits.inc();
            return Ok(());
        }
        if env.topic == SHOP_PURGE {
            let at = serde_json::from_slice::<serde_json::Value>(&env.body)
                .ok()
                .and_then(|b| b["erased_at_ms"].as_i64())
                .unwrap_or(state.stream_time_ms);
            self.erasures.note_shop(&env.shop_domain, at);
            let prefix = format!("{}/", env.shop_domain);
            let doomed = state.keys_with_prefix(&prefix);
            tracing::info!(shop = %env.shop_domain, keys = doomed.len(), "Purging a shop's state on this partition (shop/redact).");
            for k in doomed {
                state.purge(&k);
            }
            return Ok(());
        }
        if key.kind() == KeyKind::Shop
            && !env.topic.starts_with("tillstream/")
            && !is_json_object(&env.body)
        {
            // The routing rule sends bodies that are not JSON objects to the shop key; no rule
            // can read them, so they go to the dead-letter topic with the reason.
            state.forget(key.as_str(), &prints);
            return self.dead_letter(msg, "unparseable_body", "body is not a JSON object");
        }
        if key.kind() == KeyKind::Product && rules::catalog::is_product_topic(&env.topic) {
            self.on_product(msg, key, env, event_time)?;
        }
        state.mark_dirty(key.as_str());
        let ctx = Ctx {
            now_ms: state.now(wall),
            event_time_ms: event_time,
            wall_clock_ms: wall,
        };
        let mut aggregate: R::State = state.aggregate(key.as_str());
        match self.rules.on_event(key, &mut aggregate, env, &ctx) {
            Ok(effects) => {
                state.set_aggregate(key.as_str(), &aggregate, event_time);
                let shop = &env.shop_domain;
                self.apply_effects(state, key, shop, &env.delivery_id, event_time, effects)
            }
            // The stored aggregate is untouched: a failed rule changes nothing. Forget the
            // fingerprints too, so the record can be redriven from the dead-letter topic once
            // the cause is fixed (otherwise the redrive would be dropped as a duplicate).
            Err(e) => {
                state.forget(key.as_str(), &prints);
                self.dead_letter(msg, "rule_error", &e.to_string())
            }
        }
    }

    fn broadcast_shop_purge(
        &mut self,
        key: &CustomerKey,
        shop: &str,
        source_delivery: &str,
        erased_at_ms: i64,
    ) -> Result<(), EngineError> {
        let topic = self.topics.repartition.clone();
        for p in 0..self.topics.partitions {
            let env = ShopifyEnvelope {
                delivery_id: format!("{source_delivery}:shop-purge:{p}"),
                event_id: None,
                topic: SHOP_PURGE.into(),
                shop_domain: shop.to_owned(),
                api_version: None,
                triggered_at_ms: None,
                received_at_ms: 0,
                routing_key: key.as_str().to_owned(),
                source: schemas::EventSource::Webhook,
                webhook_name: None,
                body: serde_json::json!({ "erased_at_ms": erased_at_ms })
                    .to_string()
                    .into_bytes(),
            };
            let bytes = env
                .encode()
                .map_err(|e| EngineError::Fatal(format!("cannot encode a purge: {e}")))?;
            // Through `send_to`, so a purge produced while the previous transaction commits
            // is held for the next one like every other record.
            self.send_to(&topic, key.as_str(), Some(p), Some(&bytes), None)?;
        }
        Ok(())
    }

    fn apply_effects(
        &mut self,
        state: &mut PartitionState,
        key: &CustomerKey,
        shop: &str,
        source_delivery: &str,
        at_ms: i64,
        effects: Vec<Effect>,
    ) -> Result<(), EngineError> {
        let mut purge = false;
        for effect in effects {
            match effect {
                Effect::Command(mut cmd) => {
                    self.enrich(&mut cmd);
                    let bytes = cmd
                        .encode()
                        .map_err(|e| EngineError::Fatal(format!("cannot encode a command: {e}")))?;
                    let kind = match &cmd.action {
                        Action::TrackEvent { event_name, .. } => event_name.as_str(),
                        other => other.kind(),
                    };
                    self.metrics.commands.with_label_values(&[kind]).inc();
                    let topic = self.topics.commands.clone();
                    self.send(&topic, &cmd.customer_key, Some(&bytes), None)?;
                }
                Effect::SetTimer(t) => state.set_timer(key.as_str(), t),
                Effect::CancelTimer { timer_id } => state.cancel_timer(key.as_str(), &timer_id),
                Effect::Forward { to, envelope } => {
                    let mut env = *envelope;
                    env.routing_key = to.as_str().to_owned();
                    let bytes = env
                        .encode()
                        .map_err(|e| EngineError::Fatal(format!("cannot encode a forward: {e}")))?;
                    let topic = self.topics.repartition.clone();
                    self.send(&topic, to.as_str(), Some(&bytes), None)?;
                }
                Effect::DataReport(report) => {
                    let topic = self.topics.data_requests.clone();
                    self.send(
                        &topic,
                        key.as_str(),
                        Some(report.to_string().as_bytes()),
                        None,
                    )?;
                }
                Effect::Purge => purge = true,
            }
        }
        if purge && key.kind() == KeyKind::Shop {
            // shop/redact: every key of the shop, on every partition, must go. The shop key
            // lives on one partition, so tell all of them through the repartition topic.
            self.record_erasure(key, at_ms)?;
            self.broadcast_shop_purge(key, shop, source_delivery, at_ms)?;
            state.purge(key.as_str());
        } else if purge {
            self.record_erasure(key, at_ms)?;
            state.purge(key.as_str());
        } else {
            state.mark_dirty(key.as_str());
        }
        Ok(())
    }

    /// Marks `key` erased at `at_ms` (GDPR): in memory now, and in the erasures topic within
    /// this transaction, so the marker commits exactly when the purge does.
    fn record_erasure(&mut self, key: &CustomerKey, at_ms: i64) -> Result<(), EngineError> {
        if let Some(marker) = self.erasures.erase(key, at_ms) {
            let topic = self.topics.erasures.clone();
            self.send(&topic, &marker.key, Some(&marker.value), None)?;
            self.metrics.erasures.inc();
        }
        Ok(())
    }

    /// Replaces the in-memory erasure markers with the committed erasures topic.
    fn reload_erasures(&mut self) -> Result<(), EngineError> {
        Ok(self.erasures.reload(&self.kafka, &self.topics.erasures)?)
    }

    /// Fires every timer of the partition due at or before its "now", in due order.
    fn fire_due_timers(
        &mut self,
        state: &mut PartitionState,
        wall: i64,
    ) -> Result<(), EngineError> {
        let Some(now) = self.fire_limit(state, wall) else {
            return Ok(());
        };
        while let Some((key_text, timer)) = state.pop_due(now) {
            self.ensure_txn()?;
            self.metrics.timers_fired.inc();
            self.metrics
                .timer_fire_delay
                .observe((wall - timer.due_ms).max(0) as f64 / 1000.0);
            let Ok(key) = CustomerKey::parse(&key_text) else {
                continue;
            };
            state.mark_dirty(&key_text);
            let shop = key.shop().to_owned();
            let ctx = Ctx {
                now_ms: now,
                event_time_ms: timer.due_ms,
                wall_clock_ms: wall,
            };
            let mut aggregate: R::State = state.aggregate(&key_text);
            match self.rules.on_timer(&key, &mut aggregate, &timer, &ctx) {
                Ok(effects) => {
                    state.set_aggregate(&key_text, &aggregate, timer.due_ms);
                    let source = format!("timer-{}-{}", timer.timer_id, timer.due_ms);
                    self.apply_effects(state, &key, &shop, &source, timer.due_ms, effects)?;
                }
                Err(e) => self.timer_dead_letter(&key_text, &timer, &e.to_string())?,
            }
        }
        Ok(())
    }

    /// The latest due time allowed to fire on this partition now (`None`: nothing may).
    fn fire_limit(&self, state: &PartitionState, wall: i64) -> Option<i64> {
        match self.cfg.timers.clock {
            TimerClock::StreamTime => Some(state.now(wall)),
            TimerClock::Inputs => state.clock.horizon(&self.watermark).fire_up_to(),
        }
    }

    fn timer_dead_letter(
        &mut self,
        key: &str,
        timer: &Timer,
        message: &str,
    ) -> Result<(), EngineError> {
        tracing::warn!(key, timer = %timer.timer_id, error = message, "Timer rule failed; dead-lettering the timer.");
        let body = serde_json::json!({"timer_id": timer.timer_id, "kind": timer.kind, "due_ms": timer.due_ms, "payload": timer.payload});
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tillstream.error.kind",
                value: Some("timer_rule_error"),
            })
            .insert(Header {
                key: "tillstream.error.message",
                value: Some(message),
            });
        let dlq = self.topics.processor_dlq.clone();
        self.send(&dlq, key, Some(body.to_string().as_bytes()), Some(headers))?;
        self.metrics
            .dead_letters
            .with_label_values(&["timer_rule_error"])
            .inc();
        Ok(())
    }

    /// Between polls: refresh "caught up" from the consumer's positions and fire wall-clock
    /// timers of caught-up partitions (an idle partition still fires on time).
    fn on_idle(&mut self, consumer: &BaseConsumer<EngineContext<R>>) -> Result<(), EngineError> {
        let wall = (self.clock)();
        // Lag comes from librdkafka's statistics (read_committed aware: measured against the
        // last stable offset), refreshed every statistics interval.
        let lags = consumer.context().lags();
        tracing::trace!(?lags, "Partition lags.");
        let mut lag_by_partition: HashMap<i32, i64> = HashMap::new();
        for ((topic, p), lag) in &lags {
            if !self.partitions.contains_key(p) {
                continue;
            }
            *lag_by_partition.entry(*p).or_default() += *lag;
            let source = if *topic == self.topics.raw {
                "raw"
            } else {
                "repartition"
            };
            self.metrics
                .lag
                .with_label_values(&[source, &p.to_string()])
                .set(*lag);
        }
        for (p, state) in &mut self.partitions {
            if let Some(lag) = lag_by_partition.get(p) {
                // Both topics contribute; a transaction's commit marker can leave one unread
                // offset per topic, which `caught_up_lag` absorbs.
                state.caught_up = *lag <= self.cfg.caught_up_lag;
            }
        }
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        for p in owned {
            let Some(mut state) = self.partitions.remove(&p) else {
                continue;
            };
            let due = match self.cfg.timers.clock {
                TimerClock::StreamTime => {
                    state.caught_up && state.next_due().is_some_and(|due| due <= state.now(wall))
                }
                TimerClock::Inputs => state
                    .next_due()
                    .zip(self.fire_limit(&state, wall))
                    .is_some_and(|(due, limit)| due <= limit),
            };
            // A rate-limited announcement must still go out when traffic stops.
            let announce = state.clock.unannounced
                && state
                    .clock
                    .announced_at
                    .is_none_or(|t| t.elapsed() >= self.cfg.timers.announce_interval);
            let result = if due {
                self.fire_due_timers(&mut state, wall)
            } else if announce {
                self.ensure_txn()
            } else {
                Ok(())
            };
            self.partitions.insert(p, state);
            result?;
        }
        Ok(())
    }

    fn should_commit(&self) -> bool {
        self.in_txn
            && self.committing.is_none()
            && (self.txn_records >= self.cfg.commit_max_records
                || self.txn_started.elapsed() >= self.cfg.commit_interval)
    }

    /// Commits everything pending and waits for it (revocation, shutdown).
    fn commit(&mut self, consumer: &BaseConsumer<EngineContext<R>>) -> Result<(), EngineError> {
        self.settle_commit(consumer, true)?;
        if !self.in_txn {
            return Ok(());
        }
        self.start_commit(consumer)?;
        self.settle_commit(consumer, true)
    }

    /// Writes dirty state and the consumed offsets into the open transaction, then commits it
    /// on a helper thread.
    ///
    /// The commit (flush, `AddOffsetsToTxn`, `TxnOffsetCommit`, `EndTxn`) is several broker
    /// round trips during which the loop would otherwise stand still; instead it goes on
    /// consuming and running the rules, holding the next transaction's records in memory until
    /// this commit ends ([`Engine::settle_commit`] then begins the next transaction and sends
    /// them). Exactly-once is unaffected: nothing of the next transaction reaches Kafka before
    /// this one is committed, and if this commit fails the held work is dropped with the state
    /// it produced and redone from the last committed offsets.
    fn start_commit(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
    ) -> Result<(), EngineError> {
        if !self.txn_open {
            self.begin()?;
        }
        if let Err(e) = self.publish_clocks() {
            tracing::warn!(error = %e, "Could not announce progress; aborting.");
            return self.abort_after_failure(consumer);
        }
        let changelog = self.topics.changelog.clone();
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for state in self.partitions.values_mut() {
            for (key, record) in state.drain_changes() {
                let bytes = match record {
                    None => None,
                    Some(r) => Some(
                        r.encode()
                            .map_err(|e| EngineError::Fatal(format!("cannot encode state: {e}")))?,
                    ),
                };
                writes.push((key, bytes));
            }
        }
        let mut sent = Ok(());
        for (key, bytes) in &writes {
            sent = self.produce(&changelog, key, None, bytes.as_deref(), None);
            if sent.is_err() {
                break;
            }
        }
        let offsets = std::mem::take(&mut self.offsets);
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), offset) in &offsets {
            if sent.is_ok() {
                sent = tpl
                    .add_partition_offset(topic, *p, Offset::Offset(*offset))
                    .map_err(EngineError::Kafka);
            }
        }
        let meta = if offsets.is_empty() {
            None
        } else {
            match consumer.group_metadata() {
                Some(m) => Some(m),
                None if sent.is_ok() => {
                    sent = Err(EngineError::Fatal("no consumer group metadata".into()));
                    None
                }
                None => None,
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "Could not complete the transaction; aborting.");
            return self.abort_after_failure(consumer);
        }
        let producer = Arc::clone(&self.producer);
        self.in_txn = false;
        self.txn_open = false;
        let spawned = std::thread::Builder::new()
            .name("txn-commit".into())
            .spawn(move || {
                let started = Instant::now();
                let result = (|| {
                    if let Some(meta) = &meta {
                        with_retries(|| {
                            producer.send_offsets_to_transaction(&tpl, meta, KAFKA_TIMEOUT)
                        })?;
                    }
                    with_retries(|| producer.commit_transaction(KAFKA_TIMEOUT))
                })();
                (result, started.elapsed().as_secs_f64())
            });
        match spawned {
            Ok(handle) => {
                self.committing = Some(handle);
                Ok(())
            }
            Err(e) => Err(EngineError::Fatal(format!(
                "cannot start the commit thread: {e}"
            ))),
        }
    }

    /// Takes the result of the commit in flight (waiting for it when `wait`, else only if it
    /// has ended). On success the next transaction begins with the held records; an abortable
    /// failure aborts and rewinds; a fatal one ends the engine.
    fn settle_commit(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
        wait: bool,
    ) -> Result<(), EngineError> {
        let Some(handle) = self.committing.take_if(|h| wait || h.is_finished()) else {
            return Ok(());
        };
        let (result, secs) = handle
            .join()
            .unwrap_or_else(|_| (Err(TxnFailure::Fatal("commit thread panicked".into())), 0.0));
        match result {
            Ok(()) => {
                self.metrics
                    .transactions
                    .with_label_values(&["commit"])
                    .inc();
                self.metrics.commit_seconds.observe(secs);
                self.update_gauges();
                if self.in_txn {
                    self.begin()?;
                }
                Ok(())
            }
            Err(TxnFailure::Fatal(m)) => Err(EngineError::Fatal(m)),
            Err(TxnFailure::Abort(m)) => {
                tracing::warn!(error = %m, "Transaction failed; aborting.");
                // The failed transaction is still open in the producer: abort it.
                self.txn_open = true;
                self.abort_after_failure(consumer)
            }
        }
    }

    /// After a failed transaction: abort and rewind to the last commit, or (while partitions
    /// are being revoked) only abort.
    fn abort_after_failure(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
    ) -> Result<(), EngineError> {
        if self.rewind_on_abort {
            self.abort_and_rewind(consumer)
        } else {
            self.abort_quietly();
            Ok(())
        }
    }

    fn abort_quietly(&mut self) {
        if let Some(handle) = self.committing.take()
            && let Ok((Err(TxnFailure::Abort(_) | TxnFailure::Fatal(_)), _)) = handle.join()
        {
            self.txn_open = true;
        }
        if self.txn_open {
            if let Err(e) = self.producer.abort_transaction(KAFKA_TIMEOUT) {
                tracing::error!(error = %e, "Abort failed.");
            }
            self.metrics
                .transactions
                .with_label_values(&["abort"])
                .inc();
        }
        self.txn_open = false;
        self.in_txn = false;
        self.held.clear();
        self.offsets.clear();
    }

    /// Aborts the open transaction, rebuilds every owned partition's state from the committed
    /// changelog and seeks the consumer back to the committed offsets: the engine then redoes
    /// the aborted work from exactly the state it was based on.
    fn abort_and_rewind(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
    ) -> Result<(), EngineError> {
        if let Some(handle) = self.committing.take()
            && let Ok((Err(_), _)) = handle.join()
        {
            self.txn_open = true;
        }
        if self.txn_open
            && let Err(e) = self.producer.abort_transaction(KAFKA_TIMEOUT)
        {
            // An abort that fails leaves the producer unusable: restart the instance.
            return Err(match classify(&e) {
                TxnFailure::Fatal(m) => EngineError::Fatal(m),
                TxnFailure::Abort(m) => EngineError::Fatal(format!("abort failed: {m}")),
            });
        }
        self.metrics
            .transactions
            .with_label_values(&["abort"])
            .inc();
        self.txn_open = false;
        self.in_txn = false;
        self.held.clear();
        self.offsets.clear();
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        let states = self.restore_all(&owned)?;
        self.partitions.extend(states);
        // Erasure: forget markers of the aborted work, as the state just did; products too.
        self.reload_erasures()?;
        self.reload_catalog()?;
        let assignment = consumer.assignment()?;
        let committed = consumer.committed_offsets(assignment, KAFKA_TIMEOUT)?;
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            consumer.seek(e.topic(), e.partition(), offset, KAFKA_TIMEOUT)?;
        }
        self.update_gauges();
        Ok(())
    }

    /// Restores several partitions concurrently: each reads its own changelog partition, so
    /// decoding overlaps with the broker's reads (restore time is what a rebalance costs).
    fn restore_all(&self, partitions: &[i32]) -> Result<Vec<(i32, PartitionState)>, EngineError> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = partitions
                .iter()
                .map(|p| (*p, scope.spawn(move || self.restore(*p))))
                .collect();
            handles
                .into_iter()
                .map(|(p, h)| match h.join() {
                    Ok(state) => state.map(|s| (p, s)),
                    Err(_) => Err(EngineError::Restore {
                        partition: p,
                        message: "restore thread panicked".into(),
                    }),
                })
                .collect()
        })
    }

    /// Reads a changelog partition from the beginning to its end (read_committed: only state
    /// of committed transactions) into a fresh partition state.
    fn restore(&self, p: i32) -> Result<PartitionState, EngineError> {
        let started = Instant::now();
        let changelog = &self.topics.changelog;
        let fail = |message: String| EngineError::Restore {
            partition: p,
            message,
        };
        let mut cfg = self
            .kafka
            .client(&format!("{}-restore", self.application_id));
        cfg.set("group.id", format!("{}-restore", self.application_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            // The default prefetch (64 MiB per partition) would stay resident after the restore
            // (freed, but not returned to the OS); 2 MiB keeps the broker busy enough (one
            // partition per reader, 1 MiB fetches) at a few bytes per restored key.
            .set("queued.max.messages.kbytes", "2048");
        let reader: BaseConsumer<RestoreContext> = cfg.create_with_context(RestoreContext)?;
        // Leadership of a partition can move under a rebalance or a broker restart; a restore
        // must not end the instance over a metadata answer that the next attempt gets right.
        let mut attempts = 0;
        let (low, high) = loop {
            match reader.fetch_watermarks(changelog, p, KAFKA_TIMEOUT) {
                Ok(w) => break w,
                Err(e) if attempts < 10 && is_transient_metadata_error(&e) => {
                    attempts += 1;
                    tracing::info!(partition = p, error = %e, "Changelog watermarks not available yet; retrying.");
                    std::thread::sleep(Duration::from_millis(200 * attempts));
                }
                Err(e) => return Err(e.into()),
            }
        };
        // The changelog's record count bounds its keys (compaction keeps about one record per
        // key); sizing for it up front avoids growing the tables during the restore. Capped so
        // a changelog not yet compacted cannot reserve far more than it will hold.
        let records = usize::try_from(high.saturating_sub(low)).unwrap_or(0);
        let mut state = PartitionState::with_capacity(records.min(1 << 22));
        state.clock = PartitionClock::new(self.topics.partitions);
        if high > low {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(changelog, p, Offset::Beginning)?;
            reader.assign(&tpl)?;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                match reader.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        let key = m
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .ok_or_else(|| fail("record without key".into()))?;
                        let record = match m.payload() {
                            None => None,
                            Some(bytes) => Some(
                                schemas::KeyStateRecord::decode(bytes)
                                    .map_err(|e| fail(format!("{key}: {e}")))?,
                            ),
                        };
                        if key.starts_with(CLOCK_KEY_PREFIX) {
                            if let Some(r) = record {
                                state.clock = self.restored_clock(&r.aggregate_json);
                            }
                            continue;
                        }
                        state.load(&key, record).map_err(|e| fail(e.to_string()))?;
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    // A broker of the cluster going away mid-restore: librdkafka reconnects
                    // or fails over to the new leader; keep reading until the deadline.
                    Some(Err(e)) if is_transient_metadata_error(&e) => {
                        tracing::info!(partition = p, error = %e, "Changelog read interrupted; retrying.");
                    }
                    Some(Err(e)) => return Err(fail(e.to_string())),
                    None if Instant::now() > deadline => {
                        return Err(fail("timed out reading the changelog".into()));
                    }
                    None => {}
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        self.metrics.restore_seconds.observe(secs);
        tracing::info!(
            partition = p,
            keys = state.len(),
            seconds = secs,
            "Restored partition state."
        );
        Ok(state)
    }

    fn update_gauges(&self) {
        let keys: usize = self.partitions.values().map(PartitionState::len).sum();
        let timers: usize = self
            .partitions
            .values()
            .map(PartitionState::timers_pending)
            .sum();
        self.metrics
            .keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.metrics
            .timers_pending
            .set(i64::try_from(timers).unwrap_or(i64::MAX));
        if self.cfg.timers.clock == TimerClock::Inputs {
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
            self.metrics
                .timers_deferred
                .set(i64::try_from(deferred).unwrap_or(i64::MAX));
        }
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

/// Context of the restore reader: end-of-partition is how it knows it is done, not an error.
struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports the end of a partition through the error callback too, as a
        // global error code (not as `KafkaError::PartitionEOF`); the poll loop handles it.
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, reason, "Changelog reader error.");
        }
    }
}

impl ConsumerContext for RestoreContext {}

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

/// Runs the engine on the current (blocking) thread until shutdown or a fatal error.
pub fn run_engine<R: Rules>(parts: EngineParts<R>) -> Result<(), EngineError> {
    let mut producer_cfg = parts
        .kafka
        .transactional_producer(&parts.client_id, &parts.transactional_id);
    producer_cfg.set(
        "transaction.timeout.ms",
        parts.cfg.transaction_timeout.as_millis().to_string(),
    );
    let producer: ThreadedProducer<DefaultProducerContext> = producer_cfg.create()?;
    // Fences any older producer with this transactional id and aborts its open transaction.
    producer
        .init_transactions(KAFKA_TIMEOUT)
        .map_err(|e| EngineError::Fatal(format!("init_transactions: {e}")))?;

    let engine = Arc::new(Mutex::new(Engine {
        rules: Arc::new(parts.rules),
        cfg: parts.cfg.clone(),
        topics: parts.topics.clone(),
        kafka: parts.kafka.clone(),
        application_id: parts.application_id.clone(),
        producer: Arc::new(producer),
        txn_open: false,
        committing: None,
        held: Vec::new(),
        rewind_on_abort: true,
        partitions: HashMap::new(),
        in_txn: false,
        txn_records: 0,
        txn_started: Instant::now(),
        offsets: BTreeMap::new(),
        metrics: parts.metrics,
        health: parts.health.clone(),
        fatal: None,
        clock: runtime::now_ms,
        watermark: parts.cfg.timers.watermark(),
        erasures: Erasures::new(&parts.erasure.hash_key),
        catalog: parts.catalog,
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
            (parts.cfg.session_timeout.as_millis() / 4)
                .max(100)
                .to_string(),
        )
        .set("max.poll.interval.ms", "600000")
        .set("statistics.interval.ms", "500");
    let consumer: BaseConsumer<EngineContext<R>> =
        consumer_cfg.create_with_context(EngineContext {
            engine: engine.clone(),
            lags: Mutex::new(HashMap::new()),
        })?;
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
            let result = e.commit(&consumer);
            e.health.set_ready(false, "shutting down");
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
        e.settle_commit(&consumer, false)?;
        match polled {
            Some(Ok(msg)) => e.on_message(&msg)?,
            Some(Err(error)) => tracing::warn!(%error, "Consumer error."),
            None => {}
        }
        if e.committing.is_some() && e.txn_records >= e.cfg.commit_max_records {
            // A full transaction is waiting for the previous commit: bound what is held.
            e.settle_commit(&consumer, true)?;
        }
        if idle || last_idle.elapsed() >= Duration::from_millis(200) {
            e.on_idle(&consumer)?;
            last_idle = Instant::now();
        }
        if e.should_commit() {
            e.start_commit(&consumer)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(topic: &str, delivery: &str, body: &str) -> ShopifyEnvelope {
        ShopifyEnvelope {
            delivery_id: delivery.into(),
            event_id: None,
            topic: topic.into(),
            shop_domain: "s.myshopify.com".into(),
            api_version: None,
            triggered_at_ms: Some(1),
            received_at_ms: 1,
            routing_key: "s.myshopify.com/c/1".into(),
            source: schemas::EventSource::Webhook,
            webhook_name: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn content_fingerprint_ignores_the_delivery_id() {
        let body = r#"{"id":5,"updated_at":"2026-01-01T00:00:00-05:00"}"#;
        let a = fingerprints(&env("orders/updated", "d1", body));
        let b = fingerprints(&env("orders/updated", "d2", body));
        assert_ne!(a[0], b[0], "different deliveries");
        assert_eq!(a[1], b[1], "same content");
        let c = fingerprints(&env("orders/paid", "d2", body));
        assert_ne!(a[1], c[1], "another topic is another change");
        assert_eq!(fingerprints(&env("orders/paid", "d3", "not json")).len(), 1);
        assert_eq!(
            fingerprints(&env("tillstream/order-link", "d4", body)).len(),
            1
        );
    }
}
