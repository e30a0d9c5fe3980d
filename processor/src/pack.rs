//! A compact binary form of JSON for aggregates held in memory (the changelog keeps JSON).
//!
//! Aggregates stay serialised between inputs (see `state.rs`), and as JSON text the object
//! keys, quotes, 13-digit timestamps and 20-digit hashes are most of their bytes. This packing
//! is lossless for any JSON the engine writes, needs no schema (so it works for every
//! [`rules::Rules::State`]) and roughly halves the size:
//!
//! * every value starts with a byte: a major type in the top 3 bits and an argument in the low 5
//!   (0-27 inline; 28: an LEB128 varint follows; 29: 8 big-endian bytes follow);
//! * 0 unsigned integer, 1 negative integer (`-1 - n`), 2 decimal-looking string (argument:
//!   `scale * 2 + negative`, then the mantissa as a varint; only when the text is canonical so
//!   it is rebuilt byte for byte), 3 string, 4 array (count), 5 object (count; each key is an
//!   interned id, 0 = the key's text follows), 6 other number (its JSON text), 7 null (0),
//!   false (1), true (2), or an interned short string (3, then its id).
//!
//! Timestamps repeat with small differences (an order's placed and updated times, a profile's
//! and its email's): an unsigned integer in `[2^32, 2^53)` may instead be written as the
//! zigzag difference from the previous one in that range (argument 30), whichever is shorter;
//! the chain may start from a base the caller knows (the key's last change, a timer's due
//! time).
//!
//! Object keys are interned process-wide (field names repeat in every aggregate); the table is
//! capped so user-controlled map keys cannot grow it without bound, past the cap they are
//! stored as text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::LocalKey;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Why bytes could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The input text is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Packed bytes are truncated or malformed (never written by this module).
    #[error("malformed packed value at byte {0}")]
    Malformed(usize),
}

const UINT: u8 = 0;
const NEGINT: u8 = 1;
const DECIMAL: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const OBJECT: u8 = 5;
const NUMBER: u8 = 6;
const SIMPLE: u8 = 7;

const ARG_VARINT: u8 = 28;
/// Simple-major argument: an interned short string value, its id as a varint.
const INTERNED_VALUE: u64 = 3;
const ARG_FIXED8: u8 = 29;
/// Unsigned integer only: a zigzag varint difference from the previous timestamp-like value.
const ARG_DELTA: u8 = 30;

/// The range of values chained by [`ARG_DELTA`] (millisecond timestamps live here; random
/// 64-bit hashes almost never do, so they do not break the chain).
fn chained(v: u64) -> bool {
    (1 << 32..1 << 53).contains(&v)
}

/// A process-wide table of interned strings. Id 0 is reserved for "not interned".
#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

/// An interned-string table: the process-wide ids and texts, each thread's copies of the ones
/// it has met (an id never changes once given, so a hot loop takes neither the lock nor a
/// SipHash on a hit), and the cap past which strings stay text.
struct Table {
    shared: OnceLock<RwLock<Interner>>,
    ids: &'static LocalKey<RefCell<hashbrown::HashMap<Box<str>, u32>>>,
    /// `[id - 1]`, filled from `shared` as ids appear.
    texts: &'static LocalKey<RefCell<Vec<Arc<str>>>>,
    cap: usize,
}

thread_local! {
    static NAME_IDS: RefCell<hashbrown::HashMap<Box<str>, u32>> = RefCell::default();
    static VALUE_IDS: RefCell<hashbrown::HashMap<Box<str>, u32>> = RefCell::default();
    static NAME_TEXTS: RefCell<Vec<Arc<str>>> = RefCell::default();
    static VALUE_TEXTS: RefCell<Vec<Arc<str>>> = RefCell::default();
}

/// Names: object keys, timer kinds, key prefixes (a few per shop). Each costs about 100 bytes
/// for the life of the process; past the cap, names are stored as text.
static NAMES: Table = Table {
    shared: OnceLock::new(),
    ids: &NAME_IDS,
    texts: &NAME_TEXTS,
    cap: 65_536,
};

/// Short string values (statuses, currencies, country codes, common first names): a separate,
/// smaller table so customer data can never crowd out names.
static VALUES: Table = Table {
    shared: OnceLock::new(),
    ids: &VALUE_IDS,
    texts: &VALUE_TEXTS,
    cap: 16_384,
};
/// Longest string value interned.
const MAX_VALUE_LEN: usize = 8;

