//! Full-stack benchmark: a Black Friday scenario through ingest → Kafka → processor → publisher → iterable-sim (published limits), printed as JSON.
//!
//! ```sh
//! CARGO_TARGET_DIR=/root/.cache/tillstream/target cargo build --release -p ingest -p processor -p publisher -p tests
//! # (a) below every limit, (b) Black Friday with commerce/updateCart saturated:
//! /root/.cache/tillstream/target/release/stack-bench --customers 1500 --limit 60000 --rate 600 --out a.json
//! /root/.cache/tillstream/target/release/stack-bench --customers 14300 --rate 2400 --out b.json
//! ```
//!
//! The services are the binaries next to this one (`target/<profile>/`). The scenario's
//! deliveries are sent with `X-Shopify-Triggered-At` re-stamped to the moment each one is sent
//! (at `--rate` per second, or as fast as ingest takes them). Business times inside the payloads
//! stay the scenario's, so timers (due from those times) fire as soon as they are armed: the mix
//! of journey events differs from a real-time run; correctness is the end-to-end suite's job.
//! End-to-end age per delivery lane comes from the probes (`tests/src/probes.rs`); the publisher's lane
//! backlog and every service's memory are sampled once a second.

use tests::probes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{
    HISTORICAL_RULES, SECRET, Stack, StackOptions, get_ok, lane_pending, lock, prom_samples,
};

