//! The engine's restore: each owned partition's state read back from the compacted changelog
//! (on assignment and after an abort).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rules::Rules;

use runtime::kafka::ToTheEnd;

use super::{Engine, EngineError, KAFKA_TIMEOUT};
use crate::state::PartitionState;
use crate::watermark::{CLOCK_KEY_PREFIX, PartitionClock};

/// The changelog reader's client configuration (one reader per restored partition).
fn reader_config(kafka: &runtime::KafkaConfig, application_id: &str) -> rdkafka::ClientConfig {
    // A reader's config: its 2 MiB queue below is full after every fetch, so librdkafka's
    // default 1 s wait before the next one would pace the whole restore (runtime::kafka).
    let mut cfg = kafka.reader(&format!("{application_id}-restore"));
    cfg.set("group.id", format!("{application_id}-restore"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // The default prefetch (64 MiB per partition) would stay resident after the restore
        // (freed, but not returned to the OS); 2 MiB keeps the broker busy enough (one
        // partition per reader, 1 MiB fetches) at a few bytes per restored key.
        .set("queued.max.messages.kbytes", "2048");
    cfg
}

impl<R: Rules> Engine<R> {
    /// Restores several partitions concurrently: each reads its own changelog partition, so
    /// decoding overlaps with the broker's reads (restore time is what a rebalance costs).
    pub(super) fn restore_all(
        &self,
        partitions: &[i32],
    ) -> Result<Vec<(i32, PartitionState)>, EngineError> {
        let restored = std::thread::scope(|scope| {
            let handles: Vec<_> = partitions
                .iter()
                .map(|p| (*p, scope.spawn(move || self.restore(*p))))
                .collect();
            handles
                .into_iter()
                .map(|(p, h)| match h.join() {
                    Ok(state) => state.map(|s| (p, s)),
                    Err(_) => Err(EngineError::Restore {
                        partition: p,
                        message: "restore thread panicked".into(),
                    }),
                })
                .collect()
        });
        // The readers are gone; what librdkafka allocated for their fetches is free but, in
        // glibc's arenas, mostly still resident (30-75 MB after 1,000,000 keys).
        let released = runtime::memory::release_freed();
        tracing::debug!(released, "Returned the restore readers' freed memory.");
        restored
    }

    /// A changelog client at `read_uncommitted`: its watermark is the log's end, which
    /// `runtime::kafka::stable_end` compares with a `read_committed` reader's.
    fn end_probe(&self) -> Result<BaseConsumer, KafkaError> {
        reader_config(&self.kafka, &self.application_id)
            .set("isolation.level", "read_uncommitted")
            .create()
    }

    /// The changelog partitions' stable ends once every transaction on them has ended (a
    /// revocation's own commit markers included, which the coordinator writes after the commit
    /// returns), for a handoff; a partition whose end is not stable within a few seconds is
    /// left out (its next owner restores it).
    pub(super) fn changelog_ends(&self, partitions: &[i32]) -> HashMap<i32, i64> {
        let mut ends = HashMap::new();
        let reader: Result<BaseConsumer, _> =
            reader_config(&self.kafka, &self.application_id).create();
        let (Ok(reader), Ok(probe)) = (reader, self.end_probe()) else {
            return ends;
        };
        // Bounded as a whole: this runs inside the revocation callback, and a partition left
        // out only costs its next owner a restore.
        let deadline = Instant::now() + Duration::from_secs(5);
        for &p in partitions {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let end = runtime::kafka::stable_end(
                    &reader,
                    &probe,
                    &self.topics.changelog,
                    p,
                    left.min(KAFKA_TIMEOUT),
                );
                match end {
                    Ok(Some((_, end))) => {
                        ends.insert(p, end);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
        ends
    }

    /// Reads a changelog partition from the beginning to its end (read_committed: only state
    /// of committed transactions) into a fresh partition state.
    pub(super) fn restore(&self, p: i32) -> Result<PartitionState, EngineError> {
        let started = Instant::now();
        let changelog = &self.topics.changelog;
        let fail = |message: String| EngineError::Restore {
            partition: p,
            message,
        };
        let cfg = reader_config(&self.kafka, &self.application_id);
        let reader: BaseConsumer<ToTheEnd> =
            cfg.create_with_context(ToTheEnd("changelog restore"))?;
        // The end is the stable one: while a transaction is open on the changelog partition
        // (the previous owner's last, in flight while the partition moved), wait for it to
        // commit or abort, since the input offsets it carries take effect either way with it
        // (runtime::kafka::stable_end). Kafka aborts a transaction left open after the
        // producer's transaction timeout, so the wait ends.
        let probe = self.end_probe()?;
        let longest_open = self.cfg.transaction_timeout + Duration::from_secs(30);
        let open_until = Instant::now() + longest_open;
        // Leadership of a partition can move under a rebalance or a broker restart; a restore
        // must not end the instance over a metadata answer that the next attempt gets right.
        let mut attempts = 0;
        let mut waited = false;
        let (low, high) = loop {
            match runtime::kafka::stable_end(&reader, &probe, changelog, p, KAFKA_TIMEOUT) {
                Ok(Some(w)) => break w,
                Ok(None) if Instant::now() < open_until => {
                    if !waited {
                        waited = true;
                        tracing::info!(
                            partition = p,
                            "A transaction is open on the changelog; waiting for it to end before restoring."
                        );
                        self.metrics.restore_waits.inc();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    return Err(fail(format!(
                        "a transaction stayed open on the changelog for {longest_open:?}"
                    )));
                }
                Err(e) if attempts < 10 && runtime::kafka::is_transient(&e) => {
                    attempts += 1;
                    tracing::info!(partition = p, error = %e, "Changelog watermarks not available yet; retrying.");
                    std::thread::sleep(Duration::from_millis(200 * attempts));
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(state) = self.slot.take_handoff(p, high) {
            self.metrics.restore_handoffs.inc();
            tracing::info!(
                partition = p,
                keys = state.len(),
                "Took the partition's state over from its revocation in this instance; no restore."
            );
            return Ok(state);
        }
        // The changelog's record count bounds its keys (compaction keeps about one record per
        // key); sizing for it up front avoids growing the tables during the restore. Capped so
        // a changelog not yet compacted cannot reserve far more than it will hold.
        let records = usize::try_from(high.saturating_sub(low)).unwrap_or(0);
        let mut state = PartitionState::with_capacity(records.min(1 << 22));
        state.clock = PartitionClock::new(self.topics.partitions);
        if high > low {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(changelog, p, Offset::Beginning)?;
            reader.assign(&tpl)?;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                match reader.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        let key = m
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .ok_or_else(|| fail("record without key".into()))?;
                        let record = match m.payload() {
                            None => None,
                            Some(bytes) => Some(
                                schemas::KeyStateRecord::decode(bytes)
                                    .map_err(|e| fail(format!("{key}: {e}")))?,
                            ),
                        };
                        if key.starts_with(CLOCK_KEY_PREFIX) {
                            if let Some(r) = record {
                                state.clock = self.restored_clock(&r.aggregate_json);
                            }
                            continue;
                        }
                        state.load(&key, record).map_err(|e| fail(e.to_string()))?;
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    // A broker of the cluster going away mid-restore: librdkafka reconnects
                    // or fails over to the new leader; keep reading until the deadline.
                    Some(Err(e)) if runtime::kafka::is_transient(&e) => {
                        tracing::info!(partition = p, error = %e, "Changelog read interrupted; retrying.");
                    }
                    Some(Err(e)) => return Err(fail(e.to_string())),
                    None if Instant::now() > deadline => {
                        return Err(fail("timed out reading the changelog".into()));
                    }
                    None => {}
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        self.metrics.restore_seconds.observe(secs);
        tracing::info!(
            partition = p,
            keys = state.len(),
            seconds = secs,
            "Restored partition state."
        );
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changelog_reader_fetches_again_soon_after_its_small_queue_fills() {
        let cfg = reader_config(&runtime::KafkaConfig::new("127.0.0.1:9092"), "app");
        assert_eq!(cfg.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(
            cfg.get("fetch.queue.backoff.ms"),
            Some(runtime::kafka::FETCH_QUEUE_BACKOFF_MS)
        );
        assert_eq!(cfg.get("isolation.level"), Some("read_committed"));

        // Like every reader, it honours the user's own setting.
        let mut kafka = runtime::KafkaConfig::new("127.0.0.1:9092");
        kafka
            .properties
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        let cfg = reader_config(&kafka, "app");
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("250"));
    }
}
