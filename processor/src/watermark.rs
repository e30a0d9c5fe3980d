//! Input completeness: how far in event time a partition's inputs are known to be complete, so a
//! timer fires only when nothing that could cancel it can still be in flight.
//!
//! # Why
//! Rules decide by business time (a completion at or before a checkout's decision time
//! suppresses it whenever it arrives), so firing a timer *later* never changes its outcome; only
//! firing it *too early*, before the event that would cancel it has been applied, does. The
//! engine therefore needs one thing: the earliest moment at which every fact with an event time
//! up to a timer's due time has reached its key. Three things delay facts:
//!
//! 1. **Other partitions.** A fact travels between keys through the repartition topic (a refund
//!    parked on its order key, a guest checkout completed by the customer's order). While
//!    partitions are read at different speeds (a backlog, a replay), a partition's own stream
//!    time says nothing about the others.
//! 2. **Our own downtime.** While ingest is down Shopify retries each delivery, with backoff, for
//!    up to four hours after the event; the events arrive late, out of order with fresh traffic.
//! 3. **Late deliveries.** A burst of hours-old events (Shopify delays, a drained backlog, a
//!    backfill) arrives quickly but spans hours of event time.
//!
//! # The rule
//! Ingest writes a heartbeat to every raw partition every few seconds: "every webhook accepted
//! before this instant is before this record". The owner of raw partition *p* turns what it reads
//! into a [`SourceProgress`]: the latest heartbeat (*complete*), plus recent *disturbances*: an
//! **outage** (a gap between heartbeats longer than `heartbeat_gap`) and **late arrivals** (an
//! input received more than `late_after` after its event time). After each transaction it
//! announces that progress to every repartition partition, behind the forwards of the same
//! transaction, so a partition that has read *p*'s announcement has read every fact *p* forwarded
//! before it. A partition's [`Completeness`] is the minimum over all sources, and its
//! [`Horizon`] — the latest due time allowed to fire — is
//!
//! * `complete − grace` when nothing is disturbed (live: a few seconds behind the wall clock);
//! * after an **outage** from *g1* to *g2*, timers due at or after `g1 − grace` wait until
//!   `complete ≥ due + retry_horizon` (Shopify's retries of anything up to the due time are over),
//!   until `complete ≥ g2 + retry_horizon` ends the outage's influence;
//! * while **late arrivals** are seen, timers due at or after the earliest late event time minus
//!   `grace` wait until no late arrival has been seen for `late_settle` of heartbeat time.
//!
//! Everything is derived from what is in the log (heartbeats, event and receive times), so a
//! replay or a backlog holds and releases timers like the live run did; only the moment a timer
//! fires differs, which the rules make harmless.

use serde::{Deserialize, Serialize};

/// Internal topic of a progress announcement on the repartition topic.
pub const PROGRESS_TOPIC: &str = "tillstream/progress";

/// The settings of the rule (see the module docs), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind a heartbeat a normal delivery may still be (ingest → Kafka, clock skew).
    pub grace_ms: i64,
    /// An input received more than this after its event time is a late arrival.
    pub late_after_ms: i64,
    /// How long (heartbeat time) without late arrivals before their influence ends.
    pub late_settle_ms: i64,
    /// How long Shopify keeps retrying a failed delivery (8 retries over 4 hours).
    pub retry_horizon_ms: i64,
    /// Heartbeats further apart than this mean ingest was not accepting in between.
    pub heartbeat_gap_ms: i64,
}

/// Why deliveries may be missing: the two kinds of disturbance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisturbanceKind {
    /// Ingest was not accepting (a gap between heartbeats): Shopify retries what failed.
    Outage,
    /// Inputs arrived long after their event time (a burst, a backlog, a backfill).
    Late,
}

/// A window of event time during which deliveries may have been delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disturbance {
    /// What happened.
    pub kind: DisturbanceKind,
    /// Earliest event time affected (outage: the last heartbeat before the gap; late: the
    /// earliest late event time).
    pub from_ms: i64,
    /// When it was last seen (outage: the first heartbeat after the gap; late: the latest
    /// receive time of a late input).
    pub until_ms: i64,
}

impl Disturbance {
    /// Merges a new observation of the same kind into this window.
    fn absorb(&mut self, other: Disturbance) {
        self.from_ms = self.from_ms.min(other.from_ms);
        self.until_ms = self.until_ms.max(other.until_ms);
    }

