//! Produces the merged runs to the raw topic in event-time order with the idempotent
//! producer, saving the checkpoint after every batch Kafka acknowledged; a resumed run skips
//! the events the checkpoint counts as acknowledged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use processor::erasure::Registry;
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
    /// Erased subjects: their events are left out (GDPR).
    pub(crate) erasures: &'a Registry,
    /// Crypto-shredding, as ingest does it (`None`: no `erasure.master_key`).
    pub(crate) sealer: Option<&'a runtime::shred::Sealer>,
}

/// Produces from `cp.state.produced` on, at most `max` events, leaving out those about erased
/// subjects; returns how many were passed in this run (produced or left out), how many of them
/// were left out, and how long it took.
pub(crate) async fn produce(
    cp: &mut CheckpointFile,
    runs: &[PathBuf],
    target: &Target<'_>,
    max: Option<usize>,
    throttled: &AtomicU64,
    interval: Duration,
) -> anyhow::Result<(usize, usize, Duration)> {
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
    let mut erased = 0;
    loop {
        let mut prepared = Vec::with_capacity(BATCH);
        // Events taken from the runs, produced or not: the checkpoint counts positions.
        let mut taken = 0;
        for e in events.by_ref().take(BATCH) {
            let e = e?;
            taken += 1;
            let key = schemas::routing_key(target.shop, e.topic, &e.body);
            if target.erasures.covers(&key, e.at_ms) {
                erased += 1;
                continue;
            }
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
                body: match target.sealer {
                    Some(sealer) if key.kind().names_person() => sealer
                        .seal(key.as_str(), &e.body)
                        .await
                        .context("cannot store a data key")?,
                    _ => e.body,
                },
            };
            prepared.push((
                env.encode().context("encoding an envelope")?,
                env.routing_key,
            ));
        }
        if taken == 0 {
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
        cp.state.produced += taken;
        cp.save()?;
        progress.set(cp.state.produced as u64, || {
            format!("{} throttled", throttled.load(Ordering::Relaxed))
        });
    }
    Ok((cp.state.produced - start, erased, progress.finish()))
}
