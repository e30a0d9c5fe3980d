//! One key's state as held in memory: the [`Entry`] and its packed byte form (key, aggregate,
//! timers, dedup fingerprints in one allocation).

use hashbrown::DefaultHashBuilder as RandomState;
use std::any::Any;
use std::hash::{BuildHasher, Hasher};

use rules::Timer;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pack::{self, PackError, get_varint, put_varint, unzigzag, zigzag};

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
    pub(super) fn from_timer(t: Timer) -> Self {
        let payload = pack::pack_value_near(&t.payload, t.due_ms).unwrap_or_default();
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
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The processor key.
    pub key: String,
    /// Event time of the last change.
    pub updated_at_ms: i64,
    /// The rules' aggregate as packed JSON (timestamps relative to `updated_at_ms`); empty
    /// means `{}` (nothing known yet). Out of date while [`Hot::Typed`] holds a newer value.
    pub aggregate: Vec<u8>,
    /// Pending timers of this key.
    pub timers: Vec<StoredTimer>,
    /// Fingerprints seen in the dedup window: (64-bit hash, event time ms).
    pub dedup: Vec<(u64, i64)>,
    /// The aggregate in a readier form while the entry is hot (see [`Hot`]).
    pub(super) hot: Hot,
}

/// Where an entry's aggregate is read from. An entry is hot for one transaction (from the
/// first input that changes its key to the drain of the transaction's changes), and a key
/// often gets several inputs in one (a checkout's updates; an order's create, paid and
/// fulfilled): serialising and packing the aggregate after each of them, and parsing it again
/// before the next, cost about a sixth of the processor's CPU (perf, processor-bench).
///
/// `Cold -> Typed` when the rules change it ([`Entry::set_aggregate`]; again `Typed ->
/// Typed` for each further input), `Typed -> Cold` when the drain serialises and packs it,
/// once ([`Entry::settle`]). For each input the value is lent to the rules
/// ([`Entry::take_aggregate`], no copy) and comes back before anything reads the entry:
/// changed ([`Entry::set_aggregate`]) or, when the rules failed and so left it as it was,
/// unchanged ([`Entry::put_back_aggregate`]).
#[derive(Debug, Clone, Default)]
pub(super) enum Hot {
    /// The packed bytes are the aggregate.
    #[default]
    Cold,
    /// The rules' value itself; the packed bytes are out of date until [`Entry::settle`].
    Typed(Box<dyn Aggregate>),
}

/// A rules aggregate held as its own type (`R::State`) while its entry is hot.
pub(super) trait Aggregate: Any + Send + Sync + std::fmt::Debug {
    /// Its JSON text (`None` only if serialising fails, which plain data does not).
    fn to_json(&self) -> Option<String>;
    fn clone_box(&self) -> Box<dyn Aggregate>;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<S: Serialize + Clone + Send + Sync + std::fmt::Debug + 'static> Aggregate for S {
    fn to_json(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }

    fn clone_box(&self) -> Box<dyn Aggregate> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl Clone for Box<dyn Aggregate> {
    fn clone(&self) -> Self {
        (**self).clone_box()
    }
}

/// Two entries are equal when they hold the same key, times, timers, fingerprints and
/// aggregate value, whichever form the aggregate is in.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.updated_at_ms == other.updated_at_ms
            && self.timers == other.timers
            && self.dedup == other.dedup
            && self.aggregate_json() == other.aggregate_json()
    }
}

impl Eq for Entry {}

