//! Several engine threads in one instance (`engine.threads`): each is a full engine with its own
//! consumer (a member of the same group) and its own transactional producer, so it owns a
//! disjoint set of partitions exactly as a separate instance would.
//!
//! Exactly-once v2 (`send_offsets_to_transaction` with the consumer's group metadata, KIP-447)
//! lets any producer commit any partition's offsets, so the threads need no partition-to-id
//! mapping: thread *i* uses `{transactional_id}-t{i}` (thread 0 the instance's own id, so one
//! thread is the previous engine exactly). A restarted instance with the same id and thread
//! count fences every thread of its predecessor. What the threads share: the rules, the metrics
//! (gauges summed over threads), readiness (ready once every thread is) and the customer query,
//! routed to the thread that owns the key's partition.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rules::Rules;
use runtime::{Health, KafkaConfig};

use super::{CatalogPart, EngineError, EngineParts, Query, QueryAnswer, ThreadParts, run_thread};
use crate::metrics::Metrics;
use crate::partitioner::partition_for;
use crate::state::PartitionState;

/// What the engine threads of one instance share.
pub(super) struct Shared {
    health: Arc<Health>,
    metrics: Metrics,
    threads: Mutex<Vec<ThreadShare>>,
    /// Partition → the thread that owns it.
    owners: Mutex<HashMap<i32, usize>>,
    /// Partition states given up at a revocation, committed: the partition's next owner in
    /// this instance (any thread, the same one included) takes one instead of restoring it
    /// from the changelog, when the changelog still ends where it ended then.
    handoffs: Mutex<HashMap<i32, Handoff>>,
}

/// A revoked partition's committed state, left for its next owner in this instance.
struct Handoff {
    state: PartitionState,
    /// The changelog partition's stable end after the revocation's commit.
    changelog_end: i64,
    at: Instant,
}

/// What one thread contributes to the instance's readiness and gauges.
#[derive(Clone)]
struct ThreadShare {
    ready: bool,
    /// Why it is not ready (shown by `/readyz`).
    reason: String,
    /// Keys, timers pending, timers deferred.
    gauges: [i64; 3],
}

