//! The engine's timers: fire what is due on input, announcement or idle, and dead-letter a
//! timer whose rule fails.

use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rules::{Ctx, Rules, Timer};
use schemas::CustomerKey;

use super::{Engine, EngineContext, EngineError};
use crate::config::TimerClock;
use crate::state::PartitionState;
use crate::trail::{Decision, Input, Outcome};

impl<R: Rules> Engine<R> {
    /// Fires every timer of the partition due at or before its "now", in due order.
    pub(super) fn fire_due_timers(
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
            // Lent, not copied, as for an input (`Engine::apply_input`).
            let mut aggregate: R::State = state.take_aggregate(&key_text);
            match self.rules.on_timer(&key, &mut aggregate, &timer, &ctx) {
                Ok(effects) => {
                    state.set_aggregate(&key_text, aggregate, timer.due_ms);
                    self.trail(|| {
                        Decision::new(&key_text, wall, timer_input(&timer), Outcome::Applied)
                            .with_effects(&effects)
                    })?;
                    let source = format!("timer-{}-{}", timer.timer_id, timer.due_ms);
                    self.apply_effects(state, &key, &shop, &source, timer.due_ms, effects)?;
                }
                Err(e) => {
                    state.put_back_aggregate(&key_text, aggregate);
                    let reason = format!("rule_error: {e}");
                    self.trail(|| {
                        Decision::new(&key_text, wall, timer_input(&timer), Outcome::DeadLetter)
                            .because(&reason)
                    })?;
                    self.timer_dead_letter(&key_text, &timer, &e.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The latest due time allowed to fire on this partition now (`None`: nothing may).
    pub(super) fn fire_limit(&self, state: &PartitionState, wall: i64) -> Option<i64> {
        match self.cfg.timers.clock {
            TimerClock::StreamTime => Some(state.now(wall)),
            TimerClock::Inputs => state.clock.horizon(&self.watermark).fire_up_to(),
        }
    }

    pub(super) fn timer_dead_letter(
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
    pub(super) fn on_idle(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
    ) -> Result<(), EngineError> {
        let wall = (self.clock)();
        // A state handed over at a revocation and not taken within a session timeout went to
        // another instance with its partition.
        self.slot.expire_handoffs(self.cfg.session_timeout);
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
}

fn timer_input(t: &Timer) -> Input {
    Input::Timer {
        timer_kind: t.kind.clone(),
        timer_id: t.timer_id.clone(),
        due_ms: t.due_ms,
    }
}
