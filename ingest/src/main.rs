//! The `ingest` binary: parse the shared arguments, start logging, load config, run until
//! SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;

/// Receives Shopify webhooks, verifies them and publishes them to Kafka.
#[derive(Debug, Parser)]
#[command(name = "ingest", version)]
struct Args {
    #[command(flatten)]
    common: runtime::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.log.init()?;
    let config = ingest::IngestConfig::load(args.common.config.as_deref())
        .context("loading configuration")?;
    // The first signal drains and flushes; a second one exits at once (runtime::signal_shutdown).
    let shutdown = runtime::signal_shutdown();
    ingest::run(config, shutdown)
        .await
        .context("ingest failed")?;
    Ok(())
}
