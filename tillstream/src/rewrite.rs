//! `tillstream raw rewrite`: copy the raw topic into a new one without erased customers' records.
//!
//! The raw topic is append-only with unlimited retention, so an erased customer's webhooks stay
//! in it. This command is how the raw log forgets: it copies every record to the same partition
//! of a new topic (same key, timestamp and headers, same order) except the records the erasure
//! registry covers; the operator then points the services at the new topic, replays, and
//! deletes the old one (README, "GDPR requests"). The same command migrates an existing raw
//! topic written before the registry existed.

use anyhow::{Context, bail};
use clap::Args;
use processor::erasure::{ErasureConfig, Registry};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use runtime::{KafkaConfig, TopicsConfig};

use crate::dlq::{read, reader, spans};

/// Records queued before waiting for their acknowledgements.
const BATCH: usize = 5_000;

/// `tillstream raw rewrite`.
#[derive(Args, Debug)]
pub(crate) struct RewriteArgs {
    /// The new raw topic: created with the raw topic's partitions and configs, and it must be
    /// empty.
    #[arg(long)]
    to: String,
    /// Count what would be copied and left out; create and write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What the rewrite did.
#[derive(Default)]
struct Tally {
    copied: u64,
    erased: u64,
}

/// Runs `tillstream raw rewrite`.
pub(crate) async fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    erasure: &ErasureConfig,
    args: &RewriteArgs,
) -> anyhow::Result<()> {
    if args.to == topics.raw {
        bail!(
            "--to must name a new topic, not the raw topic {}",
            topics.raw
        );
    }
    let erasures = tokio::task::block_in_place(|| Registry::load(erasure, kafka, &topics.erasures))
        .context("cannot read the erasure registry")?;
    let consumer = reader(kafka, "tillstream-raw-rewrite", "tillstream-raw-rewrite")?;
    let source = spans(&consumer, &topics.raw, true)?;
    if !args.dry_run {
        let mut target = topics.clone();
        target.raw = args.to.clone();
        target
            .apply(kafka)
            .await
            .with_context(|| format!("cannot create or verify {}", args.to))?;
        let existing = spans(&consumer, &args.to, true)?;
        if existing.values().any(|s| s.end > 0) {
            bail!(
                "{} already holds records: rewrite into a new, empty topic",
                args.to
            );
        }
    }
    let producer: FutureProducer = kafka
        .producer("tillstream-raw-rewrite")
        .create()
        .context("cannot create a Kafka producer")?;
    println!(
        "Rewriting {} into {} without the records of {} erased subject(s){}",
        topics.raw,
        args.to,
        erasures.len(),
        if args.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    let handle = tokio::runtime::Handle::current();
    let mut tally = Tally::default();
    let mut batch: Vec<DeliveryFuture> = Vec::new();
    tokio::task::block_in_place(|| {
        read(&consumer, &topics.raw, &source, |m| {
            let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
            let payload = m.payload().unwrap_or_default();
            if key.is_some_and(|k| erasures.covers_record(k, payload)) {
                tally.erased += 1;
                return Ok(true);
            }
            tally.copied += 1;
            if args.dry_run {
                return Ok(true);
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&args.to)
                .partition(m.partition())
                .payload(payload);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            if let Some(h) = m.headers() {
                record = record.headers(h.clone());
            }
            // The producer keeps the order of each partition (idempotent, in-flight ≤ 5).
            batch.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .context("cannot queue a record")?,
            );
            if batch.len() >= BATCH {
                wait_acks(&handle, &mut batch)?;
            }
            Ok(true)
        })?;
        wait_acks(&handle, &mut batch)
    })?;
    let verb = if args.dry_run { "Would copy" } else { "Copied" };
    println!(
        "{verb} {} record(s); left out {} about erased customers.",
        tally.copied, tally.erased
    );
    if !args.dry_run {
        println!(
            "Next: set topics.raw = {} for every service and the CLI, run `tillstream replay --from \
             earliest`, start the services, then delete {} (records written to it after this run \
             started are not copied: stop ingest before rewriting).",
            args.to, topics.raw
        );
    }
    Ok(())
}

/// Waits for every queued record's acknowledgement.
fn wait_acks(
    handle: &tokio::runtime::Handle,
    batch: &mut Vec<DeliveryFuture>,
) -> anyhow::Result<()> {
    for future in batch.drain(..) {
        match handle.block_on(future) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(e).context(
                    "a copied record was not acknowledged; delete the new topic and run again",
                );
            }
            Err(_) => bail!("the producer was dropped before acknowledging"),
        }
    }
    Ok(())
}
