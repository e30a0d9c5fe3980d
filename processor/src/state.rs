//! In-memory state of the partitions an instance owns: per-key aggregates, timers, dedup.
//!
//! The compacted changelog topic is the source of truth; this is a cache rebuilt from it on
//! assignment. Keys changed by the open transaction are tracked as dirty and written to the
//! changelog in that transaction, so the cache and the changelog move together.

use std::collections::{BTreeSet, HashMap, HashSet};

use rules::Timer;
use schemas::{DedupRecord, KeyStateRecord, TimerRecord};
use sha2::{Digest, Sha256};

/// One key's state.
#[derive(Debug, Clone)]
pub struct KeyEntry<S> {
    /// The shop, kept for the changelog record.
    pub shop: String,
    /// The rules' aggregate.
    pub aggregate: S,
    /// Pending timers of this key.
    pub timers: Vec<Timer>,
    /// Fingerprints seen in the dedup window: (64-bit hash, event time ms).
    pub dedup: Vec<(u64, i64)>,
    /// Event time of the last change.
    pub updated_at_ms: i64,
}

impl<S: Default> KeyEntry<S> {
    fn new(shop: &str) -> Self {
        Self {
            shop: shop.to_owned(),
            aggregate: S::default(),
            timers: Vec::new(),
            dedup: Vec::new(),
            updated_at_ms: 0,
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

/// State of one owned partition (of the raw, repartition and changelog topics together).
#[derive(Debug)]
pub struct PartitionState<S> {
    /// Per-key entries.
    pub keys: HashMap<String, KeyEntry<S>>,
    /// Every pending timer of the partition in due order: (due, key, timer id).
    pub timer_index: BTreeSet<(i64, String, String)>,
    /// Highest event time seen on this partition (ms).
    pub stream_time_ms: i64,
    /// Whether the consumer has caught up with the partition's end (wall clock then counts).
    pub caught_up: bool,
    /// Keys changed in the open transaction.
    pub dirty: HashSet<String>,
    /// Keys purged in the open transaction (tombstones).
    pub purged: HashSet<String>,
}

impl<S> Default for PartitionState<S> {
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

impl<S: Default + Clone + serde::Serialize + serde::de::DeserializeOwned> PartitionState<S> {
    /// The partition's "now": stream time while lagging; the later of stream time and the
    /// wall clock once caught up (so an idle partition still fires timers on time).
    pub fn now(&self, wall_clock_ms: i64) -> i64 {
        if self.caught_up {
            self.stream_time_ms.max(wall_clock_ms)
        } else {
            self.stream_time_ms
        }
    }

    /// The entry for `key`, created empty if absent.
    pub fn entry(&mut self, key: &str, shop: &str) -> &mut KeyEntry<S> {
        self.keys
            .entry(key.to_owned())
            .or_insert_with(|| KeyEntry::new(shop))
    }

    /// Checks the fingerprints against the key's dedup window and records them when new.
    /// Returns true when any was seen before (the input is a duplicate).
    pub fn seen_before(
        &mut self,
        key: &str,
        shop: &str,
        prints: &[u64],
        event_time_ms: i64,
        window_ms: i64,
        max: usize,
    ) -> bool {
        let horizon = self.stream_time_ms.saturating_sub(window_ms);
        let e = self.entry(key, shop);
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
        false
    }

    /// Arms (or replaces by id) a timer on `key`.
    pub fn set_timer(&mut self, key: &str, shop: &str, timer: Timer) {
        self.cancel_timer(key, &timer.timer_id);
        self.timer_index
            .insert((timer.due_ms, key.to_owned(), timer.timer_id.clone()));
        self.entry(key, shop).timers.push(timer);
    }

    /// Cancels a timer on `key` by id; absent timers are ignored.
    pub fn cancel_timer(&mut self, key: &str, timer_id: &str) {
        if let Some(e) = self.keys.get_mut(key)
            && let Some(pos) = e.timers.iter().position(|t| t.timer_id == timer_id)
        {
            let t = e.timers.remove(pos);
            self.timer_index
                .remove(&(t.due_ms, key.to_owned(), t.timer_id));
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
        Some((key, e.timers.remove(pos)))
    }

    /// Drops a key entirely (GDPR purge): its timers leave the index too.
    pub fn purge(&mut self, key: &str) {
        if let Some(e) = self.keys.remove(key) {
            for t in e.timers {
                self.timer_index
                    .remove(&(t.due_ms, key.to_owned(), t.timer_id));
            }
        }
        self.dirty.remove(key);
        self.purged.insert(key.to_owned());
    }

    /// The changelog record of a key.
    pub fn record(&self, key: &str) -> Option<KeyStateRecord> {
        let e = self.keys.get(key)?;
        Some(KeyStateRecord {
            key: key.to_owned(),
            shop_domain: e.shop.clone(),
            updated_at_ms: e.updated_at_ms,
            // Serialising a plain data aggregate cannot fail; an empty object keeps the record valid.
            aggregate_json: serde_json::to_string(&e.aggregate).unwrap_or_else(|_| "{}".into()),
            timers: e
                .timers
                .iter()
                .map(|t| TimerRecord {
                    kind: t.kind.clone(),
                    timer_id: t.timer_id.clone(),
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
        if let Some(old) = self.keys.remove(key) {
            for t in old.timers {
                self.timer_index
                    .remove(&(t.due_ms, key.to_owned(), t.timer_id));
            }
        }
        let Some(r) = record else { return Ok(()) };
        let err = |message: String| RestoreError {
            key: key.to_owned(),
            message,
        };
        let aggregate: S =
            serde_json::from_str(&r.aggregate_json).map_err(|e| err(format!("aggregate: {e}")))?;
        let timers = r
            .timers
            .into_iter()
            .map(|t| {
                let payload =
                    serde_json::from_str(&t.payload_json).unwrap_or(serde_json::Value::Null);
                Timer {
                    kind: t.kind,
                    timer_id: t.timer_id,
                    due_ms: t.due_ms,
                    payload,
                }
            })
            .collect::<Vec<_>>();
        let dedup = r
            .dedup
            .into_iter()
            .filter_map(|d| {
                u64::from_str_radix(&d.fingerprint, 16)
                    .ok()
                    .map(|h| (h, d.event_time_ms))
            })
            .collect();
        for t in &timers {
            self.timer_index
                .insert((t.due_ms, key.to_owned(), t.timer_id.clone()));
        }
        self.stream_time_ms = self.stream_time_ms.max(r.updated_at_ms);
        self.keys.insert(
            key.to_owned(),
            KeyEntry {
                shop: r.shop_domain,
                aggregate,
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

    type P = PartitionState<u64>;

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
        p.set_timer("a", "s", timer("t1", 30));
        p.set_timer("b", "s", timer("t1", 10));
        p.set_timer("a", "s", timer("t2", 20));
        p.set_timer("a", "s", timer("t1", 40)); // re-arm replaces a/t1@30
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
        assert!(!p.seen_before("k", "s", &[1, 2], 1_000, 500, 8));
        assert!(p.seen_before("k", "s", &[2], 1_000, 500, 8));
        p.stream_time_ms = 2_000; // past the window: forgotten
        assert!(!p.seen_before("k", "s", &[1], 2_000, 500, 8));
        for i in 10..20 {
            p.seen_before("k", "s", &[i], 2_000, 500, 4);
        }
        assert_eq!(p.keys["k"].dedup.len(), 4);
    }

    #[test]
    fn changelog_record_round_trips_through_load() {
        let mut p = P {
            stream_time_ms: 50,
            ..P::default()
        };
        p.entry("k", "shop").aggregate = 7;
        p.set_timer("k", "shop", timer("t", 99));
        p.seen_before("k", "shop", &[u64::MAX], 50, 1000, 8);
        let rec = p.record("k").unwrap();
        let mut q = P::default();
        q.load(
            "k",
            Some(KeyStateRecord::decode(&rec.encode().unwrap()).unwrap()),
        )
        .unwrap();
        assert_eq!(q.keys["k"].aggregate, 7);
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
        p.set_timer("k", "s", timer("t", 1));
        p.dirty.insert("k".into());
        p.purge("k");
        assert!(p.pop_due(10).is_none());
        assert!(p.purged.contains("k") && !p.dirty.contains("k"));
    }
}
