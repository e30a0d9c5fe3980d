//! The processor's changelog record: one key's aggregate, timers and dedup window.

use std::sync::LazyLock;

#[cfg(test)]
use apache_avro::types::Value;

use crate::binary::Writer;
use crate::codec::{Codec, CodecError};
use crate::value::Fields;
#[cfg(test)]
use crate::value::record;

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    Codec::new(
        "KeyStateRecord",
        include_str!("../avro/customer_state.avsc"),
        &[include_str!("../avro/released/customer_state.v1.avsc")],
    )
});

/// A durable event-time timer (see `schemas/avro/customer_state.avsc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    /// Rule-defined kind, e.g. `abandoned_checkout`.
    pub kind: String,
    /// Unique within the key; re-arming replaces.
    pub timer_id: String,
    /// Due instant in event time, Unix milliseconds.
    pub due_ms: i64,
    /// Rule-defined payload as JSON text.
    pub payload_json: String,
}

/// A fingerprint already processed, kept for the dedup window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRecord {
    /// Delivery id or content fingerprint.
    pub fingerprint: String,
    /// Event time it was seen at.
    pub event_time_ms: i64,
}

/// One key's state on the changelog topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStateRecord {
    /// The processor key.
    pub key: String,
    /// The shop.
    pub shop_domain: String,
    /// Event time of the last change.
    pub updated_at_ms: i64,
    /// The rules' aggregate as JSON.
    pub aggregate_json: String,
    /// Pending timers.
    pub timers: Vec<TimerRecord>,
    /// The dedup window.
    pub dedup: Vec<DedupRecord>,
}

impl KeyStateRecord {
    /// The codec for this record type.
    pub fn codec() -> &'static Codec {
        &CODEC
    }

    /// Encodes as an Avro single object.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        // Straight from the fields, in `customer_state.avsc`'s order (one per changed key per
        // transaction); a test compares it with the generic encoding.
        let size = self.key.len()
            + self.aggregate_json.len()
            + 64 * (self.timers.len() + self.dedup.len());
        let mut w = Writer::single_object(CODEC.fingerprint(), 64 + size);
        w.string(&self.key);
        w.string(&self.shop_domain);
        w.long(self.updated_at_ms);
        w.string(&self.aggregate_json);
        w.array(&self.timers, |w, t| {
            w.string(&t.kind);
            w.string(&t.timer_id);
            w.long(t.due_ms);
            w.string(&t.payload_json);
        });
        w.array(&self.dedup, |w, d| {
            w.string(&d.fingerprint);
            w.long(d.event_time_ms);
        });
        Ok(w.finish())
    }

    /// Encodes through `apache_avro`'s generic value (the reference the direct path must equal).
    #[cfg(test)]
    fn encode_generic(&self) -> Result<Vec<u8>, CodecError> {
        let timers = self
            .timers
            .iter()
            .map(|t| {
                record(vec![
                    ("kind", Value::String(t.kind.clone())),
                    ("timer_id", Value::String(t.timer_id.clone())),
                    ("due_ms", Value::Long(t.due_ms)),
                    ("payload_json", Value::String(t.payload_json.clone())),
                ])
            })
            .collect();
        let dedup = self
            .dedup
            .iter()
            .map(|d| {
                record(vec![
                    ("fingerprint", Value::String(d.fingerprint.clone())),
                    ("event_time_ms", Value::Long(d.event_time_ms)),
                ])
            })
            .collect();
        CODEC.encode_value(record(vec![
            ("key", Value::String(self.key.clone())),
            ("shop_domain", Value::String(self.shop_domain.clone())),
            ("updated_at_ms", Value::Long(self.updated_at_ms)),
            ("aggregate_json", Value::String(self.aggregate_json.clone())),
            ("timers", Value::Array(timers)),
            ("dedup", Value::Array(dedup)),
        ]))
    }

    /// Decodes a record written with any known version of the schema.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut f = Fields::new("KeyStateRecord", CODEC.decode_value(bytes)?)?;
        let key = f.string("key")?;
        let shop_domain = f.string("shop_domain")?;
        let updated_at_ms = f.long("updated_at_ms")?;
        let aggregate_json = f.string("aggregate_json")?;
        let timers = f
            .array("timers")?
            .into_iter()
            .map(|v| {
                let mut t = Fields::new("TimerRecord", v)?;
                Ok(TimerRecord {
                    kind: t.string("kind")?,
                    timer_id: t.string("timer_id")?,
                    due_ms: t.long("due_ms")?,
                    payload_json: t.string("payload_json")?,
                })
            })
            .collect::<Result<_, CodecError>>()?;
        let dedup = f
            .array("dedup")?
            .into_iter()
            .map(|v| {
                let mut d = Fields::new("DedupRecord", v)?;
                Ok(DedupRecord {
                    fingerprint: d.string("fingerprint")?,
                    event_time_ms: d.long("event_time_ms")?,
                })
            })
            .collect::<Result<_, CodecError>>()?;
        Ok(Self {
            key,
            shop_domain,
            updated_at_ms,
            aggregate_json,
            timers,
            dedup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{DedupRecord, KeyStateRecord, TimerRecord};
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = KeyStateRecord> {
        let s = || ".{0,12}";
        let timer =
            (s(), s(), any::<i64>(), s()).prop_map(|(kind, timer_id, due_ms, payload_json)| {
                TimerRecord {
                    kind,
                    timer_id,
                    due_ms,
                    payload_json,
                }
            });
        let dedup = (s(), any::<i64>()).prop_map(|(fingerprint, event_time_ms)| DedupRecord {
            fingerprint,
            event_time_ms,
        });
        (
            (s(), s(), any::<i64>(), ".{0,40}"),
            proptest::collection::vec(timer, 0..4),
            proptest::collection::vec(dedup, 0..40),
        )
            .prop_map(
                |((key, shop_domain, updated_at_ms, aggregate_json), timers, dedup)| {
                    KeyStateRecord {
                        key,
                        shop_domain,
                        updated_at_ms,
                        aggregate_json,
                        timers,
                        dedup,
                    }
                },
            )
    }

    proptest! {
        /// The direct encoding is byte for byte the generic one, and decodes back.
        #[test]
        fn the_direct_encoding_is_the_generic_one(r in record()) {
            let bytes = r.encode().unwrap();
            prop_assert_eq!(&bytes, &r.encode_generic().unwrap());
            prop_assert_eq!(KeyStateRecord::decode(&bytes).unwrap(), r);
        }
    }
}