/// One engine thread's handle on [`Shared`].
#[derive(Clone)]
pub(super) struct Slot {
    index: usize,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(health: Arc<Health>, metrics: Metrics, threads: usize) -> Arc<Self> {
        Arc::new(Self {
            health,
            metrics,
            threads: Mutex::new(vec![
                ThreadShare {
                    ready: false,
                    reason: "starting".into(),
                    gauges: [0; 3],
                };
                threads
            ]),
            owners: Mutex::new(HashMap::new()),
            handoffs: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn slot(self: &Arc<Self>, index: usize) -> Slot {
        Slot {
            index,
            shared: Arc::clone(self),
        }
    }

    fn owner(&self, partition: i32) -> Option<usize> {
        lock(&self.owners).get(&partition).copied()
    }
}

impl Slot {
    /// This thread's readiness; the instance is ready once every thread is, and otherwise
    /// shows the first waiting thread's reason.
    pub(super) fn set_ready(&self, ready: bool, reason: &str) {
        let mut threads = lock(&self.shared.threads);
        if let Some(t) = threads.get_mut(self.index) {
            t.ready = ready;
            reason.clone_into(&mut t.reason);
        }
        let waiting = threads.iter().enumerate().find(|(_, t)| !t.ready);
        match waiting {
            None => self.shared.health.set_ready(true, ""),
            Some((_, t)) if threads.len() == 1 => self.shared.health.set_ready(false, &t.reason),
            Some((i, t)) => self
                .shared
                .health
                .set_ready(false, &format!("engine thread {i}: {}", t.reason)),
        }
    }

    /// This thread's gauges (`deferred`: only with the inputs clock); the metrics show the sum
    /// over threads.
    pub(super) fn set_gauges(&self, keys: i64, timers: i64, deferred: Option<i64>) {
        let mut threads = lock(&self.shared.threads);
        if let Some(t) = threads.get_mut(self.index) {
            t.gauges = [keys, timers, deferred.unwrap_or(0)];
        }
        let sum = |i: usize| threads.iter().map(|t| t.gauges[i]).sum::<i64>();
        self.shared.metrics.keys.set(sum(0));
        self.shared.metrics.timers_pending.set(sum(1));
        if deferred.is_some() {
            self.shared.metrics.timers_deferred.set(sum(2));
        }
    }

    /// Leaves revoked partition `p`'s committed state for its next owner in this instance.
    pub(super) fn hand_off(&self, p: i32, state: PartitionState, changelog_end: i64) {
        let handoff = Handoff {
            state,
            changelog_end,
            at: Instant::now(),
        };
        lock(&self.shared.handoffs).insert(p, handoff);
    }

    /// Partition `p`'s state as a revocation left it, if the changelog (stable end
    /// `changelog_end`) has not moved since: nobody else wrote the partition's state in
    /// between, so it is exactly what a restore would read.
    pub(super) fn take_handoff(&self, p: i32, changelog_end: i64) -> Option<PartitionState> {
        let h = lock(&self.shared.handoffs).remove(&p)?;
        (h.changelog_end == changelog_end).then_some(h.state)
    }

    /// Drops handed-over states older than `ttl`: their partitions went to other instances.
    pub(super) fn expire_handoffs(&self, ttl: Duration) {
        let expired: Vec<(i32, Handoff)> = lock(&self.shared.handoffs)
            .extract_if(|_, h| h.at.elapsed() >= ttl)
            .collect();
        // Freed outside the lock: a partition's state can be large.
        drop(expired);
    }

    /// Partitions assigned to this thread (queries for their keys come here).
    pub(super) fn claim(&self, partitions: &[i32]) {
        let mut owners = lock(&self.shared.owners);
        for p in partitions {
            owners.insert(*p, self.index);
        }
    }

    /// Partitions this thread no longer owns (`None`: all of them).
    pub(super) fn release(&self, partitions: Option<&[i32]>) {
        let mut owners = lock(&self.shared.owners);
        match partitions {
            Some(ps) => {
                for p in ps {
                    if owners.get(p) == Some(&self.index) {
                        owners.remove(p);
                    }
                }
            }
            None => owners.retain(|_, t| *t != self.index),
        }
    }
}

/// How many engine threads `configured` means on this machine (0: automatic).
///
/// Automatic leaves one core to librdkafka's own threads (one per broker connection per
/// client, plus its main thread: they compress, decompress and frame every record) and the
/// commit helper threads, so with `n` cores it runs `n - 1` engines, at least one.
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// The transactional id of engine thread `index` (thread 0 keeps the instance's id).
pub(super) fn thread_transactional_id(base: &str, index: usize) -> String {
    if index == 0 {
        base.to_owned()
    } else {
        format!("{base}-t{index}")
    }
}

/// The Kafka settings of engine thread `index`: a static group member id must be unique per
/// consumer, so threads after the first get a suffix.
pub(super) fn thread_kafka(kafka: &KafkaConfig, index: usize) -> KafkaConfig {
    let mut k = kafka.clone();
    if index > 0
        && let Some(id) = k.group_instance_id.as_mut().filter(|id| !id.is_empty())
    {
        id.push_str(&format!("-t{index}"));
    }
    k
}

/// Runs `threads` engine threads until shutdown or the first fatal error (which stops the
/// others: the process exits and the orchestrator restarts it), routing queries meanwhile.
pub(super) fn run_threads<R: Rules>(
    parts: EngineParts<R>,
    threads: usize,
) -> Result<(), EngineError> {
    let shared = Shared::new(Arc::clone(&parts.health), parts.metrics.clone(), threads);
    let rules = Arc::new(parts.rules);
    // Cancelled on shutdown, and when one thread ends on its own (a fatal error).
    let stop = parts.shutdown.child_token();
    let mut senders: Vec<Sender<Query>> = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    let start = Arc::new(std::sync::Barrier::new(threads));
    for index in 0..threads {
        let (tx, rx) = std::sync::mpsc::channel();
        senders.push(tx);
        let thread = ThreadParts {
            rules: Arc::clone(&rules),
            cfg: parts.cfg.clone(),
            topics: parts.topics.clone(),
            kafka: thread_kafka(&parts.kafka, index),
            application_id: parts.application_id.clone(),
            transactional_id: thread_transactional_id(&parts.transactional_id, index),
            client_id: parts.client_id.clone(),
            metrics: parts.metrics.clone(),
            slot: shared.slot(index),
            queries: rx,
            shutdown: stop.clone(),
            erasure: parts.erasure.clone(),
            catalog: parts.catalog.as_ref().map(CatalogPart::for_thread),
            start: Some(Arc::clone(&start)),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("engine-{index}"))
            .spawn(move || run_thread(thread));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.cancel();
                // The started threads wait at the start barrier for this one and never join
                // the group; they are not joined (that would wait forever) but end with the
                // process, which exits on this error.
                drop(handles);
                return Err(EngineError::Fatal(format!(
                    "cannot start engine thread {index}: {e}"
                )));
            }
        }
    }
    route_queries(
        &parts.queries,
        parts.topics.partitions,
        &shared,
        &senders,
        &handles,
    );
    stop.cancel();
    join_all(handles)
}

/// Forwards each query to the thread owning its key's partition until a thread ends.
fn route_queries(
    queries: &Receiver<Query>,
    partitions: i32,
    shared: &Shared,
    senders: &[Sender<Query>],
    handles: &[std::thread::JoinHandle<Result<(), EngineError>>],
) {
    while !handles.iter().any(std::thread::JoinHandle::is_finished) {
        match queries.recv_timeout(Duration::from_millis(100)) {
            Ok(q) => {
                let partition = partition_for(&q.key, partitions);
                match shared.owner(partition).and_then(|t| senders.get(t)) {
                    Some(tx) => {
                        // A thread that has ended drops its receiver; the query's reply then
                        // drops too and the HTTP side answers with an error.
                        let _ = tx.send(q);
                    }
                    None => {
                        let _ = q.reply.send(QueryAnswer::NotOwned { partition });
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The HTTP server is gone (shutting down): only wait for the threads.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits for every thread; the first error wins.
fn join_all(
    handles: Vec<std::thread::JoinHandle<Result<(), EngineError>>>,
) -> Result<(), EngineError> {
    let mut result = Ok(());
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(EngineError::Fatal("engine thread panicked".into())));
        if let (Ok(()), Err(e)) = (&result, r) {
            result = Err(e);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::thread_count;

    #[test]
    fn automatic_leaves_a_core_to_librdkafka_and_runs_at_least_one() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(thread_count(0), cores.saturating_sub(1).max(1));
        assert_eq!(thread_count(3), 3, "a number is taken as it is");
    }

    #[test]
    fn the_shipped_default_is_automatic() {
        let c: crate::config::ProcessorConfig =
            runtime::load_defaults(include_str!("defaults.toml")).unwrap();
        assert_eq!(c.engine.threads, 0);
    }
}
