//! `lists/subscribe` and `lists/unsubscribe` (static lists; unknown list → 400 with code
//! `Success`, reference §3.10).

use std::sync::MutexGuard;

use axum::response::Response;
use serde::Deserialize;

use crate::config::ProjectType;
use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::handlers::common::{
    FailedUpdates, check_batch, check_record_cap, finish_bulk, invalid_list, lock, parse, required,
};
use crate::handlers::users::{UserUpdate, bulk_user_response, check_user, write_user};
use crate::state::SimState;
use crate::store::profiles::{Create, Ident};
use crate::store::{ProjectStore, now_secs};
use crate::webhooks::SystemEvent;

/// The checks both list endpoints make, in order: required fields, the record cap, then the
/// list's existence under the project's lock (which the caller keeps).
fn open_list<T>(
    state: &SimState,
    project: usize,
    list_id: Option<u64>,
    subscribers: Option<Vec<T>>,
) -> Result<(u64, Vec<T>, MutexGuard<'_, ProjectStore>), ApiError> {
    let list_id = required(list_id, "listId")?;
    let subscribers = required(subscribers, "subscribers")?;
    check_record_cap(state, subscribers.len())?;
    let ps = lock(state, project)?;
    if !ps.list_exists(list_id) {
        return Err(invalid_list(&ps, list_id));
    }
    Ok((list_id, subscribers, ps))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscribe {
    list_id: Option<u64>,
    subscribers: Option<Vec<UserUpdate>>,
    update_existing_users_only: Option<bool>,
}

/// `POST /api/lists/subscribe`
pub(crate) fn subscribe(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: Subscribe = parse(body)?;
    let (list_id, subscribers, mut ps) = open_list(state, project, req.list_id, req.subscribers)?;
    let batch = check_batch(&ps, &subscribers, |tc, u| {
        check_user(tc, u, u.create_new_fields.unwrap_or(ps.create_new_fields))
    })?;
    // updateExistingUsersOnly is honoured in userID-based and hybrid projects only.
    let create =
        if req.update_existing_users_only.unwrap_or(false) && ps.ptype != ProjectType::Email {
            Create::No
        } else {
            Create::Yes
        };
    let now = now_secs();
    let mut failed = FailedUpdates::default();
    let mut ok = 0u64;
    let mut events = Vec::new();
    for (u, drop) in subscribers.into_iter().zip(batch.drops) {
        let key = u.ident().key();
        let result = if u.data_fields.is_some() {
            write_user(&mut ps, u, &drop, create, now)
        } else {
            let ptype = ps.ptype;
            ps.profiles.resolve(ptype, &u.ident(), create, now)
        };
        match result {
            Ok(id) => {
                if let Some(p) = ps.profiles.get_mut(id)
                    && p.lists.insert(list_id)
                {
                    events.push(SystemEvent::subscription(p, true, &[], &[list_id], "API"));
                }
                ok += 1;
            }
            Err(f) => failed.record(f, key),
        }
    }
    state.inner.webhooks.emit(events);
    finish_bulk(
        state,
        ps,
        batch.pending,
        Endpoint::ListsSubscribe,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscriber {
    email: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Unsubscribe {
    list_id: Option<u64>,
    subscribers: Option<Vec<Subscriber>>,
    campaign_id: Option<i64>,
    channel_unsubscribe: Option<bool>,
}

/// `POST /api/lists/unsubscribe`
pub(crate) fn unsubscribe(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: Unsubscribe = parse(body)?;
    let (list_id, subscribers, mut ps) = open_list(state, project, req.list_id, req.subscribers)?;
    let now = now_secs();
    let mut failed = FailedUpdates::default();
    let mut ok = 0u64;
    let mut events = Vec::new();
    // `channelUnsubscribe: true` is a global unsubscribe from the list's channel [I: the
    // simulator's lists all belong to the project's email channel].
    let channel = req
        .channel_unsubscribe
        .unwrap_or(false)
        .then_some(ps.email_channel_id);
    for s in &subscribers {
        let ident = Ident {
            email: s.email.as_deref(),
            user_id: s.user_id.as_deref(),
            prefer_user_id: false,
        };
        let ptype = ps.ptype;
        match ps.profiles.resolve(ptype, &ident, Create::No, now) {
            Ok(id) => {
                if let Some(p) = ps.profiles.get_mut(id) {
                    let left_list = p.lists.remove(&list_id);
                    let left_channel = channel
                        .filter(|c| !p.unsubscribed_channel_ids.contains(c))
                        .inspect(|c| p.unsubscribed_channel_ids.push(*c));
                    if left_list || left_channel.is_some() {
                        let lists = if left_list { vec![list_id] } else { Vec::new() };
                        let mut e = SystemEvent::subscription(
                            p,
                            false,
                            left_channel.as_slice(),
                            &lists,
                            "API",
                        );
                        if let Some(c) = req.campaign_id {
                            e.data_fields.insert("campaignId".into(), c.into());
                        }
                        events.push(e);
                    }
                }
                ok += 1;
            }
            Err(f) => failed.record(f, ident.key()),
        }
    }
    drop(ps);
    state.inner.webhooks.emit(events);
    state
        .inner
        .stats
        .records(Endpoint::ListsUnsubscribe, ok, failed.count);
    Ok(bulk_user_response(ok, &failed, Vec::new(), Vec::new()))
}
