//! Heartbeats: every few seconds ingest tells each raw partition "every webhook I accepted
//! before this instant is before this record".
//!
//! The processor's timers wait on them (processor/src/watermark.rs): a heartbeat is the only
//! way to tell "the store is quiet" from "ingest is not receiving", and a gap between heartbeats
//! is how the processor knows Shopify may still be retrying deliveries from that time. A
//! heartbeat that cannot be written is logged and counted; the gap it leaves is treated as an
//! outage, which is right: while Kafka refuses heartbeats it refuses webhooks too (503), and
//! Shopify retries them.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::producer::{FutureRecord, Producer};
use schemas::ShopifyEnvelope;
use tokio_util::sync::CancellationToken;

use crate::sink::KafkaSink;

/// How long one round of heartbeats may wait for its acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeats written, by outcome (`ok`, `failed`).
#[derive(Clone)]
pub struct HeartbeatMetrics {
    sent: IntCounterVec,
}

impl HeartbeatMetrics {
    /// Creates and registers the counter.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let sent = IntCounterVec::new(
            Opts::new(
                "tillstream_ingest_heartbeats_total",
                "Heartbeats written to raw partitions, by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        Ok(Self { sent })
    }
}

/// Writes a heartbeat to each partition of the raw topic (as the broker reports them, else
/// `partitions`) every `interval` until shutdown.
pub async fn run(
    sink: Arc<KafkaSink>,
    partitions: i32,
    instance: String,
    interval: Duration,
    metrics: HeartbeatMetrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The topic's real partition count (the configured one is only the fallback): a
        // partition left without heartbeats would hold every processor's timers.
        let probe = sink.clone();
        let found = tokio::task::spawn_blocking(move || {
            let md = probe
                .producer()
                .client()
                .fetch_metadata(Some(probe.topic()), Duration::from_secs(5))
                .ok()?;
            let n = md.topics().first()?.partitions().len();
            i32::try_from(n).ok().filter(|n| *n > 0)
        })
        .await
        .ok()
        .flatten();
        let at_ms = runtime::now_ms();
        let mut acks = Vec::new();
        for p in 0..found.unwrap_or(partitions) {
            let env = ShopifyEnvelope::heartbeat(&instance, p, at_ms);
            let bytes = match env.encode() {
                Ok(b) => b,
                Err(error) => {
                    tracing::error!(%error, "cannot encode a heartbeat");
                    return;
                }
            };
            let record = FutureRecord::to(sink.topic())
                .key(schemas::HEARTBEAT_TOPIC)
                .partition(p)
                .payload(&bytes);
            // Enqueued now, in order behind every webhook already handed to the producer.
            match sink.producer().send_result(record) {
                Ok(ack) => acks.push(ack),
                Err((error, _)) => {
                    metrics.sent.with_label_values(&["failed"]).inc();
                    tracing::warn!(%error, "heartbeat not queued; the processor will see a gap");
                }
            }
        }
        let acked = tokio::time::timeout(ACK_TIMEOUT, futures::future::join_all(acks)).await;
        for result in acked.unwrap_or_default() {
            match result {
                Ok(Ok(_)) => metrics.sent.with_label_values(&["ok"]).inc(),
                Ok(Err((error, _))) => {
                    metrics.sent.with_label_values(&["failed"]).inc();
                    tracing::warn!(%error, "heartbeat not written; the processor will see a gap");
                }
                Err(_) => metrics.sent.with_label_values(&["failed"]).inc(),
            }
        }
    }
}
