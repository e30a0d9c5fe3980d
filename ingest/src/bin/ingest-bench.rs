//! `ingest-bench`: verified webhooks per second and latency at fixed offered rates against the
//! local broker, plus the broker's own ceiling from Kafka's ProducerPerformance; JSON output.
//!
//! Ingest runs in-process on its own runtime; the load generator drives it over keep-alive
//! HTTP/1.1 with signed 2-20 KB order payloads. Fixed rates are open-loop (latency counted from
//! the scheduled send time, so a stalled server cannot hide its queueing); `max` is closed-loop
//! with `--concurrency` workers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use runtime::{KafkaConfig, Secret};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-app-secret";
const SHOP: &str = "bench.myshopify.com";

#[derive(Debug, Parser)]
#[command(name = "ingest-bench")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Offered rates in requests per second; `max` = closed loop with --concurrency workers.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,max")]
    rates: Vec<String>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent requests of the `max` run.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Smallest and largest payload in bytes.
    #[arg(long, default_value_t = 2048)]
    min_size: usize,
    #[arg(long, default_value_t = 20480)]
    max_size: usize,
    /// Distinct payloads generated (cycled through).
    #[arg(long, default_value_t = 500)]
    payloads: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Records for Kafka's ProducerPerformance (0 skips the ceiling measurement).
    #[arg(long, default_value_t = 100_000)]
    perf_records: u64,
    /// Extra librdkafka properties for ingest's producer, `key=value` (e.g. `linger.ms=10`).
    #[arg(long = "producer-prop")]
    producer_props: Vec<String>,
    /// Seal bodies under per-customer data keys with this master key (crypto-shredding,
    /// `erasure.master_key`); default: bodies in clear.
    #[arg(long)]
    master_key: Option<String>,
    /// Path of scripts/kafka.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka"))]
    kafka_script: PathBuf,
}

/// xorshift64*: deterministic payloads without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A Shopify-shaped `orders/paid` body of about `target` bytes (line items added until there).
fn order_payload(rng: &mut Rng, target: usize) -> Vec<u8> {
    let order_id = 5_000_000_000_000_000_000u64 + rng.below(1 << 40);
    let customer = 9_007_199_254_740_993u64 + rng.below(50_000);
    let head = format!(
        r#"{{"id":{order_id},"admin_graphql_api_id":"gid:\/\/shopify\/Order\/{order_id}","name":"\#{n}","order_number":{n},"email":"buyer{customer}@example.com","created_at":"2026-07-01T10:00:00-05:00","updated_at":"2026-07-01T10:00:05-05:00","processed_at":"2026-07-01T10:00:00-05:00","cancelled_at":null,"currency":"USD","presentment_currency":"USD","total_price":"199.00","subtotal_price":"189.00","total_discounts":"10.00","total_tax":"0.00","current_total_price":"199.00","total_price_set":{{"shop_money":{{"amount":"199.00","currency_code":"USD"}},"presentment_money":{{"amount":"199.00","currency_code":"USD"}}}},"financial_status":"paid","fulfillment_status":null,"test":false,"buyer_accepts_marketing":true,"tags":"vip, summer\/2026","source_name":"web","landing_site":"\/products\/tee?utm_source=news\u0026utm_medium=email","discount_codes":[{{"code":"SUMMER10","amount":"10.00","type":"fixed_amount"}}],"customer":{{"id":{customer},"email":"buyer{customer}@example.com","first_name":"Ana","last_name":"Souza","state":"enabled","admin_graphql_api_id":"gid:\/\/shopify\/Customer\/{customer}"}},"shipping_address":{{"first_name":"Ana","address1":"Rua A\/B 12","city":"Porto","zip":"4000-001","country_code":"PT"}},"shipping_lines":[{{"price":"10.00","title":"Standard"}}],"refunds":[],"line_items":["#,
        n = 1000 + rng.below(1_000_000)
    );
    let mut body = head.into_bytes();
    let mut first = true;
    while body.len() + 2 < target {
        let (line, variant, qty) = (
            rng.next() >> 4,
            808_950_810 + rng.below(10_000),
            1 + rng.below(4),
        );
        let item = format!(
            r#"{}{{"id":{line},"variant_id":{variant},"product_id":632910392,"sku":"SKU\/{variant}","title":"Item {variant} \u0026 co","quantity":{qty},"price":"19.99","price_set":{{"shop_money":{{"amount":"19.99","currency_code":"USD"}},"presentment_money":{{"amount":"19.99","currency_code":"USD"}}}},"total_discount":"0.00","discount_allocations":[]}}"#,
            if first { "" } else { "," }
        );
        first = false;
        body.extend_from_slice(item.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

struct Payload {
    headers: HeaderMap,
    body: bytes::Bytes,
}

fn payloads(args: &Args) -> Result<Vec<Payload>> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    (0..args.payloads)
        .map(|i| {
            let span = args.max_size.saturating_sub(args.min_size) as u64;
            let target = args.min_size + rng.below(span + 1) as usize;
            let body = order_payload(&mut rng, target);
            let mut headers = HeaderMap::new();
            let mut set = |k: &'static str, v: String| -> Result<()> {
                headers.insert(HeaderName::from_static(k), HeaderValue::from_str(&v)?);
                Ok(())
            };
            set("x-shopify-topic", "orders/paid".into())?;
            set("x-shopify-hmac-sha256", ingest::sign(SECRET, &body))?;
            set("x-shopify-shop-domain", SHOP.into())?;
            set("x-shopify-api-version", "2026-07".into())?;
            set("x-shopify-webhook-id", format!("bench-{i}"))?;
            set("x-shopify-event-id", format!("bench-event-{i}"))?;
            set(
                "x-shopify-triggered-at",
                "2026-07-01T15:00:00.000000Z".into(),
            )?;
            set("content-type", "application/json".into())?;
            Ok(Payload {
                headers,
                body: body.into(),
            })
        })
        .collect()
}

#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, u64>,
}

