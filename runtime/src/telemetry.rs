//! Logging setup shared by all binaries: `RUST_LOG`-style filters, text or JSON lines.

use tracing_subscriber::EnvFilter;

/// Initialises the global tracing subscriber once. `json` selects JSON lines (for log
/// shippers); the filter comes from `RUST_LOG`, defaulting to `info`.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    // try_init: a second call (tests starting several services in one process) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
