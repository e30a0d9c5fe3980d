//! The processor's configuration: Kafka, topics, the engine's timings, and which rules to run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::{ConfigError, KafkaConfig, TopicsConfig};
use serde::Deserialize;

/// Everything the processor reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Consumer group id and prefix of the transactional id. Two deployments with different
    /// ids (e.g. a replay into fresh state) never share offsets or fence each other.
    pub application_id: String,
    /// This instance's stable name; `transactional.id = {application_id}-{instance_id}`. It must
    /// survive restarts (so a restarted instance fences and aborts its predecessor's open
    /// transaction at once) and differ between live instances. Empty = the host name.
    pub instance_id: String,
    /// Kafka connection.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Topic names and partition counts (must match `tillstream topics apply`).
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The HTTP server: `/customers/{key}`, `/healthz`, `/readyz`, `/metrics`.
    pub http: HttpConfig,
    /// Transaction, dedup and timer settings.
    pub engine: EngineConfig,
    /// Which rules to run.
    pub rules: RulesSelection,
    /// The erasure registry's hash key (see [`crate::erasure`]).
    #[serde(default)]
    pub erasure: crate::erasure::ErasureConfig,
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address, e.g. `0.0.0.0:8081`.
    pub listen: String,
    /// The URL other instances and the CLI can reach this one at; sent in the consumer's
    /// client id so any instance can say where a key's owner lives. Empty = `http://{listen}`.
    pub advertised_url: String,
}

/// Engine timings and bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Commit the open transaction at least this often (latency of commands vs. throughput);
    /// it also commits as soon as a poll finds nothing more to read.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// ... or once this many input records are in it. A transaction commits on a helper
    /// thread while the next one fills; at most this many inputs wait for that commit (their
    /// records held in memory), so it also bounds that memory.
    pub commit_max_records: usize,
    /// How long, in event time, a delivery id or content fingerprint is remembered.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// At most this many fingerprints per key (oldest dropped first): bounds memory.
    pub dedup_max_per_key: usize,
    /// Kafka `transaction.timeout.ms`: how long a crashed instance's open transaction can
    /// block readers of its partitions before the broker aborts it.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// A commit still running after this long counts as stuck in the Kafka client
    /// (librdkafka's `send_offsets_to_transaction` can wait forever on a group coordinator that
    /// moved): the engine replaces its producer, which settles the transaction, and rebuilds
    /// its partitions from the changelog. Longer than a coordinator's failover (about 10 s).
    #[serde(with = "humantime_serde", default = "thirty_seconds")]
    pub commit_deadline: Duration,
    /// A partition counts as caught up (wall-clock timers fire) when its lag, summed over the
    /// raw and repartition topics, is at most this. The default 2 absorbs the transaction
    /// commit marker that can sit after the last readable record of each topic.
    pub caught_up_lag: i64,
    /// Longest wait for new records before checking timers and queries again.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Consumer group session timeout: how soon a dead (non-static) instance's partitions move,
    /// and how long the instance keeps its partitions while its group coordinator is
    /// unreachable. Longer than a broker failover (30 s by default), or each broker loss costs
    /// every partition's restore.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// When timers fire: the late-data rule (ARCHITECTURE.md, "Event time and timers").
    #[serde(default)]
    pub timers: TimerSettings,
    /// Engine threads in this instance, each owning a disjoint set of partitions with its own
    /// consumer and transactional producer (processor/src/engine_threads.rs); 0 (the
    /// default) = the available cores minus one (left to librdkafka's threads), at least 1.
    /// Never more than `topics.partitions`: a thread beyond that could not own a partition.
    #[serde(default)]
    pub threads: usize,
    /// Join the consumer group as a static member whose `group.instance.id` is `instance_id`
    /// (unless `kafka.group_instance_id` is set): a restarted instance gets its partitions back
    /// at once instead of after `session_timeout`. Needs an `instance_id` that survives restarts
    /// (a pod or container name); an instance stopped for good holds its partitions until its
    /// session expires. Off by default; on in docker-compose.yml and scripts/run-local.
    #[serde(default)]
    pub static_membership: bool,
    /// Write the decision trail (what each input and timer did, `tillstream explain`) to the
    /// decisions topic, in the same transactions. Off by default: it costs one record per
    /// input (docs/benchmarks.md); the demo turns it on.
    #[serde(default)]
    pub trail: bool,
}

