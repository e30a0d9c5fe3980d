//! The raw event envelope: one Shopify delivery, body bytes verbatim.

use std::sync::LazyLock;

use apache_avro::types::Value;

use crate::codec::{Codec, CodecError};
use crate::value::{Fields, opt_long, opt_string, record};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
