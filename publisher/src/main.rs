//! The publisher binary: parse `--config`, load configuration, start telemetry, run.

use std::path::PathBuf;

use clap::Parser;

/// Delivers Iterable commands from Kafka to Iterable's REST API.
#[derive(Debug, Parser)]
#[command(name = "publisher", version)]
struct Cli {
    /// TOML configuration file (overrides the embedded defaults; `TILLSTREAM_*` overrides it).
    #[arg(long, env = "TILLSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "TILLSTREAM_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::telemetry::init(cli.log_json);
    let config = publisher::PublisherConfig::load(cli.config.as_deref())?;
    let shutdown = runtime::signal_shutdown();
    publisher::run(config, shutdown).await?;
    Ok(())
}
