//! In-memory state of the partitions an instance owns: per-key aggregates, timers, dedup.
//!
//! The compacted changelog topic is the source of truth; this is a cache rebuilt from it on
//! assignment. Keys changed by the open transaction are tracked as dirty and written to the
//! changelog in that transaction, so the cache and the changelog move together.
//!
//! Memory is the constraint here (a processor holds millions of customers), so each key is one
//! heap allocation: a byte string holding the key, the aggregate as packed JSON
//! ([`crate::pack`]), its timers and its dedup fingerprints. A key is reached through a slot
//! number (a hash table of `u32` over a slab), and the due-time index holds `(due, slot)`
//! pairs. A change decodes the key's [`Entry`], edits it and writes it back: a few hundred
//! bytes copied, next to the kilobytes of JSON parsed for every input.

use std::collections::BTreeSet;

// foldhash (hashbrown's default) instead of std's SipHash: every input hashes its key several
// times (index, hot entries, dirty set), and SipHash's DoS resistance buys little over
// foldhash's per-process random seed for keys that come from the shop's own webhooks.
use hashbrown::{DefaultHashBuilder as RandomState, HashMap, HashSet, HashTable};
use rules::Timer;
use schemas::{DedupRecord, KeyStateRecord, TimerRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::pack::{self, PackError};
use crate::watermark::PartitionClock;

#[path = "state_entry.rs"]
mod entry;

pub use entry::{Entry, StoredTimer};
use entry::{KeyParts, StoredKey};

/// Hashes a fingerprint string to the 64 bits kept in memory and on the changelog.
pub fn fingerprint(text: &str) -> u64 {
    fingerprint_of(&[text])
}

/// [`fingerprint`] of the parts' concatenation, without building it (two per input).
pub fn fingerprint_of(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The shop part of a processor key (`{shop}/{kind}/{id}`).
pub fn shop_of(key: &str) -> &str {
    key.split('/').next().unwrap_or_default()
}

/// A `(due, slot)` pair in 12 bytes whose byte order is the pair's order: without the padding
/// of a `(i64, u32)` tuple the due-time index takes a quarter less memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DueKey([u8; 12]);

impl DueKey {
    fn new(due: i64, slot: u32) -> Self {
        let mut b = [0u8; 12];
        // Flipping the sign bit makes the unsigned big-endian order the signed order.
        b[..8].copy_from_slice(&((due as u64) ^ (1 << 63)).to_be_bytes());
        b[8..].copy_from_slice(&slot.to_be_bytes());
        Self(b)
    }

    fn split(&self) -> (i64, u32) {
        let mut due = [0u8; 8];
        due.copy_from_slice(&self.0[..8]);
        let mut slot = [0u8; 4];
        slot.copy_from_slice(&self.0[8..]);
        (
            (u64::from_be_bytes(due) ^ (1 << 63)) as i64,
            u32::from_be_bytes(slot),
        )
    }
}

/// State of one owned partition (of the raw, repartition and changelog topics together).
#[derive(Debug)]
pub struct PartitionState {
    /// Per-key slot bytes ([`Entry::encode`]); `None` for a free slot.
    slots: Vec<Option<Box<[u8]>>>,
    /// Free slot numbers, reused before the slab grows.
    free: Vec<u32>,
    /// Key → slot number.
    index: HashTable<u32>,
    hasher: RandomState,
    /// Every pending timer of the partition in due order: (due, slot). A key with several
    /// timers due at the same instant has one pair; firing takes them one by one.
    timer_index: BTreeSet<DueKey>,
    /// Whether the consumer has caught up with the partition's end (wall clock then counts).
    pub caught_up: bool,
    /// How complete the partition's inputs are, for timers (see `crate::watermark`).
    pub clock: PartitionClock,
    /// Slots changed in the open transaction.
    dirty: HashSet<u32>,
    /// Keys purged in the open transaction (tombstones).
    purged: HashSet<String>,
    /// Number of pending timers.
    timers: usize,
    /// Entries changed or read for a change since the last [`Self::drain_changes`], decoded:
    /// an input touches its key's entry several times (dedup, aggregate, timers), and decoding
    /// and re-encoding the slot each time cost more than the rules. Written back to their slots
    /// when the transaction's changes are drained (bounded by the keys of one transaction).
    hot: HashMap<u32, Entry>,
    /// The key found or created last and its slot: one input looks its key up six to eight
    /// times (dedup, dirty marks, the aggregate lent and returned, each timer effect), and
    /// each lookup split, hashed and compared the key (8 % of the engine's own work,
    /// `examples/engine-work`). A slot holds its key until [`Self::remove`], which forgets it.
    recent: Recent,
}

/// The last key looked up and its slot (see [`PartitionState::recent`]).
#[derive(Debug, Default)]
struct Recent {
    key: String,
    slot: Option<u32>,
}

impl Recent {
    fn get(&self, key: &str) -> Option<u32> {
        self.slot.filter(|_| self.key == key)
    }

    fn remember(&mut self, key: &str, slot: u32) {
        key.clone_into(&mut self.key);
        self.slot = Some(slot);
    }
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::default(),
            timer_index: BTreeSet::new(),
            caught_up: false,
            clock: PartitionClock::default(),
            dirty: HashSet::new(),
            purged: HashSet::new(),
            timers: 0,
            hot: HashMap::new(),
            recent: Recent::default(),
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
    /// An empty state with room for `keys` keys, so a restore does not grow (and copy) the slab
    /// and the hash table as it goes: every growth would leave the old, freed block behind in
    /// the heap, next to long-lived entries.
    pub fn with_capacity(keys: usize) -> Self {
        let mut s = Self::default();
        s.slots.reserve_exact(keys);
        s.index.reserve(keys, |_| 0);
        s
    }

    /// The highest event time read on the partition's raw input ([`PartitionClock::stream_ms`]).
    pub fn stream_time(&self) -> i64 {
        self.clock.stream_time()
    }

    /// The partition's "now": stream time while lagging; the later of stream time and the
    /// wall clock once caught up (so an idle partition still fires timers on time).
    pub fn now(&self, wall_clock_ms: i64) -> i64 {
        if self.caught_up {
            self.stream_time().max(wall_clock_ms)
        } else {
            self.stream_time()
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of pending timers.
    pub fn timers_pending(&self) -> usize {
        self.timers
    }

    /// How many pending timers are due in `(after, up_to]` (at most `cap` are counted).
    pub fn timers_due_between(&self, after: i64, up_to: i64, cap: usize) -> usize {
        if up_to <= after {
            return 0;
        }
        self.timer_index
            .range(DueKey::new(after.saturating_add(1), 0)..)
            .take_while(|k| k.split().0 <= up_to)
            .take(cap)
            .count()
    }

    /// The earliest pending due time.
    pub fn next_due(&self) -> Option<i64> {
        self.timer_index.first().map(|k| k.split().0)
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &str) -> bool {
        self.slot_of(key).is_some()
    }

    /// Every held key starting with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|b| StoredKey::of(b)?.to_string().ok())
            .filter(|k| k.starts_with(prefix))
            .collect()
    }

    /// How many bytes `key`'s entry takes in memory (its one allocation), if held.
    pub fn entry_bytes(&self, key: &str) -> Option<usize> {
        self.slot_of(key)
            .and_then(|s| slot_bytes(&self.slots, s))
            .map(<[u8]>::len)
    }

    /// A copy of `key`'s entry, if held.
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.slot_of(key).and_then(|s| self.read(s))
    }

    fn slot_of(&self, key: &str) -> Option<u32> {
        self.recent.get(key).or_else(|| self.find_slot(key))
    }

    /// `key`'s slot through the index (split, hash, compare).
    fn find_slot(&self, key: &str) -> Option<u32> {
        let parts = KeyParts::split(key);
        let prefix_id = pack::lookup(parts.prefix);
        let slots = &self.slots;
        self.index
            .find(parts.hash(&self.hasher), |&s| {
                slot_bytes(slots, s)
                    .and_then(StoredKey::of)
                    .is_some_and(|k| k.is(key, &parts, prefix_id))
            })
            .copied()
    }

    /// A copy of the entry in `slot` (the decoded one if it is hot).
    fn read(&self, slot: u32) -> Option<Entry> {
        if let Some(e) = self.hot.get(&slot) {
            return Some(e.clone());
        }
        self.decode_slot(slot)
    }

    fn decode_slot(&self, slot: u32) -> Option<Entry> {
        decode_in(&self.slots, slot)
    }

    /// The decoded entry of `slot`, made hot.
    fn hot_entry(&mut self, slot: u32, key: &str) -> &mut Entry {
        // One lookup: the slab and the hot map are separate fields.
        let slots = &self.slots;
        self.hot
            .entry(slot)
            .or_insert_with(|| decode_in(slots, slot).unwrap_or_else(|| Entry::new(key)))
    }

    /// Encodes every hot entry back into its slot.
    fn write_back(&mut self) {
        // Drained, not replaced: the map keeps its capacity for the next transaction instead
        // of growing again through every rehash (a transaction touches thousands of keys).
        for (slot, entry) in self.hot.drain() {
            if let Some(s) = self.slots.get_mut(slot as usize)
                && s.is_some()
            {
                *s = Some(entry.encode());
            }
        }
    }

    /// The slot of `key`, created empty if absent.
    fn slot_or_insert(&mut self, key: &str) -> u32 {
        self.slot_or_insert_with(key, || Entry::new(key).encode())
    }

    /// The slot of `key`; an absent key gets a new slot holding `make()`.
    fn slot_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> Box<[u8]>) -> u32 {
        if let Some(s) = self.recent.get(key) {
            return s;
        }
        if let Some(s) = self.find_slot(key) {
            self.recent.remember(key, s);
            return s;
        }
        let bytes = make();
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(x) = self.slots.get_mut(s as usize) {
                    *x = Some(bytes);
                }
                s
            }
            None => {
                // A partition holding four billion keys is far beyond any memory budget.
                let s = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(bytes));
                s
            }
        };
        let (hasher, slots) = (&self.hasher, &self.slots);
        let hash = KeyParts::split(key).hash(hasher);
        self.index.insert_unique(hash, slot, |&s| {
            slot_bytes(slots, s)
                .and_then(StoredKey::of)
                .map_or(0, |k| k.hash(hasher))
        });
        self.recent.remember(key, slot);
        slot
    }

    /// Removes `key`'s slot, returning its entry.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let slot = self.slot_of(key)?;
        // The slot is freed and may hold another key next.
        self.recent.slot = None;
        let hash = KeyParts::split(key).hash(&self.hasher);
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        let entry = self.hot.remove(&slot).or_else(|| self.decode_slot(slot));
        if let Some(x) = self.slots.get_mut(slot as usize) {
            *x = None;
        }
        self.free.push(slot);
        self.dirty.remove(&slot);
        if let Some(e) = &entry {
            for t in &e.timers {
                self.timer_index.remove(&DueKey::new(t.due_ms, slot));
            }
            self.timers -= e.timers.len();
        }
        Some(entry.unwrap_or_else(|| Entry::new(key)))
    }

    /// Reads `key`'s entry (created empty if absent), lets `f` change it, and writes it back
    /// (keeping the due-time index in step with its timers).
    pub fn update<T>(&mut self, key: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let slot = self.slot_or_insert(key);
        let entry = self.hot_entry(slot, key);
        let before: Vec<i64> = entry.timers.iter().map(|t| t.due_ms).collect();
        let out = f(entry);
        let after: Vec<i64> = entry.timers.iter().map(|t| t.due_ms).collect();
        if before != after {
            for due in &before {
                self.timer_index.remove(&DueKey::new(*due, slot));
            }
            for due in &after {
                self.timer_index.insert(DueKey::new(*due, slot));
            }
            self.timers = self.timers - before.len() + after.len();
        }
        out
    }

    /// Decodes `key`'s aggregate (empty if the key is new).
    pub fn aggregate<S: DeserializeOwned + Default + Clone + 'static>(&self, key: &str) -> S {
        let Some(slot) = self.slot_of(key) else {
            return S::default();
        };
        match self.hot.get(&slot) {
            Some(e) => e.aggregate(),
            None => self
                .decode_slot(slot)
                .map(|e| e.aggregate())
                .unwrap_or_default(),
        }
    }

    /// `key`'s aggregate, lent to the rules for one input (see [`entry::Hot`]): give it back
    /// with [`Self::set_aggregate`] or [`Self::put_back_aggregate`].
    pub fn take_aggregate<S: DeserializeOwned + Default + Clone + 'static>(
        &mut self,
        key: &str,
    ) -> S {
        // Only a hot entry holds a value to move; any other is read as for `aggregate`.
        match self.slot_of(key).and_then(|slot| self.hot.get_mut(&slot)) {
            Some(e) => e.take_aggregate(),
            None => self.aggregate(key),
        }
    }

    /// Gives back an aggregate the rules left unchanged (a failed input), without moving the
    /// key's time.
    pub fn put_back_aggregate<S>(&mut self, key: &str, state: S)
    where
        S: Serialize + Clone + Send + Sync + std::fmt::Debug + 'static,
    {
        self.update(key, |e| e.put_back_aggregate(state));
    }

    /// Stores `key`'s aggregate after an input with event time `at_ms` (kept as it is until
    /// the transaction's changes are drained; see [`entry::Hot`]).
    pub fn set_aggregate<S>(&mut self, key: &str, state: S, at_ms: i64)
    where
        S: Serialize + Clone + Send + Sync + std::fmt::Debug + 'static,
    {
        self.update(key, |e| e.set_aggregate(state, at_ms));
    }

    /// Marks a key changed in the open transaction.
    pub fn mark_dirty(&mut self, key: &str) {
        let slot = self.slot_or_insert(key);
        self.dirty.insert(slot);
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
        let horizon = self.stream_time().saturating_sub(window_ms);
        self.update(key, |e| {
            // Expire by event time first, so a restart (which restores the window) forgets
            // exactly what an uninterrupted run would have forgotten.
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
        })
    }

    /// Removes fingerprints recorded by [`Self::seen_before`] for an input that was then
    /// dead-lettered, so a redrive of the same record is processed.
    pub fn forget(&mut self, key: &str, prints: &[u64]) {
        if self.contains(key) {
            self.update(key, |e| e.dedup.retain(|(p, _)| !prints.contains(p)));
        }
    }

    /// Arms (or replaces by id) a timer on `key`.
    pub fn set_timer(&mut self, key: &str, timer: Timer) {
        let stored = StoredTimer::from_timer(timer);
        self.update(key, |e| {
            e.timers.retain(|t| t.timer_id != stored.timer_id);
            e.timers.push(stored);
        });
    }

    /// Cancels a timer on `key` by id; absent timers are ignored.
    pub fn cancel_timer(&mut self, key: &str, timer_id: &str) {
        if self.contains(key) {
            self.update(key, |e| e.timers.retain(|t| t.timer_id != timer_id));
        }
    }

    /// Removes and returns the earliest timer due at or before `now`, if any.
    pub fn pop_due(&mut self, now: i64) -> Option<(String, Timer)> {
        loop {
            let (due, slot) = self.timer_index.first()?.split();
            if due > now {
                return None;
            }
            let Some(entry) = self.read(slot) else {
                // An index pair without its slot cannot be fired; drop it.
                self.timer_index.pop_first();
                continue;
            };
            let key = entry.key.clone();
            let fired = self.update(&key, |e| {
                // Same due instant: the lowest timer id first, so firing order is stable.
                let pos = e
                    .timers
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.due_ms == due)
                    .min_by(|(_, a), (_, b)| a.timer_id.cmp(&b.timer_id))
                    .map(|(i, _)| i)?;
                Some(e.timers.remove(pos))
            });
            match fired {
                Some(t) => return Some((key, t.to_timer())),
                None => {
                    self.timer_index.remove(&DueKey::new(due, slot));
                }
            }
        }
    }

    /// Drops a key entirely (GDPR purge): its timers leave the index too.
    pub fn purge(&mut self, key: &str) {
        self.remove(key);
        self.purged.insert(key.to_owned());
    }

    /// The changes of the open transaction, emptied: tombstones (`None`) for purged keys that
    /// were not written again, and the full record of every dirty key.
    pub fn drain_changes(&mut self) -> Vec<(String, Option<KeyStateRecord>)> {
        let mut out = Vec::new();
        for key in std::mem::take(&mut self.purged) {
            if !self.contains(&key) {
                out.push((key, None));
            }
        }
        // The dirty set keeps its capacity too (see `write_back`).
        let dirty: Vec<u32> = self.dirty.drain().collect();
        for slot in dirty {
            // Serialised and packed once per transaction, however many inputs it took.
            let text = self.hot.get_mut(&slot).and_then(Entry::settle);
            let record = match self.hot.get(&slot) {
                Some(e) => Some(record_of(e, text)),
                None => self.decode_slot(slot).map(|e| record_of(&e, text)),
            };
            if let Some(r) = record {
                out.push((r.key.clone(), Some(r)));
            }
        }
        self.write_back();
        out
    }

    /// Whether the open transaction changed anything.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.purged.is_empty()
    }

    /// The changelog record of a key.
    pub fn record(&self, key: &str) -> Option<KeyStateRecord> {
        self.get(key).map(|e| record_of(&e, None))
    }

    /// Loads one changelog record (restore). A tombstone (`None`) removes the key.
    pub fn load(&mut self, key: &str, record: Option<KeyStateRecord>) -> Result<(), RestoreError> {
        // Remove any earlier version of the key first: the changelog holds full snapshots.
        self.remove(key);
        let Some(r) = record else { return Ok(()) };
        // Not the key's update time: stream time comes back with the partition's clock (a
        // key updated by a forward can be far ahead of the raw input read so far).
        let entry = Self::entry_of(key, r)?;
        let slot = self.slot_or_insert_with(key, || entry.encode());
        for t in &entry.timers {
            self.timer_index.insert(DueKey::new(t.due_ms, slot));
        }
        self.timers += entry.timers.len();
        Ok(())
    }

    /// The in-memory entry of a changelog record.
    fn entry_of(key: &str, r: KeyStateRecord) -> Result<Entry, RestoreError> {
        let fail = |what: &str, e: PackError| RestoreError {
            key: key.to_owned(),
            message: format!("{what}: {e}"),
        };
        let aggregate = if r.aggregate_json.trim() == "{}" {
            Vec::new()
        } else {
            pack::pack_json_near(&r.aggregate_json, r.updated_at_ms)
                .map_err(|e| fail("aggregate is not JSON", e))?
        };
        let mut timers = Vec::with_capacity(r.timers.len());
        for t in r.timers {
            timers.push(StoredTimer {
                payload: pack::pack_json_near(&t.payload_json, t.due_ms)
                    .map_err(|e| fail("timer payload is not JSON", e))?,
                kind: t.kind,
                timer_id: t.timer_id,
                due_ms: t.due_ms,
            });
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
        Ok(Entry {
            key: key.to_owned(),
            updated_at_ms: r.updated_at_ms,
            aggregate,
            timers,
            dedup,
            ..Entry::default()
        })
    }
}

fn slot_bytes(slots: &[Option<Box<[u8]>>], slot: u32) -> Option<&[u8]> {
    slots.get(slot as usize).and_then(|s| s.as_deref())
}

/// The entry encoded in `slot`, if the slot holds one that decodes.
fn decode_in(slots: &[Option<Box<[u8]>>], slot: u32) -> Option<Entry> {
    slot_bytes(slots, slot).and_then(|b| Entry::decode(b).ok())
}

/// `e`'s changelog record; `aggregate_json` when the caller has its text already.
fn record_of(e: &Entry, aggregate_json: Option<String>) -> KeyStateRecord {
    KeyStateRecord {
        key: e.key.clone(),
        shop_domain: shop_of(&e.key).to_owned(),
        updated_at_ms: e.updated_at_ms,
        aggregate_json: aggregate_json.unwrap_or_else(|| e.aggregate_json()),
        timers: e
            .timers
            .iter()
            .map(|t| TimerRecord {
                kind: t.kind.clone(),
                timer_id: t.timer_id.clone(),
                due_ms: t.due_ms,
                payload_json: t.payload_json(),
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
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
