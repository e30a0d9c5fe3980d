//! The HTTP/1.1 server loop: header read timeout, TCP_NODELAY, bounded graceful drain.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout is off there and a client that
//! trickles its headers holds a connection for ever. Serving connections ourselves lets the
//! same `read_timeout` bound the headers (hyper closes the connection) and the body (the
//! handler answers 408), and lets shutdown give up on stragglers after `drain_timeout`.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request head (start line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Longest time a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest time in-flight requests get to finish once shutdown starts.
    pub drain_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and lets
/// open requests finish for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // Headers larger than this (or more than 100 of them) get 431 from hyper. Shopify's
        // headers are well under 2 KiB.
        .max_header_size(MAX_HEADER_BYTES);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response pairs: Nagle plus delayed ACKs would add ~40 ms per reply.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        open = graceful.count(),
        "Stopped accepting; draining open connections."
    );
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(drain_timeout = ?options.drain_timeout, "Drain timed out; dropping the remaining connections.");
    }
}
