//! First-write type locking of data fields (reference §4.3, §7) and date-string detection.
//!
//! Each (scope, field path) gets the type of the first value ever written; a later value of an
//! incompatible type fails the *whole* request with `RequestFieldsTypesMismatched`. Checking is
//! two-phase so a failing request leaves no trace: [`TypeCheck`] collects the types a request
//! would introduce (a field's first occurrence inside the request also locks it for the rest of
//! the request) and only [`TypeCheck::commit`] writes them into the registry.

use serde_json::{Map, Value, json};

use crate::store::fasthash::FastMap;

/// Iterable field types (reference §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    String,
    Date,
    Long,
    Double,
    Boolean,
    Object,
    Nested,
    GeoLocation,
}

impl FieldType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Date => "date",
            FieldType::Long => "long",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Object => "object",
            FieldType::Nested => "nested",
            FieldType::GeoLocation => "geo_location",
        }
    }

    /// The types Iterable reports as `incomingTypes` for a value of this type.
    fn incoming(self) -> &'static [&'static str] {
        match self {
            FieldType::String => &["string", "keyword"],
            FieldType::Date => &["date", "string", "keyword"],
            FieldType::Long => &["long"],
            FieldType::Double => &["double"],
            FieldType::Boolean => &["boolean"],
            FieldType::Object => &["object"],
            FieldType::Nested => &["nested"],
            FieldType::GeoLocation => &["geo_location"],
        }
    }

    /// Whether a value typed `incoming` may be stored in a field locked as `self`.
    fn accepts(self, incoming: FieldType) -> bool {
        // A double field takes integers; a string field takes date-looking strings (they are
        // strings too). Everything else must match exactly — notably a date field rejects a
        // non-date string and a long field rejects a fractional number.
        self == incoming
            || (self == FieldType::Double && incoming == FieldType::Long)
            || (self == FieldType::String && incoming == FieldType::Date)
    }
}

/// Project-wide registry: scope → field path → locked type.
#[derive(Debug, Default)]
pub(crate) struct TypeRegistry {
    scopes: FastMap<String, FastMap<String, FieldType>>,
}

impl TypeRegistry {
    fn get(&self, scope: &str, path: &str) -> Option<FieldType> {
        self.scopes.get(scope).and_then(|s| s.get(path)).copied()
    }
}

/// The outcome of checking one request against the registry.
pub(crate) struct TypeCheck<'r> {
    registry: &'r TypeRegistry,
    project_id: u64,
    pending: FastMap<(String, String), FieldType>,
    errors: Map<String, Value>,
    first_error: Option<String>,
    created: Vec<String>,
    filtered: Vec<String>,
}

impl<'r> TypeCheck<'r> {
    pub(crate) fn new(registry: &'r TypeRegistry, project_id: u64) -> Self {
        TypeCheck {
            registry,
            project_id,
            pending: FastMap::default(),
            errors: Map::new(),
            first_error: None,
            created: Vec::new(),
            filtered: Vec::new(),
        }
    }

    fn lookup(&self, scope: &str, path: &str) -> Option<FieldType> {
        self.registry.get(scope, path).or_else(|| {
            self.pending
                .get(&(scope.to_string(), path.to_string()))
                .copied()
        })
    }

    /// Checks the top-level fields of `data` in `scope` (reported as `category`).
    ///
    /// `skip` names top-level keys that are identifiers rather than data (`email`, `userId`).
    /// With `create_new_fields == false`, unknown top-level fields are not checked and their
    /// names are returned so the caller drops them (`filteredOutFields`).
    pub(crate) fn check(
        &mut self,
        scope: &str,
        category: &str,
        data: &Map<String, Value>,
        skip: &[&str],
        create_new_fields: bool,
    ) -> Vec<String> {
        let mut dropped = Vec::new();
        let mut path = String::new();
        for (key, value) in data {
            if skip.contains(&key.as_str()) {
                continue;
            }
            if !create_new_fields && self.lookup(scope, key).is_none() {
                if !self.filtered.contains(key) {
                    self.filtered.push(key.clone());
                }
                dropped.push(key.clone());
                continue;
            }
            path.clear();
            path.push_str(key);
            self.check_value(scope, category, &mut path, value);
        }
        dropped
    }