impl Entry {
    pub(super) fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..Self::default()
        }
    }

    /// The aggregate as JSON text.
    pub fn aggregate_json(&self) -> String {
        if let Hot::Typed(v) = &self.hot
            && let Some(text) = v.to_json()
        {
            return text;
        }
        if self.aggregate.is_empty() {
            return "{}".into();
        }
        pack::unpack_json_near(&self.aggregate, self.updated_at_ms).unwrap_or_else(|_| "{}".into())
    }

    /// Decodes the aggregate; an unreadable one (never written by this version) starts empty.
    pub fn aggregate<S: DeserializeOwned + Default + Clone + 'static>(&self) -> S {
        match &self.hot {
            Hot::Typed(v) => match v.as_any().downcast_ref::<S>() {
                Some(s) => s.clone(),
                // Read as another type than the rules wrote (tests only): through its text.
                None => serde_json::from_str(&self.aggregate_json()).unwrap_or_default(),
            },
            Hot::Cold if self.aggregate.is_empty() => {
                serde_json::from_str("{}").unwrap_or_default()
            }
            // Straight from the packed bytes (no text in between); the text path decides if
            // they do not read as an `S`.
            Hot::Cold => pack::from_packed_near(&self.aggregate, self.updated_at_ms)
                .or_else(|_| serde_json::from_str(&self.aggregate_json()))
                .unwrap_or_default(),
        }
    }

    /// The aggregate, moved out of a typed entry (no copy) to be lent to the rules for one
    /// input; the caller gives it back with [`Self::set_aggregate`] or
    /// [`Self::put_back_aggregate`] before the entry is read again. Other entries: as
    /// [`Self::aggregate`].
    pub fn take_aggregate<S: DeserializeOwned + Default + Clone + 'static>(&mut self) -> S {
        match std::mem::take(&mut self.hot) {
            // The guard makes the downcast succeed; its default is never taken.
            Hot::Typed(v) if v.as_any().is::<S>() => v
                .into_any()
                .downcast::<S>()
                .map_or_else(|_| S::default(), |s| *s),
            other => {
                self.hot = other;
                self.aggregate()
            }
        }
    }

    /// Gives back an aggregate taken with [`Self::take_aggregate`] that the rules left as it
    /// was (a failed input): the entry's time is not moved.
    pub fn put_back_aggregate<S>(&mut self, state: S)
    where
        S: Serialize + Clone + Send + Sync + std::fmt::Debug + 'static,
    {
        self.hot = Hot::Typed(Box::new(state));
    }

    /// Stores the aggregate after a change at `at_ms` (event time). It is serialised and
    /// packed once, when the transaction's changes are drained ([`Self::settle`]).
    pub fn set_aggregate<S>(&mut self, state: S, at_ms: i64)
    where
        S: Serialize + Clone + Send + Sync + std::fmt::Debug + 'static,
    {
        self.updated_at_ms = self.updated_at_ms.max(at_ms);
        self.hot = Hot::Typed(Box::new(state));
    }

    /// Brings the packed bytes up to date with a typed aggregate; returns its JSON text (for
    /// the changelog record), `None` if it was not typed.
    pub(super) fn settle(&mut self) -> Option<String> {
        let Hot::Typed(v) = &self.hot else {
            return None;
        };
        // Serialising a plain data aggregate cannot fail; keep the value typed if it does
        // (the slot then keeps the last bytes that packed).
        let text = v.to_json()?;
        self.aggregate = pack::pack_json_near(&text, self.updated_at_ms).ok()?;
        self.hot = Hot::Cold;
        Some(text)
    }

    /// The slot bytes: key, updated, aggregate, timers, dedup, each length-prefixed.
    ///
    /// Written into a per-thread scratch buffer and copied into an allocation of exactly the
    /// right size: growing or shrinking the allocation itself would leave small freed pieces
    /// between long-lived entries (fragmentation that shows as resident memory).
    pub(super) fn encode(&self) -> Box<[u8]> {
        if matches!(self.hot, Hot::Typed(_)) {
            // Not settled by a drain (a read copy): settle a copy, never write stale bytes.
            let mut settled = self.clone();
            settled.settle();
            if !matches!(settled.hot, Hot::Typed(_)) {
                return settled.encode();
            }
        }
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

    pub(super) fn decode(b: &[u8]) -> Result<Self, PackError> {
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
            hot: Hot::Cold,
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
pub(super) struct KeyParts<'a> {
    pub(super) prefix: &'a str,
    rest: Rest<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rest<'a> {
    Num(u64),
    Text(&'a str),
}

impl<'a> KeyParts<'a> {
    pub(super) fn split(key: &'a str) -> Self {
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

    pub(super) fn hash(&self, hasher: &RandomState) -> u64 {
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
pub(super) enum StoredKey<'a> {
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
    pub(super) fn read(b: &'a [u8], pos: &mut usize) -> Result<Self, PackError> {
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

    pub(super) fn of(b: &'a [u8]) -> Option<Self> {
        Self::read(b, &mut 0).ok()
    }

    pub(super) fn to_string(&self) -> Result<String, PackError> {
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
    pub(super) fn is(&self, key: &str, parts: &KeyParts<'_>, prefix_id: Option<u32>) -> bool {
        match self {
            Self::Literal(k) => *k == key,
            Self::Interned(id, rest) => Some(*id) == prefix_id && *rest == parts.rest,
        }
    }

    pub(super) fn hash(&self, hasher: &RandomState) -> u64 {
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
