//! The simulator's shared state: configuration, keys, limiter, store, stats, faults, webhooks.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio_util::sync::CancellationToken;

use crate::auth::KeyTable;
use crate::config::SimConfig;
use crate::error::Error;
use crate::faults::{FaultSpec, FaultStatus, Faults};
use crate::ratelimit::RateLimiter;
use crate::stats::{Stats, StatsView};
use crate::store::{ProjectStore, Store};
use crate::webhooks::{WebhookView, Webhooks};

/// Cheaply clonable handle on the whole simulator state.
#[derive(Clone)]
pub struct SimState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: SimConfig,
    pub(crate) keys: KeyTable,
    pub(crate) limiter: RateLimiter,
    pub(crate) store: Store,
    pub(crate) stats: Stats,
    pub(crate) faults: Faults,
    /// Cancelled at shutdown so held ("timed out") requests end and graceful shutdown can finish.
    pub(crate) shutdown: CancellationToken,
    /// 429s served, to alternate body styles.
    pub(crate) served_429: AtomicU64,
    /// System webhooks: recorded and sent by a worker started in `serve`.
    pub(crate) webhooks: Arc<Webhooks>,
}

impl SimState {
    /// Validates `config` and builds empty state.
    pub fn new(config: SimConfig) -> Result<Self, Error> {
        Self::with_shutdown(config, CancellationToken::new())
    }

    /// Like [`SimState::new`]; held requests end when `shutdown` is cancelled.
    pub fn with_shutdown(config: SimConfig, shutdown: CancellationToken) -> Result<Self, Error> {
        config.validate()?;
        Ok(SimState {
            inner: Arc::new(Inner {
                keys: KeyTable::new(&config),
                limiter: RateLimiter::new(&config),
                store: Store::new(&config),
                stats: Stats::new(),
                faults: Faults::new(config.faults.clone()),
                shutdown,
                served_429: AtomicU64::new(0),
                webhooks: Arc::new(Webhooks::new(config.system_webhooks.clone())),
                config,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Request counters (same as `GET /_sim/stats`).
    pub fn stats(&self) -> StatsView {
        self.inner.stats.view()
    }

    /// Current fault injection (same as `GET /_sim/faults`).
    pub fn faults(&self) -> FaultStatus {
        self.inner.faults.status()
    }

    /// Replaces fault injection (same as `POST /_sim/faults`).
    pub fn set_faults(&self, spec: FaultSpec) -> Result<(), Error> {
        spec.validate()?;
        self.inner.faults.set(spec);
        Ok(())
    }

    /// System webhooks emitted so far, with their delivery state (same as
    /// `GET /_sim/webhooks`).
    pub fn webhooks(&self) -> Vec<WebhookView> {
        self.inner.webhooks.views()
    }

    /// Clears data, counters, recorded webhooks and rate-limit buckets and restores the
    /// start-up faults.
    pub fn reset(&self) {
        self.inner.webhooks.reset();
        self.inner.store.reset();
        self.inner.stats.reset();
        self.inner.limiter.reset(&self.inner.config);
        self.inner.faults.set(self.inner.config.faults.clone());
    }

    pub(crate) fn for_each_project(&self, mut f: impl FnMut(&ProjectStore)) {
        for i in 0..self.inner.store.len() {
            if let Some(p) = self.inner.store.project(i) {
                f(&p);
            }
        }
    }
}
