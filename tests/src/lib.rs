//! Helpers shared by the end-to-end tests: starting services, polling with deadlines.
//!
//! The stack under test is the three real binaries (`ingest`, `processor`, `publisher`) as
//! child processes, the real Kafka broker, iterable-sim in-process and shopify-sim driving
//! ingest over HTTP. [`Stack`] owns all of it; [`check_outcome`] compares what iterable-sim
//! holds with a scenario's `expected.json` (`outcome.rs`); `service.rs` runs the binaries.

pub mod cluster;
mod outcome;
pub mod prober;
pub mod probes;
mod scenarios;
mod service;
mod waiting;

pub use outcome::{OutcomeReport, check_outcome, checkout_event_id};
pub use scenarios::{
    ci_scenario, drain_past_timeline_end, finish_and_compare, lapses_due_after_end, scenario,
    scenario_ending_now, send_all,
};
pub use service::{Service, Shared, bin_path, free_port, lock};
pub use waiting::{delivery, get_ok, lane_pending, prom_samples, wait_until};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iterable_sim::{SimConfig, SimHandle, SimState};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{EventSource, ShopifyEnvelope};

/// The app secret ingest verifies and shopify-sim signs with.
pub const SECRET: &str = "tillstream-e2e-secret";

/// The grace the rules add to every timer (`timing.out_of_order_grace`, default 5 min).
pub const TIMER_GRACE_MS: i64 = 5 * 60 * 1000;

/// A rules file for historical scenarios: every freshness horizon off, so the journey events
/// of a timeline months in the past are sent (everything else is the default rules).
pub const HISTORICAL_RULES: &str = r#"
[freshness]
customer_created = "off"
first_purchase = "off"
purchase = "off"
vip_tier_upgraded = "off"
customer_lapsed = "off"
customer_reactivated = "off"
checkout_abandoned = "off"
cart_updated = "off"
order_fulfilled = "off"
order_refunded = "off"
order_cancelled = "off"
"#;

/// Topic of the tests' clock ticks ([`Stack::produce_clock_ticks`]). An internal
/// (`tillstream/`) topic no rule reads and ingest never produces: the ticks only move stream
/// time, and no product, catalog item or dead letter can come of them.
pub const CLOCK_TICK_TOPIC: &str = "tillstream/e2e-clock-tick";

/// The default rules (default freshness horizons): what a replay of old history runs with.
pub const DEFAULT_RULES: &str = "";

/// Settings of a stack under test.
#[derive(Clone)]
pub struct StackOptions {
    /// The broker.
    pub kafka: KafkaConfig,
    /// Partitions of the co-partitioned topics.
    pub partitions: i32,
    /// The processor's rules TOML.
    pub rules_toml: String,
    /// Event-time mode: timers fire by the partition's stream time (`engine.timers.clock =
    /// "stream_time"`) and the processor never counts a partition as caught up
    /// (`engine.caught_up_lag = -1`), so they fire by the log's event time only, never by
    /// the wall clock. Needed when a historical timeline is sent compressed into seconds.
    pub event_time_only: bool,
    /// iterable-sim's configuration.
    pub sim: SimConfig,
    /// Extra environment per service.
    pub ingest_env: Vec<(String, String)>,
    /// A fixed port for ingest (default: a free one): for a simulator configured before the
    /// stack starts to send to it (iterable-sim's system webhooks).
    pub ingest_port: Option<u16>,
    /// Extra environment for the processor.
    pub processor_env: Vec<(String, String)>,
    /// The processor's transaction timeout at 10 s and group session at 6 s, so a killed
    /// (non-static) instance's partitions move within seconds on the single test broker.
    /// `false`: the processor's defaults (30 s, 60 s), which outlast a broker failover; the
    /// cluster suite and the soak run those, as production does.
    pub short_group_timeouts: bool,
    /// Extra environment for the publisher.
    pub publisher_env: Vec<(String, String)>,
    /// Log level (`RUST_LOG`) for the services.
    pub log_level: String,
}

