//! The processor binary: parse the shared arguments, start logging, load config, run until a
//! signal or a fatal error.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the engine allocates and frees many small, short-lived
/// values per input (parsed bodies, commands, state buffers), where glibc's allocator was a
/// fifth of the processor's CPU (docs/benchmarks.md, "Fetch back-off and the allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tillstream processor: Shopify events in, Iterable commands out, exactly once.
#[derive(Debug, Parser)]
#[command(name = "processor", version)]
struct Args {
    #[command(flatten)]
    common: runtime::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.log.init()?;
    let config = processor::ProcessorConfig::load(args.common.config.as_deref())?;
    tracing::info!(application_id = %config.application_id, instance_id = %config.instance_id, kafka = ?config.kafka, "Starting processor.");
    let shutdown = runtime::signal_shutdown();
    processor::run(config, shutdown).await?;
    tracing::info!("Processor stopped cleanly.");
    Ok(())
}
