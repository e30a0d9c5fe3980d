//! Crypto-shredding: raw bodies about a person are sealed under a data key of that person, and a
//! GDPR erasure deletes the person's keys, so their raw records can no longer be read by anyone.
//!
//! The pieces, each used by one side (see ARCHITECTURE.md, "Erasure"):
//! * [`ErasureConfig`]: the `[erasure]` section every service and the CLI share.
//! * [`SubjectHasher`]: the keyed hash that names a subject without saying who it is (the
//!   erasure registry's markers and the data keys' ids use it).
//! * The formats: a key id (`{shop}.{subject}.{random}`, hex of keyed hashes and randomness), a
//!   wrapped key (the data key sealed under the master key) and a sealed body
//!   ([`is_sealed`], [`DataKey::seal`], [`open`]).
//! * [`Sealer`] (writers: ingest and `tillstream backfill`): one data key per subject and
//!   period, written to the keys topic (acks=all) before the first record it seals.
//! * [`KeyRing`] (`shred_ring.rs`, readers: the processor and the CLI): the keys of some
//!   partitions, loaded and then tailed; the processor deletes a subject's keys when it erases
//!   the subject.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::Secret;
use crate::partitioner::partition_for;

#[path = "shred_ring.rs"]
mod ring;
#[path = "shred_writer.rs"]
mod writer;

pub use ring::{KeyRing, Opened};
pub use writer::KafkaKeyWriter;

/// The development hash key; a deployment sets its own (see README, GDPR).
pub const DEVELOPMENT_HASH_KEY: &str = "tillstream-development-erasure-key";

/// Domain separation of the keyed hash, so the same secret used elsewhere yields other digests.
const HASH_CONTEXT: &[u8] = b"tillstream-erasure-v1\0";

/// Domain separation of the master key's derivation from the configured secret.
const MASTER_CONTEXT: &[u8] = b"tillstream-master-key-v1\0";

/// The first bytes of a sealed body. A JSON text never starts with NUL, so a sealed body is
/// never mistaken for a plain one (and a plain body for a sealed one).
const MAGIC: &[u8; 4] = b"\0TSB";
/// The sealed-body and wrapped-key format version.
const VERSION: u8 = 1;
/// AES-GCM nonce length.
const NONCE_LEN: usize = 12;
/// Shortest master key secret accepted (a random 32-byte hex string has 64 characters).
const MIN_MASTER_LEN: usize = 32;

/// The `[erasure]` configuration section (ingest, processor and CLI).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErasureConfig {
    /// Key of the keyed hash that names erased subjects in the erasures topic and data keys in
    /// the keys topic. Changing it makes every existing marker unreadable (erased customers
    /// would come back): keep it for the life of the topics.
    pub hash_key: Secret,
    /// The master key that wraps every data key (crypto-shredding). Unset: bodies are written
    /// in clear and the raw log forgets only through `tillstream raw rewrite`. At least 32
    /// characters (e.g. `openssl rand -hex 32`); losing it makes every sealed body unreadable.
    pub master_key: Option<Secret>,
    /// How long a writer uses one data key for a subject before it makes a new one (key
    /// rotation: fewer records per key, more keys in the keys topic).
    #[serde(with = "humantime_serde")]
    pub key_period: Duration,
    /// How many subjects' data keys a writer keeps in memory; beyond that the cache is emptied
    /// and subjects get new keys (each costs one keys-topic write).
    pub key_cache: usize,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self {
            hash_key: Secret::new(DEVELOPMENT_HASH_KEY),
            master_key: None,
            key_period: Duration::from_secs(30 * 24 * 3600),
            key_cache: 100_000,
        }
    }
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShredError {
    /// The configured master key is too short to be a real secret.
    #[error("erasure.master_key must be at least {MIN_MASTER_LEN} characters")]
    WeakMasterKey,
    /// The body is not a sealed body of a version this build reads.
    #[error("malformed sealed body")]
    Malformed,
    /// Authentication failed: another key, or the bytes were changed.
    #[error("sealed data does not open with its key (wrong master key or altered bytes)")]
    Forged,
    /// The keys topic could not be written or read.
    #[error("keys topic: {0}")]
    Kafka(String),
}

/// The keyed hash naming a subject (a tillstream key such as `shop/c/42`) without revealing it.
#[derive(Clone)]
pub struct SubjectHasher {
    mac: Hmac<Sha256>,
}

