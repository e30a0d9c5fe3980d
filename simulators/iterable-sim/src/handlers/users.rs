//! `users/*` endpoints: update, bulkUpdate, updateEmail, (bulk)updateSubscriptions, forget,
//! unforget, delete and lookups.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::ProjectType;
use crate::endpoint::Endpoint;
use crate::error::{ApiError, json_response, success};
use crate::handlers::common::{
    FailedUpdates, check_batch, check_record_cap, failure_error, finish_bulk, lock, parse,
    required, type_mismatch,
};
use crate::state::SimState;
use crate::store::profiles::{Create, Failure, Ident, Key, ProfileId, merge_data, valid_email};
use crate::store::types::{TypeCheck, commit};
use crate::store::{ProjectStore, format_ts, now_secs};
use crate::webhooks::SystemEvent;

/// Identifier keys inside `dataFields` that are not data (reference §3.1).
pub(crate) const ID_FIELDS: &[&str] = &["email", "userId"];

/// A `users/update` body; also the `user` of commerce calls and a list subscriber.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserUpdate {
    pub(crate) email: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) data_fields: Option<Map<String, Value>>,
    pub(crate) merge_nested_objects: Option<bool>,
    pub(crate) prefer_user_id: Option<bool>,
    pub(crate) create_new_fields: Option<bool>,
}

impl UserUpdate {
    pub(crate) fn ident(&self) -> Ident<'_> {
        Ident {
            email: self.email.as_deref(),
            user_id: self.user_id.as_deref(),
            prefer_user_id: self.prefer_user_id.unwrap_or(false),
        }
    }
}

/// Type-checks a user's `dataFields`; returns the top-level keys to drop (`createNewFields`).
pub(crate) fn check_user(tc: &mut TypeCheck<'_>, u: &UserUpdate, create_new: bool) -> Vec<String> {
    match &u.data_fields {
        Some(d) => tc.check("user", "user", d, ID_FIELDS, create_new),
        None => Vec::new(),
    }
}

/// Resolves (creating if `create`) and merges `u.dataFields` minus `drop`.
pub(crate) fn write_user(
    ps: &mut ProjectStore,
    u: UserUpdate,
    drop: &[String],
    create: Create,
    now: u64,
) -> Result<ProfileId, Failure> {
    let mut u = u;
    let mut data = u.data_fields.take().unwrap_or_default();
    let ident = u.ident();
    let ptype = ps.ptype;
    for k in drop {
        data.remove(k);
    }
    // Rejected before the profile is created or its identifiers filled in.
    let existing = ps.profiles.lookup(&ident);
    ps.profiles
        .check_identifier_fields(ptype, existing, &data)?;
    let id = ps.profiles.resolve(ptype, &ident, create, now)?;
    ps.profiles.apply_identifier_fields(ptype, id, &data)?;
    if let Some(p) = ps.profiles.get_mut(id) {
        merge_data(&mut p.data, data, u.merge_nested_objects.unwrap_or(false));
        p.updated_at = now;
        p.update_count += 1;
    }
    Ok(id)
}

