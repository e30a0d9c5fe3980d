//! Lock-free request counters per endpoint, served by `GET /_sim/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    admitted: AtomicU64,
    success: AtomicU64,
    rate_limited: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    records_succeeded: AtomicU64,
    records_failed: AtomicU64,
}

/// Counters of one endpoint (all projects together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStats {
    /// Requests received (every answer, whatever its status).
    pub requests: u64,
    /// Requests the rate limiter admitted (the number to compare with the published limit).
    pub admitted: u64,
    /// 2xx answers.
    pub success: u64,
    /// 429 answers (limiter and storms).
    pub rate_limited: u64,
    /// 4xx answers other than 429.
    pub client_errors: u64,
    /// 5xx answers (injected faults, outages, held requests).
    pub server_errors: u64,
    /// Records written successfully (1 per single request; `successCount` for bulk).
    pub records_succeeded: u64,
    /// Records rejected inside 200 bulk answers (`failCount`).
    pub records_failed: u64,
}

/// Snapshot served by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    /// Per endpoint, keyed by endpoint name; endpoints never called are included with zeros.
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// Sum over endpoints.
    pub totals: EndpointStats,
    /// `createdAt` values that looked like milliseconds (> 10^11) and were converted.
    pub created_at_millis_seen: u64,
    /// Requests to unknown routes (answered 404).
    pub unknown_routes: u64,
}

/// All counters.
pub(crate) struct Stats {
    per_endpoint: Vec<Counters>,
    created_at_millis_seen: AtomicU64,
    unknown_routes: AtomicU64,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            per_endpoint: (0..Endpoint::COUNT).map(|_| Counters::default()).collect(),
            created_at_millis_seen: AtomicU64::new(0),
            unknown_routes: AtomicU64::new(0),
        }
    }

    fn counters(&self, ep: Endpoint) -> Option<&Counters> {
        self.per_endpoint.get(ep.index())
    }

    pub(crate) fn admitted(&self, ep: Endpoint) {
        if let Some(c) = self.counters(ep) {
            c.admitted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request on arrival (so held or abandoned requests are counted too).
    pub(crate) fn received(&self, ep: Endpoint) {
        if let Some(c) = self.counters(ep) {
            c.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the final status of one request.
    pub(crate) fn finished(&self, ep: Endpoint, status: u16) {
        let Some(c) = self.counters(ep) else { return };
        let slot = match status {
            200..=299 => &c.success,
            429 => &c.rate_limited,
            400..=499 => &c.client_errors,
            500..=599 => &c.server_errors,
            _ => return,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn records(&self, ep: Endpoint, ok: u64, failed: u64) {
        if let Some(c) = self.counters(ep) {
            c.records_succeeded.fetch_add(ok, Ordering::Relaxed);
            c.records_failed.fetch_add(failed, Ordering::Relaxed);
        }
    }

    pub(crate) fn created_at_millis(&self) {
        self.created_at_millis_seen.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unknown_route(&self) {
        self.unknown_routes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        for c in &self.per_endpoint {
            for a in [
                &c.requests,
                &c.admitted,
                &c.success,
                &c.rate_limited,
                &c.client_errors,
                &c.server_errors,
                &c.records_succeeded,
                &c.records_failed,
            ] {
                a.store(0, Ordering::Relaxed);
            }
        }
        self.created_at_millis_seen.store(0, Ordering::Relaxed);
        self.unknown_routes.store(0, Ordering::Relaxed);
    }

    pub(crate) fn view(&self) -> StatsView {
        let mut view = StatsView {
            created_at_millis_seen: self.created_at_millis_seen.load(Ordering::Relaxed),
            unknown_routes: self.unknown_routes.load(Ordering::Relaxed),
            ..StatsView::default()
        };
        for ep in Endpoint::ALL {
            let Some(c) = self.counters(ep) else { continue };
            let s = EndpointStats {
                requests: c.requests.load(Ordering::Relaxed),
                admitted: c.admitted.load(Ordering::Relaxed),
                success: c.success.load(Ordering::Relaxed),
                rate_limited: c.rate_limited.load(Ordering::Relaxed),
                client_errors: c.client_errors.load(Ordering::Relaxed),
                server_errors: c.server_errors.load(Ordering::Relaxed),
                records_succeeded: c.records_succeeded.load(Ordering::Relaxed),
                records_failed: c.records_failed.load(Ordering::Relaxed),
            };
            let t = &mut view.totals;
            t.requests += s.requests;
            t.admitted += s.admitted;
            t.success += s.success;
            t.rate_limited += s.rate_limited;
            t.client_errors += s.client_errors;
            t.server_errors += s.server_errors;
            t.records_succeeded += s.records_succeeded;
            t.records_failed += s.records_failed;
            view.endpoints.insert(ep.name().to_string(), s);
        }
        view
    }
}
