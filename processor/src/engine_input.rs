//! The engine's input application: decode, route, dedup, run the rules, queue their effects
//! (commands, forwards, dead letters, erasures, shop purges).

use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rules::{Ctx, Effect, Rules};
use schemas::{Action, CustomerKey, KeyKind, ShopifyEnvelope};

use super::shred::Opening;
use super::{Engine, EngineError};
use crate::content::fingerprints;
use crate::state::PartitionState;
use crate::trail::{Decision, Input, Outcome};
use crate::watermark::PROGRESS_TOPIC;

/// Internal topic of the message that purges one shop's keys on one partition (shop/redact).
const SHOP_PURGE: &str = "tillstream/shop-purge";

/// Whether `body` is a JSON object (without building it).
fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

impl<R: Rules> Engine<R> {
    pub(super) fn dead_letter(
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
    pub(super) fn on_message(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), EngineError> {
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

        // Every input is decoded into the same envelope, whose buffers are reused.
        let mut env = std::mem::take(&mut self.input);
        let result = match env.decode_into(msg.payload().unwrap_or_default()) {
            Ok(()) => self.on_envelope(msg, source, &env),
            Err(e) => self.dead_letter(msg, "undecodable_envelope", &e.to_string()),
        };
        self.input = env;
        result
    }

    /// Processes one decoded input (`source`: `raw` or `repartition`).
    fn on_envelope(
        &mut self,
        msg: &BorrowedMessage<'_>,
        source: &str,
        env: &ShopifyEnvelope,
    ) -> Result<(), EngineError> {
        let p = msg.partition();
        if env.is_heartbeat() {
            if source == "raw" {
                self.on_heartbeat(p, env);
            }
            return Ok(());
        }
        if env.topic == PROGRESS_TOPIC {
            return self.on_announcement(p, env);
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
        // Only the raw input moves stream time (`PartitionClock::stream_ms` says why).
        if source == "raw"
            && state
                .clock
                .on_input(event_time, env.received_at_ms, &self.watermark)
        {
            self.metrics.late_arrivals.inc();
        }
        let result = self
            .fire_due_timers(&mut state, wall)
            .and_then(|()| self.apply_input(&mut state, msg, &key, env, event_time, wall));
        self.partitions.insert(p, state);
        result
    }

    pub(super) fn apply_input(
        &mut self,
        state: &mut PartitionState,
        msg: &BorrowedMessage<'_>,
        key: &CustomerKey,
        env: &ShopifyEnvelope,
        event_time: i64,
        wall: i64,
    ) -> Result<(), EngineError> {
        let input = || Input::Event {
            topic: env.topic.clone(),
            delivery_id: env.delivery_id.clone(),
            event_time_ms: event_time,
        };
        if env.topic != SHOP_PURGE && self.erasures.covers(key, event_time) {
            // Erasure is final (crate::erasure): checked before the dedup window, which would
            // otherwise create an entry for the erased key.
            self.metrics.erased_inputs.inc();
            return self.trail(|| Decision::new(key.as_str(), wall, input(), Outcome::Erased));
        }
        // Crypto-shredding: the rules, the dedup fingerprints and the dead-letter reasons all
        // see the opened body.
        let opened;
        let env = match self.open_body(msg.partition(), env)? {
            Opening::Plain => env,
            Opening::Opened(e) => {
                opened = e;
                &*opened
            }
            Opening::KeyGone => {
                self.metrics.erased_inputs.inc();
                return self.trail(|| Decision::new(key.as_str(), wall, input(), Outcome::Erased));
            }
            Opening::Unreadable(reason) => {
                let why = format!("sealed_body: {reason}");
                self.trail(|| {
                    Decision::new(key.as_str(), wall, input(), Outcome::DeadLetter).because(&why)
                })?;
                return self.dead_letter(msg, "sealed_body", &reason);
            }
        };
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
            return self.trail(|| Decision::new(key.as_str(), wall, input(), Outcome::Duplicate));
        }
        if env.topic == SHOP_PURGE {
            let at = serde_json::from_slice::<serde_json::Value>(&env.body)
                .ok()
                .and_then(|b| b["erased_at_ms"].as_i64())
                .unwrap_or(state.stream_time());
            self.erasures.note_shop(&env.shop_domain, at);
            self.shred_shop(&env.shop_domain, msg.partition())?;
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
            let reason = "unparseable_body: body is not a JSON object";
            self.trail(|| {
                Decision::new(key.as_str(), wall, input(), Outcome::DeadLetter).because(reason)
            })?;
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
        // Lent to the rules, not copied: they leave a failed input's state as it was
        // (`Rules::on_event`), so either way it goes back.
        let mut aggregate: R::State = state.take_aggregate(key.as_str());
        match self.rules.on_event(key, &mut aggregate, env, &ctx) {
            Ok(effects) => {
                state.set_aggregate(key.as_str(), aggregate, event_time);
                self.trail(|| {
                    Decision::new(key.as_str(), wall, input(), Outcome::Applied)
                        .with_effects(&effects)
                })?;
                let shop = &env.shop_domain;
                self.apply_effects(state, key, shop, &env.delivery_id, event_time, effects)
            }
            // The stored aggregate is untouched: a failed rule changes nothing. Forget the
            // fingerprints too, so the record can be redriven from the dead-letter topic once
            // the cause is fixed (otherwise the redrive would be dropped as a duplicate).
            Err(e) => {
                state.put_back_aggregate(key.as_str(), aggregate);
                state.forget(key.as_str(), &prints);
                let reason = format!("rule_error: {e}");
                self.trail(|| {
                    Decision::new(key.as_str(), wall, input(), Outcome::DeadLetter).because(&reason)
                })?;
                self.dead_letter(msg, "rule_error", &e.to_string())
            }
        }
    }

    /// Writes a decision to the trail (in the open transaction) when `engine.trail` is on;
    /// the record is only built then.
    pub(super) fn trail(&mut self, decision: impl FnOnce() -> Decision) -> Result<(), EngineError> {
        if !self.cfg.trail {
            return Ok(());
        }
        let d = decision();
        let topic = self.topics.decisions.clone();
        self.send(&topic, &d.key, Some(&d.to_bytes()), None)
    }

    pub(super) fn broadcast_shop_purge(
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

    pub(super) fn apply_effects(
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
                // Two-way consent (issue 20): a write for the Shopify writer, same transaction.
                Effect::ShopifyCommand(cmd) => {
                    let bytes = cmd.encode().map_err(|e| {
                        EngineError::Fatal(format!("cannot encode a Shopify command: {e}"))
                    })?;
                    self.metrics
                        .commands
                        .with_label_values(&["shopify_consent"])
                        .inc();
                    let topic = self.topics.shopify_commands.clone();
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
                // Only the decision trail records it.
                Effect::Suppressed { .. } => {}
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
            self.shred(key)?;
            state.purge(key.as_str());
        } else {
            state.mark_dirty(key.as_str());
        }
        Ok(())
    }

    /// Marks `key` erased at `at_ms` (GDPR): in memory now, and in the erasures topic within
    /// this transaction, so the marker commits exactly when the purge does.
    pub(super) fn record_erasure(
        &mut self,
        key: &CustomerKey,
        at_ms: i64,
    ) -> Result<(), EngineError> {
        if let Some(marker) = self.erasures.erase(key, at_ms) {
            let topic = self.topics.erasures.clone();
            self.send(&topic, &marker.key, Some(&marker.value), None)?;
            self.metrics.erasures.inc();
        }
        Ok(())
    }

    /// Replaces the in-memory erasure markers with the committed erasures topic.
    pub(super) fn reload_erasures(&mut self) -> Result<(), EngineError> {
        Ok(self.erasures.reload(&self.kafka, &self.topics.erasures)?)
    }
}
