//! Shopify commands: consent writes the processor decided and the Shopify writer runs.

use std::sync::LazyLock;

use apache_avro::types::Value;

use crate::codec::{Codec, CodecError};
use crate::value::{Fields, record, strings};

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    Codec::new(
        "ShopifyCommand",
        include_str!("../avro/shopify_command.avsc"),
        &[include_str!("../avro/released/shopify_command.v1.avsc")],
    )
});

/// Which marketing consent a command sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsentChannel {
    /// `customerEmailMarketingConsentUpdate`.
    Email,
    /// `customerSmsMarketingConsentUpdate`.
    Sms,
}

impl ConsentChannel {
    /// Lower-case name for metrics, logs and ids.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

/// The consent state a command sets: the two states tillstream ever writes to Shopify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketingState {
    /// `SUBSCRIBED`.
    Subscribed,
    /// `UNSUBSCRIBED`.
    Unsubscribed,
}

impl MarketingState {
    /// The GraphQL enum value.
    pub fn graphql(self) -> &'static str {
        match self {
            Self::Subscribed => "SUBSCRIBED",
            Self::Unsubscribed => "UNSUBSCRIBED",
        }
    }
}

/// One command on the Shopify commands topic (see `schemas/avro/shopify_command.avsc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopifyCommand {
    /// Deterministic id.
    pub command_id: String,
    /// The shop; selects the access token.
    pub shop_domain: String,
    /// The processor key; also the Kafka key.
    pub customer_key: String,
    /// Shopify customer id.
    pub customer_id: i64,
    /// Email or SMS consent.
    pub channel: ConsentChannel,
    /// The state to set.
    pub marketing_state: MarketingState,
    /// `consentUpdatedAt`, Unix ms: Shopify echoes it back, so the processor recognises its write.
    pub consent_updated_at_ms: i64,
    /// Event time it derives from, Unix ms.
    pub event_time_ms: i64,
    /// Why, e.g. `iterable:emailUnSubscribe`.
    pub reason: String,
    /// Delivery ids of the source events.
    pub source_ids: Vec<String>,
}

impl ShopifyCommand {
    /// The codec for this record type.
    pub fn codec() -> &'static Codec {
        &CODEC
    }

    /// Encodes as an Avro single object.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let channel = match self.channel {
            ConsentChannel::Email => Value::Enum(0, "EMAIL".into()),
            ConsentChannel::Sms => Value::Enum(1, "SMS".into()),
        };
        let state = match self.marketing_state {
            MarketingState::Subscribed => Value::Enum(0, "SUBSCRIBED".into()),
            MarketingState::Unsubscribed => Value::Enum(1, "UNSUBSCRIBED".into()),
        };
        CODEC.encode_value(record(vec![
            ("command_id", Value::String(self.command_id.clone())),
            ("shop_domain", Value::String(self.shop_domain.clone())),
            ("customer_key", Value::String(self.customer_key.clone())),
            ("customer_id", Value::Long(self.customer_id)),
            ("channel", channel),
            ("marketing_state", state),
            (
                "consent_updated_at_ms",
                Value::Long(self.consent_updated_at_ms),
            ),
            ("event_time_ms", Value::Long(self.event_time_ms)),
            ("reason", Value::String(self.reason.clone())),
            ("source_ids", strings(&self.source_ids)),
        ]))
    }

    /// Decodes a record written with any known version of the schema.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut f = Fields::new("ShopifyCommand", CODEC.decode_value(bytes)?)?;
        let bad = |field| CodecError::Shape {
            record: "ShopifyCommand",
            field,
            expected: "a known symbol",
        };
        Ok(Self {
            command_id: f.string("command_id")?,
            shop_domain: f.string("shop_domain")?,
            customer_key: f.string("customer_key")?,
            customer_id: f.long("customer_id")?,
            channel: match f.enum_symbol("channel")?.as_str() {
                "EMAIL" => ConsentChannel::Email,
                "SMS" => ConsentChannel::Sms,
                _ => return Err(bad("channel")),
            },
            marketing_state: match f.enum_symbol("marketing_state")?.as_str() {
                "SUBSCRIBED" => MarketingState::Subscribed,
                "UNSUBSCRIBED" => MarketingState::Unsubscribed,
                _ => return Err(bad("marketing_state")),
            },
            consent_updated_at_ms: f.long("consent_updated_at_ms")?,
            event_time_ms: f.long("event_time_ms")?,
            reason: f.string("reason")?,
            source_ids: f.strings("source_ids")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let c = ShopifyCommand {
            command_id: "c1".into(),
            shop_domain: "a.myshopify.com".into(),
            customer_key: "a.myshopify.com/c/7".into(),
            customer_id: 7,
            channel: ConsentChannel::Sms,
            marketing_state: MarketingState::Unsubscribed,
            consent_updated_at_ms: 1_700_000_000_000,
            event_time_ms: 1_700_000_000_000,
            reason: "iterable:smsReceived".into(),
            source_ids: vec!["d1".into()],
        };
        let bytes = c.encode().unwrap();
        assert_eq!(ShopifyCommand::decode(&bytes).unwrap(), c);
        assert!(ShopifyCommand::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(ShopifyCommand::decode(b"{}").is_err());
    }
}
