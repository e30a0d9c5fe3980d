//! The erasure registry: which keys a GDPR redact erased, so no path ever brings them back.
//!
//! The changelog forgets a redacted key with a tombstone, but `tillstream replay --from
//! earliest` recreates the changelog and reads the raw topic again, a backfill writes old
//! orders again, a redrive sends old records again, and a refund forwarded between keys can
//! arrive after the purge. Each of those would rebuild the person. So every purge also writes
//! a marker to the compacted erasures topic (`topics.erasures`), in the same transaction as the
//! purge, and every processor instance loads the whole topic whenever it is assigned partitions
//! or rewinds after an abort. An input whose key the registry covers is dropped before the
//! rules see it.
//!
//! A marker holds no personal data: its Kafka key is a keyed hash (HMAC-SHA-256 with
//! `erasure.hash_key`, truncated to 128 bits) of the tillstream key, its value the scope and the
//! erasure time. Without the hash key nobody can test an email address against the topic.
//!
//! What a marker covers depends on what the key names (see [`Scope`]): a Shopify id is never
//! given to anyone else, so an erased customer, order or checkout id is erased for good; an
//! email address or a shop can come back (the person registers again, the merchant reinstalls
//! the app), so those markers cover only records whose event time is at or before the erasure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use runtime::kafka::ToTheEnd;
use runtime::shred::{SubjectHasher, shop_key};
use runtime::{KafkaConfig, Secret};
use schemas::{CustomerKey, KeyKind, ShopifyEnvelope};
use serde::{Deserialize, Serialize};

/// Longest time a registry load may take before it counts as failed.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

pub use runtime::shred::{DEVELOPMENT_HASH_KEY, ErasureConfig};

/// Why the registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// Kafka refused or failed a request.
    #[error("cannot read the erasures topic {topic}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The Kafka error.
        #[source]
        source: KafkaError,
    },
    /// The topic was not read to its end in time.
    #[error("timed out reading the erasures topic {0}")]
    Timeout(String),
}

/// How far an erasure reaches, fixed by the kind of key that was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A Shopify id (customer, order, checkout): never reused, so every later record about it
    /// belongs to the erased person and is dropped, whatever its time.
    Identity,
    /// An email address: records at or before the erasure time are dropped; later ones are a
    /// new person using the address (a guest who comes back, a new registration).
    Address,
    /// A whole shop (`shop/redact`): every key of the shop, up to the erasure time.
    Shop,
}

impl Scope {
    /// The scope of an erased key, or `None` for keys that never hold a person (carts,
    /// products).
    pub fn of(kind: KeyKind) -> Option<Self> {
        match kind {
            KeyKind::Customer | KeyKind::Order | KeyKind::Checkout => Some(Self::Identity),
            KeyKind::Email => Some(Self::Address),
            KeyKind::Shop => Some(Self::Shop),
            KeyKind::Cart | KeyKind::Product => None,
        }
    }

    fn covers(self, erased_at_ms: i64, event_time_ms: i64) -> bool {
        match self {
            Self::Identity => true,
            Self::Address | Self::Shop => event_time_ms <= erased_at_ms,
        }
    }
}

/// One marker: the value of an erasures-topic record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// What the marker covers.
    pub scope: Scope,
    /// Event time of the erasure: of the redact, or of the forwarded redact (which carries the
    /// redact's time).
    pub erased_at_ms: i64,
}

impl Marker {
    fn covers(self, event_time_ms: i64) -> bool {
        self.scope.covers(self.erased_at_ms, event_time_ms)
    }
}

/// A record to write to the erasures topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerRecord {
    /// The Kafka key: the keyed hash of the erased key, in hex.
    pub key: String,
    /// The JSON marker.
    pub value: Vec<u8>,
}

type Digest = [u8; 16];