impl StackOptions {
    /// Defaults for a historical scenario on the shared test broker: 4 partitions, horizons
    /// off, event-time mode, iterable-sim counting upserts as updates only.
    pub fn historical(kafka: KafkaConfig) -> Self {
        let mut sim = SimConfig::default();
        sim.behaviour.count_updates_as_occurrences = false;
        StackOptions {
            kafka,
            partitions: 4,
            rules_toml: HISTORICAL_RULES.to_owned(),
            event_time_only: true,
            sim,
            ingest_env: Vec::new(),
            ingest_port: None,
            processor_env: Vec::new(),
            short_group_timeouts: true,
            publisher_env: Vec::new(),
            log_level: "info".to_owned(),
        }
    }

    /// The production timer rule (`engine.timers.clock = "inputs"`: a timer fires only once
    /// every partition's inputs up to its due time are in, forwarded ones included) scaled
    /// down for a test: ingest heartbeats every 500 ms move time, the late-arrival hold is 5 s.
    /// `TILLSTREAM_TEST_TIMER_CLOCK=stream_time` runs the raw input's stream time instead (to
    /// see what the production rule guards against). `extra` adds `engine.timers` settings.
    #[must_use]
    pub fn live_timers(self, extra: &[(&str, &str)]) -> Self {
        let clock =
            std::env::var("TILLSTREAM_TEST_TIMER_CLOCK").unwrap_or_else(|_| "inputs".to_owned());
        self.timer_clock(&clock, extra)
    }

    /// [`StackOptions::live_timers`] with the clock named (`inputs` or `stream_time`).
    #[must_use]
    pub fn timer_clock(mut self, clock: &str, extra: &[(&str, &str)]) -> Self {
        self.event_time_only = false;
        self.ingest_env
            .push(("TILLSTREAM__HEARTBEAT__INTERVAL".into(), "500ms".into()));
        let base = [
            ("CLOCK", clock),
            ("DELIVERY_GRACE", "1s"),
            ("LATE_SETTLE", "5s"),
            ("ANNOUNCE_INTERVAL", "200ms"),
        ];
        self.processor_env.extend(
            base.iter()
                .chain(extra)
                .map(|(k, v)| (format!("TILLSTREAM__ENGINE__TIMERS__{k}"), (*v).to_owned())),
        );
        self
    }
}

/// The whole stack: topics, iterable-sim, ingest, processor, publisher, and a supervisor that
/// restarts a service which exits on its own (as an orchestrator would).
pub struct Stack {
    /// The broker.
    pub kafka: KafkaConfig,
    /// The unique topic catalogue of this stack.
    pub topics: TopicsConfig,
    /// Logs, rules file.
    pub dir: PathBuf,
    /// iterable-sim, in-process.
    pub sim: SimHandle,
    /// ingest.
    pub ingest: Shared,
    /// processor.
    pub processor: Shared,
    /// publisher.
    pub publisher: Shared,
    /// The processor's application id (consumer group, transactional id prefix).
    pub application_id: String,
    /// The publisher's consumer group.
    pub publisher_group: String,
    options: StackOptions,
    stop: Arc<AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

impl Stack {
    /// Creates fresh topics, starts iterable-sim and the three services, and waits until all
    /// are ready.
    ///
    /// # Errors
    /// When a service does not become ready within 60 s.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let topics = runtime::testing::fresh_topics(&options.kafka, options.partitions).await;
        let dir = std::env::temp_dir()
            .join("tillstream-e2e")
            .join(runtime::testing::unique("stack"));
        std::fs::create_dir_all(&dir)?;
        let sim = iterable_sim::spawn(options.sim.clone()).await?;
        let application_id = runtime::testing::unique("e2e-processor");
        let publisher_group = runtime::testing::unique("e2e-publisher");
        let (ingest, processor, publisher) = Self::services(
            &options,
            &topics,
            &dir,
            &sim,
            &application_id,
            &publisher_group,
            "p0",
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let wrap = |s| Arc::new(Mutex::new(s));
        let mut stack = Stack {
            kafka: options.kafka.clone(),
            topics,
            dir,
            sim,
            ingest: wrap(ingest),
            processor: wrap(processor),
            publisher: wrap(publisher),
            application_id,
            publisher_group,
            options,
            stop,
            supervisor: None,
        };
        for s in [&stack.ingest, &stack.processor, &stack.publisher] {
            lock(s).start();
        }
        stack.supervise();
        stack.wait_ready(Duration::from_secs(60)).await?;
        Ok(stack)
    }

