//! Iterable commands: what the processor decided and the publisher delivers.

use std::str::FromStr;
use std::sync::LazyLock;

use apache_avro::types::Value;
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json};

use crate::codec::{Codec, CodecError};
use crate::value::{Fields, opt_long_array, opt_string, record, strings};

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    Codec::new(
        "IterableCommand",
        include_str!("../avro/iterable_command.avsc"),
        &[
            include_str!("../avro/released/iterable_command.v1.avsc"),
            include_str!("../avro/released/iterable_command.v2.avsc"),
        ],
    )
    // Evolves by appending `action` branches only (v2: the catalog branches).
    .writer_shaped()
});

/// JSON object used for Iterable `dataFields`. serde_json's map is ordered by key, so the
/// encoded text (and everything derived from it) is deterministic.
pub type DataFields = Map<String, Json>;

/// Who the command is about, per the configured identity mode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRef {
    /// Iterable `userId` (tillstream uses the Shopify customer id).
    pub user_id: Option<String>,
    /// Iterable `email`.
    pub email: Option<String>,
}

/// One line of a purchase or cart (Iterable `CommerceItem`).
#[derive(Debug, Clone, PartialEq)]
pub struct CommerceItem {
    /// Item id (variant or product id).
    pub id: String,
    /// SKU when known.
    pub sku: Option<String>,
    /// Display name.
    pub name: String,
    /// Unit price, shop currency.
    pub price: Decimal,
    /// Quantity.
    pub quantity: i64,
    /// Category breadcrumbs.
    pub categories: Vec<String>,
    /// Product URL.
    pub url: Option<String>,
    /// Image URL.
    pub image_url: Option<String>,
    /// Extra item fields.
    pub data_fields: Option<DataFields>,
}

/// Forget (GDPR, blocks future collection) or plain delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// `POST /api/users/forget`.
    Forget,
    /// `DELETE /api/users/{email}` or `/api/users/byUserId/{userId}`.
    Delete,
}

/// Arguments of `users/updateSubscriptions`: each `Some` array overwrites Iterable's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionUpdate {
    /// `emailListIds`.
    pub email_list_ids: Option<Vec<i64>>,
    /// `unsubscribedChannelIds`.
    pub unsubscribed_channel_ids: Option<Vec<i64>>,
    /// `unsubscribedMessageTypeIds`.
    pub unsubscribed_message_type_ids: Option<Vec<i64>>,
    /// `subscribedMessageTypeIds`.
    pub subscribed_message_type_ids: Option<Vec<i64>>,
}

/// What to do; each variant maps to one Iterable endpoint family.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `users/update` or `users/bulkUpdate`.
    UpsertUser {
        /// Fields merged into the profile.
        data_fields: DataFields,
        /// Iterable's `mergeNestedObjects`.
        merge_nested_objects: bool,
    },
    /// `events/track` or `events/trackBulk`, with `id` = the command id.
    TrackEvent {
        /// Iterable event name.
        event_name: String,
        /// Event time, Unix seconds.
        created_at_s: i64,
        /// Event fields.
        data_fields: DataFields,
    },
    /// `commerce/trackPurchase`, with `id` = the command id.
    TrackPurchase {
        /// Order time, Unix seconds.
        created_at_s: i64,
        /// Order total, shop currency.
        total: Decimal,
        /// Lines.
        items: Vec<CommerceItem>,
        /// Purchase fields.
        data_fields: DataFields,
    },
    /// `commerce/updateCart`: replaces the profile's cart.
    UpdateCart {
        /// The full current cart.
        items: Vec<CommerceItem>,
    },
    /// `users/updateSubscriptions`.
    UpdateSubscriptions(SubscriptionUpdate),
    /// `lists/subscribe` or `lists/unsubscribe`.
    ListMembership {
        /// Iterable list id.
        list_id: i64,
        /// Subscribe (true) or unsubscribe.
        subscribe: bool,
    },
    /// `users/updateEmail` (email-based projects) or an email change through `users/update`.
    ChangeEmail {
        /// The address before the change.
        current_email: Option<String>,
        /// The user id, when the project identifies by it.
        current_user_id: Option<String>,
        /// The new address.
        new_email: String,
    },
    /// `users/forget` or the delete endpoints.
    DeleteUser {
        /// Which call.
        mode: DeleteMode,
    },
    /// Create or fully replace one catalog item (`POST /api/catalogs/{catalog}/items`, batched).
    CatalogUpsert {
        /// Catalog name.
        catalog: String,
        /// Item id.
        item_id: String,
        /// The item's fields.
        document: DataFields,
    },
    /// Delete one catalog item (`DELETE /api/catalogs/{catalog}/items`, batched).
    CatalogDelete {
        /// Catalog name.
        catalog: String,
        /// Item id.
        item_id: String,
    },
}

