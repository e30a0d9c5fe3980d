//! Kafka client settings shared by every service, in one place so the guarantees hold.
//!
//! * Producers are idempotent with `acks=all`: a record acknowledged to ingest's caller is on
//!   every in-sync replica and retries never duplicate it.
//! * Every producer uses the `murmur2_random` partitioner, the Java client's default. The
//!   processor's changelog, repartition and command topics are co-partitioned with the raw
//!   topic *by key hash*, so all writers must hash keys the same way; librdkafka's own default
//!   (`consistent_random`, CRC32) would silently scatter a customer across partitions when a
//!   Java tool (or Kafka Connect) writes to the same topics.
//! * Consumers never auto-commit: each service commits offsets only once the work is durable.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;

/// Connection settings for the Kafka cluster.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties applied to every client (TLS, SASL, timeouts), e.g.
    /// `"security.protocol" = "SASL_SSL"`. Values of keys containing `password`, `secret` or
    /// `key` are redacted in logs.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Static group membership (`group.instance.id`) for this service's consumers: a
    /// restarted instance with the same id gets its partitions back at once instead of after
    /// the session timeout. Must be unique per running instance of a group (e.g. the pod or
    /// container name); unset = dynamic membership.
    #[serde(default)]
    pub group_instance_id: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
            group_instance_id: None,
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key"].iter().any(|s| k.contains(s));
                (k.as_str(), if secret { "**REDACTED**" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &props)
            .field("group_instance_id", &self.group_instance_id)
            .finish()
    }
}

/// How long a consumer whose prefetch queue is full waits before fetching again (librdkafka's
/// `fetch.queue.backoff.ms`, 1,000 by default), unless `kafka.properties` sets it.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "20";

impl KafkaConfig {
    /// A config for the given brokers with no extra properties (tests, tools).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
            group_instance_id: None,
        }
    }

    /// The base client config: brokers plus the user's extra properties.
    pub fn client(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// An idempotent producer: `acks=all`, ordered retries, the Java partitioner.
    pub fn producer(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client(client_id);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            // Matches the raw topic's max.message.bytes (runtime::topics).
            .set("message.max.bytes", "10485760");
        // User overrides win over the safe defaults only for tuning keys, never for the
        // guarantees: re-apply the ones the design depends on.
        for (k, v) in &self.properties {
            if !matches!(k.as_str(), "enable.idempotence" | "acks" | "partitioner") {
                c.set(k, v);
            }
        }
        c
    }

    /// A transactional producer with a stable `transactional.id`, so a restarted instance
    /// fences its predecessor.
    pub fn transactional_producer(&self, client_id: &str, transactional_id: &str) -> ClientConfig {
        let mut c = self.producer(client_id);
        c.set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000");
        c
    }

    /// The base config of a client that reads: [`KafkaConfig::client`] plus a short fetch
    /// back-off, unless `kafka.properties` sets one. Once its local queue is full (64 MiB by
    /// default, less where a reader lowers it) librdkafka waits `fetch.queue.backoff.ms` before
    /// fetching again; its default of 1 s let a consumer that drains the queue in under a
    /// second (the processor, at 6 KB per webhook; a changelog reader with a 2 MiB queue) sit
    /// idle for a quarter of the time (docs/benchmarks.md, "Fetch back-off and the allocator").
    pub fn reader(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client(client_id);
        if !self.properties.contains_key("fetch.queue.backoff.ms") {
            c.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        }
        c
    }

    /// A consumer in `group` with auto-commit off; `read_committed` hides aborted transactions.
    /// With `group_instance_id` set the consumer is a static member of the group.
    pub fn consumer(&self, client_id: &str, group: &str, read_committed: bool) -> ClientConfig {
        let mut c = self.reader(client_id);
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        if let Some(id) = self
            .group_instance_id
            .as_deref()
            .filter(|id| !id.is_empty())
        {
            c.set("group.instance.id", id);
        }
        c
    }
}