impl Outcome {
    fn record(&mut self, status: String, latency: Duration) {
        if status == "200" {
            self.latencies.push(latency);
        }
        *self.statuses.entry(status).or_default() += 1;
    }

    fn report(mut self, offered: &str, elapsed: Duration) -> serde_json::Value {
        self.latencies.sort();
        let pct = |p: f64| -> f64 {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 * p).ceil() as usize)
                .clamp(1, self.latencies.len())
                - 1;
            (self.latencies[i].as_secs_f64() * 1000.0 * 100.0).round() / 100.0
        };
        let ok = self.latencies.len() as f64;
        json!({
            "offered_rate": offered,
            "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "sent": self.statuses.values().sum::<u64>(),
            "ok": self.latencies.len(),
            "statuses": self.statuses,
            "achieved_rate": (ok / elapsed.as_secs_f64()).round(),
            "latency_ms": { "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0) },
        })
    }
}

/// A minimal keep-alive HTTP/1.1 client: a pool of raw hyper connections to one address.
/// Leaner than a general client (no URL parsing, proxies or redirects), so the load generator
/// takes less of the CPU it shares with ingest and the broker.
#[derive(Clone)]
struct Client {
    addr: std::net::SocketAddr,
    idle: Arc<std::sync::Mutex<Vec<SendRequest<Full<bytes::Bytes>>>>>,
}

impl Client {
    fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            idle: Arc::default(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<bytes::Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn request(&self, method: &str, path: &str, p: Option<&Payload>) -> Result<u16> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        conn.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "ingest");
        if let Some(h) = request.headers_mut()
            && let Some(p) = p
        {
            h.extend(p.headers.clone());
        }
        let body = p.map(|p| p.body.clone()).unwrap_or_default();
        let response = conn.send_request(request.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        Ok(status)
    }
}

async fn send(client: &Client, p: &Payload) -> String {
    match tokio::time::timeout(
        Duration::from_secs(10),
        client.request("POST", "/webhooks/shopify", Some(p)),
    )
    .await
    {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(_)) => "error".into(),
        Err(_) => "timeout".into(),
    }
}

/// Open loop: request i is due at start + i/rate; latency counts from that instant.
async fn fixed_rate(
    client: &Client,
    payloads: &Arc<Vec<Payload>>,
    rate: f64,
    secs: u64,
) -> Outcome {
    let total = (rate * secs as f64) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cap = Arc::new(Semaphore::new(8192));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = cap.clone().acquire_owned().await else {
            break;
        };
        let (client, payloads, tx) = (client.clone(), payloads.clone(), tx.clone());
        tokio::spawn(async move {
            let p = &payloads[(i as usize) % payloads.len()];
            let status = send(&client, p).await;
            let _ = tx.send((status, due.elapsed()));
            drop(permit);
        });
    }
    drop(tx);
    let mut out = Outcome::default();
    while let Some((status, latency)) = rx.recv().await {
        out.record(status, latency);
    }
    out
}

