//! `tillstream raw rewrite` / `dlq rewrite`: copy a topic into a new one without erased people.
//!
//! The raw topic and the dead-letter topics are append-only with unlimited retention, so an
//! erased customer's webhooks (and their dead letters: the original envelope, or the command
//! with its personal fields) stay in them. This is how they forget: every record is copied to
//! the same partition of a new topic (same key, timestamp and headers, same order) except the
//! records the erasure registry covers; the operator then points the services at the new
//! topic (and, for the raw topic, replays) and deletes the old one (README, "GDPR requests").
//! The same command migrates a raw topic written before the registry existed.

use anyhow::{Context, bail};
use clap::Args;
use processor::erasure::{ErasureConfig, Registry};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use runtime::{KafkaConfig, TopicsConfig};

use crate::topic_reader::{read, reader, spans};

/// Records queued before waiting for their acknowledgements.
const BATCH: usize = 5_000;

/// The topic being rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `topics.raw`.
    Raw,
    /// `topics.processor_dlq` (original envelopes).
    ProcessorDlq,
    /// `topics.publisher_dlq` (commands; keyed by the customer key).
    PublisherDlq,
}

impl Source {
    fn setting(self) -> &'static str {
        match self {
            Self::Raw => "topics.raw",
            Self::ProcessorDlq => "topics.processor_dlq",
            Self::PublisherDlq => "topics.publisher_dlq",
        }
    }

    fn topic(self, topics: &TopicsConfig) -> &str {
        match self {
            Self::Raw => &topics.raw,
            Self::ProcessorDlq => &topics.processor_dlq,
            Self::PublisherDlq => &topics.publisher_dlq,
        }
    }

    /// The catalogue with this topic renamed to `to` (so `apply` creates it with its shape).
    fn renamed(self, topics: &TopicsConfig, to: &str) -> TopicsConfig {
        let mut t = topics.clone();
        match self {
            Self::Raw => t.raw = to.to_owned(),
            Self::ProcessorDlq => t.processor_dlq = to.to_owned(),
            Self::PublisherDlq => t.publisher_dlq = to.to_owned(),
        }
        t
    }
}

/// `tillstream raw rewrite` and `tillstream dlq rewrite`.
#[derive(Args, Debug)]
pub(crate) struct RewriteArgs {
    /// The new topic: created with the source topic's partitions and configs, and it must be
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
    /// Plain person bodies sealed on the way (migration to crypto-shredding).
    sealed: u64,
}

/// Rewrites `source` into `args.to`.
pub(crate) async fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    erasure: &ErasureConfig,
    source_topic: Source,
    args: &RewriteArgs,
) -> anyhow::Result<()> {
    let from = source_topic.topic(topics).to_owned();
    if args.to == from {
        bail!("--to must name a new topic, not {from} itself");
    }
    let erasures = tokio::task::block_in_place(|| Registry::load(erasure, kafka, &topics.erasures))
        .context("cannot read the erasure registry")?;
    let consumer = reader(kafka, "tillstream-rewrite", "tillstream-rewrite")?;
    let source = spans(&consumer, &from, true)?;
    if !args.dry_run {
        source_topic
            .renamed(topics, &args.to)
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
        from,
        args.to,
        erasures.len(),
        if args.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    // Migration: with a master key, a raw rewrite also seals the bodies written in clear
    // before crypto-shredding was turned on (as ingest would have).
    let sealer = match source_topic {
        Source::Raw if !args.dry_run => runtime::shred::Sealer::for_kafka(erasure, kafka, topics)?,
        _ => None,
    };
    let handle = tokio::runtime::Handle::current();
    let mut tally = Tally::default();
    let mut batch: Vec<DeliveryFuture> = Vec::new();
    tokio::task::block_in_place(|| {
        read(&consumer, &from, &source, |m| {
            let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
            let payload = m.payload().unwrap_or_default();
            // Raw and processor dead letters hold envelopes (erased from the redact's time on,
            // for emails and shops); a publisher dead letter is a command, which any marker of
            // its key covers.
            if key.is_some_and(|k| erasures.covers_record(k, payload)) {
                tally.erased += 1;
                return Ok(true);
            }
            tally.copied += 1;
            if args.dry_run {
                return Ok(true);
            }
            let resealed = match (&sealer, key) {
                (Some(sealer), Some(key)) => seal_plain(&handle, sealer, key, payload)?,
                _ => None,
            };
            if resealed.is_some() {
                tally.sealed += 1;
            }
            let payload = resealed.as_deref().unwrap_or(payload);
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
    if sealer.is_some() {
        println!(
            "Sealed {} plain body(ies) about a person on the way (crypto-shredding).",
            tally.sealed
        );
    }
    if !args.dry_run {
        match source_topic {
            Source::Raw => println!(
                "Next: set topics.raw = {} for every service and the CLI, run `tillstream replay \
                 --from earliest`, start the services, then delete {from} (records written to it \
                 after this run started are not copied: stop ingest before rewriting).",
                args.to
            ),
            Source::ProcessorDlq | Source::PublisherDlq => println!(
                "Next: set {} = {} for every service and the CLI, restart them, then delete \
                 {from} (dead letters written to it after this run started are not copied: stop \
                 the {} first).",
                source_topic.setting(),
                args.to,
                if source_topic == Source::ProcessorDlq {
                    "processor"
                } else {
                    "publisher"
                }
            ),
        }
    }
    Ok(())
}

/// A raw record's envelope with its body sealed, when its key names a person and the body is
/// still in clear (`None`: copied as it is).
fn seal_plain(
    handle: &tokio::runtime::Handle,
    sealer: &runtime::shred::Sealer,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<Option<Vec<u8>>> {
    let names_person = schemas::CustomerKey::parse(key).is_ok_and(|k| k.kind().names_person());
    let Ok(mut env) = schemas::ShopifyEnvelope::decode(payload) else {
        return Ok(None);
    };
    if !names_person || runtime::shred::is_sealed(&env.body) {
        return Ok(None);
    }
    env.body = handle
        .block_on(sealer.seal(key, &env.body))
        .context("cannot store a data key")?;
    Ok(Some(env.encode().context("cannot encode an envelope")?))
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
