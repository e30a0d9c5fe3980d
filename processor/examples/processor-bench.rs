//! Processor benchmark (a command, not a test): throughput with exactly-once on, against the
//! broker's own transactional consume→produce ceiling, plus restore time and memory per key.
//!
//! ```sh
//! scripts/kafka start
//! cargo build -p processor && cargo run -p processor --example processor-bench -- --events 20000 --customers 1000000 --threads 1,2
//! ```
//! `--threads` lists the `engine.threads` settings to measure (default `1,2`): the processor and
//! restore figures are given for each. `--txn-sizes` lists the records per transaction (default
//! `100,1000,5000`). `--rounds N` (default 1) measures the processor and the restore N times,
//! interleaved, and gives every round and the median.
//! Prints one JSON document. Measures, on the local broker:
//! * `ceiling`: a stateless transactional read-process-write loop (consume raw, produce each
//!   record to an output topic, `send_offsets_to_transaction`, wait for the deliveries and
//!   commit every N records, as the processor commits: `runtime::kafka::wait_delivered`), the
//!   best any exactly-once processor can do on this machine; its `cpu_us_per_record` is the
//!   bench process's CPU per record in that loop (librdkafka consuming and producing the same
//!   bodies: the part of the processor's CPU per event that is not the processor's own);
//! * `processor`: the real processor binary with the marketing rules on shopify-sim payloads
//!   (realistic 2-20 KB bodies, parsed), for several transaction sizes;
//!   `cpu_us_per_event` is the processor process's CPU time (all threads) per event;
//!   `commit_ms_avg` and `commit_in_flight_share` (commit time over wall time, summed over the
//!   engine threads) come from its `tillstream_processor_commit_seconds`;
//! * `fingerprint`: the content fingerprint's cost per event, full parse against top-level walk
//!   (no Kafka);
//! * `aggregate_read`: reading a key's aggregate from its JSON text, from its packed bytes, and
//!   by unpacking them to text first (the path before the packed reader), in µs (no Kafka);
//! * `restore`: a changelog of `--customers` keys with realistic aggregates, the processor's
//!   time from start to ready (all partitions restored), and its resident memory per key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use runtime::testing::{fresh_topics, kafka, rss_kib, unique};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{EventSource, KeyStateRecord, ShopDomain, ShopifyEnvelope};

#[path = "support/events.rs"]
#[allow(dead_code)] // each example uses part of it
mod bench_events;
use bench_events::{arg, events, median};

#[path = "support/ceiling.rs"]
mod ceiling;
use ceiling::ceiling;

const T: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 4;

