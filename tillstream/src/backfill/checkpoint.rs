//! The resume file: which bulk operations a run uses and how many of its events Kafka acked.
//!
//! Events are produced in a deterministic order (sorted by event time and delivery id), so
//! "the first `produced` events are on the raw topic" is all a resumed run needs, as long as
//! it reads the same operations' files. When an operation can no longer be read (URLs expire
//! after 7 days) a new one is started and production restarts from zero: re-sent events keep
//! their delivery ids, so nothing is counted twice. Written atomically (temp file + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::bulk::Resource;

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
    /// Events acknowledged by Kafka, in production order.
    #[serde(default)]
    pub(crate) produced: usize,
    /// Events in the run, once known.
    #[serde(default)]
    pub(crate) total: Option<usize>,
    /// Everything was produced.
    #[serde(default)]
    pub(crate) completed: bool,
}

/// A checkpoint bound to its file (or to nothing, when the run is not resumable).
pub(crate) struct CheckpointFile {
    path: Option<PathBuf>,
    pub(crate) state: Checkpoint,
}

impl CheckpointFile {
    /// Loads `path` when it exists, checking it belongs to the same shop and range.
    pub(crate) fn open(path: Option<&Path>, fresh: Checkpoint) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                path: None,
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
            state,
        })
    }

    /// Writes the state (no-op without a file).
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
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
        let mut f = CheckpointFile::open(Some(&path), fresh.clone()).unwrap();
        f.state
            .operations
            .insert(Resource::Orders, "gid://shopify/BulkOperation/1".into());
        f.state.produced = 42;
        f.save().unwrap();
        let again = CheckpointFile::open(Some(&path), fresh.clone()).unwrap();
        assert_eq!(again.state.produced, 42);
        let other = Checkpoint {
            shop: "b.myshopify.com".into(),
            ..fresh
        };
        assert!(CheckpointFile::open(Some(&path), other).is_err());
    }
}
