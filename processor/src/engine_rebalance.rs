//! The engine's consumer context: rebalance callbacks (commit or abort before a revoke, restore
//! on assignment) and the per-partition lag from librdkafka's statistics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rules::Rules;

use super::Engine;
use crate::txn::Recovery;

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
    pub(super) fn new(engine: Arc<Mutex<Engine<R>>>) -> Self {
        Self {
            engine,
            lags: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn lags(&self) -> HashMap<(String, i32), i64> {
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

impl<R: Rules> Engine<R> {
    /// Counts a rebalance callback by kind (`tillstream_processor_rebalances_total`).
    fn count_rebalance(&self, kind: &str) {
        self.metrics.rebalances.with_label_values(&[kind]).inc();
    }

    /// Leaves the revoked partitions' committed state for their next owner in this instance
    /// (`Slot::take_handoff`): an eager rebalance revokes every partition, and most come back
    /// to the same instance, which would otherwise restore each from its changelog again.
    fn hand_off(&mut self, revoked: &[i32]) {
        let held: Vec<i32> = revoked
            .iter()
            .copied()
            .filter(|p| self.partitions.get(p).is_some_and(|s| !s.has_changes()))
            .collect();
        if held.is_empty() {
            return;
        }
        for (p, end) in self.changelog_ends(&held) {
            if let Some(mut state) = self.partitions.remove(&p) {
                // As a restored state: "caught up" is learnt again from the new position.
                state.caught_up = false;
                self.slot.hand_off(p, state, end);
            }
        }
    }
}

impl<R: Rules> ConsumerContext for EngineContext<R> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut engine = self.lock();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                engine.count_rebalance(if lost { "lost" } else { "revoke" });
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if lost {
                    // The session timed out (e.g. the broker was away): the group has moved
                    // on, so a commit would carry a stale generation and be rejected. Abort;
                    // whoever owns the partitions next redoes the uncommitted inputs.
                    tracing::warn!("Assignment lost; aborting the open transaction.");
                    if let Err(e) = engine.recover(consumer, Recovery::AbortOnly) {
                        engine.fatal.get_or_insert(e);
                    }
                } else {
                    // Finish the open transaction while this instance still belongs to the
                    // group generation, so its offsets are accepted; the new owner then starts
                    // exactly where this one stopped. The partitions' state is dropped next
                    // (or handed over, when the commit ended without an abort), so a failed
                    // commit aborts without rebuilding it.
                    let aborts = engine.aborts;
                    match engine.commit(consumer, Recovery::AbortOnly) {
                        Ok(()) if engine.aborts == aborts => engine.hand_off(&revoked),
                        Ok(()) => {}
                        Err(e) => {
                            engine.fatal.get_or_insert(e);
                        }
                    }
                }
                engine.slot.release(Some(&revoked));
                for p in revoked {
                    engine.partitions.remove(&p);
                }
                engine.slot.set_ready(false, "rebalancing");
                engine.update_gauges();
            }
            Rebalance::Error(e) => {
                engine.count_rebalance("error");
                tracing::error!(error = %e, "Rebalance error; aborting the open transaction.");
                if let Err(e) = engine.recover(consumer, Recovery::AbortOnly) {
                    engine.fatal.get_or_insert(e);
                }
                engine.partitions.clear();
                engine.slot.release(None);
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut engine = self.lock();
            engine.count_rebalance("assign");
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
            // Erasure: markers other instances wrote before this assignment; the products; the
            // data keys of these partitions.
            if let Err(e) = engine
                .reload_erasures()
                .and_then(|()| engine.reload_catalog())
                .and_then(|()| engine.reload_keys(&assigned))
            {
                engine.fatal.get_or_insert(e);
                return;
            }
            engine.slot.claim(&assigned);
            engine.update_gauges();
            let owned = engine.partitions.len();
            engine.slot.set_ready(true, "");
            tracing::info!(partitions = owned, "Partitions assigned and restored.");
        }
    }
}