impl Action {
    /// A short stable name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UpsertUser { .. } => "upsert_user",
            Self::TrackEvent { .. } => "track_event",
            Self::TrackPurchase { .. } => "track_purchase",
            Self::UpdateCart { .. } => "update_cart",
            Self::UpdateSubscriptions(_) => "update_subscriptions",
            Self::ListMembership { .. } => "list_membership",
            Self::ChangeEmail { .. } => "change_email",
            Self::DeleteUser { .. } => "delete_user",
            Self::CatalogUpsert { .. } => "catalog_upsert",
            Self::CatalogDelete { .. } => "catalog_delete",
        }
    }

    /// Whether the command is about a catalog item rather than a user (no user, keyed by
    /// product).
    pub fn is_catalog(&self) -> bool {
        matches!(
            self,
            Self::CatalogUpsert { .. } | Self::CatalogDelete { .. }
        )
    }
}

/// One command on the commands topic (see `schemas/avro/iterable_command.avsc`).
#[derive(Debug, Clone, PartialEq)]
pub struct IterableCommand {
    /// Deterministic id (letters, digits, hyphens; ≤ 512 bytes).
    pub command_id: String,
    /// The shop.
    pub shop_domain: String,
    /// The processor key; also the Kafka key.
    pub customer_key: String,
    /// The Iterable user.
    pub user: UserRef,
    /// Event time it derives from, Unix milliseconds.
    pub event_time_ms: i64,
    /// Delivery ids of the source events.
    pub source_ids: Vec<String>,
    /// What to do.
    pub action: Action,
}

fn json_text(fields: &DataFields) -> Value {
    // Serialising a map of JSON values cannot fail.
    Value::String(Json::Object(fields.clone()).to_string())
}

fn parse_fields(
    record: &'static str,
    field: &'static str,
    text: &str,
) -> Result<DataFields, CodecError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(CodecError::Json {
            record,
            field,
            message: "not a JSON object".into(),
        }),
        Err(e) => Err(CodecError::Json {
            record,
            field,
            message: e.to_string(),
        }),
    }
}

fn decimal(record: &'static str, field: &'static str, text: String) -> Result<Decimal, CodecError> {
    Decimal::from_str(&text).map_err(|_| CodecError::Decimal {
        record,
        field,
        value: text,
    })
}

fn item_value(i: &CommerceItem) -> Value {
    let df = match &i.data_fields {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(m) => Value::Union(1, Box::new(json_text(m))),
    };
    record(vec![
        ("id", Value::String(i.id.clone())),
        ("sku", opt_string(&i.sku)),
        ("name", Value::String(i.name.clone())),
        ("price", Value::String(i.price.to_string())),
        ("quantity", Value::Long(i.quantity)),
        ("categories", strings(&i.categories)),
        ("url", opt_string(&i.url)),
        ("image_url", opt_string(&i.image_url)),
        ("data_fields_json", df),
    ])
}

fn item_from(v: Value) -> Result<CommerceItem, CodecError> {
    const R: &str = "CommerceItem";
    let mut f = Fields::new(R, v)?;
    Ok(CommerceItem {
        id: f.string("id")?,
        sku: f.opt_string("sku")?,
        name: f.string("name")?,
        price: decimal(R, "price", f.string("price")?)?,
        quantity: f.long("quantity")?,
        categories: f.strings("categories")?,
        url: f.opt_string("url")?,
        image_url: f.opt_string("image_url")?,
        data_fields: match f.opt_string("data_fields_json")? {
            None => None,
            Some(t) => Some(parse_fields(R, "data_fields_json", &t)?),
        },
    })
}

fn items_from(values: Vec<Value>) -> Result<Vec<CommerceItem>, CodecError> {
    values.into_iter().map(item_from).collect()
}

