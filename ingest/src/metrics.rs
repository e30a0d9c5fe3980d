//! Prometheus metrics of the webhook endpoint, registered on a per-instance registry.
//!
//! Label values never come straight from a request: topics are mapped onto a fixed list (else
//! `other`, or `unverified` before the signature is checked), so a hostile sender cannot grow
//! the series count.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Every Shopify topic ingest knows by name (labels); others are counted as `other`.
pub const KNOWN_TOPICS: &[&str] = &[
    "app/uninstalled",
    "bulk_operations/finish",
    "carts/create",
    "carts/update",
    "checkouts/create",
    "checkouts/delete",
    "checkouts/update",
    "customer.tags_added",
    "customer.tags_removed",
    "customers/create",
    "customers/data_request",
    "customers/delete",
    "customers/disable",
    "customers/enable",
    "customers/merge",
    "customers/purchasing_summary",
    "customers/redact",
    "customers/update",
    "customers_email_marketing_consent/update",
    "customers_marketing_consent/update",
    "customers_whats_app_marketing_consent/update",
    "inventory_levels/update",
    "order_transactions/create",
    "orders/cancelled",
    "orders/create",
    "orders/delete",
    "orders/edited",
    "orders/fulfilled",
    "orders/paid",
    "orders/partially_fulfilled",
    "orders/updated",
    "products/create",
    "products/delete",
    "products/update",
    "refunds/create",
    "shop/redact",
];

/// Topics tillstream models (the fixture checklist of the Shopify reference). Anything else is
/// still published — the raw topic is the system of record — and counted as unused.
pub const USED_TOPICS: &[&str] = &[
    "app/uninstalled",
    "bulk_operations/finish",
    "carts/create",
    "carts/update",
    "checkouts/create",
    "checkouts/delete",
    "checkouts/update",
    "customer.tags_added",
    "customer.tags_removed",
    "customers/create",
    "customers/data_request",
    "customers/delete",
    "customers/disable",
    "customers/enable",
    "customers/purchasing_summary",
    "customers/redact",
    "customers/update",
    "customers_email_marketing_consent/update",
    "customers_marketing_consent/update",
    "orders/cancelled",
    "orders/create",
    "orders/delete",
    "orders/fulfilled",
    "orders/paid",
    "orders/partially_fulfilled",
    "orders/updated",
    "products/create",
    "products/delete",
    "products/update",
    "refunds/create",
    "shop/redact",
];

/// The label for a verified topic: itself when known, else `other`.
pub fn topic_label(topic: &str) -> &'static str {
    KNOWN_TOPICS
        .binary_search(&topic)
        .map(|i| KNOWN_TOPICS[i])
        .unwrap_or("other")
}

/// Whether tillstream's processor uses the topic.
pub fn is_used(topic: &str) -> bool {
    USED_TOPICS.binary_search(&topic).is_ok()
}

/// The endpoint's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `tillstream_ingest_requests_total{topic,status}`.
    pub requests: IntCounterVec,
    /// `tillstream_ingest_hmac_failures_total{reason}`: missing, malformed, mismatch.
    pub hmac_failures: IntCounterVec,
    /// `tillstream_ingest_hmac_verified_total{secret}`: which configured secret matched (0 = current).
    pub hmac_verified: IntCounterVec,
    /// `tillstream_ingest_rejected_total{reason}`: every non-2xx answer by cause.
    pub rejected: IntCounterVec,
    /// `tillstream_ingest_unused_topic_total{topic}`: published deliveries of topics tillstream ignores.
    pub unused_topics: IntCounterVec,
    /// `tillstream_ingest_suspect_bodies_total{kind}`: verified bodies published verbatim although they
    /// are not UTF-8 (`invalid_utf8`) or not JSON (`not_json`); the processor dead-letters them.
    pub suspect_bodies: IntCounterVec,
    /// `tillstream_ingest_publish_seconds{outcome}`: from handing the record to the producer to
    /// the broker's acknowledgement (`ok`), the ack timeout (`timeout`) or an error (`error`).
    pub publish_seconds: HistogramVec,
    /// `tillstream_ingest_body_bytes`: sizes of the bodies read (accepted or not).
    pub body_bytes: Histogram,
    /// `tillstream_ingest_in_flight`: webhook requests being handled now.
    pub in_flight: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_requests_total",
                "Webhook requests by topic and HTTP status.",
            ),
            &["topic", "status"],
        )?;
        let hmac_failures = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_hmac_failures_total",
                "Requests refused with 401 by signature problem.",
            ),
            &["reason"],
        )?;
        let hmac_verified = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_hmac_verified_total",
                "Verified bodies by the index of the secret that matched (0 = current).",
            ),
            &["secret"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_rejected_total",
                "Webhook requests not answered 200, by reason.",
            ),
            &["reason"],
        )?;
        let unused_topics = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_unused_topic_total",
                "Published deliveries of topics the processor does not use.",
            ),
            &["topic"],
        )?;
        let suspect_bodies = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_suspect_bodies_total",
                "Verified bodies published verbatim that are not UTF-8 or not JSON.",
            ),
            &["kind"],
        )?;
        let publish_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tillstream_ingest_publish_seconds",
                "Time from producing a record to the broker's acknowledgement.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["outcome"],
        )?;
        let body_bytes = Histogram::with_opts(
            HistogramOpts::new(
                "tillstream_ingest_body_bytes",
                "Sizes of webhook bodies read, in bytes.",
            )
            .buckets(vec![
                256.0,
                1024.0,
                4096.0,
                16384.0,
                65536.0,
                262_144.0,
                1_048_576.0,
                4_194_304.0,
                16_777_216.0,
            ]),
        )?;
        let in_flight = IntGauge::new(
            "tillstream_ingest_in_flight",
            "Webhook requests being handled.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(hmac_failures.clone()))?;
        registry.register(Box::new(hmac_verified.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(unused_topics.clone()))?;
        registry.register(Box::new(suspect_bodies.clone()))?;
        registry.register(Box::new(publish_seconds.clone()))?;
        registry.register(Box::new(body_bytes.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            requests,
            hmac_failures,
            hmac_verified,
            rejected,
            unused_topics,
            suspect_bodies,
            publish_seconds,
            body_bytes,
            in_flight,
        })
    }

    /// Records the publish outcome and its latency.
    pub fn observe_publish(&self, outcome: &str, elapsed: Duration) {
        self.publish_seconds
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_lists_are_sorted_for_binary_search_and_used_is_a_subset() {
        assert!(KNOWN_TOPICS.windows(2).all(|w| w[0] < w[1]));
        assert!(USED_TOPICS.windows(2).all(|w| w[0] < w[1]));
        assert!(USED_TOPICS.iter().all(|t| KNOWN_TOPICS.contains(t)));
        assert_eq!(topic_label("orders/paid"), "orders/paid");
        assert_eq!(topic_label("made/up"), "other");
        assert!(is_used("shop/redact"));
        assert!(!is_used("inventory_levels/update"));
    }

    #[test]
    fn registers_once_per_registry() {
        let r = Registry::new();
        Metrics::new(&r).unwrap();
        assert!(Metrics::new(&r).is_err());
        Metrics::new(&Registry::new()).unwrap();
    }
}