impl Table {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Interner> {
        self.shared
            .get_or_init(RwLock::default)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The id of `s`, interning it if there is room.
    fn intern(&self, s: &str) -> Option<u32> {
        if let Some(id) = self.ids.with_borrow(|m| m.get(s).copied()) {
            return Some(id);
        }
        let id = self.intern_shared(s)?;
        self.ids.with_borrow_mut(|m| m.insert(s.into(), id));
        Some(id)
    }

    fn intern_shared(&self, s: &str) -> Option<u32> {
        if let Some(id) = self.read().ids.get(s) {
            return Some(*id);
        }
        let mut t = self
            .shared
            .get_or_init(RwLock::default)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = t.ids.get(s) {
            return Some(*id);
        }
        if t.names.len() >= self.cap {
            return None;
        }
        let name: Arc<str> = s.into();
        t.names.push(Arc::clone(&name));
        let id = u32::try_from(t.names.len()).ok()?;
        t.ids.insert(name, id);
        Some(id)
    }

    fn lookup(&self, s: &str) -> Option<u32> {
        self.read().ids.get(s).copied()
    }

    fn interned(&self, id: u32) -> Option<Arc<str>> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.read().names.get(i).cloned()
    }

    /// The text interned as `id` (from this thread's copies); `None` for an id never given.
    fn text(&self, id: u32) -> Option<Arc<str>> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.texts.with_borrow_mut(|local| {
            if i >= local.len() {
                let from = local.len();
                local.extend(self.read().names.iter().skip(from).cloned());
            }
            local.get(i).cloned()
        })
    }

    /// Writes the text interned as `id` as a JSON string; `None` for an id never given.
    fn write(&self, id: u32, out: &mut String) -> Option<()> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.texts.with_borrow_mut(|local| {
            if i >= local.len() {
                let from = local.len();
                local.extend(self.read().names.iter().skip(from).cloned());
            }
            write_string(out, local.get(i)?);
            Some(())
        })
    }
}

/// The id of name `s` (1-based), interning it if there is room; `None` when the table is full.
pub fn intern(s: &str) -> Option<u32> {
    NAMES.intern(s)
}

/// The id of name `s` if it is interned (never interns).
pub fn lookup(s: &str) -> Option<u32> {
    NAMES.lookup(s)
}

/// The name interned as `id`.
pub fn interned(id: u32) -> Option<Arc<str>> {
    NAMES.interned(id)
}

/// Appends an LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an LEB128 varint at `*pos`.
pub fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, PackError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or(PackError::Malformed(*pos))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(PackError::Malformed(*pos))
}

