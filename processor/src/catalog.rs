//! The product table: every product of every shop, on every processor instance (a global
//! table, as Kafka Streams' GlobalKTable), for the enrichment join.
//!
//! Products are keyed by product id (`{shop}/p/{id}`) and orders by customer, so the instance
//! that runs an order's rules does not own its products' keys. The instance that owns a
//! product key applies its `products/*` events ([`crate::engine`]'s catalog hook) and writes
//! the product's record to the compacted products topic in the same transaction; every
//! instance reads that topic whole at assignment and after an abort ([`Catalog::reload`]), and
//! a reader thread keeps tailing it, so products written by other instances arrive within the
//! reader's poll interval.
//!
//! Each record keeps the product's versions, stamped with the product's `updated_at` (a
//! deletion: its event time): the latest in full (the catalog item is built from it), the older
//! ones only as the facts enrichment reads (`rules::catalog::enrich::facts`), a run of older
//! versions with equal facts collapsed into its first, and at most [`MAX_VERSIONS`] of them. So
//! updates that change nothing an item shows (inventory, titles, prices, tags) do not push
//! history out. A command is enriched with the version current at the command's event time
//! ([`ProductTable::as_of`]), not with whatever the table holds when it runs, so a replay of
//! the same log over the same products topic gives the same enriched commands whatever the
//! interleaving of partitions, for every command whose product's facts changed fewer than
//! [`MAX_VERSIONS`] times after it (an older one gets the oldest version kept).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rules::catalog::{Product, enrich};
use runtime::KafkaConfig;
use runtime::kafka::ToTheEnd;
use serde::{Deserialize, Serialize};

/// Versions kept per product (the latest ones by version time, after collapsing older versions
/// with equal facts). Bounds both memory and how far back a replay is exact (module doc).
pub const MAX_VERSIONS: usize = 8;

/// Longest time a full load of the products topic may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the products topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Kafka refused or failed a request.
    #[error("cannot read the products topic {topic}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The Kafka error.
        #[source]
        source: KafkaError,
    },
    /// The topic was not read to its end in time, or the reader stopped.
    #[error("could not load the products topic {0} to its end")]
    Load(String),
}

/// One version of a product: its facts, or its deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Version time: the product's `updated_at`, or the event time of a deletion. Unix ms.
    pub at_ms: i64,
    /// The product; `None` when deleted.
    pub product: Option<Arc<Product>>,
}

/// The value of a products-topic record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProductRecord {
    /// Versions, oldest first, at most [`MAX_VERSIONS`].
    pub versions: Vec<Version>,
}

impl ProductRecord {
    /// Keeps the latest version whole and every older one as its facts, drops an older version
    /// whose facts equal its predecessor's (the predecessor already answers for its time), and
    /// keeps the latest [`MAX_VERSIONS`]. Idempotent.
    fn normalise(&mut self) {
        let last = self.versions.len().saturating_sub(1);
        let mut kept: Vec<Version> = Vec::with_capacity(self.versions.len());
        for (i, mut v) in std::mem::take(&mut self.versions).into_iter().enumerate() {
            if i < last {
                if let Some(p) = &v.product {
                    let facts = enrich::facts(p);
                    if facts != **p {
                        v.product = Some(Arc::new(facts));
                    }
                }
                if kept.last().is_some_and(|prev| prev.product == v.product) {
                    continue;
                }
            }
            kept.push(v);
        }
        let excess = kept.len().saturating_sub(MAX_VERSIONS);
        kept.drain(..excess);
        self.versions = kept;
    }
}

/// Products by key (`{shop}/p/{id}`).
#[derive(Debug, Default)]
pub struct ProductTable {
    entries: HashMap<Box<str>, ProductRecord>,
    /// Versions held over all products (a memory gauge).
    versions: usize,
}

