//! The publisher binary: parse the shared arguments, start logging, load config, run.

use clap::Parser;

/// Delivers Iterable commands from Kafka to Iterable's REST API.
#[derive(Debug, Parser)]
#[command(name = "publisher", version)]
struct Args {
    #[command(flatten)]
    common: runtime::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.log.init()?;
    let config = publisher::PublisherConfig::load(args.common.config.as_deref())?;
    let shutdown = runtime::signal_shutdown();
    publisher::run(config, shutdown).await?;
    Ok(())
}