/// Whether a read or metadata error is one a later attempt gets past: leadership moving, a
/// broker of the cluster restarting or briefly unreachable. librdkafka reconnects and fails
/// over by itself, so a reader that meets one keeps polling until its own deadline instead of
/// giving up (and with it, the whole instance) at the first one.
pub fn is_transient(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// A partition's offsets as a `read_committed` reader sees them (low, last stable offset), or
/// `None` while a transaction is open on it: the last stable offset is then below the end of
/// the log (`probe` reads uncommitted). A restore must not stop at that offset: the open
/// transaction is a previous owner's last one, in flight while the partition moved, and when
/// it commits, the input offsets it carries take effect for the new owner too, so the state
/// it wrote must be read as well (Kafka's KIP-447: offsets and state become stable together).
pub fn stable_end<C, P>(
    committed: &rdkafka::consumer::BaseConsumer<C>,
    probe: &rdkafka::consumer::BaseConsumer<P>,
    topic: &str,
    partition: i32,
    timeout: std::time::Duration,
) -> Result<Option<(i64, i64)>, KafkaError>
where
    C: rdkafka::consumer::ConsumerContext,
    P: rdkafka::consumer::ConsumerContext,
{
    use rdkafka::consumer::Consumer;
    // librdkafka answers a watermark query with the client's isolation level.
    let (_, log_end) = probe.fetch_watermarks(topic, partition, timeout)?;
    let (low, stable) = committed.fetch_watermarks(topic, partition, timeout)?;
    Ok((stable >= log_end).then_some((low, stable)))
}

/// Waits until every record the producer sent is delivered, looking every millisecond (or
/// until `within` has passed), before a transaction's commit. rust-rdkafka's
/// `commit_transaction` flushes first, but its flush looks again only every 100 ms (the poll
/// in between runs to the end of its timeout), so every commit took at least 100 ms, and
/// 500 ms or a second when its first looks came before the records written just before the
/// commit were delivered: with one engine thread, about a fifth of the processor's run
/// (processor-bench). After this wait that flush finds nothing left and returns at once.
pub fn wait_delivered<P, C>(producer: &P, within: std::time::Duration)
where
    P: rdkafka::producer::Producer<C>,
    C: rdkafka::producer::ProducerContext,
{
    let deadline = std::time::Instant::now() + within;
    // A flush with no time to wait sends what lingers at once and says whether anything is
    // undelivered; after it, reading the count wakes no broker thread.
    if producer.flush(std::time::Duration::ZERO).is_ok() {
        return;
    }
    while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Client context of a reader that reads topics to their end (`enable.partition.eof`): reaching
/// a partition's end is how it knows it is done, and librdkafka reports that through the error
/// callback too, as `PartitionEOF` or as a global error with that code. Only other errors are
/// logged, naming the reader (`ToTheEnd("erasures")`).
#[derive(Debug, Clone, Copy)]
pub struct ToTheEnd(pub &'static str);

impl rdkafka::client::ClientContext for ToTheEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            tracing::error!(%error, reason, reader = self.0, "Topic reader error.");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ToTheEnd {}

/// Whether `e` says a partition's end was reached (in either of librdkafka's two forms).
pub fn is_partition_eof(e: &KafkaError) -> bool {
    matches!(e, KafkaError::PartitionEOF(_))
        || e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

#[cfg(test)]
mod to_the_end_tests {
    use rdkafka::client::ClientContext;
    use tracing::Level;

    use super::*;

    #[test]
    fn the_end_of_a_partition_is_no_error_in_either_form() {
        let levels = crate::testing::event_levels(|| {
            let ctx = ToTheEnd("test");
            ctx.error(KafkaError::PartitionEOF(3), "end");
            ctx.error(KafkaError::Global(RDKafkaErrorCode::PartitionEOF), "end");
            ctx.error(
                KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed),
                "denied",
            );
        });
        assert_eq!(
            levels,
            [Level::ERROR],
            "only the authorization failure is an error"
        );
    }
}

#[cfg(test)]
mod transient_tests {
    use super::*;

    #[test]
    fn a_broker_away_is_transient_a_fenced_consumer_is_not() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(
                is_transient(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
            assert!(is_transient(&KafkaError::Global(code)), "{code:?}");
        }
        assert!(!is_transient(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::FencedInstanceId
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }
}

#[cfg(test)]
mod consumer_config_tests {
    use super::*;

    #[test]
    fn a_consumer_fetches_again_soon_after_its_queue_drains_unless_told_otherwise() {
        let k = KafkaConfig::new("127.0.0.1:9092");
        let c = k.consumer("c", "g", true);
        assert_eq!(
            c.get("fetch.queue.backoff.ms"),
            Some(FETCH_QUEUE_BACKOFF_MS)
        );

        let mut k = KafkaConfig::new("127.0.0.1:9092");
        k.properties
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        let c = k.consumer("c", "g", true);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("250"));
    }
}