impl ProductTable {
    /// Number of products held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Versions held over all products.
    pub fn versions(&self) -> usize {
        self.versions
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The record of `key`.
    pub fn record(&self, key: &str) -> Option<&ProductRecord> {
        self.entries.get(key)
    }

    /// The latest version of `key` (by version time).
    pub fn current(&self, key: &str) -> Option<&Version> {
        self.entries.get(key).and_then(|r| r.versions.last())
    }

    /// The product version to enrich a command at `at_ms` with: the latest version at or
    /// before it, else the earliest one (a product backfilled after the order still describes
    /// what was bought). Deletions are skipped: a deleted product's last facts still describe
    /// the item.
    pub fn as_of(&self, key: &str, at_ms: i64) -> Option<Arc<Product>> {
        let versions = &self.entries.get(key)?.versions;
        let live = || {
            versions
                .iter()
                .filter_map(|v| Some((v.at_ms, v.product.as_ref()?)))
        };
        live()
            .rev()
            .find(|(at, _)| *at <= at_ms)
            .or_else(|| live().next())
            .map(|(_, p)| Arc::clone(p))
    }

    /// Merges versions into `key`'s record: by version time, the incoming one winning a tie;
    /// then older versions are reduced to their facts, runs of equal facts collapsed and only
    /// the latest [`MAX_VERSIONS`] kept ([`ProductRecord::normalise`]). Merging is idempotent,
    /// so the reader's copy of a record and the owner's own write can meet in any order.
    /// Returns whether the record changed.
    pub fn merge(&mut self, key: &str, incoming: Vec<Version>) -> bool {
        let record = self.entries.entry(key.into()).or_default();
        let before = record.versions.clone();
        for v in incoming {
            match record.versions.binary_search_by_key(&v.at_ms, |x| x.at_ms) {
                Ok(i) => record.versions[i] = v,
                Err(i) => record.versions.insert(i, v),
            }
        }
        record.normalise();
        self.versions = (self.versions + record.versions.len()).saturating_sub(before.len());
        record.versions != before
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = std::str::from_utf8(key) else {
            tracing::error!("Products topic record with a non-UTF-8 key; skipped.");
            return;
        };
        match value.map(serde_json::from_slice::<ProductRecord>) {
            None => {
                if let Some(r) = self.entries.remove(key) {
                    self.versions = self.versions.saturating_sub(r.versions.len());
                }
            }
            Some(Ok(r)) => {
                self.merge(key, r.versions);
            }
            Some(Err(e)) => {
                tracing::error!(key, error = %e, "Undecodable products topic record; skipped.");
            }
        }
    }
}

/// The catalog's metrics.
#[derive(Clone)]
pub struct CatalogMetrics {
    /// Products in the table.
    pub products: IntGauge,
    /// Versions in the table (the latest of each product plus the older versions' facts).
    pub versions: IntGauge,
    /// Seconds the last full load of the products topic took.
    pub load_seconds: Gauge,
    /// Product inputs applied by this instance, by outcome: `changed` (the catalog item
    /// changed: a catalog command was written), `unchanged` (a new version, same item: nothing
    /// sent), `duplicate` (a version the table already had).
    pub updates: IntCounterVec,
    /// Commerce items enriched from the table (`hit`) or left as the payload had them (`miss`).
    pub items: IntCounterVec,
}

impl CatalogMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            products: IntGauge::new(
                "tillstream_processor_catalog_products",
                "Products in this instance's product table.",
            )?,
            versions: IntGauge::new(
                "tillstream_processor_catalog_versions",
                "Product versions in this instance's product table (latest plus older facts).",
            )?,
            load_seconds: Gauge::new(
                "tillstream_processor_catalog_load_seconds",
                "Seconds the last full load of the products topic took (at assignment, after an abort).",
            )?,
            updates: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_product_updates_total",
                    "products/* inputs applied on owned product keys, by outcome (changed: catalog command written; unchanged; duplicate).",
                ),
                &["outcome"],
            )?,
            items: IntCounterVec::new(
                Opts::new(
                    "tillstream_processor_enriched_items_total",
                    "Commerce items of commands, by whether the product table knew their product.",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.products.clone()))?;
        registry.register(Box::new(m.versions.clone()))?;
        registry.register(Box::new(m.load_seconds.clone()))?;
        registry.register(Box::new(m.updates.clone()))?;
        registry.register(Box::new(m.items.clone()))?;
        Ok(m)
    }

    /// Sets the table's gauges.
    pub fn observe(&self, table: &ProductTable) {
        self.products
            .set(i64::try_from(table.len()).unwrap_or(i64::MAX));
        self.versions
            .set(i64::try_from(table.versions()).unwrap_or(i64::MAX));
    }
}

/// The shared table and the thread that tails the products topic into it.
pub struct Catalog {
    /// The table; the engine reads it for every command and writes it for owned products.
    pub table: Arc<RwLock<ProductTable>>,
    kafka: KafkaConfig,
    topic: String,
    reader: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// Metrics.
    pub metrics: CatalogMetrics,
}

