//! The routes, and the pipeline every request goes through before its handler.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::config::{RateLimitBody, TooLargeResponse};
use crate::endpoint::Endpoint;
use crate::error::{ApiError, json_response};
use crate::faults::Injected;
use crate::ratelimit::Decision;
use crate::state::SimState;
use crate::store::catalogs::WriteMode;

use super::{catalogs, commerce, events, lists, users};

/// The synchronous part of an endpoint: project index and body in, answer out.
type Handler<'a> =
    Box<dyn FnOnce(&SimState, usize, &[u8]) -> Result<Response, ApiError> + Send + 'a>;

macro_rules! post_endpoint {
    ($name:ident, $ep:expr, $f:path) => {
        async fn $name(State(s): State<SimState>, req: Request) -> Response {
            dispatch(s, $ep, req, Box::new($f)).await
        }
    };
}

post_endpoint!(users_update, Endpoint::UsersUpdate, users::update);
post_endpoint!(
    users_bulk_update,
    Endpoint::UsersBulkUpdate,
    users::bulk_update
);
post_endpoint!(
    users_update_email,
    Endpoint::UsersUpdateEmail,
    users::update_email
);
post_endpoint!(
    users_update_subscriptions,
    Endpoint::UsersUpdateSubscriptions,
    users::update_subscriptions
);
post_endpoint!(
    users_bulk_update_subscriptions,
    Endpoint::UsersBulkUpdateSubscriptions,
    users::bulk_update_subscriptions
);
post_endpoint!(users_forget, Endpoint::UsersForget, users::forget);
post_endpoint!(users_unforget, Endpoint::UsersUnforget, users::unforget);
post_endpoint!(events_track, Endpoint::EventsTrack, events::track);
post_endpoint!(
    events_track_bulk,
    Endpoint::EventsTrackBulk,
    events::track_bulk
);
post_endpoint!(
    commerce_track_purchase,
    Endpoint::CommerceTrackPurchase,
    commerce::track_purchase
);
post_endpoint!(
    commerce_update_cart,
    Endpoint::CommerceUpdateCart,
    commerce::update_cart
);
post_endpoint!(lists_subscribe, Endpoint::ListsSubscribe, lists::subscribe);
post_endpoint!(
    lists_unsubscribe,
    Endpoint::ListsUnsubscribe,
    lists::unsubscribe
);

/// Endpoints addressed by one path segment (an email or a userId) instead of a body.
macro_rules! path_endpoint {
    ($name:ident, $ep:expr, $f:path) => {
        async fn $name(
            State(s): State<SimState>,
            Path(id): Path<String>,
            req: Request,
        ) -> Response {
            dispatch(s, $ep, req, Box::new(move |s, p, _| $f(s, p, &id))).await
        }
    };
}

path_endpoint!(
    delete_by_email,
    Endpoint::UsersDeleteByEmail,
    users::delete_by_email
);
path_endpoint!(
    delete_by_user_id,
    Endpoint::UsersDeleteByUserId,
    users::delete_by_user_id
);
path_endpoint!(
    get_by_email_path,
    Endpoint::UsersGetByEmail,
    users::get_by_email
);
path_endpoint!(
    get_by_user_id,
    Endpoint::UsersGetByUserId,
    users::get_by_user_id
);

#[derive(Deserialize)]
struct EmailQuery {
    email: Option<String>,
}

async fn get_by_email_query(
    State(s): State<SimState>,
    Query(q): Query<EmailQuery>,
    req: Request,
) -> Response {
    dispatch(
        s,
        Endpoint::UsersGetByEmail,
        req,
        Box::new(move |s, p, _| match q.email {
            Some(e) => users::get_by_email(s, p, &e),
            None => Err(ApiError::bad_params("email query parameter is required")),
        }),
    )
    .await
}

/// Catalog endpoints addressed by the catalog name only.
macro_rules! catalog_endpoint {
    ($name:ident, $ep:expr, $f:expr) => {
        async fn $name(
            State(s): State<SimState>,
            Path(catalog): Path<String>,
            req: Request,
        ) -> Response {
            dispatch(s, $ep, req, Box::new(move |s, p, b| $f(s, p, &catalog, b))).await
        }
    };
}

