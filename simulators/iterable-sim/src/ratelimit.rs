//! Exact per-(project, endpoint) rate limiter: GCRA token bucket or sliding log, plus daily caps.
//!
//! # Model
//!
//! The simulator is the judge of whether a client respects Iterable's limits, so the limiter is
//! strict and deterministic rather than approximate:
//!
//! * One bucket per (project, endpoint), behind its own mutex. Every API key of a project shares
//!   the project's buckets (reference §5.1). The catalog item endpoints are limited per API
//!   key instead (reference §2), so they get one bucket per (key, endpoint).
//! * `tokenBucket` (default) is implemented as GCRA, the integer-nanosecond form of a token
//!   bucket with continuous refill: capacity `burst` (default = one second's worth, i.e. the
//!   rate), refill `per_second`. It starts full. Over any interval of length `T` it admits at
//!   most `burst + per_second × T` requests. The emission interval is rounded *up* to the
//!   nanosecond so rounding never favours the client.
//! * `slidingWindow` keeps the admission times of the last second and admits only while fewer
//!   than `floor(per_second)` were admitted in the rolling second — "N per any second", with no
//!   extra burst.
//! * A daily cap (`per_day`, users/forget and users/unforget by default) is a sliding log over
//!   `day_seconds`: at most `per_day` admissions in any rolling day.
//! * A request is admitted only if every rule admits it, and only admitted requests consume
//!   capacity: a 429 never uses up budget, so a client backing off correctly always recovers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Caller;
use crate::config::{EffectiveLimit, LimitModel, SimConfig};
use crate::endpoint::Endpoint;

/// Outcome of one admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted; capacity consumed.
    Admit,
    /// Rejected; the earliest time from now at which the same request would be admitted.
    Reject { retry_after: Duration },
}

/// All buckets of all projects and keys.
pub(crate) struct RateLimiter {
    enabled: bool,
    buckets: Vec<Mutex<Bucket>>,
    /// Per-key buckets, `key × Endpoint::COUNT` (only the per-key endpoints are used).
    key_buckets: Vec<Mutex<Bucket>>,
}

impl RateLimiter {
    /// Builds full buckets for `projects` projects from the config.
    pub(crate) fn new(config: &SimConfig) -> Self {
        let now = Instant::now();
        let table = |owners: usize| -> Vec<Mutex<Bucket>> {
            let mut buckets = Vec::with_capacity(owners * Endpoint::COUNT);
            for _ in 0..owners {
                for ep in Endpoint::ALL {
                    buckets.push(Mutex::new(Bucket::new(
                        config.effective_limit(ep),
                        config.rate_limits.model,
                        Duration::from_secs(config.rate_limits.day_seconds),
                        now,
                    )));
                }
            }
            buckets
        };
        RateLimiter {
            enabled: config.rate_limits.enabled,
            buckets: table(config.projects.len()),
            key_buckets: table(crate::auth::key_count(config)),
        }
    }

