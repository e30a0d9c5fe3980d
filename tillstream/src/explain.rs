//! `tillstream explain <key>`: the key's last decisions from the processor's trail, each with
//! what the publisher did with its commands (delivered, pending, dead-lettered and why).
//!
//! Everything is read from Kafka, so it works with every processor stopped: the decisions
//! topic (written by the processor with `engine.trail = true`, keyed and partitioned like the
//! state), the commands topic's same partition (where each command is, against the publisher
//! group's committed offset) and the publisher's dead-letter topic (the reason, by command id).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use processor::trail::{Decision, Input, Outcome};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::IterableCommand;
use serde::Serialize;

use crate::topic_reader::{self, Reader, Span};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `tillstream explain`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// The key, e.g. `demo.myshopify.com/c/123` (or just the id with `--shop`).
    key: String,
    /// Shop domain, when `key` is a bare customer id.
    #[arg(long)]
    shop: Option<String>,
    /// How many decisions to show (the newest).
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// How far back to read (the trail keeps 7 days).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// The publisher's consumer group, to tell delivered commands from pending ones.
    #[arg(
        long,
        default_value = "tillstream-publisher",
        env = "TILLSTREAM_PUBLISHER_GROUP"
    )]
    publisher_group: String,
    /// Print JSON (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

/// What became of a command at the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Delivery {
    /// Accepted by Iterable (the publisher committed past it and did not dead-letter it).
    Delivered,
    /// Not yet committed by the publisher.
    Pending,
    /// Dead-lettered by the publisher.
    DeadLettered {
        /// The reason in the dead letter.
        reason: String,
    },
    /// Not found in the commands topic's window (older than `--since`, or expired).
    Unknown,
}

/// One decision with the fate of its commands.
#[derive(Debug, Serialize)]
pub(crate) struct Explained {
    #[serde(flatten)]
    decision: Decision,
    /// Per command id.
    delivery: BTreeMap<String, Delivery>,
}

/// Reads and prints the trail of a key.
pub(crate) fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    args: &ExplainArgs,
) -> anyhow::Result<()> {
    let key = match (&args.shop, args.key.contains('/')) {
        (Some(shop), false) => format!("{shop}/c/{}", args.key),
        _ => args.key.clone(),
    };
    let explained = explain(kafka, topics, &key, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explained)?);
    } else if explained.is_empty() {
        println!(
            "No decisions for {key} in the last {}: the trail is off (engine.trail), the key \
             saw no input, or its records expired.",
            humantime::format_duration(args.since)
        );
    } else {
        print!("{}", text(&key, &explained));
    }
    Ok(())
}

fn explain(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    key: &str,
    args: &ExplainArgs,
) -> anyhow::Result<Vec<Explained>> {
    let p = processor::partitioner::partition_for(key, topics.partitions);
    let since_ms = runtime::now_ms() - i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX);
    let consumer = topic_reader::reader(kafka, "tillstream-explain", "tillstream-explain")?;

    let mut decisions: Vec<Decision> = Vec::new();
    let span = window(&consumer, &topics.decisions, p, since_ms)?;
    read_keyed(&consumer, &topics.decisions, p, span, key, |bytes| {
        if let Ok(d) = serde_json::from_slice::<Decision>(bytes) {
            decisions.push(d);
        }
    })?;
    let skip = decisions.len().saturating_sub(args.last);
    decisions.drain(..skip);

    // Where each command is in its topic, and how far the publisher got there.
    let mut offsets: BTreeMap<String, i64> = BTreeMap::new();
    let span = window(&consumer, &topics.commands, p, since_ms)?;
    read_keyed_at(
        &consumer,
        &topics.commands,
        p,
        span,
        key,
        |offset, bytes| {
            if let Ok(c) = IterableCommand::decode(bytes) {
                offsets.insert(c.command_id, offset);
            }
        },
    )?;
    let committed = committed(kafka, &args.publisher_group, &topics.commands, p)?;
    let dead = dead_letters(kafka, &topics.publisher_dlq, since_ms)?;

    Ok(decisions
        .into_iter()
        .map(|d| {
            let delivery = d
                .commands
                .iter()
                .map(|c| {
                    let fate = match (dead.get(&c.id), offsets.get(&c.id)) {
                        (Some(reason), _) => Delivery::DeadLettered {
                            reason: reason.clone(),
                        },
                        (None, Some(o)) if committed.is_some_and(|done| *o < done) => {
                            Delivery::Delivered
                        }
                        (None, Some(_)) => Delivery::Pending,
                        (None, None) => Delivery::Unknown,
                    };
                    (c.id.clone(), fate)
                })
                .collect();
            Explained {
                decision: d,
                delivery,
            }
        })
        .collect())
}