impl Action {
    fn to_value(&self) -> Value {
        let (index, body) = match self {
            Self::UpsertUser {
                data_fields,
                merge_nested_objects,
            } => (
                0,
                record(vec![
                    ("data_fields_json", json_text(data_fields)),
                    (
                        "merge_nested_objects",
                        Value::Boolean(*merge_nested_objects),
                    ),
                ]),
            ),
            Self::TrackEvent {
                event_name,
                created_at_s,
                data_fields,
            } => (
                1,
                record(vec![
                    ("event_name", Value::String(event_name.clone())),
                    ("created_at_s", Value::Long(*created_at_s)),
                    ("data_fields_json", json_text(data_fields)),
                ]),
            ),
            Self::TrackPurchase {
                created_at_s,
                total,
                items,
                data_fields,
            } => (
                2,
                record(vec![
                    ("created_at_s", Value::Long(*created_at_s)),
                    ("total", Value::String(total.to_string())),
                    (
                        "items",
                        Value::Array(items.iter().map(item_value).collect()),
                    ),
                    ("data_fields_json", json_text(data_fields)),
                ]),
            ),
            Self::UpdateCart { items } => (
                3,
                record(vec![(
                    "items",
                    Value::Array(items.iter().map(item_value).collect()),
                )]),
            ),
            Self::UpdateSubscriptions(s) => (
                4,
                record(vec![
                    ("email_list_ids", opt_long_array(&s.email_list_ids)),
                    (
                        "unsubscribed_channel_ids",
                        opt_long_array(&s.unsubscribed_channel_ids),
                    ),
                    (
                        "unsubscribed_message_type_ids",
                        opt_long_array(&s.unsubscribed_message_type_ids),
                    ),
                    (
                        "subscribed_message_type_ids",
                        opt_long_array(&s.subscribed_message_type_ids),
                    ),
                ]),
            ),
            Self::ListMembership { list_id, subscribe } => (
                5,
                record(vec![
                    ("list_id", Value::Long(*list_id)),
                    ("subscribe", Value::Boolean(*subscribe)),
                ]),
            ),
            Self::ChangeEmail {
                current_email,
                current_user_id,
                new_email,
            } => (
                6,
                record(vec![
                    ("current_email", opt_string(current_email)),
                    ("current_user_id", opt_string(current_user_id)),
                    ("new_email", Value::String(new_email.clone())),
                ]),
            ),
            Self::DeleteUser { mode } => {
                let mode = match mode {
                    DeleteMode::Forget => Value::Enum(0, "FORGET".into()),
                    DeleteMode::Delete => Value::Enum(1, "DELETE".into()),
                };
                (7, record(vec![("mode", mode)]))
            }
            Self::CatalogUpsert {
                catalog,
                item_id,
                document,
            } => (
                8,
                record(vec![
                    ("catalog", Value::String(catalog.clone())),
                    ("item_id", Value::String(item_id.clone())),
                    ("document_json", json_text(document)),
                ]),
            ),
            Self::CatalogDelete { catalog, item_id } => (
                9,
                record(vec![
                    ("catalog", Value::String(catalog.clone())),
                    ("item_id", Value::String(item_id.clone())),
                ]),
            ),
        };
        Value::Union(index, Box::new(body))
    }

    fn from_value(v: Value) -> Result<Self, CodecError> {
        let Value::Union(index, body) = v else {
            return Err(CodecError::Shape {
                record: "IterableCommand",
                field: "action",
                expected: "union",
            });
        };
        Ok(match index {
            0 => {
                let mut f = Fields::new("UpsertUser", *body)?;
                Self::UpsertUser {
                    data_fields: parse_fields(
                        "UpsertUser",
                        "data_fields_json",
                        &f.string("data_fields_json")?,
                    )?,
                    merge_nested_objects: f.boolean("merge_nested_objects")?,
                }
            }
            1 => {
                let mut f = Fields::new("TrackEvent", *body)?;
                Self::TrackEvent {
                    event_name: f.string("event_name")?,
                    created_at_s: f.long("created_at_s")?,
                    data_fields: parse_fields(
                        "TrackEvent",
                        "data_fields_json",
                        &f.string("data_fields_json")?,
                    )?,
                }
            }
            2 => {
                let mut f = Fields::new("TrackPurchase", *body)?;
                Self::TrackPurchase {
                    created_at_s: f.long("created_at_s")?,
                    total: decimal("TrackPurchase", "total", f.string("total")?)?,
                    items: items_from(f.array("items")?)?,
                    data_fields: parse_fields(
                        "TrackPurchase",
                        "data_fields_json",
                        &f.string("data_fields_json")?,
                    )?,
                }
            }
            3 => {
                let mut f = Fields::new("UpdateCart", *body)?;
                Self::UpdateCart {
                    items: items_from(f.array("items")?)?,
                }
            }
            4 => {
                let mut f = Fields::new("UpdateSubscriptions", *body)?;
                Self::UpdateSubscriptions(SubscriptionUpdate {
                    email_list_ids: f.opt_long_array("email_list_ids")?,
                    unsubscribed_channel_ids: f.opt_long_array("unsubscribed_channel_ids")?,
                    unsubscribed_message_type_ids: f
                        .opt_long_array("unsubscribed_message_type_ids")?,
                    subscribed_message_type_ids: f.opt_long_array("subscribed_message_type_ids")?,
                })
            }
            5 => {
                let mut f = Fields::new("ListMembership", *body)?;
                Self::ListMembership {
                    list_id: f.long("list_id")?,
                    subscribe: f.boolean("subscribe")?,
                }
            }
            6 => {
                let mut f = Fields::new("ChangeEmail", *body)?;
                Self::ChangeEmail {
                    current_email: f.opt_string("current_email")?,
                    current_user_id: f.opt_string("current_user_id")?,
                    new_email: f.string("new_email")?,
                }
            }
            7 => {
                let mut f = Fields::new("DeleteUser", *body)?;
                let mode = match f.enum_symbol("mode")?.as_str() {
                    "DELETE" => DeleteMode::Delete,
                    _ => DeleteMode::Forget,
                };
                Self::DeleteUser { mode }
            }
            8 => {
                let mut f = Fields::new("CatalogUpsert", *body)?;
                Self::CatalogUpsert {
                    catalog: f.string("catalog")?,
                    item_id: f.string("item_id")?,
                    document: parse_fields(
                        "CatalogUpsert",
                        "document_json",
                        &f.string("document_json")?,
                    )?,
                }
            }
            9 => {
                let mut f = Fields::new("CatalogDelete", *body)?;
                Self::CatalogDelete {
                    catalog: f.string("catalog")?,
                    item_id: f.string("item_id")?,
                }
            }
            _ => {
                return Err(CodecError::Shape {
                    record: "IterableCommand",
                    field: "action",
                    expected: "a known branch",
                });
            }
        })
    }
}