    /// Refills every bucket and forgets daily logs.
    pub(crate) fn reset(&self, config: &SimConfig) {
        let fresh = RateLimiter::new(config);
        let pairs = self
            .buckets
            .iter()
            .zip(fresh.buckets)
            .chain(self.key_buckets.iter().zip(fresh.key_buckets));
        for (slot, new) in pairs {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                new.into_inner().unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Checks and (if admitted) records one request of `caller` to `endpoint`.
    pub(crate) fn check(&self, caller: Caller, endpoint: Endpoint) -> Decision {
        if !self.enabled {
            return Decision::Admit;
        }
        let (table, owner) = if endpoint.limited_per_api_key() {
            (&self.key_buckets, caller.key)
        } else {
            (&self.buckets, caller.project)
        };
        let Some(bucket) = table.get(owner * Endpoint::COUNT + endpoint.index()) else {
            return Decision::Admit;
        };
        // A poisoned mutex only means another request panicked mid-update; the bucket state is
        // still a valid number, so keep going rather than propagate the panic.
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.check(Instant::now())
    }
}

/// One (project, endpoint) bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    model: LimitModel,
    /// GCRA emission interval in ns (`None` = no per-second limit).
    interval_ns: Option<u64>,
    /// GCRA tolerance: (burst - 1) × interval.
    tolerance_ns: u64,
    /// Theoretical arrival time, ns since `epoch`.
    tat_ns: u64,
    epoch: Instant,
    /// Sliding-window per-second limit and log.
    window_limit: usize,
    window_log: VecDeque<Instant>,
    /// Daily cap and log.
    day_limit: Option<usize>,
    day_len: Duration,
    day_log: VecDeque<Instant>,
}

impl Bucket {
    pub(crate) fn new(
        limit: EffectiveLimit,
        model: LimitModel,
        day_len: Duration,
        now: Instant,
    ) -> Self {
        let interval_ns = limit
            .per_second
            .map(|r| (1e9 / r).ceil().clamp(1.0, u64::MAX as f64) as u64);
        let burst = limit.burst.unwrap_or(1.0).max(1.0);
        let tolerance_ns = interval_ns
            .map(|t| ((burst - 1.0) * t as f64).floor() as u64)
            .unwrap_or(0);
        let window_limit = limit
            .per_second
            .map(|r| (r.floor() as usize).max(1))
            .unwrap_or(usize::MAX);
        Bucket {
            model,
            interval_ns,
            tolerance_ns,
            tat_ns: 0,
            epoch: now,
            window_limit,
            window_log: VecDeque::new(),
            day_limit: limit.per_day.map(|d| d as usize),
            day_len,
            day_log: VecDeque::new(),
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> Decision {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        // Per-second rule: compute the new state without committing it yet.
        let mut new_tat = None;
        if let Some(interval) = self.interval_ns {
            match self.model {
                LimitModel::TokenBucket => {
                    let allow_at = self.tat_ns.saturating_sub(self.tolerance_ns);
                    if now_ns < allow_at {
                        return Decision::Reject {
                            retry_after: Duration::from_nanos(allow_at - now_ns),
                        };
                    }
                    new_tat = Some(self.tat_ns.max(now_ns).saturating_add(interval));
                }
                LimitModel::SlidingWindow => {
                    if let Some(wait) = Self::log_full(
                        &mut self.window_log,
                        self.window_limit,
                        Duration::from_secs(1),
                        now,
                    ) {
                        return Decision::Reject { retry_after: wait };
                    }
                }
            }
        }
        if let Some(limit) = self.day_limit
            && let Some(wait) = Self::log_full(&mut self.day_log, limit, self.day_len, now)
        {
            return Decision::Reject { retry_after: wait };
        }
        // Every rule admits: commit.
        if let Some(t) = new_tat {
            self.tat_ns = t;
        }
        if self.interval_ns.is_some() && self.model == LimitModel::SlidingWindow {
            self.window_log.push_back(now);
        }
        if self.day_limit.is_some() {
            self.day_log.push_back(now);
        }
        Decision::Admit
    }

    /// Drops entries older than `window` and, if `limit` remain, returns how long until the
    /// oldest expires.
    fn log_full(
        log: &mut VecDeque<Instant>,
        limit: usize,
        window: Duration,
        now: Instant,
    ) -> Option<Duration> {
        while let Some(&front) = log.front() {
            if now.saturating_duration_since(front) >= window {
                log.pop_front();
            } else {
                break;
            }
        }
        if log.len() < limit {
            return None;
        }
        let oldest = log.front().copied().unwrap_or(now);
        Some(window.saturating_sub(now.saturating_duration_since(oldest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: f64, burst: f64, day: Option<u64>) -> EffectiveLimit {
        EffectiveLimit {
            per_second: Some(rate),
            burst: Some(burst),
            per_day: day,
        }
    }

    fn admitted(b: &mut Bucket, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| b.check(now) == Decision::Admit).count()
    }

    #[test]
    fn token_bucket_burst_then_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            limit(10.0, 10.0, None),
            LimitModel::TokenBucket,
            Duration::from_secs(86_400),
            t0,
        );
        assert_eq!(admitted(&mut b, t0, 30), 10);
        // 100 ms later exactly one token has refilled.
        assert_eq!(admitted(&mut b, t0 + Duration::from_millis(100), 5), 1);
        assert_eq!(admitted(&mut b, t0 + Duration::from_millis(199), 5), 0);
        // Over one full second of steady load the total is burst + rate × 1 s.
        let mut total = 10 + 1;
        for ms in (200..=1000).step_by(10) {
            total += admitted(&mut b, t0 + Duration::from_millis(ms), 3);
        }
        assert_eq!(total, 20);
    }

    #[test]
    fn retry_after_points_at_next_token() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            limit(5.0, 1.0, None),
            LimitModel::TokenBucket,
            Duration::from_secs(1),
            t0,
        );
        assert_eq!(b.check(t0), Decision::Admit);
        match b.check(t0) {
            Decision::Reject { retry_after } => assert_eq!(retry_after, Duration::from_millis(200)),
            Decision::Admit => panic!("should reject"),
        }
        assert_eq!(b.check(t0 + Duration::from_millis(200)), Decision::Admit);
    }

    #[test]
    fn sliding_window_never_exceeds_rate_in_any_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            limit(10.0, 10.0, None),
            LimitModel::SlidingWindow,
            Duration::from_secs(86_400),
            t0,
        );
        assert_eq!(admitted(&mut b, t0, 30), 10);
        assert_eq!(admitted(&mut b, t0 + Duration::from_millis(999), 30), 0);
        assert_eq!(admitted(&mut b, t0 + Duration::from_millis(1000), 30), 10);
    }

    #[test]
    fn daily_cap_is_a_rolling_window_and_rejections_cost_nothing() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            limit(1000.0, 1000.0, Some(3)),
            LimitModel::TokenBucket,
            Duration::from_secs(2),
            t0,
        );
        assert_eq!(admitted(&mut b, t0, 10), 3);
        assert_eq!(admitted(&mut b, t0 + Duration::from_millis(1999), 10), 0);
        assert_eq!(admitted(&mut b, t0 + Duration::from_secs(2), 10), 3);
    }
}
