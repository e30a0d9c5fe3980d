//! Catalog endpoints (reference §2, §3.11): create/delete a catalog, bulk upsert and bulk
//! delete items, single PUT (replace) / PATCH (merge) / DELETE / GET of an item.
//!
//! Writes are asynchronous in Iterable and answered `202`; the simulator applies them before
//! answering, so an inspection right after the `202` already sees them. Every rule is checked
//! before anything is written: a request with one bad document (id, size, dotted field name)
//! fails as a whole with `400`.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, json_response, success};
use crate::handlers::common::{lock, parse, required};
use crate::state::SimState;
use crate::store::catalogs::{Catalog, MAX_NAME_LEN, WriteMode, dotted_field, valid_name};
use crate::store::{ProjectStore, format_ts, now_secs};

fn check_catalog_name(name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_params(format!(
            "Invalid catalog name {name:?}: only alphanumerics and dashes, at most {MAX_NAME_LEN} characters"
        )))
    }
}

fn check_item_id(id: &str) -> Result<(), ApiError> {
    if valid_name(id) {
        Ok(())
    } else {
        Err(ApiError::bad_params(format!(
            "Invalid item id {id:?}: only alphanumerics and dashes, at most {MAX_NAME_LEN} characters"
        )))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Catalog not found: {name}"),
    )
}

/// The catalog `name` of the project, or `404 NotFound`.
fn catalog<'a>(ps: &'a mut ProjectStore, name: &str) -> Result<&'a mut Catalog, ApiError> {
    check_catalog_name(name)?;
    ps.catalogs.get_mut(name).ok_or_else(|| not_found(name))
}

/// Checks one document: id rules, object shape, size cap, no periods in field names.
fn check_document(state: &SimState, id: &str, value: &Value) -> Result<(), ApiError> {
    check_item_id(id)?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_params(format!(
            "Item {id}: the value must be a JSON object"
        )));
    };
    let cap = state.config().body_limits.catalog_item_max_bytes;
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if size > cap {
        return Err(ApiError::bad_params(format!(
            "Item {id} is {size} bytes; the maximum item size is {cap} bytes"
        )));
    }
    if let Some(field) = dotted_field(map) {
        return Err(ApiError::bad_params(format!(
            "Item {id}: field name {field:?} contains a period, which catalog field names may not"
        )));
    }
    Ok(())
}

fn accepted(msg: String) -> Response {
    json_response(
        StatusCode::ACCEPTED,
        &json!({"msg": msg, "code": "Success", "params": null}),
    )
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `POST /api/catalogs/{catalogName}`: creates the catalog; `409` if it exists [I].
pub(crate) fn create(state: &SimState, project: usize, name: &str) -> Result<Response, ApiError> {
    check_catalog_name(name)?;
    let mut ps = lock(state, project)?;
    if !ps.catalogs.create(name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "BadParams",
            format!("Catalog already exists: {name}"),
        ));
    }
    let id = ps.catalogs.by_name.len();
    Ok(success(
        "",
        json!({"id": id, "name": name, "url": format!("/api/catalogs/{name}")}),
    ))
}

