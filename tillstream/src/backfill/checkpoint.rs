//! The resume file: which bulk operations a run uses, which of their files are already spilled
//! to sorted runs on disk, and how many of its events Kafka acked.
//!
//! Events are produced in a deterministic order (sorted by event time, delivery id and body;
//! see `runs`), so "the first `produced` events are on the raw topic" is all a resumed run
//! needs, as long as it reads the same operations' files: a spill lost with its work directory
//! is rebuilt from the same file and yields the same sequence. When an operation can no longer
//! be read (URLs expire after 7 days) a new one is started and production restarts from zero:
//! re-sent events keep their delivery ids, so nothing is counted twice. Written atomically
//! (temp file + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::bulk::Resource;

/// Where a backfill stands. Legal moves (all in [`Checkpoint`]'s methods): `Spilling` →
/// `Producing` once every resource is spilled, `Producing` → `Complete` when the last event
/// is acknowledged, and back to `Spilling` from anywhere when an operation is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Downloading and sorting the operations' files.
    #[default]
    Spilling,
    /// Producing the merged runs; `total` events in all.
    Producing { total: usize },
    /// Everything produced.
    Complete { total: usize },
}

/// One resource's file, reassembled, converted and sorted into runs in the work directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Spilled {
    /// Run files (names in the work directory) and their lengths, to notice a damaged spill.
    pub(crate) runs: Vec<(String, u64)>,
    /// Objects converted.
    pub(crate) objects: usize,
    /// Objects skipped (no id, bad timestamps).
    pub(crate) invalid: usize,
    /// Lines that were not JSON objects.
    pub(crate) bad_lines: usize,
    /// Child lines whose parent is not in the file.
    pub(crate) orphans: usize,
    /// Events per topic.
    pub(crate) by_topic: BTreeMap<String, usize>,
    /// Earliest and latest event time, Unix ms.
    pub(crate) range: Option<(i64, i64)>,
}

impl Spilled {
    pub(crate) fn events(&self) -> usize {
        self.by_topic.values().sum()
    }
}

/// One run's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) shop: String,
    pub(crate) api_version: String,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    /// The bulk operation (gid) read for each resource.
    #[serde(default)]
    pub(crate) operations: BTreeMap<Resource, String>,
    /// Operations that failed (kept for the report).
    #[serde(default)]
    pub(crate) failed_operations: Vec<String>,
    /// Resources whose file is spilled to sorted runs.
    #[serde(default)]
    pub(crate) spilled: BTreeMap<Resource, Spilled>,
    /// Events acknowledged by Kafka, in production order.
    #[serde(default)]
    pub(crate) produced: usize,
    #[serde(default)]
    pub(crate) stage: Stage,
}

impl Checkpoint {
    /// A new operation replaces `resource`'s: its spill is void, and since the merged order
    /// changes, production starts over.
    pub(crate) fn replace_operation(&mut self, resource: Resource, id: String) {
        self.operations.insert(resource, id);
        self.spilled.remove(&resource);
        self.produced = 0;
        self.stage = Stage::Spilling;
    }

    /// The operation of `resource` is gone (failed or expired).
    pub(crate) fn forget_operation(&mut self, resource: Resource) {
        self.operations.remove(&resource);
        self.spilled.remove(&resource);
        self.stage = Stage::Spilling;
    }

    /// `resource`'s spill was lost (work directory gone): rebuilt from the same file, it
    /// yields the same events, so `produced` stays valid.
    pub(crate) fn respill(&mut self, resource: Resource) {
        self.spilled.remove(&resource);
        self.stage = Stage::Spilling;
    }

    /// Every resource is spilled: production can start (or go on).
    pub(crate) fn start_producing(&mut self) {
        let total = self.spilled.values().map(Spilled::events).sum();
        if self.produced > total {
            self.produced = 0;
        }
        self.stage = Stage::Producing { total };
    }

    /// The last event was acknowledged.
    pub(crate) fn complete(&mut self) {
        if let Stage::Producing { total } = self.stage {
            self.stage = Stage::Complete { total };
        }
    }
}

/// A checkpoint bound to its file (or to nothing, when the run is not resumable or a dry run
/// must leave it untouched).
pub(crate) struct CheckpointFile {
    path: Option<PathBuf>,
    read_only: bool,
    pub(crate) state: Checkpoint,
}

impl CheckpointFile {
    /// Loads `path` when it exists, checking it belongs to the same shop and range.
    pub(crate) fn open(
        path: Option<&Path>,
        fresh: Checkpoint,
        read_only: bool,
    ) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                path: None,
                read_only,
                state: fresh,
            });
        };
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let saved: Checkpoint = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a backfill checkpoint", path.display()))?;
                if (&saved.shop, &saved.since, &saved.until)
                    != (&fresh.shop, &fresh.since, &fresh.until)
                {
                    bail!(
                        "{} belongs to another backfill (shop {}, since {:?}, until {:?}); use another --checkpoint file",
                        path.display(),
                        saved.shop,
                        saved.since,
                        saved.until
                    );
                }
                saved
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            path: Some(path.to_owned()),
            read_only,
            state,
        })
    }

    /// The checkpoint's path, when it has one.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the state (no-op without a file, or read-only).
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let Some(path) = self.path.as_ref().filter(|_| !self.read_only) else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&self.state)?;
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let dir = std::env::temp_dir().join(format!("tillstream-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cp.json");
        let _ = std::fs::remove_file(&path);
        let fresh = Checkpoint {
            shop: "a.myshopify.com".into(),
            api_version: "2026-07".into(),
            ..Checkpoint::default()
        };
        let mut f = CheckpointFile::open(Some(&path), fresh.clone(), false).unwrap();
        f.state
            .operations
            .insert(Resource::Orders, "gid://shopify/BulkOperation/1".into());
        f.state.produced = 42;
        f.state.stage = Stage::Producing { total: 50 };
        f.save().unwrap();
        let mut again = CheckpointFile::open(Some(&path), fresh.clone(), false).unwrap();
        assert_eq!(again.state.produced, 42);
        assert_eq!(again.state.stage, Stage::Producing { total: 50 });
        again.state.complete();
        assert_eq!(again.state.stage, Stage::Complete { total: 50 });
        again
            .state
            .replace_operation(Resource::Orders, "gid://shopify/BulkOperation/2".into());
        assert_eq!(
            (again.state.produced, again.state.stage),
            (0, Stage::Spilling)
        );
        let other = Checkpoint {
            shop: "b.myshopify.com".into(),
            ..fresh
        };
        assert!(CheckpointFile::open(Some(&path), other, false).is_err());
    }
}
