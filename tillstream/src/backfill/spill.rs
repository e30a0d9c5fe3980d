//! Bounded-memory reassembly: a bulk file's lines are spread over bucket files on disk by the
//! object they belong to, so each bucket holds whole objects (a root and all its children)
//! and can be reassembled on its own, whatever the distance between a child and its parent.
//!
//! A line belongs to its `__parentId` when it has one, else to its own `id`. Buckets are
//! planned from the file size Shopify reports; one that still comes out larger than
//! [`BUCKET_BYTES`] (a wrong or missing size) is split again with another hash salt, so the
//! memory a bucket needs never depends on the store's size, only on the largest single object.
//! The queries the backfill runs nest one connection level (orders → line items): a
//! grandchild line would be filed under its parent (a child), not the root, and be reported
//! as an orphan.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Largest bucket reassembled in memory (its parsed objects take a few times this).
pub(crate) const BUCKET_BYTES: u64 = 8 << 20;
/// Most buckets written at once (one buffered file each).
const MAX_BUCKETS: u64 = 256;
/// Splits of an oversized bucket stop here (one object larger than a bucket is loaded whole).
const MAX_DEPTH: u32 = 6;

/// The two fields that decide a line's bucket; the rest is skipped, not allocated.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(rename = "__parentId", default)]
    parent: Option<serde_json::Value>,
}

/// Which object a line belongs to; `Err` for a line that is not a usable JSON object.
fn group_of(line: &[u8]) -> Result<Option<String>, ()> {
    let head: Head = serde_json::from_slice(line).map_err(|_| ())?;
    match head.parent {
        Some(serde_json::Value::String(p)) => Ok(Some(p)),
        Some(_) => Err(()),
        // A root without a string id is filed anyway: conversion reports it as skipped.
        None => Ok(head.id.and_then(|v| v.as_str().map(str::to_owned))),
    }
}

