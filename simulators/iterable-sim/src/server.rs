//! Shared state, router assembly, and the `run` / `spawn` entry points.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyTable;
use crate::config::SimConfig;
use crate::error::Error;
use crate::faults::{FaultSpec, FaultStatus, Faults};
use crate::inspect::{
    self, CartView, CatalogItemView, CatalogView, EventView, Filter, ListView, ProfileView,
    PurchaseView,
};
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

    /// Profiles matching `filter` (same as `GET /_sim/profiles`).
    pub fn profiles(&self, filter: &Filter) -> Vec<ProfileView> {
        inspect::profiles(self, filter)
    }

    /// Events matching `filter` (same as `GET /_sim/events`).
    pub fn events(&self, filter: &Filter) -> Vec<EventView> {
        inspect::events(self, filter)
    }

    /// Purchases matching `filter` (same as `GET /_sim/purchases`).
    pub fn purchases(&self, filter: &Filter) -> Vec<PurchaseView> {
        inspect::purchases(self, filter)
    }

    /// Carts matching `filter` (same as `GET /_sim/carts`).
    pub fn carts(&self, filter: &Filter) -> Vec<CartView> {
        inspect::carts(self, filter)
    }

    /// Lists (same as `GET /_sim/lists`).
    pub fn lists(&self, filter: &Filter) -> Vec<ListView> {
        inspect::lists(self, filter)
    }

    /// Catalogs (same as `GET /_sim/catalogs`).
    pub fn catalogs(&self, filter: &Filter) -> Vec<CatalogView> {
        inspect::catalogs(self, filter)
    }

    /// Items of catalog `name` (same as `GET /_sim/catalogs/{name}/items`); `None` when no
    /// project the filter admits has that catalog.
    pub fn catalog_items(&self, name: &str, filter: &Filter) -> Option<Vec<CatalogItemView>> {
        inspect::catalog_items(self, name, filter)
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

/// The full router: `/api/...` (Iterable), `/_sim/...` (inspection), 404 fallback.
pub fn app(state: SimState) -> Router {
    crate::handlers::router()
        .merge(inspect::router())
        .merge(crate::simulate::router())
        .fallback(crate::handlers::not_found)
        .with_state(state)
}

/// Serves the simulator on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let state = SimState::with_shutdown(config, shutdown.clone())?;
    serve(state, listener, shutdown).await
}

async fn serve(
    state: SimState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    state.inner.webhooks.start(shutdown.clone());
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    // No Nagle: pipelined or multi-write responses must not wait for the client's delayed ACK
    // (a 40 ms stall per response would make the simulator the bottleneck it must never be).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// A simulator running in the background (see [`spawn`]). Dropping it shuts the server down.
pub struct SimHandle {
    addr: SocketAddr,
    state: SimState,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl SimHandle {
    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` — the base URL clients append `/api/...` to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// In-process access to the state (inspection, faults, reset) without HTTP.
    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// Token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a simulator on `127.0.0.1:0` in a background task.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    spawn_on(config, listener)
}

/// Starts a simulator on an already-bound listener in a background task.
pub fn spawn_on(config: SimConfig, listener: TcpListener) -> Result<SimHandle, Error> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let state = SimState::with_shutdown(config, shutdown.clone())?;
    let task = tokio::spawn(serve(state.clone(), listener, shutdown.clone()));
    Ok(SimHandle {
        addr,
        state,
        shutdown,
        task: Some(task),
    })
}
