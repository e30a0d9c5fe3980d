//! Catalog commands → Iterable catalog requests. Pure, no I/O.
//!
//! An upsert replaces the item (`PUT /api/catalogs/{name}/items/{itemId}` with `value`): the
//! processor always sends the whole item, so replacing drops fields a product no longer has.
//! A delete uses the bulk delete (`DELETE /api/catalogs/{name}/items` with `itemIds`), the
//! documented way to delete items. A missing catalog is created on first use by the deliverer
//! ([`create_catalog`]).

use schemas::command::{Action, IterableCommand};
use serde_json::{Value, json};

use crate::request::{Endpoint, Identity, Mapped, MappingError, Method, Request};

/// Iterable refuses catalog items over 30 KB.
const MAX_ITEM_BYTES: usize = 30 * 1024;

/// Maps a catalog command (the caller matched the action).
pub fn map(cmd: &IterableCommand) -> Result<Mapped, MappingError> {
    let (catalog, item_id, request) = match &cmd.action {
        Action::CatalogUpsert {
            catalog,
            item_id,
            document,
        } => {
            let value = Value::Object(document.clone());
            if value.to_string().len() > MAX_ITEM_BYTES {
                return Err(MappingError::TooLarge("catalog item over 30 KB"));
            }
            let request = Request {
                endpoint: Endpoint::CatalogsReplaceItem,
                method: Method::Put,
                path: item_path(catalog, item_id),
                body: Some(json!({ "value": value })),
            };
            (catalog, item_id, request)
        }
        Action::CatalogDelete { catalog, item_id } => {
            let request = Request {
                endpoint: Endpoint::CatalogsBulkDeleteItems,
                method: Method::Delete,
                path: vec!["catalogs".into(), catalog.clone(), "items".into()],
                body: Some(json!({ "itemIds": [item_id] })),
            };
            (catalog, item_id, request)
        }
        _ => return Err(MappingError::NoIdentifier("not a catalog command")),
    };
    for name in [catalog, item_id] {
        if !valid_name(name) {
            return Err(MappingError::InvalidName(name.clone()));
        }
    }
    Ok(Mapped {
        request,
        family: None,
        identity: Identity::CatalogItem(format!("{catalog}/{item_id}")),
        event_name: None,
    })
}

/// The request that creates catalog `name`.
pub fn create_catalog(name: &str) -> Request {
    Request {
        endpoint: Endpoint::CatalogsCreate,
        method: Method::Post,
        path: vec!["catalogs".into(), name.to_owned()],
        body: None,
    }
}

/// The catalog of a request to a catalog item (its second path segment).
pub fn catalog_of(request: &Request) -> Option<&str> {
    match request.path.as_slice() {
        [c, name, ..] if c == "catalogs" => Some(name),
        _ => None,
    }
}

fn item_path(catalog: &str, item_id: &str) -> Vec<String> {
    vec![
        "catalogs".into(),
        catalog.to_owned(),
        "items".into(),
        item_id.to_owned(),
    ]
}

/// Iterable's rule for catalog names and item ids: letters, digits and dashes, ≤ 255.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::command::UserRef;

    fn cmd(action: Action) -> IterableCommand {
        IterableCommand {
            command_id: "c".into(),
            shop_domain: "s".into(),
            customer_key: "s/p/1".into(),
            user: UserRef::default(),
            event_time_ms: 0,
            source_ids: vec![],
            action,
        }
    }

    #[test]
    fn upserts_replace_one_item_deletes_use_the_bulk_delete() {
        let doc = json!({"name": "Shoe"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let m = map(&cmd(Action::CatalogUpsert {
            catalog: "shopify-products".into(),
            item_id: "42".into(),
            document: doc,
        }))
        .unwrap();
        assert_eq!(m.request.method, Method::Put);
        assert_eq!(
            m.request.path,
            ["catalogs", "shopify-products", "items", "42"]
        );
        assert_eq!(m.request.body, Some(json!({"value": {"name": "Shoe"}})));
        assert_eq!(catalog_of(&m.request), Some("shopify-products"));
        let d = map(&cmd(Action::CatalogDelete {
            catalog: "shopify-products".into(),
            item_id: "42".into(),
        }))
        .unwrap();
        assert_eq!(d.request.endpoint, Endpoint::CatalogsBulkDeleteItems);
        assert_eq!(d.request.body, Some(json!({"itemIds": ["42"]})));
        assert!(
            map(&cmd(Action::CatalogDelete {
                catalog: "bad name".into(),
                item_id: "1".into(),
            }))
            .is_err()
        );
        let big = json!({"name": "x".repeat(31 * 1024)})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(
            map(&cmd(Action::CatalogUpsert {
                catalog: "c".into(),
                item_id: "1".into(),
                document: big,
            }))
            .is_err()
        );
    }
}
