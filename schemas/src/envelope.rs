//! The raw event envelope: one Shopify delivery, body bytes verbatim.

use std::sync::LazyLock;

#[cfg(test)]
use apache_avro::types::Value;

use crate::binary::{Reader, Writer};
use crate::codec::{Codec, CodecError};
use crate::value::Fields;
#[cfg(test)]
use crate::value::{opt_long, opt_string, record};

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    Codec::new(
        "ShopifyEnvelope",
        include_str!("../avro/shopify_event.avsc"),
        &[include_str!("../avro/released/shopify_event.v1.avsc")],
    )
});

/// Where a raw record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSource {
    /// A live webhook delivery received by ingest.
    #[default]
    Webhook,
    /// An object imported from the Admin API by the backfill command.
    Backfill,
}

/// One Shopify webhook delivery as received (see `schemas/avro/shopify_event.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShopifyEnvelope {
    /// X-Shopify-Webhook-Id (deterministic for backfill).
    pub delivery_id: String,
    /// X-Shopify-Event-Id, when sent.
    pub event_id: Option<String>,
    /// X-Shopify-Topic, e.g. `orders/paid`.
    pub topic: String,
    /// X-Shopify-Shop-Domain, validated and lower-cased.
    pub shop_domain: String,
    /// X-Shopify-API-Version, when sent.
    pub api_version: Option<String>,
    /// X-Shopify-Triggered-At in Unix milliseconds, when sent and parseable.
    pub triggered_at_ms: Option<i64>,
    /// When ingest received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// The Kafka key chosen by [`crate::routing_key`].
    pub routing_key: String,
    /// Webhook or backfill.
    pub source: EventSource,
    /// X-Shopify-Name, when sent.
    pub webhook_name: Option<String>,
    /// The body bytes exactly as received.
    pub body: Vec<u8>,
}

/// Internal topic of the heartbeat ingest writes to every raw partition: "every webhook accepted
/// before `received_at_ms` is before this record". The processor's timers wait on it
/// (processor/src/watermark.rs); it carries no shop and no personal data.
pub const HEARTBEAT_TOPIC: &str = "tillstream/heartbeat";

impl ShopifyEnvelope {
    /// A heartbeat for raw partition `partition`, written by ingest instance `instance` at `at_ms`.
    pub fn heartbeat(instance: &str, partition: i32, at_ms: i64) -> Self {
        Self {
            delivery_id: format!("heartbeat-{instance}-{partition}-{at_ms}"),
            event_id: None,
            topic: HEARTBEAT_TOPIC.into(),
            shop_domain: String::new(),
            api_version: None,
            triggered_at_ms: Some(at_ms),
            received_at_ms: at_ms,
            routing_key: HEARTBEAT_TOPIC.into(),
            source: EventSource::Webhook,
            webhook_name: None,
            body: b"{}".to_vec(),
        }
    }

    /// Whether this is an ingest heartbeat rather than a delivery.
    pub fn is_heartbeat(&self) -> bool {
        self.topic == HEARTBEAT_TOPIC
    }

