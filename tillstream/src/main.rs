//! `tillstream`: operations on a tillstream deployment (topics, replay, dead letters, queries).

mod backfill;
mod customer;
mod dlq;
mod explain;
mod replay;
mod rewrite;
mod seed;
mod topic_reader;
mod topics;

use clap::{Parser, Subcommand};
use processor::erasure::ErasureConfig;
use runtime::{KafkaConfig, TopicsConfig};
use serde::Deserialize;

/// Operations CLI for tillstream.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// `--config`: a TOML file with `[kafka]` and `[topics]` sections, as the services use
    /// (`TILLSTREAM__*` variables override it); `--log-json`, `--log-level`: as the services.
    #[command(flatten)]
    common: runtime::ServiceArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Topic catalogue.
    Topics {
        #[command(subcommand)]
        action: TopicsCmd,
    },
    /// Show what the processor holds for a customer: identity, lifetime value, tier,
    /// consent, pending timers (a table; `--json` for scripts, `--raw` for the internal form).
    Customer(customer::CustomerArgs),
    /// Why: a customer's last decisions (input, outcome, commands, timers) from the processor's
    /// trail, with what the publisher did with each command (needs `engine.trail = true`).
    Explain(explain::ExplainArgs),
    /// Rebuild the processor's state from a point in the raw topic (processors stopped).
    Replay(replay::ReplayArgs),
    /// Inspect and redrive the processor's and the publisher's dead letters.
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqCmd,
    },
    /// Operations on the raw topic itself.
    Raw {
        #[command(subcommand)]
        action: RawCmd,
    },
    /// Import the shop's customers and orders from the Admin API (bulk operations) into the
    /// raw topic, marked as backfill (see README, "Backfill").
    Backfill(Box<backfill::BackfillArgs>),
}

#[derive(Subcommand)]
enum RawCmd {
    /// Copy the raw topic into a new, empty topic without the records of erased customers
    /// (GDPR: how the raw log forgets; also migrates a raw topic written before the erasure
    /// registry existed).
    Rewrite(rewrite::RewriteArgs),
    /// Record in the erasure registry every `customers/redact` and `shop/redact` the raw topic
    /// holds (once, for raw data written before the registry existed: run it before the first
    /// replay or rewrite after upgrading).
    SeedErasures(seed::SeedArgs),
}

#[derive(Subcommand)]
enum TopicsCmd {
    /// Create missing topics and verify existing ones (partitions, configs); never changes an
    /// existing topic: a mismatch is reported as an error.
    Apply,
    /// Print the catalogue without touching the cluster.
    List,
}

/// The sections of a service config the CLI needs; other sections are ignored.
#[derive(Deserialize, Default)]
struct CliConfig {
    #[serde(default)]
    kafka: KafkaConfig,
    #[serde(default)]
    topics: TopicsConfig,
    /// The erasure registry's hash key: redrive and backfill skip erased subjects.
    #[serde(default)]
    erasure: ErasureConfig,
}

fn load(file: Option<&std::path::Path>) -> anyhow::Result<CliConfig> {
    // Not deny_unknown_fields: one file can serve a service and the CLI.
    Ok(runtime::config::load_tool_config("", file)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.common.log.init()?;
    tracing::debug!(config = ?cli.common.config, version = env!("CARGO_PKG_VERSION"), "tillstream starting.");
    match cli.command {
        Cmd::Topics { action } => {
            let cfg = load(cli.common.config.as_deref())?;
            match action {
                TopicsCmd::Apply => topics::apply(&cfg.kafka, &cfg.topics).await,
                TopicsCmd::List => {
                    topics::list(&cfg.topics);
                    Ok(())
                }
            }
        }
        Cmd::Customer(args) => customer::show(&args).await,
        Cmd::Explain(args) => {
            let cfg = load(cli.common.config.as_deref())?;
            tokio::task::block_in_place(|| explain::run(&cfg.kafka, &cfg.topics, &args))
        }
        Cmd::Replay(args) => {
            let cfg = load(cli.common.config.as_deref())?;
            replay::run(&cfg.kafka, &cfg.topics, &args).await
        }
        Cmd::Dlq { action } => {
            let cfg = load(cli.common.config.as_deref())?;
            match action {
                dlq::DlqCmd::Inspect(args) => dlq::inspect(&cfg.kafka, &cfg.topics, &args),
                dlq::DlqCmd::Redrive(args) => {
                    dlq::redrive(&cfg.kafka, &cfg.topics, &cfg.erasure, &args).await
                }
                dlq::DlqCmd::Rewrite(args) => {
                    let source = args.source();
                    rewrite::run(&cfg.kafka, &cfg.topics, &cfg.erasure, source, &args.rewrite).await
                }
            }
        }
        Cmd::Raw { action } => {
            let cfg = load(cli.common.config.as_deref())?;
            match action {
                RawCmd::Rewrite(args) => {
                    let raw = rewrite::Source::Raw;
                    rewrite::run(&cfg.kafka, &cfg.topics, &cfg.erasure, raw, &args).await
                }
                RawCmd::SeedErasures(args) => {
                    seed::run(&cfg.kafka, &cfg.topics, &cfg.erasure, &args).await
                }
            }
        }
        Cmd::Backfill(args) => {
            let cfg = load(cli.common.config.as_deref())?;
            backfill::run(*args, &cfg.kafka, &cfg.topics, &cfg.erasure).await
        }
    }
}
