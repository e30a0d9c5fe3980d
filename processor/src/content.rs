//! The dedup fingerprints of an input, reading only the body bytes they need.
//!
//! Two webhook subscriptions can deliver one change twice under different delivery ids, so an
//! input also carries a *content* fingerprint: topic + resource id (`id`, else `token`) +
//! `updated_at` (else `created_at`), all top-level fields of the JSON body. The rules parse the
//! whole body anyway; parsing it a second time here (serde, skipping the other fields) was the
//! largest cost after the rules themselves. [`content_fields`] instead walks the top level of
//! the body without building or validating anything it does not return, and stops once it has
//! a non-null `id` and `updated_at`. Anything it does not expect before that (not an object,
//! escapes in the values it returns, duplicate fields, a non-string timestamp) falls back to
//! the full serde parse, so the fingerprints are the very strings the previous code hashed:
//! dedup entries already in the changelog keep matching across the upgrade.
//!
//! The differences left are on bodies serde refuses: the walk does not look at the bytes it
//! skips or at anything after its answer, so a malformed body (or one whose `created_at` after
//! the answer is not a string, or that repeats a field after it) can get a content fingerprint
//! where the full parse gave none. Shopify sends neither; a body the rules cannot parse is
//! dead-lettered and its fingerprints forgotten.

use std::borrow::Cow;

use schemas::ShopifyEnvelope;
use serde::Deserialize;

use crate::state::fingerprint_of;

/// Fingerprints of an input: its delivery, and its content when the body names a resource and
/// a timestamp.
pub fn fingerprints(env: &ShopifyEnvelope) -> Vec<u64> {
    let shop = env.shop_domain.as_str();
    let mut prints = vec![fingerprint_of(&["d:", shop, ":", &env.delivery_id])];
    if env.topic.starts_with("tillstream/") {
        return prints;
    }
    if let Some((id, at)) = content_fields_ref(&env.body) {
        prints.push(fingerprint_of(&[
            "c:", shop, ":", &env.topic, ":", &id, ":", &at,
        ]));
    }
    prints
}

/// The content fingerprint's resource id (as compact JSON) and timestamp, if the body has both.
pub fn content_fields(body: &[u8]) -> Option<(String, String)> {
    content_fields_ref(body).map(|(id, at)| (id.into_owned(), at.into_owned()))
}

/// [`content_fields`], borrowed from the body when the walk decides on its own.
fn content_fields_ref(body: &[u8]) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    match scan(body) {
        Scan::Found(id, at) => Some((Cow::Borrowed(id), Cow::Borrowed(at))),
        Scan::Absent => None,
        Scan::Unsure => parsed_content_fields(body).map(|(id, at)| (id.into(), at.into())),
    }
}

/// The full-parse answer (the reference the walk must agree with).
pub fn parsed_content_fields(body: &[u8]) -> Option<(String, String)> {
    /// Fields used for the content fingerprint; serde skips the others.
    #[derive(Deserialize)]
    struct ContentFields {
        id: Option<serde_json::Value>,
        token: Option<serde_json::Value>,
        updated_at: Option<String>,
        created_at: Option<String>,
    }
    let f = serde_json::from_slice::<ContentFields>(body).ok()?;
    let id = f.id.or(f.token).filter(|v| !v.is_null())?;
    let at = f.updated_at.or(f.created_at)?;
    Some((id.to_string(), at))
}

/// What the walk found.
enum Scan<'a> {
    /// Both, as the full parse would render them.
    Found(&'a str, &'a str),
    /// The body has no resource id or no timestamp.
    Absent,
    /// Something the walk does not decide on its own: ask the full parse.
    Unsure,
}

/// The four fields' raw values (`None`: not seen; `Some(None)`: `null`).
#[derive(Default)]
struct Fields<'a> {
    id: Option<Option<&'a str>>,
    token: Option<Option<&'a str>>,
    updated_at: Option<Option<&'a str>>,
    created_at: Option<Option<&'a str>>,
}

impl<'a> Fields<'a> {
    /// The answer, once no later field can change it.
    fn settled(&self) -> Option<(&'a str, &'a str)> {
        match (self.id, self.updated_at) {
            (Some(Some(id)), Some(Some(at))) => Some((id, at)),
            _ => None,
        }
    }

    fn answer(&self) -> Scan<'a> {
        let id = self.id.flatten().or(self.token.flatten());
        let at = self.updated_at.flatten().or(self.created_at.flatten());
        match (id, at) {
            (Some(id), Some(at)) => Scan::Found(id, at),
            _ => Scan::Absent,
        }
    }
}

