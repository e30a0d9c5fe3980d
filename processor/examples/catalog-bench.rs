//! Catalog benchmark (a command, not a test): the processor's events/s with the product join on
//! and off, and the memory and load time of a 100,000-product table.
//!
//! ```sh
//! scripts/kafka start
//! cargo build --release -p processor --bins --examples
//! target/release/examples/catalog-bench --events 20000 --products 100000
//! ```
//! Prints one JSON document. Measures, on the local broker:
//! * `throughput`: the real processor binary with the marketing rules over shopify-sim's store
//!   *with its product catalogue* (`[products] enabled`, the benchmark scenario of
//!   processor-bench otherwise), once with `[catalog]` defaults (enrichment and catalog sync
//!   on) and once with `enrich = false, sync = false` (the table is still kept; only the join
//!   and the catalog commands are off). Same raw topic, fresh state each run; events/s, CPU
//!   per event, and the enrichment counters (hits, misses) of the `on` run;
//! * `table`: a products topic of `--products` records (shopify-sim's product payloads, ids
//!   renumbered, one version each, as after a backfill), the processor's start-to-ready time
//!   (it loads the table before it is ready) and its resident memory against an empty one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use processor::catalog::{ProductRecord, Version};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rules::catalog::Product;
use runtime::testing::{fresh_topics, kafka, rss_kib, unique};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::ShopifyEnvelope;

#[path = "support/events.rs"]
#[allow(dead_code)] // each example uses part of it
mod bench_events;
use bench_events::arg;

const T: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 4;

