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

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use rules::Timer;
use schemas::{DedupRecord, KeyStateRecord, TimerRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::pack::{self, PackError, get_varint, put_varint, unzigzag, zigzag};
use crate::watermark::PartitionClock;

/// A pending timer as held in an [`Entry`]: the payload stays packed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTimer {
    /// Rule-defined kind.
    pub kind: String,
    /// Unique within the key.
    pub timer_id: String,
    /// Due instant, event time ms.
    pub due_ms: i64,
    /// Payload, packed JSON (timestamps relative to `due_ms`).
    pub payload: Vec<u8>,
}

impl StoredTimer {
    fn from_timer(t: Timer) -> Self {
        let payload = pack::pack_json_near(&t.payload.to_string(), t.due_ms).unwrap_or_default();
        Self {
            kind: t.kind,
            timer_id: t.timer_id,
            due_ms: t.due_ms,
            payload,
        }
    }

    /// The payload as JSON text (`null` if unreadable, which this module never writes).
    pub fn payload_json(&self) -> String {
        pack::unpack_json_near(&self.payload, self.due_ms).unwrap_or_else(|_| "null".into())
    }

    /// The rules' view of the timer.
    pub fn to_timer(&self) -> Timer {
        Timer {
            kind: self.kind.clone(),
            timer_id: self.timer_id.clone(),
            due_ms: self.due_ms,
            payload: serde_json::from_str(&self.payload_json()).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// One key's state, decoded from its slot for reading or changing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The processor key.
    pub key: String,
    /// Event time of the last change.
    pub updated_at_ms: i64,
    /// The rules' aggregate as packed JSON (timestamps relative to `updated_at_ms`); empty
    /// means `{}` (nothing known yet).
    pub aggregate: Vec<u8>,
    /// Pending timers of this key.
    pub timers: Vec<StoredTimer>,
    /// Fingerprints seen in the dedup window: (64-bit hash, event time ms).
    pub dedup: Vec<(u64, i64)>,
}

impl Entry {
    fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..Self::default()
        }
    }

    /// The aggregate as JSON text.
    pub fn aggregate_json(&self) -> String {
        if self.aggregate.is_empty() {
            return "{}".into();
        }
        pack::unpack_json_near(&self.aggregate, self.updated_at_ms).unwrap_or_else(|_| "{}".into())
    }

    /// Decodes the aggregate; an unreadable one (never written by this version) starts empty.
    pub fn aggregate<S: DeserializeOwned + Default>(&self) -> S {
        serde_json::from_str(&self.aggregate_json()).unwrap_or_default()
    }

    /// Stores the aggregate after a change at `at_ms` (event time).
    pub fn set_aggregate<S: Serialize>(&mut self, state: &S, at_ms: i64) {
        let updated = self.updated_at_ms.max(at_ms);
        // Serialising a plain data aggregate cannot fail; keep the old bytes (and the time
        // they are relative to) if it somehow does.
        if let Ok(packed) = serde_json::to_string(state)
            .map_err(PackError::from)
            .and_then(|text| pack::pack_json_near(&text, updated))
        {
            self.aggregate = packed;
            self.updated_at_ms = updated;
        }
    }

