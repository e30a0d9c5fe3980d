//! The dispatcher: per-user, per-lane queues in Kafka order, cross-lane order, priorities,
//! coalescing, path choice, batching and offsets.
//!
//! One task owns all mutable state (user queues, lane ready queues, open batches, counters);
//! delivery tasks report back through a channel. Per user and lane at most one dispatch is
//! in flight: its next command waits until the previous one is delivered or dead-lettered,
//! so Iterable sees each user's writes of a lane in Kafka order; across lanes a command waits
//! only for what [`Lane::waits_for`] names. Each lane sends at most its cap of single
//! requests at once, taking ready users by priority, so a saturated lane keeps its backlog in
//! its own queues (where carts coalesce) instead of in front of the others.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::{Offset, TopicPartitionList};
use schemas::command::IterableCommand;
use tokio_util::task::TaskTracker;

use crate::batch::{self, BatchSize, Path};
use crate::config::PublisherConfig;
use crate::deliver::{Deliverer, Event, Item, JobMeta, Unit};
use crate::lanes::{self, Lane, Priority};
use crate::mapping::{self, Family};
use crate::offsets::OffsetTracker;

/// A record read from Kafka and decoded, waiting in its user's lane queue.
struct Job {
    generation: u64,
    /// Arrival order within the user, across lanes.
    seq: u64,
    meta: JobMeta,
    command: IterableCommand,
}

/// One user's commands of one lane.
#[derive(Default)]
struct LaneQueue {
    queue: VecDeque<Job>,
    /// Lowest `seq` of the dispatch in flight, if any.
    in_flight: Option<u64>,
    /// Whether the user sits in the lane's ready queue.
    ready: bool,
}

#[derive(Default)]
struct UserState {
    lanes: [LaneQueue; Lane::COUNT],
    next_seq: u64,
    /// Path last used per family (profile updates, custom events) and when: the pipelines
    /// Iterable may reorder across are per family, so the pin is too.
    pinned: [Option<(Path, Instant)>; 2],
}