async fn produce(k: &KafkaConfig, topic: &str, records: &[(String, Vec<u8>)]) {
    let p: FutureProducer = k.producer("bench-load").create().unwrap();
    let mut pending = Vec::with_capacity(1000);
    for (key, value) in records {
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

fn spawn(
    k: &KafkaConfig,
    t: &TopicsConfig,
    app: &str,
    rules: &std::path::Path,
    port: u16,
) -> Child {
    Command::new(processor_bin())
        .envs(runtime::testing::service_env(k, t))
        .env("TILLSTREAM__APPLICATION_ID", app)
        .env("TILLSTREAM__INSTANCE_ID", "bench")
        .env("TILLSTREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("TILLSTREAM__RULES__FILE", rules)
        .env("TILLSTREAM__ENGINE__COMMIT_MAX_RECORDS", "1000")
        .env("TILLSTREAM__ENGINE__COMMIT_INTERVAL", "1s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    b
}

fn ready(port: u16) -> bool {
    http_get(port, "/readyz").starts_with("HTTP/1.1 200")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// CPU time (user + system, all threads) a process has used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// A metric's value by label set, from a Prometheus text page.
fn metric(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{labels} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn topics(k: &KafkaConfig) -> TopicsConfig {
    let mut t = TopicsConfig::with_prefix(&format!("{}.", unique("bench-cat")));
    t.partitions = PARTITIONS;
    t.side_partitions = 1;
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| rt.block_on(t.apply(k))).unwrap();
    t
}

/// One run over the whole raw topic with `rules`: events/s, CPU µs per event, the metrics page.
fn run(k: &KafkaConfig, raw: &str, n: i64, rules: &std::path::Path) -> serde_json::Value {
    let mut t = topics(k);
    t.raw = raw.to_owned();
    let port = free_port();
    let app = unique("bench-catalog");
    let mut child = spawn(k, &t, &app, rules, port);
    while !ready(port) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let begin = Instant::now();
    let cpu_at_ready = cpu_secs(child.id());
    while committed(k, &app, raw) < n {
        assert!(
            begin.elapsed() < Duration::from_secs(900),
            "processor did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = begin.elapsed().as_secs_f64();
    let cpu = cpu_secs(child.id()) - cpu_at_ready;
    let page = http_get(port, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let hit = metric(
        &page,
        "tillstream_processor_enriched_items_total",
        "{outcome=\"hit\"}",
    );
    let miss = metric(
        &page,
        "tillstream_processor_enriched_items_total",
        "{outcome=\"miss\"}",
    );
    serde_json::json!({
        "events_per_sec": (n as f64 / secs).round(),
        "cpu_us_per_event": (cpu * 1e6 / n as f64).round(),
        "items_enriched": hit,
        "items_not_found": miss,
        "products_in_table": metric(&page, "tillstream_processor_catalog_products", ""),
    })
}

/// `n` product records as a backfill leaves them: shopify-sim's product payloads, renumbered.
fn product_records(evs: &[ShopifyEnvelope], n: u64) -> (Vec<(String, Vec<u8>)>, f64) {
    let samples: Vec<Product> = evs
        .iter()
        .filter(|e| e.topic == "products/create")
        .filter_map(|e| serde_json::from_slice::<serde_json::Value>(&e.body).ok())
        .map(|b| Product::from_payload("0", &b))
        .collect();
    assert!(!samples.is_empty(), "the scenario has no products/create");
    let variants =
        samples.iter().map(|p| p.variants.len()).sum::<usize>() as f64 / samples.len() as f64;
    let records = (0..n)
        .map(|i| {
            let mut p = samples[usize::try_from(i).unwrap() % samples.len()].clone();
            let id = (8_000_000_000_000 + i).to_string();
            p.handle = p.handle.map(|h| format!("{h}-{i}"));
            for (j, v) in p.variants.iter_mut().enumerate() {
                v.id = format!("{id}{j:03}");
            }
            p.id.clone_from(&id);
            let record = ProductRecord {
                versions: vec![Version {
                    at_ms: 1_767_225_600_000,
                    product: Some(Arc::new(p)),
                }],
            };
            (
                format!("bench.myshopify.com/p/{id}"),
                serde_json::to_vec(&record).unwrap(),
            )
        })
        .collect();
    (records, variants)
}

/// The processor's start-to-ready time and steady resident memory over `t` (KiB).
fn start_and_measure(k: &KafkaConfig, t: &TopicsConfig, rules: &std::path::Path) -> (f64, u64) {
    let port = free_port();
    let started = Instant::now();
    let mut child = spawn(k, t, &unique("bench-table"), rules, port);
    while !ready(port) {
        assert!(started.elapsed() < Duration::from_secs(600), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    // Steady state: librdkafka has released the load's fetch buffers a moment after readiness.
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (secs, rss)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let k = kafka();
    let n_events = usize::try_from(arg("--events", 20_000)).unwrap();
    let n_products = arg("--products", 100_000);
    let dir = std::env::temp_dir().join(unique("catalog-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let on = dir.join("on.toml");
    let off = dir.join("off.toml");
    std::fs::write(&on, "").unwrap();
    std::fs::write(&off, "[catalog]\nenrich = false\nsync = false\n").unwrap();

    let t = fresh_topics(&k, PARTITIONS).await;
    let evs = bench_events::store_events(n_events, true);
    let product_events = evs
        .iter()
        .filter(|e| e.topic.starts_with("products/"))
        .count();
    let records: Vec<(String, Vec<u8>)> = evs
        .iter()
        .map(|e| (e.routing_key.clone(), e.encode().unwrap()))
        .collect();
    produce(&k, &t.raw, &records).await;
    let n = i64::try_from(records.len()).unwrap();
    // Alternate the modes so a busier moment of the shared machine does not favour one.
    let mut runs = Vec::new();
    for mode in ["off", "on", "off", "on"] {
        let rules = if mode == "on" { &on } else { &off };
        let mut r = run(&k, &t.raw, n, rules);
        r["mode"] = mode.into();
        runs.push(r);
    }
    let best = |mode: &str| {
        runs.iter()
            .filter(|r| r["mode"] == mode)
            .filter_map(|r| r["events_per_sec"].as_f64())
            .fold(0.0, f64::max)
    };
    let (best_on, best_off) = (best("on"), best("off"));
    let least_cpu = |mode: &str| {
        runs.iter()
            .filter(|r| r["mode"] == mode)
            .filter_map(|r| r["cpu_us_per_event"].as_f64())
            .fold(f64::MAX, f64::min)
    };
    let (cpu_on, cpu_off) = (least_cpu("on"), least_cpu("off"));

    // The table: n_products records, against an empty products topic.
    let (products, avg_variants) = product_records(&evs, n_products);
    let bytes: usize = products.iter().map(|(_, v)| v.len()).sum();
    let full = topics(&k);
    produce(&k, &full.products, &products).await;
    drop(products);
    let empty = topics(&k);
    let (empty_secs, rss_empty) = start_and_measure(&k, &empty, &on);
    let (full_secs, rss_full) = start_and_measure(&k, &full, &on);

    let out = serde_json::json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": runtime::testing::cpu_model()},
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "input": {"events": records.len(), "product_events": product_events, "partitions": PARTITIONS},
        "throughput": {
            "runs": runs,
            "best_events_per_sec_on": best_on,
            "best_events_per_sec_off": best_off,
            "events_per_sec_on_over_off": (best_on / best_off.max(1.0) * 1000.0).round() / 1000.0,
            "least_cpu_us_per_event_on": cpu_on,
            "least_cpu_us_per_event_off": cpu_off,
            "cpu_on_over_off": (cpu_on / cpu_off.max(1.0) * 1000.0).round() / 1000.0,
        },
        "table": {
            "products": n_products,
            "avg_variants": (avg_variants * 10.0).round() / 10.0,
            "topic_bytes": bytes,
            "avg_record_bytes": bytes / usize::try_from(n_products.max(1)).unwrap(),
            "start_to_ready_secs_empty": (empty_secs * 100.0).round() / 100.0,
            "start_to_ready_secs_full": (full_secs * 100.0).round() / 100.0,
            "rss_empty_kib": rss_empty,
            "rss_full_kib": rss_full,
            "bytes_per_product": (rss_full.saturating_sub(rss_empty) * 1024) / n_products.max(1),
        }
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
