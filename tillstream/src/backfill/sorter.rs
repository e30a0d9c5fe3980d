//! One bulk file → sorted runs of events on disk, in memory bounded by a bucket, not by the
//! store: the download is streamed into buckets ([`spill`]), each bucket is reassembled
//! ([`jsonl`]) and converted ([`convert`]), and its events are sorted and written as a run
//! ([`runs`]); the runs are then merged down to [`RUNS_PER_RESOURCE`].
//!
//! What is relied on from Shopify: every line of the file is one JSON object; a child line's
//! `__parentId` is its parent's `id`, and both are in the same file. Nothing about the order
//! of lines: with `groupObjects: false` (the default since 2026-01) Shopify does not group
//! children under their parent, so a child may come anywhere in the file, before or after it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::bulk::{self, Resource};
use super::checkpoint::Spilled;
use super::convert::{self, Event};
use super::graphql::AdminClient;
use super::jsonl;
use super::progress::Progress;
use super::runs;
use super::spill::{Bucket, Partitioner, for_each_text};

/// Runs left per resource after the spill, so both resources' runs merge in one pass.
pub(crate) const RUNS_PER_RESOURCE: usize = runs::FAN_IN / 2;

/// Downloads `url` into buckets under `dir`; returns them and the count of unusable lines.
async fn partition(
    client: &AdminClient,
    url: &str,
    size: Option<u64>,
    dir: &Path,
    what: &'static str,
    interval: Duration,
) -> anyhow::Result<(Vec<Bucket>, usize)> {
    let mut p = Partitioner::new(dir, size)?;
    let mut progress = Progress::new(what, "bytes", 0, size, interval);
    // Blocking file writes from the download task: buffered, and this CLI runs nothing else.
    bulk::download(
        client,
        url,
        |line| p.push(line),
        |n| progress.set(n, String::new),
    )
    .await?;
    progress.finish();
    let bad = p.bad_lines;
    Ok((p.finish()?, bad))
}

/// Streams `url` (a completed operation's file of `size` bytes) into sorted runs under
/// `work/{resource}`; the runs' paths in the result are relative to `work`.
pub(crate) async fn spill(
    client: &AdminClient,
    url: &str,
    size: Option<u64>,
    resource: Resource,
    work: &Path,
    interval: Duration,
) -> anyhow::Result<Spilled> {
    let label = resource.as_str();
    let dir = work.join(label);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let what = match resource {
        Resource::Customers => "download customers",
        Resource::Orders => "download orders",
        Resource::Products => "download products",
    };
    let (buckets, bad_lines) =
        partition(client, url, size, &dir.join("buckets"), what, interval).await?;
    let work = work.to_owned();
    tokio::task::spawn_blocking(move || {
        sort_buckets(buckets, resource, &work, &dir, bad_lines, interval)
    })
    .await
    .context("the sort task panicked")?
}

fn sort_buckets(
    buckets: Vec<Bucket>,
    resource: Resource,
    work: &Path,
    dir: &Path,
    bad_lines: usize,
    interval: Duration,
) -> anyhow::Result<Spilled> {
    let label = resource.as_str();
    let mut out = Spilled {
        bad_lines,
        ..Spilled::default()
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    let what = match resource {
        Resource::Customers => "sort customers",
        Resource::Orders => "sort orders",
        Resource::Products => "sort products",
    };
    let mut progress = Progress::new(what, "buckets", 0, Some(buckets.len() as u64), interval);
    let mut next = 0usize;
    let mut name = || {
        next += 1;
        dir.join(format!("run-{next:06}"))
    };
    for (done, bucket) in buckets.into_iter().enumerate() {
        for_each_text(bucket, &mut |text| {
            let a = jsonl::assemble(text);
            out.orphans += a.orphans;
            out.bad_lines += a.bad_lines;
            let mut events: Vec<Event> = Vec::new();
            for root in &a.roots {
                let converted = match resource {
                    Resource::Customers => convert::customer(root),
                    Resource::Orders => convert::order(root),
                    Resource::Products => convert::product(root),
                };
                match converted {
                    Ok(ev) => {
                        out.objects += 1;
                        events.extend(ev);
                    }
                    Err(e) => {
                        out.invalid += 1;
                        tracing::warn!(resource = label, id = %root.get("id").unwrap_or(&serde_json::Value::Null), error = %e, "Object skipped.");
                    }
                }
            }
            if events.is_empty() {
                return Ok(());
            }
            runs::sort(&mut events);
            for e in &events {
                *out.by_topic.entry(e.topic.to_owned()).or_default() += 1;
            }
            let (first, last) = (events[0].at_ms, events[events.len() - 1].at_ms);
            out.range = Some(
                out.range
                    .map_or((first, last), |(f, l)| (f.min(first), l.max(last))),
            );
            let path = name();
            runs::write(&path, events.into_iter().map(Ok))?;
            paths.push(path);
            Ok(())
        })?;
        progress.set(done as u64 + 1, String::new);
    }
    progress.finish();
    if out.bad_lines > 0 || out.orphans > 0 {
        tracing::warn!(
            resource = label,
            bad_lines = out.bad_lines,
            orphans = out.orphans,
            "Unusable lines in the bulk result."
        );
    }
    let paths = runs::reduce(paths, RUNS_PER_RESOURCE, name)?;
    for p in paths {
        let len = std::fs::metadata(&p)?.len();
        let rel = p
            .strip_prefix(work)
            .context("a run outside the work directory")?;
        out.runs.push((rel.to_string_lossy().into_owned(), len));
    }
    Ok(out)
}

/// What a partial data file holds, counted without importing anything.
#[derive(Debug, Default)]
pub(crate) struct PartialCount {
    pub(crate) roots: usize,
    pub(crate) children: usize,
    pub(crate) orphans: usize,
    pub(crate) bad_lines: usize,
}

/// Counts a failed operation's partial data the same bounded way.
pub(crate) async fn count_partial(
    client: &AdminClient,
    url: &str,
    work: &Path,
    interval: Duration,
) -> anyhow::Result<PartialCount> {
    let dir = work.join("partial");
    let (buckets, bad_lines) =
        partition(client, url, None, &dir, "download partial data", interval).await?;
    let count = tokio::task::spawn_blocking(move || -> anyhow::Result<PartialCount> {
        let mut c = PartialCount {
            bad_lines,
            ..PartialCount::default()
        };
        for bucket in buckets {
            for_each_text(bucket, &mut |text| {
                let a = jsonl::assemble(text);
                c.roots += a.roots.len();
                c.children += a.children;
                c.orphans += a.orphans;
                c.bad_lines += a.bad_lines;
                Ok(())
            })?;
        }
        Ok(c)
    })
    .await
    .context("the count task panicked")??;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(count)
}
