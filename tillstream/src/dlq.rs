//! `tillstream dlq inspect|redrive`: read the two dead-letter topics and send their records back.
//!
//! Progress of a redrive is a consumer group per dead-letter topic, committed only after a
//! batch's records were acknowledged on their source topic: a crash mid-run redrives at most
//! that batch again, and a second run starts where the first stopped.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use processor::erasure::{ErasureConfig, Registry};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{IterableCommand, ShopifyEnvelope};

use crate::topic_reader::{Reader, read, reader, spans};

/// Records acknowledged before each offset commit of a redrive.
const BATCH: usize = 500;

/// Why a dead letter about an erased customer is not redriven.
const ERASED: &str = "erased subject (GDPR redact): never sent again";

/// Header naming where a redriven record came from (`{dlq topic}/{partition}/{offset}`).
const REDRIVE_HEADER: &str = "tillstream.redrive.source";

/// `tillstream dlq`.
#[derive(Subcommand, Debug)]
pub(crate) enum DlqCmd {
    /// Print dead letters: partition and offset, key, error headers, a decoded preview.
    ///
    /// By default shows the records a redrive would send (after the redrive group's committed
    /// offsets); --from-beginning shows everything.
    Inspect(InspectArgs),
    /// Send dead letters back to the topic they came from, once.
    #[command(long_about = REDRIVE_ABOUT)]
    Redrive(RedriveArgs),
    /// Copy a dead-letter topic into a new one without the records of erased customers
    /// (GDPR: dead letters keep personal data forever otherwise).
    Rewrite(DlqRewriteArgs),
}

/// `tillstream dlq rewrite`.
#[derive(Debug, Args)]
pub(crate) struct DlqRewriteArgs {
    /// Which dead-letter topic.
    #[arg(long, value_enum)]
    pub(crate) topic: Which,
    #[command(flatten)]
    pub(crate) rewrite: crate::rewrite::RewriteArgs,
}

impl DlqRewriteArgs {
    /// The topic to rewrite.
    pub(crate) fn source(&self) -> crate::rewrite::Source {
        match self.topic {
            Which::Processor => crate::rewrite::Source::ProcessorDlq,
            Which::Publisher => crate::rewrite::Source::PublisherDlq,
        }
    }
}

const REDRIVE_ABOUT: &str = "\
Send dead letters back to the topic they came from, once.

Each dead letter's original key and bytes are re-published with the idempotent producer:
processor dead letters to the topic named in their tillstream.source.topic header (the raw or
repartition topic; the raw topic when absent), publisher dead letters to the commands topic.
Progress is kept in the consumer group tillstream-dlq-redrive-<topic> (with -<kind> appended
when --filter-kind is given), committed after each acknowledged batch, so a second run does
not redrive the same records again.

Fix the cause first (rules, configuration, Iterable project), then redrive: it is safe because
every Iterable event and purchase id is derived from its input, so a command that did reach
Iterable is updated, not duplicated, and the processor deduplicates events it already
processed. Records that fail again are dead-lettered again, with their new reason.";

/// Which dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Which {
    /// The processor's (`topics.processor_dlq`): raw events it could not process.
    Processor,
    /// The publisher's (`topics.publisher_dlq`): commands Iterable rejected permanently.
    Publisher,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Self::Processor => "processor",
            Self::Publisher => "publisher",
        }
    }

    fn topic(self, topics: &TopicsConfig) -> &str {
        match self {
            Self::Processor => &topics.processor_dlq,
            Self::Publisher => &topics.publisher_dlq,
        }
    }

    /// The header holding the low-cardinality failure kind.
    fn kind_header(self) -> &'static str {
        match self {
            Self::Processor => "tillstream.error.kind",
            Self::Publisher => "tillstream.reason.kind",
        }
    }
}

/// `tillstream dlq inspect`.
#[derive(Args, Debug)]
pub(crate) struct InspectArgs {
    /// Which dead-letter topic.
    #[arg(long, value_enum)]
    topic: Which,
    /// Print at most this many records.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Start at the beginning of the topic instead of after what was already redriven.
    #[arg(long)]
    from_beginning: bool,
    /// Show only records of this failure kind (`tillstream.error.kind` / `tillstream.reason.kind`).
    #[arg(long)]
    filter_kind: Option<String>,
}

/// `tillstream dlq redrive`.
#[derive(Args, Debug)]
pub(crate) struct RedriveArgs {
    /// Which dead-letter topic.
    #[arg(long, value_enum)]
    topic: Which,
    /// List what would be sent where, send nothing and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Redrive only records of this failure kind; others are left for a later run.
    #[arg(long)]
    filter_kind: Option<String>,
    /// Consumer group that records progress (default `tillstream-dlq-redrive-<topic>[-<kind>]`).
    #[arg(long)]
    group: Option<String>,
}