/// Zigzag-encodes a signed integer so small magnitudes stay short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    if arg < u64::from(ARG_VARINT) {
        out.push(major << 5 | arg as u8);
    } else if arg < 1 << 56 {
        out.push(major << 5 | ARG_VARINT);
        put_varint(out, arg);
    } else {
        out.push(major << 5 | ARG_FIXED8);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn read_head(b: &[u8], pos: &mut usize, last: &mut u64) -> Result<(u8, u64), PackError> {
    let at = *pos;
    let byte = *b.get(at).ok_or(PackError::Malformed(at))?;
    *pos += 1;
    let (major, arg) = (byte >> 5, byte & 0x1f);
    let value = match arg {
        a if a < ARG_VARINT => u64::from(a),
        ARG_VARINT => get_varint(b, pos)?,
        ARG_DELTA if major == UINT => {
            let v = last.wrapping_add(unzigzag(get_varint(b, pos)?) as u64);
            if !chained(v) {
                return Err(PackError::Malformed(at));
            }
            v
        }
        ARG_FIXED8 => {
            let bytes: [u8; 8] = b
                .get(*pos..*pos + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or(PackError::Malformed(at))?;
            *pos += 8;
            u64::from_be_bytes(bytes)
        }
        _ => return Err(PackError::Malformed(at)),
    };
    if major == UINT && chained(value) {
        *last = value;
    }
    Ok((major, value))
}

/// Packs JSON text. Fails only when the text is not JSON.
pub fn pack_json(text: &str) -> Result<Vec<u8>, PackError> {
    pack_json_near(text, 0)
}

/// Packs JSON text whose timestamps are likely near `base` (ms): the first one is then
/// written as a difference too. Unpack with the same base.
pub fn pack_json_near(text: &str, base: i64) -> Result<Vec<u8>, PackError> {
    let mut out = Vec::with_capacity(text.len() / 2 + 8);
    let mut de = serde_json::Deserializer::from_str(text);
    pack_into(&mut de, base, &mut out)?;
    de.end()?;
    Ok(out)
}

/// Packs what `d` yields into `out`, timestamps chained from `base`.
fn pack_into<'de, D: de::Deserializer<'de>>(
    d: D,
    base: i64,
    out: &mut Vec<u8>,
) -> Result<(), D::Error> {
    let last = std::cell::Cell::new(base as u64);
    Packer { out, last: &last }.deserialize(d)
}

/// Packs a JSON value as [`pack_json_near`] packs its text (same bytes), without printing and
/// parsing it again.
pub fn pack_value_near(value: &serde_json::Value, base: i64) -> Result<Vec<u8>, PackError> {
    let mut out = Vec::new();
    pack_into(value, base, &mut out)?;
    Ok(out)
}

/// Unpacks to compact JSON text.
pub fn unpack_json(bytes: &[u8]) -> Result<String, PackError> {
    unpack_json_near(bytes, 0)
}

/// Unpacks what [`pack_json_near`] packed with the same `base`.
pub fn unpack_json_near(bytes: &[u8], base: i64) -> Result<String, PackError> {
    let mut out = String::with_capacity(bytes.len() * 2 + 8);
    let mut pos = 0;
    unpack_value(bytes, &mut pos, &mut out, &mut (base as u64), 0)?;
    if pos != bytes.len() {
        return Err(PackError::Malformed(pos));
    }
    Ok(out)
}

/// Deepest nesting unpacked (packing is bounded by serde_json's own recursion limit).
const MAX_DEPTH: u32 = 256;

fn unpack_value(
    b: &[u8],
    pos: &mut usize,
    out: &mut String,
    last: &mut u64,
    depth: u32,
) -> Result<(), PackError> {
    let at = *pos;
    if depth > MAX_DEPTH {
        return Err(PackError::Malformed(at));
    }
    let (major, arg) = read_head(b, pos, last)?;
    match major {
        UINT => {
            let _ = write!(out, "{arg}");
        }
        NEGINT => {
            let _ = write!(out, "{}", -1 - i128::from(arg));
        }
        DECIMAL => {
            if arg >> 1 > 13 {
                return Err(PackError::Malformed(at));
            }
            let mantissa = get_varint(b, pos)?;
            out.push('"');
            write_decimal(out, arg & 1 == 1, (arg >> 1) as usize, mantissa);
            out.push('"');
        }
        TEXT | NUMBER => {
            let len = usize::try_from(arg).map_err(|_| PackError::Malformed(at))?;
            let s = b
                .get(*pos..pos.saturating_add(len))
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or(PackError::Malformed(at))?;
            *pos += len;
            if major == TEXT {
                write_string(out, s);
            } else {
                out.push_str(s);
            }
        }
        ARRAY => {
            out.push('[');
            for i in 0..arg {
                if i > 0 {
                    out.push(',');
                }
                unpack_value(b, pos, out, last, depth + 1)?;
            }
            out.push(']');
        }
        OBJECT => {
            out.push('{');
            for i in 0..arg {
                if i > 0 {
                    out.push(',');
                }
                let key_at = *pos;
                let id = get_varint(b, pos)?;
                if id == 0 {
                    let len = usize::try_from(get_varint(b, pos)?)
                        .map_err(|_| PackError::Malformed(key_at))?;
                    let s = b
                        .get(*pos..pos.saturating_add(len))
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .ok_or(PackError::Malformed(key_at))?;
                    *pos += len;
                    write_string(out, s);
                } else {
                    u32::try_from(id)
                        .ok()
                        .and_then(|id| NAMES.write(id, out))
                        .ok_or(PackError::Malformed(key_at))?;
                }
                out.push(':');
                unpack_value(b, pos, out, last, depth + 1)?;
            }
            out.push('}');
        }
        _ => match arg {
            0 => out.push_str("null"),
            INTERNED_VALUE => {
                let id =
                    u32::try_from(get_varint(b, pos)?).map_err(|_| PackError::Malformed(at))?;
                VALUES.write(id, out).ok_or(PackError::Malformed(at))?;
            }
            1 => out.push_str("false"),
            2 => out.push_str("true"),
            _ => return Err(PackError::Malformed(at)),
        },
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    // Nothing to escape (serde_json escapes only `"`, `\` and control characters): as is.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's escaping, so the text reads back exactly.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

fn write_decimal(out: &mut String, negative: bool, scale: usize, mantissa: u64) {
    if negative {
        out.push('-');
    }
    let digits = mantissa.to_string();
    if scale == 0 {
        out.push_str(&digits);
        return;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    out.push_str(int);
    out.push('.');
    out.push_str(frac);
}

/// `Some((negative, scale, mantissa))` when `s` is a canonical decimal (`-?(0|[1-9]\d*)(\.\d+)?`,
/// at most 13 fractional digits, mantissa within u64) that [`write_decimal`] rebuilds exactly.
fn as_decimal(s: &str) -> Option<(bool, u64, u64)> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return None,
        None => (body, ""),
    };
    let canonical_int = !int.is_empty()
        && (int == "0" || !int.starts_with('0'))
        && int.bytes().all(|c| c.is_ascii_digit());
    if !canonical_int || !frac.bytes().all(|c| c.is_ascii_digit()) || frac.len() > 13 {
        return None;
    }
    let mantissa: u64 = format!("{int}{frac}").parse().ok()?;
    Some((negative, frac.len() as u64, mantissa))
}

/// Streams serde_json's parse straight into packed bytes (no intermediate `Value`).
struct Packer<'a> {
    out: &'a mut Vec<u8>,
    /// The previous timestamp-like integer, in document order (what the reader will know).
    last: &'a std::cell::Cell<u64>,
}

impl Packer<'_> {
    fn uint(&mut self, v: u64) {
        let last = self.last.get();
        if chained(v) {
            self.last.set(v);
            if chained(last) {
                let delta = zigzag(v.wrapping_sub(last) as i64);
                if varint_len(delta) + 1 < head_len(v) {
                    self.out.push(UINT << 5 | ARG_DELTA);
                    put_varint(self.out, delta);
                    return;
                }
            }
        }
        head(self.out, UINT, v);
    }
}

/// Bytes of `v` as an LEB128 varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes [`head`] writes for `arg`.
fn head_len(arg: u64) -> usize {
    if arg < u64::from(ARG_VARINT) {
        1
    } else if arg < 1 << 56 {
        1 + varint_len(arg)
    } else {
        9
    }
}

/// Reserves a one-byte head for a container whose count is not known yet; [`end_container`]
/// fills it in. The members are written straight after it (no buffer per container).
fn begin_container(out: &mut Vec<u8>) -> usize {
    out.push(0);
    out.len() - 1
}

/// Writes the head of the container begun at `at` with `n` members, widening it in the rare
/// case the count does not fit the byte.
fn end_container(out: &mut Vec<u8>, at: usize, major: u8, n: u64) {
    if n < u64::from(ARG_VARINT) {
        out[at] = major << 5 | n as u8;
    } else {
        let mut wide = Vec::with_capacity(10);
        head(&mut wide, major, n);
        out.splice(at..=at, wide);
    }
}

impl<'de> DeserializeSeed<'de> for Packer<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Packer<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push(SIMPLE << 5 | if v { 2 } else { 1 });
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.push(SIMPLE << 5);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.uint(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        if v >= 0 {
            self.uint(v as u64);
        } else {
            head(self.out, NEGINT, (-1 - v) as u64);
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json prints floats with the shortest round-trip form; so does this.
        let text = serde_json::to_string(&v).map_err(E::custom)?;
        head(self.out, NUMBER, text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if let Some((negative, scale, mantissa)) = as_decimal(v) {
            head(self.out, DECIMAL, scale * 2 + u64::from(negative));
            put_varint(self.out, mantissa);
        } else if let Some(id) = (v.len() <= MAX_VALUE_LEN)
            .then(|| VALUES.intern(v))
            .flatten()
            .filter(|id| *id < 1 << 14)
        {
            // Two or three bytes instead of the text (ids past 2^14 would not save any).
            head(self.out, SIMPLE, INTERNED_VALUE);
            put_varint(self.out, u64::from(id));
        } else {
            head(self.out, TEXT, v.len() as u64);
            self.out.extend_from_slice(v.as_bytes());
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        let at = begin_container(out);
        let mut n = 0u64;
        while seq
            .next_element_seed(Packer {
                out: &mut *out,
                last: self.last,
            })?
            .is_some()
        {
            n += 1;
        }
        end_container(out, at, ARRAY, n);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        let at = begin_container(out);
        let mut n = 0u64;
        while map.next_key_seed(KeyPacker { out: &mut *out })?.is_some() {
            map.next_value_seed(Packer {
                out: &mut *out,
                last: self.last,
            })?;
            n += 1;
        }
        end_container(out, at, OBJECT, n);
        Ok(())
    }
}

/// Writes an object key: its interned id, or 0 and its text when the table is full.
struct KeyPacker<'a> {
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for KeyPacker<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyPacker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        match intern(key) {
            Some(id) => put_varint(self.out, u64::from(id)),
            None => {
                self.out.push(0);
                put_varint(self.out, key.len() as u64);
                self.out.extend_from_slice(key.as_bytes());
            }
        }
        Ok(())
    }
}

#[path = "pack_de.rs"]
mod read;
pub use read::{ReadError, from_packed_near};

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