/// `[offset of the first record at or after since_ms, end)` of one partition.
fn window(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    p: i32,
    since_ms: i64,
) -> anyhow::Result<Span> {
    let (low, high) = consumer
        .fetch_watermarks(topic, p, TIMEOUT)
        .with_context(|| format!("cannot read the watermarks of {topic}[{p}]"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(since_ms))?;
    let found = consumer
        .offsets_for_times(tpl, TIMEOUT)
        .with_context(|| format!("cannot look up {topic}[{p}] by time"))?;
    let start = match found.find_partition(topic, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        // No record at or after that time.
        _ => high,
    };
    Ok(Span {
        start: start.max(low),
        end: high,
    })
}

fn read_keyed(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    p: i32,
    span: Span,
    key: &str,
    mut on: impl FnMut(&[u8]),
) -> anyhow::Result<()> {
    read_keyed_at(consumer, topic, p, span, key, |_, bytes| on(bytes))
}

fn read_keyed_at(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    p: i32,
    span: Span,
    key: &str,
    mut on: impl FnMut(i64, &[u8]),
) -> anyhow::Result<()> {
    let spans = BTreeMap::from([(p, span)]);
    topic_reader::read(consumer, topic, &spans, |m| {
        if m.key() == Some(key.as_bytes())
            && let Some(v) = m.payload()
        {
            on(m.offset(), v);
        }
        Ok(true)
    })?;
    Ok(())
}

/// The publisher group's committed offset on one commands partition (reading it neither
/// joins the group nor commits anything).
fn committed(kafka: &KafkaConfig, group: &str, topic: &str, p: i32) -> anyhow::Result<Option<i64>> {
    let consumer = topic_reader::reader(kafka, "tillstream-explain-committed", group)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    let found = consumer
        .committed_offsets(tpl, TIMEOUT)
        .with_context(|| format!("cannot read {group}'s committed offsets"))?;
    Ok(match found.find_partition(topic, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    })
}

/// Command id → reason, for the publisher's dead letters since `since_ms`.
fn dead_letters(
    kafka: &KafkaConfig,
    topic: &str,
    since_ms: i64,
) -> anyhow::Result<BTreeMap<String, String>> {
    let consumer = topic_reader::reader(kafka, "tillstream-explain-dlq", "tillstream-explain")?;
    let n = crate::replay::partition_count(&consumer, topic)?;
    let mut spans = BTreeMap::new();
    for p in 0..n {
        spans.insert(p, window(&consumer, topic, p, since_ms)?);
    }
    let mut out = BTreeMap::new();
    topic_reader::read(&consumer, topic, &spans, |m| {
        let header = |name: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        if let Some(id) = header(publisher::dlq::headers::COMMAND_ID) {
            out.insert(
                id,
                header(publisher::dlq::headers::REASON).unwrap_or_default(),
            );
        }
        Ok(true)
    })?;
    Ok(out)
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The human form: one block per decision, oldest first.
fn text(key: &str, explained: &[Explained]) -> String {
    let mut out = format!("Decisions for {key}, oldest first:\n");
    for e in explained {
        let d = &e.decision;
        let input = match &d.input {
            Input::Event {
                topic,
                delivery_id,
                event_time_ms,
            } => format!(
                "{topic} (delivery {delivery_id}, happened {})",
                when(*event_time_ms)
            ),
            Input::Timer {
                timer_kind,
                timer_id,
                due_ms,
            } => format!("timer {timer_kind} ({timer_id}, due {})", when(*due_ms)),
        };
        let outcome = match d.outcome {
            Outcome::Applied => "applied".to_owned(),
            Outcome::Duplicate => "dropped: a duplicate (seen within the dedup window)".to_owned(),
            Outcome::Erased => "dropped: the subject was erased (GDPR)".to_owned(),
            Outcome::DeadLetter => format!(
                "dead-lettered: {}",
                d.reason.as_deref().unwrap_or("no reason")
            ),
        };
        let _ = writeln!(out, "\n{}  {input}\n  → {outcome}", when(d.decided_at_ms));
        for c in &d.commands {
            let fate = match e.delivery.get(&c.id) {
                Some(Delivery::Delivered) => "delivered".to_owned(),
                Some(Delivery::Pending) => "pending at the publisher".to_owned(),
                Some(Delivery::DeadLettered { reason }) => format!("dead-lettered: {reason}"),
                Some(Delivery::Unknown) | None => "not found in the commands topic".to_owned(),
            };
            let _ = writeln!(out, "    command {} [{}]: {fate}", c.action, c.id);
        }
        for w in &d.shopify_writes {
            let _ = writeln!(
                out,
                "    Shopify consent write {} [{}]: for shopify-writer",
                w.action, w.id
            );
        }
        for t in &d.timers_set {
            let _ = writeln!(
                out,
                "    timer armed: {} ({}) due {}",
                t.kind,
                t.id,
                when(t.due_ms)
            );
        }
        for t in &d.timers_cancelled {
            let _ = writeln!(out, "    timer cancelled: {t}");
        }
        for f in &d.forwards {
            let _ = writeln!(out, "    forwarded {} to {}", f.topic, f.to);
        }
        for s in &d.suppressed {
            let _ = writeln!(
                out,
                "    not sent: {} due {} (older than its freshness horizon)",
                s.event,
                when(s.due_ms)
            );
        }
        if d.purged {
            let _ = writeln!(out, "    state purged (GDPR)");
        }
    }
    out
}