/// Closed loop: `workers` send back to back for `secs`.
async fn max_rate(
    client: &Client,
    payloads: &Arc<Vec<Payload>>,
    workers: usize,
    secs: u64,
) -> Outcome {
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, payloads) = (client.clone(), payloads.clone());
            tokio::spawn(async move {
                let mut out = Outcome::default();
                let mut i = w;
                while Instant::now() < stop {
                    let started = Instant::now();
                    let status = send(&client, &payloads[i % payloads.len()]).await;
                    out.record(status, started.elapsed());
                    i += workers;
                }
                out
            })
        })
        .collect();
    let mut all = Outcome::default();
    for t in tasks {
        if let Ok(o) = t.await {
            all.latencies.extend(o.latencies);
            for (k, v) in o.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
        }
    }
    all
}

/// Kafka's own producer benchmark with the same payloads, acks=all, lz4 and linger as ingest.
fn ceiling(args: &Args, topic: &str, payloads: &[Payload]) -> Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(runtime::testing::unique("ingest-bench"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("payloads.txt");
    let mut text = Vec::new();
    for p in payloads {
        text.extend_from_slice(&p.body);
        text.push(b'\n');
    }
    std::fs::write(&file, text)?;
    let out = Command::new("bash")
        .arg(&args.kafka_script)
        .args([
            "run",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
        ])
        .args([
            "--num-records",
            &args.perf_records.to_string(),
            "--throughput",
            "-1",
        ])
        .arg("--payload-file")
        .arg(&file)
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={}", args.brokers))
        .args([
            "acks=all",
            "enable.idempotence=true",
            "compression.type=lz4",
            "linger.ms=5",
        ])
        .output()
        .context("running scripts/kafka run ProducerPerformance")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "ProducerPerformance failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Last line: "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, ..."
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records sent"))
        .unwrap_or_default()
        .to_owned();
    let number_before = |marker: &str| -> Option<f64> {
        let idx = summary.find(marker)?;
        summary[..idx]
            .trim_end()
            .rsplit([' ', '('])
            .next()?
            .parse()
            .ok()
    };
    Ok(json!({
        "command": format!(
            "scripts/kafka run org.apache.kafka.tools.ProducerPerformance --topic <fresh, {} partitions> --num-records {} --throughput -1 --payload-file <the same {} payloads> --producer-props bootstrap.servers={} acks=all enable.idempotence=true compression.type=lz4 linger.ms=5",
            args.partitions, args.perf_records, payloads.len(), args.brokers
        ),
        "records_per_sec": number_before("records/sec"),
        "mb_per_sec": number_before("MB/sec"),
        "avg_latency_ms": number_before("ms avg latency"),
        "p99_latency_ms": number_before("ms 99th"),
        "summary": summary,
    }))
}

/// utime + stime in seconds from a `/proc/.../stat` line (fields 14 and 15; USER_HZ = 100).
fn stat_cpu_seconds(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((comm, ticks / 100.0))
}

/// CPU seconds used so far by this process's threads, grouped (ingest's runtime, the load
/// generator, librdkafka), and by the broker's JVM.
fn cpu_by_component(broker_pid: Option<u32>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((comm, secs)) = stat_cpu_seconds(&stat) else {
                continue;
            };
            let group = if comm.starts_with("ingest-http") {
                "ingest_http"
            } else if comm.starts_with("loadgen") {
                "loadgen"
            } else if comm.starts_with("rdk:") || comm.starts_with("producer") {
                "librdkafka"
            } else {
                "bench_other"
            };
            *out.entry(group.to_owned()).or_default() += secs;
        }
    }
    if let Some(pid) = broker_pid
        && let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some((_, secs)) = stat_cpu_seconds(&stat)
    {
        out.insert("kafka_broker".to_owned(), secs);
    }
    out
}

