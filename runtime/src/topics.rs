//! The topic catalogue: every topic tillstream uses, its partitions and configs, and `apply`.
//!
//! Co-partitioning: the raw, repartition, changelog and commands topics must have the same
//! partition count, because the processor owns partition *p* of all of them together (range
//! assignment) and keeps the state of every key hashing to *p*. `apply` refuses to proceed
//! when an existing topic disagrees, rather than silently running with split state.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::Deserialize;

use crate::kafka::KafkaConfig;

/// Why the topics could not be created or verified.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The broker could not be reached or refused a request.
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Creating one topic failed.
    #[error("cannot create topic {topic}: {code}")]
    Create {
        /// The topic.
        topic: String,
        /// Kafka's error code.
        code: RDKafkaErrorCode,
    },
    /// Existing topics differ from the catalogue; nothing is changed.
    #[error("existing topics do not match the catalogue:\n  {}", .0.join("\n  "))]
    Mismatch(Vec<String>),
}

/// Partition counts, replication and names of all topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Partitions of the raw, repartition, changelog and commands topics (all equal, see the
    /// module doc). This is the most processor instances that can share the work.
    pub partitions: i32,
    /// Partitions of the dead-letter and data-request topics.
    pub side_partitions: i32,
    /// Replication factor of every topic. Unset: 3, or the number of brokers when the
    /// cluster has fewer (so a single development broker gets 1 and a cluster 3).
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of every topic: how many replicas must have a write before an
    /// `acks=all` producer gets its ack. Unset: a majority of the replication factor (1 of 1,
    /// 2 of 3), so one broker may be down without stopping writes or losing acked ones.
    pub min_insync_replicas: Option<i32>,
    /// Raw Shopify events, the system of record: retention unlimited.
    pub raw: String,
    /// Iterable commands written by the processor, read by the publisher.
    pub commands: String,
    /// The processor's compacted state changelog.
    pub changelog: String,
    /// The processor's internal repartition topic (events re-keyed to their customer).
    pub repartition: String,
    /// Raw records the processor could not process, with the reason in headers.
    pub processor_dlq: String,
    /// Commands Iterable rejected permanently, with request, response and reason in headers.
    pub publisher_dlq: String,
    /// Answers to `customers/data_request`: what the state holds about a customer.
    pub data_requests: String,
    /// The erasure registry: one marker per erased subject (keyed hash, no personal data),
    /// compacted and never deleted by a replay, so an erased customer stays erased.
    pub erasures: String,
    /// Consent writes for shops' Admin API, written by the processor, read by the Shopify writer
    /// (two-way consent; keyed by customer, so one customer's writes stay in order).
    pub shopify_commands: String,
    /// Shopify commands the Admin API refused (`userErrors`) or that could not be decoded.
    pub shopify_writer_dlq: String,
    /// The processor's decision trail (`engine.trail`): per input or timer, what the rules
    /// decided and why, keyed like the state (`tillstream explain` reads it).
    pub decisions: String,
    /// The product table: the current product (with a few earlier versions) per product key,
    /// compacted, written by the processor instance owning the product's key and read whole by
    /// every instance (a global table for the enrichment join).
    pub products: String,
    /// Crypto-shredding's data keys (runtime::shred): one wrapped key per subject and period,
    /// keyed by key id, partitioned like the raw topic; a GDPR erasure deletes the subject's
    /// keys, which makes its sealed raw bodies unreadable.
    pub keys: String,
    /// Retention of the commands, repartition and decisions topics.
    #[serde(with = "humantime_serde")]
    pub transient_retention: Duration,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self::with_prefix("tillstream.")
    }
}

/// One topic's desired shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic configs that `apply` sets on creation and verifies afterwards.
    pub configs: BTreeMap<&'static str, String>,
}

/// What `apply` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// It did not exist and was created.
    Created(String),
    /// It existed with the expected shape.
    Verified(String),
}

impl TopicsConfig {
    /// The catalogue with every name under `prefix` (tests use a unique prefix each).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            partitions: 12,
            side_partitions: 3,
            replication_factor: None,
            min_insync_replicas: None,
            raw: format!("{prefix}shopify.raw"),
            commands: format!("{prefix}iterable.commands"),
            changelog: format!("{prefix}processor.changelog"),
            repartition: format!("{prefix}processor.repartition"),
            processor_dlq: format!("{prefix}processor.dlq"),
            publisher_dlq: format!("{prefix}publisher.dlq"),
            data_requests: format!("{prefix}gdpr.data-requests"),
            erasures: format!("{prefix}gdpr.erasures"),
            shopify_commands: format!("{prefix}shopify.commands"),
            shopify_writer_dlq: format!("{prefix}shopify-writer.dlq"),
            decisions: format!("{prefix}processor.decisions"),
            products: format!("{prefix}catalog.products"),
            keys: format!("{prefix}gdpr.keys"),
            transient_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// The replication factor on a cluster of `brokers` (see the field).
    pub fn replication(&self, brokers: usize) -> i32 {
        self.replication_factor
            .unwrap_or_else(|| i32::try_from(brokers.clamp(1, 3)).unwrap_or(1))
    }