    fn check_value(&mut self, scope: &str, category: &str, path: &mut String, value: &Value) {
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(obj) = item {
                        self.check_one(scope, category, path, FieldType::Nested, item);
                        self.check_children(scope, category, path, obj);
                    } else {
                        self.check_value(scope, category, path, item);
                    }
                }
            }
            Value::Object(obj) => {
                if path.ends_with("_geo_location") && obj.contains_key("lat") {
                    self.check_one(scope, category, path, FieldType::GeoLocation, value);
                } else {
                    self.check_one(scope, category, path, FieldType::Object, value);
                    self.check_children(scope, category, path, obj);
                }
            }
            Value::Bool(_) => self.check_one(scope, category, path, FieldType::Boolean, value),
            Value::Number(n) => {
                let t = if n.is_f64() {
                    FieldType::Double
                } else {
                    FieldType::Long
                };
                self.check_one(scope, category, path, t, value);
            }
            Value::String(s) => {
                let t = if looks_like_date(s) {
                    FieldType::Date
                } else {
                    FieldType::String
                };
                self.check_one(scope, category, path, t, value);
            }
        }
    }

    fn check_children(
        &mut self,
        scope: &str,
        category: &str,
        path: &mut String,
        obj: &Map<String, Value>,
    ) {
        let len = path.len();
        for (k, v) in obj {
            path.push('.');
            path.push_str(k);
            self.check_value(scope, category, path, v);
            path.truncate(len);
        }
    }

    fn check_one(
        &mut self,
        scope: &str,
        category: &str,
        path: &str,
        incoming: FieldType,
        value: &Value,
    ) {
        match self.lookup(scope, path) {
            Some(expected) if expected.accepts(incoming) => {}
            Some(expected) => {
                if self.errors.contains_key(path) {
                    return;
                }
                let incoming_names = incoming.incoming();
                if self.first_error.is_none() {
                    self.first_error = Some(format!(
                        "Project {}: The request does not have the same data types as the data \
                         previously submitted. Field '{}' already exists for type '{}' and has a \
                         data type of '{}' but possible types '{}' in the request.",
                        self.project_id,
                        path,
                        category,
                        expected.name(),
                        incoming_names.join(", ")
                    ));
                }
                self.errors.insert(
                    path.to_string(),
                    json!({
                        "incomingTypes": incoming_names,
                        "expectedType": expected.name(),
                        "category": category,
                        "offendingValue": value,
                        "_type": "UnexpectedType",
                    }),
                );
            }
            None => {
                self.pending
                    .insert((scope.to_string(), path.to_string()), incoming);
                if !path.contains('.') {
                    self.created.push(path.to_string());
                }
            }
        }
    }

    /// `Err((msg, validationErrors))` if any field mismatched.
    pub(crate) fn result(&self) -> Result<(), (String, Value)> {
        match &self.first_error {
            None => Ok(()),
            Some(msg) => Err((
                msg.clone(),
                json!({"validationErrors": Value::Object(self.errors.clone())}),
            )),
        }
    }

    /// Top-level fields the request created and the ones it filtered out.
    pub(crate) fn created_and_filtered(&self) -> (Vec<String>, Vec<String>) {
        (self.created.clone(), self.filtered.clone())
    }

    /// The types to add to the registry (call only when [`TypeCheck::result`] is `Ok`).
    pub(crate) fn into_pending(self) -> FastMap<(String, String), FieldType> {
        self.pending
    }
}

/// Writes checked types into the registry.
pub(crate) fn commit(registry: &mut TypeRegistry, pending: FastMap<(String, String), FieldType>) {
    for ((scope, path), t) in pending {
        registry.scopes.entry(scope).or_default().insert(path, t);
    }
}