    /// The slot bytes: key, updated, aggregate, timers, dedup, each length-prefixed.
    ///
    /// Written into a per-thread scratch buffer and copied into an allocation of exactly the
    /// right size: growing or shrinking the allocation itself would leave small freed pieces
    /// between long-lived entries (fragmentation that shows as resident memory).
    fn encode(&self) -> Box<[u8]> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                self.encode_into(&mut out);
                Box::from(&out[..])
            }
            Err(_) => {
                let mut out = Vec::new();
                self.encode_into(&mut out);
                Box::from(&out[..])
            }
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        put_key(out, &self.key);
        put_varint(out, zigzag(self.updated_at_ms));
        put_bytes(out, &self.aggregate);
        put_varint(out, self.timers.len() as u64);
        for t in &self.timers {
            // Times relative to the last change: a few bytes instead of a full timestamp.
            put_varint(out, zigzag(t.due_ms.wrapping_sub(self.updated_at_ms)));
            // Kinds are a handful of rule-defined names: an interned id instead of the text.
            match pack::intern(&t.kind) {
                Some(id) => put_varint(out, u64::from(id)),
                None => {
                    out.push(0);
                    put_bytes(out, t.kind.as_bytes());
                }
            }
            // Most ids are the kind itself (one win-back timer per customer): 0 says so.
            if t.timer_id == t.kind {
                out.push(0);
            } else {
                put_varint(out, t.timer_id.len() as u64 + 1);
                out.extend_from_slice(t.timer_id.as_bytes());
            }
            put_bytes(out, &t.payload);
        }
        put_varint(out, self.dedup.len() as u64);
        for (hash, at) in &self.dedup {
            out.extend_from_slice(&hash.to_le_bytes());
            put_varint(out, zigzag(self.updated_at_ms.wrapping_sub(*at)));
        }
    }

    fn decode(b: &[u8]) -> Result<Self, PackError> {
        let mut pos = 0;
        let key = StoredKey::read(b, &mut pos)?.to_string()?;
        let updated_at_ms = unzigzag(get_varint(b, &mut pos)?);
        let aggregate = get_bytes(b, &mut pos)?.to_vec();
        let n = get_varint(b, &mut pos)?;
        let mut timers = Vec::new();
        for _ in 0..n {
            let due_ms = updated_at_ms.wrapping_add(unzigzag(get_varint(b, &mut pos)?));
            let at = pos;
            let kind = match get_varint(b, &mut pos)? {
                0 => get_str(b, &mut pos)?.to_owned(),
                id => u32::try_from(id)
                    .ok()
                    .and_then(pack::interned)
                    .ok_or(PackError::Malformed(at))?
                    .to_string(),
            };
            let id_at = pos;
            let timer_id = match get_varint(b, &mut pos)? {
                0 => kind.clone(),
                n => {
                    let len = usize::try_from(n - 1).map_err(|_| PackError::Malformed(id_at))?;
                    let s = b
                        .get(pos..pos.saturating_add(len))
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .ok_or(PackError::Malformed(id_at))?;
                    pos += len;
                    s.to_owned()
                }
            };
            let payload = get_bytes(b, &mut pos)?.to_vec();
            timers.push(StoredTimer {
                kind,
                timer_id,
                due_ms,
                payload,
            });
        }
        let n = get_varint(b, &mut pos)?;
        let mut dedup = Vec::new();
        for _ in 0..n {
            let hash: [u8; 8] = b
                .get(pos..pos + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or(PackError::Malformed(pos))?;
            pos += 8;
            let at = updated_at_ms.wrapping_sub(unzigzag(get_varint(b, &mut pos)?));
            dedup.push((u64::from_le_bytes(hash), at));
        }
        Ok(Self {
            key,
            updated_at_ms,
            aggregate,
            timers,
            dedup,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn get_bytes<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a [u8], PackError> {
    let at = *pos;
    let len = usize::try_from(get_varint(b, pos)?).map_err(|_| PackError::Malformed(at))?;
    let s = b
        .get(*pos..pos.saturating_add(len))
        .ok_or(PackError::Malformed(at))?;
    *pos += len;
    Ok(s)
}

fn get_str<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a str, PackError> {
    let at = *pos;
    std::str::from_utf8(get_bytes(b, pos)?).map_err(|_| PackError::Malformed(at))
}

/// A processor key split for storage: everything up to the last `/` (shop and kind, shared by
/// many keys, so interned) and the id after it (a number when written canonically).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyParts<'a> {
    prefix: &'a str,
    rest: Rest<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest<'a> {
    Num(u64),
    Text(&'a str),
}

impl<'a> KeyParts<'a> {
    fn split(key: &'a str) -> Self {
        let cut = key.rfind('/').map_or(0, |i| i + 1);
        let (prefix, rest) = key.split_at(cut);
        let canonical = !rest.is_empty()
            && rest.len() <= 19
            && (rest == "0" || !rest.starts_with('0'))
            && rest.bytes().all(|b| b.is_ascii_digit());
        let rest = match rest.parse::<u64>() {
            Ok(n) if canonical => Rest::Num(n),
            _ => Rest::Text(rest),
        };
        Self { prefix, rest }
    }

    fn hash(&self, hasher: &RandomState) -> u64 {
        let mut h = hasher.build_hasher();
        h.write(self.prefix.as_bytes());
        match self.rest {
            Rest::Num(n) => {
                h.write_u8(1);
                h.write_u64(n);
            }
            Rest::Text(t) => {
                h.write_u8(2);
                h.write(t.as_bytes());
            }
        }
        h.finish()
    }
}

/// The key at the front of slot bytes: an interned prefix id and the id part, or (when the
/// interner is full) the whole key as text.
enum StoredKey<'a> {
    Interned(u32, Rest<'a>),
    Literal(&'a str),
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    let parts = KeyParts::split(key);
    match pack::intern(parts.prefix) {
        Some(id) => {
            put_varint(out, u64::from(id));
            match parts.rest {
                Rest::Num(n) => {
                    out.push(1);
                    put_varint(out, n);
                }
                Rest::Text(t) => {
                    out.push(0);
                    put_bytes(out, t.as_bytes());
                }
            }
        }
        None => {
            out.push(0);
            put_bytes(out, key.as_bytes());
        }
    }
}

impl<'a> StoredKey<'a> {
    fn read(b: &'a [u8], pos: &mut usize) -> Result<Self, PackError> {
        let at = *pos;
        let id = u32::try_from(get_varint(b, pos)?).map_err(|_| PackError::Malformed(at))?;
        if id == 0 {
            return Ok(Self::Literal(get_str(b, pos)?));
        }
        let tag = *b.get(*pos).ok_or(PackError::Malformed(*pos))?;
        *pos += 1;
        let rest = if tag == 1 {
            Rest::Num(get_varint(b, pos)?)
        } else {
            Rest::Text(get_str(b, pos)?)
        };
        Ok(Self::Interned(id, rest))
    }

    fn of(b: &'a [u8]) -> Option<Self> {
        Self::read(b, &mut 0).ok()
    }

    fn to_string(&self) -> Result<String, PackError> {
        match self {
            Self::Literal(k) => Ok((*k).to_owned()),
            Self::Interned(id, rest) => {
                let prefix = pack::interned(*id).ok_or(PackError::Malformed(0))?;
                Ok(match rest {
                    Rest::Num(n) => format!("{prefix}{n}"),
                    Rest::Text(t) => format!("{prefix}{t}"),
                })
            }
        }
    }

    /// Whether this is `key`, given its parts and its prefix's interned id.
    fn is(&self, key: &str, parts: &KeyParts<'_>, prefix_id: Option<u32>) -> bool {
        match self {
            Self::Literal(k) => *k == key,
            Self::Interned(id, rest) => Some(*id) == prefix_id && *rest == parts.rest,
        }
    }

    fn hash(&self, hasher: &RandomState) -> u64 {
        match self {
            Self::Literal(k) => KeyParts::split(k).hash(hasher),
            Self::Interned(id, rest) => match pack::interned(*id) {
                Some(prefix) => KeyParts {
                    prefix: &prefix,
                    rest: *rest,
                }
                .hash(hasher),
                None => 0,
            },
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
    /// Highest event time seen on this partition (ms).
    pub stream_time_ms: i64,
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
}

impl Default for PartitionState {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            timer_index: BTreeSet::new(),
            stream_time_ms: i64::MIN,
            caught_up: false,
            clock: PartitionClock::default(),
            dirty: HashSet::new(),
            purged: HashSet::new(),
            timers: 0,
            hot: HashMap::new(),
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

    /// The partition's "now": stream time while lagging; the later of stream time and the
    /// wall clock once caught up (so an idle partition still fires timers on time).
    pub fn now(&self, wall_clock_ms: i64) -> i64 {
        if self.caught_up {
            self.stream_time_ms.max(wall_clock_ms)
        } else {
            self.stream_time_ms
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
        slot_bytes(&self.slots, slot).and_then(|b| Entry::decode(b).ok())
    }

    /// The decoded entry of `slot`, made hot.
    fn hot_entry(&mut self, slot: u32, key: &str) -> &mut Entry {
        if !self.hot.contains_key(&slot) {
            let e = self.decode_slot(slot).unwrap_or_else(|| Entry::new(key));
            self.hot.insert(slot, e);
        }
        self.hot.entry(slot).or_insert_with(|| Entry::new(key))
    }

    /// Encodes every hot entry back into its slot.
    fn write_back(&mut self) {
        for (slot, entry) in std::mem::take(&mut self.hot) {
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
        if let Some(s) = self.slot_of(key) {
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
        slot
    }

    /// Removes `key`'s slot, returning its entry.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let slot = self.slot_of(key)?;
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
    pub fn aggregate<S: DeserializeOwned + Default>(&self, key: &str) -> S {
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

    /// Stores `key`'s aggregate after an input with event time `at_ms`.
    pub fn set_aggregate<S: Serialize>(&mut self, key: &str, state: &S, at_ms: i64) {
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
        let horizon = self.stream_time_ms.saturating_sub(window_ms);
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
        for slot in std::mem::take(&mut self.dirty) {
            if let Some(e) = self.read(slot) {
                let record = record_of(&e);
                out.push((e.key, Some(record)));
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
        self.get(key).map(|e| record_of(&e))
    }

    /// Loads one changelog record (restore). A tombstone (`None`) removes the key.
    pub fn load(&mut self, key: &str, record: Option<KeyStateRecord>) -> Result<(), RestoreError> {
        // Remove any earlier version of the key first: the changelog holds full snapshots.
        self.remove(key);
        let Some(r) = record else { return Ok(()) };
        let entry = Self::entry_of(key, r)?;
        self.stream_time_ms = self.stream_time_ms.max(entry.updated_at_ms);
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
        })
    }
}

fn slot_bytes(slots: &[Option<Box<[u8]>>], slot: u32) -> Option<&[u8]> {
    slots.get(slot as usize).and_then(|s| s.as_deref())
}

fn record_of(e: &Entry) -> KeyStateRecord {
    KeyStateRecord {
        key: e.key.clone(),
        shop_domain: shop_of(&e.key).to_owned(),
        updated_at_ms: e.updated_at_ms,
        aggregate_json: e.aggregate_json(),
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
        assert_eq!(p.timers_pending(), 3);
        assert!(p.pop_due(5).is_none());
        let order: Vec<_> = std::iter::from_fn(|| p.pop_due(100))
            .map(|(k, t)| (k, t.due_ms))
            .collect();
        assert_eq!(
            order,
            vec![("b".into(), 10), ("a".into(), 20), ("a".into(), 40)]
        );
        assert_eq!(p.timers_pending(), 0);
    }

    #[test]
    fn due_keys_order_like_the_pairs_they_hold() {
        let pairs = [
            (i64::MIN, 0),
            (-1, u32::MAX),
            (0, 0),
            (0, 1),
            (1, 0),
            (1_767_225_600_000, 7),
            (i64::MAX, u32::MAX),
        ];
        for w in pairs.windows(2) {
            assert!(DueKey::new(w[0].0, w[0].1) < DueKey::new(w[1].0, w[1].1));
        }
        for (d, s) in pairs {
            assert_eq!(DueKey::new(d, s).split(), (d, s));
        }
    }

    #[test]
    fn timers_due_at_the_same_instant_on_one_key_all_fire() {
        let mut p = P::default();
        p.set_timer("a", timer("z", 10));
        p.set_timer("a", timer("m", 10));
        p.set_timer("b", timer("q", 10));
        let fired: Vec<_> = std::iter::from_fn(|| p.pop_due(10))
            .map(|(k, t)| format!("{k}/{}", t.timer_id))
            .collect();
        assert_eq!(fired, vec!["a/m", "a/z", "b/q"]);
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
        assert_eq!(p.get("k").unwrap().dedup.len(), 4);
    }

    #[test]
    fn changelog_record_round_trips_through_load() {
        let mut p = P {
            stream_time_ms: 50,
            ..P::default()
        };
        p.set_aggregate("k", &serde_json::json!({"n": 7, "v": "120.50"}), 40);
        p.set_timer("k", timer("t", 99));
        p.set_timer(
            "k",
            Timer {
                kind: "winback".into(),
                timer_id: "winback".into(),
                due_ms: 1_775_000_000_000,
                payload: serde_json::json!({"last_order_ms": 1_767_225_600_000_i64}),
            },
        );
        p.seen_before("k", &[u64::MAX], 50, 1000, 8);
        let rec = p.record("k").unwrap();
        assert_eq!(rec.aggregate_json, r#"{"n":7,"v":"120.50"}"#);
        let mut q = P::default();
        q.load(
            "k",
            Some(KeyStateRecord::decode(&rec.encode().unwrap()).unwrap()),
        )
        .unwrap();
        assert_eq!(q.get("k"), p.get("k"));
        assert_eq!(
            q.aggregate::<serde_json::Value>("k"),
            serde_json::json!({"n": 7, "v": "120.50"})
        );
        assert_eq!(
            q.pop_due(100).unwrap().1.payload,
            serde_json::json!({"x": 1})
        );
        let (_, winback) = q.pop_due(i64::MAX).unwrap();
        assert_eq!(
            (winback.kind.as_str(), winback.timer_id.as_str()),
            ("winback", "winback")
        );
        assert_eq!(
            winback.payload,
            serde_json::json!({"last_order_ms": 1_767_225_600_000_i64})
        );
        q.load("k", None).unwrap();
        assert!(q.is_empty() && q.next_due().is_none());
    }

    #[test]
    fn a_record_that_is_not_json_is_a_restore_error() {
        let mut p = P::default();
        let rec = KeyStateRecord {
            key: "k".into(),
            shop_domain: "s".into(),
            updated_at_ms: 1,
            aggregate_json: "{oops".into(),
            timers: vec![],
            dedup: vec![],
        };
        assert!(p.load("k", Some(rec)).is_err());
    }

    #[test]
    fn purge_drops_timers_and_writes_a_tombstone() {
        let mut p = P::default();
        p.set_timer("k", timer("t", 1));
        p.mark_dirty("k");
        p.mark_dirty("other");
        p.purge("k");
        assert!(p.pop_due(10).is_none());
        let changes = p.drain_changes();
        assert!(changes.contains(&("k".into(), None)));
        assert!(changes.iter().any(|(k, r)| k == "other" && r.is_some()));
        assert_eq!(changes.len(), 2);
        assert!(!p.has_changes());
    }

    #[test]
    fn every_key_shape_is_stored_and_found_exactly() {
        let keys = [
            "s.myshopify.com/c/7",
            "s.myshopify.com/c/07",
            "s.myshopify.com/c/0",
            "s.myshopify.com/c/",
            "s.myshopify.com/c/9999999999999999999",
            "s.myshopify.com/c/18446744073709551615",
            "s.myshopify.com/c/99999999999999999999",
            "s.myshopify.com/e/ava@example.org",
            "s.myshopify.com/o/7",
            "other.myshopify.com/c/7",
            "no-slash",
            "",
        ];
        let mut p = P::default();
        for (i, k) in keys.iter().enumerate() {
            p.set_aggregate(k, &i, 1);
        }
        assert_eq!(p.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(p.aggregate::<usize>(k), i, "{k}");
            assert_eq!(p.get(k).unwrap().key, *k);
            assert_eq!(p.record(k).unwrap().key, *k);
        }
        assert!(!p.contains("s.myshopify.com/c/8"));
        let mut found = p.keys_with_prefix("s.myshopify.com/c/");
        found.sort();
        assert_eq!(found.len(), 7);
    }

    #[test]
    fn changes_live_decoded_until_drained_then_in_their_slot() {
        let mut p = P::default();
        p.mark_dirty("k");
        p.set_aggregate("k", &serde_json::json!({"n": 1}), 10);
        p.set_timer("k", timer("t", 20));
        let slot = p.slot_of("k").unwrap();
        assert!(p.hot.contains_key(&slot));
        assert_ne!(
            p.decode_slot(slot),
            p.get("k"),
            "the slot is written back later"
        );
        let changes = p.drain_changes();
        assert_eq!(changes.len(), 1);
        assert!(p.hot.is_empty());
        assert_eq!(p.decode_slot(slot), p.get("k"));
        assert_eq!(
            p.aggregate::<serde_json::Value>("k"),
            serde_json::json!({"n": 1})
        );
        assert_eq!(
            p.pop_due(20).map(|(k, t)| (k, t.timer_id)),
            Some(("k".into(), "t".into()))
        );
    }

    #[test]
    fn slots_are_reused_and_keys_stay_distinct() {
        let mut p = P::default();
        for i in 0..100 {
            p.set_aggregate(&format!("k{i}"), &i, i);
        }
        for i in (0..100).step_by(2) {
            p.purge(&format!("k{i}"));
        }
        for i in 100..150 {
            p.set_aggregate(&format!("k{i}"), &i, i);
        }
        assert_eq!(p.len(), 100);
        assert_eq!(p.slots.len(), 100, "freed slots were reused");
        for i in (1..100).step_by(2).chain(100..150) {
            assert_eq!(p.aggregate::<i64>(&format!("k{i}")), i);
        }
        assert!(!p.contains("k0"));
        let mut keys = p.keys_with_prefix("k1");
        keys.sort();
        assert_eq!(keys.first().map(String::as_str), Some("k1"));
    }
}