    /// The `min.insync.replicas` for replication factor `rf` (see the field).
    pub fn min_insync(&self, rf: i32) -> i32 {
        self.min_insync_replicas.unwrap_or((rf + 1) / 2).max(1)
    }

    /// Every topic with its partitions and configs; `min.insync.replicas` is among them
    /// once the replication factor is known (set, or resolved by `apply`).
    pub fn specs(&self) -> Vec<TopicSpec> {
        let transient = self.transient_retention.as_millis().to_string();
        let min_insync = self
            .replication_factor
            .map(|rf| ("min.insync.replicas", self.min_insync(rf).to_string()));
        let spec = |name: &str, partitions: i32, configs: &[(&'static str, &str)]| TopicSpec {
            name: name.to_owned(),
            partitions,
            configs: configs
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .chain(min_insync.clone())
                .collect(),
        };
        vec![
            // The system of record: never expire, replays and backfills start from offset 0.
            spec(
                &self.raw,
                self.partitions,
                &[
                    ("cleanup.policy", "delete"),
                    ("retention.ms", "-1"),
                    ("retention.bytes", "-1"),
                    // Up to 10 MiB per record (after compression): ingest accepts 5 MiB bodies,
                    // and the broker must never refuse a delivery that passed verification.
                    ("max.message.bytes", "10485760"),
                ],
            ),
            spec(
                &self.commands,
                self.partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", &transient)],
            ),
            // Compacted: the latest state per key survives; tombstones erase (GDPR). Ten-minute
            // segments: the cleaner never compacts the active segment, and with the default
            // (1 GiB or 7 days) none rolls for hours, so a restore read every state update since
            // the start (the one-hour soak: a processor restart's stall grew from 40 s to 200 s
            // over the hour, docs/benchmarks.md). A day's max lag bounds how long an erased
            // key's bytes stay on disk, as for the data keys.
            spec(
                &self.changelog,
                self.partitions,
                &[
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", "0"),
                    ("max.compaction.lag.ms", "86400000"),
                    ("segment.ms", "600000"),
                    ("delete.retention.ms", "86400000"),
                ],
            ),
            // Keyed and partitioned like the state, so one key's trail is in one partition.
            spec(
                &self.decisions,
                self.partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", &transient)],
            ),
            spec(
                &self.repartition,
                self.partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", &transient)],
            ),
            spec(
                &self.processor_dlq,
                self.side_partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
            ),
            spec(
                &self.publisher_dlq,
                self.side_partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
            ),
            spec(
                &self.data_requests,
                self.side_partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", "2592000000")],
            ),
            // Two-way consent (issue 20): few records, so the side partition count; not
            // co-partitioned with anything, the writer only needs per-customer order.
            spec(
                &self.shopify_commands,
                self.side_partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", &transient)],
            ),
            spec(
                &self.shopify_writer_dlq,
                self.side_partitions,
                &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
            ),
            // Compacted, never expired: the latest marker per erased subject must outlive every
            // raw record about it (the raw topic keeps records forever).
            spec(
                &self.erasures,
                self.side_partitions,
                &[
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", "0"),
                ],
            ),
            // Compacted: the latest record per product is the table; every processor instance
            // reads it whole, so fewer partitions mean fewer fetches.
            spec(
                &self.products,
                self.side_partitions,
                &[
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", "0"),
                ],
            ),
            // Compacted, partitioned like the raw topic (a key lives on its subject's partition,
            // so a processor loads only its own partitions' keys). Compaction within a day of a
            // tombstone (max lag, hourly segments) bounds how long an erased key's bytes stay
            // on disk; the tombstone itself is kept a day for readers that are behind.
            spec(
                &self.keys,
                self.partitions,
                &[
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", "0"),
                    ("max.compaction.lag.ms", "86400000"),
                    ("segment.ms", "3600000"),
                    ("delete.retention.ms", "86400000"),
                ],
            ),
        ]
    }

    /// Creates missing topics and verifies existing ones; an existing topic with another
    /// partition count or config is an error and nothing is changed.
    pub async fn apply(&self, kafka: &KafkaConfig) -> Result<Vec<TopicOutcome>, TopicError> {
        let admin: AdminClient<DefaultClientContext> =
            kafka.client("tillstream-topics").create()?;
        let timeout = Duration::from_secs(30);
        let metadata = admin.inner().fetch_metadata(None, timeout)?;
        let rf = self.replication(metadata.brokers().len());
        let resolved = TopicsConfig {
            replication_factor: Some(rf),
            ..self.clone()
        };
        let specs = resolved.specs();
        let existing: BTreeMap<String, i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                (
                    t.name().to_owned(),
                    i32::try_from(t.partitions().len()).unwrap_or(i32::MAX),
                )
            })
            .collect();