/// `POST /api/users/update`
pub(crate) fn update(state: &SimState, project: usize, body: &[u8]) -> Result<Response, ApiError> {
    let u: UserUpdate = parse(body)?;
    let mut ps = lock(state, project)?;
    let create_new = u.create_new_fields.unwrap_or(ps.create_new_fields);
    ps.profiles.precheck(&u.ident()).map_err(failure_error)?;
    let mut tc = TypeCheck::new(&ps.types, ps.id);
    let drop = check_user(&mut tc, &u, create_new);
    tc.result().map_err(type_mismatch)?;
    let pending = tc.into_pending();
    write_user(&mut ps, u, &drop, Create::Yes, now_secs()).map_err(failure_error)?;
    commit(&mut ps.types, pending);
    Ok(success("", Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkUpdate {
    users: Vec<UserUpdate>,
    create_new_fields: Option<bool>,
    update_only: Option<bool>,
}

/// `POST /api/users/bulkUpdate`
pub(crate) fn bulk_update(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: BulkUpdate = parse(body)?;
    check_record_cap(state, req.users.len())?;
    let mut ps = lock(state, project)?;
    let batch = check_batch(&ps, &req.users, |tc, u| {
        let create_new = u
            .create_new_fields
            .or(req.create_new_fields)
            .unwrap_or(ps.create_new_fields);
        check_user(tc, u, create_new)
    })?;
    let create = if req.update_only.unwrap_or(false) {
        Create::No
    } else {
        Create::Yes
    };
    let now = now_secs();
    let mut failed = FailedUpdates::default();
    let mut ok = 0u64;
    for (u, drop) in req.users.into_iter().zip(batch.drops) {
        let key = u.ident().key();
        match write_user(&mut ps, u, &drop, create, now) {
            Ok(_) => ok += 1,
            Err(f) => failed.record(f, key),
        }
    }
    finish_bulk(
        state,
        ps,
        batch.pending,
        Endpoint::UsersBulkUpdate,
        ok,
        &failed,
    );
    Ok(bulk_user_response(
        ok,
        &failed,
        batch.created,
        batch.filtered,
    ))
}

/// `UserBulkUpdateListResponse` (bulkUpdate, lists/subscribe, lists/unsubscribe).
pub(crate) fn bulk_user_response(
    ok: u64,
    failed: &FailedUpdates,
    created: Vec<String>,
    filtered: Vec<String>,
) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "successCount": ok,
            "failCount": failed.count,
            "createdFields": created,
            "filteredOutFields": filtered,
            "invalidEmails": failed.invalid_emails(),
            "invalidUserIds": failed.invalid_user_ids(),
            "failedUpdates": failed.users_json(),
        }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateEmail {
    current_email: Option<String>,
    current_user_id: Option<String>,
    new_email: Option<String>,
}

/// `POST /api/users/updateEmail`: moves the profile (and so its events) to `newEmail`.
pub(crate) fn update_email(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: UpdateEmail = parse(body)?;
    let new_email = required(req.new_email, "newEmail")?;
    // currentEmail wins when both are given (reference §3.3).
    let ident = match (&req.current_email, &req.current_user_id) {
        (Some(e), _) => Ident {
            email: Some(e),
            ..Ident::default()
        },
        (None, Some(u)) => Ident {
            user_id: Some(u),
            ..Ident::default()
        },
        (None, None) => {
            return Err(ApiError::bad_params(
                "currentEmail or currentUserId is required",
            ));
        }
    };
    if !valid_email(&new_email) {
        return Err(failure_error(Failure::InvalidEmail(new_email)));
    }
    let mut ps = lock(state, project)?;
    ps.profiles.precheck(&ident).map_err(failure_error)?;
    if ps.profiles.forgotten_emails.contains(&new_email) {
        return Err(ApiError::forgotten());
    }
    let found = match (ident.email, ident.user_id) {
        (Some(e), _) => ps.profiles.find_email(e),
        (None, Some(u)) => ps.profiles.find_user_id(u),
        (None, None) => None,
    };
    let id = found.ok_or_else(|| failure_error(Failure::NotFound(ident.key())))?;
    if ps.ptype != ProjectType::UserId
        && let Some(other) = ps.profiles.find_email(&new_email)
        && other != id
    {
        return Err(failure_error(Failure::EmailExists(new_email)));
    }
    ps.profiles.set_email(id, &new_email);
    if let Some(p) = ps.profiles.get_mut(id) {
        p.updated_at = now_secs();
    }
    Ok(success("", Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateSubscriptions {
    email: Option<String>,
    user_id: Option<String>,
    email_list_ids: Option<Vec<u64>>,
    unsubscribed_channel_ids: Option<Vec<i64>>,
    unsubscribed_message_type_ids: Option<Vec<i64>>,
    subscribed_message_type_ids: Option<Vec<i64>>,
    #[allow(dead_code)]
    campaign_id: Option<i64>,
    #[allow(dead_code)]
    template_id: Option<i64>,
    #[allow(dead_code)]
    validate_channel_alignment: Option<bool>,
}

impl UpdateSubscriptions {
    fn ident(&self) -> Ident<'_> {
        Ident {
            email: self.email.as_deref(),
            user_id: self.user_id.as_deref(),
            prefer_user_id: false,
        }
    }
}

/// Request-level validation of a subscription update (list ids, opt-in feature).
fn check_subscriptions(
    state: &SimState,
    ps: &ProjectStore,
    s: &UpdateSubscriptions,
) -> Result<(), ApiError> {
    if s.subscribed_message_type_ids.is_some() && !state.config().behaviour.opt_in_message_types {
        return Err(ApiError::bad_params(
            "subscribedMessageTypeIds requires the opt-in message types feature",
        ));
    }
    if let Some(bad) = s
        .email_list_ids
        .iter()
        .flatten()
        .find(|l| !ps.list_exists(**l))
    {
        return Err(crate::handlers::common::invalid_list(ps, *bad));
    }
    Ok(())
}

/// Overwrites every array that is given (reference §3.4). Upserts the user [I]. Returns the
/// system webhooks the change fires: an `emailUnSubscribe` for channels and lists the user
/// left, an `emailSubscribe` for those they joined (`unsubSource`/`subscribeSource` `API`).
fn apply_subscriptions(
    ps: &mut ProjectStore,
    s: UpdateSubscriptions,
) -> Result<Vec<SystemEvent>, Failure> {
    let ptype = ps.ptype;
    let id = ps
        .profiles
        .resolve(ptype, &s.ident(), Create::Yes, now_secs())?;
    let mut events = Vec::new();
    if let Some(p) = ps.profiles.get_mut(id) {
        let (old_channels, old_lists) = (p.unsubscribed_channel_ids.clone(), p.lists.clone());
        if let Some(l) = s.email_list_ids {
            p.lists = l.into_iter().collect();
        }
        if let Some(v) = s.unsubscribed_channel_ids {
            p.unsubscribed_channel_ids = v;
        }
        if let Some(v) = s.unsubscribed_message_type_ids {
            p.unsubscribed_message_type_ids = v;
        }
        if let Some(v) = s.subscribed_message_type_ids {
            p.subscribed_message_type_ids = v;
        }
        p.updated_at = now_secs();
        let left_channels: Vec<i64> = p
            .unsubscribed_channel_ids
            .iter()
            .filter(|c| !old_channels.contains(c))
            .copied()
            .collect();
        let joined_channels: Vec<i64> = old_channels
            .iter()
            .filter(|c| !p.unsubscribed_channel_ids.contains(c))
            .copied()
            .collect();
        let left_lists: Vec<u64> = old_lists.difference(&p.lists).copied().collect();
        let joined_lists: Vec<u64> = p.lists.difference(&old_lists).copied().collect();
        if !left_channels.is_empty() || !left_lists.is_empty() {
            events.push(SystemEvent::subscription(
                p,
                false,
                &left_channels,
                &left_lists,
                "API",
            ));
        }
        if !joined_channels.is_empty() || !joined_lists.is_empty() {
            events.push(SystemEvent::subscription(
                p,
                true,
                &joined_channels,
                &joined_lists,
                "API",
            ));
        }
    }
    Ok(events)
}

/// `POST /api/users/updateSubscriptions`
pub(crate) fn update_subscriptions(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let s: UpdateSubscriptions = parse(body)?;
    let mut ps = lock(state, project)?;
    check_subscriptions(state, &ps, &s)?;
    let events = apply_subscriptions(&mut ps, s).map_err(failure_error)?;
    drop(ps);
    state.inner.webhooks.emit(events);
    Ok(success("", Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkUpdateSubscriptions {
    update_subscriptions_requests: Vec<UpdateSubscriptions>,
}

/// `POST /api/users/bulkUpdateSubscriptions`
pub(crate) fn bulk_update_subscriptions(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: BulkUpdateSubscriptions = parse(body)?;
    check_record_cap(state, req.update_subscriptions_requests.len())?;
    let mut ps = lock(state, project)?;
    for s in &req.update_subscriptions_requests {
        check_subscriptions(state, &ps, s)?;
    }
    let (mut ok, mut fail) = (0u64, 0u64);
    let (mut invalid_emails, mut invalid_user_ids) = (Vec::new(), Vec::new());
    let mut events = Vec::new();
    for s in req.update_subscriptions_requests {
        let key = s.ident().key();
        match apply_subscriptions(&mut ps, s) {
            Ok(e) => {
                ok += 1;
                events.extend(e);
            }
            Err(_) => {
                // Every failure here is about the identifier (malformed, forgotten, conflict):
                // not retryable, so it goes to invalid*, never to the retryable valid*Failures.
                fail += 1;
                match key {
                    Key::Email(e) => invalid_emails.push(e),
                    Key::UserId(u) => invalid_user_ids.push(u),
                }
            }
        }
    }
    drop(ps);
    state.inner.webhooks.emit(events);
    state
        .inner
        .stats
        .records(Endpoint::UsersBulkUpdateSubscriptions, ok, fail);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "successCount": ok,
            "failCount": fail,
            "invalidEmails": invalid_emails,
            "invalidUserIds": invalid_user_ids,
            "validEmailFailures": [],
            "validUserIdFailures": [],
        }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForgetRequest {
    email: Option<String>,
    user_id: Option<String>,
}

/// The identifier GDPR requests use per project type (reference §6.4).
fn forget_ident(ptype: ProjectType, req: &ForgetRequest) -> Result<Ident<'_>, ApiError> {
    let email = req.email.as_deref();
    let user_id = req.user_id.as_deref();
    let ident = match ptype {
        ProjectType::Hybrid if email.is_some() || user_id.is_some() => Ident {
            email,
            user_id,
            prefer_user_id: false,
        },
        ProjectType::UserId if user_id.is_some() => Ident {
            user_id,
            ..Ident::default()
        },
        ProjectType::Email if email.is_some() => Ident {
            email,
            ..Ident::default()
        },
        ProjectType::Hybrid => return Err(ApiError::bad_params("email or userId is required")),
        ProjectType::UserId => {
            return Err(ApiError::bad_params(
                "userId is required in a userID-based project",
            ));
        }
        ProjectType::Email => {
            return Err(ApiError::bad_params(
                "email is required in an email-based project",
            ));
        }
    };
    if let Some(e) = ident.email
        && !valid_email(e)
    {
        return Err(failure_error(Failure::InvalidEmail(e.to_string())));
    }
    Ok(ident)
}

/// `POST /api/users/forget`: deletes the user's data and blocks future writes (409).
pub(crate) fn forget(state: &SimState, project: usize, body: &[u8]) -> Result<Response, ApiError> {
    let req: ForgetRequest = parse(body)?;
    let mut ps = lock(state, project)?;
    let ptype = ps.ptype;
    let ident = forget_ident(ptype, &req)?;
    let mut victims: Vec<ProfileId> = Vec::new();
    if let Some(e) = ident.email {
        victims.extend(ps.profiles.find_email(e));
    }
    if let Some(u) = ident.user_id {
        victims.extend(ps.profiles.all_with_user_id(u));
    }
    victims.sort_unstable();
    victims.dedup();
    let profiles = &mut ps.profiles;
    if let Some(e) = ident.email {
        profiles.forgotten_emails.insert(e.to_string());
    }
    if let Some(u) = ident.user_id {
        profiles.forgotten_user_ids.insert(u.to_string());
    }
    for id in victims {
        if let Some(p) = profiles.remove(id) {
            // Block every identifier the deleted profile had where it identifies users.
            if ptype != ProjectType::UserId
                && let Some(e) = p.email
            {
                profiles.forgotten_emails.insert(e);
            }
            if ptype != ProjectType::Email
                && let Some(u) = p.user_id
            {
                profiles.forgotten_user_ids.insert(u);
            }
        }
    }
    Ok(success("", Value::Null))
}

/// `POST /api/users/unforget`: allows future writes again (data stays deleted).
pub(crate) fn unforget(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: ForgetRequest = parse(body)?;
    let mut ps = lock(state, project)?;
    let ident = forget_ident(ps.ptype, &req)?;
    if let Some(e) = ident.email {
        ps.profiles.forgotten_emails.remove(e);
    }
    if let Some(u) = ident.user_id {
        ps.profiles.forgotten_user_ids.remove(u);
    }
    Ok(success("", Value::Null))
}

/// `DELETE /api/users/{email}` (email-based and hybrid projects).
pub(crate) fn delete_by_email(
    state: &SimState,
    project: usize,
    email: &str,
) -> Result<Response, ApiError> {
    let mut ps = lock(state, project)?;
    if ps.ptype == ProjectType::UserId {
        return Err(ApiError::bad_params(
            "DELETE users/{email} is not available in userID-based projects",
        ));
    }
    let id = ps
        .profiles
        .find_email(email)
        .ok_or_else(ApiError::user_not_found)?;
    ps.profiles.remove(id);
    Ok(success("User deleted", Value::Null))
}

/// `DELETE /api/users/byUserId/{userId}`: deletes every user with that userId.
pub(crate) fn delete_by_user_id(
    state: &SimState,
    project: usize,
    user_id: &str,
) -> Result<Response, ApiError> {
    let mut ps = lock(state, project)?;
    let ids = ps.profiles.all_with_user_id(user_id);
    if ids.is_empty() {
        return Err(ApiError::user_not_found());
    }
    for id in ids {
        ps.profiles.remove(id);
    }
    Ok(success("User deleted", Value::Null))
}

/// Iterable's `{"user": {...}}` lookup answer; `{}` when there is no such user.
fn user_json(ps: &ProjectStore, id: Option<ProfileId>) -> Response {
    let Some(p) = id.and_then(|id| ps.profiles.get(id)) else {
        return json_response(StatusCode::OK, &json!({}));
    };
    let mut data = p.data.clone();
    if let Some(e) = &p.email {
        data.insert("email".into(), json!(e));
    }
    if let Some(u) = &p.user_id {
        data.insert("userId".into(), json!(u));
    }
    data.insert("signupDate".into(), json!(format_ts(p.signup_at)));
    data.insert("profileUpdatedAt".into(), json!(format_ts(p.updated_at)));
    if let Some(cart) = &p.cart {
        data.insert("shoppingCartItems".into(), json!(cart));
    }
    let list_field = if ps.ptype == ProjectType::Email {
        "emailListIds"
    } else {
        "userListIds"
    };
    data.insert(list_field.into(), json!(p.lists));
    if !p.unsubscribed_channel_ids.is_empty() {
        data.insert(
            "unsubscribedChannelIds".into(),
            json!(p.unsubscribed_channel_ids),
        );
    }
    if !p.unsubscribed_message_type_ids.is_empty() {
        data.insert(
            "unsubscribedMessageTypeIds".into(),
            json!(p.unsubscribed_message_type_ids),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"user": {"email": p.email, "userId": p.user_id, "dataFields": data}}),
    )
}

/// `GET /api/users/getByEmail?email=` and `GET /api/users/{email}`.
pub(crate) fn get_by_email(
    state: &SimState,
    project: usize,
    email: &str,
) -> Result<Response, ApiError> {
    let ps = lock(state, project)?;
    Ok(user_json(&ps, ps.profiles.find_email(email)))
}

/// `GET /api/users/byUserId/{userId}`.
pub(crate) fn get_by_user_id(
    state: &SimState,
    project: usize,
    user_id: &str,
) -> Result<Response, ApiError> {
    let ps = lock(state, project)?;
    Ok(user_json(&ps, ps.profiles.find_user_id(user_id)))
}