fn scan(body: &[u8]) -> Scan<'_> {
    let mut pos = skip_ws(body, 0);
    if body.get(pos) != Some(&b'{') {
        return Scan::Unsure;
    }
    pos = skip_ws(body, pos + 1);
    let mut fields = Fields::default();
    if body.get(pos) == Some(&b'}') {
        return Scan::Absent;
    }
    loop {
        let Some((key, escaped, after)) = string(body, pos) else {
            return Scan::Unsure;
        };
        pos = skip_ws(body, after);
        if escaped || body.get(pos) != Some(&b':') {
            return Scan::Unsure;
        }
        pos = skip_ws(body, pos + 1);
        let slot = match key {
            b"id" => Some((&mut fields.id, true)),
            b"token" => Some((&mut fields.token, true)),
            b"updated_at" => Some((&mut fields.updated_at, false)),
            b"created_at" => Some((&mut fields.created_at, false)),
            _ => None,
        };
        let Some(end) = skip_value(body, pos) else {
            return Scan::Unsure;
        };
        if let Some((slot, any_json)) = slot {
            if slot.is_some() {
                return Scan::Unsure; // a duplicate field: serde refuses the body
            }
            let Some(value) = plain_value(&body[pos..end], any_json) else {
                return Scan::Unsure;
            };
            *slot = Some(value);
            if let Some((id, at)) = fields.settled() {
                return Scan::Found(id, at);
            }
        }
        pos = skip_ws(body, end);
        match body.get(pos) {
            Some(b',') => pos = skip_ws(body, pos + 1),
            Some(b'}') => return fields.answer(),
            _ => return Scan::Unsure,
        }
    }
}

/// A value whose text is exactly what the full parse renders: `null`, a string without
/// escapes (its contents for a timestamp, its JSON text for an id), or (ids only) a small
/// integer. `None`: anything else.
fn plain_value(raw: &[u8], any_json: bool) -> Option<Option<&str>> {
    if raw == b"null" {
        return Some(None);
    }
    if let Some((_, false, end)) = string(raw, 0)
        && end == raw.len()
        && raw.iter().all(|b| *b >= 0x20)
    {
        let text = std::str::from_utf8(raw).ok()?;
        return Some(Some(if any_json {
            text
        } else {
            &text[1..text.len() - 1]
        }));
    }
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    let small_integer = any_json
        && (1..=18).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && raw != b"-0";
    small_integer.then(|| std::str::from_utf8(raw).ok().map(Some))?
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        pos += 1;
    }
    pos
}

/// The string starting at `pos` (a `"`): its raw contents, whether they hold escapes, and the
/// position after its closing quote.
fn string(b: &[u8], pos: usize) -> Option<(&[u8], bool, usize)> {
    if b.get(pos) != Some(&b'"') {
        return None;
    }
    let mut i = pos + 1;
    let mut escaped = false;
    loop {
        let at = quote_or_backslash(b, i)?;
        if b[at] == b'"' {
            return Some((&b[pos + 1..at], escaped, at + 1));
        }
        escaped = true;
        i = at + 2;
    }
}

/// The position of the first `"` or `\` at or after `i`. Strings are most of a body's bytes,
/// and most of them are short (keys, ids, codes): eight bytes are compared at a time in a
/// register, which for those is cheaper than `memchr2`'s call and set-up (the walk over
/// shopify-sim's bodies: 1.88 → 1.58 µs per input; handing long strings to `memchr2` after 32
/// bytes was no faster).
fn quote_or_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let (q, s) = (w ^ QUOTES, w ^ BACKSLASHES);
        // A byte of `q` or `s` is zero where `w` holds the byte sought. The test below flags
        // the lowest such byte exactly (a borrow can only flag bytes above a true zero), and
        // the lowest flag of either is the first match.
        let found = (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s) & HIGH;
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    let tail = b.get(i..)?;
    tail.iter()
        .position(|c| matches!(c, b'"' | b'\\'))
        .map(|p| i + p)
}

/// The position after the value starting at `pos` (not validated: only its extent is found).
fn skip_value(b: &[u8], pos: usize) -> Option<usize> {
    match b.get(pos)? {
        b'"' => string(b, pos).map(|(_, _, end)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = pos;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string(b, i)?.2;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = pos;
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                i += 1;
            }
            (i > pos).then_some(i)
        }
    }
}

#[cfg(test)]
#[path = "content_tests.rs"]
mod tests;