    /// Whether it can no longer hold any timer once inputs are complete to `complete_ms`.
    fn expired(&self, complete_ms: i64, cfg: &WatermarkConfig) -> bool {
        match self.kind {
            DisturbanceKind::Outage => complete_ms >= self.until_ms + cfg.retry_horizon_ms,
            DisturbanceKind::Late => complete_ms >= self.until_ms + cfg.late_settle_ms,
        }
    }

    /// The latest due time this disturbance lets fire when inputs are complete to `complete_ms`.
    fn limit(&self, complete_ms: i64, cfg: &WatermarkConfig) -> i64 {
        let unaffected = self.from_ms - cfg.grace_ms - 1;
        match self.kind {
            // Events up to the due time that failed are retried until due + retry horizon.
            DisturbanceKind::Outage => unaffected.max(complete_ms - cfg.retry_horizon_ms),
            // Still settling (not expired): only timers before the late window may fire.
            DisturbanceKind::Late => unaffected,
        }
    }
}

/// What one raw partition's log says about its own inputs; kept by the partition's owner,
/// written to the changelog and announced to every partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProgress {
    /// Time of the latest ingest heartbeat read: every webhook accepted before it has been
    /// processed (and its forwards sent). `None` until the first heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_ms: Option<i64>,
    /// Relayed progress: `relayed_ms[k-1]` is level *k*, the minimum of this partition's own
    /// progress and what every source announced at level *k − 1* when this was sent (level 0
    /// is `complete_ms`). A fact can take several hops between keys (an order links its order
    /// key, which then forwards a parked refund back): level *k* covers chains of *k + 1* hops.
    #[serde(default, rename = "relayed", skip_serializing_if = "Vec::is_empty")]
    pub relayed_ms: Vec<i64>,
    /// The latest outage window still relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<Disturbance>,
    /// The latest late-arrival window still relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<Disturbance>,
}

impl SourceProgress {
    /// Applies a heartbeat written by ingest at `at_ms`; returns whether the progress changed.
    pub fn on_heartbeat(&mut self, at_ms: i64, cfg: &WatermarkConfig) -> bool {
        let before = self.clone();
        if let Some(last) = self.complete_ms {
            if at_ms <= last {
                return false;
            }
            if at_ms - last > cfg.heartbeat_gap_ms {
                self.note(Disturbance {
                    kind: DisturbanceKind::Outage,
                    from_ms: last,
                    until_ms: at_ms,
                });
            }
        }
        self.complete_ms = Some(at_ms);
        *self != before
    }

    /// Applies a delivered input (event time, receive time); returns whether it was late.
    pub fn on_input(&mut self, event_ms: i64, received_ms: i64, cfg: &WatermarkConfig) -> bool {
        if received_ms - event_ms <= cfg.late_after_ms {
            return false;
        }
        self.note(Disturbance {
            kind: DisturbanceKind::Late,
            from_ms: event_ms,
            until_ms: received_ms,
        });
        true
    }

    fn note(&mut self, d: Disturbance) {
        let slot = match d.kind {
            DisturbanceKind::Outage => &mut self.outage,
            DisturbanceKind::Late => &mut self.late,
        };
        match slot {
            Some(existing) => existing.absorb(d),
            None => *slot = Some(d),
        }
    }

    /// Forgets disturbances that can no longer hold a timer anywhere: `complete_ms` must be
    /// the minimum over *every* source (a partition that has not read as far may still hold
    /// forwards of this one's late inputs), never this partition's own progress.
    fn prune(&mut self, complete_ms: i64, cfg: &WatermarkConfig) -> bool {
        let mut changed = false;
        for slot in [&mut self.outage, &mut self.late] {
            if slot.is_some_and(|d| d.expired(complete_ms, cfg)) {
                *slot = None;
                changed = true;
            }
        }
        changed
    }

    fn disturbances(&self) -> impl Iterator<Item = &Disturbance> {
        self.outage.iter().chain(self.late.iter())
    }

    /// Progress at relay level `k` (0 = this partition's own heartbeats).
    fn level(&self, k: usize) -> Option<i64> {
        match k {
            0 => self.complete_ms,
            _ => self.relayed_ms.get(k - 1).copied(),
        }
    }
}

/// How many hops between keys the rule covers: the longest chain in the rules is an order on
/// a customer key linking its order key, which forwards a parked refund back (2 hops); one more
/// for the e-mail index. Each level adds one announcement round to a timer's wait.
pub const RELAY_LEVELS: usize = 3;