/// The erased subjects known to this instance (all of them: the topic is read whole).
pub struct Registry {
    hasher: SubjectHasher,
    markers: HashMap<Digest, Marker>,
    /// How many of the markers erase a whole shop: while none does, a record's shop key is not
    /// hashed at all (each keyed hash is an HMAC, and every input asks).
    shop_markers: usize,
}

impl Registry {
    /// An empty registry hashing with `hash_key`.
    pub fn new(hash_key: &Secret) -> Self {
        Self {
            hasher: SubjectHasher::new(hash_key),
            markers: HashMap::new(),
            shop_markers: 0,
        }
    }

    /// A registry with the committed content of the erasures topic (for the CLI's redrive and
    /// backfill, which must not bring an erased subject back either).
    ///
    /// # Errors
    /// When the topic cannot be read to its end.
    pub fn load(
        config: &ErasureConfig,
        kafka: &KafkaConfig,
        topic: &str,
    ) -> Result<Self, ErasureError> {
        let mut registry = Self::new(&config.hash_key);
        registry.reload(kafka, topic)?;
        Ok(registry)
    }

    /// The registry's name for a tillstream key (hex of the keyed hash).
    pub fn subject_id(&self, key: &str) -> String {
        self.hasher.hex(key)
    }

    fn digest(&self, key: &str) -> Digest {
        self.hasher.digest(key)
    }

    /// Number of markers held.
    pub fn len(&self) -> usize {
        self.markers.len()
    }

    /// Whether no marker is held.
    pub fn is_empty(&self) -> bool {
        self.markers.is_empty()
    }

    /// Whether a record for `key` at `event_time_ms` belongs to an erased subject: the key
    /// itself, or its whole shop, was erased.
    pub fn covers(&self, key: &CustomerKey, event_time_ms: i64) -> bool {
        if self.markers.is_empty() {
            return false;
        }
        let hit = |k: &str| {
            self.markers
                .get(&self.digest(k))
                .is_some_and(|m| m.covers(event_time_ms))
        };
        hit(key.as_str()) || (self.shop_markers > 0 && hit(&shop_key(key.shop())))
    }

    /// Same as [`Registry::covers`] for a key given as text (e.g. a dead letter's record key);
    /// text that is not a tillstream key is covered by nothing.
    pub fn covers_text(&self, key: &str, event_time_ms: i64) -> bool {
        CustomerKey::parse(key).is_ok_and(|k| self.covers(&k, event_time_ms))
    }

    /// Whether a raw or repartition record (its Kafka key and `ShopifyEnvelope` bytes) is about
    /// an erased subject. A record whose envelope cannot be decoded counts as old: any marker of
    /// its key covers it.
    pub fn covers_record(&self, key: &str, envelope: &[u8]) -> bool {
        let time = ShopifyEnvelope::decode(envelope)
            .map_or(i64::MIN, |e| e.triggered_at_ms.unwrap_or(e.received_at_ms));
        self.covers_text(key, time)
    }

    /// Remembers that `key` was erased at `at_ms` and returns the marker record to write in the
    /// same transaction, or `None` for keys that never hold a person.
    pub fn erase(&mut self, key: &CustomerKey, at_ms: i64) -> Option<MarkerRecord> {
        let scope = Scope::of(key.kind())?;
        let marker = Marker {
            scope,
            erased_at_ms: at_ms,
        };
        let digest = self.digest(key.as_str());
        self.put(digest, marker);
        // Serialising two plain fields cannot fail.
        let value = serde_json::to_vec(&marker).unwrap_or_default();
        Some(MarkerRecord {
            key: self.subject_id(key.as_str()),
            value,
        })
    }

    /// Remembers a shop's erasure announced by its shop key's owner (the marker itself is
    /// written there, once).
    pub fn note_shop(&mut self, shop: &str, at_ms: i64) {
        let digest = self.digest(&shop_key(shop));
        self.put(
            digest,
            Marker {
                scope: Scope::Shop,
                erased_at_ms: at_ms,
            },
        );
    }