fn redrive_group(which: Which, kind: Option<&str>) -> String {
    match kind {
        Some(k) => format!("tillstream-dlq-redrive-{}-{k}", which.name()),
        None => format!("tillstream-dlq-redrive-{}", which.name()),
    }
}

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn header_str(m: &OwnedMessage, name: &str) -> Option<String> {
    header(m, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A bounded, terminal-safe preview: UTF-8 text with control characters escaped, else hex.
fn preview(bytes: &[u8], max: usize) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut out = String::new();
            for (i, c) in text.chars().enumerate() {
                if i >= max {
                    out.push_str(&format!("… ({} bytes in all)", bytes.len()));
                    break;
                }
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) => {
            let n = bytes.len().min(max / 2);
            let hex: String = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
            if n < bytes.len() {
                format!("hex {hex}… ({} bytes in all)", bytes.len())
            } else {
                format!("hex {hex}")
            }
        }
    }
}

fn timestamp_text(m: &OwnedMessage) -> String {
    m.timestamp()
        .to_millis()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

fn print_record(out: &mut impl Write, which: Which, m: &OwnedMessage) -> std::io::Result<()> {
    writeln!(
        out,
        "── {} partition {} offset {}  at {}",
        m.topic(),
        m.partition(),
        m.offset(),
        timestamp_text(m)
    )?;
    writeln!(
        out,
        "key: {}",
        m.key()
            .map_or_else(|| "(none)".to_owned(), |k| preview(k, 200))
    )?;
    if let Some(headers) = m.headers() {
        writeln!(out, "headers:")?;
        for h in headers.iter() {
            let value = h
                .value
                .map_or_else(|| "(null)".to_owned(), |v| preview(v, 300));
            writeln!(out, "  {:<28} {value}", h.key)?;
        }
    }
    let Some(payload) = m.payload() else {
        writeln!(out, "payload: (none)\n")?;
        return Ok(());
    };
    match which {
        Which::Processor => match ShopifyEnvelope::decode(payload) {
            Ok(e) => {
                writeln!(out, "payload: ShopifyEnvelope, {} bytes", payload.len())?;
                writeln!(
                    out,
                    "  topic {}  shop {}  delivery {}  key {}",
                    e.topic, e.shop_domain, e.delivery_id, e.routing_key
                )?;
                let at = e.triggered_at_ms.unwrap_or(e.received_at_ms);
                let at = chrono::DateTime::from_timestamp_millis(at)
                    .map_or_else(|| at.to_string(), |t| t.to_rfc3339());
                writeln!(out, "  event time {at}  source {:?}", e.source)?;
                match runtime::shred::sealed_key_id(&e.body) {
                    // Crypto-shredding: the CLI shows no personal data it would have to open.
                    Ok(id) => writeln!(
                        out,
                        "  body sealed ({} bytes) under data key {id}",
                        e.body.len()
                    )?,
                    Err(_) => writeln!(out, "  body {}", preview(&e.body, 400))?,
                }
            }
            Err(err) => writeln!(
                out,
                "payload: {} bytes, not a ShopifyEnvelope ({err}): {}",
                payload.len(),
                preview(payload, 400)
            )?,
        },
        Which::Publisher => match IterableCommand::decode(payload) {
            Ok(c) => {
                writeln!(out, "payload: IterableCommand, {} bytes", payload.len())?;
                writeln!(
                    out,
                    "  id {}  customer {}  action {}  user {:?}",
                    c.command_id,
                    c.customer_key,
                    c.action.kind(),
                    c.user
                )?;
                writeln!(
                    out,
                    "  {}",
                    preview(format!("{:?}", c.action).as_bytes(), 400)
                )?;
            }
            Err(err) => writeln!(
                out,
                "payload: {} bytes, not an IterableCommand ({err}): {}",
                payload.len(),
                preview(payload, 400)
            )?,
        },
    }
    writeln!(out)
}

/// Runs `tillstream dlq inspect`.
pub(crate) fn inspect(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    args: &InspectArgs,
) -> anyhow::Result<()> {
    match inspect_to(&mut std::io::stdout().lock(), kafka, topics, args) {
        // `tillstream dlq inspect | head` closed the pipe: not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn inspect_to(
    out: &mut impl Write,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    args: &InspectArgs,
) -> anyhow::Result<()> {
    let topic = args.topic.topic(topics).to_owned();
    let group = redrive_group(args.topic, None);
    let consumer = reader(kafka, "tillstream-dlq-inspect", &group)?;
    let spans = spans(&consumer, &topic, args.from_beginning)?;
    let pending: i64 = spans.values().map(|s| s.end - s.start).sum();
    let scope = if args.from_beginning {
        "from the beginning"
    } else {
        "after what the unfiltered redrive already sent"
    };
    // Offsets, not records: the processor writes dead letters in transactions, and each
    // transaction's commit marker takes an offset too.
    writeln!(out, "{topic}: {pending} offset(s) {scope}")?;
    for (p, s) in &spans {
        writeln!(out, "  partition {p}: offsets {}..{}", s.start, s.end)?;
    }
    writeln!(out)?;
    let mut shown = 0usize;
    if args.limit > 0 {
        read(&consumer, &topic, &spans, |m| {
            if let Some(k) = &args.filter_kind
                && header_str(&m, args.topic.kind_header()).as_deref() != Some(k.as_str())
            {
                return Ok(true);
            }
            print_record(out, args.topic, &m)?;
            shown += 1;
            Ok(shown < args.limit)
        })?;
    }
    let more = if shown == args.limit {
        " (limit reached; --limit to see more)"
    } else {
        ""
    };
    writeln!(out, "{shown} record(s) shown{more}")?;
    Ok(())
}

/// Where a dead letter goes back to, or why it cannot.
fn target(which: Which, topics: &TopicsConfig, m: &OwnedMessage) -> Result<String, String> {
    let source = header_str(m, "tillstream.source.topic");
    match which {
        Which::Processor => match source {
            Some(t) if t == topics.raw || t == topics.repartition => Ok(t),
            Some(t) => Err(format!("source topic {t} is not an input of the processor")),
            None if header_str(m, "tillstream.error.kind").as_deref()
                == Some("timer_rule_error") =>
            {
                Err("timer dead letters are not input records (a replay re-arms timers)".into())
            }
            None => Ok(topics.raw.clone()),
        },
        Which::Publisher => match source {
            Some(t) if t == topics.commands => Ok(t),
            Some(t) => Err(format!("source topic {t} is not the commands topic")),
            None => Ok(topics.commands.clone()),
        },
    }
}

/// Whether a dead letter is about an erased subject (GDPR): its record key is covered by the
/// erasure registry at the record's event time. Such records are never sent again.
fn erased(which: Which, erasures: &Registry, m: &OwnedMessage) -> bool {
    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        return false;
    };
    let payload = m.payload().unwrap_or_default();
    match which {
        Which::Processor => erasures.covers_record(key, payload),
        // An undated command counts as old: any marker of its key covers it.
        Which::Publisher => erasures.covers_text(
            key,
            IterableCommand::decode(payload).map_or(i64::MIN, |c| c.event_time_ms),
        ),
    }
}

/// Counts for the summary.
#[derive(Default)]
struct Tally {
    redriven: BTreeMap<String, u64>,
    skipped: BTreeMap<String, u64>,
    filtered: u64,
}

impl Tally {
    fn redriven_total(&self) -> u64 {
        self.redriven.values().sum()
    }

    fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Runs `tillstream dlq redrive`.
pub(crate) async fn redrive(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    erasure: &ErasureConfig,
    args: &RedriveArgs,
) -> anyhow::Result<()> {
    let which = args.topic;
    let erasures = tokio::task::block_in_place(|| Registry::load(erasure, kafka, &topics.erasures))
        .context("cannot read the erasure registry")?;
    let topic = which.topic(topics).to_owned();
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| redrive_group(which, args.filter_kind.as_deref()));
    let consumer = reader(kafka, "tillstream-dlq-redrive", &group)?;
    let spans = spans(&consumer, &topic, false)?;
    let pending: u64 = spans
        .values()
        .map(|s| u64::try_from(s.end - s.start).unwrap_or(0))
        .sum();
    let mode = if args.dry_run {
        " (dry run: nothing is sent or committed)"
    } else {
        ""
    };
    println!(
        "Redrive of {topic} with progress group {group}: {pending} offset(s) after the committed ones{mode}"
    );
    if pending == 0 {
        println!("Nothing to redrive.");
        return Ok(());
    }
    let producer: FutureProducer = kafka
        .producer("tillstream-dlq-redrive")
        .create()
        .context("cannot create a Kafka producer")?;

    let bar = ProgressBar::new(pending);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut tally = Tally::default();
    let mut batch: Vec<DeliveryFuture> = Vec::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut listed = 0usize;
    let mut examined = 0usize;
    let handle = tokio::runtime::Handle::current();
    // The consumer is blocking: run the loop on a blocking-capable thread and drive the
    // delivery futures from it with the runtime handle.
    let result = tokio::task::block_in_place(|| {
        let ends = read(&consumer, &topic, &spans, |m| {
            bar.inc(1);
            examined += 1;
            next.insert(m.partition(), m.offset() + 1);
            let kind = header_str(&m, which.kind_header()).unwrap_or_else(|| "-".into());
            if args.filter_kind.as_ref().is_some_and(|k| *k != kind) {
                tally.filtered += 1;
            } else if m.payload().is_none() {
                *tally.skipped.entry("no payload".into()).or_default() += 1;
            } else if erased(which, &erasures, &m) {
                *tally.skipped.entry(ERASED.into()).or_default() += 1;
            } else {
                match target(which, topics, &m) {
                    Err(why) => {
                        bar.suspend(|| {
                            println!("  skip {}/{} ({kind}): {why}", m.partition(), m.offset())
                        });
                        *tally.skipped.entry(why).or_default() += 1;
                    }
                    Ok(to) => {
                        if args.dry_run {
                            if listed < 50 {
                                bar.suspend(|| {
                                    println!(
                                        "  would send {}/{} ({kind}) → {to}",
                                        m.partition(),
                                        m.offset()
                                    )
                                });
                                listed += 1;
                            }
                        } else {
                            let source = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
                            let headers = OwnedHeaders::new().insert(Header {
                                key: REDRIVE_HEADER,
                                value: Some(source.as_str()),
                            });
                            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&to)
                                .payload(m.payload().unwrap_or_default())
                                .headers(headers);
                            if let Some(k) = m.key() {
                                record = record.key(k);
                            }
                            let future = producer
                                .send_result(record)
                                .map_err(|(e, _)| e)
                                .context("cannot queue a record")?;
                            batch.push(future);
                        }
                        *tally.redriven.entry(to).or_default() += 1;
                    }
                }
            }
            bar.set_message(format!(
                "redriven {}, skipped {}, filtered {}",
                tally.redriven_total(),
                tally.skipped_total(),
                tally.filtered
            ));
            // Commit regularly even when most records are filtered out, so progress is kept.
            if !args.dry_run && examined >= BATCH {
                examined = 0;
                flush(&handle, &consumer, &topic, &group, &mut batch, &mut next)?;
            }
            Ok(true)
        })?;
        for (p, end) in ends {
            let at = next.entry(p).or_insert(end);
            *at = (*at).max(end);
        }
        if !args.dry_run {
            flush(&handle, &consumer, &topic, &group, &mut batch, &mut next)?;
        }
        anyhow::Ok(())
    });
    bar.finish_and_clear();
    result?;

    let verb = if args.dry_run {
        "Would redrive"
    } else {
        "Redrove"
    };
    println!("{verb} {} record(s):", tally.redriven_total());
    for (to, n) in &tally.redriven {
        println!("  {n:>8} → {to}");
    }
    if tally.skipped_total() > 0 {
        println!(
            "Skipped {} record(s) (not redrivable):",
            tally.skipped_total()
        );
        for (why, n) in &tally.skipped {
            println!("  {n:>8}  {why}");
        }
    }
    if tally.filtered > 0 {
        println!(
            "Left {} record(s) of other kinds (not --filter-kind {}).",
            tally.filtered,
            args.filter_kind.as_deref().unwrap_or("")
        );
    }
    if !args.dry_run {
        println!("Progress committed in group {group}: a second run starts after these records.");
    }
    Ok(())
}

