//! Batching decisions: per-user path choice, coalescing of profile updates, bulk body caps.

use std::time::{Duration, Instant};

use schemas::command::{Action, DataFields};
use serde_json::Value;

use crate::config::BatchingConfig;
use crate::mapping::Family;

/// Which pipeline a user's bulk-capable commands take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `users/update`, `events/track`.
    Single,
    /// `users/bulkUpdate`, `events/trackBulk`.
    Bulk,
}

impl Path {
    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Bulk => "bulk",
        }
    }
}

/// Chooses the path of a user's next bulk-capable command.
///
/// Iterable processes the single and bulk endpoints on separate pipelines and may reorder
/// writes across them, so a user who used a path within `path_stickiness` keeps it. Otherwise
/// the bulk path is taken when a backlog of `backlog_threshold` commands of the family is
/// waiting (the single endpoint's rate would not keep up), the single path when traffic is light.
pub fn choose_path(
    config: &BatchingConfig,
    pinned: Option<(Path, Instant)>,
    now: Instant,
    backlog: usize,
) -> Path {
    if !config.enabled {
        return Path::Single;
    }
    if let Some((path, last)) = pinned
        && now.saturating_duration_since(last) < config.path_stickiness
    {
        return path;
    }
    if backlog >= config.backlog_threshold {
        Path::Bulk
    } else {
        Path::Single
    }
}

/// Whether a pinned path has expired (the user's state can then be forgotten).
pub fn pin_expired(config: &BatchingConfig, pinned: Option<(Path, Instant)>, now: Instant) -> bool {
    pinned.is_none_or(|(_, last)| now.saturating_duration_since(last) >= config.path_stickiness)
}

/// Merges two consecutive profile updates of one user into one with the same effect, or
/// returns `None` when that cannot be guaranteed.
///
/// With `mergeNestedObjects: false` Iterable replaces each top-level field sent, so a later
/// value simply overwrites the earlier one. With `true`, top-level objects are merged key by
/// key, which only equals plain replacement when no shared key holds an object on either
/// side; otherwise the updates are sent separately.
pub fn coalesce_upserts(first: &Action, next: &Action) -> Option<Action> {
    let (
        Action::UpsertUser {
            data_fields: a,
            merge_nested_objects: ma,
        },
        Action::UpsertUser {
            data_fields: b,
            merge_nested_objects: mb,
        },
    ) = (first, next)
    else {
        return None;
    };
    if ma != mb {
        return None;
    }
    if *ma {
        let clash = b
            .iter()
            .any(|(k, v)| a.get(k).is_some_and(|old| old.is_object() || v.is_object()));
        if clash {
            return None;
        }
    }
    let mut merged: DataFields = a.clone();
    for (k, v) in b {
        merged.insert(k.clone(), v.clone());
    }
    Some(Action::UpsertUser {
        data_fields: merged,
        merge_nested_objects: *ma,
    })
}

/// The family whose backlog a command counts toward, from its action alone.
pub fn family_of(action: &Action) -> Option<Family> {
    match action {
        Action::UpsertUser { .. } => Some(Family::Users),
        Action::TrackEvent { .. } => Some(Family::Events),
        _ => None,
    }
}

/// Bytes of a bulk body around its items: `{"users":[` … `]}`.
pub fn envelope_len(family: Family) -> usize {
    family.bulk_field().len() + 7
}

/// Assembles a bulk body from already serialised items, without re-serialising them.
pub fn assemble<'a>(family: Family, items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(family.bulk_field().as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Running size of a batch being filled, against the record and byte caps.
#[derive(Debug, Clone)]
pub struct BatchSize {
    family: Family,
    records: usize,
    bytes: usize,
    opened: Instant,
}

impl BatchSize {
    /// An empty batch opened at `now`.
    pub fn new(family: Family, now: Instant) -> Self {
        Self {
            family,
            records: 0,
            bytes: envelope_len(family),
            opened: now,
        }
    }

    /// Whether items of these sizes fit under the caps. An empty batch takes anything, so
    /// a single oversized record is still sent (and dead-lettered on its 413) rather than
    /// blocking its user forever.
    pub fn fits(&self, config: &BatchingConfig, item_lens: &[usize]) -> bool {
        if self.records == 0 {
            return true;
        }
        let add: usize = item_lens.iter().map(|l| l + 1).sum();
        self.records + item_lens.len() <= config.max_records && self.bytes + add <= config.max_bytes
    }

    /// Adds items.
    pub fn add(&mut self, item_lens: &[usize]) {
        for l in item_lens {
            self.bytes += l + usize::from(self.records > 0);
            self.records += 1;
        }
    }

