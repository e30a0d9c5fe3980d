//! Command → Iterable request: endpoint, path and JSON body. Pure, no I/O.

use std::fmt;

use schemas::command::{Action, CommerceItem, DeleteMode, IterableCommand, UserRef};
use serde_json::{Map, Value, json};

use crate::config::ProjectType;

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
    fn post(endpoint: Endpoint, path: &str, body: Value) -> Self {
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

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The identifier to send for `user` in a project of type `project`.
pub fn identity(user: &UserRef, project: ProjectType) -> Result<Identity, MappingError> {
    let (uid, email) = (non_empty(&user.user_id), non_empty(&user.email));
    match project {
        ProjectType::Hybrid => match (uid, email) {
            (Some(u), _) => Ok(Identity::UserId(u.to_owned())),
            (None, Some(e)) => Ok(Identity::Email(e.to_owned())),
            (None, None) => Err(MappingError::NoIdentifier(
                "hybrid projects need userId or email",
            )),
        },
        ProjectType::UserId => {
            uid.map(|u| Identity::UserId(u.to_owned()))
                .ok_or(MappingError::NoIdentifier(
                    "userID-based projects need userId",
                ))
        }
        ProjectType::Email => match (email, uid) {
            (Some(e), _) => Ok(Identity::Email(e.to_owned())),
            (None, Some(u)) => Ok(Identity::UserId(u.to_owned())),
            (None, None) => Err(MappingError::NoIdentifier(
                "email-based projects need email or userId",
            )),
        },
    }
}

/// Writes the identifier into a request object. In email-based projects a userId-only
/// request sets `preferUserId`, so an unknown user is created instead of rejected (§3.1).
fn put_identity(obj: &mut Map<String, Value>, id: &Identity, project: ProjectType) {
    match id {
        Identity::Email(e) => {
            obj.insert("email".into(), Value::String(e.clone()));
        }
        Identity::UserId(u) => {
            obj.insert("userId".into(), Value::String(u.clone()));
            if project == ProjectType::Email {
                obj.insert("preferUserId".into(), Value::Bool(true));
            }
        }
        // `identity` never names a catalog item; user requests have no item to write.
        Identity::CatalogItem(_) => {}
    }
}

fn user_object(id: &Identity, project: ProjectType) -> Value {
    let mut user = Map::new();
    put_identity(&mut user, id, project);
    Value::Object(user)
}

fn number(field: &'static str, text: String) -> Result<Value, MappingError> {
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or(MappingError::Number { field, value: text })
}

fn item(i: &CommerceItem) -> Result<Value, MappingError> {
    let mut o = Map::new();
    o.insert("id".into(), Value::String(i.id.clone()));
    if let Some(sku) = &i.sku {
        o.insert("sku".into(), Value::String(sku.clone()));
    }
    o.insert("name".into(), Value::String(i.name.clone()));
    o.insert("price".into(), number("price", i.price.to_string())?);
    o.insert("quantity".into(), Value::from(i.quantity));
    if !i.categories.is_empty() {
        o.insert("categories".into(), Value::from(i.categories.clone()));
    }
    if let Some(url) = &i.url {
        o.insert("url".into(), Value::String(url.clone()));
    }
    if let Some(img) = &i.image_url {
        o.insert("imageUrl".into(), Value::String(img.clone()));
    }
    if let Some(df) = &i.data_fields {
        o.insert("dataFields".into(), Value::Object(df.clone()));
    }
    Ok(Value::Object(o))
}

fn items(items: &[CommerceItem]) -> Result<Value, MappingError> {
    items
        .iter()
        .map(item)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Maps a command to its Iterable request.
///
/// Custom events and purchases use the command id as Iterable's `id`, so a retry or a replay
/// updates the same record instead of adding one.
pub fn map(cmd: &IterableCommand, project: ProjectType) -> Result<Mapped, MappingError> {
    let simple = |request: Request, family: Option<Family>, identity: Identity| Mapped {
        request,
        family,
        identity,
        event_name: None,
    };
    match &cmd.action {
        Action::UpsertUser {
            data_fields,
            merge_nested_objects,
        } => {
            let id = identity(&cmd.user, project)?;
            let mut o = Map::new();
            put_identity(&mut o, &id, project);
            o.insert("dataFields".into(), Value::Object(data_fields.clone()));
            o.insert(
                "mergeNestedObjects".into(),
                Value::Bool(*merge_nested_objects),
            );
            Ok(simple(
                Request::post(Endpoint::UsersUpdate, "users/update", Value::Object(o)),
                Some(Family::Users),
                id,
            ))
        }
        Action::TrackEvent {
            event_name,
            created_at_s,
            data_fields,
        } => {
            let id = identity(&cmd.user, project)?;
            let mut o = Map::new();
            put_identity(&mut o, &id, project);
            o.insert("eventName".into(), Value::String(event_name.clone()));
            o.insert("id".into(), Value::String(cmd.command_id.clone()));
            o.insert("createdAt".into(), Value::from(*created_at_s));
            o.insert("dataFields".into(), Value::Object(data_fields.clone()));
            Ok(Mapped {
                request: Request::post(Endpoint::EventsTrack, "events/track", Value::Object(o)),
                family: Some(Family::Events),
                identity: id,
                event_name: Some(event_name.clone()),
            })
        }
        Action::TrackPurchase {
            created_at_s,
            total,
            items: lines,
            data_fields,
        } => {
            let id = identity(&cmd.user, project)?;
            let body = json!({
                "id": cmd.command_id,
                "user": user_object(&id, project),
                "items": items(lines)?,
                "total": number("total", total.to_string())?,
                "createdAt": created_at_s,
                "dataFields": data_fields,
            });
            Ok(simple(
                Request::post(
                    Endpoint::CommerceTrackPurchase,
                    "commerce/trackPurchase",
                    body,
                ),
                None,
                id,
            ))
        }
        Action::UpdateCart { items: lines } => {
            let id = identity(&cmd.user, project)?;
            let body = json!({ "user": user_object(&id, project), "items": items(lines)? });
            Ok(simple(
                Request::post(Endpoint::CommerceUpdateCart, "commerce/updateCart", body),
                None,
                id,
            ))
        }
        Action::UpdateSubscriptions(s) => {
            let id = identity(&cmd.user, project)?;
            let mut o = Map::new();
            put_identity(&mut o, &id, project);
            // Only the arrays that are present: Iterable overwrites every array it is given.
            for (name, value) in [
                ("emailListIds", &s.email_list_ids),
                ("unsubscribedChannelIds", &s.unsubscribed_channel_ids),
                (
                    "unsubscribedMessageTypeIds",
                    &s.unsubscribed_message_type_ids,
                ),
                ("subscribedMessageTypeIds", &s.subscribed_message_type_ids),
            ] {
                if let Some(ids) = value {
                    o.insert(name.into(), Value::from(ids.clone()));
                }
            }
            Ok(simple(
                Request::post(
                    Endpoint::UsersUpdateSubscriptions,
                    "users/updateSubscriptions",
                    Value::Object(o),
                ),
                None,
                id,
            ))
        }
        Action::ListMembership { list_id, subscribe } => {
            let id = identity(&cmd.user, project)?;
            let subscriber = user_object(&id, project);
            let (endpoint, path) = if *subscribe {
                (Endpoint::ListsSubscribe, "lists/subscribe")
            } else {
                (Endpoint::ListsUnsubscribe, "lists/unsubscribe")
            };
            let body = json!({ "listId": list_id, "subscribers": [subscriber] });
            Ok(simple(Request::post(endpoint, path, body), None, id))
        }
        Action::ChangeEmail {
            current_email,
            current_user_id,
            new_email,
        } => {
            let uid = non_empty(current_user_id).or(non_empty(&cmd.user.user_id));
            let email = non_empty(current_email).or(non_empty(&cmd.user.email));
            match (project, uid, email) {
                // userID-based and hybrid projects change the email as a profile field (§3.1).
                (ProjectType::Hybrid | ProjectType::UserId, Some(u), _) => {
                    let id = Identity::UserId(u.to_owned());
                    let body = json!({ "userId": u, "dataFields": { "email": new_email } });
                    Ok(simple(
                        Request::post(Endpoint::UsersUpdate, "users/update", body),
                        Some(Family::Users),
                        id,
                    ))
                }
                (ProjectType::UserId, None, _) => Err(MappingError::NoIdentifier(
                    "userID-based projects need userId",
                )),
                (_, _, Some(e)) => {
                    let body = json!({ "currentEmail": e, "newEmail": new_email });
                    Ok(simple(
                        Request::post(Endpoint::UsersUpdateEmail, "users/updateEmail", body),
                        None,
                        Identity::Email(e.to_owned()),
                    ))
                }
                (_, Some(u), None) => {
                    let body = json!({ "currentUserId": u, "newEmail": new_email });
                    Ok(simple(
                        Request::post(Endpoint::UsersUpdateEmail, "users/updateEmail", body),
                        None,
                        Identity::UserId(u.to_owned()),
                    ))
                }
                (_, None, None) => Err(MappingError::NoIdentifier(
                    "an email change needs the current email or userId",
                )),
            }
        }
        Action::DeleteUser {
            mode: DeleteMode::Forget,
        } => {
            let id = identity(&cmd.user, project)?;
            let mut o = Map::new();
            // Forget takes exactly one identifier and no preferUserId.
            match &id {
                Identity::Email(e) => o.insert("email".into(), Value::String(e.clone())),
                Identity::UserId(u) => o.insert("userId".into(), Value::String(u.clone())),
                Identity::CatalogItem(_) => return Err(MappingError::NoIdentifier("not a user")),
            };
            Ok(simple(
                Request::post(Endpoint::UsersForget, "users/forget", Value::Object(o)),
                None,
                id,
            ))
        }
        Action::CatalogUpsert { .. } | Action::CatalogDelete { .. } => {
            crate::mapping_catalog::map(cmd)
        }
        Action::DeleteUser {
            mode: DeleteMode::Delete,
        } => {
            let id = identity(&cmd.user, project)?;
            let request = match &id {
                Identity::Email(e) => Request {
                    endpoint: Endpoint::UsersDeleteByEmail,
                    method: Method::Delete,
                    path: vec!["users".into(), e.clone()],
                    body: None,
                },
                Identity::UserId(u) => Request {
                    endpoint: Endpoint::UsersDeleteByUserId,
                    method: Method::Delete,
                    path: vec!["users".into(), "byUserId".into(), u.clone()],
                    body: None,
                },
                Identity::CatalogItem(_) => return Err(MappingError::NoIdentifier("not a user")),
            };
            Ok(simple(request, None, id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use schemas::command::SubscriptionUpdate;

    pub(crate) fn cmd(action: Action) -> IterableCommand {
        IterableCommand {
            command_id: "cmd-1".into(),
            shop_domain: "demo.myshopify.com".into(),
            customer_key: "demo.myshopify.com/1".into(),
            user: UserRef {
                user_id: Some("1".into()),
                email: Some("a@example.com".into()),
            },
            event_time_ms: 1_700_000_000_000,
            source_ids: vec!["d1".into()],
            action,
        }
    }

    fn fields(v: Value) -> schemas::command::DataFields {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn upsert_and_event_carry_identity_and_ids() {
        let m = map(
            &cmd(Action::UpsertUser {
                data_fields: fields(json!({"firstName": "A"})),
                merge_nested_objects: true,
            }),
            ProjectType::Hybrid,
        )
        .unwrap();
        assert_eq!(m.request.endpoint, Endpoint::UsersUpdate);
        assert_eq!(m.family, Some(Family::Users));
        assert_eq!(
            m.request.body,
            Some(
                json!({"userId": "1", "dataFields": {"firstName": "A"}, "mergeNestedObjects": true})
            )
        );

        let e = map(
            &cmd(Action::TrackEvent {
                event_name: "viewed".into(),
                created_at_s: 17,
                data_fields: Map::new(),
            }),
            ProjectType::Email,
        )
        .unwrap();
        assert_eq!(e.request.path, vec!["events", "track"]);
        assert_eq!(
            e.request.body,
            Some(
                json!({"email": "a@example.com", "eventName": "viewed", "id": "cmd-1", "createdAt": 17, "dataFields": {}})
            )
        );
        assert_eq!(e.identity, Identity::Email("a@example.com".into()));
    }

    #[test]
    fn purchase_and_cart_use_numbers_and_the_command_id() {
        let line = CommerceItem {
            id: "v1".into(),
            sku: Some("S".into()),
            name: "Mug".into(),
            price: Decimal::new(1250, 2),
            quantity: 2,
            categories: vec!["Kitchen".into()],
            url: None,
            image_url: Some("http://i".into()),
            data_fields: None,
        };
        let p = map(
            &cmd(Action::TrackPurchase {
                created_at_s: 5,
                total: Decimal::new(2500, 2),
                items: vec![line.clone()],
                data_fields: Map::new(),
            }),
            ProjectType::UserId,
        )
        .unwrap();
        assert_eq!(p.request.endpoint, Endpoint::CommerceTrackPurchase);
        let body = p.request.body.unwrap();
        assert_eq!(body["id"], "cmd-1");
        assert_eq!(body["total"], json!(25.0));
        assert_eq!(body["user"], json!({"userId": "1"}));
        assert_eq!(
            body["items"][0],
            json!({"id": "v1", "sku": "S", "name": "Mug", "price": 12.5, "quantity": 2, "categories": ["Kitchen"], "imageUrl": "http://i"})
        );
        let c = map(
            &cmd(Action::UpdateCart { items: vec![] }),
            ProjectType::Hybrid,
        )
        .unwrap();
        assert_eq!(
            c.request.body,
            Some(json!({"user": {"userId": "1"}, "items": []}))
        );
        assert_eq!(c.family, None);
    }

    #[test]
    fn subscriptions_lists_email_changes_and_deletes() {
        let s = map(
            &cmd(Action::UpdateSubscriptions(SubscriptionUpdate {
                email_list_ids: Some(vec![3]),
                ..Default::default()
            })),
            ProjectType::Hybrid,
        )
        .unwrap();
        assert_eq!(
            s.request.body,
            Some(json!({"userId": "1", "emailListIds": [3]}))
        );
        let l = map(
            &cmd(Action::ListMembership {
                list_id: 7,
                subscribe: false,
            }),
            ProjectType::Hybrid,
        )
        .unwrap();
        assert_eq!(l.request.endpoint, Endpoint::ListsUnsubscribe);
        assert_eq!(
            l.request.body,
            Some(json!({"listId": 7, "subscribers": [{"userId": "1"}]}))
        );

        let change = Action::ChangeEmail {
            current_email: Some("a@example.com".into()),
            current_user_id: None,
            new_email: "b@example.com".into(),
        };
        let h = map(&cmd(change.clone()), ProjectType::Hybrid).unwrap();
        assert_eq!(h.request.endpoint, Endpoint::UsersUpdate);
        assert_eq!(
            h.request.body,
            Some(json!({"userId": "1", "dataFields": {"email": "b@example.com"}}))
        );
        let e = map(&cmd(change), ProjectType::Email).unwrap();
        assert_eq!(e.request.endpoint, Endpoint::UsersUpdateEmail);
        assert_eq!(
            e.request.body,
            Some(json!({"currentEmail": "a@example.com", "newEmail": "b@example.com"}))
        );

        let f = map(
            &cmd(Action::DeleteUser {
                mode: DeleteMode::Forget,
            }),
            ProjectType::Email,
        )
        .unwrap();
        assert_eq!(f.request.body, Some(json!({"email": "a@example.com"})));
        let d = map(
            &cmd(Action::DeleteUser {
                mode: DeleteMode::Delete,
            }),
            ProjectType::Hybrid,
        )
        .unwrap();
        assert_eq!(
            (d.request.method, d.request.path.clone()),
            (
                Method::Delete,
                vec!["users".into(), "byUserId".into(), "1".into()]
            )
        );
        let d = map(
            &cmd(Action::DeleteUser {
                mode: DeleteMode::Delete,
            }),
            ProjectType::Email,
        )
        .unwrap();
        assert_eq!(d.request.endpoint, Endpoint::UsersDeleteByEmail);
    }

    #[test]
    fn missing_identifiers_are_mapping_errors_not_panics() {
        let mut c = cmd(Action::UpdateCart { items: vec![] });
        c.user = UserRef {
            user_id: None,
            email: Some("a@example.com".into()),
        };
        assert!(map(&c, ProjectType::UserId).is_err());
        let p = map(&c, ProjectType::Email).unwrap();
        assert_eq!(p.identity, Identity::Email("a@example.com".into()));
        c.user = UserRef::default();
        assert!(matches!(
            map(&c, ProjectType::Hybrid),
            Err(MappingError::NoIdentifier(_))
        ));
        let mut u = cmd(Action::UpsertUser {
            data_fields: Map::new(),
            merge_nested_objects: false,
        });
        u.user.email = None;
        let m = map(&u, ProjectType::Email).unwrap();
        assert_eq!(m.request.body.unwrap()["preferUserId"], true);
    }
}