/// Whether `s` is in one of the date formats Iterable recognises (reference §7):
/// `yyyy-MM-dd`, `yyyy-MM-dd HH:mm:ss`, `yyyy-MM-dd HH:mm:ss ZZ`,
/// `yyyy-MM-ddTHH:mm:ss.SSSZZ` / `…SSSZ`. Fractional seconds only in the `T` form.
pub(crate) fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 10 || !is_ymd(&b[..10]) {
        return false;
    }
    let rest = &b[10..];
    match rest.first() {
        None => true,
        Some(b' ') => {
            let rest = &rest[1..];
            if rest.len() < 8 || !is_hms(&rest[..8]) {
                return false;
            }
            let rest = &rest[8..];
            rest.is_empty() || (rest.first() == Some(&b' ') && is_colon_offset(&rest[1..]))
        }
        Some(b'T') => {
            let rest = &rest[1..];
            if rest.len() < 12 || !is_hms(&rest[..8]) || rest[8] != b'.' {
                return false;
            }
            if !rest[9..12].iter().all(u8::is_ascii_digit) {
                return false;
            }
            let zone = &rest[12..];
            zone == b"Z" || is_colon_offset(zone) || is_plain_offset(zone)
        }
        Some(_) => false,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
}

fn is_ymd(b: &[u8]) -> bool {
    b[4] == b'-'
        && b[7] == b'-'
        && digits(&b[..4]).is_some()
        && digits(&b[5..7]).is_some_and(|m| (1..=12).contains(&m))
        && digits(&b[8..10]).is_some_and(|d| (1..=31).contains(&d))
}

fn is_hms(b: &[u8]) -> bool {
    b[2] == b':'
        && b[5] == b':'
        && digits(&b[..2]).is_some_and(|h| h < 24)
        && digits(&b[3..5]).is_some_and(|m| m < 60)
        && digits(&b[6..8]).is_some_and(|s| s < 61)
}

fn is_colon_offset(b: &[u8]) -> bool {
    b.len() == 6
        && (b[0] == b'+' || b[0] == b'-')
        && b[3] == b':'
        && digits(&b[1..3]).is_some()
        && digits(&b[4..6]).is_some()
}

fn is_plain_offset(b: &[u8]) -> bool {
    b.len() == 5 && (b[0] == b'+' || b[0] == b'-') && digits(&b[1..5]).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_formats() {
        for ok in [
            "2016-08-02",
            "2016-08-02 18:53:45",
            "2016-08-02 18:53:45 +00:00",
            "2020-04-13T14:04:09.000+00:00",
            "2020-04-13T14:04:09.000Z",
            "2020-04-13T14:04:09.000+0000",
        ] {
            assert!(looks_like_date(ok), "{ok}");
        }
        for bad in [
            "2020-04-13 14:04:09.000",
            "2024-05-01T10:00:00-04:00",
            "2020-13-01",
            "hello",
            "2020-04-13x",
        ] {
            assert!(!looks_like_date(bad), "{bad}");
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn first_write_locks_and_double_accepts_long() {
        let mut reg = TypeRegistry::default();
        let mut c = TypeCheck::new(&reg, 1);
        c.check(
            "user",
            "user",
            &obj(json!({"n": 1.5, "d": "2020-01-01", "o": {"x": 1}})),
            &[],
            true,
        );
        assert!(c.result().is_ok());
        let p = c.into_pending();
        commit(&mut reg, p);
        let mut c = TypeCheck::new(&reg, 1);
        c.check(
            "user",
            "user",
            &obj(json!({"n": 2, "o": {"x": 2}})),
            &[],
            true,
        );
        assert!(c.result().is_ok());
        let mut c = TypeCheck::new(&reg, 1);
        c.check(
            "user",
            "user",
            &obj(json!({"d": "soon", "o": {"x": "s"}})),
            &[],
            true,
        );
        let (_, params) = c.result().unwrap_err();
        assert_eq!(params["validationErrors"]["d"]["expectedType"], "date");
        assert_eq!(params["validationErrors"]["o.x"]["expectedType"], "long");
    }

    #[test]
    fn mismatch_inside_one_request() {
        let reg = TypeRegistry::default();
        let mut c = TypeCheck::new(&reg, 1);
        c.check("user", "user", &obj(json!({"a": 1})), &[], true);
        c.check("user", "user", &obj(json!({"a": "x"})), &[], true);
        assert!(c.result().is_err());
    }
}
