//! Iterable commands: what the processor decided and the publisher delivers.

use rust_decimal::Decimal;
use serde_json::{Map, Value as Json};

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
