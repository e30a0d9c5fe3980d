//! Probes in the background of a fault test: a round a second, ages reported per phase of the test.
//!
//! A fault test names its phases ("before", "broker 2 down", "after the restart", ...) as it
//! goes; each phase reports, per lane, the ages of the probes that came out during it and the
//! oldest probe still waiting at any moment of it (what a stall looks like while nothing comes
//! out). Probes are stamped by the test's clock so that, in event-time runs, they never move a
//! partition's stream time ahead of the deliveries still to come ([`Probes::round_at`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Stack;
use crate::probes::{Lane, Probes, age_summary};

/// Event time (ms) to stamp the next round with (raised to one more than the previous round's),
/// or `None` to skip this round. Called on the prober's task: it must not block.
pub type Stamp = Arc<dyn Fn() -> Option<i64> + Send + Sync>;

struct Phase {
    name: String,
    started: Instant,
    ended: Option<Instant>,
    /// Per lane, how many ages were measured before the phase began.
    from: [usize; 4],
    to: Option<[usize; 4]>,
    worst_waiting: [f64; 4],
}

struct Shared {
    probes: Probes,
    phases: Vec<Phase>,
    sending: bool,
}

impl Shared {
    fn counts(&self) -> [usize; 4] {
        Lane::ALL.map(|l| self.probes.ages(l).len())
    }

    fn close_phase(&mut self) {
        let counts = self.counts();
        if let Some(p) = self.phases.last_mut().filter(|p| p.ended.is_none()) {
            p.ended = Some(Instant::now());
            p.to = Some(counts);
        }
    }
}

/// A background prober over a running stack.
pub struct Prober {
    shared: Arc<Mutex<Shared>>,
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Posts one signed delivery; the refusal as a short reason (`503`, `timeout`, `connect_error`).
///
/// # Errors
/// When ingest does not answer 2xx.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    d: &shopify_sim::Delivery,
) -> Result<(), String> {
    let mut req = client.post(url).body(d.body.clone());
    for (k, v) in d.headers(crate::SECRET) {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(r.status().as_u16().to_string()),
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(e) if e.is_connect() => Err("connect_error".into()),
        Err(_) => Err("error".into()),
    }
}

impl Prober {
    /// Starts probing `stack` (shop `shop`) in phase `first`, a round a second stamped by
    /// `stamp`; iterable-sim is read every 200 ms.
    pub fn start(stack: Arc<Stack>, shop: &str, first: &str, stamp: Stamp) -> Prober {
        let shared = Arc::new(Mutex::new(Shared {
            probes: Probes::new(shop),
            phases: Vec::new(),
            sending: true,
        }));
        let done = Arc::new(AtomicBool::new(false));
        let prober = Prober {
            shared: shared.clone(),
            done: done.clone(),
            task: tokio::spawn(Self::run(stack, shared, done, stamp)),
        };
        prober.phase(first);
        prober
    }

    async fn run(
        stack: Arc<Stack>,
        shared: Arc<Mutex<Shared>>,
        done: Arc<AtomicBool>,
        stamp: Stamp,
    ) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let url = stack.webhook_url();
        let mut next_round = Instant::now();
        let mut last_ms = i64::MIN;
        while !done.load(Ordering::Relaxed) {
            if lock(&shared).sending && Instant::now() >= next_round {
                next_round = Instant::now() + Duration::from_secs(1);
                if let Some(ms) = stamp() {
                    // Strictly increasing: profiles and carts are last-write-wins by time.
                    let ms = ms.max(last_ms.saturating_add(1));
                    last_ms = ms;
                    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                    let (k, round) = lock(&shared).probes.round_at(at);
                    for (lane, d) in round {
                        if post(&client, &url, &d).await.is_ok() {
                            lock(&shared).probes.sent(lane, k, Instant::now());
                        }
                    }
                }
            }
            {
                let mut s = lock(&shared);
                s.probes.observe(stack.sim_state());
                let waiting = Lane::ALL.map(|l| s.probes.oldest_outstanding(l).unwrap_or(0.0));
                if let Some(p) = s.phases.last_mut() {
                    for (w, now) in p.worst_waiting.iter_mut().zip(waiting) {
                        *w = w.max(now);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ends the current phase and begins `name`.
    pub fn phase(&self, name: &str) {
        let mut s = lock(&self.shared);
        s.close_phase();
        let from = s.counts();
        s.phases.push(Phase {
            name: name.to_owned(),
            started: Instant::now(),
            ended: None,
            from,
            to: None,
            worst_waiting: [0.0; 4],
        });
    }

    /// Stops sending, waits up to `timeout` for the probes still out, and reports per phase
    /// and lane: probes seen, age p50/p99/max (s), the oldest wait at any moment, and the
    /// probes never seen.
    pub async fn finish(self, timeout: Duration) -> Value {
        lock(&self.shared).sending = false;
        let deadline = Instant::now() + timeout;
        while lock(&self.shared).probes.outstanding() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.done.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let mut s = lock(&self.shared);
        s.close_phase();
        let phases: Vec<Value> = s
            .phases
            .iter()
            .map(|p| {
                let to = p.to.unwrap_or(p.from);
                let mut lanes = serde_json::Map::new();
                for lane in Lane::ALL {
                    let i = lane as usize;
                    let all = s.probes.ages(lane);
                    let mut v = age_summary(&all[p.from[i].min(all.len())..to[i].min(all.len())]);
                    v["oldest_wait"] = json!(round3(p.worst_waiting[i]));
                    lanes.insert(lane.name().into(), v);
                }
                let secs = p.ended.unwrap_or_else(Instant::now) - p.started;
                json!({"phase": p.name, "secs": round3(secs.as_secs_f64()), "age_s": lanes})
            })
            .collect();
        json!({"phases": phases, "probes_not_seen": s.probes.outstanding()})
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
