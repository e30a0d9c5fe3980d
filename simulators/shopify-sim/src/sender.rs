//! HTTP sender with Shopify's delivery semantics: timeouts, retries of identical bytes, pacing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::RatePhase;
use crate::delivery::Delivery;
use crate::error::SimError;

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Receiver URL, e.g. `http://127.0.0.1:8080/webhooks/shopify`.
    pub target_url: String,
    /// App secret used to sign (`X-Shopify-Hmac-Sha256`).
    pub secret: String,
    /// Offered rate in deliveries per second (first attempts); 0 = as fast as possible.
    pub rate_per_sec: f64,
    /// Rate phases; a delivery's position on the timeline (by trigger time, between the
    /// first and last delivery) selects the multiplier.
    pub phases: Vec<RatePhase>,
    /// Total request timeout (Shopify: 5 s).
    pub timeout: Duration,
    /// Connect timeout (Shopify: 1 s).
    pub connect_timeout: Duration,
    /// Retries after the first attempt (Shopify: 8).
    pub max_retries: u32,
    /// First backoff; doubles per retry. Shopify spreads 8 retries over 4 h; a small base
    /// (e.g. 50 ms) compresses that schedule for tests.
    pub backoff_base: Duration,
    /// Cap on a single backoff.
    pub backoff_max: Duration,
    /// Deliveries in flight at once (including their retry waits).
    pub concurrency: usize,
}

impl SendOptions {
    /// Shopify-like defaults with compressed time (backoff base 50 ms).
    pub fn new(target_url: impl Into<String>, secret: impl Into<String>) -> Self {
        SendOptions {
            target_url: target_url.into(),
            secret: secret.into(),
            rate_per_sec: 50.0,
            phases: Vec::new(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_retries: 8,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(30),
            concurrency: 8,
        }
    }
}

/// Latency of individual attempts, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest attempt.
    pub max: f64,
}

/// Result of a send run (JSON-serialisable).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    /// Deliveries handed to the sender.
    pub deliveries: u64,
    /// Deliveries that eventually got a 2xx.
    pub sent: u64,
    /// Retry attempts made (not counting first attempts).
    pub retried: u64,
    /// Deliveries that failed every attempt (first + max_retries).
    pub failed: u64,
    /// All HTTP attempts.
    pub attempts: u64,
    /// Attempt outcomes: HTTP status code, or `timeout` / `connect_error` / `error`.
    pub status_counts: BTreeMap<String, u64>,
    /// Attempt latency percentiles.
    pub latency_ms: LatencySummary,
    /// Wall time of the run.
    pub elapsed_ms: u64,
    /// First attempts per second actually achieved.
    pub achieved_rate_per_sec: f64,
    /// Webhook ids of deliveries that were given up on (at most 100).
    pub failed_webhook_ids: Vec<String>,
}

/// Product of the multipliers of the phases covering `fraction` (0..1) of the timeline.
pub fn rate_multiplier_at(phases: &[RatePhase], fraction: f64) -> f64 {
    phases
        .iter()
        .filter(|p| fraction >= p.at_fraction && fraction < p.at_fraction + p.duration_fraction)
        .map(|p| p.multiplier)
        .product()
}

struct Outcome {
    attempts: Vec<(String, f64)>,
    ok: bool,
    webhook_id: String,
}