/// `DELETE /api/catalogs/{catalogName}`.
pub(crate) fn delete(state: &SimState, project: usize, name: &str) -> Result<Response, ApiError> {
    check_catalog_name(name)?;
    let mut ps = lock(state, project)?;
    if !ps.catalogs.remove(name) {
        return Err(not_found(name));
    }
    Ok(success(format!("Catalog {name} deleted"), Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkUpsert {
    documents: Option<Map<String, Value>>,
    replace_uploaded_fields_only: Option<bool>,
}

/// `POST /api/catalogs/{catalogName}/items`: up to 1000 documents; `replaceUploadedFieldsOnly`
/// is required (true: merge uploaded fields, false: replace whole items).
pub(crate) fn bulk_update_items(
    state: &SimState,
    project: usize,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: BulkUpsert = parse(body)?;
    let documents = required(req.documents, "documents")?;
    let merge = required(
        req.replace_uploaded_fields_only,
        "replaceUploadedFieldsOnly",
    )?;
    let max = state.config().body_limits.catalog_max_items;
    if documents.len() > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BatchTooLarge",
            format!(
                "{} documents exceed the maximum of {max} per request",
                documents.len()
            ),
        ));
    }
    for (id, value) in &documents {
        check_document(state, id, value)?;
    }
    let mode = if merge {
        WriteMode::Merge
    } else {
        WriteMode::Replace
    };
    let n = documents.len() as u64;
    let mut ps = lock(state, project)?;
    let cat = catalog(&mut ps, name)?;
    let now = now_secs();
    for (id, value) in documents {
        cat.write(&id, into_map(value), mode, now);
    }
    drop(ps);
    state
        .inner
        .stats
        .records(crate::endpoint::Endpoint::CatalogsBulkUpdateItems, n, 0);
    Ok(accepted(format!(
        "Request to bulk-upload documents into {name} processed successfully"
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkDelete {
    item_ids: Option<Vec<String>>,
}

/// `DELETE /api/catalogs/{catalogName}/items` with `{"itemIds": [...]}`; unknown ids are
/// ignored (the delete is asynchronous and reports nothing per item).
pub(crate) fn bulk_delete_items(
    state: &SimState,
    project: usize,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: BulkDelete = parse(body)?;
    let ids = required(req.item_ids, "itemIds")?;
    let max = state.config().body_limits.catalog_max_items;
    if ids.len() > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BatchTooLarge",
            format!(
                "{} item ids exceed the maximum of {max} per request",
                ids.len()
            ),
        ));
    }
    for id in &ids {
        check_item_id(id)?;
    }
    let mut ps = lock(state, project)?;
    let cat = catalog(&mut ps, name)?;
    let n = ids.iter().filter(|id| cat.delete(id)).count() as u64;
    drop(ps);
    state
        .inner
        .stats
        .records(crate::endpoint::Endpoint::CatalogsBulkDeleteItems, n, 0);
    Ok(accepted(format!(
        "Request to bulk-delete documents from {name} processed successfully"
    )))
}

#[derive(Deserialize)]
struct Replace {
    value: Option<Value>,
}

#[derive(Deserialize)]
struct Update {
    update: Option<Value>,
}

/// `PUT` (`{"value": {...}}`, replace) and `PATCH` (`{"update": {...}}`, merge) of one item;
/// both create a missing item.
pub(crate) fn write_item(
    state: &SimState,
    project: usize,
    name: &str,
    id: &str,
    body: &[u8],
    mode: WriteMode,
) -> Result<Response, ApiError> {
    let value = match mode {
        WriteMode::Replace => required(parse::<Replace>(body)?.value, "value")?,
        WriteMode::Merge => required(parse::<Update>(body)?.update, "update")?,
    };
    check_document(state, id, &value)?;
    let mut ps = lock(state, project)?;
    let cat = catalog(&mut ps, name)?;
    cat.write(id, into_map(value), mode, now_secs());
    Ok(accepted(format!(
        "Request to update item {id} in catalog {name} received"
    )))
}

/// `DELETE /api/catalogs/{catalogName}/items/{itemId}`: `404` for an unknown item [I].
pub(crate) fn delete_item(
    state: &SimState,
    project: usize,
    name: &str,
    id: &str,
) -> Result<Response, ApiError> {
    check_item_id(id)?;
    let mut ps = lock(state, project)?;
    let cat = catalog(&mut ps, name)?;
    if !cat.delete(id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Item {id} not found in catalog {name}"),
        ));
    }
    Ok(accepted(format!(
        "Request to delete item {id} from catalog {name} received"
    )))
}

/// `GET /api/catalogs/{catalogName}/items/{itemId}`.
pub(crate) fn get_item(
    state: &SimState,
    project: usize,
    name: &str,
    id: &str,
) -> Result<Response, ApiError> {
    check_item_id(id)?;
    let mut ps = lock(state, project)?;
    let cat = catalog(&mut ps, name)?;
    let Some(item) = cat.items.get(id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Item {id} not found in catalog {name}"),
        ));
    };
    let size = serde_json::to_vec(&item.value).map_or(0, |v| v.len());
    Ok(success(
        "",
        json!({
            "catalogName": cat.name,
            "itemId": id,
            "lastModified": format_ts(item.last_modified),
            "size": size,
            "value": item.value,
        }),
    ))
}
