//! The Iterable endpoints the simulator serves, their names and published rate limits.

use std::fmt;

/// One simulated Iterable endpoint.
///
/// The [`Endpoint::name`] is the key used in configuration (`rate_limits.endpoints`) and in
/// `GET /_sim/stats`; it is the path below `/api/` except for the path-parameter routes, which
/// get a stable name of their own (`users/deleteByEmail`, `users/getByUserId`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST /api/users/update`
    UsersUpdate,
    /// `POST /api/users/bulkUpdate`
    UsersBulkUpdate,
    /// `POST /api/users/updateEmail`
    UsersUpdateEmail,
    /// `POST /api/users/updateSubscriptions`
    UsersUpdateSubscriptions,
    /// `POST /api/users/bulkUpdateSubscriptions`
    UsersBulkUpdateSubscriptions,
    /// `POST /api/users/forget`
    UsersForget,
    /// `POST /api/users/unforget`
    UsersUnforget,
    /// `DELETE /api/users/{email}`
    UsersDeleteByEmail,
    /// `DELETE /api/users/byUserId/{userId}`
    UsersDeleteByUserId,
    /// `GET /api/users/getByEmail?email=` (also `GET /api/users/{email}`)
    UsersGetByEmail,
    /// `GET /api/users/byUserId/{userId}`
    UsersGetByUserId,
    /// `POST /api/events/track`
    EventsTrack,
    /// `POST /api/events/trackBulk`
    EventsTrackBulk,
    /// `POST /api/commerce/trackPurchase`
    CommerceTrackPurchase,
    /// `POST /api/commerce/updateCart`
    CommerceUpdateCart,
    /// `POST /api/lists/subscribe`
    ListsSubscribe,
    /// `POST /api/lists/unsubscribe`
    ListsUnsubscribe,
    /// `POST /api/catalogs/{catalogName}` (create)
    CatalogsCreate,
    /// `DELETE /api/catalogs/{catalogName}`
    CatalogsDelete,
    /// `POST /api/catalogs/{catalogName}/items` (bulk upsert, ≤ 1000 documents)
    CatalogsBulkUpdateItems,
    /// `DELETE /api/catalogs/{catalogName}/items` (bulk delete by `itemIds`)
    CatalogsBulkDeleteItems,
    /// `PUT /api/catalogs/{catalogName}/items/{itemId}` (replace)
    CatalogsReplaceItem,
    /// `PATCH /api/catalogs/{catalogName}/items/{itemId}` (merge)
    CatalogsUpdateItem,
    /// `DELETE /api/catalogs/{catalogName}/items/{itemId}`
    CatalogsDeleteItem,
    /// `GET /api/catalogs/{catalogName}/items/{itemId}`
    CatalogsGetItem,
}

/// A published rate limit: requests per second and an optional daily cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishedLimit {
    /// Requests per second per project.
    pub per_second: f64,
    /// Requests per day per project, if Iterable publishes one.
    pub per_day: Option<u64>,
}

impl Endpoint {
    /// Every endpoint, in a stable order (used to index per-endpoint tables).
    pub const ALL: [Endpoint; 25] = [
        Endpoint::UsersUpdate,
        Endpoint::UsersBulkUpdate,
        Endpoint::UsersUpdateEmail,
        Endpoint::UsersUpdateSubscriptions,
        Endpoint::UsersBulkUpdateSubscriptions,
        Endpoint::UsersForget,
        Endpoint::UsersUnforget,
        Endpoint::UsersDeleteByEmail,
        Endpoint::UsersDeleteByUserId,
        Endpoint::UsersGetByEmail,
        Endpoint::UsersGetByUserId,
        Endpoint::EventsTrack,
        Endpoint::EventsTrackBulk,
        Endpoint::CommerceTrackPurchase,
        Endpoint::CommerceUpdateCart,
        Endpoint::ListsSubscribe,
        Endpoint::ListsUnsubscribe,
        Endpoint::CatalogsCreate,
        Endpoint::CatalogsDelete,
        Endpoint::CatalogsBulkUpdateItems,
        Endpoint::CatalogsBulkDeleteItems,
        Endpoint::CatalogsReplaceItem,
        Endpoint::CatalogsUpdateItem,
        Endpoint::CatalogsDeleteItem,
        Endpoint::CatalogsGetItem,
    ];

