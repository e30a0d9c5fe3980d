//! An Iterable request as the publisher sends it (endpoint, method, identity, body) and how a project identifies users: the types mapping and delivery share.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// How the project identifies users (reference §6.4); decides which identifier is sent and
/// how email changes and deletes are expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ProjectType {
    /// `email` and `userId` are both unique: `userId` is sent when known, else `email`.
    #[default]
    #[serde(rename = "hybrid")]
    Hybrid,
    /// Only `userId` identifies users.
    #[serde(rename = "userId", alias = "user_id")]
    UserId,
    /// `email` identifies users; email changes go through `users/updateEmail`.
    #[serde(rename = "email")]
    Email,
}

/// The Iterable endpoints the publisher calls.
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
    /// `POST /api/users/forget`
    UsersForget,
    /// `DELETE /api/users/{email}`
    UsersDeleteByEmail,
    /// `DELETE /api/users/byUserId/{userId}`
    UsersDeleteByUserId,
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
    /// `POST /api/catalogs/{name}` (create a catalog, on first use)
    CatalogsCreate,
    /// `PUT /api/catalogs/{name}/items/{itemId}` (replace one item)
    CatalogsReplaceItem,
    /// `DELETE /api/catalogs/{name}/items` with `itemIds` (bulk delete)
    CatalogsBulkDeleteItems,
}

impl Endpoint {
    /// Every endpoint, in a stable order.
    pub const ALL: [Endpoint; 16] = [
        Self::UsersUpdate,
        Self::UsersBulkUpdate,
        Self::UsersUpdateEmail,
        Self::UsersUpdateSubscriptions,
        Self::UsersForget,
        Self::UsersDeleteByEmail,
        Self::UsersDeleteByUserId,
        Self::EventsTrack,
        Self::EventsTrackBulk,
        Self::CommerceTrackPurchase,
        Self::CommerceUpdateCart,
        Self::ListsSubscribe,
        Self::ListsUnsubscribe,
        Self::CatalogsCreate,
        Self::CatalogsReplaceItem,
        Self::CatalogsBulkDeleteItems,
    ];

    /// Stable name for metrics, logs and dead-letter headers (the simulator's names).
    pub fn name(self) -> &'static str {
        match self {
            Self::UsersUpdate => "users/update",
            Self::UsersBulkUpdate => "users/bulkUpdate",
            Self::UsersUpdateEmail => "users/updateEmail",
            Self::UsersUpdateSubscriptions => "users/updateSubscriptions",
            Self::UsersForget => "users/forget",
            Self::UsersDeleteByEmail => "users/deleteByEmail",
            Self::UsersDeleteByUserId => "users/deleteByUserId",
            Self::EventsTrack => "events/track",
            Self::EventsTrackBulk => "events/trackBulk",
            Self::CommerceTrackPurchase => "commerce/trackPurchase",
            Self::CommerceUpdateCart => "commerce/updateCart",
            Self::ListsSubscribe => "lists/subscribe",
            Self::ListsUnsubscribe => "lists/unsubscribe",
            Self::CatalogsCreate => "catalogs/create",
            Self::CatalogsReplaceItem => "catalogs/replaceItem",
            Self::CatalogsBulkDeleteItems => "catalogs/bulkDeleteItems",
        }
    }

    /// Position in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether this is a bulk endpoint (record and byte caps, per-item failures).
    pub fn is_bulk(self) -> bool {
        matches!(self, Self::UsersBulkUpdate | Self::EventsTrackBulk)
    }

    /// Whether a 404 means the work is already done (deleting a user who does not exist, or
    /// an item of a catalog that does not exist).
    pub fn not_found_is_success(self) -> bool {
        matches!(
            self,
            Self::UsersDeleteByEmail | Self::UsersDeleteByUserId | Self::CatalogsBulkDeleteItems
        )
    }

    /// Whether the endpoint writes catalog items (a 404 "catalog not found" makes the
    /// publisher create the catalog and try again).
    pub fn is_catalog_item(self) -> bool {
        matches!(self, Self::CatalogsReplaceItem)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A family of commands that has both a single and a bulk endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Profile updates: `users/update` / `users/bulkUpdate`.
    Users,
    /// Custom events: `events/track` / `events/trackBulk`.
    Events,
}

impl Family {
    /// The single-record endpoint.
    pub fn single(self) -> Endpoint {
        match self {
            Self::Users => Endpoint::UsersUpdate,
            Self::Events => Endpoint::EventsTrack,
        }
    }

    /// The bulk endpoint.
    pub fn bulk(self) -> Endpoint {
        match self {
            Self::Users => Endpoint::UsersBulkUpdate,
            Self::Events => Endpoint::EventsTrackBulk,
        }
    }

    /// The array field of the bulk body.
    pub fn bulk_field(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Events => "events",
        }
    }
}

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// POST with a JSON body.
    Post,
    /// DELETE, with a JSON body when the request has one.
    Delete,
    /// PUT with a JSON body.
    Put,
}

/// Which identifier a request carries; bulk answers report failures by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Identified by `email`.
    Email(String),
    /// Identified by `userId`.
    UserId(String),
    /// Not a user: a catalog item, `{catalog}/{itemId}` (its commands queue like a user's).
    CatalogItem(String),
}

/// One request to a single-record endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: Method,
    /// Path segments below `/api/` (unencoded; the client percent-encodes them).
    pub path: Vec<String>,
    /// JSON body (None for DELETE).
    pub body: Option<Value>,
}

impl Request {
    pub(crate) fn post(endpoint: Endpoint, path: &str, body: Value) -> Self {
        Self {
            endpoint,
            method: Method::Post,
            path: path.split('/').map(str::to_owned).collect(),
            body: Some(body),
        }
    }
}

/// A command mapped to its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The single-endpoint request. For commands of a [`Family`], its body is also the item
    /// of the bulk request.
    pub request: Request,
    /// Set when a bulk endpoint can carry this command.
    pub family: Option<Family>,
    /// The identifier sent.
    pub identity: Identity,
    /// The event name of a custom event (bulk answers list disallowed names).
    pub event_name: Option<String>,
}

/// Why a command cannot be expressed as an Iterable request (dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The project type needs an identifier the command lacks.
    #[error("no usable identifier: {0}")]
    NoIdentifier(&'static str),
    /// A catalog name or item id Iterable would refuse (letters, digits, dashes, ≤ 255).
    #[error("invalid catalog name or item id {0:?}")]
    InvalidName(String),
    /// The request is over Iterable's size cap.
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// A decimal could not be represented as a JSON number.
    #[error("{field} {value:?} is not a finite number")]
    Number {
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
    },
}