    /// The codec for this record type.
    pub fn codec() -> &'static Codec {
        &CODEC
    }

    /// Encodes as an Avro single object.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        // Straight from the fields, in `shopify_event.avsc`'s order (every forward and purge
        // the processor writes); a test compares it with the generic encoding.
        let mut w = Writer::single_object(CODEC.fingerprint(), 96 + self.body.len());
        w.string(&self.delivery_id);
        w.nullable(self.event_id.as_deref(), Writer::string);
        w.string(&self.topic);
        w.string(&self.shop_domain);
        w.nullable(self.api_version.as_deref(), Writer::string);
        w.nullable(self.triggered_at_ms, Writer::long);
        w.long(self.received_at_ms);
        w.string(&self.routing_key);
        w.long(match self.source {
            EventSource::Webhook => 0,
            EventSource::Backfill => 1,
        });
        w.nullable(self.webhook_name.as_deref(), Writer::string);
        w.bytes(&self.body);
        Ok(w.finish())
    }

    /// Encodes through `apache_avro`'s generic value (the reference the direct path must equal).
    #[cfg(test)]
    fn encode_generic(&self) -> Result<Vec<u8>, CodecError> {
        let source = match self.source {
            EventSource::Webhook => Value::Enum(0, "WEBHOOK".into()),
            EventSource::Backfill => Value::Enum(1, "BACKFILL".into()),
        };
        CODEC.encode_value(record(vec![
            ("delivery_id", Value::String(self.delivery_id.clone())),
            ("event_id", opt_string(&self.event_id)),
            ("topic", Value::String(self.topic.clone())),
            ("shop_domain", Value::String(self.shop_domain.clone())),
            ("api_version", opt_string(&self.api_version)),
            ("triggered_at_ms", opt_long(self.triggered_at_ms)),
            ("received_at_ms", Value::Long(self.received_at_ms)),
            ("routing_key", Value::String(self.routing_key.clone())),
            ("source", source),
            ("webhook_name", opt_string(&self.webhook_name)),
            ("body", Value::Bytes(self.body.clone())),
        ]))
    }

    /// Decodes a record written with any known version of the schema.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut e = Self::default();
        e.decode_into(bytes)?;
        Ok(e)
    }

    /// [`Self::decode`] into `self`, reusing its buffers: the processor decodes every input
    /// into one envelope, so a body (often several KiB, past the allocator's per-thread
    /// caches) costs no allocation per record. On an error `self` holds no meaningful value.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        if self.decode_current(bytes).is_some() {
            return Ok(());
        }
        *self = Self::decode_generic(bytes)?;
        Ok(())
    }

    /// The current schema's datum read straight into the fields (every raw record the
    /// processor reads takes this path); `None` for any other writer schema or a malformed
    /// datum, which the generic path then decodes or reports. Field order and types are
    /// `shopify_event.avsc`'s; a test compares this path with the generic one and with the
    /// schema's field list.
    fn decode_current(&mut self, bytes: &[u8]) -> Option<()> {
        if bytes.len() < 10 || bytes[..2] != crate::codec::MAGIC {
            return None;
        }
        if u64::from_le_bytes(bytes[2..10].try_into().ok()?) != CODEC.fingerprint() {
            return None;
        }
        let mut r = Reader::new(&bytes[10..]);
        set(&mut self.delivery_id, r.str()?);
        set_opt(&mut self.event_id, r.nullable(Reader::str)?);
        set(&mut self.topic, r.str()?);
        set(&mut self.shop_domain, r.str()?);
        set_opt(&mut self.api_version, r.nullable(Reader::str)?);
        self.triggered_at_ms = r.nullable(Reader::long)?;
        self.received_at_ms = r.long()?;
        set(&mut self.routing_key, r.str()?);
        self.source = match r.long()? {
            0 => EventSource::Webhook,
            1 => EventSource::Backfill,
            _ => return None,
        };
        set_opt(&mut self.webhook_name, r.nullable(Reader::str)?);
        self.body.clear();
        self.body.extend_from_slice(r.bytes()?);
        Some(())
    }

    /// Decodes through `apache_avro`'s generic value: any known writer schema, resolved into
    /// the current one.
    fn decode_generic(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut f = Fields::new("ShopifyEnvelope", CODEC.decode_value(bytes)?)?;
        Ok(Self {
            delivery_id: f.string("delivery_id")?,
            event_id: f.opt_string("event_id")?,
            topic: f.string("topic")?,
            shop_domain: f.string("shop_domain")?,
            api_version: f.opt_string("api_version")?,
            triggered_at_ms: f.opt_long("triggered_at_ms")?,
            received_at_ms: f.long("received_at_ms")?,
            routing_key: f.string("routing_key")?,
            source: match f.enum_symbol("source")?.as_str() {
                "BACKFILL" => EventSource::Backfill,
                _ => EventSource::Webhook,
            },
            webhook_name: f.opt_string("webhook_name")?,
            body: f.bytes("body")?,
        })
    }
}