/// Waits for every queued record's acknowledgement, then commits the examined offsets.
fn flush(
    handle: &tokio::runtime::Handle,
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    group: &str,
    batch: &mut Vec<DeliveryFuture>,
    next: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    for future in batch.drain(..) {
        match handle.block_on(future) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(e).context("a redriven record was not acknowledged; nothing of this batch is committed, run again");
            }
            Err(_) => bail!("the producer was dropped before acknowledging"),
        }
    }
    if next.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in next.iter() {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, CommitMode::Sync).with_context(|| {
        format!("records were redriven but progress could not be committed in group {group}")
    })?;
    next.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_is_bounded_and_escapes_controls() {
        assert_eq!(preview(b"a\x1b[31mb", 100), "a\\u{1b}[31mb");
        assert!(preview(&[b'x'; 1000], 10).starts_with("xxxxxxxxxx… (1000 bytes"));
        assert_eq!(preview(&[0xc3, 0x01, 0xff], 100), "hex c301ff");
    }

    #[test]
    fn groups_are_per_topic_and_filter() {
        assert_eq!(
            redrive_group(Which::Processor, None),
            "tillstream-dlq-redrive-processor"
        );
        assert_eq!(
            redrive_group(Which::Publisher, Some("http_400")),
            "tillstream-dlq-redrive-publisher-http_400"
        );
    }
}
