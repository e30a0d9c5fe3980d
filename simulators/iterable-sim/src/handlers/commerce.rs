//! `commerce/trackPurchase` (upsert by id, clears the cart) and `commerce/updateCart`
//! (replaces the cart, records an `updateCart` event).

use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, success};
use crate::handlers::common::{failure_error, lock, parse, required, type_mismatch};
use crate::handlers::events::store_event;
use crate::handlers::users::{UserUpdate, check_user, write_user};
use crate::state::SimState;
use crate::store::profiles::Create;
use crate::store::records::{EventRecord, PurchaseRecord, normalize_created_at, valid_event_id};
use crate::store::types::{TypeCheck, commit};
use crate::store::{generate_id, now_secs};

/// `CommerceItem` (reference §3.8); used only to validate, items are stored as sent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct CommerceItem {
    id: String,
    name: String,
    price: f64,
    quantity: i64,
    sku: Option<String>,
    description: Option<String>,
    categories: Option<Vec<String>>,
    url: Option<String>,
    image_url: Option<String>,
    data_fields: Option<Map<String, Value>>,
}

fn validate_items(items: &[Value]) -> Result<(), ApiError> {
    for (i, item) in items.iter().enumerate() {
        CommerceItem::deserialize(item)
            .map_err(|e| ApiError::bad_params(format!("items[{i}]: {e}")))?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrackPurchase {
    id: Option<String>,
    user: Option<UserUpdate>,
    items: Option<Vec<Value>>,
    total: Option<f64>,
    created_at: Option<i64>,
    data_fields: Option<Map<String, Value>>,
    campaign_id: Option<i64>,
    template_id: Option<i64>,
}

/// `POST /api/commerce/trackPurchase`
pub(crate) fn track_purchase(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: TrackPurchase = parse(body)?;
    let user = required(req.user, "user")?;
    let items = required(req.items, "items")?;
    let total = required(req.total, "total")?;
    validate_items(&items)?;
    if let Some(id) = &req.id
        && !valid_event_id(id)
    {
        return Err(ApiError::bad_params(format!(
            "Invalid purchase id {id:?}: only alphanumeric characters and hyphens, at most 512 bytes"
        )));
    }
    let now = now_secs();
    let (created_at, was_millis) =
        normalize_created_at(req.created_at, now).map_err(ApiError::bad_params)?;

    let mut ps = lock(state, project)?;
    ps.profiles.precheck(&user.ident()).map_err(failure_error)?;
    let create_new = user.create_new_fields.unwrap_or(ps.create_new_fields);
    let mut tc = TypeCheck::new(&ps.types, ps.id);
    let drop_user = check_user(&mut tc, &user, create_new);
    let drop_purchase = match &req.data_fields {
        Some(d) => tc.check("purchase", "purchase", d, &[], create_new),
        None => Vec::new(),
    };
    tc.result().map_err(type_mismatch)?;
    let pending = tc.into_pending();

    let profile = write_user(&mut ps, user, &drop_user, Create::Yes, now).map_err(failure_error)?;
    if let Some(p) = ps.profiles.get_mut(profile)
        && p.cart.is_some()
    {
        p.cart = Some(Vec::new());
    }
    let id = req.id.unwrap_or_else(generate_id);
    let previous = ps
        .purchases
        .position(&id)
        .and_then(|i| ps.purchases.items.get(i))
        .filter(|r| ps.profiles.get(r.profile).is_some())
        .map(|r| r.update_count)
        .unwrap_or(0);
    let mut data = req.data_fields.unwrap_or_default();
    for k in &drop_purchase {
        data.remove(k);
    }
    ps.purchases.put(
        &id,
        PurchaseRecord {
            id: id.clone(),
            profile,
            items,
            total,
            created_at,
            created_at_was_millis: was_millis,
            data,
            campaign_id: req.campaign_id,
            template_id: req.template_id,
            update_count: previous + 1,
        },
    );
    commit(&mut ps.types, pending);
    drop(ps);
    if was_millis {
        state.inner.stats.created_at_millis();
    }
    Ok(success(
        format!("Purchase with id: {id} tracked."),
        json!({"id": id}),
    ))
}

#[derive(Deserialize)]
struct UpdateCart {
    user: Option<UserUpdate>,
    items: Option<Vec<Value>>,
}

/// `POST /api/commerce/updateCart`
pub(crate) fn update_cart(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: UpdateCart = parse(body)?;
    let user = required(req.user, "user")?;
    let items = required(req.items, "items")?;
    validate_items(&items)?;
    let now = now_secs();
    let mut ps = lock(state, project)?;
    ps.profiles.precheck(&user.ident()).map_err(failure_error)?;
    let create_new = user.create_new_fields.unwrap_or(ps.create_new_fields);
    let mut tc = TypeCheck::new(&ps.types, ps.id);
    let drop_user = check_user(&mut tc, &user, create_new);
    tc.result().map_err(type_mismatch)?;
    let pending = tc.into_pending();
    let profile = write_user(&mut ps, user, &drop_user, Create::Yes, now).map_err(failure_error)?;
    if let Some(p) = ps.profiles.get_mut(profile) {
        p.cart = Some(items.clone());
        p.cart_updates += 1;
    }
    commit(&mut ps.types, pending);
    let mut data = Map::new();
    data.insert("updatedShoppingCartItems".into(), Value::Array(items));
    let record = EventRecord {
        id: generate_id(),
        name: "updateCart".into(),
        profile,
        created_at: now as i64,
        created_at_was_millis: false,
        data,
        campaign_id: None,
        template_id: None,
        update_count: 0,
        endpoint: Endpoint::CommerceUpdateCart,
    };
    store_event(state, &mut ps, profile, record);
    Ok(success("", Value::Null))
}
