//! The engine's side of the late-data rule: ingest heartbeats and progress announcements in,
//! announcements and the partition clock out (the rule itself is `crate::watermark`).

use std::time::Instant;

use rules::Rules;
use schemas::ShopifyEnvelope;

use super::{Engine, EngineError};
use crate::watermark::{Announcement, PROGRESS_TOPIC, PartitionClock, clock_key};

impl<R: Rules> Engine<R> {
    /// An ingest heartbeat on raw partition `p`: its inputs are complete up to it.
    pub(super) fn on_heartbeat(&mut self, p: i32, env: &ShopifyEnvelope) {
        if let Some(state) = self.partitions.get_mut(&p) {
            state
                .clock
                .on_heartbeat(env.received_at_ms, &self.watermark);
        }
    }

    /// A source partition's progress, read on repartition partition `p`: fire what it allows.
    pub(super) fn on_announcement(
        &mut self,
        p: i32,
        env: &ShopifyEnvelope,
    ) -> Result<(), EngineError> {
        let announcement: Announcement = match serde_json::from_slice(&env.body) {
            Ok(a) => a,
            Err(e) => {
                // Written by another processor version? It only delays timers: never fatal.
                tracing::warn!(error = %e, "Unreadable progress announcement ignored.");
                return Ok(());
            }
        };
        let Some(mut state) = self.partitions.remove(&p) else {
            return Ok(());
        };
        state.clock.on_announcement(announcement, &self.watermark);
        let result = self.fire_due_timers(&mut state, (self.clock)());
        self.partitions.insert(p, state);
        result
    }

    /// Sends each owned partition's unannounced progress to every repartition partition
    /// (behind the forwards already sent in this transaction) and writes changed clocks to the
    /// changelog. Announcements are rate-limited: a later one only delays timers.
    pub(super) fn publish_clocks(&mut self) -> Result<(), EngineError> {
        let interval = self.cfg.timers.announce_interval;
        let mut announcements = Vec::new();
        let mut saves = Vec::new();
        for (p, state) in &mut self.partitions {
            let clock = &mut state.clock;
            if clock.unannounced && clock.announced_at.is_none_or(|t| t.elapsed() >= interval) {
                clock.unannounced = false;
                clock.announced_at = Some(Instant::now());
                announcements.push(Announcement {
                    source: *p,
                    progress: clock.own.clone(),
                });
            }
            if clock.unsaved {
                clock.unsaved = false;
                saves.push((*p, clock_record(*p, clock)?));
            }
        }
        let repartition = self.topics.repartition.clone();
        for a in announcements {
            let env = ShopifyEnvelope {
                delivery_id: format!("progress-{}", a.source),
                event_id: None,
                topic: PROGRESS_TOPIC.into(),
                shop_domain: String::new(),
                api_version: None,
                triggered_at_ms: None,
                received_at_ms: a.progress.complete_ms.unwrap_or(0),
                routing_key: PROGRESS_TOPIC.into(),
                source: schemas::EventSource::Webhook,
                webhook_name: None,
                body: serde_json::to_vec(&a)
                    .map_err(|e| EngineError::Fatal(format!("cannot encode progress: {e}")))?,
            };
            let bytes = env
                .encode()
                .map_err(|e| EngineError::Fatal(format!("cannot encode progress: {e}")))?;
            for q in 0..self.topics.partitions {
                self.send_to(&repartition, PROGRESS_TOPIC, Some(q), Some(&bytes), None)?;
            }
        }
        let changelog = self.topics.changelog.clone();
        for (p, record) in saves {
            self.send_to(&changelog, &clock_key(p), Some(p), Some(&record), None)?;
        }
        Ok(())
    }

    /// A clock read back from the changelog. One that cannot be read (another version) or was
    /// written for another partition count starts over: timers then wait for fresh
    /// announcements, which only delays them.
    pub(super) fn restored_clock(&self, json: &str) -> PartitionClock {
        let fresh = PartitionClock::new(self.topics.partitions);
        match serde_json::from_str::<PartitionClock>(json) {
            Ok(c) if c.all.sources() == usize::try_from(self.topics.partitions).unwrap_or(0) => c,
            Ok(c) => PartitionClock {
                own: c.own,
                stream_ms: c.stream_ms,
                ..fresh
            },
            Err(e) => {
                tracing::warn!(error = %e, "Unreadable timer clock in the changelog; starting over.");
                fresh
            }
        }
    }
}

/// The changelog record of partition `p`'s timer clock (restored by [`Engine::restore`]).
fn clock_record(p: i32, clock: &PartitionClock) -> Result<Vec<u8>, EngineError> {
    let json = serde_json::to_string(clock)
        .map_err(|e| EngineError::Fatal(format!("cannot encode the clock: {e}")))?;
    schemas::KeyStateRecord {
        key: clock_key(p),
        shop_domain: String::new(),
        updated_at_ms: clock.own.complete_ms.unwrap_or(0),
        aggregate_json: json,
        timers: Vec::new(),
        dedup: Vec::new(),
    }
    .encode()
    .map_err(|e| EngineError::Fatal(format!("cannot encode the clock: {e}")))
}
