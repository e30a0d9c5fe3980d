//! `tillstream backfill`: imports a shop's customers and orders from the Admin API's bulk
//! operations into the raw topic, as webhook-shaped envelopes marked `BACKFILL`.
//!
//! Steps: run (or resume) one bulk query per resource, wait for it, download and reassemble
//! its JSONL, convert every object into the events Shopify would have sent ([`convert`]), sort
//! all events by event time (so tiers and first purchases are reached in the order they
//! really were), and produce them with the idempotent producer, saving the checkpoint only
//! after Kafka acknowledged each batch. A failed operation's partial data is counted and
//! reported, never imported.

mod bulk;
mod checkpoint;
mod convert;
mod graphql;
mod jsonl;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use processor::erasure::{ErasureConfig, Registry};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::{KafkaConfig, Secret, TopicsConfig};
use schemas::{EventSource, ShopDomain, ShopifyEnvelope};
use tokio::sync::Notify;

use bulk::Resource;
use checkpoint::{Checkpoint, CheckpointFile};
use convert::Event;
use graphql::AdminClient;

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
    /// How often to poll a running bulk operation.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Stop after producing this many events in this run (import in slices; resume later).
    #[arg(long)]
    max_events: Option<usize>,
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
    let mut cp = CheckpointFile::open(args.checkpoint.as_deref(), fresh)?;
    if cp.state.completed && !args.dry_run {
        println!(
            "backfill already complete ({} events); delete the checkpoint to run it again",
            cp.state.produced
        );
        return Ok(());
    }
    let notice = match &args.finish_listen {
        Some(addr) => Some(listen_for_finish(addr).await?),
        None => None,
    };

    // 1. One bulk operation per resource, reused from the checkpoint when still readable.
    let mut files = Vec::new();
    for resource in [Resource::Customers, Resource::Orders] {
        let text = obtain(&client, &mut cp, resource, &filter, &args, notice.clone()).await?;
        files.push((resource, text));
    }

    // 2. Reassemble and convert.
    let mut events: Vec<Event> = Vec::new();
    let mut objects: BTreeMap<&str, usize> = BTreeMap::new();
    for (resource, text) in &files {
        let a = jsonl::assemble(text);
        if a.bad_lines > 0 || a.orphans > 0 {
            tracing::warn!(
                resource = resource.as_str(),
                bad_lines = a.bad_lines,
                orphans = a.orphans,
                "Unusable lines in the bulk result."
            );
        }
        let mut invalid = 0usize;
        for root in &a.roots {
            let converted = match resource {
                Resource::Customers => convert::customer(root),
                Resource::Orders => convert::order(root),
            };
            match converted {
                Ok(ev) => events.extend(ev),
                Err(e) => {
                    invalid += 1;
                    tracing::warn!(resource = resource.as_str(), id = %root.get("id").unwrap_or(&serde_json::Value::Null), error = %e, "Object skipped.");
                }
            }
        }
        *objects.entry(resource.as_str()).or_default() += a.roots.len() - invalid;
        if invalid > 0 {
            println!(
                "{}: {invalid} objects skipped (no id or bad timestamps; see the log)",
                resource.as_str()
            );
        }
    }
    // Event time first; the delivery id breaks ties, so the order never depends on the file.
    events.sort_by(|a, b| (a.at_ms, &a.delivery_id).cmp(&(b.at_ms, &b.delivery_id)));
    let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *by_topic.entry(e.topic).or_default() += 1;
    }
    let summary = format!(
        "{} customers, {} orders → {} events ({})",
        objects.get("customers").unwrap_or(&0),
        objects.get("orders").unwrap_or(&0),
        events.len(),
        by_topic
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let range = match (events.first(), events.last()) {
        (Some(f), Some(l)) => format!("{} .. {}", fmt_ms(f.at_ms), fmt_ms(l.at_ms)),
        _ => "none".into(),
    };
    if args.dry_run {
        println!(
            "dry run: would import {summary}; event times {range}; topic {}",
            topics.raw
        );
        return Ok(());
    }
    println!("importing {summary}; event times {range}");

    // 3. Produce, checkpointing after every acknowledged batch.
    cp.state.total = Some(events.len());
    if cp.state.produced > events.len() {
        cp.state.produced = 0;
    }
    cp.save()?;
    let producer: FutureProducer = kafka
        .producer("tillstream-backfill")
        .create()
        .context("creating the Kafka producer")?;
    let bar =
        ProgressBar::with_draw_target(Some(events.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events ({per_sec}, ETA {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(cp.state.produced as u64);
    let start = cp.state.produced;
    let stop = args
        .max_events
        .map_or(events.len(), |m| (start + m).min(events.len()));
    let now = runtime::now_ms();
    // The Admin API still returns an erased customer's orders: they must not enter the raw
    // topic again (the processor would drop them, but the raw log must forget too).
    let erasures = tokio::task::block_in_place(|| Registry::load(erasure, kafka, &topics.erasures))
        .context("cannot read the erasure registry")?;
    let mut erased = 0usize;
    for chunk in events.get(start..stop).unwrap_or_default().chunks(500) {
        let mut prepared = Vec::with_capacity(chunk.len());
        for e in chunk {
            let key = schemas::routing_key(&shop, e.topic, &e.body);
            if erasures.covers(&key, e.at_ms) {
                erased += 1;
                continue;
            }
            let env = ShopifyEnvelope {
                delivery_id: e.delivery_id.clone(),
                event_id: None,
                topic: e.topic.to_owned(),
                shop_domain: shop_name.clone(),
                api_version: Some(args.api_version.clone()),
                triggered_at_ms: Some(e.at_ms),
                received_at_ms: now,
                routing_key: key.as_str().to_owned(),
                source: EventSource::Backfill,
                webhook_name: None,
                body: e.body.clone(),
            };
            prepared.push((
                env.encode().context("encoding an envelope")?,
                env.routing_key,
            ));
        }
        // `join_all` polls in order, so records are queued in event-time order (one partition
        // per key keeps it).
        let acks = prepared.iter().map(|(payload, key)| {
            producer.send(
                FutureRecord::to(&topics.raw).key(key).payload(payload),
                Duration::from_secs(60),
            )
        });
        for r in futures::future::join_all(acks).await {
            r.map_err(|(e, _)| e)
                .context("Kafka did not acknowledge a backfill record")?;
        }
        cp.state.produced += chunk.len();
        cp.save()?;
        bar.set_position(cp.state.produced as u64);
        bar.set_message(format!(
            "{} throttled",
            client.throttled.load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
    if cp.state.produced < events.len() {
        println!(
            "stopped after {} of {} events (--max-events); run again with the same --checkpoint to continue",
            cp.state.produced,
            events.len()
        );
        return Ok(());
    }
    cp.state.completed = true;
    cp.save()?;
    println!(
        "backfill complete: {} events on {} ({} produced in this run, {} throttled answers, {erased} about erased customers left out)",
        events.len(),
        topics.raw,
        cp.state.produced - start,
        client.throttled.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// The JSONL of a completed operation for `resource`: the checkpoint's, else a new one.
async fn obtain(
    client: &AdminClient,
    cp: &mut CheckpointFile,
    resource: Resource,
    filter: &str,
    args: &BackfillArgs,
    notice: Option<Arc<Notify>>,
) -> anyhow::Result<String> {
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
                    cp.state.produced = 0;
                }
                cp.state.operations.insert(resource, id.clone());
                if !args.dry_run {
                    cp.save()?;
                }
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
            cp.state.operations.remove(&resource);
            continue;
        };
        match (op.status.as_str(), &op.url) {
            ("COMPLETED", Some(url)) => return bulk::download(client, url).await,
            // A completed operation with no objects has no file.
            ("COMPLETED", None) => return Ok(String::new()),
            _ => {}
        }
        let partial = match &op.partial_url {
            Some(url) => {
                let text = bulk::download(client, url).await?;
                let a = jsonl::assemble(&text);
                format!(
                    "partial data at {url}: {} {label}, {} nested objects, {} orphaned lines, {} unreadable lines — NOT imported",
                    a.roots.len(),
                    a.children,
                    a.orphans,
                    a.bad_lines
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
        cp.state.operations.remove(&resource);
        cp.state.failed_operations.push(op.id.clone());
        if !args.dry_run {
            cp.save()?;
        }
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
