//! The shopify-writer binary: parse the shared arguments, start logging, load config, run.

use clap::Parser;

/// Writes consent decided by the processor to each shop's Admin API.
#[derive(Debug, Parser)]
#[command(name = "shopify-writer", version)]
struct Args {
    #[command(flatten)]
    common: runtime::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.log.init()?;
    let config = shopify_writer::WriterConfig::load(args.common.config.as_deref())?;
    let shutdown = runtime::signal_shutdown();
    shopify_writer::run(config, shutdown).await?;
    Ok(())
}
