//! Where verified events go: the [`EventSink`] trait, the Kafka producer and an in-memory sink.
//!
//! The HTTP path only needs "publish this keyed record and tell me once it is durable", so it
//! is written against this trait: unit tests and the proptest fuzzer use [`MemorySink`], the
//! service and the real-Kafka tests use [`KafkaSink`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use runtime::KafkaConfig;

/// A boxed future returned by [`EventSink::publish`].
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// One record for the raw topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The routing key (see `schemas::routing_key`).
    pub key: String,
    /// The Avro-encoded `ShopifyEnvelope`.
    pub value: Vec<u8>,
}

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The producer's local queue is full (the broker is slow or away).
    #[error("producer queue full")]
    QueueFull,
    /// The record exceeds the producer's or the broker's size limit; retrying cannot help.
    #[error("record too large for Kafka: {0}")]
    TooLarge(String),
    /// Any other failure to get an acknowledgement.
    #[error("kafka: {0}")]
    Failed(String),
}

/// Publishes records and resolves only when they are durable.
pub trait EventSink: Send + Sync + 'static {
    /// Sends `record`; the future resolves `Ok` only once the destination acknowledged it
    /// (for Kafka: written to all in-sync replicas).
    fn publish(&self, record: Record) -> PublishFuture<'_>;
}

/// The Kafka implementation: an idempotent `acks=all` producer on one topic.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Room for the envelope's other fields around the body.
const ENVELOPE_OVERHEAD: usize = 64 * 1024;

impl KafkaSink {
    /// Creates the producer (it connects lazily). `body_limit` raises librdkafka's
    /// `message.max.bytes` so any body ingest accepts can be handed to the broker; the broker
    /// still enforces the topic's `max.message.bytes` on the compressed batch.
    pub fn new(kafka: &KafkaConfig, topic: &str, body_limit: usize) -> Result<Self, KafkaError> {
        let mut config = kafka.producer("tillstream-ingest");
        if !kafka.properties.contains_key("message.max.bytes") {
            let max = body_limit
                .saturating_add(ENVELOPE_OVERHEAD)
                .clamp(1_000_000, 1_000_000_000);
            config.set("message.max.bytes", max.to_string());
        }
        let producer: FutureProducer = config.create()?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The underlying producer (readiness checks, flush).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Waits up to `timeout` for queued records to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

fn classify(error: KafkaError) -> SinkError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => SinkError::QueueFull,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            SinkError::TooLarge(error.to_string())
        }
        _ => SinkError::Failed(error.to_string()),
    }
}

impl EventSink for KafkaSink {
    fn publish(&self, record: Record) -> PublishFuture<'_> {
        // send_result enqueues without waiting: a full queue is an immediate 503, never a
        // request parked behind a stalled broker. librdkafka copies key and payload.
        let sent = self
            .producer
            .send_result(
                FutureRecord::to(&self.topic)
                    .key(&record.key)
                    .payload(&record.value),
            )
            .map_err(|(e, _)| classify(e));
        Box::pin(async move {
            match sent?.await {
                Ok(Ok(_delivery)) => Ok(()),
                Ok(Err((e, _))) => Err(classify(e)),
                Err(_canceled) => Err(SinkError::Failed(
                    "producer closed before the delivery report".into(),
                )),
            }
        })
    }
}

/// How a [`MemorySink`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    /// Store the record and acknowledge at once.
    #[default]
    Ack,
    /// Refuse every record (a broken broker).
    Fail,
    /// Never answer (a broker that does not acknowledge): exercises the ack timeout.
    Hang,
}

/// An in-memory sink for tests: records what it acknowledged.
#[derive(Debug, Default)]
pub struct MemorySink {
    mode: Mutex<MemoryMode>,
    records: Mutex<Vec<Record>>,
}

impl MemorySink {
    /// A sink that acknowledges everything.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A sink answering as `mode` says.
    pub fn with_mode(mode: MemoryMode) -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(mode),
            records: Mutex::default(),
        })
    }

    /// Changes how later records are answered.
    pub fn set_mode(&self, mode: MemoryMode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
    }

    /// The records acknowledged so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many records were acknowledged.
    pub fn len(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or_default()
    }

    /// True when nothing was acknowledged yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns the acknowledged records.
    pub fn take(&self) -> Vec<Record> {
        self.records
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

impl EventSink for MemorySink {
    fn publish(&self, record: Record) -> PublishFuture<'_> {
        let mode = self.mode.lock().map(|m| *m).unwrap_or_default();
        Box::pin(async move {
            match mode {
                MemoryMode::Ack => {
                    if let Ok(mut r) = self.records.lock() {
                        r.push(record);
                    }
                    Ok(())
                }
                MemoryMode::Fail => Err(SinkError::Failed("memory sink set to fail".into())),
                MemoryMode::Hang => std::future::pending().await,
            }
        })
    }
}
