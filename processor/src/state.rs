//! In-memory state of the partitions an instance owns: per-key aggregates, timers, dedup.
//!
//! The compacted changelog topic is the source of truth; this is a cache rebuilt from it on
//! assignment. Keys changed by the open transaction are tracked as dirty and written to the
//! changelog in that transaction, so the cache and the changelog move together.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rules::Timer;
use schemas::{DedupRecord, KeyStateRecord, TimerRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// A timer as held in memory: compact strings instead of a parsed JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTimer {
    /// Rule-defined kind.
    pub kind: Box<str>,
    /// Unique within the key.
    pub timer_id: Box<str>,
    /// Due instant, event time ms.
    pub due_ms: i64,
    /// Payload as JSON text.
    pub payload: Box<str>,
}

impl StoredTimer {
    fn from_timer(t: Timer) -> Self {
        Self {
            kind: t.kind.into(),
            timer_id: t.timer_id.into(),
            due_ms: t.due_ms,
            payload: t.payload.to_string().into(),
        }
    }

    /// The rules' view of the timer.
    pub fn to_timer(&self) -> Timer {
        Timer {
            kind: self.kind.to_string(),
            timer_id: self.timer_id.to_string(),
            due_ms: self.due_ms,
            payload: serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// One key's state. The aggregate stays serialised (compact JSON) between inputs: decoding
/// it for the duration of one input costs microseconds, while keeping every aggregate
/// decoded would cost a kilobyte or more per customer (see docs/benchmarks.md).
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The rules' aggregate as JSON text.
    pub aggregate: Box<str>,
    /// Pending timers of this key.
    pub timers: Vec<StoredTimer>,
    /// Fingerprints seen in the dedup window: (64-bit hash, event time ms).
    pub dedup: Vec<(u64, i64)>,
    /// Event time of the last change.
    pub updated_at_ms: i64,
}

impl Default for KeyEntry {
    fn default() -> Self {
        Self {
            aggregate: "{}".into(),
            timers: Vec::new(),
            dedup: Vec::new(),
            updated_at_ms: 0,
        }
    }
}

impl KeyEntry {
    /// Decodes the aggregate; an unreadable one (never written by this version) starts empty.
    pub fn aggregate<S: DeserializeOwned + Default>(&self) -> S {
        serde_json::from_str(&self.aggregate).unwrap_or_default()
    }

    /// Stores the aggregate.
    pub fn set_aggregate<S: Serialize>(&mut self, state: &S) {
        // Serialising a plain data aggregate cannot fail; keep the old text if it somehow does.
        if let Ok(text) = serde_json::to_string(state) {
            self.aggregate = text.into();
        }
    }
}

/// Hashes a fingerprint string to the 64 bits kept in memory and on the changelog.
pub fn fingerprint(text: &str) -> u64 {
    let d = Sha256::digest(text.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The shop part of a processor key (`{shop}/{kind}/{id}`).
pub fn shop_of(key: &str) -> &str {
    key.split('/').next().unwrap_or_default()
}

/// State of one owned partition (of the raw, repartition and changelog topics together).
#[derive(Debug)]
pub struct PartitionState {
    /// Per-key entries. Keys are shared with the timer index (`Arc`), not copied.
    pub keys: HashMap<Arc<str>, KeyEntry>,
    /// Every pending timer of the partition in due order: (due, key, timer id).
    pub timer_index: BTreeSet<(i64, Arc<str>, Box<str>)>,
    /// Highest event time seen on this partition (ms).
    pub stream_time_ms: i64,
    /// Whether the consumer has caught up with the partition's end (wall clock then counts).
    pub caught_up: bool,
    /// Keys changed in the open transaction.
    pub dirty: HashSet<Arc<str>>,
    /// Keys purged in the open transaction (tombstones).
    pub purged: HashSet<Arc<str>>,
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            timer_index: BTreeSet::new(),
            stream_time_ms: i64::MIN,
            caught_up: false,
            dirty: HashSet::new(),
            purged: HashSet::new(),
        }
    }
}

/// Why a changelog record could not be loaded into memory.
#[derive(Debug, thiserror::Error)]
#[error("changelog record for {key}: {message}")]
pub struct RestoreError {
    /// The key.
    pub key: String,
    /// What was wrong.
    pub message: String,
}

impl PartitionState {
    /// The partition's "now": stream time while lagging; the later of stream time and the
    /// wall clock once caught up (so an idle partition still fires timers on time).
    pub fn now(&self, wall_clock_ms: i64) -> i64 {
        if self.caught_up {
            self.stream_time_ms.max(wall_clock_ms)
        } else {
            self.stream_time_ms
        }
    }

    /// The shared key handle for `key`, creating an empty entry if absent.
    pub fn intern(&mut self, key: &str) -> Arc<str> {
        if let Some((k, _)) = self.keys.get_key_value(key) {
            return Arc::clone(k);
        }
        let k: Arc<str> = key.into();
        self.keys.insert(Arc::clone(&k), KeyEntry::default());
        k
    }

    /// The entry for `key`, created empty if absent.
    pub fn entry(&mut self, key: &str) -> &mut KeyEntry {
        let k = self.intern(key);
        self.keys.entry(k).or_default()
    }

    /// Marks a key changed in the open transaction.
    pub fn mark_dirty(&mut self, key: &str) {
        let k = self.intern(key);
        self.dirty.insert(k);
    }

    /// Checks the fingerprints against the key's dedup window and records them when new.
    /// Returns true when any was seen before (the input is a duplicate).
    pub fn seen_before(
        &mut self,
        key: &str,
        prints: &[u64],
        event_time_ms: i64,
        window_ms: i64,
        max: usize,
    ) -> bool {
        let horizon = self.stream_time_ms.saturating_sub(window_ms);
        let e = self.entry(key);
        // Expire by event time first, so a restart (which restores the window) forgets exactly
        // what an uninterrupted run would have forgotten.
        e.dedup.retain(|(_, t)| *t >= horizon);
        if prints.iter().any(|p| e.dedup.iter().any(|(q, _)| q == p)) {
            return true;
        }
        for p in prints {
            e.dedup.push((*p, event_time_ms));
        }
        if e.dedup.len() > max {
            let excess = e.dedup.len() - max;
            e.dedup.drain(..excess);
        }
        e.dedup.shrink_to_fit();
        false
    }

    /// Removes fingerprints recorded by [`Self::seen_before`] for an input that was then
    /// dead-lettered, so a redrive of the same record is processed.
    pub fn forget(&mut self, key: &str, prints: &[u64]) {
        if let Some(e) = self.keys.get_mut(key) {
            e.dedup.retain(|(p, _)| !prints.contains(p));
        }
    }

    /// Arms (or replaces by id) a timer on `key`.
    pub fn set_timer(&mut self, key: &str, timer: Timer) {
        self.cancel_timer(key, &timer.timer_id);
        let k = self.intern(key);
        let stored = StoredTimer::from_timer(timer);
        self.timer_index
            .insert((stored.due_ms, Arc::clone(&k), stored.timer_id.clone()));
        self.entry(key).timers.push(stored);
    }

    /// Cancels a timer on `key` by id; absent timers are ignored.
    pub fn cancel_timer(&mut self, key: &str, timer_id: &str) {
        if let Some((k, e)) = self
            .keys
            .get_key_value(key)
            .map(|(k, _)| Arc::clone(k))
            .and_then(|k| self.keys.get_mut(&k).map(|e| (k, e)))
            && let Some(pos) = e.timers.iter().position(|t| &*t.timer_id == timer_id)
        {
            let t = e.timers.remove(pos);
            self.timer_index.remove(&(t.due_ms, k, t.timer_id));
        }
    }

    /// Removes and returns the earliest timer due at or before `now`, if any.
    pub fn pop_due(&mut self, now: i64) -> Option<(String, Timer)> {
        let (due, key, id) = self.timer_index.first().cloned()?;
        if due > now {
            return None;
        }
        self.timer_index.pop_first();
        let e = self.keys.get_mut(&key)?;
        let pos = e.timers.iter().position(|t| t.timer_id == id)?;
        Some((key.to_string(), e.timers.remove(pos).to_timer()))
    }

    /// Drops a key entirely (GDPR purge): its timers leave the index too.
    pub fn purge(&mut self, key: &str) {
        let Some((k, e)) = self.keys.remove_entry(key) else {
            self.purged.insert(key.into());
            return;
        };
        for t in e.timers {
            self.timer_index
                .remove(&(t.due_ms, Arc::clone(&k), t.timer_id));
        }
        self.dirty.remove(key);
        self.purged.insert(k);
    }

    /// The changelog record of a key.
    pub fn record(&self, key: &str) -> Option<KeyStateRecord> {
        let e = self.keys.get(key)?;
        Some(KeyStateRecord {
            key: key.to_owned(),
            shop_domain: shop_of(key).to_owned(),
            updated_at_ms: e.updated_at_ms,
            aggregate_json: e.aggregate.to_string(),
            timers: e
                .timers
                .iter()
                .map(|t| TimerRecord {
                    kind: t.kind.to_string(),
                    timer_id: t.timer_id.to_string(),
                    due_ms: t.due_ms,
                    payload_json: t.payload.to_string(),
                })
                .collect(),
            dedup: e
                .dedup
                .iter()
                .map(|(h, t)| DedupRecord {
                    fingerprint: format!("{h:016x}"),
                    event_time_ms: *t,
                })
                .collect(),
        })
    }

    /// Loads one changelog record (restore). A tombstone (`None`) removes the key.
    pub fn load(&mut self, key: &str, record: Option<KeyStateRecord>) -> Result<(), RestoreError> {
        // Remove any earlier version of the key first: the changelog holds full snapshots.
        if let Some((k, old)) = self.keys.remove_entry(key) {
            for t in old.timers {
                self.timer_index
                    .remove(&(t.due_ms, Arc::clone(&k), t.timer_id));
            }
        }
        let Some(r) = record else { return Ok(()) };
        if serde_json::from_str::<serde::de::IgnoredAny>(&r.aggregate_json).is_err() {
            return Err(RestoreError {
                key: key.to_owned(),
                message: "aggregate is not JSON".into(),
            });
        }
        let k: Arc<str> = key.into();
        let timers: Vec<StoredTimer> = r
            .timers
            .into_iter()
            .map(|t| StoredTimer {
                kind: t.kind.into(),
                timer_id: t.timer_id.into(),
                due_ms: t.due_ms,
                payload: t.payload_json.into(),
            })
            .collect();
        for t in &timers {
            self.timer_index
                .insert((t.due_ms, Arc::clone(&k), t.timer_id.clone()));
        }
        let dedup = r
            .dedup
            .into_iter()
            .filter_map(|d| {
                u64::from_str_radix(&d.fingerprint, 16)
                    .ok()
                    .map(|h| (h, d.event_time_ms))
            })
            .collect();
        self.stream_time_ms = self.stream_time_ms.max(r.updated_at_ms);
        self.keys.insert(
            k,
            KeyEntry {
                aggregate: r.aggregate_json.into(),
                timers,
                dedup,
                updated_at_ms: r.updated_at_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = PartitionState;

    fn timer(id: &str, due: i64) -> Timer {
        Timer {
            kind: "k".into(),
            timer_id: id.into(),
            due_ms: due,
            payload: serde_json::json!({"x": 1}),
        }
    }

    #[test]
    fn timers_fire_in_due_order_and_rearm_replaces() {
        let mut p = P::default();
        p.set_timer("a", timer("t1", 30));
        p.set_timer("b", timer("t1", 10));
        p.set_timer("a", timer("t2", 20));
        p.set_timer("a", timer("t1", 40)); // re-arm replaces a/t1@30
        assert_eq!(p.timer_index.len(), 3);
        assert!(p.pop_due(5).is_none());
        let order: Vec<_> = std::iter::from_fn(|| p.pop_due(100))
            .map(|(k, t)| (k, t.due_ms))
            .collect();
        assert_eq!(
            order,
            vec![("b".into(), 10), ("a".into(), 20), ("a".into(), 40)]
        );
    }

    #[test]
    fn dedup_is_windowed_in_event_time_and_bounded() {
        let mut p = P {
            stream_time_ms: 1_000,
            ..P::default()
        };
        assert!(!p.seen_before("k", &[1, 2], 1_000, 500, 8));
        assert!(p.seen_before("k", &[2], 1_000, 500, 8));
        p.stream_time_ms = 2_000; // past the window: forgotten
        assert!(!p.seen_before("k", &[1], 2_000, 500, 8));
        for i in 10..20 {
            p.seen_before("k", &[i], 2_000, 500, 4);
        }
        assert_eq!(p.keys["k"].dedup.len(), 4);
    }

    #[test]
    fn changelog_record_round_trips_through_load() {
        let mut p = P {
            stream_time_ms: 50,
            ..P::default()
        };
        p.entry("k").set_aggregate(&7u64);
        p.set_timer("k", timer("t", 99));
        p.seen_before("k", &[u64::MAX], 50, 1000, 8);
        let rec = p.record("k").unwrap();
        let mut q = P::default();
        q.load(
            "k",
            Some(KeyStateRecord::decode(&rec.encode().unwrap()).unwrap()),
        )
        .unwrap();
        assert_eq!(q.keys["k"].aggregate::<u64>(), 7);
        assert_eq!(q.keys["k"].dedup, vec![(u64::MAX, 50)]);
        assert_eq!(
            q.pop_due(100).unwrap().1.payload,
            serde_json::json!({"x": 1})
        );
        q.load("k", None).unwrap();
        assert!(q.keys.is_empty());
    }

    #[test]
    fn purge_drops_timers_and_marks_a_tombstone() {
        let mut p = P::default();
        p.set_timer("k", timer("t", 1));
        p.mark_dirty("k");
        p.purge("k");
        assert!(p.pop_due(10).is_none());
        assert!(p.purged.contains("k") && !p.dirty.contains("k"));
    }
}
