//! Produces the merged runs to the raw topic in event-time order with the idempotent
//! producer, saving the checkpoint after every batch Kafka acknowledged; a resumed run skips
//! the events the checkpoint counts as acknowledged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{EventSource, ShopDomain, ShopifyEnvelope};

use super::checkpoint::{CheckpointFile, Stage};
use super::progress::Progress;
use super::runs::Merge;

/// Events sent before waiting for their acknowledgements and saving the checkpoint.
const BATCH: usize = 2000;

/// Where and how to produce.
pub(crate) struct Target<'a> {
    pub(crate) producer: &'a FutureProducer,
    pub(crate) topic: &'a str,
    pub(crate) shop: &'a ShopDomain,
    pub(crate) api_version: &'a str,
}

/// Produces from `cp.state.produced` on, at most `max` events; returns how many were
/// produced in this run and how long it took.
pub(crate) async fn produce(
    cp: &mut CheckpointFile,
    runs: &[PathBuf],
    target: &Target<'_>,
    max: Option<usize>,
    throttled: &AtomicU64,
    interval: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let Stage::Producing { total } = cp.state.stage else {
        anyhow::bail!("production started before every resource was spilled");
    };
    let start = cp.state.produced;
    let stop = max.map_or(total, |m| (start + m).min(total));
    let mut events = Merge::open(runs)?.skip(start).take(stop - start);
    let mut progress = Progress::new(
        "produce",
        "events",
        start as u64,
        Some(total as u64),
        interval,
    );
    let now = runtime::now_ms();
    loop {
        let mut prepared = Vec::with_capacity(BATCH);
        for e in events.by_ref().take(BATCH) {
            let e = e?;
            let key = schemas::routing_key(target.shop, e.topic, &e.body);
            let env = ShopifyEnvelope {
                delivery_id: e.delivery_id,
                event_id: None,
                topic: e.topic.to_owned(),
                shop_domain: target.shop.as_str().to_owned(),
                api_version: Some(target.api_version.to_owned()),
                triggered_at_ms: Some(e.at_ms),
                received_at_ms: now,
                routing_key: key.as_str().to_owned(),
                source: EventSource::Backfill,
                webhook_name: None,
                body: e.body,
            };
            prepared.push((
                env.encode().context("encoding an envelope")?,
                env.routing_key,
            ));
        }
        if prepared.is_empty() {
            break;
        }
        // `join_all` polls in order, so records are queued in event-time order (one partition
        // per key keeps it).
        let acks = prepared.iter().map(|(payload, key)| {
            target.producer.send(
                FutureRecord::to(target.topic).key(key).payload(payload),
                Duration::from_secs(60),
            )
        });
        for r in futures::future::join_all(acks).await {
            r.map_err(|(e, _)| e)
                .context("Kafka did not acknowledge a backfill record")?;
        }
        cp.state.produced += prepared.len();
        cp.save()?;
        progress.set(cp.state.produced as u64, || {
            format!("{} throttled", throttled.load(Ordering::Relaxed))
        });
    }
    Ok((cp.state.produced - start, progress.finish()))
}
