//! The dispatcher: per-user queues in Kafka order, path choice, batching, offsets and commits.
//!
//! One task owns all mutable state (user queues, open batches, counters); delivery tasks
//! report back through a channel. A user has at most one dispatch in flight: its next command
//! waits until the previous one is delivered or dead-lettered, so Iterable sees each user's
//! writes in Kafka order. Different users run in parallel.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use schemas::command::IterableCommand;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{self, BatchSize, Path};
use crate::config::PublisherConfig;
use crate::deliver::{Deliverer, Event, Item, JobMeta, Unit};
use crate::mapping::{self, Family};
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;

/// A record read from Kafka and decoded, waiting in its user's queue.
struct Job {
    generation: u64,
    meta: JobMeta,
    command: IterableCommand,
}

#[derive(Default)]
struct UserState {
    queue: VecDeque<Job>,
    busy: bool,
    /// Path last used per family (profile updates, custom events) and when: the pipelines
    /// Iterable may reorder across are per family, so the pin is too.
    pinned: [Option<(Path, Instant)>; 2],
}

struct OpenBatch {
    size: BatchSize,
    units: Vec<Unit>,
}

fn lock(offsets: &Mutex<OffsetTracker>) -> MutexGuard<'_, OffsetTracker> {
    // A panic while holding the lock cannot leave the tracker half-updated in a way that
    // matters more than stopping would; keep going with the data.
    offsets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Consumer callbacks: commit finished work of revoked partitions, start assigned ones
/// fresh, and export librdkafka's lag statistics.
pub(crate) struct PublisherContext {
    pub(crate) offsets: Arc<Mutex<OffsetTracker>>,
    pub(crate) topic: String,
    pub(crate) metrics: Metrics,
}

impl ClientContext for PublisherContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.committed_offset >= 0 && p.hi_offset >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[&partition.to_string()])
                        .set((p.hi_offset - p.committed_offset).max(0));
                }
            }
        }
    }
}

impl ConsumerContext for PublisherContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what is done before the partition moves, so the next owner redelivers
            // only the commands still in flight here.
            let mut commit = TopicPartitionList::new();
            {
                let mut offsets = lock(&self.offsets);
                for e in tpl.elements() {
                    if let Some(o) = offsets.revoke(e.partition()) {
                        let _ = commit.add_partition_offset(
                            e.topic(),
                            e.partition(),
                            Offset::Offset(o),
                        );
                    }
                }
            }
            if commit.count() > 0
                && let Err(error) = consumer.commit(&commit, CommitMode::Sync)
            {
                tracing::warn!(%error, "Cannot commit offsets of revoked partitions; they will be redelivered.");
            }
            tracing::info!(partitions = tpl.count(), "Partitions revoked.");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut offsets = lock(&self.offsets);
            for e in tpl.elements() {
                offsets.assign(e.partition());
            }
            tracing::info!(partitions = tpl.count(), "Partitions assigned.");
        }
    }
}

/// The dispatcher state.
pub(crate) struct Dispatcher {
    config: Arc<PublisherConfig>,
    deliverer: Arc<Deliverer>,
    offsets: Arc<Mutex<OffsetTracker>>,
    tasks: TaskTracker,
    users: HashMap<Arc<str>, UserState>,
    batches: [Option<OpenBatch>; 2],
    backlog: [usize; 2],
    pending: usize,
    draining: bool,
}

fn fi(f: Family) -> usize {
    match f {
        Family::Users => 0,
        Family::Events => 1,
    }
}

const FAMILIES: [Family; 2] = [Family::Users, Family::Events];

