//! The dead-letter topic: the original record plus request, response and reason in headers.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Header names written on every dead letter (documented in the README).
pub mod headers {
    /// Human-readable reason.
    pub const REASON: &str = "tillstream.reason";
    /// Low-cardinality reason kind (`undecodable`, `mapping`, `http_400`, `forgotten_user`, ...).
    pub const REASON_KIND: &str = "tillstream.reason.kind";
    /// Iterable endpoint name, when a request was made.
    pub const ENDPOINT: &str = "tillstream.endpoint";
    /// The request body of this command (for bulk, its own item), truncated to 256 KiB.
    pub const REQUEST: &str = "tillstream.request";
    /// HTTP status of the final answer.
    pub const RESPONSE_STATUS: &str = "tillstream.response.status";
    /// Body of the final answer, truncated to 64 KiB.
    pub const RESPONSE_BODY: &str = "tillstream.response.body";
    /// Source topic, partition and offset.
    pub const SOURCE_TOPIC: &str = "tillstream.source.topic";
    /// Source partition.
    pub const SOURCE_PARTITION: &str = "tillstream.source.partition";
    /// Source offset.
    pub const SOURCE_OFFSET: &str = "tillstream.source.offset";
    /// The command id, when the record decoded.
    pub const COMMAND_ID: &str = "tillstream.command_id";
    /// Unix milliseconds when it was dead-lettered.
    pub const FAILED_AT: &str = "tillstream.failed_at_ms";
}

const MAX_REQUEST: usize = 256 * 1024;

/// Identifies the source record of a dead letter.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// Partition of the commands topic.
    pub partition: i32,
    /// Offset in it.
    pub offset: i64,
    /// Kafka key.
    pub key: Option<&'a [u8]>,
    /// The record value, copied verbatim.
    pub payload: &'a [u8],
    /// Command id, if decoded.
    pub command_id: Option<&'a str>,
}

/// Why and what failed.
#[derive(Debug, Clone, Default)]
pub struct Failure<'a> {
    /// Low-cardinality kind, also the metric label.
    pub kind: &'a str,
    /// Full reason.
    pub reason: String,
    /// Endpoint name.
    pub endpoint: Option<&'a str>,
    /// Request body.
    pub request: Option<&'a [u8]>,
    /// Response status.
    pub status: Option<u16>,
    /// Response body.
    pub response: Option<&'a str>,
}

/// The dead-letter writer.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    source_topic: String,
    topic: String,
    metrics: Metrics,
}

/// The wait was cut short by the shutdown deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted;

impl DeadLetters {
    /// A writer to `topic` for records from `source_topic`.
    pub fn new(
        producer: FutureProducer,
        source_topic: String,
        topic: String,
        metrics: Metrics,
    ) -> Self {
        Self {
            producer,
            source_topic,
            topic,
            metrics,
        }
    }

    /// Writes one dead letter and waits for Kafka's acknowledgement, retrying until it is
    /// written or `abort` fires: the source offset may only be committed after this returns Ok.
    pub async fn send(
        &self,
        source: &Source<'_>,
        failure: &Failure<'_>,
        abort: &CancellationToken,
    ) -> Result<(), Aborted> {
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let failed_at = runtime::now_ms().to_string();
        let status = failure.status.map(|s| s.to_string());
        let request = failure.request.map(|r| &r[..r.len().min(MAX_REQUEST)]);
        // Every header in README order; absent optional ones are left out.
        let fields: [(&str, Option<&[u8]>); 11] = [
            (headers::REASON, Some(failure.reason.as_bytes())),
            (headers::REASON_KIND, Some(failure.kind.as_bytes())),
            (headers::SOURCE_TOPIC, Some(self.source_topic.as_bytes())),
            (headers::SOURCE_PARTITION, Some(partition.as_bytes())),
            (headers::SOURCE_OFFSET, Some(offset.as_bytes())),
            (headers::FAILED_AT, Some(failed_at.as_bytes())),
            (headers::COMMAND_ID, source.command_id.map(str::as_bytes)),
            (headers::ENDPOINT, failure.endpoint.map(str::as_bytes)),
            (headers::REQUEST, request),
            (
                headers::RESPONSE_STATUS,
                status.as_deref().map(str::as_bytes),
            ),
            (headers::RESPONSE_BODY, failure.response.map(str::as_bytes)),
        ];
        let mut attempt = 0u32;
        loop {
            let mut h = OwnedHeaders::new();
            for (key, value) in fields {
                if value.is_some() {
                    h = h.insert(Header { key, value });
                }
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(source.payload)
                .headers(h);
            if let Some(k) = source.key {
                record = record.key(k);
            }
            let sent = tokio::select! {
                r = self.producer.send(record, Duration::from_secs(30)) => r,
                () = abort.cancelled() => return Err(Aborted),
            };
            match sent {
                Ok(_) => {
                    self.metrics
                        .dead_letters
                        .with_label_values(&[failure.kind])
                        .inc();
                    tracing::warn!(
                        partition = source.partition,
                        offset = source.offset,
                        command_id = source.command_id.unwrap_or(""),
                        kind = failure.kind,
                        reason = %failure.reason,
                        "Command dead-lettered."
                    );
                    return Ok(());
                }
                Err((error, _)) => {
                    attempt += 1;
                    tracing::error!(%error, attempt, "Cannot write to the dead-letter topic; retrying.");
                    let wait = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6)));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = abort.cancelled() => return Err(Aborted),
                    }
                }
            }
        }
    }
}
