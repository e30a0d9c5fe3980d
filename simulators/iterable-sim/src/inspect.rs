//! Inspection API under `/_sim/` for tests and demos (never rate-limited, never faulted).
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /_sim/profiles[?email=&userId=&project=]` | `[ProfileView]` |
//! | `GET /_sim/events[?email=&userId=&name=&id=&project=]` | `[EventView]` |
//! | `GET /_sim/purchases[?email=&userId=&id=&project=]` | `[PurchaseView]` |
//! | `GET /_sim/carts[?email=&userId=&project=]` | `[CartView]` |
//! | `GET /_sim/lists[?project=]` | `[ListView]` |
//! | `GET /_sim/catalogs[?project=]` | `[CatalogView]` |
//! | `GET /_sim/catalogs/{name}/items[?project=&id=]` | `[CatalogItemView]` (404 if no project has the catalog) |
//! | `GET /_sim/stats` | [`StatsView`] |
//! | `GET /_sim/faults` | [`FaultStatus`] |
//! | `POST /_sim/faults` | body [`FaultSpec`] (replaces the whole spec; `{}` clears) → [`FaultStatus`] |
//! | `POST /_sim/reset` | clears data, stats, rate-limit buckets; restores start-up faults |
//! | `GET /_sim/config` | the effective [`crate::SimConfig`] |
//! | `GET /_sim/health` | `{"ok":true}` |
//!
//! Views list records in first-write order. Records of deleted or forgotten users are not shown.
//! The same types are returned in-process by the `SimState` accessors.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::json_response;
use crate::faults::{FaultSpec, FaultStatus};
use crate::state::SimState;
use crate::stats::StatsView;
use crate::store::profiles::Profile;
use crate::store::{ProjectStore, format_ts};

/// Identifiers of the user a record belongs to (current values: an `updateEmail` shows up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// Email, if the profile has one.
    pub email: Option<String>,
    /// userId, if the profile has one.
    pub user_id: Option<String>,
}

/// A user profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    /// Project id.
    pub project: u64,
    /// Email (placeholder addresses end in `@placeholder.email`).
    pub email: Option<String>,
    /// userId.
    pub user_id: Option<String>,
    /// Custom profile fields as merged so far.
    pub data_fields: Map<String, Value>,
    /// `shoppingCartItems` (`None` if no cart was ever written; `[]` after a purchase).
    pub shopping_cart_items: Option<Vec<Value>>,
    /// Static lists the user is subscribed to (`userListIds`/`emailListIds` in Iterable).
    pub list_ids: Vec<u64>,
    /// From updateSubscriptions.
    pub unsubscribed_channel_ids: Vec<i64>,
    /// From updateSubscriptions.
    pub unsubscribed_message_type_ids: Vec<i64>,
    /// From updateSubscriptions.
    pub subscribed_message_type_ids: Vec<i64>,
    /// `yyyy-MM-dd HH:mm:ss +00:00`.
    pub signup_date: String,
    /// `yyyy-MM-dd HH:mm:ss +00:00`.
    pub profile_updated_at: String,
    /// Writes to this profile's fields (users/update, bulkUpdate, purchase user, subscribe).
    pub update_count: u64,
}

/// A custom event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Project id.
    pub project: u64,
    /// Event id (given or generated).
    pub id: String,
    /// `eventName` (`updateCart` for cart updates).
    pub name: String,
    /// Owner.
    pub user: UserRef,
    /// Unix seconds (converted if sent in ms).
    pub created_at: i64,
    /// Whether `createdAt` arrived in milliseconds.
    pub created_at_was_millis: bool,
    /// Event fields of the last write.
    pub data_fields: Map<String, Value>,
    /// `campaignId` of the last write.
    pub campaign_id: Option<i64>,
    /// `templateId` of the last write.
    pub template_id: Option<i64>,
    /// Times this id was written (1 = never updated).
    pub update_count: u64,
    /// Journey triggers: `updateCount` if updates count as occurrences (default), else 1.
    pub occurrences: u64,
    /// Endpoint of the last write (`events/track`, `events/trackBulk`, `commerce/updateCart`).
    pub endpoint: String,
}

/// A purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseView {
    /// Project id.
    pub project: u64,
    /// Purchase id (given or generated).
    pub id: String,
    /// Buyer.
    pub user: UserRef,
    /// `items` of the last write.
    pub items: Vec<Value>,
    /// `total` of the last write.
    pub total: f64,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether `createdAt` arrived in milliseconds.
    pub created_at_was_millis: bool,
    /// Purchase `dataFields`.
    pub data_fields: Map<String, Value>,
    /// `campaignId`.
    pub campaign_id: Option<i64>,
    /// `templateId`.
    pub template_id: Option<i64>,
    /// Times this id was written.
    pub update_count: u64,
    /// As for events.
    pub occurrences: u64,
}

/// A shopping cart (profiles on which a cart was ever written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartView {
    /// Project id.
    pub project: u64,
    /// Owner.
    pub user: UserRef,
    /// Current `shoppingCartItems` (empty after a purchase).
    pub items: Vec<Value>,
    /// Number of `updateCart` calls for this user.
    pub update_count: u64,
}

/// A static list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListView {
    /// Project id.
    pub project: u64,
    /// List id.
    pub list_id: u64,
    /// Members.
    pub members: Vec<UserRef>,
    /// `members.len()`.
    pub size: usize,
}

/// A catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogView {
    /// Project id.
    pub project: u64,
    /// Name as created.
    pub name: String,
    /// Items it holds.
    pub size: usize,
    /// Items deleted since it was created.
    pub deleted: u64,
}

/// A catalog item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItemView {
    /// Project id.
    pub project: u64,
    /// Catalog name as created.
    pub catalog: String,
    /// Item id.
    pub item_id: String,
    /// Current fields.
    pub value: Map<String, Value>,
    /// `yyyy-MM-dd HH:mm:ss +00:00` of the last write.
    pub last_modified: String,
    /// Writes since the item was (re)created.
    pub update_count: u64,
}

/// Filters accepted by the record views.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Only this user's records.
    pub email: Option<String>,
    /// Only this user's records.
    pub user_id: Option<String>,
    /// Only this project.
    pub project: Option<u64>,
    /// Events: only this `eventName`.
    pub name: Option<String>,
    /// Events/purchases: only this id.
    pub id: Option<String>,
}

impl Filter {
    fn project(&self, p: &ProjectStore) -> bool {
        self.project.is_none_or(|id| id == p.id)
    }

    fn user(&self, p: &Profile) -> bool {
        self.email
            .as_deref()
            .is_none_or(|e| p.email.as_deref() == Some(e))
            && self
                .user_id
                .as_deref()
                .is_none_or(|u| p.user_id.as_deref() == Some(u))
    }
}

fn user_ref(p: &Profile) -> UserRef {
    UserRef {
        email: p.email.clone(),
        user_id: p.user_id.clone(),
    }
}

fn occurrences(state: &SimState, update_count: u64) -> u64 {
    if state.config().behaviour.count_updates_as_occurrences {
        update_count
    } else {
        update_count.min(1)
    }
}

/// The records `view` gathers from every project the filter admits, project by project.
fn collect<T>(
    state: &SimState,
    f: &Filter,
    mut view: impl FnMut(&ProjectStore, &mut Vec<T>),
) -> Vec<T> {
    let mut out = Vec::new();
    state.for_each_project(|ps| {
        if f.project(ps) {
            view(ps, &mut out);
        }
    });
    out
}

pub(crate) fn profiles(state: &SimState, f: &Filter) -> Vec<ProfileView> {
    collect(state, f, |ps, out| {
        for p in ps.profiles.by_id.values().filter(|p| f.user(p)) {
            out.push(ProfileView {
                project: ps.id,
                email: p.email.clone(),
                user_id: p.user_id.clone(),
                data_fields: p.data.clone(),
                shopping_cart_items: p.cart.clone(),
                list_ids: p.lists.iter().copied().collect(),
                unsubscribed_channel_ids: p.unsubscribed_channel_ids.clone(),
                unsubscribed_message_type_ids: p.unsubscribed_message_type_ids.clone(),
                subscribed_message_type_ids: p.subscribed_message_type_ids.clone(),
                signup_date: format_ts(p.signup_at),
                profile_updated_at: format_ts(p.updated_at),
                update_count: p.update_count,
            });
        }
    })
}

pub(crate) fn events(state: &SimState, f: &Filter) -> Vec<EventView> {
    collect(state, f, |ps, out| {
        for e in &ps.events.items {
            let Some(p) = ps.profiles.get(e.profile) else {
                continue;
            };
            if !f.user(p)
                || f.name.as_deref().is_some_and(|n| n != e.name)
                || f.id.as_deref().is_some_and(|i| i != e.id)
            {
                continue;
            }
            out.push(EventView {
                project: ps.id,
                id: e.id.clone(),
                name: e.name.clone(),
                user: user_ref(p),
                created_at: e.created_at,
                created_at_was_millis: e.created_at_was_millis,
                data_fields: e.data.clone(),
                campaign_id: e.campaign_id,
                template_id: e.template_id,
                update_count: e.update_count,
                occurrences: occurrences(state, e.update_count),
                endpoint: e.endpoint.name().to_string(),
            });
        }
    })
}

pub(crate) fn purchases(state: &SimState, f: &Filter) -> Vec<PurchaseView> {
    collect(state, f, |ps, out| {
        for r in &ps.purchases.items {
            let Some(p) = ps.profiles.get(r.profile) else {
                continue;
            };
            if !f.user(p) || f.id.as_deref().is_some_and(|i| i != r.id) {
                continue;
            }
            out.push(PurchaseView {
                project: ps.id,
                id: r.id.clone(),
                user: user_ref(p),
                items: r.items.clone(),
                total: r.total,
                created_at: r.created_at,
                created_at_was_millis: r.created_at_was_millis,
                data_fields: r.data.clone(),
                campaign_id: r.campaign_id,
                template_id: r.template_id,
                update_count: r.update_count,
                occurrences: occurrences(state, r.update_count),
            });
        }
    })
}

pub(crate) fn carts(state: &SimState, f: &Filter) -> Vec<CartView> {
    collect(state, f, |ps, out| {
        for p in ps.profiles.by_id.values().filter(|p| f.user(p)) {
            if let Some(items) = &p.cart {
                out.push(CartView {
                    project: ps.id,
                    user: user_ref(p),
                    items: items.clone(),
                    update_count: p.cart_updates,
                });
            }
        }
    })
}

pub(crate) fn lists(state: &SimState, f: &Filter) -> Vec<ListView> {
    collect(state, f, |ps, out| {
        let mut ids = ps.configured_lists().clone();
        for p in ps.profiles.by_id.values() {
            ids.extend(p.lists.iter().copied());
        }
        for list_id in ids {
            let members: Vec<UserRef> = ps
                .profiles
                .by_id
                .values()
                .filter(|p| p.lists.contains(&list_id))
                .map(user_ref)
                .collect();
            out.push(ListView {
                project: ps.id,
                list_id,
                size: members.len(),
                members,
            });
        }
    })
}

pub(crate) fn catalogs(state: &SimState, f: &Filter) -> Vec<CatalogView> {
    collect(state, f, |ps, out| {
        for c in ps.catalogs.by_name.values() {
            out.push(CatalogView {
                project: ps.id,
                name: c.name.clone(),
                size: c.items.len(),
                deleted: c.deleted,
            });
        }
    })
}

/// Items of catalog `name` (case-insensitive) in every project the filter admits; `None`
/// when no such project has the catalog.
pub(crate) fn catalog_items(
    state: &SimState,
    name: &str,
    f: &Filter,
) -> Option<Vec<CatalogItemView>> {
    let mut found = false;
    let items = collect(state, f, |ps, out| {
        let Some(c) = ps.catalogs.get(name) else {
            return;
        };
        found = true;
        for (id, item) in &c.items {
            if f.id.as_deref().is_some_and(|i| i != id) {
                continue;
            }
            out.push(CatalogItemView {
                project: ps.id,
                catalog: c.name.clone(),
                item_id: id.clone(),
                value: item.value.clone(),
                last_modified: format_ts(item.last_modified),
                update_count: item.update_count,
            });
        }
    });
    found.then_some(items)
}

async fn catalog_items_route(
    State(s): State<SimState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(f): Query<Filter>,
) -> Response {
    match catalog_items(&s, &name, &f) {
        Some(items) => Json(items).into_response(),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no catalog {name:?}")}),
        ),
    }
}

/// The `/_sim` router.
pub(crate) fn router() -> Router<SimState> {
    Router::new()
        .route("/_sim/profiles", filtered(profiles))
        .route("/_sim/events", filtered(events))
        .route("/_sim/purchases", filtered(purchases))
        .route("/_sim/carts", filtered(carts))
        .route("/_sim/lists", filtered(lists))
        .route("/_sim/catalogs", filtered(catalogs))
        .route("/_sim/catalogs/{name}/items", get(catalog_items_route))
        .route(
            "/_sim/stats",
            get(|State(s): State<SimState>| async move { Json::<StatsView>(s.stats()) }),
        )
        .route(
            "/_sim/faults",
            get(|State(s): State<SimState>| async move { Json::<FaultStatus>(s.faults()) })
                .post(set_faults),
        )
        .route(
            "/_sim/reset",
            post(|State(s): State<SimState>| async move {
                s.reset();
                Json(json!({"ok": true}))
            }),
        )
        .route(
            "/_sim/config",
            get(|State(s): State<SimState>| async move { Json(s.config().clone()) }),
        )
        .route("/_sim/health", get(|| async { Json(json!({"ok": true})) }))
}

/// `GET` of a record view under the query's [`Filter`].
fn filtered<T: Serialize + Send + 'static>(
    view: fn(&SimState, &Filter) -> Vec<T>,
) -> MethodRouter<SimState> {
    get(move |State(s): State<SimState>, Query(f): Query<Filter>| async move { Json(view(&s, &f)) })
}

async fn set_faults(State(s): State<SimState>, body: axum::body::Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("invalid fault spec: {e}")}),
            );
        }
    };
    match s.set_faults(spec) {
        Ok(()) => Json(s.faults()).into_response(),
        Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    }
}

/// The views of [`SimState`] for Rust callers, the same as the `/_sim/...` routes.
impl SimState {
    /// Profiles matching `filter` (same as `GET /_sim/profiles`).
    pub fn profiles(&self, filter: &Filter) -> Vec<ProfileView> {
        profiles(self, filter)
    }

    /// Events matching `filter` (same as `GET /_sim/events`).
    pub fn events(&self, filter: &Filter) -> Vec<EventView> {
        events(self, filter)
    }

    /// Purchases matching `filter` (same as `GET /_sim/purchases`).
    pub fn purchases(&self, filter: &Filter) -> Vec<PurchaseView> {
        purchases(self, filter)
    }

    /// Carts matching `filter` (same as `GET /_sim/carts`).
    pub fn carts(&self, filter: &Filter) -> Vec<CartView> {
        carts(self, filter)
    }

    /// Lists (same as `GET /_sim/lists`).
    pub fn lists(&self, filter: &Filter) -> Vec<ListView> {
        lists(self, filter)
    }

    /// Catalogs (same as `GET /_sim/catalogs`).
    pub fn catalogs(&self, filter: &Filter) -> Vec<CatalogView> {
        catalogs(self, filter)
    }

    /// Items of catalog `name` (same as `GET /_sim/catalogs/{name}/items`); `None` when no
    /// project the filter admits has that catalog.
    pub fn catalog_items(&self, name: &str, filter: &Filter) -> Option<Vec<CatalogItemView>> {
        catalog_items(self, name, filter)
    }
}