        let mut problems = Vec::new();
        let present: Vec<&TopicSpec> = specs
            .iter()
            .filter(|s| existing.contains_key(&s.name))
            .collect();
        if !present.is_empty() {
            let resources: Vec<ResourceSpecifier<'_>> = present
                .iter()
                .map(|s| ResourceSpecifier::Topic(&s.name))
                .collect();
            let described = admin
                .describe_configs(
                    &resources,
                    &AdminOptions::new().request_timeout(Some(timeout)),
                )
                .await?;
            for (spec, result) in present.iter().zip(described) {
                let partitions = existing.get(&spec.name).copied().unwrap_or_default();
                if partitions != spec.partitions {
                    problems.push(format!(
                        "{}: {} partitions, expected {}",
                        spec.name, partitions, spec.partitions
                    ));
                }
                match result {
                    Ok(resource) => {
                        for (key, want) in &spec.configs {
                            let have = resource
                                .get(key)
                                .and_then(|e| e.value.clone())
                                .unwrap_or_default();
                            if &have != want {
                                problems
                                    .push(format!("{}: {key}={have}, expected {want}", spec.name));
                            }
                        }
                    }
                    Err(code) => {
                        problems.push(format!("{}: cannot describe configs: {code}", spec.name))
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(TopicError::Mismatch(problems));
        }

        let missing: Vec<&TopicSpec> = specs
            .iter()
            .filter(|s| !existing.contains_key(&s.name))
            .collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(rf));
                for (k, v) in &s.configs {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let mut outcomes: Vec<TopicOutcome> = present
            .iter()
            .map(|s| TopicOutcome::Verified(s.name.clone()))
            .collect();
        if !new_topics.is_empty() {
            let results = admin
                .create_topics(
                    &new_topics,
                    &AdminOptions::new().operation_timeout(Some(timeout)),
                )
                .await?;
            for result in results {
                match result {
                    Ok(name) => outcomes.push(TopicOutcome::Created(name)),
                    // Another instance created it between our metadata read and now.
                    Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        outcomes.push(TopicOutcome::Verified(name))
                    }
                    Err((topic, code)) => return Err(TopicError::Create { topic, code }),
                }
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn co_partitioned_topics_share_the_partition_count() {
        let t = TopicsConfig::default();
        let specs = t.specs();
        for name in [&t.raw, &t.commands, &t.changelog, &t.repartition] {
            let s = specs.iter().find(|s| &s.name == name).unwrap();
            assert_eq!(s.partitions, t.partitions, "{name}");
        }
        let raw = specs.iter().find(|s| s.name == t.raw).unwrap();
        assert_eq!(raw.configs["retention.ms"], "-1");
        let changelog = specs.iter().find(|s| s.name == t.changelog).unwrap();
        assert_eq!(changelog.configs["cleanup.policy"], "compact");
        // Segments roll, so the cleaner can compact what a restore reads.
        assert_eq!(changelog.configs["segment.ms"], "600000");
        let erasures = specs.iter().find(|s| s.name == t.erasures).unwrap();
        assert_eq!(erasures.configs["cleanup.policy"], "compact");
    }

    #[test]
    fn replication_follows_the_cluster_and_min_insync_is_a_majority_unless_set() {
        let mut t = TopicsConfig::default();
        assert_eq!(
            (t.replication(1), t.replication(3), t.replication(5)),
            (1, 3, 3)
        );
        assert_eq!((t.min_insync(1), t.min_insync(3)), (1, 2));
        assert!(
            t.specs()
                .iter()
                .all(|s| !s.configs.contains_key("min.insync.replicas"))
        );
        t.replication_factor = Some(3);
        assert_eq!(t.replication(1), 3, "an explicit factor is kept");
        assert!(
            t.specs()
                .iter()
                .all(|s| s.configs["min.insync.replicas"] == "2")
        );
        t.min_insync_replicas = Some(3);
        assert_eq!(t.min_insync(3), 3);
    }
}