#[derive(Debug)]
struct Args {
    scenario: String,
    customers: Option<u32>,
    limit: Option<usize>,
    concurrency: usize,
    partitions: i32,
    drain_timeout: Duration,
    /// Deliveries per second offered (None: as fast as ingest answers).
    rate: Option<f64>,
    /// iterable-sim limits overridden (req/s); the publisher's is set to 0.9 of each.
    sim_limits: Vec<(String, f64)>,
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
        rate: None,
        sim_limits: Vec::new(),
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
            "--rate" => a.rate = Some(val()?.parse::<f64>()?).filter(|r| *r > 0.0),
            "--sim-limit" => {
                let v = val()?;
                let (endpoint, per_s) = v.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--sim-limit wants ENDPOINT=REQ_PER_S, got {v}")
                })?;
                a.sim_limits.push((endpoint.to_owned(), per_s.parse()?));
            }
            "--out" => a.out = Some(val()?),
            _ => anyhow::bail!(
                "usage: stack-bench [--scenario FILE] [--customers N] [--limit N] [--concurrency N] [--partitions N] \
                 [--rate PER_S] [--sim-limit ENDPOINT=PER_S]... [--drain-timeout-secs S] [--out FILE]"
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
    for (endpoint, per_s) in &a.sim_limits {
        opts.sim.rate_limits.endpoints.insert(
            endpoint.clone(),
            iterable_sim::EndpointLimit {
                per_second: Some(*per_s),
                burst: None,
                per_day: None,
            },
        );
        opts.publisher_env.push((
            format!("TILLSTREAM__LIMITS__{}__PER_SECOND", limit_key(endpoint)),
            format!("{}", per_s * 0.9),
        ));
    }
    let stack = Stack::start(opts).await?;
    eprintln!("stack up; logs in {}", stack.dir.display());
    let url = stack.webhook_url();
    let (proc_url, pub_url) = (lock(&stack.processor).url(), lock(&stack.publisher).url());
    let pids: Vec<(&str, Option<u32>)> = vec![
        ("ingest", lock(&stack.ingest).pid()),
        ("processor", lock(&stack.processor).pid()),
        ("publisher", lock(&stack.publisher).pid()),
    ];

    // Sampler: once a second, processor lag, publisher lane backlog, Iterable requests per
    // endpoint, accepted webhooks and each service's resident memory.
    let accepted = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut samples: Vec<Value> = Vec::new();
    let sample = |stack: &Stack, lag: i64, pending: &BTreeMap<String, i64>| -> Value {
        let stats = stack.sim_state().stats();
        let per: BTreeMap<String, u64> = stats
            .endpoints
            .iter()
            .filter(|(_, s)| s.requests > 0)
            .map(|(k, s)| (k.clone(), s.requests))
            .collect();
        let rss: BTreeMap<&str, u64> = pids
            .iter()
            .map(|(name, pid)| (*name, pid.map_or(0, runtime::testing::rss_kib) / 1024))
            .collect();
        json!({
            "t_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "webhooks_accepted": accepted.load(Ordering::Relaxed),
            "processor_lag": lag,
            "publisher_lane_pending": pending,
            "rss_mib": rss,
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
        let (client, sem, accepted, retries, url, rate) = (
            client.clone(),
            sem.clone(),
            accepted.clone(),
            retries.clone(),
            url.clone(),
            a.rate,
        );
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let paced_from = tokio::time::Instant::now();
            for (i, mut d) in deliveries.into_iter().enumerate() {
                if let Some(r) = rate {
                    tokio::time::sleep_until(paced_from + Duration::from_secs_f64(i as f64 / r))
                        .await;
                }
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
                    for attempt in 0..40u32 {
                        if post(&client, &url, &d).await {
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
    // Latency probes (probes.rs): once a second one webhook per lane; iterable-sim is read
    // every 100 ms until each shows up.
    let probe_done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (client, url, done) = (client.clone(), url.clone(), probe_done.clone());
        let (shop, sim) = (cfg.shop_domain.clone(), stack.sim_state().clone());
        tokio::spawn(async move {
            let mut probes = probes::Probes::new(&shop);
            let mut next_round = Instant::now();
            let mut stopped_at = None;
            loop {
                if Instant::now() >= next_round && !done.load(Ordering::Relaxed) {
                    next_round += Duration::from_secs(1);
                    let (k, round) = probes.round();
                    for (lane, d) in round {
                        if post(&client, &url, &d).await {
                            probes.sent(lane, k, Instant::now());
                        }
                    }
                }
                probes.observe(&sim);
                if done.load(Ordering::Relaxed) {
                    let since = *stopped_at.get_or_insert_with(Instant::now);
                    if probes.outstanding() == 0 || since.elapsed() > Duration::from_secs(60) {
                        return probes.report();
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut send_elapsed = None;
    let mut max_lag = 0i64;
    let mut caught_up_after_send = None;
    let mut drained_after = None;
    let mut max_pending: BTreeMap<String, i64> = BTreeMap::new();
    let mut pending_at_send_end = BTreeMap::new();
    let mut max_rss_mib: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lag = processor_lag(&proc_url).await;
        max_lag = max_lag.max(lag);
        let pending = lane_pending(&pub_url).await;
        for (lane, v) in &pending {
            let m = max_pending.entry(lane.clone()).or_default();
            *m = (*m).max(*v);
        }
        let s = sample(&stack, lag, &pending);
        if let Some(rss) = s["rss_mib"].as_object() {
            for (name, v) in rss {
                let m = max_rss_mib.entry(name.clone()).or_default();
                *m = (*m).max(v.as_u64().unwrap_or(0));
            }
        }
        samples.push(s);
        if send_elapsed.is_none() && sender.is_finished() {
            send_elapsed = Some(started.elapsed());
            pending_at_send_end = pending.clone();
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
                drained_after = Some(started.elapsed());
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
    let mut lanes = prober.await.unwrap_or(Value::Null);
    if let Some(lanes) = lanes.as_object_mut() {
        for (lane, v) in lanes.iter_mut() {
            v["publisher_max_pending"] = json!(max_pending.get(lane));
            v["publisher_pending_when_sending_ended"] = json!(pending_at_send_end.get(lane));
        }
    }
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
        // A --sim-limit override sets both the simulator's limit and the publisher's (× 0.9).
        let overridden = a
            .sim_limits
            .iter()
            .find(|(e, _)| e == name)
            .map(|(_, r)| *r);
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
                "sim_limit_per_s": overridden.or_else(|| limit.and_then(|l| l.1)),
                "publisher_configured_per_s": overridden.map(|r| r * 0.9).or_else(|| limit.map(|l| l.2)),
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
        "offered_rate_per_s": a.rate,
        "sim_limits": a.sim_limits.iter().map(|(e, r)| json!({"endpoint": e, "per_second": r})).collect::<Vec<_>>(),
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
        "end_to_end_age_seconds_per_lane": lanes,
        "drain": {
            "drained": drained_after.is_some(),
            "seconds_from_first_webhook": drained_after.map(|d| d.as_secs_f64()),
            "seconds_after_last_webhook": drained_after.zip(send_elapsed).map(|(d, s)| (d - s).as_secs_f64()),
        },
        "max_rss_mib": max_rss_mib,
        "publisher_command_age_histogram_seconds": {
            "note": "now - the command's business time; the scenario's payload times are in 2026, so this is history age, not latency",
            "delivered": buckets.last().map(|b| b.1),
            "p50": runtime::testing::histogram_quantile(&buckets, 0.5),
            "p99": runtime::testing::histogram_quantile(&buckets, 0.99),
        },
        "iterable": { "endpoints": endpoints, "total_requests": stats.totals.requests, "total_429": stats.totals.rate_limited },
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

/// POSTs one signed delivery; true when ingest answered 2xx (Kafka has the record).
async fn post(client: &reqwest::Client, url: &str, d: &shopify_sim::Delivery) -> bool {
    let mut req = client.post(url).body(d.body.clone());
    for (k, v) in d.headers(SECRET) {
        req = req.header(k, v);
    }
    req.send().await.is_ok_and(|r| r.status().is_success())
}

/// The publisher's `[limits.*]` key of an endpoint path: `commerce/updateCart` →
/// `COMMERCE_UPDATE_CART` (its environment form).
fn limit_key(endpoint: &str) -> String {
    let mut out = String::new();
    for c in endpoint.chars() {
        match c {
            '/' => out.push('_'),
            c if c.is_ascii_uppercase() => {
                out.push('_');
                out.push(c);
            }
            c => out.push(c.to_ascii_uppercase()),
        }
    }
    out
}