/// `engine.commit_deadline` where a configuration predating it leaves it out.
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// What decides that a timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimerClock {
    /// A timer fires once every input that could cancel it is known to be in: every raw
    /// partition has been read past ingest's heartbeat at its due time (plus `delivery_grace`),
    /// their forwards have been read, and no outage or late burst can still deliver an earlier
    /// event (processor/src/watermark.rs). Needs ingest's heartbeats.
    #[default]
    Inputs,
    /// A timer fires when the partition's stream time (highest event time read on its raw
    /// input; forwards do not move it), or the wall clock once the partition has caught up
    /// (`caught_up_lag`), passes its due time. For compressed simulations that feed the raw
    /// topic without ingest; not safe with late data, nor with forwards held up behind it.
    StreamTime,
}

/// The late-data rule's settings (processor/src/watermark.rs explains each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimerSettings {
    /// `inputs` (default) or `stream_time`.
    pub clock: TimerClock,
    /// How far behind ingest's heartbeat a normal delivery may still be.
    #[serde(with = "humantime_serde")]
    pub delivery_grace: Duration,
    /// A delivery received more than this after its event time is a late arrival.
    #[serde(with = "humantime_serde")]
    pub late_after: Duration,
    /// Timers held by late arrivals wait until none has been seen for this long.
    #[serde(with = "humantime_serde")]
    pub late_settle: Duration,
    /// After an ingest outage, timers wait this long past their due time: Shopify retries a
    /// failed delivery 8 times over 4 hours.
    #[serde(with = "humantime_serde")]
    pub retry_horizon: Duration,
    /// Ingest heartbeats further apart than this mean ingest was not accepting in between
    /// (ingest writes one every `heartbeat.interval`, 5 s by default).
    #[serde(with = "humantime_serde")]
    pub heartbeat_gap: Duration,
    /// A partition announces its progress to the others at most this often.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
}

impl Default for TimerSettings {
    fn default() -> Self {
        Self {
            clock: TimerClock::Inputs,
            delivery_grace: Duration::from_secs(30),
            late_after: Duration::from_secs(60),
            late_settle: Duration::from_secs(300),
            retry_horizon: Duration::from_secs(4 * 3600),
            heartbeat_gap: Duration::from_secs(30),
            announce_interval: Duration::from_secs(1),
        }
    }
}

impl TimerSettings {
    /// The rule's settings in milliseconds.
    pub fn watermark(&self) -> crate::watermark::WatermarkConfig {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        crate::watermark::WatermarkConfig {
            grace_ms: ms(self.delivery_grace),
            late_after_ms: ms(self.late_after),
            late_settle_ms: ms(self.late_settle),
            retry_horizon_ms: ms(self.retry_horizon),
            heartbeat_gap_ms: ms(self.heartbeat_gap),
        }
    }
}

/// The rule set: the marketing rules (default) or the engine's diagnostic order counter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSelection {
    /// `marketing` (tillstream's rules) or `order-counter` (counts orders per key and arms a
    /// timer; used to prove and benchmark the engine on its own).
    pub kind: RulesKind,
    /// The rules TOML (see rules/tillstream-rules.example.toml); defaults apply when absent.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// For `order-counter`: the timer delay after each order.
    #[serde(default = "default_counter_delay", with = "humantime_serde")]
    pub counter_timer_delay: Duration,
}

fn default_counter_delay() -> Duration {
    Duration::from_secs(3600)
}

/// Which rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RulesKind {
    /// tillstream's marketing rules.
    Marketing,
    /// The diagnostic order counter.
    OrderCounter,
}

impl ProcessorConfig {
    /// Loads defaults, then `file`, then `TILLSTREAM__*` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut c: Self = runtime::load_config(include_str!("defaults.toml"), file)?;
        if c.instance_id.is_empty() {
            c.instance_id = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                })
                .unwrap_or_else(|| "processor".into());
        }
        if c.engine.static_membership
            && c.kafka
                .group_instance_id
                .as_deref()
                .is_none_or(str::is_empty)
        {
            c.kafka.group_instance_id = Some(c.instance_id.clone());
        }
        if c.http.advertised_url.is_empty() {
            // A wildcard listen address is not reachable by peers: advertise the host name.
            let port = c.http.listen.rsplit(':').next().unwrap_or("8081");
            let host = if c.http.listen.starts_with("0.0.0.0") || c.http.listen.starts_with("[::]")
            {
                c.instance_id.clone()
            } else {
                c.http
                    .listen
                    .rsplit_once(':')
                    .map(|(h, _)| h.to_owned())
                    .unwrap_or_default()
            };
            c.http.advertised_url = format!("http://{host}:{port}");
        }
        if c.engine.commit_max_records == 0 {
            return Err(ConfigError::Rejected(
                "engine.commit_max_records must be at least 1".into(),
            ));
        }
        Ok(c)
    }

    /// The transactional id of this instance.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.application_id, self.instance_id)
    }
}
