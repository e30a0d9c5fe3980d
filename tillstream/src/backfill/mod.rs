//! `tillstream backfill`: imports a shop's customers and orders from the Admin API's bulk
//! operations into the raw topic, as webhook-shaped envelopes marked `BACKFILL`.
//!
//! Steps: run (or resume) one bulk query per resource and wait for it; stream its JSONL into
//! buckets on disk, reassemble and convert each bucket into the events Shopify would have sent
//! ([`convert`]) and write them as sorted runs ([`sorter`]); then merge all runs in event-time
//! order (so tiers and first purchases are reached in the order they really were) and produce
//! them with the idempotent producer, saving the checkpoint only after Kafka acknowledged each
//! batch ([`produce`]). Memory is bounded by a bucket, not by the store. A failed operation's
//! partial data is counted and reported, never imported.

mod bulk;
mod checkpoint;
mod convert;
mod graphql;
mod jsonl;
mod produce;
mod progress;
mod runs;
mod sorter;
mod spill;
mod workdir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget};
use processor::erasure::{ErasureConfig, Registry};
use rdkafka::producer::FutureProducer;
use runtime::{KafkaConfig, Secret, TopicsConfig};
use schemas::ShopDomain;
use tokio::sync::Notify;

use bulk::{Finished, Resource};
use checkpoint::{Checkpoint, CheckpointFile, Spilled, Stage};
use graphql::AdminClient;
use workdir::WorkDir;

/// `tillstream backfill` options.
#[derive(clap::Args, Debug)]
pub(crate) struct BackfillArgs {
    /// The shop, `{name}.myshopify.com`.
    #[arg(long, env = "TILLSTREAM_SHOPIFY__SHOP_DOMAIN")]
    shop: String,
    /// Admin API version, pinned (`YYYY-MM`).
    #[arg(
        long,
        env = "TILLSTREAM_SHOPIFY__API_VERSION",
        default_value = "2026-07"
    )]
    api_version: String,
    /// Admin API base URL; default `https://{shop}` (set it to use a fake).
    #[arg(long, env = "TILLSTREAM_SHOPIFY__ADMIN_URL")]
    admin_url: Option<String>,
    /// File holding the Admin API access token; otherwise `TILLSTREAM_SHOPIFY__ACCESS_TOKEN`.
    #[arg(long, env = "TILLSTREAM_SHOPIFY__ACCESS_TOKEN_FILE")]
    access_token_file: Option<PathBuf>,
    /// Only objects updated at or after this time (RFC 3339 or `YYYY-MM-DD`).
    #[arg(long)]
    since: Option<String>,
    /// Only objects updated at or before this time (RFC 3339, or `YYYY-MM-DD` = end of day).
    #[arg(long)]
    until: Option<String>,
    /// Resume file: created when missing, continued when present.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Run the bulk queries and report what would be imported, without producing anything.
    #[arg(long)]
    dry_run: bool,
    /// What to import (comma-separated: `customers`, `orders`, `products`). Products are
    /// imported by their own run, before the history (`--resources products`, then the
    /// default): the processor reads partitions at their own pace, so an order imported in
    /// the same run may be processed before its product (and go out unenriched).
    #[arg(long, value_delimiter = ',', default_value = "customers,orders")]
    resources: Vec<Resource>,
    /// How often to poll a running bulk operation.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Stop after producing this many events in this run (import in slices; resume later).
    #[arg(long)]
    max_events: Option<usize>,
    /// Spill directory for the sorted runs (several GB for millions of orders); default: next
    /// to `--checkpoint` (`{checkpoint}.spill`, kept for a resume), else a temporary one.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// How often progress (rate, ETA) is logged when stderr is not a terminal.
    #[arg(
        long,
        env = "TILLSTREAM_BACKFILL__PROGRESS_INTERVAL",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    progress_interval: Duration,
    /// Start a new operation this many times when one fails (its partial data is never used).
    #[arg(long, default_value_t = 0)]
    retry_failed: u32,
    /// Listen here for the `bulk_operations/finish` webhook (signed with
    /// `TILLSTREAM_SHOPIFY__WEBHOOK_SECRET`); it ends the wait early. Polling remains the truth.
    #[arg(long)]
    finish_listen: Option<String>,
}

