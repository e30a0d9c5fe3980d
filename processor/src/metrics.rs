//! The processor's Prometheus metrics (names are the contract used by the Grafana dashboard).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// All processor metrics, registered once per process.
#[derive(Clone)]
pub struct Metrics {
    /// Input records consumed, by source topic kind (`raw`, `repartition`).
    pub events: IntCounterVec,
    /// Inputs skipped as duplicates (delivery id or content fingerprint seen before).
    pub dedup_hits: IntCounter,
    /// Inputs dropped because their subject was erased (GDPR redact).
    pub erased_inputs: IntCounter,
    /// Erasure markers written (one per purged person key or shop).
    pub erasures: IntCounter,
    /// Sealed bodies met (crypto-shredding), by outcome: `opened`, `key_gone` (the subject's
    /// data key was erased: dropped), `unreadable` (dead-lettered).
    pub sealed_inputs: IntCounterVec,
    /// Data keys deleted (tombstoned) by erasures.
    pub keys_erased: IntCounter,
    /// Records sent to the dead-letter topic, by error kind.
    pub dead_letters: IntCounterVec,
    /// Commands written, by kind (event name for tracked events, else the action kind).
    pub commands: IntCounterVec,
    /// Transactions ended, by outcome (`commit`, `abort`).
    pub transactions: IntCounterVec,
    /// Time to commit a transaction.
    pub commit_seconds: Histogram,
    /// Timers pending across owned partitions.
    pub timers_pending: IntGauge,
    /// Timers fired.
    pub timers_fired: IntCounter,
    /// Timers whose inputs are complete to their due time but which the late-data rule holds
    /// (an ingest outage or late arrivals may still deliver the event that cancels them).
    pub timers_deferred: IntGauge,
    /// How long after its due time (wall clock) each timer fired: recovery after an outage
    /// shows here.
    pub timer_fire_delay: Histogram,
    /// Raw inputs received long after their event time (late arrivals).
    pub late_arrivals: IntCounter,
    /// Time to restore one partition from the changelog.
    pub restore_seconds: Histogram,
    /// Restores that waited for a transaction open on their changelog partition (the previous
    /// owner's last, in flight while the partition moved) before reading it.
    pub restore_waits: IntCounter,
    /// Partitions taken over in memory from a revocation in this instance (a thread giving
    /// them up after its commit) instead of restored from the changelog.
    pub restore_handoffs: IntCounter,
    /// Group rebalance callbacks, by kind: `assign`, `revoke`, `lost` (the session expired,
    /// e.g. while the group coordinator moved: every partition is restored again), `error`.
    pub rebalances: IntCounterVec,
    /// Keys held in memory.
    pub keys: IntGauge,
    /// Consumer lag per partition (raw + repartition).
    pub lag: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            events: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_events_total",
                    "Input records consumed.",
                ),
                &["source"],
            )?,
            dedup_hits: IntCounter::new(
                "tillstream_processor_dedup_hits_total",
                "Inputs skipped as duplicates.",
            )?,
            erased_inputs: IntCounter::new(
                "tillstream_processor_erased_inputs_total",
                "Inputs dropped because their subject was erased.",
            )?,
            erasures: IntCounter::new(
                "tillstream_processor_erasures_total",
                "Erasure markers written.",
            )?,
            sealed_inputs: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_sealed_inputs_total",
                    "Sealed raw bodies met, by outcome (opened, key_gone, unreadable).",
                ),
                &["outcome"],
            )?,
            keys_erased: IntCounter::new(
                "tillstream_processor_data_keys_erased_total",
                "Data keys deleted by erasures (crypto-shredding).",
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_dead_letters_total",
                    "Records dead-lettered.",
                ),
                &["kind"],
            )?,
            commands: IntCounterVec::new(
                Opts::new("tillstream_processor_commands_total", "Commands written."),
                &["kind"],
            )?,
            transactions: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_transactions_total",
                    "Transactions ended.",
                ),
                &["outcome"],
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tillstream_processor_commit_seconds",
                    "Transaction commit latency.",
                )
                .buckets(vec![
                    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
            )?,
            timers_pending: IntGauge::new(
                "tillstream_processor_timers_pending",
                "Timers pending.",
            )?,
            timers_fired: IntCounter::new(
                "tillstream_processor_timers_fired_total",
                "Timers fired.",
            )?,
            timers_deferred: IntGauge::new(
                "tillstream_processor_timers_deferred",
                "Timers held by the late-data rule.",
            )?,
            timer_fire_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "tillstream_processor_timer_fire_delay_seconds",
                    "Wall-clock time from a timer's due time to its firing.",
                )
                .buckets(vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0,
                ]),
            )?,
            late_arrivals: IntCounter::new(
                "tillstream_processor_late_arrivals_total",
                "Raw inputs received long after their event time.",
            )?,
            restore_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tillstream_processor_restore_seconds",
                    "Partition restore duration.",
                )
                .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0]),
            )?,
            restore_waits: IntCounter::new(
                "tillstream_processor_restore_waits_total",
                "Partition restores that waited for a transaction open on the changelog to end.",
            )?,
            restore_handoffs: IntCounter::new(
                "tillstream_processor_restore_handoffs_total",
                "Partitions taken over from a revocation in this instance instead of restored from the changelog.",
            )?,
            rebalances: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_rebalances_total",
                    "Group rebalance callbacks (assign, revoke, lost, error).",
                ),
                &["kind"],
            )?,
            keys: IntGauge::new("tillstream_processor_keys", "Keys held in memory.")?,
            lag: IntGaugeVec::new(
                Opts::new("tillstream_processor_lag", "Consumer lag in records."),
                &["topic", "partition"],
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.dedup_hits.clone()))?;
        registry.register(Box::new(m.erased_inputs.clone()))?;
        registry.register(Box::new(m.erasures.clone()))?;
        registry.register(Box::new(m.sealed_inputs.clone()))?;
        registry.register(Box::new(m.keys_erased.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.commands.clone()))?;
        registry.register(Box::new(m.transactions.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.timers_pending.clone()))?;
        registry.register(Box::new(m.timers_fired.clone()))?;
        registry.register(Box::new(m.timers_deferred.clone()))?;
        registry.register(Box::new(m.timer_fire_delay.clone()))?;
        registry.register(Box::new(m.late_arrivals.clone()))?;
        registry.register(Box::new(m.restore_seconds.clone()))?;
        registry.register(Box::new(m.restore_waits.clone()))?;
        registry.register(Box::new(m.restore_handoffs.clone()))?;
        registry.register(Box::new(m.rebalances.clone()))?;
        registry.register(Box::new(m.keys.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        Ok(m)
    }
}