/// The broker's pid from the file `scripts/kafka` keeps for the port in `brokers`.
fn broker_pid(brokers: &str) -> Option<u32> {
    let port = brokers.split(',').next()?.rsplit(':').next()?;
    let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    std::fs::read_to_string(format!("{dir}/tillstream-kafka-{port}/kafka.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The 1/5/15-minute load averages: the machine is shared, so say how busy it was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({ "cpu": cpu, "cores": cores, "memory_gib": mem_kb / 1024 / 1024 })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let load_before = load_average();
    let broker_pid = broker_pid(&args.brokers);
    let kafka = KafkaConfig::new(args.brokers.clone());
    let payloads = Arc::new(payloads(&args)?);
    let sizes: Vec<usize> = payloads.iter().map(|p| p.body.len()).collect();

    // Ingest on its own runtime so the load generator's tasks do not queue behind it.
    let ingest_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("ingest-http")
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (topics, perf_topics) = ingest_rt.block_on(async {
        let partitions = args.partitions;
        (
            runtime::testing::fresh_topics(&kafka, partitions).await,
            runtime::testing::fresh_topics(&kafka, partitions).await,
        )
    });
    // The machine is shared: measure the broker's ceiling before and after ingest's runs, so
    // a change in background load shows instead of skewing the ratio silently.
    let measure_ceiling = |when: &str| -> Result<serde_json::Value> {
        if args.perf_records == 0 {
            return Ok(serde_json::Value::Null);
        }
        eprintln!(
            "Kafka ProducerPerformance ceiling {when} ({} records)...",
            args.perf_records
        );
        let mut c = ceiling(&args, &perf_topics.raw, &payloads)?;
        c["load_average"] = json!(load_average());
        Ok(c)
    };
    let ceiling_before = measure_ceiling("before")?;
    let mut config = ingest::IngestConfig::defaults()?;
    config.kafka = kafka.clone();
    for prop in &args.producer_props {
        let (k, v) = prop
            .split_once('=')
            .context("--producer-prop takes key=value")?;
        config.kafka.properties.insert(k.to_owned(), v.to_owned());
    }
    config.topics = topics.clone();
    config.erasure.master_key = args.master_key.as_deref().map(Secret::new);
    config.shopify.secrets = vec![Secret::new(SECRET)];
    config.http.max_in_flight = 16_384;
    config.http.ready_check_interval = Duration::from_millis(250);
    let listener = ingest_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = ingest_rt.spawn(ingest::run_with_listener(
        config,
        listener,
        shutdown.clone(),
    ));

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen")
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runs = client_rt.block_on(async {
        let client = Client::new(addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.request("GET", "/readyz", None).await.ok() != Some(200) {
            if Instant::now() > deadline {
                bail!("ingest never became ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("warming up (2 s at 200/s)...");
        fixed_rate(&client, &payloads, 200.0, 2).await;
        let mut runs = Vec::new();
        for rate in &args.rates {
            eprintln!("offered rate {rate} for {} s...", args.seconds);
            let started = Instant::now();
            let cpu_before = cpu_by_component(broker_pid);
            let outcome = if rate == "max" {
                max_rate(&client, &payloads, args.concurrency, args.seconds).await
            } else {
                fixed_rate(&client, &payloads, rate.parse()?, args.seconds).await
            };
            let cpu_after = cpu_by_component(broker_pid);
            let ok = outcome.latencies.len().max(1) as f64;
            let mut report = outcome.report(rate, started.elapsed());
            report["load_average"] = json!(load_average());
            // CPU per accepted request by component: unlike rates, stable on a shared machine.
            let per_request: BTreeMap<&String, f64> = cpu_after
                .iter()
                .map(|(k, after)| {
                    let before = cpu_before.get(k).copied().unwrap_or(0.0);
                    (k, ((after - before) / ok * 1e6).round())
                })
                .collect();
            report["cpu_us_per_request"] = json!(per_request);
            runs.push(report);
        }
        anyhow::Ok(runs)
    })?;
    shutdown.cancel();
    let _ = ingest_rt.block_on(server);

    let ceiling_after = measure_ceiling("after")?;
    let max_rate = runs
        .iter()
        .filter_map(|r| r["achieved_rate"].as_f64())
        .fold(0.0, f64::max);
    let ratio = |c: &serde_json::Value| {
        c["records_per_sec"]
            .as_f64()
            .map(|c| (max_rate / c * 1000.0).round() / 1000.0)
    };
    let report = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": machine(),
        "load_average_before_after": [load_before, load_average()],
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "broker": args.brokers,
        "partitions": args.partitions,
        "sealed": args.master_key.is_some(),
        "producer_props": args.producer_props,
        "payload_bytes": {
            "count": sizes.len(),
            "min": sizes.iter().min(),
            "mean": sizes.iter().sum::<usize>() / sizes.len().max(1),
            "max": sizes.iter().max(),
        },
        "ingest": runs,
        "kafka_ceiling": { "before": ceiling_before, "after": ceiling_after },
        "ingest_max_over_ceiling": { "before": ratio(&ceiling_before), "after": ratio(&ceiling_after) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
