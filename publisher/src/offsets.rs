//! Per-partition contiguous-commit tracking: what offset is safe to commit. Pure.
//!
//! Commands of one partition finish out of order (different users run in parallel, a batch
//! answers later than a single request). Kafka offsets, however, are a single number per
//! partition: committing `n` says "everything below `n` is done". So the committable offset
//! of a partition is the *lowest offset still pending* (delivered or dead-lettered commands
//! above it must wait), or one past the highest offset seen when nothing is pending. A crash
//! then redelivers at most the commands from that lowest pending one onwards; deterministic
//! Iterable ids make the repeats harmless.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One partition's state.
#[derive(Debug, Default)]
struct PartitionState {
    /// Incremented on every assignment, so work read under an older assignment can be told
    /// apart and dropped instead of dispatched.
    generation: u64,
    /// Offsets read and not yet delivered or dead-lettered.
    pending: BTreeSet<i64>,
    /// One past the highest offset read under this assignment.
    next: Option<i64>,
    /// The last offset committed (or handed out for committing).
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
}

/// All partitions this consumer owns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionState>,
    generations: u64,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A partition was assigned: start fresh with a new generation.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        self.partitions.insert(
            partition,
            PartitionState {
                generation,
                ..PartitionState::default()
            },
        );
        generation
    }

    /// A partition was revoked: forget it and return the offset to commit for it, if any
    /// progress was made since the last commit.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        let state = self.partitions.remove(&partition)?;
        let offset = state.committable()?;
        (state.committed != Some(offset)).then_some(offset)
    }

    /// The current generation of a partition, if owned.
    pub fn generation(&self, partition: i32) -> Option<u64> {
        self.partitions.get(&partition).map(|p| p.generation)
    }

    /// A record was read: it is pending until [`OffsetTracker::complete`]. Returns the
    /// generation it belongs to (assigning the partition if no assignment was seen yet).
    pub fn track(&mut self, partition: i32, offset: i64) -> u64 {
        if !self.partitions.contains_key(&partition) {
            self.assign(partition);
        }
        let state = self.partitions.entry(partition).or_default();
        state.pending.insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        state.generation
    }

    /// A record was delivered or dead-lettered. Completions from an older generation still
    /// count: the command did reach Iterable or the dead-letter topic, so it is done.
    pub fn complete(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.pending.remove(&offset);
        }
    }

    /// True when a record of an older assignment (the partition was revoked, maybe
    /// re-assigned) should be dropped rather than dispatched.
    pub fn is_stale(&self, partition: i32, generation: u64) -> bool {
        self.generation(partition) != Some(generation)
    }

    /// Offsets to commit now (partition → next offset to read), marking them committed.
    pub fn take_commits(&mut self) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for (partition, state) in &mut self.partitions {
            if let Some(offset) = state.committable()
                && state.committed.is_none_or(|c| offset > c)
            {
                state.committed = Some(offset);
                out.insert(*partition, offset);
            }
        }
        out
    }

    /// Pending records over all partitions.
    pub fn pending(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_lowest_pending_offset() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        for o in 10..15 {
            t.track(0, o);
        }
        assert_eq!(t.take_commits().get(&0), Some(&10));
        t.complete(0, 11);
        t.complete(0, 12);
        // 10 is still pending: nothing new to commit even though 11 and 12 are done.
        assert!(t.take_commits().is_empty());
        t.complete(0, 10);
        assert_eq!(t.take_commits().get(&0), Some(&13));
        t.complete(0, 14);
        t.complete(0, 13);
        assert_eq!(t.take_commits().get(&0), Some(&15));
        assert!(t.take_commits().is_empty());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        t.track(0, 0);
        t.track(1, 100);
        t.complete(1, 100);
        let c = t.take_commits();
        assert_eq!(c.get(&0), Some(&0));
        assert_eq!(c.get(&1), Some(&101));
    }

    #[test]
    fn revoke_returns_progress_and_new_generation_makes_old_work_stale() {
        let mut t = OffsetTracker::new();
        let g1 = t.assign(3);
        t.track(3, 5);
        t.track(3, 6);
        t.complete(3, 5);
        assert_eq!(t.revoke(3), Some(6));
        assert!(t.is_stale(3, g1));
        let g2 = t.assign(3);
        assert_ne!(g1, g2);
        assert!(!t.is_stale(3, g2));
        // A late completion of the old generation does no harm.
        t.complete(3, 6);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.revoke(9), None);
    }

    #[test]
    fn replayed_lower_offsets_hold_the_commit_back() {
        let mut t = OffsetTracker::new();
        t.track(0, 50);
        t.complete(0, 50);
        assert_eq!(t.take_commits().get(&0), Some(&51));
        // After a seek backwards the lower offsets are pending again; never commit backwards.
        t.track(0, 40);
        assert!(t.take_commits().is_empty());
        t.complete(0, 40);
        assert!(t.take_commits().is_empty());
    }
}
