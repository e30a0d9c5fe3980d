//! Command → Iterable request: endpoint, path and JSON body. Pure, no I/O.

use schemas::command::{Action, CommerceItem, DeleteMode, IterableCommand, UserRef};
use serde_json::{Map, Value, json};

pub use crate::request::{
    Endpoint, Family, Identity, Mapped, MappingError, Method, ProjectType, Request,
};

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
