//! Graceful shutdown: one cancellation token per process, cancelled by SIGINT or SIGTERM.
//!
//! The first signal cancels the token: services stop taking work, drain, flush and commit. A
//! second signal exits at once with status 130, for an operator who does not want to wait.

use tokio_util::sync::CancellationToken;

/// The process-wide shutdown token type.
pub type Shutdown = CancellationToken;

/// Returns a token cancelled on the first SIGINT/SIGTERM; the second signal exits the process.
pub fn signal_shutdown() -> Shutdown {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown requested; draining. Send the signal again to exit at once.");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("Second signal; exiting immediately.");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the service.");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
