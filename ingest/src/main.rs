//! The `ingest` binary: load config, start logging, run until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Receives Shopify webhooks, verifies them and publishes them to Kafka.
#[derive(Debug, Parser)]
#[command(name = "ingest", version)]
struct Args {
    /// TOML configuration file; environment variables `TILLSTREAM_<SECTION>__<KEY>` override it.
    #[arg(long, env = "TILLSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "TILLSTREAM_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    runtime::telemetry::init(args.log_json);
    let config =
        ingest::IngestConfig::load(args.config.as_deref()).context("loading configuration")?;
    // The first signal drains and flushes; a second one exits at once (runtime::signal_shutdown).
    let shutdown = runtime::signal_shutdown();
    ingest::run(config, shutdown)
        .await
        .context("ingest failed")?;
    Ok(())
}
