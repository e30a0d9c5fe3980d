//! Full-stack benchmark: a Black Friday scenario through ingest → Kafka → processor → publisher → iterable-sim (published limits), printed as JSON.
//!
//! ```sh
//! CARGO_TARGET_DIR=/root/.cache/tillstream/target cargo build --release -p ingest -p processor -p publisher -p tests
//! /root/.cache/tillstream/target/release/stack-bench --customers 14000 --out bench.json
//! ```
//!
//! The services are the binaries next to this one (`target/<profile>/`). The scenario's
//! deliveries are sent with `X-Shopify-Triggered-At` re-stamped to the moment each one is sent,
//! so event time = arrival time and the publisher's `tillstream_publisher_command_age_seconds`
//! measures webhook → Iterable. Business times inside the payloads stay the scenario's, so
//! timers (due from those times) fire as soon as they are armed: the mix of journey events
//! differs from a real-time run; correctness is the end-to-end suite's job, not this one's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{HISTORICAL_RULES, SECRET, Stack, StackOptions, get_ok, lock, prom_samples};

#[derive(Debug)]
struct Args {
    scenario: String,
    customers: Option<u32>,
    limit: Option<usize>,
    concurrency: usize,
    partitions: i32,
    drain_timeout: Duration,
    out: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        scenario: format!(
            "{}/../simulators/shopify-sim/scenarios/black-friday.toml",
            env!("CARGO_MANIFEST_DIR")
        ),
        customers: None,
        limit: None,
        concurrency: 64,
        partitions: 4,
        drain_timeout: Duration::from_secs(900),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--scenario" => a.scenario = val()?,
            "--customers" => a.customers = Some(val()?.parse()?),
            "--limit" => a.limit = Some(val()?.parse()?),
            "--concurrency" => a.concurrency = val()?.parse()?,
            "--partitions" => a.partitions = val()?.parse()?,
            "--drain-timeout-secs" => a.drain_timeout = Duration::from_secs(val()?.parse()?),
            "--out" => a.out = Some(val()?),
            _ => anyhow::bail!(
                "usage: stack-bench [--scenario FILE] [--customers N] [--limit N] [--concurrency N] [--partitions N] \
                 [--drain-timeout-secs S] [--out FILE]"
            ),
        }
    }
    Ok(a)
}