    /// Adds or replaces a marker (the one place besides [`Registry::take`] that changes them,
    /// so the count of shop markers stays true).
    fn put(&mut self, digest: Digest, marker: Marker) {
        let old = self.markers.insert(digest, marker);
        self.shop_markers += usize::from(marker.scope == Scope::Shop);
        self.shop_markers -= usize::from(old.is_some_and(|m| m.scope == Scope::Shop));
    }

    /// Removes a marker (a tombstone on the topic).
    fn take(&mut self, digest: &Digest) {
        let old = self.markers.remove(digest);
        self.shop_markers -= usize::from(old.is_some_and(|m| m.scope == Scope::Shop));
    }

    /// Applies one record of the erasures topic (later records of a key replace earlier ones;
    /// an undecodable value is skipped with an error log rather than stopping the processor).
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(digest) = parse_hex(key) else {
            tracing::error!(key = %String::from_utf8_lossy(key), "Erasures topic record with a malformed key; skipped.");
            return;
        };
        match value.map(serde_json::from_slice::<Marker>) {
            None => self.take(&digest),
            Some(Ok(marker)) => self.put(digest, marker),
            Some(Err(e)) => {
                tracing::error!(error = %e, "Undecodable erasures topic record; skipped.");
            }
        }
    }

    /// Replaces the markers with the committed content of the erasures topic (every
    /// partition, from the beginning to the end, `read_committed`).
    ///
    /// # Errors
    /// When the topic cannot be read to its end.
    pub fn reload(&mut self, kafka: &KafkaConfig, topic: &str) -> Result<(), ErasureError> {
        let started = Instant::now();
        let fail = |source| ErasureError::Kafka {
            topic: topic.to_owned(),
            source,
        };
        let mut cfg = kafka.reader("tillstream-erasures-reader");
        cfg.set("group.id", "tillstream-erasures-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true");
        let reader: BaseConsumer<ToTheEnd> = cfg
            .create_with_context(ToTheEnd("erasures"))
            .map_err(fail)?;
        let timeout = Duration::from_secs(30);
        let metadata = reader.fetch_metadata(Some(topic), timeout).map_err(fail)?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            if let Some(e) = t.error() {
                return Err(fail(KafkaError::MetadataFetch(e.into())));
            }
            for p in t.partitions() {
                let (low, high) = reader
                    .fetch_watermarks(topic, p.id(), timeout)
                    .map_err(fail)?;
                if high > low {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .map_err(fail)?;
                }
            }
        }
        self.markers.clear();
        self.shop_markers = 0;
        let mut open = tpl.count();
        if open > 0 {
            reader.assign(&tpl).map_err(fail)?;
        }
        let deadline = Instant::now() + LOAD_TIMEOUT;
        while open > 0 {
            match reader.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => self.apply(m.key().unwrap_or_default(), m.payload()),
                Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
                // A broker away while loading: librdkafka fails over; the deadline bounds it.
                Some(Err(e)) if runtime::kafka::is_transient(&e) => {
                    if Instant::now() > deadline {
                        return Err(fail(e));
                    }
                    tracing::info!(error = %e, "Erasure registry read interrupted; retrying.");
                }
                Some(Err(e)) => return Err(fail(e)),
                None if Instant::now() > deadline => {
                    return Err(ErasureError::Timeout(topic.to_owned()));
                }
                None => {}
            }
        }
        tracing::info!(
            markers = self.markers.len(),
            seconds = started.elapsed().as_secs_f64(),
            "Loaded the erasure registry."
        );
        Ok(())
    }
}

