//! `shopify-sim` CLI: generate, send, sign and write fixtures (thin wrapper over the library).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use shopify_sim::{
    AdminOptions, FinishWebhook, ScenarioConfig, SendOptions, SyntheticSpec, fixtures, generate,
    send, sign, spawn_admin, spawn_synthetic_admin, write_fixtures, write_run,
};

#[derive(Parser)]
#[command(
    name = "shopify-sim",
    about = "Synthetic Shopify store: signed webhooks, load and ground truth"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct ScenarioArgs {
    /// Scenario TOML file (fields default when omitted).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Override the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the number of people.
    #[arg(long)]
    customers: Option<u32>,
    /// Override the timeline start (RFC 3339, `now`, `now-<N>d`).
    #[arg(long)]
    start: Option<String>,
}

impl ScenarioArgs {
    fn load(&self) -> Result<ScenarioConfig> {
        let mut cfg = match &self.scenario {
            Some(p) => ScenarioConfig::from_file(p)?,
            None => ScenarioConfig::default(),
        };
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(c) = self.customers {
            cfg.customers = c;
        }
        if let Some(s) = &self.start {
            cfg.start.clone_from(s);
        }
        // Live/relative starts are resolved here, the only place a clock is read.
        let cfg = cfg.resolve_start(chrono::Utc::now())?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a run and POST it to a receiver, writing the expected outcome.
    Send {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Receiver URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/shopify")]
        target: String,
        /// App secret used to sign.
        #[arg(long, env = "SHOPIFY_API_SECRET")]
        secret: String,
        /// Offered rate in deliveries/s (overrides the scenario; 0 = unlimited).
        #[arg(long)]
        rate: Option<f64>,
        /// Where to write the expected outcome.
        #[arg(long, default_value = "expected.json")]
        expected_out: PathBuf,
        /// Where to write the send report (also printed to stdout).
        #[arg(long)]
        report_out: Option<PathBuf>,
        /// Deliveries in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Retries after the first attempt.
        #[arg(long, default_value_t = 8)]
        max_retries: u32,
        /// First retry backoff in ms (doubles per retry; Shopify's is minutes).
        #[arg(long, default_value_t = 50)]
        backoff_base_ms: u64,
        /// Send only the first N deliveries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Generate a run into a directory (deliveries.jsonl, expected.json, scenario.toml).
    Generate {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the X-Shopify-Hmac-Sha256 value for the body read from stdin.
    Sign {
        /// App secret.
        #[arg(long, env = "SHOPIFY_API_SECRET")]
        secret: String,
    },
    /// Serve a fake Shopify GraphQL Admin API (bulk operations) over the scenario's store.
    Admin {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// Access token the fake accepts (`X-Shopify-Access-Token`).
        #[arg(
            long,
            env = "SHOPIFY_ADMIN_TOKEN",
            default_value = "shpat_fake_admin_token"
        )]
        token: String,
        /// Store contents as of this time (RFC 3339); default: the whole timeline.
        #[arg(long)]
        as_of: Option<String>,
        /// Leaky bucket size (cost points).
        #[arg(long, default_value_t = 1000.0)]
        bucket: f64,
        /// Points restored per second.
        #[arg(long, default_value_t = 50.0)]
        restore_rate: f64,
        /// Make the first orders operation fail with partial data.
        #[arg(long)]
        fail_first_orders: bool,
        /// POST `bulk_operations/finish` here when an operation ends (signed with `--secret`).
        #[arg(long)]
        finish_webhook: Option<String>,
        /// Where consent mutations send their webhooks (consent topic + customers/update),
        /// signed with --secret.
        #[arg(long)]
        customer_webhook: Option<String>,
        /// App secret for the finish webhook.
        #[arg(long, env = "SHOPIFY_API_SECRET", default_value = "")]
        secret: String,
        /// Serve a generated store of this many orders (one customer per four orders,
        /// streamed, children displaced far from parents) instead of the scenario's; for
        /// backfill benchmarks. The scenario's seed is used.
        #[arg(long)]
        synthetic_orders: Option<u64>,
    },
    /// Write one signed fixture per topic (plus edge cases) for ingest tests.
    Fixtures {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Secret the fixtures are signed with.
        #[arg(long, default_value = "tillstream-fixture-secret")]
        secret: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Send {
            scenario,
            target,
            secret,
            rate,
            expected_out,
            report_out,
            concurrency,
            max_retries,
            backoff_base_ms,
            limit,
        } => {
            let cfg = scenario.load()?;
            let run = generate(&cfg)?;
            let mut expected = serde_json::to_vec_pretty(&run.expected)?;
            expected.push(b'\n');
            std::fs::write(&expected_out, expected)
                .with_context(|| format!("writing {}", expected_out.display()))?;
            tracing::info!(
                deliveries = run.deliveries.len(),
                expected = %expected_out.display(),
                "generated run"
            );
            let mut deliveries = run.deliveries;
            if let Some(n) = limit {
                deliveries.truncate(n);
            }
            let options = SendOptions {
                rate_per_sec: rate.unwrap_or(cfg.rate_per_sec),
                phases: cfg.phases.clone(),
                concurrency,
                max_retries,
                backoff_base: Duration::from_millis(backoff_base_ms),
                ..SendOptions::new(target, secret)
            };
            let report = send(deliveries, options).await?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(p) = report_out {
                std::fs::write(&p, format!("{text}\n"))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            println!("{text}");
            if report.failed > 0 {
                anyhow::bail!("{} deliveries failed after all retries", report.failed);
            }
        }
        Cmd::Generate { scenario, out } => {
            let cfg = scenario.load()?;
            let run = generate(&cfg)?;
            write_run(&out, &cfg, &run)?;
            println!(
                "wrote {} deliveries and expected outcome for {} people to {}",
                run.deliveries.len(),
                run.expected.customers.len(),
                out.display()
            );
        }
        Cmd::Sign { secret } => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("reading stdin")?;
            println!("{}", sign(&body, secret.as_bytes()));
        }
        Cmd::Admin {
            scenario,
            listen,
            token,
            as_of,
            bucket,
            restore_rate,
            fail_first_orders,
            finish_webhook,
            customer_webhook,
            secret,
            synthetic_orders,
        } => {
            let cfg = scenario.load()?;
            let as_of = match as_of {
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .with_context(|| format!("--as-of {t:?}"))?
                        .with_timezone(&chrono::Utc),
                ),
                None => None,
            };
            let opts = AdminOptions {
                access_token: token,
                as_of,
                maximum_available: bucket,
                restore_rate,
                fail_first_orders,
                finish_webhook: finish_webhook.map(|url| FinishWebhook {
                    url,
                    secret: secret.clone(),
                }),
                ..AdminOptions::default()
            };
            let server = match synthetic_orders {
                Some(n) => {
                    let spec = SyntheticSpec::new(n, cfg.seed);
                    spawn_synthetic_admin(spec, opts, &listen).await?
                }
                None => spawn_admin(&cfg, opts, &listen).await?,
            };
            if let Some(url) = customer_webhook {
                server.set_customer_webhook(FinishWebhook { url, secret });
            }
            println!(
                "Admin API fake for {} ({} customers, {} orders) at {}/admin/api/<version>/graphql.json",
                cfg.shop_domain, server.customers, server.orders, server.base_url
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
        }
        Cmd::Fixtures { out, secret } => {
            let fx = fixtures(&secret)?;
            write_fixtures(&out, &fx, &secret)?;
            println!("wrote {} fixtures to {}", fx.len(), out.display());
        }
    }
    Ok(())
}