/// Catalog endpoints addressed by catalog name and item id.
macro_rules! catalog_item_endpoint {
    ($name:ident, $ep:expr, $f:expr) => {
        async fn $name(
            State(s): State<SimState>,
            Path((catalog, item)): Path<(String, String)>,
            req: Request,
        ) -> Response {
            dispatch(
                s,
                $ep,
                req,
                Box::new(move |s, p, b| $f(s, p, &catalog, &item, b)),
            )
            .await
        }
    };
}

catalog_endpoint!(
    catalogs_create,
    Endpoint::CatalogsCreate,
    |s, p, c: &str, _| catalogs::create(s, p, c)
);
catalog_endpoint!(
    catalogs_delete,
    Endpoint::CatalogsDelete,
    |s, p, c: &str, _| catalogs::delete(s, p, c)
);
catalog_endpoint!(
    catalogs_bulk_update_items,
    Endpoint::CatalogsBulkUpdateItems,
    catalogs::bulk_update_items
);
catalog_endpoint!(
    catalogs_bulk_delete_items,
    Endpoint::CatalogsBulkDeleteItems,
    catalogs::bulk_delete_items
);
catalog_item_endpoint!(
    catalogs_replace_item,
    Endpoint::CatalogsReplaceItem,
    |s, p, c: &str, i: &str, b| catalogs::write_item(s, p, c, i, b, WriteMode::Replace)
);
catalog_item_endpoint!(
    catalogs_update_item,
    Endpoint::CatalogsUpdateItem,
    |s, p, c: &str, i: &str, b| catalogs::write_item(s, p, c, i, b, WriteMode::Merge)
);
catalog_item_endpoint!(
    catalogs_delete_item,
    Endpoint::CatalogsDeleteItem,
    |s, p, c: &str, i: &str, _| catalogs::delete_item(s, p, c, i)
);
catalog_item_endpoint!(
    catalogs_get_item,
    Endpoint::CatalogsGetItem,
    |s, p, c: &str, i: &str, _| catalogs::get_item(s, p, c, i)
);

/// The Iterable API router.
pub(crate) fn router() -> Router<SimState> {
    Router::new()
        .route("/api/users/update", post(users_update))
        .route("/api/users/bulkUpdate", post(users_bulk_update))
        .route("/api/users/updateEmail", post(users_update_email))
        .route(
            "/api/users/updateSubscriptions",
            post(users_update_subscriptions),
        )
        .route(
            "/api/users/bulkUpdateSubscriptions",
            post(users_bulk_update_subscriptions),
        )
        .route("/api/users/forget", post(users_forget))
        .route("/api/users/unforget", post(users_unforget))
        .route("/api/users/getByEmail", get(get_by_email_query))
        .route(
            "/api/users/byUserId/{user_id}",
            get(get_by_user_id).delete(delete_by_user_id),
        )
        .route(
            "/api/users/{email}",
            get(get_by_email_path).delete(delete_by_email),
        )
        .route("/api/events/track", post(events_track))
        .route("/api/events/trackBulk", post(events_track_bulk))
        .route("/api/commerce/trackPurchase", post(commerce_track_purchase))
        .route("/api/commerce/updateCart", post(commerce_update_cart))
        .route("/api/lists/subscribe", post(lists_subscribe))
        .route("/api/lists/unsubscribe", post(lists_unsubscribe))
        .route(
            "/api/catalogs/{catalog}",
            post(catalogs_create).delete(catalogs_delete),
        )
        .route(
            "/api/catalogs/{catalog}/items",
            post(catalogs_bulk_update_items).delete(catalogs_bulk_delete_items),
        )
        .route(
            "/api/catalogs/{catalog}/items/{item}",
            get(catalogs_get_item)
                .put(catalogs_replace_item)
                .patch(catalogs_update_item)
                .merge(delete(catalogs_delete_item)),
        )
}