/// `tillstream_processor_coerced_fields_total{kind}`: secondary payload fields the rules read
/// leniently (`boolean`, `text`, `integer`: coerced; `ignored`: an unusable type treated as
/// absent; README.md, "Lenient and strict fields"). The rules count them in shared atomics;
/// this collector copies the counts at scrape time, so the engine's hot path does nothing.
pub struct CoercedFields {
    rules: rules::MarketingRules,
    counter: IntCounterVec,
}

impl CoercedFields {
    /// A collector over the counters of `rules` (and every clone of it).
    pub fn new(rules: rules::MarketingRules) -> prometheus::Result<Self> {
        Ok(Self {
            rules,
            counter: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_coerced_fields_total",
                    "Secondary payload fields coerced or ignored by the rules, by kind.",
                ),
                &["kind"],
            )?,
        })
    }
}

impl prometheus::core::Collector for CoercedFields {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let c = self.rules.coercions();
        for (kind, total) in [
            ("boolean", c.boolean),
            ("text", c.text),
            ("integer", c.integer),
            ("ignored", c.ignored),
        ] {
            let m = self.counter.with_label_values(&[kind]);
            m.inc_by(total.saturating_sub(m.get()));
        }
        self.counter.collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus::core::Collector;
    use rules::Rules;

    /// A string boolean in an order shows in the scrape, counted once per value.
    #[test]
    fn coerced_fields_are_exported() {
        let rules = rules::MarketingRules::new(rules::RulesConfig::default());
        let collector = CoercedFields::new(rules.clone()).unwrap();
        let body = br#"{"id": 4101, "email": "a@example.com", "test": "FALSE",
            "created_at": "2026-01-05T09:00:00-05:00", "financial_status": "paid",
            "total_price": "10.00", "currency": "USD", "line_items": []}"#;
        let key = schemas::CustomerKey::parse("demo.myshopify.com/e/a@example.com").unwrap();
        let env = schemas::ShopifyEnvelope {
            delivery_id: "d1".into(),
            event_id: None,
            topic: "orders/paid".into(),
            shop_domain: "demo.myshopify.com".into(),
            api_version: None,
            triggered_at_ms: Some(1_767_621_600_000),
            received_at_ms: 1_767_621_600_000,
            routing_key: key.as_str().into(),
            source: schemas::EventSource::Webhook,
            webhook_name: None,
            body: body.to_vec(),
        };
        let ctx = rules::Ctx {
            now_ms: 1_767_621_600_000,
            event_time_ms: 1_767_621_600_000,
            wall_clock_ms: 1_767_621_600_000,
        };
        let mut state = rules::State::default();
        rules.on_event(&key, &mut state, &env, &ctx).unwrap();
        let value = |c: &CoercedFields| {
            c.collect()
                .iter()
                .flat_map(|f| f.get_metric().iter())
                .filter(|m| m.get_label().iter().any(|l| l.value() == "boolean"))
                .map(|m| m.get_counter().get_value())
                .sum::<f64>()
        };
        assert_eq!(value(&collector), 1.0);
        // A second scrape reports the same total, not twice it.
        assert_eq!(value(&collector), 1.0);
    }
}