/// Send `deliveries` in order to `options.target_url`, pacing first attempts at the
/// offered rate, retrying failures (non-2xx including 3xx, timeouts, connection errors)
/// with identical bytes and headers (same webhook id) up to `max_retries` times.
pub async fn send(deliveries: Vec<Delivery>, options: SendOptions) -> Result<SendReport, SimError> {
    let client = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        // Shopify treats redirects as failures, so never follow them.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let options = Arc::new(options);
    let sem = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let started = Instant::now();

    let first = deliveries.iter().map(|d| d.triggered_at).min();
    let last = deliveries.iter().map(|d| d.triggered_at).max();
    let span_us = match (first, last) {
        (Some(f), Some(l)) => (l - f).num_microseconds().unwrap_or(i64::MAX).max(1) as f64,
        _ => 1.0,
    };

    let total = deliveries.len() as u64;
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut next_due = started;
    for d in deliveries {
        if options.rate_per_sec > 0.0 {
            tokio::time::sleep_until(next_due).await;
            let frac = first
                .and_then(|f| (d.triggered_at - f).num_microseconds())
                .map_or(0.0, |us| us as f64 / span_us);
            let rate = options.rate_per_sec * rate_multiplier_at(&options.phases, frac);
            // After a stall (all permits busy) catch up by at most 50 ms worth of sends
            // instead of bursting the whole backlog.
            let now = Instant::now();
            let floor = now.checked_sub(Duration::from_millis(50)).unwrap_or(now);
            let gap = Duration::try_from_secs_f64(1.0 / rate.max(1e-6))
                .unwrap_or(Duration::from_secs(3600));
            next_due = next_due.max(floor) + gap;
        }
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; treat closure as "stop sending".
            Err(_) => break,
        };
        let client = client.clone();
        let options = options.clone();
        tasks.spawn(async move {
            let out = deliver(&client, &options, &d).await;
            drop(permit);
            out
        });
    }

    let mut report = SendReport {
        deliveries: total,
        ..SendReport::default()
    };
    let mut latencies = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let Ok(out) = res else {
            report.failed += 1;
            continue;
        };
        report.attempts += out.attempts.len() as u64;
        report.retried += out.attempts.len().saturating_sub(1) as u64;
        for (label, ms) in out.attempts {
            *report.status_counts.entry(label).or_default() += 1;
            latencies.push(ms);
        }
        if out.ok {
            report.sent += 1;
        } else {
            report.failed += 1;
            if report.failed_webhook_ids.len() < 100 {
                report.failed_webhook_ids.push(out.webhook_id);
            }
        }
    }
    let elapsed = started.elapsed();
    report.elapsed_ms = elapsed.as_millis() as u64;
    report.achieved_rate_per_sec = total as f64 / elapsed.as_secs_f64().max(1e-9);
    report.latency_ms = summarise(&mut latencies);
    Ok(report)
}

async fn deliver(client: &reqwest::Client, options: &SendOptions, d: &Delivery) -> Outcome {
    let headers = d.headers(&options.secret);
    let mut attempts = Vec::new();
    for attempt in 0..=options.max_retries {
        if attempt > 0 {
            let factor = 2u32.saturating_pow(attempt - 1);
            let wait = options
                .backoff_base
                .saturating_mul(factor)
                .min(options.backoff_max);
            tokio::time::sleep(wait).await;
        }
        let mut req = client.post(&options.target_url).body(d.body.clone());
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let t0 = Instant::now();
        let res = req.send().await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match res {
            Ok(r) if r.status().is_success() => {
                attempts.push((r.status().as_u16().to_string(), ms));
                return Outcome {
                    attempts,
                    ok: true,
                    webhook_id: d.webhook_id.clone(),
                };
            }
            Ok(r) => attempts.push((r.status().as_u16().to_string(), ms)),
            Err(e) => {
                let label = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect_error"
                } else {
                    "error"
                };
                attempts.push((label.to_owned(), ms));
            }
        }
    }
    tracing::warn!(
        webhook_id = %d.webhook_id,
        topic = %d.topic,
        attempts = attempts.len(),
        "delivery failed after all retries"
    );
    Outcome {
        attempts,
        ok: false,
        webhook_id: d.webhook_id.clone(),
    }
}

fn summarise(v: &mut [f64]) -> LatencySummary {
    if v.is_empty() {
        return LatencySummary::default();
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let idx = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(idx).copied().unwrap_or(0.0)
    };
    LatencySummary {
        p50: pick(0.5),
        p90: pick(0.9),
        p99: pick(0.99),
        max: v.last().copied().unwrap_or(0.0),
    }
}
