//! Catalogs of one project: named collections of JSON items keyed by item id (reference §3.11).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Longest catalog name or item id (reference §3.11).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// One stored catalog item.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) value: Map<String, Value>,
    /// Unix seconds of the last write.
    pub(crate) last_modified: u64,
    /// Writes to this item id since it was (re)created.
    pub(crate) update_count: u64,
}

/// One catalog.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// The name as it was created (lookups are case-insensitive).
    pub(crate) name: String,
    pub(crate) items: BTreeMap<String, Item>,
    /// Items deleted since the catalog was created.
    pub(crate) deleted: u64,
}

/// How a write combines with the stored item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// The stored item becomes exactly the new value (PUT, bulk without
    /// `replaceUploadedFieldsOnly`).
    Replace,
    /// Only the uploaded top-level fields change (PATCH, bulk with
    /// `replaceUploadedFieldsOnly: true`).
    Merge,
}

/// All catalogs of a project, keyed by lower-cased name (names are case-insensitive).
#[derive(Debug, Default)]
pub(crate) struct Catalogs {
    pub(crate) by_name: BTreeMap<String, Catalog>,
}

impl Catalogs {
    /// Creates `name`; false if it already exists.
    pub(crate) fn create(&mut self, name: &str) -> bool {
        let key = name.to_ascii_lowercase();
        if self.by_name.contains_key(&key) {
            return false;
        }
        self.by_name.insert(
            key,
            Catalog {
                name: name.to_string(),
                ..Catalog::default()
            },
        );
        true
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Catalog> {
        self.by_name.get(&name.to_ascii_lowercase())
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Catalog> {
        self.by_name.get_mut(&name.to_ascii_lowercase())
    }

    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.by_name.remove(&name.to_ascii_lowercase()).is_some()
    }
}

impl Catalog {
    /// Writes one item.
    pub(crate) fn write(&mut self, id: &str, value: Map<String, Value>, mode: WriteMode, now: u64) {
        match self.items.get_mut(id) {
            Some(item) => {
                match mode {
                    WriteMode::Replace => item.value = value,
                    WriteMode::Merge => item.value.extend(value),
                }
                item.last_modified = now;
                item.update_count += 1;
            }
            None => {
                self.items.insert(
                    id.to_string(),
                    Item {
                        value,
                        last_modified: now,
                        update_count: 1,
                    },
                );
            }
        }
    }

    /// Deletes one item; false if it did not exist.
    pub(crate) fn delete(&mut self, id: &str) -> bool {
        let found = self.items.remove(id).is_some();
        if found {
            self.deleted += 1;
        }
        found
    }
}

/// Catalog names and item ids: ASCII alphanumerics and dashes, 1–255 characters.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The first field name containing a period, at any depth (periods are not allowed in
/// catalog field names).
pub(crate) fn dotted_field(value: &Map<String, Value>) -> Option<String> {
    fn walk(v: &Value) -> Option<String> {
        match v {
            Value::Object(m) => dotted_field(m),
            Value::Array(a) => a.iter().find_map(walk),
            _ => None,
        }
    }
    value.iter().find_map(|(k, v)| {
        if k.contains('.') {
            Some(k.clone())
        } else {
            walk(v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn names_are_case_insensitive_and_ids_are_not() {
        let mut c = Catalogs::default();
        assert!(c.create("Products"));
        assert!(!c.create("products"));
        let cat = c.get_mut("PRODUCTS").expect("catalog");
        cat.write("Sku-1", obj(json!({"a": 1})), WriteMode::Replace, 1);
        cat.write("sku-1", obj(json!({"a": 2})), WriteMode::Replace, 1);
        assert_eq!(cat.items.len(), 2);
    }

    #[test]
    fn replace_drops_fields_merge_keeps_them() {
        let mut cat = Catalog::default();
        cat.write("x", obj(json!({"a": 1, "b": 2})), WriteMode::Replace, 1);
        cat.write("x", obj(json!({"b": 3})), WriteMode::Merge, 2);
        assert_eq!(
            Value::Object(cat.items["x"].value.clone()),
            json!({"a": 1, "b": 3})
        );
        cat.write("x", obj(json!({"c": 4})), WriteMode::Replace, 3);
        assert_eq!(Value::Object(cat.items["x"].value.clone()), json!({"c": 4}));
        assert_eq!(cat.items["x"].update_count, 3);
    }

    #[test]
    fn id_rules_and_dotted_fields() {
        assert!(valid_name("abc-123-XYZ"));
        assert!(!valid_name(""));
        assert!(!valid_name("a_b"));
        assert!(!valid_name("a.b"));
        assert!(!valid_name(&"a".repeat(256)));
        assert!(valid_name(&"a".repeat(255)));
        assert_eq!(
            dotted_field(&obj(json!({"ok": {"in.ner": 1}}))),
            Some("in.ner".into())
        );
        assert_eq!(dotted_field(&obj(json!({"ok": [{"fine": 1}]}))), None);
    }
}
