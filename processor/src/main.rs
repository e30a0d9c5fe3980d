//! The processor binary: load config, start telemetry, run until a signal or a fatal error.

use std::path::PathBuf;

use clap::Parser;

/// tillstream processor: Shopify events in, Iterable commands out, exactly once.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); `TILLSTREAM_*` environment variables override it.
    #[arg(long, env = "TILLSTREAM_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = processor::ProcessorConfig::load(args.config.as_deref())?;
    runtime::telemetry::init(config.log_json);
    tracing::info!(application_id = %config.application_id, instance_id = %config.instance_id, kafka = ?config.kafka, "Starting processor.");
    let shutdown = runtime::signal_shutdown();
    processor::run(config, shutdown).await?;
    tracing::info!("Processor stopped cleanly.");
    Ok(())
}
