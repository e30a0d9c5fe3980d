//! Custom events and purchases, upserted by id with an update counter.

use serde_json::{Map, Value};

use crate::endpoint::Endpoint;
use crate::store::fasthash::FastMap;
use crate::store::profiles::ProfileId;

/// Largest `createdAt` still read as seconds; larger values are milliseconds (reference §6.3).
pub(crate) const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// A stored custom event (`events/track`, `trackBulk`, and the `updateCart` event).
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) profile: ProfileId,
    pub(crate) created_at: i64,
    pub(crate) created_at_was_millis: bool,
    pub(crate) data: Map<String, Value>,
    pub(crate) campaign_id: Option<i64>,
    pub(crate) template_id: Option<i64>,
    pub(crate) update_count: u64,
    pub(crate) endpoint: Endpoint,
}

/// A stored purchase (`commerce/trackPurchase`).
#[derive(Debug, Clone)]
pub(crate) struct PurchaseRecord {
    pub(crate) id: String,
    pub(crate) profile: ProfileId,
    pub(crate) items: Vec<Value>,
    pub(crate) total: f64,
    pub(crate) created_at: i64,
    pub(crate) created_at_was_millis: bool,
    pub(crate) data: Map<String, Value>,
    pub(crate) campaign_id: Option<i64>,
    pub(crate) template_id: Option<i64>,
    pub(crate) update_count: u64,
}

/// Records with a unique string id, kept in first-write order.
///
/// Records are never physically removed: when their user is deleted or forgotten the views
/// skip them (their profile no longer exists), which keeps deletes O(1). A later write with
/// the same id then starts a fresh record.
#[derive(Debug)]
pub(crate) struct Keyed<T> {
    pub(crate) items: Vec<T>,
    index: FastMap<String, usize>,
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Keyed {
            items: Vec::new(),
            index: FastMap::default(),
        }
    }
}

impl<T> Keyed<T> {
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Inserts or replaces the record with `id`.
    pub(crate) fn put(&mut self, id: &str, record: T) {
        match self.index.get(id) {
            Some(&i) => {
                if let Some(slot) = self.items.get_mut(i) {
                    *slot = record;
                }
            }
            None => {
                self.index.insert(id.to_string(), self.items.len());
                self.items.push(record);
            }
        }
    }
}

/// Event id rules (reference §3.6): non-empty, alphanumeric and hyphens, ≤ 512 bytes.
pub(crate) fn valid_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 512 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Normalises `createdAt` to seconds; `Ok((secs, was_millis))`.
pub(crate) fn normalize_created_at(v: Option<i64>, now: u64) -> Result<(i64, bool), String> {
    match v {
        None => Ok((now as i64, false)),
        Some(t) if t < 0 => Err(format!(
            "createdAt must be a positive Unix timestamp, got {t}"
        )),
        Some(t) if t > MILLIS_THRESHOLD => Ok((t / 1000, true)),
        Some(t) => Ok((t, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids() {
        assert!(valid_event_id("shopify-order-123"));
        assert!(!valid_event_id("gid://shopify/Order/123"));
        assert!(!valid_event_id("a_b"));
        assert!(!valid_event_id(""));
        assert!(valid_event_id(&"a".repeat(512)));
        assert!(!valid_event_id(&"a".repeat(513)));
    }

    #[test]
    fn created_at_units() {
        assert_eq!(
            normalize_created_at(Some(1_700_000_000), 0),
            Ok((1_700_000_000, false))
        );
        assert_eq!(
            normalize_created_at(Some(1_700_000_000_123), 0),
            Ok((1_700_000_000, true))
        );
        assert_eq!(normalize_created_at(None, 5), Ok((5, false)));
        assert!(normalize_created_at(Some(-1), 0).is_err());
    }
}
