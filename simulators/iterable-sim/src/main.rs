//! `iterable-sim` binary: serves the simulator until Ctrl-C / SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use iterable_sim::{ProjectType, RateLimitBody, SimConfig};
use tokio_util::sync::CancellationToken;

/// In-memory simulator of Iterable's REST API.
#[derive(Parser, Debug)]
#[command(name = "iterable-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ITERABLE_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
    /// TOML configuration file (see the crate README); flags below override it.
    #[arg(long, env = "ITERABLE_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// API key(s) of the first project (replaces its keys; repeat or comma-separate).
    #[arg(long, env = "ITERABLE_SIM_API_KEY", value_delimiter = ',')]
    api_key: Vec<String>,
    /// Project type of the first project: hybrid, userId or email.
    #[arg(long, env = "ITERABLE_SIM_PROJECT_TYPE", value_parser = parse_project_type)]
    project_type: Option<ProjectType>,
    /// Disable rate limiting entirely.
    #[arg(long, env = "ITERABLE_SIM_NO_RATE_LIMITS")]
    no_rate_limits: bool,
    /// 429 body style: json, text or alternate.
    #[arg(long, value_parser = parse_body_style)]
    rate_limit_body: Option<RateLimitBody>,
    /// Send `Retry-After: <secs>` on 429s.
    #[arg(long)]
    retry_after: Option<u64>,
    /// events/track for unknown users creates them instead of failing.
    #[arg(long)]
    track_creates_users: bool,
    /// Fraction of requests answered with a random 5xx.
    #[arg(long)]
    error_rate: Option<f64>,
    /// Latency added to every request, in ms.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// System webhook receiver URL (events are only recorded without it).
    #[arg(long, env = "ITERABLE_SIM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Name of the header carrying the webhook secret (default Authorization).
    #[arg(long, env = "ITERABLE_SIM_WEBHOOK_AUTH_HEADER")]
    webhook_auth_header: Option<String>,
    /// Value of that header (prefer the environment variable: it is a secret).
    #[arg(long, env = "ITERABLE_SIM_WEBHOOK_AUTH_VALUE", hide_env_values = true)]
    webhook_auth_value: Option<String>,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

fn parse_project_type(s: &str) -> Result<ProjectType, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown project type {s:?} (hybrid, userId, email)"))
}

fn parse_body_style(s: &str) -> Result<RateLimitBody, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown 429 body style {s:?} (json, text, alternate)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .init();

    let mut config = match &args.config {
        Some(path) => SimConfig::from_toml_file(path)?,
        None => SimConfig::default(),
    };
    if let Some(first) = config.projects.first_mut() {
        if !args.api_key.is_empty() {
            first.api_keys = args.api_key.clone();
        }
        if let Some(t) = args.project_type {
            first.project_type = t;
        }
    }
    if args.no_rate_limits {
        config.rate_limits.enabled = false;
    }
    if let Some(style) = args.rate_limit_body {
        config.rate_limits.response.body = style;
    }
    if args.retry_after.is_some() {
        config.rate_limits.response.retry_after_secs = args.retry_after;
    }
    if args.track_creates_users {
        config.behaviour.track_creates_unknown_users = true;
    }
    if let Some(r) = args.error_rate {
        config.faults.error_rate = r;
    }
    if let Some(ms) = args.latency_ms {
        config.faults.latency_ms = ms;
    }
    if args.webhook_url.is_some() {
        config.system_webhooks.url = args.webhook_url.clone();
    }
    if let Some(h) = &args.webhook_auth_header {
        config.system_webhooks.auth_header = h.clone();
    }
    if let Some(v) = &args.webhook_auth_value {
        config.system_webhooks.auth_value = Some(iterable_sim::Secret(v.clone()));
    }
    config.validate()?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        projects = config.projects.len(),
        rate_limits = config.rate_limits.enabled,
        system_webhooks = config.system_webhooks.url.as_deref().unwrap_or("-"),
        "iterable-sim listening"
    );

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    iterable_sim::run(config, listener, shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
