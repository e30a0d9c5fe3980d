//! Prometheus metrics of the publisher; labels are endpoints, statuses and reasons only.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

/// Every metric the publisher exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `publisher_requests_total{endpoint,status}`: attempts by outcome (status code or
    /// `timeout`/`connect`/`other`).
    pub requests: IntCounterVec,
    /// `publisher_request_duration_seconds{endpoint}`.
    pub request_duration: HistogramVec,
    /// `publisher_limiter_wait_seconds{endpoint}`: time spent waiting for the rate limiter.
    pub limiter_wait: HistogramVec,
    /// `publisher_batch_records{endpoint}`: records per bulk request.
    pub batch_records: HistogramVec,
    /// `publisher_batch_bytes{endpoint}`: body bytes per bulk request.
    pub batch_bytes: HistogramVec,
    /// `publisher_retries_total{endpoint,reason}`.
    pub retries: IntCounterVec,
    /// `publisher_dead_letters_total{reason}`.
    pub dead_letters: IntCounterVec,
    /// `publisher_delivered_total{path}`: commands accepted by Iterable (`single`/`bulk`).
    pub delivered: IntCounterVec,
    /// `publisher_delivered_age_seconds`: now minus the command's event time at delivery.
    pub delivered_age: Histogram,
    /// `publisher_consumer_lag{partition}`: high watermark minus committed offset.
    pub consumer_lag: IntGaugeVec,
    /// `publisher_pending_commands`: read from Kafka, not yet delivered or dead-lettered.
    pub pending: IntGauge,
    /// `publisher_coalesced_total`: commands merged into another command's request.
    pub coalesced: IntCounterVec,
    /// `publisher_conflicts_total{endpoint}`: commands whose identifier field another
    /// Iterable user owns (delivered without it, recorded as `identifier_conflict`).
    pub conflicts: IntCounterVec,
    /// `publisher_lane_pending{lane}`: commands of the lane read and unfinished.
    pub lane_pending: IntGaugeVec,
    /// `publisher_lane_age_seconds{lane}`: now minus event time of delivered commands, per lane.
    pub lane_age: HistogramVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let latency = exponential_buckets(0.001, 2.0, 16)?;
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "tillstream_publisher_requests_total",
                    "Iterable requests by endpoint and status.",
                ),
                &["endpoint", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "tillstream_publisher_request_duration_seconds",
                    "Iterable request latency.",
                )
                .buckets(latency.clone()),
                &["endpoint"],
            )?,
            limiter_wait: HistogramVec::new(
                HistogramOpts::new(
                    "tillstream_publisher_limiter_wait_seconds",
                    "Time waiting for the rate limiter.",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 20)?),
                &["endpoint"],
            )?,
            batch_records: HistogramVec::new(
                HistogramOpts::new(
                    "tillstream_publisher_batch_records",
                    "Records per bulk request.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 12)?),
                &["endpoint"],
            )?,
            batch_bytes: HistogramVec::new(
                HistogramOpts::new(
                    "tillstream_publisher_batch_bytes",
                    "Body bytes per bulk request.",
                )
                .buckets(exponential_buckets(1024.0, 2.0, 13)?),
                &["endpoint"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "tillstream_publisher_retries_total",
                    "Retried requests by endpoint and reason.",
                ),
                &["endpoint", "reason"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "tillstream_publisher_dead_letters_total",
                    "Commands written to the dead-letter topic, by reason.",
                ),
                &["reason"],
            )?,
            delivered: IntCounterVec::new(
                Opts::new(
                    "tillstream_publisher_delivered_total",
                    "Commands accepted by Iterable.",
                ),
                &["path"],
            )?,
            delivered_age: Histogram::with_opts(
                HistogramOpts::new(
                    "tillstream_publisher_command_age_seconds",
                    "Now minus event time of delivered commands.",
                )
                .buckets(exponential_buckets(0.05, 2.0, 18)?),
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "tillstream_publisher_consumer_lag",
                    "High watermark minus committed offset, per partition.",
                ),
                &["partition"],
            )?,
            pending: IntGauge::new(
                "tillstream_publisher_pending_commands",
                "Commands read and not yet delivered or dead-lettered.",
            )?,
            coalesced: IntCounterVec::new(
                Opts::new(
                    "tillstream_publisher_coalesced_total",
                    "Commands merged into the request of an earlier command.",
                ),
                &["family"],
            )?,
            conflicts: IntCounterVec::new(
                Opts::new(
                    "tillstream_publisher_conflicts_total",
                    "Commands whose email/userId belongs to another Iterable user; the rest was delivered without it.",
                ),
                &["endpoint"],
            )?,
            lane_pending: IntGaugeVec::new(
                Opts::new(
                    "tillstream_publisher_lane_pending",
                    "Commands of the lane read from Kafka and not yet delivered or dead-lettered.",
                ),
                &["lane"],
            )?,
            lane_age: HistogramVec::new(
                HistogramOpts::new(
                    "tillstream_publisher_lane_age_seconds",
                    "Now minus event time of delivered commands, per delivery lane.",
                )
                // Fine below 2 s, where the lanes' latency targets are.
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
                    10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0,
                ]),
                &["lane"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.limiter_wait.clone()))?;
        registry.register(Box::new(m.batch_records.clone()))?;
        registry.register(Box::new(m.batch_bytes.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.delivered_age.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.coalesced.clone()))?;
        registry.register(Box::new(m.conflicts.clone()))?;
        registry.register(Box::new(m.lane_pending.clone()))?;
        registry.register(Box::new(m.lane_age.clone()))?;
        Ok(m)
    }
}
