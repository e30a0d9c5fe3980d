//! Shared state, router assembly, and the `run` / `spawn` entry points.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::error::Error;
use crate::inspect;
use crate::state::SimState;

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
