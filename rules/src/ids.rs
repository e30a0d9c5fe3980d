//! Deterministic ids and hashes: command ids from shop, kind and source ids; stable content hashes.
//!
//! Iterable upserts events and purchases by `id`, so the same input must always produce the same
//! id, on every replay. Ids are built with [`schemas::iterable_id`] (letters, digits and hyphens,
//! ≤ 512 bytes, `gid://` prefixes rewritten). Emails are hashed before they enter an id: they
//! would otherwise leak into ids and collide after sanitising (`a.b@x` and `a-b@x`).

use schemas::{CustomerKey, KeyKind};

/// 64-bit FNV-1a: tiny, dependency-free and identical on every platform and run (unlike
/// `std`'s randomly seeded hasher), which is what replay-stable ids and state need.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // 0 is the "never sent" marker in the aggregate.
    if h == 0 { 1 } else { h }
}

/// An incremental content hash over labelled parts.
#[derive(Debug, Clone)]
pub struct Hasher(Vec<u8>);

impl Hasher {
    /// An empty hash input.
    pub fn new() -> Self {
        Self(Vec::with_capacity(256))
    }
    /// Adds one part (length-prefixed so parts cannot run together).
    pub fn add(&mut self, part: &str) -> &mut Self {
        self.0.extend_from_slice(&(part.len() as u64).to_le_bytes());
        self.0.extend_from_slice(part.as_bytes());
        self
    }
    /// The hash.
    pub fn finish(&self) -> u64 {
        fnv64(&self.0)
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The subject of a key as it appears in ids: `c-{id}` for customers, `e-{hash}` for emails.
pub fn subject(key: &CustomerKey) -> String {
    match key.kind() {
        KeyKind::Email => format!("e-{:016x}", fnv64(key.id().as_bytes())),
        kind => format!("{}-{}", kind.tag(), key.id()),
    }
}

/// A command id: `iterable_id([shop, kind, parts...])`.
pub fn command_id(shop: &str, kind: &str, parts: &[&str]) -> String {
    let mut all: Vec<&str> = Vec::with_capacity(parts.len() + 2);
    all.push(shop);
    all.push(kind);
    all.extend_from_slice(parts);
    schemas::iterable_id(&all)
}

/// The hash kept for a checkout token.
pub fn token_hash(token: &str) -> u64 {
    fnv64(token.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use schemas::ShopDomain;

    #[test]
    fn ids_are_safe_and_stable() {
        let id = command_id(
            "demo.myshopify.com",
            "purchase",
            &["gid://shopify/Order/820982911946154508"],
        );
        assert_eq!(
            id,
            "demo-myshopify-com-purchase-shopify-Order-820982911946154508"
        );
        let shop = ShopDomain::parse("demo.myshopify.com").unwrap();
        let a = subject(&CustomerKey::new(&shop, KeyKind::Email, "a.b@x.com"));
        let b = subject(&CustomerKey::new(&shop, KeyKind::Email, "a-b@x.com"));
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(
            subject(&CustomerKey::new(&shop, KeyKind::Customer, "5")),
            "c-5"
        );
        assert_eq!(fnv64(b"abc"), fnv64(b"abc"));
    }
}
