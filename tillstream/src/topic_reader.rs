//! Reading a topic from a consumer group's committed offsets (or the beginning) to its current end: the dead-letter, rewrite, seed and explain commands.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use runtime::KafkaConfig;

use crate::replay::partition_count;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the next record while the end of the topic has not been reached.
const STALL: Duration = Duration::from_secs(60);

/// One partition to read: `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) start: i64,
    pub(crate) end: i64,
}

/// Per partition: from the group's committed offset (or the beginning) to the current end.
pub(crate) fn spans(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    from_beginning: bool,
) -> anyhow::Result<BTreeMap<i32, Span>> {
    let n = partition_count(consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, n - 1);
    let committed = consumer
        .committed_offsets(tpl, TIMEOUT)
        .with_context(|| format!("cannot read committed offsets on {topic}"))?;
    let mut out = BTreeMap::new();
    for p in 0..n {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .with_context(|| format!("cannot read watermarks of {topic}[{p}]"))?;
        let done = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if !from_beginning => o,
            _ => low,
        };
        // Retention may have removed records below a committed offset.
        out.insert(
            p,
            Span {
                start: done.max(low),
                end: high,
            },
        );
    }
    Ok(out)
}

/// Reads every record of `spans`, calling `on` for each; stops when each partition reached
/// its end (or librdkafka reports the partition's end, e.g. the last stable offset) or when
/// `on` returns false.
pub(crate) fn read(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    spans: &BTreeMap<i32, Span>,
    mut on: impl FnMut(OwnedMessage) -> anyhow::Result<bool>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    // Where each partition's end was reached: past the last record when a transaction
    // marker follows it, so progress can cover the marker too.
    let mut ends = BTreeMap::new();
    let mut open: BTreeMap<i32, i64> = spans
        .iter()
        .filter(|(_, s)| s.start < s.end)
        .map(|(p, s)| (*p, s.end))
        .collect();
    if open.is_empty() {
        return Ok(ends);
    }
    let mut tpl = TopicPartitionList::new();
    for (p, s) in spans.iter().filter(|(p, _)| open.contains_key(p)) {
        tpl.add_partition_offset(topic, *p, Offset::Offset(s.start))?;
    }
    consumer
        .assign(&tpl)
        .with_context(|| format!("cannot assign the partitions of {topic}"))?;
    let mut last_progress = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None => {
                if last_progress.elapsed() > STALL {
                    bail!(
                        "no record from {topic} for {STALL:?} although partitions {:?} are not at their end",
                        open.keys()
                    );
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
                let position = consumer.position().ok();
                if let Some(Offset::Offset(o)) = position
                    .as_ref()
                    .and_then(|tpl| tpl.find_partition(topic, p))
                    .map(|e| e.offset())
                {
                    ends.insert(p, o);
                }
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("cannot read {topic}")),
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let p = m.partition();
                let Some(&end) = open.get(&p) else { continue };
                if m.offset() >= end {
                    open.remove(&p);
                    continue;
                }
                if m.offset() + 1 >= end {
                    open.remove(&p);
                }
                if !on(m.detach())? {
                    break;
                }
            }
        }
    }
    consumer.unassign().ok();
    Ok(ends)
}

/// The consumer's context: reaching a partition's end is how reading stops, not an error,
/// so it is not logged as one.
pub(crate) struct Reader;

impl ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for Reader {}

/// A consumer of group `group` that reports each partition's end.
pub(crate) fn reader(
    kafka: &KafkaConfig,
    client: &str,
    group: &str,
) -> anyhow::Result<BaseConsumer<Reader>> {
    let mut cfg = kafka.consumer(client, group, true);
    // The end of each partition is reported, so reading stops at the last stable offset
    // (after a transaction marker there may be no record at high watermark − 1).
    cfg.set("enable.partition.eof", "true");
    cfg.create_with_context(Reader)
        .context("cannot create a Kafka consumer")
}