impl UserState {
    /// The lowest `seq` of the lane still unfinished (in flight or queued).
    fn earliest(&self, lane: Lane) -> Option<u64> {
        let q = &self.lanes[lane.index()];
        match (q.in_flight, q.queue.front().map(|j| j.seq)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the lane's next command may go now: nothing of the lane in flight and nothing
    /// earlier unfinished in the lanes it waits for.
    fn eligible(&self, lane: Lane) -> bool {
        let q = &self.lanes[lane.index()];
        let Some(head) = q.queue.front() else {
            return false;
        };
        q.in_flight.is_none()
            && lane
                .waits_for()
                .iter()
                .filter(|l| **l != lane)
                .all(|l| self.earliest(*l).is_none_or(|s| s > head.seq))
    }

    fn idle(&self) -> bool {
        self.lanes
            .iter()
            .all(|q| q.queue.is_empty() && q.in_flight.is_none())
    }
}

/// A lane's shared state: users ready to send, by priority, and its budget.
struct LaneState {
    ready: [VecDeque<Arc<str>>; 2],
    in_flight: usize,
    cap: usize,
    pending: usize,
}

struct OpenBatch {
    size: BatchSize,
    units: Vec<Unit>,
}

pub(crate) fn lock(offsets: &Mutex<OffsetTracker>) -> MutexGuard<'_, OffsetTracker> {
    // A panic while holding the lock cannot leave the tracker half-updated in a way that
    // matters more than stopping would; keep going with the data.
    offsets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The dispatcher state.
pub(crate) struct Dispatcher {
    config: Arc<PublisherConfig>,
    pub(crate) deliverer: Arc<Deliverer>,
    offsets: Arc<Mutex<OffsetTracker>>,
    pub(crate) tasks: TaskTracker,
    users: HashMap<Arc<str>, UserState>,
    lanes: [LaneState; Lane::COUNT],
    batches: [Option<OpenBatch>; 2],
    backlog: [usize; 2],
    pending: usize,
    pub(crate) draining: bool,
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
        let lanes = Lane::ALL.map(|l| LaneState {
            ready: [VecDeque::new(), VecDeque::new()],
            in_flight: 0,
            cap: l
                .endpoints()
                .iter()
                .map(|e| config.limits.get(*e).concurrency)
                .sum::<usize>()
                .max(1),
            pending: 0,
        });
        Self {
            config,
            deliverer,
            offsets,
            tasks: TaskTracker::new(),
            users: HashMap::new(),
            lanes,
            batches: [None, None],
            backlog: [0, 0],
            pending: 0,
            draining: false,
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Above a bound: the whole pending count, or one lane's (Kafka pauses partitions, not
    /// lanes, so a full lane pauses the consumer; coalescing keeps the carts lane to one
    /// command per user).
    pub(crate) fn over_bound(&self) -> bool {
        let p = &self.config.pipeline;
        self.pending >= p.max_pending
            || self
                .lanes
                .iter()
                .any(|l| l.pending >= p.max_pending_per_lane)
    }

    /// Back under 75 % of every bound: consumption may resume.
    pub(crate) fn under_resume_mark(&self) -> bool {
        let p = &self.config.pipeline;
        self.pending <= p.max_pending / 4 * 3
            && self
                .lanes
                .iter()
                .all(|l| l.pending <= p.max_pending_per_lane / 4 * 3)
    }

    fn set_gauges(&self) {
        let m = &self.deliverer.metrics;
        m.pending
            .set(i64::try_from(self.pending).unwrap_or(i64::MAX));
        for l in Lane::ALL {
            m.lane_pending
                .with_label_values(&[l.name()])
                .set(i64::try_from(self.lanes[l.index()].pending).unwrap_or(i64::MAX));
        }
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
        let payload = payload.unwrap_or_default();
        let mut meta = JobMeta {
            partition,
            offset,
            event_time_ms: runtime::now_ms(),
            command_id: None,
            family: None,
            lane: None,
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
                self.set_gauges();
                return;
            }
        };
        let lane = Lane::of(&command.action);
        meta.event_time_ms = command.event_time_ms;
        meta.command_id = Some(command.command_id.clone());
        meta.family = batch::family_of(&command.action);
        meta.lane = Some(lane);
        if let Some(f) = meta.family {
            self.backlog[fi(f)] += 1;
        }
        self.lanes[lane.index()].pending += 1;
        let user: Arc<str> = if command.customer_key.is_empty() {
            key.map_or_else(
                || Arc::from(command.command_id.as_str()),
                |k| Arc::from(String::from_utf8_lossy(k).as_ref()),
            )
        } else {
            Arc::from(command.customer_key.as_str())
        };
        let state = self.users.entry(user.clone()).or_default();
        // Last-write-wins commands replace what of the user is still queued (never sent):
        // their offsets complete now, the later command carries the state. A crash then
        // redelivers from at most the later command's offset, which is still pending.
        let mut superseded = Vec::new();
        for l in [Lane::Carts] {
            let q = &mut state.lanes[l.index()];
            let before = q.queue.len();
            let mut kept = VecDeque::with_capacity(before);
            for job in q.queue.drain(..) {
                if lanes::supersedes(&command.action, &job.command.action) {
                    superseded.push((job.generation, job.meta));
                } else {
                    kept.push_back(job);
                }
            }
            q.queue = kept;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.lanes[lane.index()].queue.push_back(Job {
            generation,
            seq,
            meta,
            command,
        });
        if !superseded.is_empty() {
            self.deliverer
                .metrics
                .coalesced
                .with_label_values(&["carts"])
                .inc_by(superseded.len() as u64);
            // A superseded command of an older assignment is only forgotten: its offset may
            // have been read again under the new one and must stay pending there.
            let mut current = Vec::with_capacity(superseded.len());
            for (generation, meta) in superseded {
                if lock(&self.offsets).is_stale(meta.partition, generation) {
                    self.forget_job(&meta);
                } else {
                    current.push(meta);
                }
            }
            self.finish(&current);
        }
        for l in Lane::ALL {
            self.make_ready(&user, l);
        }
        self.pump(lane);
        self.set_gauges();
    }

    /// Puts the user in the lane's ready queue if its next command of the lane may go.
    fn make_ready(&mut self, user: &Arc<str>, lane: Lane) {
        let Some(state) = self.users.get_mut(user) else {
            return;
        };
        if !state.eligible(lane) {
            return;
        }
        let q = &mut state.lanes[lane.index()];
        if q.ready {
            return;
        }
        let Some(head) = q.queue.front() else {
            return;
        };
        q.ready = true;
        let prio = Priority::of(&head.command.action);
        self.lanes[lane.index()].ready[prio.index()].push_back(user.clone());
    }

    /// Sends ready users of the lane while it has budget, triggers first.
    fn pump(&mut self, lane: Lane) {
        if self.draining {
            return;
        }
        loop {
            let ls = &mut self.lanes[lane.index()];
            if ls.in_flight >= ls.cap {
                return;
            }
            let Some(user) = ls.ready[0].pop_front().or_else(|| ls.ready[1].pop_front()) else {
                return;
            };
            let Some(state) = self.users.get_mut(&user) else {
                continue;
            };
            state.lanes[lane.index()].ready = false;
            if !state.eligible(lane) {
                continue;
            }
            if self.dispatch(&user, lane) {
                self.lanes[lane.index()].in_flight += 1;
            }
        }
    }

    /// Completes the offsets of commands that need no request (superseded, dropped).
    fn finish(&mut self, jobs: &[JobMeta]) {
        {
            let mut offsets = lock(&self.offsets);
            for j in jobs {
                offsets.complete(j.partition, j.offset);
            }
        }
        for j in jobs {
            self.forget_job(j);
        }
    }

    fn forget_job(&mut self, meta: &JobMeta) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(f) = meta.family {
            self.backlog[fi(f)] = self.backlog[fi(f)].saturating_sub(1);
        }
        if let Some(l) = meta.lane {
            let p = &mut self.lanes[l.index()].pending;
            *p = p.saturating_sub(1);
        }
    }

    /// Sends the user's next command(s) of `lane` on their way. Returns whether a single
    /// request task was started (it holds one of the lane's slots until released).
    fn dispatch(&mut self, user: &Arc<str>, lane: Lane) -> bool {
        let now = Instant::now();
        let project = self.config.iterable.project_type;
        let Some(state) = self.users.get_mut(user) else {
            return false;
        };
        let q = &mut state.lanes[lane.index()];
        // Drop commands of partitions this consumer no longer owns: the new owner redelivers them.
        let mut dropped = Vec::new();
        let head = loop {
            let Some(job) = q.queue.pop_front() else {
                break None;
            };
            if lock(&self.offsets).is_stale(job.meta.partition, job.generation) {
                dropped.push(job.meta);
                continue;
            }
            break Some(job);
        };
        for m in &dropped {
            self.forget_job(m);
        }
        let Some(state) = self.users.get_mut(user) else {
            return false;
        };
        let q = &mut state.lanes[lane.index()];
        let Some(head) = head else {
            return false;
        };
        q.in_flight = Some(head.seq);
        let mapped = match mapping::map(&head.command, project) {
            Ok(m) => m,
            Err(error) => {
                let d = self.deliverer.clone();
                self.tasks.spawn(d.dead_letter_unsent(
                    head.meta,
                    "mapping",
                    error.to_string(),
                    Some((user.clone(), lane)),
                ));
                return false;
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
        let q = &mut state.lanes[lane.index()];
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
                let Some(next) = q.queue.front() else {
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
                let Some(next) = q.queue.pop_front() else {
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
                let Some(next) = q.queue.front() else {
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
                let Some(next) = q.queue.pop_front() else {
                    break;
                };
                items.push(item_from(next.meta, &next_mapped));
            }
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
            lane,
            items,
        };
        match (path, mapped.family) {
            (Path::Bulk, Some(family)) => {
                self.add_to_batch(family, unit, now);
                false
            }
            _ => {
                let d = self.deliverer.clone();
                self.tasks.spawn(d.deliver_single(unit));
                true
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
                self.finish(&jobs);
                self.set_gauges();
            }
            Event::Release {
                user,
                lane,
                path,
                slot,
            } => {
                if slot {
                    let ls = &mut self.lanes[lane.index()];
                    ls.in_flight = ls.in_flight.saturating_sub(1);
                }
                if let Some(state) = self.users.get_mut(&user) {
                    state.lanes[lane.index()].in_flight = None;
                    if let Some((f, p)) = path {
                        // The pin counts from the last use: Iterable may still be processing it.
                        state.pinned[fi(f)] = Some((p, Instant::now()));
                    }
                }
                // Finishing this lane may unblock the user's other lanes.
                for l in Lane::ALL {
                    self.make_ready(&user, l);
                }
                for l in Lane::ALL {
                    self.pump(l);
                }
            }
        }
    }

    /// Forgets idle users whose path pin expired, so memory follows active users only.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let cfg = &self.config.batching;
        self.users
            .retain(|_, s| !s.idle() || s.pinned.iter().any(|p| !batch::pin_expired(cfg, *p, now)));
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