/// How far timers may fire on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// Some source partition has not announced any heartbeat yet: nothing may fire.
    Unknown,
    /// Timers due at or before `fire_up_to_ms` may fire. Those due in
    /// `(fire_up_to_ms, complete_ms - grace]` are held by the late-data rule only.
    Known {
        /// Minimum of the sources' heartbeat progress.
        complete_ms: i64,
        /// The latest due time allowed to fire.
        fire_up_to_ms: i64,
    },
}

impl Horizon {
    /// The latest due time allowed to fire, if any.
    pub fn fire_up_to(&self) -> Option<i64> {
        match self {
            Horizon::Unknown => None,
            Horizon::Known { fire_up_to_ms, .. } => Some(*fire_up_to_ms),
        }
    }

    /// What happens to a timer due at `due_ms` under this horizon.
    pub fn fate(&self, due_ms: i64, cfg: &WatermarkConfig) -> TimerFate {
        match self {
            Horizon::Unknown => TimerFate::AwaitingInputs,
            Horizon::Known {
                complete_ms,
                fire_up_to_ms,
            } => {
                if due_ms <= *fire_up_to_ms {
                    TimerFate::Fire
                } else if due_ms <= complete_ms - cfg.grace_ms {
                    TimerFate::Deferred
                } else {
                    TimerFate::AwaitingInputs
                }
            }
        }
    }
}

/// A pending timer's fate under the current horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerFate {
    /// Not every input is known to be complete up to its due time yet (normal waiting).
    AwaitingInputs,
    /// Inputs are complete to its due time, but a disturbance means a cancelling event may still
    /// be on its way (the late-data rule holds it).
    Deferred,
    /// Nothing that could cancel it can still be in flight: fire.
    Fire,
}

/// What one partition knows about every source partition's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Indexed by source partition; `None` until that source announced itself.
    sources: Vec<Option<SourceProgress>>,
}

impl Completeness {
    /// Knows nothing yet about `partitions` sources.
    pub fn new(partitions: i32) -> Self {
        Self {
            sources: vec![None; usize::try_from(partitions).unwrap_or(0)],
        }
    }

    /// How many source partitions it tracks.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Takes a source's announcement; returns whether anything changed. Announcements of a
    /// source only move forward (an older one, re-read after a rewind, changes nothing).
    pub fn on_announcement(&mut self, source: i32, progress: SourceProgress) -> bool {
        let Some(slot) = usize::try_from(source)
            .ok()
            .and_then(|i| self.sources.get_mut(i))
        else {
            return false;
        };
        let newer = match (
            slot.as_ref().and_then(|s| s.complete_ms),
            progress.complete_ms,
        ) {
            (Some(old), Some(new)) => new >= old,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if newer && slot.as_ref() != Some(&progress) {
            *slot = Some(progress);
            return true;
        }
        false
    }

    /// The horizon the sources' announcements allow.
    pub fn horizon(&self, cfg: &WatermarkConfig) -> Horizon {
        self.horizon_with(cfg, None)
    }

    /// The minimum over every source of its progress at relay level `k`; `None` while some
    /// source has not announced that level.
    fn level_min(&self, k: usize) -> Option<i64> {
        let mut min: Option<i64> = None;
        for s in &self.sources {
            let l = s.as_ref().and_then(|s| s.level(k))?;
            min = Some(min.map_or(l, |m| m.min(l)));
        }
        min
    }

    /// The horizon, also held by `local` disturbances not announced yet.
    fn horizon_with(&self, cfg: &WatermarkConfig, local: Option<&SourceProgress>) -> Horizon {
        let Some(complete) = self.level_min(RELAY_LEVELS) else {
            return Horizon::Unknown;
        };
        let mut fire_up_to = complete - cfg.grace_ms;
        let announced = self.sources.iter().flatten();
        for d in announced.chain(local).flat_map(|s| s.disturbances()) {
            if !d.expired(complete, cfg) {
                fire_up_to = fire_up_to.min(d.limit(complete, cfg));
            }
        }
        Horizon::Known {
            complete_ms: complete,
            fire_up_to_ms: fire_up_to,
        }
    }
}

/// A partition's view of time for its timers: its own raw partition's progress and every
/// source's announcements. Restored from (and written to) its changelog partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// This raw partition's progress, announced to every partition.
    pub own: SourceProgress,
    /// The highest event time read on this raw partition: its stream time, which the
    /// `stream_time` timer clock fires by and the dedup window ages by. Only the partition's
    /// own raw input moves it: a forward on the repartition topic can carry an event time far
    /// ahead of the raw backlog (its source partition, owned by another thread or instance,
    /// read further), and moving stream time to it would fire timers before the inputs that
    /// cancel them are read. Kept here so a restore resumes it exactly.
    #[serde(default, rename = "stream", skip_serializing_if = "Option::is_none")]
    pub stream_ms: Option<i64>,
    /// What every source announced (this partition's own announcement included: it travels
    /// through the repartition topic too, behind the forwards this partition sent itself).
    pub all: Completeness,
    /// Whether `own` changed since it was last announced.
    #[serde(skip)]
    pub unannounced: bool,
    /// Whether anything changed since the clock was last written to the changelog.
    #[serde(skip)]
    pub unsaved: bool,
    /// When `own` was last announced (announcements are rate-limited).
    #[serde(skip)]
    pub announced_at: Option<std::time::Instant>,
}