    /// Full: no further record would fit.
    pub fn is_full(&self, config: &BatchingConfig) -> bool {
        self.records >= config.max_records || self.bytes + 2 >= config.max_bytes
    }

    /// Records so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Body bytes so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Age of the batch.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.opened)
    }
}

/// Serialises a JSON body; serde_json cannot fail on a `Value`.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn cfg() -> BatchingConfig {
        BatchingConfig {
            enabled: true,
            backlog_threshold: 10,
            max_records: 3,
            max_bytes: 100,
            flush_interval: Duration::from_millis(100),
            path_stickiness: Duration::from_secs(60),
            max_coalesce: 10,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn path_follows_backlog_and_sticks_per_user() {
        let c = cfg();
        let now = Instant::now();
        assert_eq!(choose_path(&c, None, now, 0), Path::Single);
        assert_eq!(choose_path(&c, None, now, 10), Path::Bulk);
        // Pinned within the window: the backlog does not matter.
        assert_eq!(
            choose_path(
                &c,
                Some((Path::Single, now)),
                now + Duration::from_secs(59),
                1000
            ),
            Path::Single
        );
        assert_eq!(
            choose_path(&c, Some((Path::Bulk, now)), now + Duration::from_secs(1), 0),
            Path::Bulk
        );
        // Expired: decided afresh.
        assert_eq!(
            choose_path(
                &c,
                Some((Path::Bulk, now)),
                now + Duration::from_secs(61),
                0
            ),
            Path::Single
        );
        assert!(pin_expired(
            &c,
            Some((Path::Bulk, now)),
            now + Duration::from_secs(60)
        ));
        assert!(!pin_expired(&c, Some((Path::Bulk, now)), now));
        let off = BatchingConfig {
            enabled: false,
            ..cfg()
        };
        assert_eq!(
            choose_path(&off, Some((Path::Bulk, now)), now, 1000),
            Path::Single
        );
    }

    #[test]
    fn upserts_coalesce_only_when_equivalent() {
        let a = Action::UpsertUser {
            data_fields: obj(json!({"a": 1, "o": {"x": 1}})),
            merge_nested_objects: false,
        };
        let b = Action::UpsertUser {
            data_fields: obj(json!({"a": 2, "o": {"y": 2}})),
            merge_nested_objects: false,
        };
        let Some(Action::UpsertUser { data_fields, .. }) = coalesce_upserts(&a, &b) else {
            panic!()
        };
        assert_eq!(Value::Object(data_fields), json!({"a": 2, "o": {"y": 2}}));

        let m1 = Action::UpsertUser {
            data_fields: obj(json!({"o": {"x": 1}})),
            merge_nested_objects: true,
        };
        let m2 = Action::UpsertUser {
            data_fields: obj(json!({"o": {"y": 2}})),
            merge_nested_objects: true,
        };
        assert_eq!(coalesce_upserts(&m1, &m2), None);
        let m3 = Action::UpsertUser {
            data_fields: obj(json!({"p": {"y": 2}, "q": 1})),
            merge_nested_objects: true,
        };
        assert!(coalesce_upserts(&m1, &m3).is_some());
        assert_eq!(coalesce_upserts(&a, &m1), None);
        let ev = Action::TrackEvent {
            event_name: "e".into(),
            created_at_s: 0,
            data_fields: Map::new(),
        };
        assert_eq!(coalesce_upserts(&a, &ev), None);
    }

    #[test]
    fn caps_are_enforced_and_bodies_assembled() {
        let c = cfg();
        let now = Instant::now();
        let mut b = BatchSize::new(Family::Users, now);
        assert_eq!(b.bytes(), envelope_len(Family::Users));
        assert!(
            b.fits(&c, &[500]),
            "an empty batch takes an oversized record"
        );
        b.add(&[30]);
        assert!(b.fits(&c, &[30]));
        assert!(!b.fits(&c, &[60]));
        b.add(&[30]);
        assert!(!b.fits(&c, &[1, 1]), "record cap");
        b.add(&[1]);
        assert!(b.is_full(&c));
        let items: Vec<Vec<u8>> =
            vec![br#"{"userId":"1"}"#.to_vec(), br#"{"userId":"2"}"#.to_vec()];
        let body = assemble(Family::Users, items.iter().map(Vec::as_slice));
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, json!({"users": [{"userId": "1"}, {"userId": "2"}]}));
        let mut exact = BatchSize::new(Family::Users, now);
        exact.add(&[items[0].len(), items[1].len()]);
        assert_eq!(exact.bytes(), body.len());
    }
}