    #[allow(clippy::too_many_arguments)]
    fn services(
        o: &StackOptions,
        topics: &TopicsConfig,
        dir: &Path,
        sim: &SimHandle,
        application_id: &str,
        publisher_group: &str,
        instance: &str,
    ) -> anyhow::Result<(Service, Service, Service)> {
        let rules = dir.join(format!("rules-{application_id}.toml"));
        std::fs::write(&rules, &o.rules_toml)?;
        let mut common = runtime::testing::service_env(&o.kafka, topics);
        common.push(("RUST_LOG".into(), o.log_level.clone()));
        let port = |env: &mut Vec<(String, String)>| {
            let p = free_port();
            env.push(("TILLSTREAM__HTTP__LISTEN".into(), format!("127.0.0.1:{p}")));
            p
        };

        let mut env = common.clone();
        env.push((
            "TILLSTREAM__SHOPIFY__SECRETS".into(),
            format!("[\"{SECRET}\"]"),
        ));
        env.push(("TILLSTREAM__HTTP__READY_CHECK_INTERVAL".into(), "1s".into()));
        env.extend(o.ingest_env.iter().cloned());
        let p = match o.ingest_port {
            Some(p) => {
                env.push(("TILLSTREAM__HTTP__LISTEN".into(), format!("127.0.0.1:{p}")));
                p
            }
            None => port(&mut env),
        };
        let ingest = Service::new("ingest", bin_path("ingest"), env, p, dir);

        let mut env = common.clone();
        env.push((
            "TILLSTREAM__APPLICATION_ID".into(),
            application_id.to_owned(),
        ));
        env.push(("TILLSTREAM__INSTANCE_ID".into(), instance.to_owned()));
        env.push((
            "TILLSTREAM__RULES__FILE".into(),
            rules.display().to_string(),
        ));
        if o.short_group_timeouts {
            env.push((
                "TILLSTREAM__ENGINE__TRANSACTION_TIMEOUT".into(),
                "10s".into(),
            ));
            env.push(("TILLSTREAM__ENGINE__SESSION_TIMEOUT".into(), "6s".into()));
        }
        if o.event_time_only {
            env.push(("TILLSTREAM__ENGINE__CAUGHT_UP_LAG".into(), "-1".into()));
            env.push((
                "TILLSTREAM__ENGINE__TIMERS__CLOCK".into(),
                "stream_time".into(),
            ));
        }
        env.extend(o.processor_env.iter().cloned());
        // `TILLSTREAM_TEST_ENGINE_THREADS=2` runs every stack's processor with that many
        // engine threads. Not `TILLSTREAM__ENGINE__THREADS` in the test's environment: every
        // service inherits it, and ingest and the publisher refuse an `engine` section.
        if let Ok(n) = std::env::var("TILLSTREAM_TEST_ENGINE_THREADS") {
            env.push(("TILLSTREAM__ENGINE__THREADS".into(), n));
        }
        let p = port(&mut env);
        let processor = Service::new(
            &format!("processor-{application_id}"),
            bin_path("processor"),
            env,
            p,
            dir,
        );

        let mut env = common;
        env.push(("TILLSTREAM__GROUP_ID".into(), publisher_group.to_owned()));
        env.push(("TILLSTREAM__ITERABLE__BASE_URL".into(), sim.base_url()));
        env.push((
            "TILLSTREAM__ITERABLE__API_KEY".into(),
            iterable_sim::DEFAULT_API_KEY.into(),
        ));
        env.push(("TILLSTREAM__PIPELINE__STATS_INTERVAL".into(), "1s".into()));
        env.extend(o.publisher_env.iter().cloned());
        let p = port(&mut env);
        let publisher = Service::new("publisher", bin_path("publisher"), env, p, dir);
        Ok((ingest, processor, publisher))
    }