/// Published Iterable limits (req/s) and the publisher's configured ones (defaults).
const LIMITS: &[(&str, Option<f64>, f64)] = &[
    ("events/track", Some(2000.0), 1800.0),
    ("events/trackBulk", Some(10.0), 9.0),
    ("users/update", Some(500.0), 450.0),
    ("users/bulkUpdate", Some(5.0), 4.5),
    ("users/forget", Some(3.0), 2.7),
    ("users/deleteByUserId", Some(100.0), 90.0),
    ("users/deleteByEmail", Some(100.0), 90.0),
    ("users/updateEmail", None, 90.0),
    ("users/updateSubscriptions", None, 90.0),
    ("commerce/trackPurchase", None, 90.0),
    ("commerce/updateCart", None, 90.0),
    ("lists/subscribe", None, 90.0),
    ("lists/unsubscribe", None, 90.0),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let date = chrono::Utc::now().to_rfc3339();
    let mut cfg = shopify_sim::ScenarioConfig::from_file(std::path::Path::new(&a.scenario))?;
    if let Some(c) = a.customers {
        cfg.customers = c;
    }
    let gen_started = Instant::now();
    let mut deliveries = shopify_sim::generate(&cfg)?.deliveries;
    if let Some(l) = a.limit {
        deliveries.truncate(l);
    }
    let n = deliveries.len();
    eprintln!(
        "generated {n} deliveries for {} customers in {:?}",
        cfg.customers,
        gen_started.elapsed()
    );

    let mut opts = StackOptions::historical(runtime::testing::kafka());
    opts.partitions = a.partitions;
    opts.event_time_only = false;
    opts.rules_toml = HISTORICAL_RULES.to_owned();
    opts.sim = iterable_sim::SimConfig::default();
    opts.log_level = "warn".into();
    opts.ingest_env
        .push(("TILLSTREAM__HTTP__MAX_IN_FLIGHT".into(), "4096".into()));
    let stack = Stack::start(opts).await?;
    eprintln!("stack up; logs in {}", stack.dir.display());
    let url = stack.webhook_url();
    let (proc_url, pub_url) = (lock(&stack.processor).url(), lock(&stack.publisher).url());

    // Sampler: once a second, processor lag, Iterable requests per endpoint, accepted webhooks.
    let accepted = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut samples: Vec<Value> = Vec::new();
    let sample = |stack: &Stack, lag: i64| -> Value {
        let stats = stack.sim_state().stats();
        let per: BTreeMap<String, u64> = stats
            .endpoints
            .iter()
            .filter(|(_, s)| s.requests > 0)
            .map(|(k, s)| (k.clone(), s.requests))
            .collect();
        json!({
            "t_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "webhooks_accepted": accepted.load(Ordering::Relaxed),
            "processor_lag": lag,
            "iterable_requests": per,
            "iterable_429": stats.totals.rate_limited,
        })
    };
    async fn processor_lag(url: &str) -> i64 {
        match get_ok(&format!("{url}/metrics")).await {
            Some(m) => prom_samples(&m, "tillstream_processor_lag")
                .iter()
                .map(|(_, v)| *v as i64)
                .sum(),
            None => -1,
        }
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let sender = {
        let (client, sem, accepted, retries, url) = (
            client.clone(),
            sem.clone(),
            accepted.clone(),
            retries.clone(),
            url.clone(),
        );
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for mut d in deliveries {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    break;
                };
                let (client, accepted, retries, url) = (
                    client.clone(),
                    accepted.clone(),
                    retries.clone(),
                    url.clone(),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    d.triggered_at = chrono::Utc::now();
                    let headers = d.headers(SECRET);
                    for attempt in 0..40u32 {
                        let mut req = client.post(&url).body(d.body.clone());
                        for (k, v) in &headers {
                            req = req.header(k, v);
                        }
                        if req.send().await.is_ok_and(|r| r.status().is_success()) {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    // Latency probe: once a second a signed `customers/update` for a dedicated customer sets
    // `first_name = probe-<k>`; a watcher reads that profile in iterable-sim every 20 ms. The
    // age of probe k is (first time Iterable shows probe-k or a later one) − (its send time):
    // webhook → ingest → Kafka → processor → Kafka → publisher → Iterable, under the load.
    let probe_done = Arc::new(AtomicBool::new(false));
    let probe_ages: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let prober = {
        let (client, url, done, ages) = (
            client.clone(),
            url.clone(),
            probe_done.clone(),
            probe_ages.clone(),
        );
        let (shop, sim) = (cfg.shop_domain.clone(), stack.sim_state().clone());
        tokio::spawn(async move {
            const PROBE_ID: u64 = 9_999_000_001;
            let mut sent: BTreeMap<u64, Instant> = BTreeMap::new();
            let mut k = 0u64;
            let mut next_probe = Instant::now();
            let filter = iterable_sim::Filter {
                user_id: Some(PROBE_ID.to_string()),
                ..Default::default()
            };
            loop {
                if Instant::now() >= next_probe && !done.load(Ordering::Relaxed) {
                    k += 1;
                    next_probe += Duration::from_secs(1);
                    let now = chrono::Utc::now();
                    let body = format!(
                        r#"{{"id":{PROBE_ID},"email":"probe@bench.example.com","first_name":"probe-{k}","last_name":"Bench","state":"enabled","created_at":"2026-01-01T00:00:00-05:00","updated_at":"{}"}}"#,
                        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
                    );
                    let req = client
                        .post(&url)
                        .header("X-Shopify-Topic", "customers/update")
                        .header(
                            "X-Shopify-Hmac-Sha256",
                            shopify_sim::sign(body.as_bytes(), SECRET.as_bytes()),
                        )
                        .header("X-Shopify-Shop-Domain", &shop)
                        .header("X-Shopify-API-Version", "2026-07")
                        .header(
                            "X-Shopify-Webhook-Id",
                            format!("bench-probe-{k}-{}", now.timestamp_millis()),
                        )
                        .header(
                            "X-Shopify-Triggered-At",
                            shopify_sim::format_triggered_at(now),
                        )
                        .header("Content-Type", "application/json")
                        .body(body);
                    let t = Instant::now();
                    if req.send().await.is_ok_and(|r| r.status().is_success()) {
                        sent.insert(k, t);
                    }
                }
                let seen = sim
                    .profiles(&filter)
                    .first()
                    .and_then(|p| {
                        p.data_fields
                            .get("firstName")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned)
                    })
                    .and_then(|n| n.strip_prefix("probe-").and_then(|x| x.parse::<u64>().ok()));
                if let Some(seen) = seen {
                    let arrived: Vec<u64> = sent.range(..=seen).map(|(j, _)| *j).collect();
                    for j in arrived {
                        if let Some(t) = sent.remove(&j) {
                            ages.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(t.elapsed().as_secs_f64());
                        }
                    }
                }
                if done.load(Ordering::Relaxed)
                    && (sent.is_empty() || Instant::now() > next_probe + Duration::from_secs(60))
                {
                    return sent.len();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut send_elapsed = None;
    let mut max_lag = 0i64;
    let mut caught_up_after_send = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lag = processor_lag(&proc_url).await;
        max_lag = max_lag.max(lag);
        samples.push(sample(&stack, lag));
        if send_elapsed.is_none() && sender.is_finished() {
            send_elapsed = Some(started.elapsed());
            eprintln!(
                "sent {} in {:?}",
                accepted.load(Ordering::Relaxed),
                started.elapsed()
            );
        }
        if let Some(se) = send_elapsed {
            if caught_up_after_send.is_none() && lag <= 2 * i64::from(a.partitions) && lag >= 0 {
                caught_up_after_send = Some(started.elapsed() - se);
            }
            if caught_up_after_send.is_some() && stack.drained() {
                break;
            }
            if started.elapsed() > se + a.drain_timeout {
                eprintln!("drain timeout: stopping the measurement");
                break;
            }
        }
        if samples.len().is_multiple_of(10) {
            eprintln!(
                "{}",
                samples.last().map(Value::to_string).unwrap_or_default()
            );
        }
    }
    probe_done.store(true, Ordering::Relaxed);
    let probes_lost = prober.await.unwrap_or(0);
    let mut ages = std::mem::take(
        &mut *probe_ages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    ages.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        ages.get(((ages.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
    };
    let total = started.elapsed();
    let send_s = send_elapsed.unwrap_or(total).as_secs_f64();
    let pub_metrics = get_ok(&format!("{pub_url}/metrics"))
        .await
        .unwrap_or_default();
    let buckets = runtime::testing::histogram_buckets(
        &pub_metrics,
        "tillstream_publisher_command_age_seconds",
        "",
    );
    let stats = stack.sim_state().stats();
    // Per-endpoint request rate: mean over the whole run and the busiest one-second window.
    let mut endpoints = serde_json::Map::new();
    for (name, s) in &stats.endpoints {
        if s.requests == 0 {
            continue;
        }
        let series: Vec<u64> = samples
            .iter()
            .map(|v| v["iterable_requests"][name].as_u64().unwrap_or(0))
            .collect();
        let peak = series
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .max()
            .unwrap_or(0);
        let limit = LIMITS.iter().find(|l| l.0 == name);
        endpoints.insert(
            name.clone(),
            json!({
                "requests": s.requests,
                "admitted": s.admitted,
                "rate_limited_429": s.rate_limited,
                "records_succeeded": s.records_succeeded,
                "mean_req_per_s": (s.requests as f64 / total.as_secs_f64() * 100.0).round() / 100.0,
                "peak_req_per_s": peak,
                "published_limit_per_s": limit.and_then(|l| l.1),
                "publisher_configured_per_s": limit.map(|l| l.2),
            }),
        );
    }
    let report = json!({
        "date": date,
        "machine": format!("{} cores; {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), std::env::consts::ARCH),
        "services_binaries": tests::bin_path("processor").display().to_string(),
        "scenario": a.scenario,
        "customers": cfg.customers,
        "deliveries": n,
        "partitions": a.partitions,
        "sender_concurrency": a.concurrency,
        "ingest": {
            "accepted": accepted.load(Ordering::Relaxed),
            "retried_attempts": retries.load(Ordering::Relaxed),
            "send_seconds": (send_s * 10.0).round() / 10.0,
            "rate_per_s": (accepted.load(Ordering::Relaxed) as f64 / send_s).round(),
        },
        "processor": {
            "max_lag": max_lag,
            "caught_up_seconds_after_send": caught_up_after_send.map(|d| d.as_secs_f64()),
            "commands": stack.total(&stack.topics.commands, stack.topics.partitions),
        },
        "end_to_end_age_seconds": {
            "probes": ages.len(),
            "probes_not_seen": probes_lost,
            "p50": pct(0.5),
            "p99": pct(0.99),
            "max": ages.last(),
        },
        "publisher_command_age_histogram_seconds": {
            "note": "now - the command's business time; the scenario's payload times are in 2026, so this is history age, not latency",
            "delivered": buckets.last().map(|b| b.1),
            "p50": runtime::testing::histogram_quantile(&buckets, 0.5),
            "p99": runtime::testing::histogram_quantile(&buckets, 0.99),
        },
        "iterable": { "endpoints": endpoints, "total_requests": stats.totals.requests, "total_429": stats.totals.rate_limited },
        "drained": stack.drained(),
        "total_seconds": total.as_secs_f64(),
        "samples": samples,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(out) = &a.out {
        std::fs::write(out, &text)?;
    }
    stack.shutdown().await;
    Ok(())
}