impl SubjectHasher {
    /// A hasher keyed with `hash_key`.
    pub fn new(hash_key: &Secret) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(hash_key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    /// The keyed hash of `key`, truncated to 128 bits.
    pub fn digest(&self, key: &str) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(HASH_CONTEXT);
        mac.update(key.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut d = [0u8; 16];
        d.copy_from_slice(&full[..16]);
        d
    }

    /// [`SubjectHasher::digest`] as lower-case hex.
    pub fn hex(&self, key: &str) -> String {
        hex(&self.digest(key))
    }

    /// The shop part of a key id: the first 64 bits of the shop key's hash.
    fn shop_part(&self, shop: &str) -> String {
        hex(&self.digest(&shop_key(shop))[..8])
    }
}

/// The key of a shop itself (`{shop}/s/-`).
pub fn shop_key(shop: &str) -> String {
    format!("{shop}/s/-")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The shop part of a routing key (`{shop}/{kind}/{id}`).
fn shop_of(routing_key: &str) -> &str {
    routing_key.split('/').next().unwrap_or_default()
}

/// A key id names its shop and subject by keyed hash, then 64 random bits: one subject may
/// have several keys (rotation, writers racing), and erasure finds them all by prefix.
fn key_id(hasher: &SubjectHasher, routing_key: &str) -> String {
    let random: [u8; 8] = Aes256Gcm::generate_nonce(&mut OsRng)[..8]
        .try_into()
        .unwrap_or_default();
    format!(
        "{}.{}.{}",
        hasher.shop_part(shop_of(routing_key)),
        hasher.hex(routing_key),
        hex(&random)
    )
}

/// The subject part of a key id (the second dot-separated field).
fn subject_of(key_id: &str) -> Option<&str> {
    key_id.split('.').nth(1)
}

/// The shop part of a key id (the first dot-separated field).
fn shop_part_of(key_id: &str) -> Option<&str> {
    key_id.split('.').next()
}

/// The master key: wraps and unwraps data keys. Derived from the configured secret.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl MasterKey {
    /// The master key for a configured secret.
    ///
    /// # Errors
    /// When the secret is shorter than 32 characters.
    pub fn new(secret: &Secret) -> Result<Self, ShredError> {
        if secret.expose().len() < MIN_MASTER_LEN {
            return Err(ShredError::WeakMasterKey);
        }
        let mut h = Sha256::new();
        h.update(MASTER_CONTEXT);
        h.update(secret.expose().as_bytes());
        let key = h.finalize();
        Ok(Self(Aes256Gcm::new(&key)))
    }

    /// `key` sealed under the master key, bound to its id: `[version][nonce][ciphertext+tag]`.
    fn wrap(&self, key_id: &str, key: &[u8]) -> Vec<u8> {
        seal_with(&self.0, key_id, key, vec![VERSION])
    }

    /// The data key a wrapped record holds.
    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<Aes256Gcm, ShredError> {
        let (&version, rest) = wrapped.split_first().ok_or(ShredError::Malformed)?;
        if version != VERSION {
            return Err(ShredError::Malformed);
        }
        let key = open_with(&self.0, key_id, rest)?;
        Aes256Gcm::new_from_slice(&key).map_err(|_| ShredError::Malformed)
    }
}

/// `[nonce][ciphertext+tag]` of `plaintext` under `cipher` with `aad`, appended to `out`.
fn seal_with(cipher: &Aes256Gcm, aad: &str, plaintext: &[u8], mut out: Vec<u8>) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let payload = Payload {
        msg: plaintext,
        aad: aad.as_bytes(),
    };
    // Encryption only fails for inputs beyond 64 GiB, which no body reaches.
    let sealed = cipher.encrypt(&nonce, payload).unwrap_or_default();
    out.reserve(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// The plaintext of `[nonce][ciphertext+tag]` sealed with `aad`.
fn open_with(cipher: &Aes256Gcm, aad: &str, bytes: &[u8]) -> Result<Vec<u8>, ShredError> {
    if bytes.len() < NONCE_LEN {
        return Err(ShredError::Malformed);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| ShredError::Forged)
}

/// One subject's data key, as a writer holds it.
#[derive(Clone)]
pub struct DataKey {
    pub(crate) id: String,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plaintext` as a sealed body:
    /// `MAGIC | version | id length (1 byte) | id | nonce | ciphertext+tag` (the id is bound
    /// to the ciphertext as associated data).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.id.len() + NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        // Key ids are 66 ASCII characters, far below 255.
        out.push(u8::try_from(self.id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.id.as_bytes());
        seal_with(&self.cipher, &self.id, plaintext, out)
    }
}

/// Whether `body` is a sealed body.
pub fn is_sealed(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// The key id and the `[nonce][ciphertext]` part of a sealed body.
fn parts(body: &[u8]) -> Result<(&str, &[u8]), ShredError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ShredError::Malformed)?;
    let (&version, rest) = rest.split_first().ok_or(ShredError::Malformed)?;
    if version != VERSION {
        return Err(ShredError::Malformed);
    }
    let (&len, rest) = rest.split_first().ok_or(ShredError::Malformed)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(ShredError::Malformed);
    }
    let (id, sealed) = rest.split_at(len);
    let id = std::str::from_utf8(id).map_err(|_| ShredError::Malformed)?;
    Ok((id, sealed))
}

/// The key id a sealed body names.
///
/// # Errors
/// When `body` is not a sealed body.
pub fn sealed_key_id(body: &[u8]) -> Result<&str, ShredError> {
    parts(body).map(|(id, _)| id)
}

/// The plaintext of a sealed body, with the data key it names.
///
/// # Errors
/// When the body is malformed or does not open with `cipher`.
pub fn open(cipher: &Aes256Gcm, body: &[u8]) -> Result<Vec<u8>, ShredError> {
    let (id, sealed) = parts(body)?;
    open_with(cipher, id, sealed)
}

/// A boxed future of a key write.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ShredError>> + Send + 'a>>;

/// Where a [`Sealer`] stores new data keys: the keys topic ([`KafkaKeyWriter`]) or, in unit
/// tests, memory.
pub trait KeyWriter: Send + Sync + 'static {
    /// Writes `wrapped` under `key_id` to `partition`; resolves once durable (acks=all).
    fn write(&self, partition: i32, key_id: &str, wrapped: Vec<u8>) -> WriteFuture<'_>;
}

/// One cached data key and when it was made (for rotation).
pub(crate) struct Cached {
    pub(crate) key: DataKey,
    made: Instant,
}

/// Seals bodies for writers of the raw topic: one data key per subject and `key_period`,
/// written to the keys topic before the first body it seals (so a reader never meets a body
/// whose key was not yet durable).
pub struct Sealer {
    master: MasterKey,
    hasher: SubjectHasher,
    writer: Box<dyn KeyWriter>,
    /// Partitions of the raw topic, which the keys topic shares.
    partitions: i32,
    period: Duration,
    capacity: usize,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    made: prometheus::IntCounter,
    /// Evicts keys other writers' erasures deleted (`None` in unit tests).
    _watcher: Option<writer::Watcher>,
}

impl Sealer {
    /// A sealer when `cfg.master_key` is set (`None` otherwise: bodies stay in clear).
    ///
    /// # Errors
    /// When the master key is too short.
    pub fn new(
        cfg: &ErasureConfig,
        partitions: i32,
        writer: Box<dyn KeyWriter>,
    ) -> Result<Option<Self>, ShredError> {
        let Some(secret) = &cfg.master_key else {
            return Ok(None);
        };
        Ok(Some(Self {
            master: MasterKey::new(secret)?,
            hasher: SubjectHasher::new(&cfg.hash_key),
            writer,
            partitions,
            period: cfg.key_period,
            capacity: cfg.key_cache.max(1),
            cache: Arc::default(),
            _watcher: None,
            made: prometheus::IntCounter::new(
                "tillstream_data_keys_created_total",
                "Data keys written to the keys topic (one per subject and key period; crypto-shredding).",
            )
            .unwrap_or_else(|_| unreachable!("the counter's name and help are valid")),
        }))
    }

    /// The sealer of a service or CLI command: writing new keys to `topics.keys`, or `None`
    /// without `cfg.master_key` (no key writer is created then).
    ///
    /// # Errors
    /// When the master key is too short or the producer cannot be created.
    pub fn for_kafka(
        cfg: &ErasureConfig,
        kafka: &crate::KafkaConfig,
        topics: &crate::TopicsConfig,
    ) -> Result<Option<Self>, ShredError> {
        if cfg.master_key.is_none() {
            return Ok(None);
        }
        let writer = KafkaKeyWriter::new(kafka, &topics.keys)?;
        let Some(mut sealer) = Self::new(cfg, topics.partitions, Box::new(writer))? else {
            return Ok(None);
        };
        sealer._watcher = Some(writer::Watcher::start(
            kafka,
            &topics.keys,
            Arc::clone(&sealer.cache),
        )?);
        Ok(Some(sealer))
    }

    /// The counter of data keys created, for the caller's metrics registry.
    pub fn keys_created(&self) -> prometheus::IntCounter {
        self.made.clone()
    }

    /// `body` sealed under `routing_key`'s current data key, making (and writing) one first
    /// when the subject has none in this writer or its key is older than `key_period`.
    ///
    /// # Errors
    /// When a new key could not be written to the keys topic.
    pub async fn seal(&self, routing_key: &str, body: &[u8]) -> Result<Vec<u8>, ShredError> {
        if let Some(key) = self.current(routing_key) {
            return Ok(key.seal(body));
        }
        let raw = Aes256Gcm::generate_key(&mut OsRng);
        let key = DataKey {
            id: key_id(&self.hasher, routing_key),
            cipher: Aes256Gcm::new(&raw),
        };
        let wrapped = self.master.wrap(&key.id, &raw);
        let partition = partition_for(routing_key, self.partitions);
        self.writer.write(partition, &key.id, wrapped).await?;
        self.made.inc();
        let sealed = key.seal(body);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.capacity {
                cache.clear();
            }
            cache.insert(
                routing_key.to_owned(),
                Cached {
                    key,
                    made: Instant::now(),
                },
            );
        }
        Ok(sealed)
    }

    /// Forgets `routing_key`'s cached key (after a redact: a later record is a new person,
    /// sealed under a new key the erasure did not delete).
    pub fn forget(&self, routing_key: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(routing_key);
        }
    }

    fn current(&self, routing_key: &str) -> Option<DataKey> {
        let cache = self.cache.lock().ok()?;
        let c = cache.get(routing_key)?;
        (c.made.elapsed() < self.period).then(|| c.key.clone())
    }
}

#[cfg(test)]
#[path = "shred_tests.rs"]
mod tests;