impl Dispatcher {
    pub(crate) fn new(
        config: Arc<PublisherConfig>,
        deliverer: Arc<Deliverer>,
        offsets: Arc<Mutex<OffsetTracker>>,
    ) -> Self {
        Self {
            config,
            deliverer,
            offsets,
            tasks: TaskTracker::new(),
            users: HashMap::new(),
            batches: [None, None],
            backlog: [0, 0],
            pending: 0,
            draining: false,
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// A record arrived from Kafka.
    pub(crate) fn accept(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let generation = lock(&self.offsets).track(partition, offset);
        self.pending += 1;
        self.deliverer
            .metrics
            .pending
            .set(i64::try_from(self.pending).unwrap_or(i64::MAX));
        let payload = payload.unwrap_or_default();
        let mut meta = JobMeta {
            partition,
            offset,
            event_time_ms: runtime::now_ms(),
            command_id: None,
            family: None,
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        };
        let command = match IterableCommand::decode(payload) {
            Ok(c) => c,
            Err(error) => {
                // Bad input never stops the pipeline: it goes to the dead-letter topic and its
                // offset completes once the dead letter is written.
                let reason = if payload.is_empty() {
                    "empty record value".to_owned()
                } else {
                    format!("cannot decode command: {error}")
                };
                let d = self.deliverer.clone();
                self.tasks
                    .spawn(d.dead_letter_unsent(meta, "undecodable", reason, None));
                return;
            }
        };
        meta.event_time_ms = command.event_time_ms;
        meta.command_id = Some(command.command_id.clone());
        meta.family = batch::family_of(&command.action);
        if let Some(f) = meta.family {
            self.backlog[fi(f)] += 1;
        }
        let user: Arc<str> = if command.customer_key.is_empty() {
            key.map_or_else(
                || Arc::from(command.command_id.as_str()),
                |k| Arc::from(String::from_utf8_lossy(k).as_ref()),
            )
        } else {
            Arc::from(command.customer_key.as_str())
        };
        let state = self.users.entry(user.clone()).or_default();
        state.queue.push_back(Job {
            generation,
            meta,
            command,
        });
        if !state.busy {
            self.dispatch(&user);
        }
    }

    fn forget_job(&mut self, meta: &JobMeta) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(f) = meta.family {
            self.backlog[fi(f)] = self.backlog[fi(f)].saturating_sub(1);
        }
    }

    /// Sends the user's next command(s) on their way, if the user is idle.
    fn dispatch(&mut self, user: &Arc<str>) {
        if self.draining {
            return;
        }
        let now = Instant::now();
        let project = self.config.iterable.project_type;
        let Some(state) = self.users.get_mut(user) else {
            return;
        };
        if state.busy {
            return;
        }
        // Drop commands of partitions this consumer no longer owns: the new owner redelivers them.
        let mut dropped = Vec::new();
        let head = loop {
            let Some(job) = state.queue.pop_front() else {
                break None;
            };
            if lock(&self.offsets).is_stale(job.meta.partition, job.generation) {
                dropped.push(job.meta);
                continue;
            }
            break Some(job);
        };
        let Some(head) = head else {
            for m in &dropped {
                self.forget_job(m);
            }
            return;
        };
        state.busy = true;
        let mapped = match mapping::map(&head.command, project) {
            Ok(m) => m,
            Err(error) => {
                let d = self.deliverer.clone();
                self.tasks.spawn(d.dead_letter_unsent(
                    head.meta,
                    "mapping",
                    error.to_string(),
                    Some(user.clone()),
                ));
                for m in &dropped {
                    self.forget_job(m);
                }
                return;
            }
        };
        let path = match mapped.family {
            Some(f) => batch::choose_path(
                &self.config.batching,
                state.pinned[fi(f)],
                now,
                self.backlog[fi(f)],
            ),
            None => Path::Single,
        };
        if let Some(f) = mapped.family {
            state.pinned[fi(f)] = Some((path, now));
        }
        let max = self.config.batching.max_coalesce;
        let mut items = vec![];
        let mut coalesced = 0u64;
        let mut head_item = item_from(head.meta, &mapped);
        // Coalesce consecutive profile updates of the same user into one request item.
        if mapped.family == Some(Family::Users)
            && matches!(
                head.command.action,
                schemas::command::Action::UpsertUser { .. }
            )
        {
            let mut merged_cmd = head.command.clone();
            let mut parts = vec![head_item.clone()];
            while parts.len() < max {
                let Some(next) = state.queue.front() else {
                    break;
                };
                if next.command.user != merged_cmd.user
                    || lock(&self.offsets).is_stale(next.meta.partition, next.generation)
                {
                    break;
                }
                let Some(action) =
                    batch::coalesce_upserts(&merged_cmd.action, &next.command.action)
                else {
                    break;
                };
                let Ok(next_mapped) = mapping::map(&next.command, project) else {
                    break;
                };
                let Some(next) = state.queue.pop_front() else {
                    break;
                };
                merged_cmd.action = action;
                parts.push(item_from(next.meta, &next_mapped));
                coalesced += 1;
            }
            if parts.len() > 1
                && let Ok(m) = mapping::map(&merged_cmd, project)
            {
                head_item = item_from_jobs(parts.iter().flat_map(|p| p.jobs.clone()).collect(), &m);
                head_item.parts = parts;
            }
        }
        items.push(head_item);
        // In bulk mode, a user's following custom events ride in the same batch, in order.
        if path == Path::Bulk && mapped.family == Some(Family::Events) {
            while items.len() < max {
                let Some(next) = state.queue.front() else {
                    break;
                };
                if !matches!(
                    next.command.action,
                    schemas::command::Action::TrackEvent { .. }
                ) || lock(&self.offsets).is_stale(next.meta.partition, next.generation)
                {
                    break;
                }
                let Ok(next_mapped) = mapping::map(&next.command, project) else {
                    break;
                };
                if next_mapped.family != Some(Family::Events) {
                    break;
                }
                let Some(next) = state.queue.pop_front() else {
                    break;
                };
                items.push(item_from(next.meta, &next_mapped));
            }
        }
        for m in &dropped {
            self.forget_job(m);
        }
        if coalesced > 0 {
            self.deliverer
                .metrics
                .coalesced
                .with_label_values(&["users"])
                .inc_by(coalesced);
        }
        let unit = Unit {
            user: user.clone(),
            items,
        };
        match (path, mapped.family) {
            (Path::Bulk, Some(family)) => self.add_to_batch(family, unit, now),
            _ => {
                let d = self.deliverer.clone();
                self.tasks.spawn(d.deliver_single(unit));
            }
        }
    }

    fn add_to_batch(&mut self, family: Family, unit: Unit, now: Instant) {
        let lens: Vec<usize> = unit.items.iter().map(|i| i.body.len()).collect();
        let fits = self.batches[fi(family)]
            .as_ref()
            .is_none_or(|b| b.size.fits(&self.config.batching, &lens));
        if !fits {
            self.flush(family);
        }
        let open = self.batches[fi(family)].get_or_insert_with(|| OpenBatch {
            size: BatchSize::new(family, now),
            units: Vec::new(),
        });
        open.size.add(&lens);
        open.units.push(unit);
        if open.size.is_full(&self.config.batching) {
            self.flush(family);
        }
    }

    fn flush(&mut self, family: Family) {
        if let Some(open) = self.batches[fi(family)].take() {
            self.deliverer
                .bulk_waiting(family)
                .fetch_add(1, Ordering::AcqRel);
            let d = self.deliverer.clone();
            self.tasks.spawn(d.deliver_bulk(family, open.units));
        }
    }

    /// Flushes partly filled batches whose interval passed, unless an earlier batch of the
    /// same endpoint is still queued at the limiter (then waiting only makes the batch fuller).
    pub(crate) fn on_tick(&mut self, now: Instant) {
        for family in FAMILIES {
            let due = self.batches[fi(family)]
                .as_ref()
                .is_some_and(|b| b.size.age(now) >= self.config.batching.flush_interval);
            if due && self.deliverer.bulk_waiting(family).load(Ordering::Acquire) == 0 {
                self.flush(family);
            }
        }
    }

    /// Sends every open batch now (shutdown).
    pub(crate) fn flush_all(&mut self) {
        for family in FAMILIES {
            self.flush(family);
        }
    }

    /// Applies a delivery task's report.
    pub(crate) fn on_event(&mut self, event: Event) {
        match event {
            Event::Done { jobs } => {
                {
                    let mut offsets = lock(&self.offsets);
                    for j in &jobs {
                        offsets.complete(j.partition, j.offset);
                    }
                }
                for j in &jobs {
                    self.forget_job(j);
                }
                self.deliverer
                    .metrics
                    .pending
                    .set(i64::try_from(self.pending).unwrap_or(i64::MAX));
            }
            Event::Release { user, path } => {
                if let Some(state) = self.users.get_mut(&user) {
                    state.busy = false;
                    if let Some((f, p)) = path {
                        // The pin counts from the last use: Iterable may still be processing it.
                        state.pinned[fi(f)] = Some((p, Instant::now()));
                    }
                }
                self.dispatch(&user);
            }
        }
    }

    /// Forgets idle users whose path pin expired, so memory follows active users only.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let cfg = &self.config.batching;
        self.users.retain(|_, s| {
            s.busy
                || !s.queue.is_empty()
                || s.pinned.iter().any(|p| !batch::pin_expired(cfg, *p, now))
        });
    }