    /// Another processor instance (`instance`: its own transactional id, HTTP port and log) and
    /// another publisher, in the same groups as the stack's: not started and not supervised,
    /// for scale-out and rolling restarts.
    ///
    /// # Errors
    /// When the rules file cannot be written.
    pub fn extra_instances(&self, instance: &str) -> anyhow::Result<(Service, Service)> {
        let (_, mut processor, mut publisher) = Self::services(
            &self.options,
            &self.topics,
            &self.dir,
            &self.sim,
            &self.application_id,
            &self.publisher_group,
            instance,
        )?;
        for (s, kind) in [(&mut processor, "processor"), (&mut publisher, "publisher")] {
            s.name = format!("{kind}-{instance}");
            s.log = self.dir.join(format!("{}.log", s.name));
            s.supervised = false;
        }
        Ok((processor, publisher))
    }

    fn supervise(&mut self) {
        let services = vec![
            self.ingest.clone(),
            self.processor.clone(),
            self.publisher.clone(),
        ];
        let stop = self.stop.clone();
        self.supervisor = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &services {
                    let mut s = lock(s);
                    if s.supervised && s.restart_if_exited() {
                        eprintln!(
                            "supervisor: {} exited on its own ({:?}); restarted",
                            s.name,
                            s.unexpected_exits.last()
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }

    /// Replaces the processor with a new deployment (new application id, instance `p0`) that
    /// reads the same raw topic from the beginning into fresh state (its own changelog and
    /// repartition topics) and writes to the same commands topic, with `rules_toml`; the
    /// erasure registry and the products topic are kept, as `tillstream replay` keeps them.
    ///
    /// # Errors
    /// When topics or files cannot be created or it does not become ready.
    pub async fn replace_processor_with_fresh_replay(
        &mut self,
        rules_toml: &str,
    ) -> anyhow::Result<()> {
        self.fresh_replay(rules_toml, true).await
    }

    /// [`Stack::replace_processor_with_fresh_replay`] with the erasure registry lost (a fresh,
    /// empty erasures topic): what keeps an erased person erased is then the deletion of their
    /// data keys alone (crypto-shredding).
    ///
    /// # Errors
    /// As [`Stack::replace_processor_with_fresh_replay`].
    pub async fn replace_processor_with_fresh_replay_losing_registry(
        &mut self,
        rules_toml: &str,
    ) -> anyhow::Result<()> {
        self.fresh_replay(rules_toml, false).await
    }

    async fn fresh_replay(&mut self, rules_toml: &str, keep_registry: bool) -> anyhow::Result<()> {
        lock(&self.processor).terminate();
        let fresh = runtime::testing::fresh_topics(&self.kafka, self.topics.partitions).await;
        let mut topics = fresh;
        topics.raw = self.topics.raw.clone();
        topics.commands = self.topics.commands.clone();
        // Like `tillstream replay`, which never recreates the erasure registry, nor the
        // products topic (the product history the enrichment join reads as of event time).
        if keep_registry {
            topics.erasures = self.topics.erasures.clone();
        }
        topics.products = self.topics.products.clone();
        topics.keys = self.topics.keys.clone();
        let mut opts = self.options.clone();
        opts.rules_toml = rules_toml.to_owned();
        let app = runtime::testing::unique("e2e-replay");
        let (_, processor, _) = Self::services(
            &opts,
            &topics,
            &self.dir,
            &self.sim,
            &app,
            &self.publisher_group,
            "p0",
        )?;
        let processor = Arc::new(Mutex::new(processor));
        lock(&processor).start();
        // The supervisor holds the old handle; the old one stays stopped (not supervised).
        lock(&self.processor).supervised = false;
        self.processor = processor;
        self.application_id = app;
        self.topics.changelog = topics.changelog;
        self.topics.repartition = topics.repartition;
        self.topics.processor_dlq = topics.processor_dlq;
        self.topics.data_requests = topics.data_requests;
        self.topics.erasures = topics.erasures;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
        self.stop = Arc::new(AtomicBool::new(false));
        self.supervise();
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Waits until every service answers `/readyz` with 200.
    ///
    /// # Errors
    /// On timeout, naming the services that are not ready and their logs.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        for s in [&self.ingest, &self.processor, &self.publisher] {
            let (name, url, log) = {
                let s = lock(s);
                (s.name.clone(), s.url(), s.log.clone())
            };
            wait_until(
                &format!("{name} ready (log {})", log.display()),
                timeout,
                || {
                    let url = format!("{url}/readyz");
                    async move { get_ok(&url).await.map(|_| ()) }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// ingest's webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/shopify", lock(&self.ingest).url())
    }

    /// The sim's state.
    pub fn sim_state(&self) -> &SimState {
        self.sim.state()
    }

    /// Produces one "clock tick" record per raw partition at event time `at_ms`: a
    /// [`CLOCK_TICK_TOPIC`] record on a shop-level key, which advances each partition's stream
    /// time so the timers due before it fire (event-time mode has no wall clock).
    ///
    /// # Errors
    /// When the broker does not acknowledge.
    pub async fn produce_clock_ticks(&self, at_ms: i64, shop: &str) -> anyhow::Result<()> {
        let p: FutureProducer = self.kafka.producer("e2e-clock").create()?;
        for part in 0..self.topics.partitions {
            let key = format!("{shop}/s/e2e-clock-{part}");
            let env = ShopifyEnvelope {
                delivery_id: runtime::testing::unique("clock"),
                event_id: None,
                topic: CLOCK_TICK_TOPIC.into(),
                shop_domain: shop.into(),
                api_version: Some("2026-07".into()),
                triggered_at_ms: Some(at_ms),
                received_at_ms: at_ms,
                routing_key: key.clone(),
                source: EventSource::Webhook,
                webhook_name: None,
                body: b"{}".to_vec(),
            };
            let bytes = env.encode()?;
            p.send(
                FutureRecord::to(&self.topics.raw)
                    .key(&key)
                    .partition(part)
                    .payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    /// High watermarks of every partition of `topic`.
    ///
    /// # Errors
    /// On a broker error.
    pub fn watermarks(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let c: BaseConsumer = self.kafka.client("e2e-watermarks").create()?;
        (0..partitions)
            .map(|p| Ok(c.fetch_watermarks(topic, p, Duration::from_secs(10))?.1))
            .collect()
    }

    /// Committed offsets of `group` on every partition of `topic` (-1 when none).
    ///
    /// # Errors
    /// On a broker error.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let mut cfg = self.kafka.client("e2e-committed");
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        let c: BaseConsumer = cfg.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok((0..partitions)
            .map(|p| {
                got.find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1)
            })
            .collect())
    }

    /// Total records in `topic` (sum of high watermarks; transaction markers included).
    pub fn total(&self, topic: &str, partitions: i32) -> i64 {
        self.watermarks(topic, partitions)
            .map(|w| w.iter().sum())
            .unwrap_or(0)
    }

    /// Whether the pipeline is drained: the processor committed the whole raw topic and the
    /// repartition topic, and the publisher committed the whole commands topic (a transaction
    /// marker may sit after the last record of the transactional topics).
    pub fn drained(&self) -> bool {
        let n = self.topics.partitions;
        let check = |group: &str, topic: &str, slack: i64| -> bool {
            match (self.watermarks(topic, n), self.committed(group, topic, n)) {
                (Ok(hw), Ok(c)) => hw.iter().zip(&c).all(|(h, c)| *h == 0 || *c >= h - slack),
                _ => false,
            }
        };
        check(&self.application_id, &self.topics.raw, 0)
            && check(&self.application_id, &self.topics.repartition, 1)
            && check(&self.publisher_group, &self.topics.commands, 1)
    }

    /// Waits until the processor holds no due timer back (`tillstream_processor_timers_deferred`
    /// is 0 once it has read input): with the `inputs` clock, the late-data rule has let go.
    ///
    /// # Errors
    /// When that is not so within `timeout`.
    pub async fn wait_no_timer_held(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/metrics", lock(&self.processor).url());
        wait_until("no timer held by the late-data rule", timeout, || {
            let url = url.clone();
            async move {
                let text = get_ok(&url).await?;
                let gauge = |name| prom_samples(&text, name).first().map(|(_, v)| *v);
                let deferred = gauge("tillstream_processor_timers_deferred")?;
                let read = gauge("tillstream_processor_events_total")?;
                (deferred == 0.0 && read > 0.0).then_some(())
            }
        })
        .await
    }

    /// Waits until [`Stack::drained`] holds twice in a row with an unchanged commands topic and
    /// unchanged iterable-sim request count, at least 2 s apart.
    ///
    /// # Errors
    /// On timeout (with each service's log path).
    pub async fn wait_drained(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last: Option<(i64, u64, Instant)> = None;
        loop {
            if self.drained() {
                let snap = (
                    self.total(&self.topics.commands, self.topics.partitions),
                    self.sim_state().stats().totals.requests,
                );
                match last {
                    Some((c, r, at))
                        if (c, r) == snap && at.elapsed() >= Duration::from_secs(2) =>
                    {
                        return Ok(());
                    }
                    Some((c, r, _)) if (c, r) == snap => {}
                    _ => last = Some((snap.0, snap.1, Instant::now())),
                }
            } else {
                last = None;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "pipeline not drained after {timeout:?}: raw committed {:?} of {:?}, commands committed {:?} of {:?}; logs in {}",
                    self.committed(
                        &self.application_id,
                        &self.topics.raw,
                        self.topics.partitions
                    )
                    .ok(),
                    self.watermarks(&self.topics.raw, self.topics.partitions)
                        .ok(),
                    self.committed(
                        &self.publisher_group,
                        &self.topics.commands,
                        self.topics.partitions
                    )
                    .ok(),
                    self.watermarks(&self.topics.commands, self.topics.partitions)
                        .ok(),
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Records in a side topic (dead letters), all partitions.
    pub fn side_topic_records(&self, topic: &str) -> i64 {
        self.total(topic, self.topics.side_partitions)
    }

    /// Unexpected exits of each service so far.
    pub fn unexpected_exits(&self) -> BTreeMap<String, Vec<String>> {
        [&self.ingest, &self.processor, &self.publisher]
            .iter()
            .map(|s| {
                let s = lock(s);
                (s.name.clone(), s.unexpected_exits.clone())
            })
            .collect()
    }

    /// Stops the services with SIGTERM and the simulator.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
        for s in [&self.ingest, &self.processor, &self.publisher] {
            lock(s).terminate();
        }
    }
}

impl Drop for Stack {
    /// Stops the supervisor (it would restart what is killed), then kills the services: a
    /// test that fails ends its process right after unwinding, before the supervisor's thread
    /// would have let go of them, and they would outlive it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
        for s in [&self.ingest, &self.processor, &self.publisher] {
            lock(s).kill9();
        }
    }
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}
