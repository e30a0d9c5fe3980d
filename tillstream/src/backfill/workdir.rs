//! The spill directory: where a backfill's buckets and sorted runs live between its phases.
//!
//! With a checkpoint it sits next to it (`{checkpoint}.spill`) and survives a crash, so a
//! resumed run goes straight back to producing; without one (or for a dry run) it is a
//! temporary directory removed when the command ends.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::checkpoint::Spilled;

/// The directory and whether it is this process's alone.
pub(crate) struct WorkDir {
    path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    /// `explicit` (`--work-dir`), else next to `checkpoint`, else temporary; a dry run
    /// always works in a temporary one so it never disturbs a real run's spill.
    pub(crate) fn open(
        explicit: Option<&Path>,
        checkpoint: Option<&Path>,
        dry_run: bool,
    ) -> anyhow::Result<Self> {
        let (path, temporary) = match (explicit, checkpoint) {
            (Some(p), _) if !dry_run => (p.to_owned(), false),
            (None, Some(cp)) if !dry_run => (cp.with_extension("spill"), false),
            _ => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!("tillstream-backfill-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, temporary })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every run of `spilled` is there with the length it was written with.
    pub(crate) fn intact(&self, spilled: &Spilled) -> bool {
        spilled.runs.iter().all(|(name, len)| {
            std::fs::metadata(self.path.join(name)).is_ok_and(|m| m.len() == *len)
        })
    }

    /// The run files of all `spilled` resources.
    pub(crate) fn runs<'a>(&self, spilled: impl IntoIterator<Item = &'a Spilled>) -> Vec<PathBuf> {
        spilled
            .into_iter()
            .flat_map(|s| s.runs.iter().map(|(name, _)| self.path.join(name)))
            .collect()
    }

    /// Everything was produced: the spill is no longer needed.
    pub(crate) fn finished(&self) -> anyhow::Result<()> {
        for sub in ["customers", "orders", "partial"] {
            let p = self.path.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        // Left empty, the directory goes too (a temporary one goes on drop).
        if !self.temporary && std::fs::read_dir(&self.path)?.next().is_none() {
            std::fs::remove_dir(&self.path)
                .with_context(|| format!("removing {}", self.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
