//! The readers' side of crypto-shredding: the data keys of some keys-topic partitions, loaded
//! from the beginning and then tailed by a background thread, so a body sealed a moment ago
//! opens too (its key was durable before the body was written).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    ErasureConfig, MasterKey, ShredError, SubjectHasher, is_sealed, open, sealed_key_id,
    shop_part_of, subject_of,
};
use crate::KafkaConfig;
use crate::kafka::ToTheEnd;

/// Longest time loading a partition set may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the tailing reader to reach a partition's end when a key is missing.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Metadata and watermark requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What opening a body gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// The body was not sealed: it is used as it is.
    Plain(&'a [u8]),
    /// The plaintext of a sealed body.
    Opened(Vec<u8>),
    /// The body's data key is not in the keys topic: its subject was erased (or the keys
    /// topic was lost). The body can never be read again.
    KeyGone,
}

/// The keys and how far the reader got in each partition.
#[derive(Default)]
struct Table {
    /// Key id → (partition, data key).
    keys: HashMap<String, (i32, Aes256Gcm)>,
    /// Next offset to read per partition (after an end-of-partition: the end).
    positions: HashMap<i32, i64>,
}

/// What the ring and its reader thread share.
#[derive(Default)]
struct Shared {
    table: Mutex<Table>,
    moved: Condvar,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The data keys of some partitions of the keys topic.
pub struct KeyRing {
    master: MasterKey,
    hasher: SubjectHasher,
    kafka: KafkaConfig,
    topic: String,
    shared: Arc<Shared>,
    reader: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    probe: Option<BaseConsumer<ToTheEnd>>,
}

impl KeyRing {
    /// An empty ring when `cfg.master_key` is set (`None` otherwise: bodies are expected in
    /// clear, and a sealed one cannot be opened).
    ///
    /// # Errors
    /// When the master key is too short.
    pub fn new(
        cfg: &ErasureConfig,
        kafka: &KafkaConfig,
        topic: &str,
    ) -> Result<Option<Self>, ShredError> {
        let Some(secret) = &cfg.master_key else {
            return Ok(None);
        };
        Ok(Some(Self {
            master: MasterKey::new(secret)?,
            hasher: SubjectHasher::new(&cfg.hash_key),
            kafka: kafka.clone(),
            topic: topic.to_owned(),
            shared: Arc::default(),
            reader: None,
            probe: None,
        }))
    }

    /// Replaces the keys with those of every partition of the topic (the CLI's view).
    ///
    /// # Errors
    /// When the topic cannot be read to its end in time.
    pub fn load_all(&mut self) -> Result<(), ShredError> {
        let probe = self.consumer("tillstream-keys-probe")?;
        let metadata = probe
            .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)
            .map_err(kafka)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        self.load(&partitions)
    }