impl Catalog {
    /// An empty catalog over `topic`; nothing is read until [`Catalog::reload`].
    pub fn new(kafka: KafkaConfig, topic: String, metrics: CatalogMetrics) -> Self {
        Self {
            table: Arc::new(RwLock::new(ProductTable::default())),
            kafka,
            topic,
            reader: None,
            metrics,
        }
    }

    /// An empty catalog over the same topic (another engine thread's own table).
    pub fn sibling(&self) -> Self {
        Self::new(self.kafka.clone(), self.topic.clone(), self.metrics.clone())
    }

    /// Reads the table with a poisoned lock tolerated (a panic elsewhere must not stop
    /// enrichment; the data itself is always consistent between calls).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ProductTable> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the table (see [`Catalog::read`]).
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, ProductTable> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the table with the committed products topic (read to its end) and keeps a
    /// reader tailing it. Called at assignment and after an abort, like the erasure registry:
    /// versions this instance wrote in an aborted transaction are forgotten.
    ///
    /// # Errors
    /// When the topic cannot be read to its end in time.
    pub fn reload(&mut self) -> Result<(), CatalogError> {
        self.stop();
        let started = Instant::now();
        *self.write() = ProductTable::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = Reader {
            table: Arc::clone(&self.table),
            stop: Arc::clone(&stop),
            metrics: self.metrics.clone(),
        };
        let consumer = reader_consumer(&self.kafka, &self.topic)?;
        let handle = std::thread::Builder::new()
            .name("catalog-reader".into())
            .spawn(move || reader.run(&consumer, &ready_tx))
            .map_err(|_| CatalogError::Load(self.topic.clone()))?;
        self.reader = Some((stop, handle));
        match ready_rx.recv_timeout(LOAD_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(CatalogError::Kafka {
                    topic: self.topic.clone(),
                    source,
                });
            }
            Err(_) => return Err(CatalogError::Load(self.topic.clone())),
        }
        let products = self.read().len();
        self.metrics
            .load_seconds
            .set(started.elapsed().as_secs_f64());
        tracing::info!(
            products,
            seconds = started.elapsed().as_secs_f64(),
            "Loaded the product table."
        );
        Ok(())
    }

    fn stop(&mut self) {
        if let Some((stop, handle)) = self.reader.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reader_consumer(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<BaseConsumer<ToTheEnd>, CatalogError> {
    let fail = |source| CatalogError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let mut cfg = kafka.reader("tillstream-products-reader");
    cfg.set("group.id", "tillstream-products-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<ToTheEnd> = cfg
        .create_with_context(ToTheEnd("products"))
        .map_err(fail)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(fail)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        if let Some(e) = t.error() {
            return Err(fail(KafkaError::MetadataFetch(e.into())));
        }
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(fail)?;
        }
    }
    if tpl.count() == 0 {
        return Err(CatalogError::Load(topic.to_owned()));
    }
    consumer.assign(&tpl).map_err(fail)?;
    Ok(consumer)
}

struct Reader {
    table: Arc<RwLock<ProductTable>>,
    stop: Arc<AtomicBool>,
    metrics: CatalogMetrics,
}

impl Reader {
    /// Reads until stopped; says `ready` once every partition reached its end once.
    fn run(self, consumer: &BaseConsumer<ToTheEnd>, ready: &mpsc::Sender<Result<(), KafkaError>>) {
        let mut open: std::collections::BTreeSet<i32> = consumer
            .assignment()
            .map(|t| t.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let mut told = false;
        while !self.stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let mut table = self
                        .table
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    table.apply(m.key().unwrap_or_default(), m.payload());
                    self.metrics.observe(&table);
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                // A broker away while loading: librdkafka fails over; the load's own
                // timeout bounds the wait.
                Some(Err(e)) if !told && !runtime::kafka::is_transient(&e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
                Some(Err(e)) => {
                    // Tailing: librdkafka retries by itself; keep going.
                    tracing::warn!(error = %e, "Products topic reader error.");
                }
                None => {}
            }
            if !told && open.is_empty() {
                told = true;
                let _ = ready.send(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(at_ms: i64, title: Option<&str>) -> Version {
        Version {
            at_ms,
            product: title.map(|t| {
                Arc::new(Product {
                    id: "1".into(),
                    title: Some(t.into()),
                    ..Product::default()
                })
            }),
        }
    }

    /// A version at `at_ms` whose only variant has compare-at price `cents` (a fact).
    fn sale(at_ms: i64, cents: i64) -> Version {
        Version {
            at_ms,
            product: Some(Arc::new(Product::from_payload(
                "1",
                &serde_json::json!({"title": format!("title at {at_ms}"), "variants": [{
                    "id": 10, "compare_at_price": format!("{}.{:02}", cents / 100, cents % 100),
                    "inventory_quantity": at_ms}]}),
            ))),
        }
    }

    fn compare_at(p: Option<Arc<Product>>) -> Option<String> {
        Some(p?.variants.first()?.compare_at_price?.to_string())
    }

    #[test]
    fn updates_that_change_no_fact_keep_the_history() {
        let mut t = ProductTable::default();
        t.merge("k", vec![sale(100, 500)]);
        t.merge("k", vec![sale(200, 400)]);
        // Many updates that change only the title and inventory (not facts): collapsed.
        for at in 300..320 {
            let mut v = sale(at, 400);
            v.product = v.product.map(|p| {
                let mut p = (*p).clone();
                p.title = Some(format!("renamed {at}"));
                Arc::new(p)
            });
            t.merge("k", vec![v]);
        }
        let r = t.record("k").unwrap();
        assert_eq!(
            r.versions.iter().map(|v| v.at_ms).collect::<Vec<_>>(),
            [100, 200, 319],
            "older versions with equal facts collapse into the first of their run"
        );
        assert_eq!(compare_at(t.as_of("k", 150)).as_deref(), Some("5.00"));
        assert_eq!(compare_at(t.as_of("k", 250)).as_deref(), Some("4.00"));
        let current = t.current("k").and_then(|v| v.product.clone()).unwrap();
        assert_eq!(
            current.title.as_deref(),
            Some("renamed 319"),
            "the latest is whole"
        );
        assert_eq!(current.variants[0].inventory, Some(319));
        assert!(
            r.versions[0].product.as_ref().unwrap().title.is_none(),
            "older versions keep only facts"
        );
        let before = r.clone();
        assert!(!t.merge("k", before.versions.clone()), "idempotent");
        assert!(
            !t.merge("k", vec![sale(250, 400)]),
            "a collapsed version re-read changes nothing"
        );
    }

    fn title(p: Option<Arc<Product>>) -> Option<String> {
        p.and_then(|p| p.title.clone())
    }

    #[test]
    fn as_of_picks_the_version_current_at_the_time() {
        let mut t = ProductTable::default();
        // Out of order: the update before the create.
        t.merge("k", vec![sale(200, 2)]);
        t.merge("k", vec![sale(100, 1)]);
        t.merge("k", vec![v(300, None)]);
        let cents = |c: &str| Some(c.to_owned());
        assert_eq!(compare_at(t.as_of("k", 150)), cents("0.01"));
        assert_eq!(compare_at(t.as_of("k", 250)), cents("0.02"));
        assert_eq!(
            compare_at(t.as_of("k", 50)),
            cents("0.01"),
            "earliest known"
        );
        assert_eq!(
            compare_at(t.as_of("k", 400)),
            cents("0.02"),
            "deleted: last facts"
        );
        assert!(t.current("k").is_some_and(|c| c.product.is_none()));
        assert!(t.as_of("other", 0).is_none());
        t.merge("k", vec![v(500, Some("back"))]);
        assert_eq!(
            title(t.as_of("k", 600)),
            Some("back".into()),
            "the latest is whole"
        );
    }

    #[test]
    fn merging_is_idempotent_and_bounded() {
        let mut t = ProductTable::default();
        assert!(t.merge("k", vec![sale(1, 1), sale(2, 2)]));
        assert!(!t.merge("k", vec![sale(1, 1)]), "a re-read changes nothing");
        t.merge("k", (3..=10).map(|i| sale(i, i)).collect());
        let r = t.record("k").unwrap();
        assert_eq!(r.versions.len(), MAX_VERSIONS);
        assert_eq!(r.versions[0].at_ms, 3);
        assert_eq!(t.versions(), MAX_VERSIONS, "the versions gauge's count");
        let bytes = serde_json::to_vec(r).unwrap();
        let mut other = ProductTable::default();
        other.apply(b"k", Some(&bytes));
        assert_eq!(other.record("k"), Some(r));
        other.apply(b"k", Some(b"not json"));
        assert_eq!(other.record("k"), Some(r), "garbage is skipped, not fatal");
        assert_eq!(other.versions(), MAX_VERSIONS);
        other.apply(b"k", None);
        assert!(other.is_empty());
        assert_eq!(other.versions(), 0);
    }
}