/// `dst` becomes `src`, in `dst`'s buffer.
fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

/// [`set`] for an optional string.
fn set_opt(dst: &mut Option<String>, src: Option<&str>) {
    match (dst.as_mut(), src) {
        (Some(d), Some(s)) => set(d, s),
        (_, s) => *dst = s.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::{CODEC, EventSource, ShopifyEnvelope};
    use apache_avro::Schema;
    use proptest::prelude::*;

    fn envelope() -> impl Strategy<Value = ShopifyEnvelope> {
        let s = || ".{0,12}";
        let opt = || proptest::option::of(".{0,12}");
        (
            (s(), opt(), s(), s(), opt()),
            (
                proptest::option::of(any::<i64>()),
                any::<i64>(),
                s(),
                any::<bool>(),
                opt(),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
        )
            .prop_map(
                |((d, e, t, sh, a), (tr, rc, k, b, w, body))| ShopifyEnvelope {
                    delivery_id: d,
                    event_id: e,
                    topic: t,
                    shop_domain: sh,
                    api_version: a,
                    triggered_at_ms: tr,
                    received_at_ms: rc,
                    routing_key: k,
                    source: if b {
                        EventSource::Backfill
                    } else {
                        EventSource::Webhook
                    },
                    webhook_name: w,
                    body,
                },
            )
    }

    /// The direct path into a fresh envelope.
    fn direct(bytes: &[u8]) -> Option<ShopifyEnvelope> {
        let mut e = ShopifyEnvelope::default();
        e.decode_current(bytes).map(|()| e)
    }

    proptest! {
        /// The direct path reads what the generic path reads, and gives up (never panics, never
        /// reads something else) wherever the bytes are cut or changed.
        #[test]
        fn the_direct_decode_equals_the_generic_one(e in envelope(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let bytes = e.encode().unwrap();
            prop_assert_eq!(&bytes, &e.encode_generic().unwrap(), "the direct encoding is the generic one");
            prop_assert_eq!(direct(&bytes), Some(e.clone()));
            prop_assert_eq!(ShopifyEnvelope::decode_generic(&bytes).unwrap(), e);
            let mut changed = bytes.clone();
            let at = flip.0.index(changed.len());
            changed[at] ^= flip.1.max(1);
            for b in [&bytes[..cut.index(bytes.len())], &changed[..]] {
                if let Some(d) = direct(b) {
                    prop_assert_eq!(Some(d), ShopifyEnvelope::decode_generic(b).ok());
                }
            }
        }

        /// Decoding into an envelope that held another record leaves nothing of that record.
        #[test]
        fn decoding_into_a_used_envelope_keeps_nothing_of_it(before in envelope(), e in envelope()) {
            let mut reused = before;
            reused.decode_into(&e.encode().unwrap()).unwrap();
            prop_assert_eq!(reused, e);
        }
    }

    /// The direct path's field order and types are the current schema's: a schema change
    /// without a change of `decode_current` fails here.
    #[test]
    fn the_direct_decode_follows_the_current_schema() {
        let Schema::Record(r) = CODEC.schema() else {
            panic!("not a record");
        };
        let fields: Vec<String> = r
            .fields
            .iter()
            .map(|f| format!("{} {}", f.name, serde_json::to_string(&f.schema).unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                r#"delivery_id "string""#,
                r#"event_id ["null","string"]"#,
                r#"topic "string""#,
                r#"shop_domain "string""#,
                r#"api_version ["null","string"]"#,
                r#"triggered_at_ms ["null","long"]"#,
                r#"received_at_ms "long""#,
                r#"routing_key "string""#,
                r#"source {"type":"enum","namespace":"dev.tillstream.raw","name":"EventSource","symbols":["WEBHOOK","BACKFILL"],"default":"WEBHOOK"}"#,
                r#"webhook_name ["null","string"]"#,
                r#"body "bytes""#,
            ]
        );
    }
}