/// Normalises a `--since`/`--until` value to RFC 3339 UTC.
fn bound(value: Option<&str>, end_of_day: bool) -> anyhow::Result<Option<String>> {
    let Some(v) = value else { return Ok(None) };
    let t: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        t.with_timezone(&Utc)
    } else {
        let d = NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .with_context(|| format!("{v:?} is neither RFC 3339 nor YYYY-MM-DD"))?;
        let t = if end_of_day {
            d.and_hms_opt(23, 59, 59)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        t.context("invalid date")?.and_utc()
    };
    Ok(Some(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
}

fn access_token(file: Option<&std::path::Path>) -> anyhow::Result<Secret> {
    if let Ok(t) = std::env::var("TILLSTREAM_SHOPIFY__ACCESS_TOKEN")
        && !t.is_empty()
    {
        return Ok(Secret::new(t));
    }
    match file {
        Some(p) => Ok(Secret::from_file(p)?),
        None => bail!(
            "no Admin API access token: set TILLSTREAM_SHOPIFY__ACCESS_TOKEN or --access-token-file"
        ),
    }
}

/// Runs the backfill.
pub(crate) async fn run(
    args: BackfillArgs,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    erasure: &ErasureConfig,
) -> anyhow::Result<()> {
    let shop = ShopDomain::parse(&args.shop)
        .map_err(|e| anyhow::anyhow!("--shop {:?}: {e}", args.shop))?;
    let shop_name = shop.as_str().to_owned();
    let token = access_token(args.access_token_file.as_deref())?;
    let base = args
        .admin_url
        .clone()
        .unwrap_or_else(|| format!("https://{shop_name}"));
    let client = AdminClient::new(&base, &args.api_version, token)?;
    let since = bound(args.since.as_deref(), false)?;
    let until = bound(args.until.as_deref(), true)?;
    let filter = bulk::search_filter(since.as_deref(), until.as_deref());
    tracing::info!(shop = %shop_name, api_version = %args.api_version, %base, %filter, dry_run = args.dry_run, "Starting backfill.");

    let fresh = Checkpoint {
        shop: shop_name.clone(),
        api_version: args.api_version.clone(),
        since,
        until,
        ..Checkpoint::default()
    };
    let mut cp = CheckpointFile::open(args.checkpoint.as_deref(), fresh, args.dry_run)?;
    if let Stage::Complete { total } = cp.state.stage
        && !args.dry_run
    {
        println!(
            "backfill already complete ({total} events); delete the checkpoint to run it again"
        );
        return Ok(());
    }
    let work = WorkDir::open(args.work_dir.as_deref(), cp.path(), args.dry_run)?;
    let notice = match &args.finish_listen {
        Some(addr) => Some(listen_for_finish(addr).await?),
        None => None,
    };

    // 1. Each resource's file spilled to sorted runs: kept from an earlier run when its files
    // are intact, else from its operation (the checkpoint's when still readable, else new).
    for (resource, spilled) in cp.state.spilled.clone() {
        if !work.intact(&spilled) {
            tracing::warn!(resource = resource.as_str(), dir = %work.path().display(), "The spilled runs are gone or damaged; sorting the file again.");
            cp.state.respill(resource);
        }
    }
    let started = std::time::Instant::now();
    for &resource in &args.resources {
        if cp.state.spilled.contains_key(&resource) {
            continue;
        }
        let op = obtain(
            &client,
            &mut cp,
            resource,
            &filter,
            &args,
            notice.clone(),
            &work,
        )
        .await?;
        let spilled = match &op.url {
            Some(url) => {
                sorter::spill(
                    &client,
                    url,
                    op.file_size,
                    resource,
                    work.path(),
                    args.progress_interval,
                )
                .await?
            }
            // A completed operation with no objects has no file.
            None => Spilled::default(),
        };
        if spilled.invalid > 0 {
            println!(
                "{}: {} objects skipped (no id or bad timestamps; see the log)",
                resource.as_str(),
                spilled.invalid
            );
        }
        cp.state.spilled.insert(resource, spilled);
        cp.save()?;
    }
    let sorted_in = started.elapsed();

    // 2. What will be imported.
    let count = |r: Resource| cp.state.spilled.get(&r).map_or(0, |s| s.objects);
    let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
    let mut range: Option<(i64, i64)> = None;
    for s in cp.state.spilled.values() {
        for (t, n) in &s.by_topic {
            *by_topic.entry(t).or_default() += n;
        }
        if let Some((f, l)) = s.range {
            range = Some(range.map_or((f, l), |(a, b)| (a.min(f), b.max(l))));
        }
    }
    let events: usize = by_topic.values().sum();
    let summary = format!(
        "{} customers, {} orders, {} products → {events} events ({})",
        count(Resource::Customers),
        count(Resource::Orders),
        count(Resource::Products),
        by_topic
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let range = range.map_or_else(
        || "none".into(),
        |(f, l)| format!("{} .. {}", fmt_ms(f), fmt_ms(l)),
    );
    if args.dry_run {
        println!(
            "dry run: would import {summary}; event times {range}; topic {}",
            topics.raw
        );
        return Ok(());
    }
    println!("importing {summary}; event times {range}");

    // 3. Produce the merged runs, checkpointing after every acknowledged batch.
    cp.state.start_producing();
    cp.save()?;
    let producer: FutureProducer = kafka
        .producer("tillstream-backfill")
        .create()
        .context("creating the Kafka producer")?;
    let runs = work.runs(cp.state.spilled.values());
    // The Admin API still returns an erased customer's orders: they must not enter the raw
    // topic again (the processor would drop them, but the raw log must forget too).
    let erasures = tokio::task::block_in_place(|| Registry::load(erasure, kafka, &topics.erasures))
        .context("cannot read the erasure registry")?;
    let sealer = runtime::shred::Sealer::for_kafka(erasure, kafka, topics)?;
    let target = produce::Target {
        erasures: &erasures,
        sealer: sealer.as_ref(),
        producer: &producer,
        topic: &topics.raw,
        shop: &shop,
        api_version: &args.api_version,
    };
    let (produced, erased, took) = produce::produce(
        &mut cp,
        &runs,
        &target,
        args.max_events,
        &client.throttled,
        args.progress_interval,
    )
    .await?;
    let rate = produced as f64 / took.as_secs_f64().max(0.001);
    if cp.state.produced < events {
        println!(
            "stopped after {} of {events} events (--max-events); run again with the same --checkpoint to continue",
            cp.state.produced,
        );
        return Ok(());
    }
    cp.state.complete();
    cp.save()?;
    work.finished()?;
    println!(
        "backfill complete: {events} events on {} ({produced} produced in this run, {erased} about erased customers left out, {} throttled answers); sorted in {:.1} s, produced in {:.1} s ({rate:.0} events/s)",
        topics.raw,
        client.throttled.load(Ordering::Relaxed),
        sorted_in.as_secs_f64(),
        took.as_secs_f64(),
    );
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// A completed operation for `resource`: the checkpoint's, else a new one.
async fn obtain(
    client: &AdminClient,
    cp: &mut CheckpointFile,
    resource: Resource,
    filter: &str,
    args: &BackfillArgs,
    notice: Option<Arc<Notify>>,
    work: &WorkDir,
) -> anyhow::Result<Finished> {
    let mut retries = args.retry_failed;
    loop {
        let id = match cp.state.operations.get(&resource) {
            Some(id) => id.clone(),
            None => {
                let id = bulk::start(client, resource, filter).await?;
                println!("{}: started bulk operation {id}", resource.as_str());
                if cp.state.produced > 0 {
                    // Another file means another order: start over (ids keep it idempotent).
                    println!(
                        "{}: new operation, producing from the start again (already-sent events are deduplicated)",
                        resource.as_str()
                    );
                }
                cp.state.replace_operation(resource, id.clone());
                cp.save()?;
                id
            }
        };
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let label = resource.as_str();
        let waited = bulk::wait(client, &id, args.poll_interval, notice.clone(), |op| {
            spinner.set_message(format!(
                "{label}: {} ({} objects)",
                op.status, op.object_count
            ));
            spinner.tick();
        })
        .await;
        spinner.finish_and_clear();
        let Some(op) = waited? else {
            // Expired or unknown (results are kept 7 days): forget it and start a new one.
            tracing::warn!(operation = %id, "Shopify no longer knows this bulk operation; starting a new one.");
            cp.state.forget_operation(resource);
            continue;
        };
        if op.status == "COMPLETED" {
            return Ok(op);
        }
        let partial = match &op.partial_url {
            Some(url) => {
                let a =
                    sorter::count_partial(client, url, work.path(), args.progress_interval).await?;
                format!(
                    "partial data at {url}: {} {label}, {} nested objects, {} orphaned lines, {} unreadable lines — NOT imported",
                    a.roots, a.children, a.orphans, a.bad_lines
                )
            }
            None => "no partial data".into(),
        };
        let message = format!(
            "{label}: bulk operation {} ended {} (error code {}); {partial}",
            op.id,
            op.status,
            op.error_code.as_deref().unwrap_or("none"),
        );
        eprintln!("{message}");
        cp.state.forget_operation(resource);
        cp.state.failed_operations.push(op.id.clone());
        cp.save()?;
        if retries == 0 {
            bail!(
                "{message}. Run the same command again to start a new operation (--retry-failed N does it automatically)."
            );
        }
        retries -= 1;
    }
}

/// Serves `POST /` for `bulk_operations/finish` notices; each valid one wakes the poll loop.
async fn listen_for_finish(addr: &str) -> anyhow::Result<Arc<Notify>> {
    use axum::http::{HeaderMap, StatusCode};
    use base64::Engine;
    use hmac::{Hmac, Mac};

    let secret = std::env::var("TILLSTREAM_SHOPIFY__WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .context(
            "--finish-listen needs TILLSTREAM_SHOPIFY__WEBHOOK_SECRET to verify the notices",
        )?;
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
        let n = n.clone();
        let secret = secret.clone();
        async move {
            let given = headers
                .get("x-shopify-hmac-sha256")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
            else {
                return StatusCode::INTERNAL_SERVER_ERROR;
            };
            mac.update(&body);
            let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
                return StatusCode::UNAUTHORIZED;
            };
            if mac.verify_slice(&given).is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            if headers.get("x-shopify-topic").and_then(|v| v.to_str().ok())
                == Some("bulk_operations/finish")
            {
                tracing::info!(notice = %String::from_utf8_lossy(&body), "bulk_operations/finish received");
                // A stored permit: a notice arriving between two polls is not lost.
                n.notify_one();
            }
            StatusCode::OK
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--finish-listen {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "finish-notice listener stopped");
        }
    });
    Ok(notify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(
            bound(Some("2025-01-31"), true).unwrap().as_deref(),
            Some("2025-01-31T23:59:59Z")
        );
        assert_eq!(
            bound(Some("2025-01-31T10:00:00-05:00"), false)
                .unwrap()
                .as_deref(),
            Some("2025-01-31T15:00:00Z")
        );
        assert!(bound(Some("last tuesday"), false).is_err());
    }
}