/// FNV-1a of the key, then MurmurHash3's 64-bit finalizer over it and the salt: stable across
/// runs and Rust versions, so a bucket layout can be reproduced. The finalizer matters: the
/// low bits of FNV-1a with a salted start depend only on the low bits before, so a bucket's
/// split (which uses the next salt) reused the bits that had chosen the bucket and filed every
/// object into the same sub-bucket again, down to `MAX_DEPTH`.
fn hash(salt: u32, key: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let fmix = |mut x: u64| {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    };
    fmix(h ^ fmix(u64::from(salt).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// How many buckets a file of `bytes` needs (half-full buckets leave room for uneven hashing).
fn plan(bytes: Option<u64>) -> u64 {
    match bytes {
        Some(b) => b.div_ceil(BUCKET_BYTES / 2).clamp(1, MAX_BUCKETS),
        None => 64,
    }
}

/// A bucket file ready to be reassembled.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) path: PathBuf,
    depth: u32,
}

/// Writes lines into bucket files under one directory.
pub(crate) struct Partitioner {
    salt: u32,
    depth: u32,
    writers: Vec<(PathBuf, BufWriter<File>)>,
    /// Lines that are not JSON objects (or carry a non-string `__parentId`).
    pub(crate) bad_lines: usize,
    /// Bytes of all lines read.
    pub(crate) bytes: u64,
}

impl Partitioner {
    /// Buckets for a file of about `size` bytes (None: unknown) in `dir` (created, emptied).
    pub(crate) fn new(dir: &Path, size: Option<u64>) -> anyhow::Result<Self> {
        Self::with(dir, plan(size), 0)
    }

    fn with(dir: &Path, n: u64, depth: u32) -> anyhow::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let writers = (0..n)
            .map(|i| {
                let path = dir.join(format!("bucket-{i:04}.jsonl"));
                let file =
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                Ok((path, BufWriter::with_capacity(32 * 1024, file)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            salt: depth,
            depth,
            writers,
            bad_lines: 0,
            bytes: 0,
        })
    }

    /// Files one line (blank lines are skipped).
    pub(crate) fn push(&mut self, line: &[u8]) -> anyhow::Result<()> {
        self.bytes += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(group) = group_of(line) else {
            self.bad_lines += 1;
            return Ok(());
        };
        let n = self.writers.len() as u64;
        let i = group.map_or(0, |g| hash(self.salt, &g) % n);
        let (path, w) = &mut self.writers[usize::try_from(i).unwrap_or(0)];
        w.write_all(line)
            .and_then(|()| w.write_all(b"\n"))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Flushes every bucket and returns the non-empty ones.
    pub(crate) fn finish(self) -> anyhow::Result<Vec<Bucket>> {
        let mut out = Vec::new();
        for (path, mut w) in self.writers {
            w.flush()
                .with_context(|| format!("writing {}", path.display()))?;
            drop(w);
            if std::fs::metadata(&path)?.len() == 0 {
                std::fs::remove_file(&path)?;
            } else {
                out.push(Bucket {
                    path,
                    depth: self.depth,
                });
            }
        }
        Ok(out)
    }
}

/// Reads a bucket's text, splitting it first (recursively, into sub-directories) while it is
/// larger than [`BUCKET_BYTES`]; `each` gets every resulting bucket's text in turn.
pub(crate) fn for_each_text(
    bucket: Bucket,
    each: &mut dyn FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(&bucket.path)?.len();
    if size > BUCKET_BYTES && bucket.depth < MAX_DEPTH {
        let dir = bucket.path.with_extension("split");
        let n = size.div_ceil(BUCKET_BYTES / 2).clamp(2, 64);
        let mut p = Partitioner::with(&dir, n, bucket.depth + 1)?;
        let file = std::io::BufReader::new(File::open(&bucket.path)?);
        for line in std::io::BufRead::split(file, b'\n') {
            p.push(&line.with_context(|| format!("reading {}", bucket.path.display()))?)?;
        }
        let parts = p.finish()?;
        std::fs::remove_file(&bucket.path)?;
        for part in parts {
            for_each_text(part, each)?;
        }
        return std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing {}", dir.display()));
    }
    let bytes = std::fs::read(&bucket.path)
        .with_context(|| format!("reading {}", bucket.path.display()))?;
    // Lines were checked to be JSON (hence UTF-8) when filed.
    let text = String::from_utf8_lossy(&bytes);
    each(&text)?;
    std::fs::remove_file(&bucket.path)
        .with_context(|| format!("removing {}", bucket.path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tillstream-spill-{name}-{}", std::process::id()))
    }

    #[test]
    fn children_share_their_parents_bucket_and_oversized_buckets_split() {
        let d = dir("split");
        // A one-bucket plan for 3,000 orders of ~4 KB each: the bucket is too large and splits.
        let mut p = Partitioner::with(&d, 1, 0).unwrap();
        let pad = "x".repeat(4000);
        for i in 0..3000 {
            p.push(format!(r#"{{"id":"gid://shopify/LineItem/{i}","__parentId":"gid://shopify/Order/{i}"}}"#).as_bytes()).unwrap();
        }
        for i in 0..3000 {
            p.push(format!(r#"{{"id":"gid://shopify/Order/{i}","pad":"{pad}"}}"#).as_bytes())
                .unwrap();
        }
        p.push(b"not json").unwrap();
        p.push(br#"{"id":"x","__parentId":7}"#).unwrap();
        p.push(b"  ").unwrap();
        assert_eq!(p.bad_lines, 2);
        let buckets = p.finish().unwrap();
        assert_eq!(buckets.len(), 1);
        let (mut texts, mut roots) = (0, 0);
        for b in buckets {
            for_each_text(b, &mut |text| {
                texts += 1;
                assert!(text.len() as u64 <= BUCKET_BYTES, "{}", text.len());
                let a = super::super::jsonl::assemble(text);
                assert_eq!((a.orphans, a.children), (0, a.roots.len()));
                roots += a.roots.len();
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(roots, 3000);
        assert!(texts > 1, "the 12 MB bucket was split");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "buckets removed");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    /// A bucket's split must spread its objects over the sub-buckets: the keys of one bucket
    /// at depth 0 share the low bits that chose it, so a split that reused those bits filed
    /// them all together again, down to the last depth, and the whole oversized bucket was
    /// then loaded at once (the 2M-order backfill peaked at 279 MiB).
    #[test]
    fn a_split_spreads_a_buckets_objects() {
        let keys: Vec<String> = (0..200_000)
            .map(|i| format!("gid://shopify/Order/{}", 5_000_000 + i * 7))
            .collect();
        let top = 256;
        let same: Vec<&String> = keys.iter().filter(|k| hash(0, k) % top == 3).collect();
        assert!(same.len() > 500, "{}", same.len());
        let parts = 4;
        let mut counts = [0usize; 4];
        for k in &same {
            counts[usize::try_from(hash(1, k) % parts).unwrap()] += 1;
        }
        let max = *counts.iter().max().unwrap();
        assert!(
            max * 10 < same.len() * 4,
            "a split at depth 1 left {max} of {} objects in one part: {counts:?}",
            same.len()
        );
    }
}
