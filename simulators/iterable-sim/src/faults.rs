//! Fault injection: random 5xx, latency, held requests (timeouts), outage windows, 429 storms.
//!
//! A [`FaultSpec`] is set at start-up (`SimConfig::faults`) and replaced at run time with
//! `POST /_sim/faults` (the whole spec is replaced; `{}` clears every fault). Time windows are
//! relative to the moment the spec was applied. Faults only touch `/api/...` routes, never the
//! `/_sim/` inspection API.
//!
//! Where each fault strikes in the request pipeline (see `handlers`):
//! 1. outage → `503` plain text, before authentication (the whole service is down);
//! 2. 429 storm → `429 RateLimitExceeded` after authentication, instead of the limiter, so it
//!    consumes no rate-limit budget;
//! 3. after the limiter admitted the request: random 5xx (`error_rate`), held request
//!    (`timeout_rate`, answered `504` after `timeout_hold_ms` unless the client gives up first),
//!    then latency (`latency_ms` + uniform jitter) before the request is processed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::error::Error;

/// Fault configuration (both the `faults` config section and the `POST /_sim/faults` body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Fraction (0..=1) of admitted requests answered with a random status from
    /// `error_statuses` and a JSON `GenericError` body. Default 0.
    pub error_rate: f64,
    /// Statuses for random errors. Default `[500, 502, 503]`.
    pub error_statuses: Vec<u16>,
    /// Fixed delay added to every admitted request, in ms. Default 0.
    pub latency_ms: u64,
    /// Extra uniform random delay 0..=jitter, in ms. Default 0.
    pub latency_jitter_ms: u64,
    /// Fraction (0..=1) of admitted requests held for `timeout_hold_ms` (far beyond a client
    /// timeout) and then answered `504`. Default 0.
    pub timeout_rate: f64,
    /// How long a "timed out" request is held, in ms. Default 300000 (5 min).
    pub timeout_hold_ms: u64,
    /// Outage switch: every API request gets `503` until switched off. Default false.
    pub outage: bool,
    /// Outage windows relative to when this spec was applied.
    pub outage_windows: Vec<FaultWindow>,
    /// Storm switch: every authenticated API request gets `429`. Default false.
    pub rate_limit_storm: bool,
    /// Storm for this many ms from when this spec was applied. Default none.
    pub rate_limit_storm_ms: Option<u64>,
    /// Restrict faults to these endpoint names (e.g. `["events/trackBulk"]`); empty = all.
    pub endpoints: Vec<String>,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            error_rate: 0.0,
            error_statuses: vec![500, 502, 503],
            latency_ms: 0,
            latency_jitter_ms: 0,
            timeout_rate: 0.0,
            timeout_hold_ms: 300_000,
            outage: false,
            outage_windows: Vec::new(),
            rate_limit_storm: false,
            rate_limit_storm_ms: None,
            endpoints: Vec::new(),
        }
    }
}

/// A time window `[start_ms, end_ms)` relative to when the spec was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultWindow {
    /// Window start, ms after the spec was applied.
    pub start_ms: u64,
    /// Window end (exclusive), ms after the spec was applied.
    pub end_ms: u64,
}

impl FaultSpec {
    /// Checks ranges (rates in 0..=1, 5xx statuses, windows ordered, known endpoints).
    pub fn validate(&self) -> Result<(), Error> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::Config(format!("faults.{name} must be within 0..=1")));
            }
        }
        if self.error_rate > 0.0 && self.error_statuses.is_empty() {
            return Err(Error::Config("faults.error_statuses is empty".into()));
        }
        if let Some(s) = self
            .error_statuses
            .iter()
            .find(|s| !(500..=599).contains(*s))
        {
            return Err(Error::Config(format!(
                "faults.error_statuses: {s} is not 5xx"
            )));
        }
        if let Some(w) = self.outage_windows.iter().find(|w| w.end_ms < w.start_ms) {
            return Err(Error::Config(format!(
                "faults.outage_windows: end {} before start {}",
                w.end_ms, w.start_ms
            )));
        }
        if let Some(e) = self
            .endpoints
            .iter()
            .find(|e| Endpoint::from_name(e).is_none())
        {
            return Err(Error::Config(format!("faults.endpoints: unknown {e:?}")));
        }
        Ok(())
    }
}

/// What the fault layer decided for a request after admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Proceed (after `delay`).
    Proceed { delay: Duration },
    /// Answer this 5xx.
    Error(u16),
    /// Hold for this long, then answer 504.
    Hold(Duration),
}

/// Run-time fault state.
pub(crate) struct Faults {
    inner: Mutex<Active>,
    /// Lock-free fast path for the common case of no faults at all (benchmarks, most tests).
    idle: AtomicBool,
}

struct Active {
    spec: FaultSpec,
    applied_at: Instant,
    /// Fast path: nothing configured at all.
    idle: bool,
}

/// Snapshot for `GET /_sim/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// The spec in force.
    pub spec: FaultSpec,
    /// Milliseconds since the spec was applied.
    pub applied_ms_ago: u64,
    /// Whether an outage is in effect right now.
    pub outage_now: bool,
    /// Whether a 429 storm is in effect right now.
    pub rate_limit_storm_now: bool,
}

