//! Soak: the whole stack on a three-broker cluster for a given time at a steady rate, with kill -9 of a random service or broker at random intervals, sampled into JSON for `scripts/soak-plot`.
//!
//! ```sh
//! scripts/soak --duration-secs 3600 --rate 40 --out /tmp/soak   # builds, runs, plots
//! ```
//!
//! The load is a shopify-sim scenario (the CI scenario's mix, scaled in customers) of about
//! `rate × duration` deliveries, sent one at a time in timeline order at a steady pace so the
//! whole timeline is sent within the duration; a delivery ingest refuses (503 while it cannot
//! reach a quorum, connection refused while it restarts) is retried, as Shopify would. At
//! uniformly random intervals one of ingest, processor, publisher (restarted at once, as an
//! orchestrator would) or broker 1-3 (restarted after `--broker-down-secs`, never two down) is
//! killed with SIGKILL. Every `--sample-secs`: each service's and broker's RSS, processor lag,
//! the publisher's lane backlog, end-to-end age per lane (probes, `tests/src/probes.rs`),
//! Iterable requests per endpoint. After the duration the last timers are let come due and the
//! stack drains; iterable-sim is then compared with the scenario's `expected.json`
//! ([`tests::check_outcome`]), the same check as the end-to-end suites. Exit status 1 when
//! anything was lost, a trigger duplicated or sent that must not be, or the stack did not
//! drain; other mismatches (a wrong value such as a tier) are reported in `soak.json`.

mod args;
mod report;
mod scenario;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use runtime::KafkaConfig;
use serde_json::{Value, json};
use tests::cluster::Cluster;
use tests::prober::post;
use tests::probes::{Lane, PROBE_LAG_DELIVERIES, Probes};
use tests::{
    Stack, StackOptions, TIMER_GRACE_MS, check_outcome, get_ok, lane_pending, lock, prom_samples,
    rfc3339_ms,
};

use args::{Clock, args};
use report::{classify, memory_growth, round1, round3};
use scenario::sized_scenario;

/// What a fault targets.
#[derive(Debug, Clone, Copy)]
enum Target {
    Ingest,
    Processor,
    Publisher,
    Broker(u8),
}

impl Target {
    fn name(self) -> String {
        match self {
            Target::Ingest => "ingest".into(),
            Target::Processor => "processor".into(),
            Target::Publisher => "publisher".into(),
            Target::Broker(n) => format!("broker-{n}"),
        }
    }
}

/// Counters the sender and prober share with the sampler.
#[derive(Default)]
struct Progress {
    /// Deliveries handed to the sender so far (index of the next one).
    next: AtomicUsize,
    accepted: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    probes_sent: AtomicU64,
    /// Statuses of refused attempts (`503`, `connect_error`, ...).
    refusals: Mutex<BTreeMap<String, u64>>,
}