/// Unknown routes: 404 with an HTML body, as Iterable's edge answers (reference §4.1).
pub(crate) async fn not_found(State(s): State<SimState>) -> Response {
    s.inner.stats.unknown_route();
    (
        StatusCode::NOT_FOUND,
        Html(
            "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>",
        ),
    )
        .into_response()
}

async fn dispatch(state: SimState, ep: Endpoint, req: Request, f: Handler<'_>) -> Response {
    state.inner.stats.received(ep);
    let resp = pipeline(&state, ep, req, f).await;
    let status = resp.status().as_u16();
    state.inner.stats.finished(ep, status);
    if !ep.is_bulk() && (200..300).contains(&status) {
        state.inner.stats.records(ep, 1, 0);
    }
    resp
}

async fn pipeline(state: &SimState, ep: Endpoint, req: Request, f: Handler<'_>) -> Response {
    let inner = &state.inner;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();

    let limits = &inner.config.body_limits;
    let cap = if ep == Endpoint::CatalogsBulkUpdateItems {
        limits.catalog_bulk_max_bytes
    } else if ep.is_bulk() {
        limits.bulk_max_bytes
    } else {
        limits.single_max_bytes
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return too_large(limits.too_large, cap);
    }
    // Reading fails only when the body exceeds the cap (chunked uploads) or the client went
    // away; in the latter case nobody reads the answer, so 413 is right for both.
    let body = match axum::body::to_bytes(body, cap).await {
        Ok(b) => b,
        Err(_) => return too_large(limits.too_large, cap),
    };

    if inner.faults.outage(ep) {
        return plain_text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let caller = match inner.keys.authenticate(&parts.headers, ep, peer) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let project = caller.project;
    if inner.faults.storm(ep) {
        return rate_limited(state, ep, project, None);
    }
    if let Decision::Reject { retry_after } = inner.limiter.check(caller, ep) {
        return rate_limited(state, ep, project, Some(retry_after));
    }
    inner.stats.admitted(ep);

    match inner.faults.inject(ep) {
        Injected::Error(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(
                status,
                &json!({"msg": "Internal error (injected fault)", "code": "GenericError", "params": null}),
            );
        }
        Injected::Hold(hold) => {
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = inner.shutdown.cancelled() => {}
            }
            return json_response(
                StatusCode::GATEWAY_TIMEOUT,
                &json!({"msg": "Gateway timeout (injected fault)", "code": "GenericError", "params": null}),
            );
        }
        Injected::Proceed { delay } => {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = inner.shutdown.cancelled() => {}
                }
            }
        }
    }

    match f(state, project, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A `text/plain` answer, as the edge in front of Iterable sends for outages and some 429s.
fn plain_text(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn too_large(style: TooLargeResponse, cap: usize) -> Response {
    let status = match style {
        TooLargeResponse::Status413 => StatusCode::PAYLOAD_TOO_LARGE,
        TooLargeResponse::BatchTooLarge400 => StatusCode::BAD_REQUEST,
    };
    ApiError::new(
        status,
        "BatchTooLarge",
        format!("Request body exceeds the maximum of {cap} bytes"),
    )
    .into_response()
}

fn rate_limited(
    state: &SimState,
    ep: Endpoint,
    project: usize,
    retry_after: Option<std::time::Duration>,
) -> Response {
    let inner = &state.inner;
    let cfg = &inner.config.rate_limits.response;
    let project_id = inner
        .config
        .projects
        .get(project)
        .map(|p| p.id)
        .unwrap_or_default();
    let n = inner.served_429.fetch_add(1, Ordering::Relaxed);
    let text = match cfg.body {
        RateLimitBody::Json => false,
        RateLimitBody::Text => true,
        RateLimitBody::Alternate => n % 2 == 1,
    };
    let mut resp = if text {
        plain_text(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded. Please try again later.",
        )
    } else {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "msg": format!("Exceeded rate limit for endpoint: {}, project: {} ", ep.path(), project_id),
                "code": "RateLimitExceeded",
                "params": {},
            }),
        )
    };
    let secs = cfg.retry_after_secs.or_else(|| {
        cfg.retry_after_computed
            .then(|| retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64))
            .flatten()
    });
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