    /// Offsets ready to commit.
    pub(crate) fn commits(&self, topic: &str) -> Option<TopicPartitionList> {
        let commits = lock(&self.offsets).take_commits();
        if commits.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in commits {
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
        }
        Some(tpl)
    }
}

fn item_from(meta: JobMeta, m: &mapping::Mapped) -> Item {
    item_from_jobs(vec![meta], m)
}

fn item_from_jobs(jobs: Vec<JobMeta>, m: &mapping::Mapped) -> Item {
    Item {
        jobs,
        request: m.request.clone(),
        body: m
            .request
            .body
            .as_ref()
            .map(batch::to_bytes)
            .unwrap_or_default(),
        identity: m.identity.clone(),
        event_name: m.event_name.clone(),
        parts: Vec::new(),
    }
}

/// Runs the consume → dispatch → commit loop until `shutdown`, then drains.
pub(crate) async fn run_loop(
    config: Arc<PublisherConfig>,
    consumer: StreamConsumer<PublisherContext>,
    mut dispatcher: Dispatcher,
    mut events: UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) {
    let topic = config.topics.commands.clone();
    let max_pending = config.pipeline.max_pending;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_commit = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_pause = Instant::now();
    let mut paused = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(event) = events.recv() => dispatcher.on_event(event),
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    dispatcher.accept(m.partition(), m.offset(), m.key(), m.payload());
                    // Pause as soon as the bound is reached; records librdkafka already fetched
                    // for paused partitions are discarded and fetched again after resume.
                    if !paused
                        && dispatcher.pending() >= max_pending
                        && let Ok(assignment) = consumer.assignment()
                        && consumer.pause(&assignment).is_ok()
                    {
                        tracing::debug!(pending = dispatcher.pending(), "Pausing consumption (backpressure).");
                        paused = true;
                        last_pause = Instant::now();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                dispatcher.on_tick(now);
                if now.duration_since(last_commit) >= config.pipeline.commit_interval {
                    last_commit = now;
                    if let Some(tpl) = dispatcher.commits(&topic)
                        && let Err(error) = consumer.commit(&tpl, CommitMode::Async)
                    {
                        tracing::warn!(%error, "Offset commit failed; it is retried with the next one.");
                    }
                }
                if now.duration_since(last_sweep) >= Duration::from_secs(1) {
                    last_sweep = now;
                    dispatcher.sweep(now);
                }
                // Backpressure: pause fetching above the bound so an outage builds lag in Kafka,
                // not memory; keep polling so the group membership stays alive. Re-applied
                // periodically to cover partitions assigned while paused.
                let over = dispatcher.pending() >= max_pending;
                let under = dispatcher.pending() <= max_pending / 4 * 3;
                if over && (!paused || now.duration_since(last_pause) >= Duration::from_secs(1)) {
                    if let Ok(assignment) = consumer.assignment()
                        && consumer.pause(&assignment).is_ok()
                    {
                        if !paused {
                            tracing::debug!(pending = dispatcher.pending(), "Pausing consumption (backpressure).");
                        }
                        paused = true;
                        last_pause = now;
                    }
                } else if paused
                    && under
                    && let Ok(assignment) = consumer.assignment()
                    && consumer.resume(&assignment).is_ok()
                {
                    tracing::debug!(pending = dispatcher.pending(), "Resuming consumption.");
                    paused = false;
                }
            }
        }
    }

    // Graceful shutdown: stop fetching (the loop above no longer polls), send open batches,
    // let in-flight requests finish within the bound, then commit what is done.
    tracing::info!(
        pending = dispatcher.pending(),
        "Draining in-flight requests."
    );
    dispatcher.draining = true;
    dispatcher.flush_all();
    dispatcher.tasks.close();
    let deadline = tokio::time::sleep(config.pipeline.shutdown_timeout);
    tokio::pin!(deadline);
    let wait = dispatcher.tasks.clone();
    let finished = wait.wait();
    tokio::pin!(finished);
    loop {
        tokio::select! {
            biased;
            Some(event) = events.recv() => dispatcher.on_event(event),
            () = &mut finished => break,
            () = &mut deadline => {
                tracing::warn!("Shutdown deadline reached; abandoning in-flight requests (they will be redelivered).");
                dispatcher.deliverer.abort.cancel();
                break;
            }
        }
    }
    while let Ok(event) = events.try_recv() {
        dispatcher.on_event(event);
    }
    if let Some(tpl) = dispatcher.commits(&topic) {
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => tracing::info!("Final offsets committed."),
            Err(error) => {
                tracing::warn!(%error, "Final commit failed; the uncommitted tail will be redelivered.")
            }
        }
    }
    dispatcher.deliverer.abort.cancel();
}