async fn produce(k: &KafkaConfig, topic: &str, events: &[(String, Vec<u8>)]) {
    let p: FutureProducer = k.producer("bench-load").create().unwrap();
    let mut pending = Vec::with_capacity(1000);
    for (key, value) in events {
        pending.push(
            p.send_result(FutureRecord::to(topic).key(key).payload(value))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
        if pending.len() == 1000 {
            for f in pending.drain(..) {
                f.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn processor_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let bin = dir.join("processor");
    assert!(
        bin.exists(),
        "build the processor first: cargo build -p processor ({})",
        bin.display()
    );
    bin
}

/// A comma-separated list argument, `default` when absent.
fn list_arg(name: &str, default: &str) -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    let list = args
        .windows(2)
        .find(|w| w[0] == name)
        .map_or(default, |w| w[1].as_str());
    list.split(',').map(|t| t.trim().parse().unwrap()).collect()
}

/// The `--threads` list (`1,2` by default): the engine thread counts to measure.
fn thread_counts() -> Vec<usize> {
    list_arg("--threads", "1,2")
}

/// The master key of `--sealed` runs (crypto-shredding: bodies sealed as ingest seals them).
const BENCH_MASTER_KEY: &str = "processor-bench-master-key-0123456789abcdef";

fn sealed() -> bool {
    std::env::args().any(|a| a == "--sealed")
}

fn spawn(
    k: &KafkaConfig,
    t: &TopicsConfig,
    app: &str,
    txn_records: usize,
    threads: usize,
    port: u16,
) -> Child {
    let mut cmd = Command::new(processor_bin());
    if sealed() {
        cmd.env("TILLSTREAM__ERASURE__MASTER_KEY", BENCH_MASTER_KEY);
    }
    cmd.envs(runtime::testing::service_env(k, t))
        .env("TILLSTREAM__APPLICATION_ID", app)
        .env("TILLSTREAM__INSTANCE_ID", "bench")
        .env("TILLSTREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "TILLSTREAM__ENGINE__COMMIT_MAX_RECORDS",
            txn_records.to_string(),
        )
        // Long enough that the size decides when a transaction commits, short enough that the
        // last, partial transaction of the run does not sit idle for long (it is timed too).
        .env("TILLSTREAM__ENGINE__COMMIT_INTERVAL", "1s")
        .env("TILLSTREAM__ENGINE__THREADS", threads.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Sum of the group's committed offsets on `topic`.
fn committed(k: &KafkaConfig, group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = k.consumer("bench-probe", group, true).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, T)
        .map(|t| {
            t.elements()
                .iter()
                .filter_map(|e| e.offset().to_raw())
                .filter(|o| *o > 0)
                .sum()
        })
        .unwrap_or(0)
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    b.starts_with("HTTP/1.1 200")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU time (user + system, all threads) a process has used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3); utime
    // and stime are fields 14 and 15, in clock ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks_per_sec()
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A way to read the content fingerprint's fields from a body.
type ContentReader = dyn Fn(&[u8]) -> Option<(String, String)>;

/// Microseconds per event of the content fingerprint's body reading: the full serde parse it
/// used to do, and the top-level walk (`processor::content`), over the same bodies.
/// What reading a key's aggregate costs, from its JSON text (a key changed earlier in the same
/// transaction) and from its packed bytes (any other key), over the aggregates the rules
/// build from these events (each key's state after each of its inputs; no Kafka).
fn aggregate_read_cost(evs: &[ShopifyEnvelope]) -> serde_json::Value {
    use rules::{Ctx, Rules};
    let rules = rules::MarketingRules::new(rules::RulesConfig::default());
    let mut states: HashMap<String, rules::State> = HashMap::new();
    let mut samples: Vec<(String, Vec<u8>, i64)> = Vec::new();
    for e in evs {
        let Ok(key) = schemas::CustomerKey::parse(&e.routing_key) else {
            continue;
        };
        let at = e.triggered_at_ms.unwrap_or(e.received_at_ms);
        let ctx = Ctx {
            now_ms: at,
            event_time_ms: at,
            wall_clock_ms: at,
        };
        let state = states.entry(e.routing_key.clone()).or_default();
        if rules.on_event(&key, state, e, &ctx).is_ok() {
            let text = serde_json::to_string(state).unwrap();
            let packed = processor::pack::pack_json_near(&text, at).unwrap();
            samples.push((text, packed, at));
        }
    }
    let n = samples.len().max(1) as f64;
    let started = Instant::now();
    for (text, _, _) in &samples {
        std::hint::black_box(serde_json::from_str::<rules::State>(text).unwrap());
    }
    let text_us = started.elapsed().as_secs_f64() * 1e6 / n;
    let started = Instant::now();
    for (_, packed, at) in &samples {
        std::hint::black_box(
            processor::pack::from_packed_near::<rules::State>(packed, *at).unwrap(),
        );
    }
    let packed_us = started.elapsed().as_secs_f64() * 1e6 / n;
    let started = Instant::now();
    for (_, packed, at) in &samples {
        let text = processor::pack::unpack_json_near(packed, *at).unwrap();
        std::hint::black_box(serde_json::from_str::<rules::State>(&text).unwrap());
    }
    let unpack_us = started.elapsed().as_secs_f64() * 1e6 / n;
    let avg_text = samples.iter().map(|s| s.0.len()).sum::<usize>() as f64 / n;
    serde_json::json!({
        "aggregates": samples.len(),
        "avg_json_bytes": avg_text.round(),
        "from_text_us": (text_us * 100.0).round() / 100.0,
        "from_packed_us": (packed_us * 100.0).round() / 100.0,
        "unpacked_then_parsed_us": (unpack_us * 100.0).round() / 100.0,
    })
}

fn fingerprint_cost(evs: &[ShopifyEnvelope]) -> serde_json::Value {
    let time = |f: &ContentReader| {
        let mut found = 0usize;
        let started = Instant::now();
        for _ in 0..5 {
            for e in evs {
                found += usize::from(std::hint::black_box(f(&e.body)).is_some());
            }
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / (5 * evs.len().max(1)) as f64;
        ((us * 100.0).round() / 100.0, found / 5)
    };
    let (parse_us, parse_found) = time(&processor::content::parsed_content_fields);
    let (walk_us, walk_found) = time(&processor::content::content_fields);
    assert_eq!(parse_found, walk_found, "the walk and the parse disagree");
    serde_json::json!({
        "full_parse_us_per_event": parse_us,
        "top_level_walk_us_per_event": walk_us,
        "events_with_a_content_fingerprint": walk_found,
    })
}

/// Events/s of the processor over the whole raw topic with `txn_records` per transaction, and
/// its CPU time per event in microseconds (all its threads, librdkafka's included).
fn processor_rate(
    k: &KafkaConfig,
    input: &TopicsConfig,
    n: i64,
    txn_records: usize,
    threads: usize,
) -> Rate {
    let mut t = TopicsConfig::with_prefix(&format!("{}.", unique("bench-proc")));
    t.partitions = PARTITIONS;
    t.side_partitions = 1;
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| rt.block_on(t.apply(k))).unwrap();
    let raw = input.raw.as_str();
    t.raw = raw.to_owned();
    // The data keys the input was sealed with (`--sealed`).
    t.keys = input.keys.clone();
    let app = unique("bench-app");
    let port = free_port();
    let mut child = spawn(k, &t, &app, txn_records, threads, port);
    let start = Instant::now();
    while !ready(port) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let begin = Instant::now();
    let cpu_at_ready = cpu_secs(child.id());
    let deadline = start + Duration::from_secs(900);
    while committed(k, &app, raw) < n {
        assert!(Instant::now() < deadline, "processor did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = begin.elapsed().as_secs_f64();
    let cpu = cpu_secs(child.id()) - cpu_at_ready;
    let commits = commit_metrics(port);
    let _ = child.kill();
    let _ = child.wait();
    let (count, sum) = commits.unwrap_or_default();
    Rate {
        events_per_sec: n as f64 / secs,
        cpu_us: cpu * 1e6 / n as f64,
        commits: count,
        commit_ms_avg: if count > 0.0 { sum * 1e3 / count } else { 0.0 },
        // Summed over the engine threads: above 1 per thread, a commit was always in flight.
        commit_in_flight_share: sum / secs,
    }
}

/// What one processor run measured.
struct Rate {
    events_per_sec: f64,
    cpu_us: f64,
    /// Transactions committed (the whole run, restore's none included).
    commits: f64,
    commit_ms_avg: f64,
    /// Commit time over the run's wall time: how much of it a commit was in flight (the
    /// next transaction's records wait in memory meanwhile).
    commit_in_flight_share: f64,
}

/// `tillstream_processor_commit_seconds`' count and sum, from the processor's `/metrics`.
fn commit_metrics(port: u16) -> Option<(f64, f64)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    let value = |name: &str| {
        b.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Some((
        value("tillstream_processor_commit_seconds_count"),
        value("tillstream_processor_commit_seconds_sum"),
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let k = kafka();
    let n_events = usize::try_from(arg("--events", 20_000)).unwrap();
    let n_customers = arg("--customers", 1_000_000);

    // Input: realistic raw events.
    let t = fresh_topics(&k, PARTITIONS).await;
    let mut evs = events(n_events);
    // On the bodies in clear, as the processor computes it after opening them.
    let fingerprint = fingerprint_cost(&evs);
    let aggregate_read = aggregate_read_cost(&evs);
    if sealed() {
        let cfg = runtime::shred::ErasureConfig {
            master_key: Some(runtime::Secret::new(BENCH_MASTER_KEY)),
            ..runtime::shred::ErasureConfig::default()
        };
        let sealer = runtime::shred::Sealer::for_kafka(&cfg, &k, &t)
            .unwrap()
            .unwrap();
        for e in &mut evs {
            if schemas::CustomerKey::parse(&e.routing_key).is_ok_and(|k| k.kind().names_person()) {
                e.body = sealer.seal(&e.routing_key, &e.body).await.unwrap();
            }
        }
    }
    let bytes: usize = evs.iter().map(|e| e.body.len()).sum();
    let records: Vec<(String, Vec<u8>)> = evs
        .iter()
        .map(|e| (e.routing_key.clone(), e.encode().unwrap()))
        .collect();
    produce(&k, &t.raw, &records).await;
    let n = i64::try_from(records.len()).unwrap();

    let only_restore = std::env::args().any(|a| a == "--only-restore");
    // `--txn-sizes 5000` measures one size (a long steady phase to profile).
    let sizes: &[usize] = &if only_restore {
        Vec::new()
    } else {
        list_arg("--txn-sizes", "100,1000,5000")
    };
    // The ceiling is the pass-through's best over the same transaction sizes (larger ones
    // commit less often), so the ratio compares best with best.
    let mut ceilings = Vec::new();
    for &txn in sizes.iter().filter(|s| **s >= 1000) {
        let (rate, cpu_us) = ceiling(&k, &t.raw, records.len(), txn);
        ceilings.push(serde_json::json!({"records_per_transaction": txn, "records_per_sec": rate.round(), "cpu_us_per_record": cpu_us.round()}));
    }
    let ceiling_rate = ceilings
        .iter()
        .filter_map(|v| v["records_per_sec"].as_f64())
        .fold(1.0, f64::max);
    let threads = thread_counts();
    // `--rounds N` repeats every processor and restore measurement N times (the thread counts
    // and transaction sizes interleaved within a round) and reports every round and the median:
    // on this shared 2-vCPU machine one run's CPU per event moves by ±10 µs.
    let rounds = usize::try_from(arg("--rounds", 1)).unwrap().max(1);
    let mut runs: HashMap<(usize, usize), Vec<Rate>> = HashMap::new();
    for _ in 0..rounds {
        for &th in &threads {
            for &txn in sizes {
                let r = processor_rate(&k, &t, n, txn, th);
                runs.entry((th, txn)).or_default().push(r);
            }
        }
    }
    let mut by_threads = Vec::new();
    for &th in &threads {
        let mut by_txn = Vec::new();
        for &txn in sizes {
            let rs = &runs[&(th, txn)];
            let med = |f: fn(&Rate) -> f64| median(rs.iter().map(f).collect());
            let events_per_sec = med(|r| r.events_per_sec);
            by_txn.push(serde_json::json!({
                "commit_max_records": txn,
                "events_per_sec": events_per_sec.round(),
                "cpu_us_per_event": med(|r| r.cpu_us).round(),
                "ratio_to_ceiling": (events_per_sec / ceiling_rate * 1000.0).round() / 1000.0,
                "commits": med(|r| r.commits),
                "commit_ms_avg": (med(|r| r.commit_ms_avg) * 10.0).round() / 10.0,
                "commit_in_flight_share": (med(|r| r.commit_in_flight_share) * 100.0).round() / 100.0,
                "rounds": rs.iter().map(|r| serde_json::json!({
                    "events_per_sec": r.events_per_sec.round(),
                    "cpu_us_per_event": r.cpu_us.round(),
                })).collect::<Vec<_>>(),
            }));
        }
        let best = by_txn
            .iter()
            .filter_map(|v| v["events_per_sec"].as_f64())
            .fold(0.0, f64::max);
        by_threads.push(serde_json::json!({"engine_threads": th, "by_transaction_size": by_txn, "best_events_per_sec": best.round(), "ratio_to_ceiling": (best / ceiling_rate * 1000.0).round() / 1000.0}));
    }

    // Restore: a changelog of n_customers keys with a realistic aggregate.
    let rt = fresh_topics(&k, PARTITIONS).await;
    let (sample, sample_timers) = restore_sample();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut state = Vec::with_capacity(usize::try_from(n_customers).unwrap());
    for i in 0..n_customers {
        let key = format!("bench.myshopify.com/c/{}", 6_000_000_000_000 + i);
        let rec = KeyStateRecord {
            key: key.clone(),
            shop_domain: "bench.myshopify.com".into(),
            updated_at_ms: 1_767_225_600_000,
            aggregate_json: sample.clone(),
            timers: sample_timers
                .iter()
                .map(|t| schemas::TimerRecord {
                    // Due over the next 90 days, as a live customer base's win-back timers are
                    // (a timer already due would fire right after the restore and the
                    // measurement would include that work).
                    due_ms: now_ms + 86_400_000 + (i as i64 % 7_776_000) * 1_000,
                    ..t.clone()
                })
                .collect(),
            dedup: vec![schemas::DedupRecord {
                fingerprint: format!("{:016x}", i * 7919),
                event_time_ms: 1_767_225_600_000,
            }],
        };
        state.push((key, rec.encode().unwrap()));
    }
    let changelog_bytes: usize = state.iter().map(|(_, v)| v.len()).sum();
    produce(&k, &rt.changelog, &state).await;
    drop(state);
    let empty = fresh_topics(&k, PARTITIONS).await;
    let mut restore_rounds: HashMap<usize, Vec<serde_json::Value>> = HashMap::new();
    for _ in 0..rounds {
        for &th in &threads {
            let r = restore_run(&k, &empty, &rt, th, n_customers);
            restore_rounds.entry(th).or_default().push(r);
        }
    }
    let restores: Vec<serde_json::Value> = threads
        .iter()
        .map(|th| {
            let rs = &restore_rounds[th];
            let med = |field: &str| median(rs.iter().filter_map(|r| r[field].as_f64()).collect());
            serde_json::json!({
                "engine_threads": th,
                "start_to_ready_secs": med("start_to_ready_secs"),
                "bytes_per_key": med("bytes_per_key"),
                "rounds": rs,
            })
        })
        .collect();

    let out = serde_json::json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "rounds": {"count": rounds, "figures": "medians over the rounds; each round under `rounds`"},
        "build": if cfg!(debug_assertions) { "debug (workspace crates opt-level 0, dependencies opt-level 1)" } else { "release" },
        "input": {"events": records.len(), "avg_body_bytes": bytes / records.len().max(1), "partitions": PARTITIONS, "sealed": sealed()},
        "ceiling": {"what": "stateless transactional consume->produce (best over transaction sizes)", "records_per_sec": ceiling_rate.round(), "by_transaction_size": ceilings},
        "fingerprint": fingerprint,
        "aggregate_read": aggregate_read,
        "processor": {"rules": "marketing (default rules config)", "by_engine_threads": by_threads},
        "restore": {
            "keys": n_customers,
            "changelog_bytes": changelog_bytes,
            "aggregate_json_bytes": sample.len(),
            "timers_per_key": sample_timers.len(),
            "by_engine_threads": restores,
        }
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

/// One restore measurement with `threads` engine threads: the processor's resident memory
/// with no state (`empty` topics), then its time from start to ready on the `full` changelog
/// of `keys` keys and its resident memory once restored.
fn restore_run(
    k: &KafkaConfig,
    empty: &TopicsConfig,
    full_topics: &TopicsConfig,
    threads: usize,
    keys: u64,
) -> serde_json::Value {
    let port = free_port();
    let mut base = spawn(k, empty, &unique("bench-empty"), 1000, threads, port);
    while !ready(port) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_empty = rss_kib(base.id());
    let _ = base.kill();
    let _ = base.wait();
    let port = free_port();
    let started = Instant::now();
    let mut full = spawn(
        k,
        full_topics,
        &unique("bench-restore"),
        1000,
        threads,
        port,
    );
    while !ready(port) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "restore did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let restore_secs = started.elapsed().as_secs_f64();
    let rss_at_ready = rss_kib(full.id());
    // Resident memory in the steady state: the restore readers are closed and librdkafka has
    // released their fetch buffers a moment after readiness.
    std::thread::sleep(Duration::from_secs(5));
    let rss_full = rss_kib(full.id());
    let _ = full.kill();
    let _ = full.wait();
    serde_json::json!({
        "engine_threads": threads,
        "start_to_ready_secs": (restore_secs * 100.0).round() / 100.0,
        "rss_empty_kib": rss_empty,
        "rss_at_ready_kib": rss_at_ready,
        "rss_restored_kib": rss_full,
        "bytes_per_key": ((rss_full.saturating_sub(rss_empty)) * 1024) / keys.max(1),
    })
}

/// A realistic key state: what the marketing rules hold for a customer with two paid orders,
/// settled (the aggregate as JSON, and the timers still pending: the win-back timer).
fn restore_sample() -> (String, Vec<schemas::TimerRecord>) {
    use rules::{Ctx, Rules};
    let rules = rules::MarketingRules::new(rules::RulesConfig::default());
    let shop = ShopDomain::parse("bench.myshopify.com").unwrap();
    let key = schemas::CustomerKey::new(&shop, schemas::KeyKind::Customer, "6000000000000");
    let mut state = rules::State::default();
    let mut timers: Vec<schemas::TimerRecord> = Vec::new();
    for (i, total) in ["120.50", "89.99"].iter().enumerate() {
        let body = format!(
            r##"{{"id":{},"name":"#100{i}","email":"a@example.com","created_at":"2026-01-0{d}T10:00:00-05:00","updated_at":"2026-01-0{d}T10:00:00-05:00","processed_at":"2026-01-0{d}T10:00:00-05:00","currency":"USD","total_price":"{total}","financial_status":"paid","test":false,"customer":{{"id":6000000000000,"email":"a@example.com","first_name":"Ada","last_name":"Lovelace"}},"line_items":[{{"id":1,"product_id":2,"variant_id":3,"sku":"SKU","title":"Thing","quantity":1,"price":"{total}"}}]}}"##,
            5_000_000 + i,
            d = i + 1
        );
        let env = ShopifyEnvelope {
            delivery_id: format!("d{i}"),
            event_id: None,
            topic: "orders/paid".into(),
            shop_domain: shop.as_str().into(),
            api_version: Some("2026-07".into()),
            triggered_at_ms: Some(1_767_225_600_000),
            received_at_ms: 1_767_225_600_000,
            routing_key: key.as_str().into(),
            source: EventSource::Webhook,
            webhook_name: None,
            body: body.into_bytes(),
        };
        let ctx = Ctx {
            now_ms: 1_767_225_600_000,
            event_time_ms: 1_767_225_600_000,
            wall_clock_ms: 1_767_225_600_000,
        };
        for effect in rules.on_event(&key, &mut state, &env, &ctx).unwrap() {
            keep_timers(&mut timers, effect);
        }
    }
    // Settled, as a customer is minutes after an order: the timers due then (the first-purchase
    // announcement) have fired; the win-back timer, due in 90 days, stays.
    let settled = 1_767_225_600_000 + 86_400_000;
    while let Some(i) = timers.iter().position(|t| t.due_ms <= settled) {
        let t = timers.remove(i);
        let timer = rules::Timer {
            kind: t.kind,
            timer_id: t.timer_id,
            due_ms: t.due_ms,
            payload: serde_json::from_str(&t.payload_json).unwrap_or_default(),
        };
        let ctx = Ctx {
            now_ms: timer.due_ms,
            event_time_ms: timer.due_ms,
            wall_clock_ms: timer.due_ms,
        };
        for effect in rules.on_timer(&key, &mut state, &timer, &ctx).unwrap() {
            keep_timers(&mut timers, effect);
        }
    }
    (serde_json::to_string(&state).unwrap(), timers)
}

/// Applies a rules effect to the key's pending timers (set replaces by id, cancel removes).
fn keep_timers(timers: &mut Vec<schemas::TimerRecord>, effect: rules::Effect) {
    match effect {
        rules::Effect::SetTimer(t) => {
            timers.retain(|x| x.timer_id != t.timer_id);
            timers.push(schemas::TimerRecord {
                kind: t.kind,
                timer_id: t.timer_id,
                due_ms: t.due_ms,
                payload_json: t.payload.to_string(),
            });
        }
        rules::Effect::CancelTimer { timer_id } => timers.retain(|x| x.timer_id != timer_id),
        _ => {}
    }
}
