//! The e2e scenario under faults: kill -9 of each service at random points, an Iterable outage, a 429 storm and a broker restart, with the same final outcome in iterable-sim.
//!
//! `TILLSTREAM_SOAK_ROUNDS=20 cargo test -p tests --test faults` runs more kill rounds (default 5);
//! `TILLSTREAM_FAULT_SEED=N` replays a run's random kill points (each run prints its seed).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iterable_sim::FaultSpec;
use rand::{Rng, SeedableRng};
use runtime::KafkaConfig;
use tests::{
    Shared, Stack, StackOptions, check_outcome, ci_scenario, drain_past_timeline_end,
    finish_and_compare, free_port, lock, scenario, send_all, wait_until,
};

/// What shows that a service is doing work (a kill point is "after k more units of it").
#[derive(Clone, Copy, Debug)]
enum Progress {
    /// Records ingest wrote to the raw topic.
    Raw,
    /// Records the processor wrote to the commands topic.
    Commands,
    /// Requests the publisher made to iterable-sim.
    Requests,
}

fn progress(stack: &Stack, p: Progress) -> i64 {
    match p {
        Progress::Raw => stack.total(&stack.topics.raw, stack.topics.partitions),
        Progress::Commands => stack.total(&stack.topics.commands, stack.topics.partitions),
        Progress::Requests => {
            i64::try_from(stack.sim_state().stats().totals.requests).unwrap_or(i64::MAX)
        }
    }
}