fn parse_hex(text: &[u8]) -> Option<Digest> {
    if text.len() != 32 {
        return None;
    }
    let mut d = [0u8; 16];
    for (i, pair) in text.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        d[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::ShopDomain;

    fn key(kind: KeyKind, id: &str) -> CustomerKey {
        CustomerKey::new(&ShopDomain::parse("s.myshopify.com").unwrap(), kind, id)
    }

    #[test]
    fn the_shop_key_of_the_hash_is_the_routing_key_of_the_shop() {
        let shop = ShopDomain::parse("s.myshopify.com").unwrap();
        assert_eq!(
            shop_key(shop.as_str()),
            CustomerKey::new(&shop, KeyKind::Shop, "-").as_str()
        );
    }

    fn registry() -> Registry {
        Registry::new(&Secret::new("test-key"))
    }

    #[test]
    fn an_erased_id_is_covered_forever_an_address_only_up_to_the_erasure() {
        let mut r = registry();
        let c = key(KeyKind::Customer, "7");
        let e = key(KeyKind::Email, "ada@example.com");
        assert!(!r.covers(&c, 0));
        r.erase(&c, 1_000).unwrap();
        r.erase(&e, 1_000).unwrap();
        assert!(r.covers(&c, 999) && r.covers(&c, 1_000) && r.covers(&c, 5_000));
        assert!(r.covers(&e, 1_000), "the redacted past");
        assert!(!r.covers(&e, 1_001), "a new person with the address");
        assert!(
            !r.covers(&key(KeyKind::Customer, "8"), 0),
            "others untouched"
        );
        assert!(r.erase(&key(KeyKind::Cart, "t"), 0).is_none());
    }

    #[test]
    fn a_shop_marker_covers_every_key_of_the_shop_up_to_its_time() {
        let mut r = registry();
        r.note_shop("s.myshopify.com", 1_000);
        assert!(r.covers(&key(KeyKind::Product, "1"), 1_000));
        assert!(
            !r.covers(&key(KeyKind::Customer, "1"), 1_001),
            "reinstalled later"
        );
        let other = CustomerKey::new(
            &ShopDomain::parse("o.myshopify.com").unwrap(),
            KeyKind::Customer,
            "1",
        );
        assert!(!r.covers(&other, 0));
    }

    #[test]
    fn a_shop_marker_read_from_the_topic_covers_the_shop_until_its_tombstone() {
        let shop = ShopDomain::parse("s.myshopify.com").unwrap();
        let rec = registry()
            .erase(&CustomerKey::new(&shop, KeyKind::Shop, "-"), 1_000)
            .unwrap();
        let mut reader = registry();
        let customer = key(KeyKind::Customer, "1");
        reader.apply(rec.key.as_bytes(), Some(&rec.value));
        assert!(reader.covers(&customer, 1_000), "the shop's past");
        // A second copy of the marker replaces the first: one tombstone still lifts it.
        reader.apply(rec.key.as_bytes(), Some(&rec.value));
        reader.apply(rec.key.as_bytes(), None);
        assert!(!reader.covers(&customer, 1_000));
        reader.erase(&customer, 5).unwrap();
        reader.note_shop("s.myshopify.com", 1_000);
        assert!(reader.covers(&key(KeyKind::Product, "1"), 1_000));
    }

    #[test]
    fn records_round_trip_and_hold_no_personal_data() {
        let mut writer = registry();
        let e = key(KeyKind::Email, "ada@example.com");
        let rec = writer.erase(&e, 42).unwrap();
        let text = format!("{}{}", rec.key, String::from_utf8_lossy(&rec.value));
        assert!(
            !text.contains("ada") && !text.contains("s.myshopify"),
            "{text}"
        );
        let mut reader = registry();
        reader.apply(rec.key.as_bytes(), Some(&rec.value));
        assert!(reader.covers(&e, 42));
        reader.apply(rec.key.as_bytes(), None);
        assert!(!reader.covers(&e, 42), "a tombstone lifts the marker");
        let mut other_key = Registry::new(&Secret::new("another-key"));
        other_key.apply(rec.key.as_bytes(), Some(&rec.value));
        assert!(
            !other_key.covers(&e, 42),
            "the digest depends on the hash key"
        );
    }
}