/// A delivery is given up after this long of refusals (counted as failed, never silently).
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    std::fs::create_dir_all(&a.out)?;
    let date = chrono::Utc::now().to_rfc3339();
    let target = (a.rate * a.duration.as_secs_f64()).round().max(1.0) as usize;
    let gen_started = Instant::now();
    // Timers due within the run after the timeline's end would fire (inputs clock): keep the
    // run, its drain and a margin free of them.
    let quiet_ms = i64::try_from((a.duration + a.drain_timeout).as_millis())? + 1_800_000;
    let (cfg, mut sc) = sized_scenario(a.seed, target, a.clock, quiet_ms)?;
    let n = sc.deliveries.len();
    // The scenario is sent whole within the duration: the offered rate is what that takes.
    let rate = n as f64 / a.duration.as_secs_f64();
    eprintln!(
        "soak: seed {}; {n} deliveries for {} customers over {} days (generated in {:?}); {rate:.1}/s for {:?}",
        a.seed,
        cfg.customers,
        cfg.days,
        gen_started.elapsed(),
        a.duration
    );

    let cluster = match &a.bootstrap {
        Some(_) => None,
        None => {
            eprintln!("soak: starting a private three-broker cluster");
            Some(Arc::new(
                tokio::task::spawn_blocking(Cluster::start).await??,
            ))
        }
    };
    let bootstrap = match (&a.bootstrap, &cluster) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.bootstrap(),
        (None, None) => anyhow::bail!("no cluster"),
    };
    let kafka = KafkaConfig::new(bootstrap.clone());
    let mut opts = StackOptions::historical(kafka.clone());
    opts.partitions = a.partitions;
    opts.log_level = a.log_level.clone();
    if a.clock == Clock::Inputs {
        // Production's clock and caught-up rule, with the alignment suite's short settle times
        // so the held timers fire seconds (not minutes) after the sending ends.
        opts = opts.timer_clock(a.clock.name(), &[]);
    }
    // The processor's own group session and transaction timeouts, which outlast a broker
    // failover (the test stack's short ones lose the assignment at every broker kill).
    opts.short_group_timeouts = false;
    // As compose runs them: a restarted processor or publisher takes its partitions back at
    // once instead of waiting for the killed member's session to expire.
    opts.processor_env.push((
        "TILLSTREAM__ENGINE__STATIC_MEMBERSHIP".into(),
        "true".into(),
    ));
    opts.publisher_env.push((
        "TILLSTREAM__KAFKA__GROUP_INSTANCE_ID".into(),
        "soak-publisher".into(),
    ));
    // Recovery after a broker or publisher fault within seconds, not the default backoff cap.
    opts.publisher_env
        .push(("TILLSTREAM__RETRY__MAX_BACKOFF".into(), "3s".into()));
    let stack = Arc::new(Stack::start(opts).await?);
    let rf = replication(&kafka, &stack.topics.raw);
    eprintln!(
        "soak: stack up on {bootstrap} (raw topic RF {rf:?}); logs in {}",
        stack.dir.display()
    );
    let started = Instant::now();
    let url = stack.webhook_url();
    let progress = Arc::new(Progress::default());
    let sending_done = Arc::new(AtomicBool::new(false));
    let times: Arc<Vec<i64>> = Arc::new(
        sc.deliveries
            .iter()
            .map(|d| d.triggered_at.timestamp_millis())
            .collect(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    // Sender: one delivery at a time in the scenario's order (the log then has the timeline's
    // order, as in the end-to-end suites), paced to a fixed schedule; after a stall it sends
    // as fast as ingest answers until it is back on schedule.
    let sender = {
        let (client, url, progress, done) = (
            client.clone(),
            url.clone(),
            progress.clone(),
            sending_done.clone(),
        );
        let deliveries = std::mem::take(&mut sc.deliveries);
        tokio::spawn(async move {
            let from = tokio::time::Instant::now();
            for (i, d) in deliveries.iter().enumerate() {
                tokio::time::sleep_until(from + Duration::from_secs_f64(i as f64 / rate)).await;
                progress.next.store(i + 1, Ordering::Relaxed);
                let first = Instant::now();
                let mut attempt = 0u32;
                loop {
                    match post(&client, &url, d).await {
                        Ok(()) => {
                            progress.accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(status) => {
                            progress.retried.fetch_add(1, Ordering::Relaxed);
                            *lock_map(&progress.refusals).entry(status).or_default() += 1;
                        }
                    }
                    if first.elapsed() > GIVE_UP_AFTER {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "soak: gave up on delivery {} after {GIVE_UP_AFTER:?}",
                            d.webhook_id
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                    attempt += 1;
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // Probes: once a second while sending, one webhook per lane, stamped with the scenario
    // time the sender reached (minus a margin), read back from iterable-sim every 200 ms.
    let probes = Arc::new(Mutex::new(Probes::new(&cfg.shop_domain)));
    let probing_done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (client, url, progress, sending, done, probes, times) = (
            client.clone(),
            url.clone(),
            progress.clone(),
            sending_done.clone(),
            probing_done.clone(),
            probes.clone(),
            times.clone(),
        );
        let stack = stack.clone();
        let with_probes = a.probes;
        tokio::spawn(async move {
            let mut next_round = Instant::now();
            let mut last_ms = i64::MIN;
            while !done.load(Ordering::Relaxed) {
                if with_probes && Instant::now() >= next_round && !sending.load(Ordering::Relaxed) {
                    next_round += Duration::from_secs(1);
                    let i = progress
                        .next
                        .load(Ordering::Relaxed)
                        .saturating_sub(PROBE_LAG_DELIVERIES);
                    // Strictly increasing: profiles and carts are last-write-wins by time.
                    let ms = times.get(i).copied().unwrap_or(0).max(last_ms + 1);
                    last_ms = ms;
                    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                    let (k, round) = lock_probes(&probes).round_at(at);
                    for (lane, d) in round {
                        if post(&client, &url, &d).await.is_ok() {
                            progress.probes_sent.fetch_add(1, Ordering::Relaxed);
                            lock_probes(&probes).sent(lane, k, Instant::now());
                        }
                    }
                }
                lock_probes(&probes).observe(stack.sim_state());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Faults: at uniformly random intervals while sending, kill -9 of one random target.
    let faults: Arc<Mutex<Vec<Value>>> = Arc::default();
    let fault_task = {
        let (stack, cluster, sending, faults) = (
            stack.clone(),
            cluster.clone(),
            sending_done.clone(),
            faults.clone(),
        );
        let (min, max, down, a_targets) = (a.kill_min, a.kill_max, a.broker_down, a.targets);
        let mut rng = StdRng::seed_from_u64(a.seed);
        tokio::spawn(async move {
            if max == 0 {
                return;
            }
            let mut targets = Vec::new();
            let t = a_targets;
            for (on, target) in [
                (t.ingest, Target::Ingest),
                (t.processor, Target::Processor),
                (t.publisher, Target::Publisher),
            ] {
                if on {
                    targets.push(target);
                }
            }
            if t.brokers && cluster.is_some() {
                targets.extend([Target::Broker(1), Target::Broker(2), Target::Broker(3)]);
            }
            if targets.is_empty() {
                return;
            }
            loop {
                let wait = Duration::from_secs_f64(rng.random_range(min as f64..=max as f64));
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if sending.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let target = targets[rng.random_range(0..targets.len())];
                let t_s = round1(started.elapsed().as_secs_f64());
                let record = match target {
                    Target::Broker(node) => {
                        let Some(c) = cluster.clone() else { continue };
                        let pid = c.pid(node);
                        let c2 = c.clone();
                        let killed = tokio::task::spawn_blocking(move || c2.kill(node)).await;
                        eprintln!(
                            "soak: {t_s:>7.1}s kill -9 broker {node} (pid {pid:?}); back in {down:?}"
                        );
                        tokio::time::sleep(down).await;
                        let back = Instant::now();
                        let c2 = c.clone();
                        let restarted = tokio::task::spawn_blocking(move || c2.restart(node)).await;
                        let ok = matches!(killed, Ok(Ok(()))) && matches!(restarted, Ok(Ok(())));
                        eprintln!(
                            "soak: broker {node} restarted ({}) in {:?}",
                            if ok { "ok" } else { "FAILED" },
                            back.elapsed()
                        );
                        json!({"t_s": t_s, "target": target.name(), "pid": pid,
                            "down_s": round1(down.as_secs_f64()),
                            "restart_s": round1(back.elapsed().as_secs_f64()),
                            "new_pid": c.pid(node), "ok": ok})
                    }
                    svc => {
                        let shared = match svc {
                            Target::Ingest => &stack.ingest,
                            Target::Processor => &stack.processor,
                            _ => &stack.publisher,
                        };
                        let (old, new) = {
                            let mut s = lock(shared);
                            let old = s.pid();
                            s.kill9();
                            s.start();
                            (old, s.pid())
                        };
                        eprintln!(
                            "soak: {t_s:>7.1}s kill -9 {} (pid {old:?}), restarted as {new:?}",
                            svc.name()
                        );
                        json!({"t_s": t_s, "target": svc.name(), "pid": old, "new_pid": new, "ok": true})
                    }
                };
                lock_values(&faults).push(record);
            }
        })
    };

    // Sampler: every --sample-secs until the stack has drained.
    let sampler_done = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sampler = {
        let (stack, cluster, progress, probes, done, samples) = (
            stack.clone(),
            cluster.clone(),
            progress.clone(),
            probes.clone(),
            sampler_done.clone(),
            samples.clone(),
        );
        let every = a.sample;
        tokio::spawn(async move {
            let mut seen_ages = [0usize; 4];
            let mut prev: Option<(f64, BTreeMap<String, u64>)> = None;
            let mut next = tokio::time::Instant::now() + every;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next).await;
                next += every;
                let t = started.elapsed().as_secs_f64();
                let mut rss = BTreeMap::new();
                let mut pids = BTreeMap::new();
                for (name, s) in [
                    ("ingest", &stack.ingest),
                    ("processor", &stack.processor),
                    ("publisher", &stack.publisher),
                ] {
                    let pid = lock(s).pid();
                    rss.insert(name.to_owned(), pid.and_then(mib));
                    pids.insert(name.to_owned(), pid);
                }
                if let Some(c) = &cluster {
                    for node in 1..=3u8 {
                        let pid = c.pid(node);
                        rss.insert(format!("broker-{node}"), pid.and_then(mib));
                        pids.insert(format!("broker-{node}"), pid);
                    }
                }
                let (proc_url, pub_url) =
                    (lock(&stack.processor).url(), lock(&stack.publisher).url());
                let lag = processor_lag(&proc_url).await;
                let pending = lane_pending(&pub_url).await;
                let mut age = serde_json::Map::new();
                {
                    let p = lock_probes(&probes);
                    for lane in Lane::ALL {
                        let all = p.ages(lane);
                        let new = &all[seen_ages[lane as usize].min(all.len())..];
                        seen_ages[lane as usize] = all.len();
                        let max = new
                            .iter()
                            .copied()
                            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
                        let mean =
                            (!new.is_empty()).then(|| new.iter().sum::<f64>() / new.len() as f64);
                        age.insert(
                            lane.name().into(),
                            json!({"n": new.len(), "max": max.map(round3), "mean": mean.map(round3),
                                "oldest_outstanding": p.oldest_outstanding(lane).map(round3)}),
                        );
                    }
                }
                let stats = stack.sim_state().stats();
                let requests: BTreeMap<String, u64> = stats
                    .endpoints
                    .iter()
                    .filter(|(_, s)| s.requests > 0)
                    .map(|(k, s)| (k.clone(), s.requests))
                    .collect();
                let rates: BTreeMap<&String, f64> = match &prev {
                    Some((pt, pr)) if t > *pt => requests
                        .iter()
                        .map(|(k, v)| {
                            (
                                k,
                                round1(
                                    v.saturating_sub(pr.get(k).copied().unwrap_or(0)) as f64
                                        / (t - pt),
                                ),
                            )
                        })
                        .collect(),
                    _ => BTreeMap::new(),
                };
                let s = json!({
                    "t_s": round1(t),
                    "rss_mib": rss,
                    "pids": pids,
                    "processor_lag": lag,
                    "publisher_lane_pending": pending,
                    "age_s": age,
                    "iterable_requests": requests,
                    "iterable_req_per_s": rates,
                    "iterable_429": stats.totals.rate_limited,
                    "webhooks_sent": progress.next.load(Ordering::Relaxed),
                    "webhooks_accepted": progress.accepted.load(Ordering::Relaxed),
                    "webhooks_retried": progress.retried.load(Ordering::Relaxed),
                });
                prev = Some((t, requests.clone()));
                let mut all = lock_values(&samples);
                if all
                    .len()
                    .is_multiple_of((60.0 / every.as_secs_f64()).ceil().max(1.0) as usize)
                {
                    eprintln!(
                        "soak: {:>7.1}s accepted {} retried {} lag {:?} rss {:?}",
                        t,
                        progress.accepted.load(Ordering::Relaxed),
                        progress.retried.load(Ordering::Relaxed),
                        lag,
                        s["rss_mib"]
                    );
                }
                all.push(s);
            }
        })
    };

    // Send the whole timeline (or stop on Ctrl-C), then let the last timers come due.
    let interrupted = tokio::select! {
        r = sender => { r?; false }
        _ = tokio::signal::ctrl_c() => { sending_done.store(true, Ordering::Relaxed); true }
    };
    let send_s = started.elapsed().as_secs_f64();
    eprintln!(
        "soak: sending ended at {send_s:.1}s: {} accepted, {} retried attempts, {} failed",
        progress.accepted.load(Ordering::Relaxed),
        progress.retried.load(Ordering::Relaxed),
        progress.failed.load(Ordering::Relaxed)
    );
    // A broker fault in progress finishes (its restart) before the drain.
    let _ = fault_task.await;
    let mut drained = false;
    let mut drain_error = None;
    if !interrupted {
        // As tests::drain_past_timeline_end, with the soak's timeout and no panic: clock
        // ticks past the timeline's end (plus the timers' grace), then wait until drained.
        let end = rfc3339_ms(&sc.expected.timeline_end).unwrap_or(i64::MAX - TIMER_GRACE_MS - 1000);
        let clock = a.clock;
        let drain = async {
            match clock {
                Clock::StreamTime => {
                    stack
                        .produce_clock_ticks(end + TIMER_GRACE_MS + 1000, &sc.expected.shop_domain)
                        .await?;
                }
                // Heartbeats move this clock; the held timers fire once the late arrivals
                // have settled.
                Clock::Inputs => stack.wait_no_timer_held(a.drain_timeout).await?,
            }
            stack.wait_drained(a.drain_timeout).await
        };
        tokio::select! {
            r = drain => match r {
                Ok(()) => drained = true,
                Err(e) => drain_error = Some(e.to_string()),
            },
            _ = tokio::signal::ctrl_c() => drain_error = Some("interrupted".into()),
        }
        // The last probes show up within seconds of a drained stack.
        let deadline = Instant::now() + Duration::from_secs(60);
        while lock_probes(&probes).outstanding() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let drained_s = started.elapsed().as_secs_f64();
    eprintln!(
        "soak: drained {drained} at {drained_s:.1}s {}",
        drain_error.clone().unwrap_or_default()
    );
    probing_done.store(true, Ordering::Relaxed);
    sampler_done.store(true, Ordering::Relaxed);
    let _ = prober.await;
    let _ = sampler.await;

    // The outcome: iterable-sim against expected.json, as the end-to-end suites check it.
    let outcome = check_outcome(&sc.expected, stack.sim_state());
    eprintln!("{}", outcome.summary(40));
    let mut by_class: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for m in &outcome.mismatches {
        by_class.entry(classify(m)).or_default().push(m);
    }
    let count = |c: &str| by_class.get(c).map_or(0, Vec::len);
    let probe_report = lock_probes(&probes).report();
    let probes_not_seen: u64 = Lane::ALL
        .iter()
        .filter_map(|l| probe_report[l.name()]["probes_not_seen"].as_u64())
        .sum();
    let lost = count("lost") as u64 + probes_not_seen + progress.failed.load(Ordering::Relaxed);
    let duplicated = count("duplicated") as u64;
    let unwanted = count("unwanted") as u64;
    let wrong = count("wrong") as u64;
    let sim = stack.sim_state();
    let events = sim.events(&iterable_sim::Filter::default());
    let purchases = sim.purchases(&iterable_sim::Filter::default());
    let redelivered_events = events.iter().filter(|e| e.update_count > 1).count();
    let redelivered_purchases = purchases.iter().filter(|p| p.update_count > 1).count();

    let samples = std::mem::take(&mut *lock_values(&samples));
    let faults = std::mem::take(&mut *lock_values(&faults));
    let run_s = send_s.max(1.0);
    let memory = memory_growth(&samples, run_s);
    let worst_lag = samples
        .iter()
        .filter_map(|s| s["processor_lag"].as_i64())
        .max();
    let mut worst_age = serde_json::Map::new();
    for lane in Lane::ALL {
        let worst = samples
            .iter()
            .flat_map(|s| {
                let a = &s["age_s"][lane.name()];
                [a["max"].as_f64(), a["oldest_outstanding"].as_f64()]
            })
            .flatten()
            .fold(0.0f64, f64::max);
        let mut v = probe_report[lane.name()].clone();
        v["worst_s"] = json!(round3(worst));
        worst_age.insert(lane.name().into(), v);
    }
    let stats = sim.stats();
    let mut endpoints = serde_json::Map::new();
    for (name, s) in stats.endpoints.iter().filter(|(_, s)| s.requests > 0) {
        let peak = samples
            .iter()
            .filter_map(|v| v["iterable_req_per_s"][name].as_f64())
            .fold(0.0f64, f64::max);
        endpoints.insert(
            name.clone(),
            json!({"requests": s.requests, "rate_limited_429": s.rate_limited,
                "mean_req_per_s": round1(s.requests as f64 / drained_s.max(1.0)),
                "peak_req_per_s_over_a_sample": peak}),
        );
    }
    // A wrong value (a tier) is reported and printed; the run fails on what a customer would
    // get wrong from Iterable: loss, a duplicated or unwanted trigger, or a stall.
    let ok = !interrupted && drained && lost == 0 && duplicated == 0 && unwanted == 0;
    if wrong > 0 {
        eprintln!(
            "soak: {wrong} other mismatches with expected.json (see \"mismatches\" in soak.json)"
        );
    }
    let report = json!({
        "date": date,
        "machine": format!("{} cores; {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), runtime::testing::cpu_model()),
        "ok": ok,
        "interrupted": interrupted,
        "args": {
            "duration_secs": a.duration.as_secs(), "rate": a.rate, "kill_min_secs": a.kill_min,
            "kill_max_secs": a.kill_max, "broker_down_secs": a.broker_down.as_secs(),
            "sample_secs": a.sample.as_secs_f64(), "seed": a.seed, "partitions": a.partitions,
            "clock": a.clock.name(),
            "targets": format!("{:?}", a.targets),
            "probes": a.probes,
            "bootstrap": a.bootstrap,
        },
        "cluster": {"bootstrap": bootstrap, "private": cluster.is_some(), "raw_replication_factor": rf},
        "scenario": {
            "customers": cfg.customers, "days": cfg.days, "seed": cfg.seed,
            "deliveries": n, "unique_webhook_ids": sc.expected.deliveries.unique_webhook_ids,
            "people": sc.expected.customers.len(), "timeline_end": sc.expected.timeline_end,
        },
        "offered_rate_per_s": round3(rate),
        "send_seconds": round1(send_s),
        "total_seconds": round1(drained_s),
        "events_sent": progress.next.load(Ordering::Relaxed),
        "webhooks": {
            "accepted": progress.accepted.load(Ordering::Relaxed),
            "retried_attempts": progress.retried.load(Ordering::Relaxed),
            "refusals": *lock_map(&progress.refusals),
            "failed_for_good": progress.failed.load(Ordering::Relaxed),
            "probes_accepted": progress.probes_sent.load(Ordering::Relaxed),
        },
        "faults": faults,
        "unexpected_exits": stack.unexpected_exits(),
        "drain": {"drained": drained, "error": drain_error, "seconds_after_send": round1(drained_s - send_s)},
        "lost": lost,
        "lost_detail": {
            "outcome_mismatches": count("lost"), "probes_not_seen": probes_not_seen,
            "webhooks_failed_for_good": progress.failed.load(Ordering::Relaxed),
        },
        "duplicated_triggers": duplicated,
        "unwanted_triggers": unwanted,
        "other_mismatches": wrong,
        "mismatches_compared": outcome.compared,
        "mismatches": outcome.mismatches.iter().take(200).collect::<Vec<_>>(),
        "dead_letters": {
            "processor": stack.side_topic_records(&stack.topics.processor_dlq),
            "publisher": stack.side_topic_records(&stack.topics.publisher_dlq),
        },
        "redelivered_same_id": {
            "note": "the same event or purchase id written again (at-least-once after a kill); Iterable keeps one",
            "events": redelivered_events, "purchases": redelivered_purchases,
        },
        "memory_growth_mib_per_hour": memory,
        "worst_processor_lag": worst_lag,
        "end_to_end_age_s": worst_age,
        "iterable": {"endpoints": endpoints, "total_requests": stats.totals.requests, "total_429": stats.totals.rate_limited},
        "samples": samples,
    });
    let path = a.out.join("soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    let mut summary = report.clone();
    if let Some(o) = summary.as_object_mut() {
        o.remove("samples");
        o.remove("mismatches");
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!("soak: wrote {}", path.display());

    if let Ok(stack) = Arc::try_unwrap(stack) {
        stack.shutdown().await;
    }
    drop(cluster);
    anyhow::ensure!(
        ok,
        "soak failed: lost {lost}, duplicated triggers {duplicated}, unwanted triggers {unwanted}, drained {drained}, interrupted {interrupted} (other mismatches {wrong})"
    );
    Ok(())
}

/// The replication factor of `topic`'s first partition (None when metadata is unavailable).
fn replication(kafka: &KafkaConfig, topic: &str) -> Option<usize> {
    let c: BaseConsumer = kafka.client("soak-metadata").create().ok()?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .ok()?;
    md.topics()
        .first()?
        .partitions()
        .first()
        .map(|p| p.replicas().len())
}

/// The processor's lag (sum over partitions); None while it does not answer.
async fn processor_lag(url: &str) -> Option<i64> {
    let m = get_ok(&format!("{url}/metrics")).await?;
    Some(
        prom_samples(&m, "tillstream_processor_lag")
            .iter()
            .map(|(_, v)| *v as i64)
            .sum(),
    )
}

/// Resident memory of `pid` in MiB; None when it cannot be read (a process just killed).
fn mib(pid: u32) -> Option<u64> {
    Some(runtime::testing::rss_kib(pid) / 1024).filter(|v| *v > 0)
}

// Poisoned locks stay usable: a panicking task must not take the report down with it.
fn lock_probes(p: &Mutex<Probes>) -> std::sync::MutexGuard<'_, Probes> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_values(p: &Mutex<Vec<Value>>) -> std::sync::MutexGuard<'_, Vec<Value>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_map(p: &Mutex<BTreeMap<String, u64>>) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
