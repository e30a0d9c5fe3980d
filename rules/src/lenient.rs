//! Lenient reading of secondary fields, and the count of what had to be coerced or ignored.
//!
//! Real senders and public fixtures put strings where booleans belong (`"FALSE"`, `"1"`),
//! numbers where text belongs, and nulls anywhere. A secondary field (names, consent
//! checkboxes, SKUs, quantities, ...) is coerced when its meaning is clear and ignored
//! (= unknown) when it is not, so one odd value never costs the order, its customer and its
//! purchase. Fields that decide money or identity keep strict types and dead-letter the input
//! (see README.md, "Lenient and strict fields"). Every coercion is noted; the rules count the
//! notes per kind ([`Coercions`]) so the engine can export them as a metric. The notes are
//! collected per thread while a payload is parsed, because serde gives a field deserializer no
//! other way out; [`crate::shopify::parse`] clears and drains them around each parse.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What was done to an odd value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// A string or number read as a boolean.
    Boolean,
    /// A number read as text.
    Text,
    /// A string read as an integer.
    Integer,
    /// A value of an unusable type dropped (the field counts as absent).
    Ignored,
}

thread_local! {
    static NOTES: RefCell<Vec<Note>> = const { RefCell::new(Vec::new()) };
}

fn note(n: Note) {
    NOTES.with(|v| v.borrow_mut().push(n));
}

/// How many notes this thread holds (see [`rewind`]).
pub(crate) fn mark() -> usize {
    NOTES.with(|v| v.borrow().len())
}

/// Forgets the notes taken since `mark` (a parse about to be repeated).
pub(crate) fn rewind(mark: usize) {
    NOTES.with(|v| v.borrow_mut().truncate(mark));
}

/// Forgets notes left by an earlier parse on this thread.
pub(crate) fn clear() {
    NOTES.with(|v| v.borrow_mut().clear());
}

/// The notes of the parses since the last [`clear`].
pub(crate) fn take() -> Vec<Note> {
    NOTES.with(|v| std::mem::take(&mut *v.borrow_mut()))
}

/// Counts of coerced and ignored values since the rules were built (shared by clones).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    boolean: AtomicU64,
    text: AtomicU64,
    integer: AtomicU64,
    ignored: AtomicU64,
}

/// A snapshot of [`Counters`]: how many values of each kind were coerced, and how many ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coercions {
    /// Strings or numbers read as booleans (`"FALSE"`, `"1"`).
    pub boolean: u64,
    /// Numbers read as text.
    pub text: u64,
    /// Strings read as integers (`"2"`).
    pub integer: u64,
    /// Values of an unusable type, treated as absent.
    pub ignored: u64,
}

impl Counters {
    /// Adds notes.
    pub(crate) fn record(&self, notes: &[Note]) {
        for n in notes {
            let c = match n {
                Note::Boolean => &self.boolean,
                Note::Text => &self.text,
                Note::Integer => &self.integer,
                Note::Ignored => &self.ignored,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> Coercions {
        Coercions {
            boolean: self.boolean.load(Ordering::Relaxed),
            text: self.text.load(Ordering::Relaxed),
            integer: self.integer.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
        }
    }
}

/// A boolean spelled any way Shopify exports, CSV imports and hand-written payloads spell it.
fn as_flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "t" => Some(true),
            "false" | "0" | "no" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A secondary boolean (consent checkboxes): coerced when clear, else ignored (unknown, never a
/// withdrawal).
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(v) => {
            let f = as_flag(&v);
            note(if f.is_some() {
                Note::Boolean
            } else {
                Note::Ignored
            });
            f
        }
    })
}

/// A boolean that decides money (`test`): coerced when clear, else the input dead-letters.
pub(crate) fn strict_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => match as_flag(&v) {
            Some(f) => {
                note(Note::Boolean);
                Ok(Some(f))
            }
            None => Err(D::Error::custom(format!("{v} is not a boolean"))),
        },
    }
}

/// Secondary text: numbers become their text (SKUs, source names); booleans, arrays and
/// objects are ignored (a first name of `false` is a sender's bug, not a name). Read with a
/// visitor rather than through a `serde_json::Value`: most secondary fields of every order are
/// text, and the detour built and dropped a value for each (2.8 % of the processor's CPU).
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Text)
}

/// The visitor of [`text`].
struct Text;

impl<'de> Visitor<'de> for Text {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("text")
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        note(Note::Text);
        Ok(Some(v.to_string()))
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        note(Note::Text);
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        note(Note::Text);
        // JSON's own text of the number (`1.5`, `1e+21`), as serde_json writes it.
        Ok(Some(
            serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()),
        ))
    }
    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> {
        note(Note::Ignored);
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        note(Note::Ignored);
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        note(Note::Ignored);
        Ok(None)
    }
}

fn integer<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
    D: Deserializer<'de>,
{
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let v = n
                .as_u64()
                .and_then(|u| T::try_from(u).ok())
                .or_else(|| n.as_i64().and_then(|i| T::try_from(i).ok()));
            if v.is_none() {
                note(Note::Ignored);
            }
            v
        }
        Some(Value::String(s)) => {
            let v = s.trim().parse::<T>().ok();
            note(if v.is_some() {
                Note::Integer
            } else {
                Note::Ignored
            });
            v
        }
        Some(_) => {
            note(Note::Ignored);
            None
        }
    })
}

/// A secondary signed integer (quantities): numeric strings are read, anything else ignored.
pub(crate) fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    integer(d)
}

/// A secondary unsigned integer (order numbers), as [`int`].
pub(crate) fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    integer(d)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reading [`text`] replaced: through a `serde_json::Value`.
    fn text_through_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v @ Value::Number(_)) => {
                note(Note::Text);
                Some(v.to_string())
            }
            Some(_) => {
                note(Note::Ignored);
                None
            }
        })
    }

    fn read(
        json: &str,
        f: fn(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
        ) -> serde_json::Result<Option<String>>,
    ) -> (Option<String>, Vec<Note>) {
        clear();
        let mut de = serde_json::Deserializer::from_str(json);
        let v = f(&mut de).ok().flatten();
        (v, take())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn text_reads_every_value_as_the_value_detour_did(v in json_value()) {
            let json = v.to_string();
            prop_assert_eq!(read(&json, |d| text(d)), read(&json, |d| text_through_value(d)));
        }
    }

    #[test]
    fn text_keeps_strings_writes_numbers_and_ignores_the_rest() {
        assert_eq!(read("\"Ada\"", |d| text(d)), (Some("Ada".into()), vec![]));
        assert_eq!(
            read("1e21", |d| text(d)),
            (Some("1e+21".into()), vec![Note::Text])
        );
        assert_eq!(
            read("-7", |d| text(d)),
            (Some("-7".into()), vec![Note::Text])
        );
        assert_eq!(read("null", |d| text(d)), (None, vec![]));
        assert_eq!(
            read("[1, {\"a\": 2}]", |d| text(d)),
            (None, vec![Note::Ignored])
        );
        assert_eq!(read("false", |d| text(d)), (None, vec![Note::Ignored]));
    }
}