    /// Number of endpoints.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable name used in configuration and statistics.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::UsersUpdate => "users/update",
            Endpoint::UsersBulkUpdate => "users/bulkUpdate",
            Endpoint::UsersUpdateEmail => "users/updateEmail",
            Endpoint::UsersUpdateSubscriptions => "users/updateSubscriptions",
            Endpoint::UsersBulkUpdateSubscriptions => "users/bulkUpdateSubscriptions",
            Endpoint::UsersForget => "users/forget",
            Endpoint::UsersUnforget => "users/unforget",
            Endpoint::UsersDeleteByEmail => "users/deleteByEmail",
            Endpoint::UsersDeleteByUserId => "users/deleteByUserId",
            Endpoint::UsersGetByEmail => "users/getByEmail",
            Endpoint::UsersGetByUserId => "users/getByUserId",
            Endpoint::EventsTrack => "events/track",
            Endpoint::EventsTrackBulk => "events/trackBulk",
            Endpoint::CommerceTrackPurchase => "commerce/trackPurchase",
            Endpoint::CommerceUpdateCart => "commerce/updateCart",
            Endpoint::ListsSubscribe => "lists/subscribe",
            Endpoint::ListsUnsubscribe => "lists/unsubscribe",
            Endpoint::CatalogsCreate => "catalogs/create",
            Endpoint::CatalogsDelete => "catalogs/delete",
            Endpoint::CatalogsBulkUpdateItems => "catalogs/bulkUpdateItems",
            Endpoint::CatalogsBulkDeleteItems => "catalogs/bulkDeleteItems",
            Endpoint::CatalogsReplaceItem => "catalogs/replaceItem",
            Endpoint::CatalogsUpdateItem => "catalogs/updateItem",
            Endpoint::CatalogsDeleteItem => "catalogs/deleteItem",
            Endpoint::CatalogsGetItem => "catalogs/getItem",
        }
    }

    /// Looks an endpoint up by its [`Endpoint::name`].
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Path as Iterable prints it, used in 401/429 messages.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::UsersDeleteByEmail => "/api/users/{email}",
            Endpoint::UsersDeleteByUserId | Endpoint::UsersGetByUserId => {
                "/api/users/byUserId/{userId}"
            }
            Endpoint::UsersUpdate => "/api/users/update",
            Endpoint::UsersBulkUpdate => "/api/users/bulkUpdate",
            Endpoint::UsersUpdateEmail => "/api/users/updateEmail",
            Endpoint::UsersUpdateSubscriptions => "/api/users/updateSubscriptions",
            Endpoint::UsersBulkUpdateSubscriptions => "/api/users/bulkUpdateSubscriptions",
            Endpoint::UsersForget => "/api/users/forget",
            Endpoint::UsersUnforget => "/api/users/unforget",
            Endpoint::UsersGetByEmail => "/api/users/getByEmail",
            Endpoint::EventsTrack => "/api/events/track",
            Endpoint::EventsTrackBulk => "/api/events/trackBulk",
            Endpoint::CommerceTrackPurchase => "/api/commerce/trackPurchase",
            Endpoint::CommerceUpdateCart => "/api/commerce/updateCart",
            Endpoint::ListsSubscribe => "/api/lists/subscribe",
            Endpoint::ListsUnsubscribe => "/api/lists/unsubscribe",
            Endpoint::CatalogsCreate | Endpoint::CatalogsDelete => "/api/catalogs/{catalogName}",
            Endpoint::CatalogsBulkUpdateItems | Endpoint::CatalogsBulkDeleteItems => {
                "/api/catalogs/{catalogName}/items"
            }
            Endpoint::CatalogsReplaceItem
            | Endpoint::CatalogsUpdateItem
            | Endpoint::CatalogsDeleteItem
            | Endpoint::CatalogsGetItem => "/api/catalogs/{catalogName}/items/{itemId}",
        }
    }

    /// Whether the endpoint carries many records per request (4 MB body cap — the catalog
    /// bulk upsert has its own, `catalog_bulk_max_bytes` — and per-record counting).
    pub fn is_bulk(self) -> bool {
        matches!(
            self,
            Endpoint::UsersBulkUpdate
                | Endpoint::EventsTrackBulk
                | Endpoint::UsersBulkUpdateSubscriptions
                | Endpoint::ListsSubscribe
                | Endpoint::ListsUnsubscribe
                | Endpoint::CatalogsBulkUpdateItems
                | Endpoint::CatalogsBulkDeleteItems
        )
    }

    /// Whether the published limit counts per API key rather than per project (the catalog
    /// item endpoints, reference §2 and §3.11).
    pub fn limited_per_api_key(self) -> bool {
        matches!(
            self,
            Endpoint::CatalogsBulkUpdateItems | Endpoint::CatalogsReplaceItem
        )
    }

    /// The limit Iterable publishes in its OpenAPI spec (reference §2, §5.1), or `None`
    /// when nothing is published (then `rate_limits.unpublished_per_second` applies).
    pub fn published_limit(self) -> Option<PublishedLimit> {
        let (per_second, per_day) = match self {
            Endpoint::EventsTrack => (2000.0, None),
            Endpoint::UsersUpdate => (500.0, None),
            Endpoint::EventsTrackBulk => (10.0, None),
            Endpoint::UsersBulkUpdate => (5.0, None),
            Endpoint::UsersForget | Endpoint::UsersUnforget => (3.0, Some(1000)),
            Endpoint::UsersDeleteByEmail
            | Endpoint::UsersDeleteByUserId
            | Endpoint::UsersGetByEmail
            | Endpoint::UsersGetByUserId => (100.0, None),
            // Per API key (see `limited_per_api_key`).
            Endpoint::CatalogsBulkUpdateItems => (100.0, None),
            Endpoint::CatalogsReplaceItem => (1000.0, None),
            _ => return None,
        };
        Some(PublishedLimit {
            per_second,
            per_day,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(Endpoint::from_name(e.name()), Some(*e));
        }
    }
}
