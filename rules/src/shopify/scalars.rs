//! The scalar fields of Shopify payloads, read leniently where a rule can do without them and
//! strictly where money and identity are at stake: ids, amounts, timestamps, tags.

use std::fmt;
use std::str::FromStr;

use chrono::DateTime;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A Shopify id: 64-bit integer, from a JSON integer, a decimal string or a `gid://` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub u64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer id, a decimal string or a gid:// string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v)
                    .map(Id)
                    .map_err(|_| E::custom(format!("negative id {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id, E> {
                // A float id has already lost precision above 2^53: refuse rather than guess.
                Err(E::custom(format!(
                    "id {v} is a float; ids must be integers"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                let tail = v.rsplit('/').next().unwrap_or(v);
                // gids may carry a query (`gid://shopify/Checkout/abc?key=...`): ignore it.
                let tail = tail.split('?').next().unwrap_or(tail);
                tail.trim()
                    .parse()
                    .map(Id)
                    .map_err(|_| E::custom(format!("{v:?} is not a numeric id")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A money amount: Shopify sends decimal strings, and numbers in a few places (refund lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Money(pub Decimal);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal amount")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                Ok(Money(Decimal::from(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Ok(Money(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                // Shortest round-trip text of the float (`89.99`), not its binary expansion.
                Decimal::from_str(&v.to_string())
                    .map(Money)
                    .map_err(|_| E::custom(format!("amount {v} out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Decimal::from_str(v.trim())
                    .map(Money)
                    .map_err(|_| E::custom(format!("{v:?} is not a decimal amount")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An ISO-8601 timestamp with offset, as Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub i64);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ReadStr(|s: &str| {
            parse_ts(s)
                .map(Ts)
                .ok_or_else(|| format!("{s:?} is not an ISO-8601 timestamp with offset"))
        }))?
        .map_err(de::Error::custom)
    }
}

/// Parses RFC 3339 (`2021-12-31T19:00:00-05:00`, `2022-01-01T00:00:00.000Z`) to Unix ms.
pub(crate) fn parse_ts(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Lenient optional timestamp: `null`, `""` and unparseable text become `None`, because a bad
/// secondary timestamp should not dead-letter an order; the callers fall back to event time.
pub(super) fn lenient_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ts>, D::Error> {
    Ok(d.deserialize_option(ReadOptStr(parse_ts))?
        .flatten()
        .map(Ts))
}

/// Reads a JSON string through `f` without copying it (a body parses from `&str`, so its
/// strings without escapes are borrowed): a timestamp costs no allocation. Anything but a
/// string is refused as `String` refuses it.
struct ReadStr<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for ReadStr<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

/// [`ReadStr`] for an optional string: `null` is `None`.
struct ReadOptStr<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for ReadOptStr<F> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(ReadStr(self.0)).map(Some)
    }
}

/// Tags: a comma-separated string in REST payloads, an array in newer shapes.
pub(super) fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        List(Vec<String>),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|r| {
        let raw: Vec<&str> = match &r {
            Raw::Text(s) => s.split(',').collect(),
            Raw::List(l) => l.iter().map(String::as_str).collect(),
        };
        let mut v: Vec<String> = raw
            .into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v.dedup();
        v
    }))
}

/// The first candidate that is present and not blank, trimmed.
pub(super) fn first_filled<const N: usize>(candidates: [Option<&str>; N]) -> Option<&str> {
    candidates.into_iter().find_map(crate::format::text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[derive(Deserialize)]
    struct Lenient {
        #[serde(default, deserialize_with = "lenient_ts")]
        t: Option<Ts>,
    }

    /// The strict reader as it was: the text copied into a `String` first.
    struct CopiedTs(i64);

    impl<'de> Deserialize<'de> for CopiedTs {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            parse_ts(&s).map(CopiedTs).ok_or_else(|| {
                de::Error::custom(format!("{s:?} is not an ISO-8601 timestamp with offset"))
            })
        }
    }

    /// JSON values a timestamp field may hold: timestamps (with escapes too), text, null,
    /// numbers, booleans, arrays.
    fn ts_json() -> impl Strategy<Value = String> {
        prop_oneof![
            (0i64..4_000_000_000_000).prop_map(|ms| format!(
                "{:?}",
                chrono::DateTime::from_timestamp_millis(ms)
                    .unwrap()
                    .to_rfc3339()
            )),
            Just(r#""2024-01-02T03:04:05\u002B01:00""#.to_owned()),
            Just(r#"" 2024-01-02T03:04:05Z ""#.to_owned()),
            "\\PC{0,12}".prop_map(|t| serde_json::to_string(&t).unwrap()),
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1.5".to_owned()),
            Just("true".to_owned()),
            Just(r#"["2024-01-02T03:04:05Z"]"#.to_owned()),
        ]
    }

    proptest! {
        /// The timestamp readers that borrow the text answer as the ones that copied it into a
        /// `String` did, errors included.
        #[test]
        fn timestamps_read_without_copies_as_they_did_with_them(v in ts_json()) {
            let strict = serde_json::from_str::<Ts>(&v).map(|t| t.0).map_err(|e| e.to_string());
            let reference = serde_json::from_str::<CopiedTs>(&v).map(|t| t.0).map_err(|e| e.to_string());
            prop_assert_eq!(strict, reference, "{}", v);
            let doc = format!(r#"{{"t": {v}}}"#);
            let lenient = serde_json::from_str::<Lenient>(&doc).map(|l| l.t.map(|t| t.0)).map_err(|e| e.to_string());
            #[derive(Deserialize)]
            struct Copied { #[serde(default)] t: Option<String> }
            let reference = serde_json::from_str::<Copied>(&doc).map(|c| c.t.as_deref().and_then(parse_ts)).map_err(|e| e.to_string());
            prop_assert_eq!(lenient, reference, "{}", doc);
        }
    }
}
