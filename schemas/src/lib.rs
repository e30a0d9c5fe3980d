//! Record types of tillstream's Kafka topics, their Avro schemas and codecs, and the routing rule.
//!
//! The `.avsc` files under `schemas/avro/` are the source of truth; the Rust types here mirror
//! them by hand and convert through [`apache_avro::types::Value`] so the wire format never
//! depends on how serde happens to map a Rust enum. Every value on a tillstream topic is framed
//! with Avro single-object encoding (`C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint, the
//! datum); see [`codec`] and ARCHITECTURE.md for why.

mod binary;
pub mod codec;
pub mod command;
mod command_codec;
pub mod envelope;
pub mod ids;
pub mod routing;
pub mod shopify_command;
pub mod state;
mod value;

pub use codec::{Codec, CodecError};
pub use command::{
    Action, CommerceItem, DataFields, DeleteMode, IterableCommand, SubscriptionUpdate, UserRef,
    iterable_id,
};
pub use envelope::{EventSource, HEARTBEAT_TOPIC, ShopifyEnvelope};
pub use ids::{CustomerKey, DeliveryId, IdError, KeyKind, ShopDomain};
pub use routing::{ITERABLE_CONSENT_EVENTS, ITERABLE_TOPIC_PREFIX, routing_key};
pub use shopify_command::{ConsentChannel, MarketingState, ShopifyCommand};
pub use state::{DedupRecord, KeyStateRecord, TimerRecord};