impl Faults {
    pub(crate) fn new(spec: FaultSpec) -> Self {
        let active = Active::new(spec);
        Faults {
            idle: AtomicBool::new(active.idle),
            inner: Mutex::new(active),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        // The state is replaced wholesale, never left half-updated: a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the spec; windows restart from now.
    pub(crate) fn set(&self, spec: FaultSpec) {
        let active = Active::new(spec);
        let mut guard = self.lock();
        self.idle.store(active.idle, Ordering::Release);
        *guard = active;
    }

    pub(crate) fn status(&self) -> FaultStatus {
        let a = self.lock();
        let now = Instant::now();
        FaultStatus {
            spec: a.spec.clone(),
            applied_ms_ago: now.saturating_duration_since(a.applied_at).as_millis() as u64,
            outage_now: a.outage(now),
            rate_limit_storm_now: a.storm(now),
        }
    }

    /// Whether `endpoint` is in an outage now.
    pub(crate) fn outage(&self, endpoint: Endpoint) -> bool {
        if self.idle.load(Ordering::Acquire) {
            return false;
        }
        let a = self.lock();
        !a.idle && a.applies_to(endpoint) && a.outage(Instant::now())
    }

    /// Whether `endpoint` is in a 429 storm now.
    pub(crate) fn storm(&self, endpoint: Endpoint) -> bool {
        if self.idle.load(Ordering::Acquire) {
            return false;
        }
        let a = self.lock();
        !a.idle && a.applies_to(endpoint) && a.storm(Instant::now())
    }

    /// Rolls the dice for an admitted request.
    pub(crate) fn inject(&self, endpoint: Endpoint) -> Injected {
        if self.idle.load(Ordering::Acquire) {
            return Injected::Proceed {
                delay: Duration::ZERO,
            };
        }
        let a = self.lock();
        if a.idle || !a.applies_to(endpoint) {
            return Injected::Proceed {
                delay: Duration::ZERO,
            };
        }
        let mut rng = rand::rng();
        if a.spec.error_rate > 0.0 && rng.random::<f64>() < a.spec.error_rate {
            let i = rng.random_range(0..a.spec.error_statuses.len().max(1));
            return Injected::Error(a.spec.error_statuses.get(i).copied().unwrap_or(500));
        }
        if a.spec.timeout_rate > 0.0 && rng.random::<f64>() < a.spec.timeout_rate {
            return Injected::Hold(Duration::from_millis(a.spec.timeout_hold_ms));
        }
        let jitter = if a.spec.latency_jitter_ms > 0 {
            rng.random_range(0..=a.spec.latency_jitter_ms)
        } else {
            0
        };
        Injected::Proceed {
            delay: Duration::from_millis(a.spec.latency_ms + jitter),
        }
    }
}

impl Active {
    fn new(spec: FaultSpec) -> Self {
        let idle = spec
            == FaultSpec {
                error_statuses: spec.error_statuses.clone(),
                timeout_hold_ms: spec.timeout_hold_ms,
                endpoints: spec.endpoints.clone(),
                ..FaultSpec::default()
            };
        Active {
            spec,
            applied_at: Instant::now(),
            idle,
        }
    }

    fn applies_to(&self, endpoint: Endpoint) -> bool {
        self.spec.endpoints.is_empty() || self.spec.endpoints.iter().any(|e| e == endpoint.name())
    }

    fn elapsed_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.applied_at).as_millis() as u64
    }

    fn outage(&self, now: Instant) -> bool {
        if self.spec.outage {
            return true;
        }
        let t = self.elapsed_ms(now);
        self.spec
            .outage_windows
            .iter()
            .any(|w| w.start_ms <= t && t < w.end_ms)
    }

    fn storm(&self, now: Instant) -> bool {
        self.spec.rate_limit_storm
            || self
                .spec
                .rate_limit_storm_ms
                .is_some_and(|d| self.elapsed_ms(now) < d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_idle_and_valid() {
        let f = Faults::new(FaultSpec::default());
        assert!(FaultSpec::default().validate().is_ok());
        assert!(!f.outage(Endpoint::EventsTrack));
        assert_eq!(
            f.inject(Endpoint::EventsTrack),
            Injected::Proceed {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn full_error_rate_and_endpoint_filter() {
        let f = Faults::new(FaultSpec {
            error_rate: 1.0,
            error_statuses: vec![503],
            endpoints: vec!["events/track".into()],
            ..FaultSpec::default()
        });
        assert_eq!(f.inject(Endpoint::EventsTrack), Injected::Error(503));
        assert!(matches!(
            f.inject(Endpoint::UsersUpdate),
            Injected::Proceed { .. }
        ));
    }

    #[test]
    fn windows_are_relative_to_application() {
        let f = Faults::new(FaultSpec {
            outage_windows: vec![FaultWindow {
                start_ms: 0,
                end_ms: 60_000,
            }],
            rate_limit_storm_ms: Some(0),
            ..FaultSpec::default()
        });
        assert!(f.outage(Endpoint::UsersUpdate));
        assert!(!f.storm(Endpoint::UsersUpdate));
        let bad = FaultSpec {
            error_rate: 2.0,
            ..FaultSpec::default()
        };
        assert!(bad.validate().is_err());
    }
}