    /// Replaces the keys with those of `partitions` (the processor's owned partitions), read
    /// to their end, and keeps a reader tailing them.
    ///
    /// # Errors
    /// When a partition cannot be read to its end in time.
    pub fn load(&mut self, partitions: &[i32]) -> Result<(), ShredError> {
        self.stop();
        let started = Instant::now();
        *self.shared.table() = Table::default();
        if self.probe.is_none() {
            self.probe = Some(self.consumer("tillstream-keys-probe")?);
        }
        if partitions.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer("tillstream-keys-reader")?;
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)
                .map_err(kafka)?;
        }
        consumer.assign(&tpl).map_err(kafka)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = Reader {
            master: self.master.clone(),
            shared: Arc::clone(&self.shared),
            stop: Arc::clone(&stop),
            topic: self.topic.clone(),
        };
        let open: Vec<i32> = partitions.to_vec();
        let handle = std::thread::Builder::new()
            .name("keys-reader".into())
            .spawn(move || reader.run(&consumer, open, &ready_tx))
            .map_err(|e| ShredError::Kafka(format!("cannot start the keys reader: {e}")))?;
        self.reader = Some((stop, handle));
        match ready_rx.recv_timeout(LOAD_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ShredError::Kafka(format!(
                    "timed out loading {}",
                    self.topic
                )));
            }
        }
        tracing::info!(
            keys = self.len(),
            partitions = partitions.len(),
            seconds = started.elapsed().as_secs_f64(),
            "Loaded the data keys."
        );
        Ok(())
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.shared.table().keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `body` opened: as it is when it is not sealed, its plaintext when its key is known,
    /// [`Opened::KeyGone`] when the key is not in `partition` of the keys topic even after the
    /// reader reached that partition's end.
    ///
    /// # Errors
    /// A malformed or forged sealed body; the keys topic unreachable.
    pub fn open<'a>(&self, body: &'a [u8], partition: i32) -> Result<Opened<'a>, ShredError> {
        if !is_sealed(body) {
            return Ok(Opened::Plain(body));
        }
        let id = sealed_key_id(body)?;
        if let Some(plain) = self.try_open(id, body)? {
            return Ok(Opened::Opened(plain));
        }
        self.catch_up(partition)?;
        Ok(self
            .try_open(id, body)?
            .map_or(Opened::KeyGone, Opened::Opened))
    }

    fn try_open(&self, id: &str, body: &[u8]) -> Result<Option<Vec<u8>>, ShredError> {
        let table = self.shared.table();
        table.keys.get(id).map(|(_, c)| open(c, body)).transpose()
    }

    /// Waits until the reader has read `partition` up to the end it has now.
    fn catch_up(&self, partition: i32) -> Result<(), ShredError> {
        let probe = self
            .probe
            .as_ref()
            .ok_or_else(|| ShredError::Kafka("key ring not loaded".into()))?;
        let (_, high) = probe
            .fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT)
            .map_err(kafka)?;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut table = self.shared.table();
        loop {
            match table.positions.get(&partition) {
                Some(&at) if at >= high => return Ok(()),
                // Not a partition this ring reads: nothing more can come.
                None => return Ok(()),
                Some(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ShredError::Kafka(format!(
                    "the keys reader did not reach the end of {}/{partition} in {CATCH_UP_TIMEOUT:?}",
                    self.topic
                )));
            }
            table = self
                .shared
                .moved
                .wait_timeout(table, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Removes every key of the subject `key` (a tillstream key) and returns their partitions
    /// and ids, for the caller to write tombstones in the transaction that records the erasure.
    pub fn erase(&self, key: &str) -> Vec<(i32, String)> {
        let subject = self.hasher.hex(key);
        self.remove(|_, id| subject_of(id) == Some(subject.as_str()))
    }

    /// Removes every key of `shop` in `partition` (`shop/redact`, which every partition's
    /// owner handles for its own partition) and returns their partitions and ids.
    pub fn erase_shop(&self, shop: &str, partition: i32) -> Vec<(i32, String)> {
        let part = self.hasher.shop_part(shop);
        self.remove(|p, id| p == partition && shop_part_of(id) == Some(part.as_str()))
    }

    fn remove(&self, doomed: impl Fn(i32, &str) -> bool) -> Vec<(i32, String)> {
        let mut table = self.shared.table();
        let gone: Vec<(i32, String)> = table
            .keys
            .iter()
            .filter(|(id, (p, _))| doomed(*p, id))
            .map(|(id, (p, _))| (*p, id.clone()))
            .collect();
        for (_, id) in &gone {
            table.keys.remove(id);
        }
        gone
    }

    fn consumer(&self, client: &str) -> Result<BaseConsumer<ToTheEnd>, ShredError> {
        let mut cfg = self.kafka.reader(client);
        // read_uncommitted: a processor waiting for a key must not wait behind its own open
        // transaction (which may hold tombstones on the same partition). An aborted tombstone
        // seen here only hides a key whose erasure is about to be processed again.
        cfg.set("group.id", client)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .set("enable.partition.eof", "true");
        cfg.create_with_context(ToTheEnd("data keys"))
            .map_err(kafka)
    }

    fn stop(&mut self) {
        if let Some((stop, handle)) = self.reader.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

impl Drop for KeyRing {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kafka(e: KafkaError) -> ShredError {
    ShredError::Kafka(e.to_string())
}

/// The tailing reader.
struct Reader {
    master: MasterKey,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    topic: String,
}

impl Reader {
    /// Reads until stopped; says `ready` once every partition reached its end once.
    fn run(
        self,
        consumer: &BaseConsumer<ToTheEnd>,
        mut open: Vec<i32>,
        ready: &mpsc::Sender<Result<(), ShredError>>,
    ) {
        let mut told = false;
        while !self.stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let id = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    let key = m.payload().map(|w| self.master.unwrap(&id, w));
                    let mut table = self.shared.table();
                    match key {
                        None => {
                            table.keys.remove(&id);
                        }
                        Some(Ok(cipher)) => {
                            table.keys.insert(id, (m.partition(), cipher));
                        }
                        Some(Err(e)) => {
                            tracing::error!(key_id = %id, error = %e, "Data key that does not unwrap with this master key; skipped.");
                        }
                    }
                    table.positions.insert(m.partition(), m.offset() + 1);
                    drop(table);
                    self.shared.moved.notify_all();
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let end = consumer
                        .position()
                        .ok()
                        .and_then(|tpl| {
                            tpl.find_partition(&self.topic, p)
                                .and_then(|e| e.offset().to_raw())
                        })
                        .unwrap_or(0);
                    let mut table = self.shared.table();
                    let at = table.positions.entry(p).or_insert(0);
                    *at = (*at).max(end);
                    drop(table);
                    self.shared.moved.notify_all();
                    open.retain(|&q| q != p);
                    if open.is_empty() && !told {
                        told = true;
                        let _ = ready.send(Ok(()));
                    }
                }
                Some(Err(e)) => {
                    // A broker away while loading is retried by librdkafka; the load's own
                    // timeout bounds the wait.
                    if !told && !crate::kafka::is_transient(&e) {
                        let _ = ready.send(Err(kafka(e)));
                        return;
                    }
                    tracing::warn!(error = %e, "Keys topic reader error.");
                }
                None => {}
            }
        }
    }
}
