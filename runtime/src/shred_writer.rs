//! The keys-topic side of a [`super::Sealer`]: writes a wrapped data key and waits for
//! acks=all, and watches the topic for keys that erasures deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Cached, KeyWriter, ShredError, WriteFuture};
use crate::KafkaConfig;

/// How long a key write may wait in the producer's queue (the caller bounds the whole request).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes data keys to the keys topic with an idempotent `acks=all` producer.
pub struct KafkaKeyWriter {
    producer: FutureProducer,
    topic: String,
}

impl KafkaKeyWriter {
    /// A writer to `topic`.
    ///
    /// # Errors
    /// When the producer cannot be created.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, ShredError> {
        let producer = kafka
            .producer("tillstream-key-writer")
            .create()
            .map_err(|e| ShredError::Kafka(e.to_string()))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }
}

impl KeyWriter for KafkaKeyWriter {
    fn write(&self, partition: i32, key_id: &str, wrapped: Vec<u8>) -> WriteFuture<'_> {
        let key_id = key_id.to_owned();
        Box::pin(async move {
            let record = FutureRecord::to(&self.topic)
                .partition(partition)
                .key(&key_id)
                .payload(&wrapped);
            self.producer
                .send(record, QUEUE_TIMEOUT)
                .await
                .map(|_| ())
                .map_err(|(e, _)| ShredError::Kafka(e.to_string()))
        })
    }
}

/// Tails the keys topic from its end and drops from a writer's cache every key an erasure
/// deletes (a tombstone), so that a later record of the same subject (a new person using the
/// address) gets a new key instead of one that opens for nobody. The writer that stored the
/// redact forgets at once ([`super::Sealer::forget`]); this covers the other instances.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn start(
        kafka: &KafkaConfig,
        topic: &str,
        cache: Arc<Mutex<HashMap<String, Cached>>>,
    ) -> Result<Self, ShredError> {
        let fail = |e: rdkafka::error::KafkaError| ShredError::Kafka(e.to_string());
        let mut cfg = kafka.reader("tillstream-keys-watcher");
        cfg.set("group.id", "tillstream-keys-watcher")
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cfg.create().map_err(fail)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(fail)?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::End)
                    .map_err(fail)?;
            }
        }
        consumer.assign(&tpl).map_err(fail)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("keys-watcher".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    if m.payload().is_some() {
                        continue;
                    }
                    let id = String::from_utf8_lossy(m.key().unwrap_or_default());
                    if let Ok(mut cache) = cache.lock() {
                        cache.retain(|_, c| c.key.id != id);
                    }
                }
            })
            .map_err(|e| ShredError::Kafka(format!("cannot start the keys watcher: {e}")))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