impl IterableCommand {
    /// The codec for this record type.
    pub fn codec() -> &'static Codec {
        &CODEC
    }

    /// Encodes as an Avro single object.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        CODEC.encode_value(record(vec![
            ("command_id", Value::String(self.command_id.clone())),
            ("shop_domain", Value::String(self.shop_domain.clone())),
            ("customer_key", Value::String(self.customer_key.clone())),
            (
                "user",
                record(vec![
                    ("user_id", opt_string(&self.user.user_id)),
                    ("email", opt_string(&self.user.email)),
                ]),
            ),
            ("event_time_ms", Value::Long(self.event_time_ms)),
            ("source_ids", strings(&self.source_ids)),
            ("action", self.action.to_value()),
        ]))
    }

    /// Decodes a record written with any known version of the schema.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut f = Fields::new("IterableCommand", CODEC.decode_value(bytes)?)?;
        let command_id = f.string("command_id")?;
        let shop_domain = f.string("shop_domain")?;
        let customer_key = f.string("customer_key")?;
        let mut u = Fields::new("UserRef", f.raw("user")?)?;
        let user = UserRef {
            user_id: u.opt_string("user_id")?,
            email: u.opt_string("email")?,
        };
        let event_time_ms = f.long("event_time_ms")?;
        let source_ids = f.strings("source_ids")?;
        let action = Action::from_value(f.raw("action")?)?;
        Ok(Self {
            command_id,
            shop_domain,
            customer_key,
            user,
            event_time_ms,
            source_ids,
            action,
        })
    }
}

/// Makes a string safe as an Iterable event or purchase id: letters, digits and hyphens only,
/// at most 512 bytes. Shopify gids (`gid://shopify/Order/1`) become `shopify-Order-1`; anything
/// longer is shortened with a hash suffix so distinct inputs stay distinct.
pub fn iterable_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        let part = part.strip_prefix("gid://").unwrap_or(part);
        let mut last_dash = out.ends_with('-') || out.is_empty();
        for c in part.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
                last_dash = false;
            } else if !last_dash {
                out.push('-');
                last_dash = true;
            }
        }
    }
    let out = out.trim_matches('-').to_owned();
    if out.len() <= 512 {
        return out;
    }
    let digest = Sha256::digest(out.as_bytes());
    let hash: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", &out[..512 - 33])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterable_ids_are_safe() {
        assert_eq!(
            iterable_id(&["demo.myshopify.com", "purchase", "gid://shopify/Order/42"]),
            "demo-myshopify-com-purchase-shopify-Order-42"
        );
        let long = "x".repeat(2000);
        let id = iterable_id(&[&long]);
        assert_eq!(id.len(), 512);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(iterable_id(&[&long]), iterable_id(&[&format!("{long}y")]));
    }
}