/// The changelog key under which partition `p`'s clock is kept (not a customer key: the
/// restore recognises it by this prefix).
pub fn clock_key(p: i32) -> String {
    format!("{CLOCK_KEY_PREFIX}{p}")
}

/// Prefix of [`clock_key`].
pub const CLOCK_KEY_PREFIX: &str = "tillstream/clock/";

/// The body of a progress announcement on the repartition topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The raw partition whose progress this is.
    pub source: i32,
    /// Its progress.
    pub progress: SourceProgress,
}

impl PartitionClock {
    /// A clock that knows nothing yet about `partitions` sources.
    pub fn new(partitions: i32) -> Self {
        Self {
            all: Completeness::new(partitions),
            ..Self::default()
        }
    }

    /// A heartbeat read on this raw partition.
    pub fn on_heartbeat(&mut self, at_ms: i64, cfg: &WatermarkConfig) {
        if self.own.on_heartbeat(at_ms, cfg) {
            self.unannounced = true;
            self.unsaved = true;
        }
        self.relay();
    }

    /// Recomputes this partition's relayed levels from its own progress and what the sources
    /// announced; any change is announced.
    fn relay(&mut self) {
        let mut relayed = Vec::with_capacity(RELAY_LEVELS);
        if let Some(own) = self.own.complete_ms {
            for k in 1..=RELAY_LEVELS {
                match self.all.level_min(k - 1) {
                    Some(l) => relayed.push(own.min(l)),
                    None => break,
                }
            }
        }
        if relayed != self.own.relayed_ms {
            self.own.relayed_ms = relayed;
            self.unannounced = true;
            self.unsaved = true;
        }
    }

    /// A delivery read on this raw partition; returns whether it arrived late.
    pub fn on_input(&mut self, event_ms: i64, received_ms: i64, cfg: &WatermarkConfig) -> bool {
        if self.stream_ms.is_none_or(|t| event_ms > t) {
            self.stream_ms = Some(event_ms);
            self.unsaved = true;
        }
        let late = self.own.on_input(event_ms, received_ms, cfg);
        if late {
            self.unannounced = true;
            self.unsaved = true;
        }
        late
    }

    /// The partition's stream time ([`PartitionClock::stream_ms`]); `i64::MIN` before its
    /// first raw input.
    pub fn stream_time(&self) -> i64 {
        self.stream_ms.unwrap_or(i64::MIN)
    }

    /// How far this partition's timers may fire. Its own disturbances count at once, before
    /// they are announced: a timer armed by a late input must not fire on announcements that
    /// were made before that input was read.
    pub fn horizon(&self, cfg: &WatermarkConfig) -> Horizon {
        self.all.horizon_with(cfg, Some(&self.own))
    }

    /// An announcement read on this partition's repartition input.
    pub fn on_announcement(&mut self, a: Announcement, cfg: &WatermarkConfig) {
        if self.all.on_announcement(a.source, a.progress) {
            self.unsaved = true;
            if let Horizon::Known { complete_ms, .. } = self.all.horizon(cfg)
                && self.own.prune(complete_ms, cfg)
            {
                self.unannounced = true;
            }
            self.relay();
        }
    }
}

#[cfg(test)]
#[path = "watermark_tests.rs"]
mod tests;
