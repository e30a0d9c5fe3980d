//! One object of a bulk-query answer: its node, its children, and when it last changed.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A customer, order or product version as the bulk query lists it.
pub(super) struct Record {
    pub(super) updated_at: DateTime<Utc>,
    pub(super) node: Value,
    pub(super) children: Vec<Value>,
}