/// Waits for `k` more units of progress (or for the work to be over), then kill -9 and restart.
async fn kill_at_random_point(
    stack: &Stack,
    service: &Shared,
    p: Progress,
    k: i64,
    idle: &AtomicBool,
) {
    let from = progress(stack, p);
    let name = lock(service).name.clone();
    wait_until(
        &format!("{k} more {p:?} before killing {name}"),
        Duration::from_secs(120),
        || {
            let done =
                progress(stack, p) >= from + k || (idle.load(Ordering::Relaxed) && stack.drained());
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap();
    let (old, new) = {
        let mut s = lock(service);
        let old = s.pid();
        s.kill9();
        s.start();
        (old, s.pid())
    };
    eprintln!(
        "kill -9 {name} (pid {old:?}) after {} more {p:?}; restarted as pid {new:?}",
        progress(stack, p) - from
    );
    stack.wait_ready(Duration::from_secs(60)).await.unwrap();
}

fn fault_seed() -> u64 {
    std::env::var("TILLSTREAM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn options(kafka: KafkaConfig) -> StackOptions {
    let mut o = StackOptions::historical(kafka);
    // Recover within seconds after an outage or a storm (the default cap is 30 s).
    o.publisher_env
        .push(("TILLSTREAM__RETRY__MAX_BACKOFF".into(), "3s".into()));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_rounds_iterable_outage_and_429_storm_reach_the_expected_outcome() {
    let started = Instant::now();
    let rounds: usize = std::env::var("TILLSTREAM_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(5);
    let seed = fault_seed();
    eprintln!("fault rounds {rounds}, TILLSTREAM_FAULT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cfg = ci_scenario();
    let sc = scenario(&cfg).unwrap();
    let n = sc.deliveries.len() as f64;
    let stack = Arc::new(
        Stack::start(options(runtime::testing::kafka()))
            .await
            .unwrap(),
    );
    eprintln!("logs in {}", stack.dir.display());

    // Pace the sender so that the kill rounds fall while deliveries flow: ~6 s per round.
    let rate = n / (6.0 * rounds as f64);
    let send_done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (url, deliveries, done) = (
            stack.webhook_url(),
            sc.deliveries.clone(),
            send_done.clone(),
        );
        tokio::spawn(async move {
            let r = send_all(&url, deliveries, rate).await;
            done.store(true, Ordering::Relaxed);
            r
        })
    };

    let services: [(&Shared, Progress, i64); 3] = [
        (&stack.ingest, Progress::Raw, (n as i64) / 12),
        (&stack.processor, Progress::Commands, 150),
        (&stack.publisher, Progress::Requests, 60),
    ];
    let mut stats_before_storm = None;
    let mut rate_limited_after_storm = None;
    let mut outage_errors = 0;
    for round in 0..rounds {
        let (service, p, max_k) = services[round % 3];
        let k = rng.random_range(1..=max_k.max(2));
        kill_at_random_point(&stack, service, p, k, &send_done).await;
        if round == 1 {
            // Iterable answers 503 to everything until the publisher has hit it 5 times.
            let before = stack.sim_state().stats().totals.server_errors;
            stack
                .sim_state()
                .set_faults(FaultSpec {
                    outage: true,
                    ..FaultSpec::default()
                })
                .unwrap();
            eprintln!("Iterable outage from {:?}", started.elapsed());
            wait_until(
                "the publisher to meet the outage",
                Duration::from_secs(60),
                || {
                    let n = stack.sim_state().stats().totals.server_errors;
                    async move { (n >= before + 5).then_some(()) }
                },
            )
            .await
            .unwrap();
            stack.sim_state().set_faults(FaultSpec::default()).unwrap();
            outage_errors = stack.sim_state().stats().totals.server_errors - before;
            eprintln!(
                "Iterable back at {:?} after {outage_errors} 503s",
                started.elapsed()
            );
        }
        if round == 3 {
            // A 429 storm: every request answered 429 until the publisher has met 5 of them.
            let s = stack.sim_state().stats();
            stack
                .sim_state()
                .set_faults(FaultSpec {
                    rate_limit_storm: true,
                    ..FaultSpec::default()
                })
                .unwrap();
            eprintln!("429 storm from {:?}", started.elapsed());
            wait_until(
                "the publisher to meet the storm",
                Duration::from_secs(60),
                || {
                    let n = stack.sim_state().stats().totals.rate_limited;
                    async move { (n >= s.totals.rate_limited + 5).then_some(()) }
                },
            )
            .await
            .unwrap();
            stack.sim_state().set_faults(FaultSpec::default()).unwrap();
            let after = stack.sim_state().stats().totals.rate_limited;
            eprintln!(
                "storm over at {:?} after {} 429s",
                started.elapsed(),
                after - s.totals.rate_limited
            );
            stats_before_storm = Some(s);
            rate_limited_after_storm = Some(after);
        }
    }
    let report = sender.await.unwrap().unwrap();
    eprintln!(
        "sent {} deliveries ({} retried attempts) by {:?}",
        report.sent,
        report.retried,
        started.elapsed()
    );
    drain_past_timeline_end(&stack, &sc, started).await;

    let sim = stack.sim_state();
    let outcome = check_outcome(&sc.expected, sim);
    eprintln!("{}", outcome.summary(60));
    let stats = sim.stats();
    let before = stats_before_storm.unwrap();
    assert_eq!(
        before.totals.rate_limited, 0,
        "429s before the storm: {:?}",
        before.endpoints
    );
    assert!(outage_errors >= 5, "the outage was not observed");
    assert_eq!(
        stats.totals.rate_limited,
        rate_limited_after_storm.unwrap(),
        "429s after the storm ended (the publisher exceeded a limit when it caught up): {:?}",
        stats.endpoints
    );
    let mismatches: Vec<_> = outcome
        .mismatches
        .iter()
        .filter(|m| !m.starts_with("429:"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "Iterable differs from expected.json after the faults:\n{}",
        outcome.summary(200)
    );
    assert_no_dead_letters(&stack);
    eprintln!("total {:?}", started.elapsed());
    if let Ok(stack) = Arc::try_unwrap(stack) {
        stack.shutdown().await;
    }
}

/// A private single-node broker (never the shared one), stopped and deleted on drop.
struct PrivateBroker {
    port: u16,
    state: PathBuf,
}

impl PrivateBroker {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
    }

    fn run(&self, verb: &str) {
        let status = Command::new(Self::script())
            .arg(verb)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_STATE_DIR", &self.state)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "scripts/kafka {verb} on port {} failed",
            self.port
        );
    }

    fn start() -> Self {
        // A free pair: client port and controller port (+1).
        let port = (0..50)
            .map(|_| free_port())
            .find(|p| *p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
            .unwrap();
        let state = std::env::temp_dir().join(runtime::testing::unique("tillstream-private-kafka"));
        let b = PrivateBroker { port, state };
        b.run("start");
        b
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_STATE_DIR", &self.state)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_mid_stream_reaches_the_expected_outcome() {
    let started = Instant::now();
    let broker = tokio::task::spawn_blocking(PrivateBroker::start)
        .await
        .unwrap();
    eprintln!(
        "private broker on 127.0.0.1:{} up at {:?}",
        broker.port,
        started.elapsed()
    );
    let kafka = KafkaConfig::new(format!("127.0.0.1:{}", broker.port));
    let cfg = ci_scenario();
    let sc = scenario(&cfg).unwrap();
    let n = sc.deliveries.len() as i64;
    let stack = Arc::new(Stack::start(options(kafka)).await.unwrap());
    eprintln!("logs in {}", stack.dir.display());
    let sender = {
        let (url, deliveries) = (stack.webhook_url(), sc.deliveries.clone());
        tokio::spawn(async move { send_all(&url, deliveries, n as f64 / 30.0).await })
    };
    // Restart once a third of the deliveries are in and commands are flowing to Iterable.
    wait_until(
        "a third of the deliveries in Kafka and Iterable requests",
        Duration::from_secs(120),
        || {
            let ok = stack.total(&stack.topics.raw, stack.topics.partitions) >= n / 3
                && stack.sim_state().stats().totals.requests > 0;
            async move { ok.then_some(()) }
        },
    )
    .await
    .unwrap();
    let t = Instant::now();
    let port = broker.port;
    let state = broker.state.clone();
    tokio::task::spawn_blocking(move || PrivateBroker { port, state }.restart_keeping_data())
        .await
        .unwrap();
    eprintln!(
        "broker restarted in {:?} (at {:?})",
        t.elapsed(),
        started.elapsed()
    );

    let report = sender.await.unwrap().unwrap();
    finish_and_compare(&stack, &sc, &report, started, "a broker restart").await;
    assert_no_dead_letters(&stack);
    eprintln!("total {:?}", started.elapsed());
    if let Ok(stack) = Arc::try_unwrap(stack) {
        stack.shutdown().await;
    }
    drop(broker);
}

impl PrivateBroker {
    /// `scripts/kafka restart` without stopping on drop (the owner stops it).
    fn restart_keeping_data(self) {
        self.run("restart");
        std::mem::forget(self);
    }
}

/// Faults must be recovered, not dead-lettered: both dead-letter topics stay empty.
fn assert_no_dead_letters(stack: &Stack) {
    assert_eq!(
        stack.side_topic_records(&stack.topics.processor_dlq),
        0,
        "processor dead letters"
    );
    assert_eq!(
        stack.side_topic_records(&stack.topics.publisher_dlq),
        0,
        "publisher dead letters"
    );
}
