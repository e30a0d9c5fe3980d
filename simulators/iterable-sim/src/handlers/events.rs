//! `events/track` and `events/trackBulk`: custom events upserted by id.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, json_response, raw_json_ok, success};
use crate::handlers::common::{
    FailedUpdates, check_batch, check_record_cap, failure_error, finish_bulk, lock, parse,
    type_mismatch,
};
use crate::state::SimState;
use crate::store::profiles::{Create, Failure, Ident, ProfileId};
use crate::store::records::{EventRecord, normalize_created_at, valid_event_id};
use crate::store::types::{TypeCheck, commit};
use crate::store::{ProjectStore, generate_id, now_secs};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Track {
    email: Option<String>,
    user_id: Option<String>,
    event_name: Option<String>,
    id: Option<String>,
    created_at: Option<i64>,
    data_fields: Option<Map<String, Value>>,
    campaign_id: Option<i64>,
    template_id: Option<i64>,
    create_new_fields: Option<bool>,
}

impl Track {
    fn ident(&self) -> Ident<'_> {
        Ident {
            email: self.email.as_deref(),
            user_id: self.user_id.as_deref(),
            prefer_user_id: false,
        }
    }
}

/// Request-level validation (a bad event fails the whole bulk request, like a bad body).
fn validate(t: &Track) -> Result<(), ApiError> {
    match t.event_name.as_deref() {
        None | Some("") => return Err(ApiError::bad_params("eventName is required")),
        Some(_) => {}
    }
    if let Some(id) = &t.id
        && !valid_event_id(id)
    {
        return Err(ApiError::bad_params(format!(
            "Invalid event id {id:?}: only alphanumeric characters and hyphens, at most 512 bytes"
        )));
    }
    if let Some(c) = t.created_at
        && c < 0
    {
        return Err(ApiError::bad_params(format!(
            "createdAt must be a positive Unix timestamp, got {c}"
        )));
    }
    Ok(())
}

fn check_types(tc: &mut TypeCheck<'_>, t: &Track, create_new: bool) -> Vec<String> {
    match (&t.data_fields, &t.event_name) {
        (Some(d), Some(name)) => tc.check(
            &format!("customEvent:{name}"),
            "customEvent",
            d,
            &[],
            create_new,
        ),
        _ => Vec::new(),
    }
}

/// Writes (creates or overwrites) one event; returns its id.
pub(crate) fn store_event(
    state: &SimState,
    ps: &mut ProjectStore,
    profile: ProfileId,
    record: EventRecord,
) -> String {
    let id = record.id.clone();
    // An id whose previous owner was deleted/forgotten starts over (its old record is hidden).
    let previous = ps
        .events
        .position(&id)
        .and_then(|i| ps.events.items.get(i))
        .filter(|r| ps.profiles.get(r.profile).is_some())
        .map(|r| r.update_count)
        .unwrap_or(0);
    if record.created_at_was_millis {
        state.inner.stats.created_at_millis();
    }
    ps.events.put(
        &id,
        EventRecord {
            profile,
            update_count: previous + 1,
            ..record
        },
    );
    id
}

fn write(
    state: &SimState,
    ps: &mut ProjectStore,
    t: Track,
    drop: &[String],
    endpoint: Endpoint,
    now: u64,
) -> Result<String, Failure> {
    let create = if state.config().behaviour.track_creates_unknown_users {
        Create::Yes
    } else {
        Create::No
    };
    let ptype = ps.ptype;
    let profile = ps.profiles.resolve(ptype, &t.ident(), create, now)?;
    // validate() ran first, so the unit conversion cannot fail here.
    let (created_at, was_millis) =
        normalize_created_at(t.created_at, now).unwrap_or((now as i64, false));
    let mut data = t.data_fields.unwrap_or_default();
    for k in drop {
        data.remove(k);
    }
    let record = EventRecord {
        id: t.id.unwrap_or_else(generate_id),
        name: t.event_name.unwrap_or_default(),
        profile,
        created_at,
        created_at_was_millis: was_millis,
        data,
        campaign_id: t.campaign_id,
        template_id: t.template_id,
        update_count: 0,
        endpoint,
    };
    Ok(store_event(state, ps, profile, record))
}

fn disallowed(state: &SimState, t: &Track) -> bool {
    let names = &state.config().behaviour.disallowed_event_names;
    !names.is_empty()
        && t.event_name
            .as_ref()
            .is_some_and(|n| names.iter().any(|d| d == n))
}

/// `POST /api/events/track`
pub(crate) fn track(state: &SimState, project: usize, body: &[u8]) -> Result<Response, ApiError> {
    let t: Track = parse(body)?;
    validate(&t)?;
    if disallowed(state, &t) {
        let name = t.event_name.unwrap_or_default();
        return Ok(success(
            format!("Event name {name} is disallowed from tracking"),
            Value::Null,
        ));
    }
    let mut ps = lock(state, project)?;
    ps.profiles.precheck(&t.ident()).map_err(failure_error)?;
    let create_new = t.create_new_fields.unwrap_or(ps.create_new_fields);
    let mut tc = TypeCheck::new(&ps.types, ps.id);
    let dropped = check_types(&mut tc, &t, create_new);
    tc.result().map_err(type_mismatch)?;
    let pending = tc.into_pending();
    let id = write(
        state,
        &mut ps,
        t,
        &dropped,
        Endpoint::EventsTrack,
        now_secs(),
    )
    .map_err(failure_error)?;
    commit(&mut ps.types, pending);
    drop(ps);
    // Hot path: the id is alphanumeric/hyphen only (validated or generated), so it needs no
    // JSON escaping and the answer can be written directly.
    Ok(raw_json_ok(format!(
        r#"{{"msg":"Event with id: {id} tracked.","code":"Success","params":{{"id":"{id}"}}}}"#
    )))
}

#[derive(Deserialize)]
struct TrackBulk {
    events: Vec<Track>,
}

/// `POST /api/events/trackBulk`
pub(crate) fn track_bulk(
    state: &SimState,
    project: usize,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: TrackBulk = parse(body)?;
    check_record_cap(state, req.events.len())?;
    for t in &req.events {
        validate(t)?;
    }
    let mut ps = lock(state, project)?;
    let batch = check_batch(&ps, &req.events, |tc, t| {
        check_types(tc, t, t.create_new_fields.unwrap_or(ps.create_new_fields))
    })?;
    let now = now_secs();
    let mut failed = FailedUpdates::default();
    let mut disallowed_names: Vec<String> = Vec::new();
    let mut ok = 0u64;
    for (t, drop) in req.events.into_iter().zip(batch.drops) {
        if disallowed(state, &t) {
            failed.count += 1;
            let name = t.event_name.unwrap_or_default();
            if !disallowed_names.contains(&name) {
                disallowed_names.push(name);
            }
            continue;
        }
        let key = t.ident().key();
        match write(state, &mut ps, t, &drop, Endpoint::EventsTrackBulk, now) {
            Ok(_) => ok += 1,
            Err(f) => failed.record(f, key),
        }
    }
    finish_bulk(
        state,
        ps,
        batch.pending,
        Endpoint::EventsTrackBulk,
        ok,
        &failed,
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "successCount": ok,
            "failCount": failed.count,
            "createdFields": batch.created,
            "filteredOutFields": batch.filtered,
            "disallowedEventNames": disallowed_names,
            "invalidEmails": failed.all_invalid_emails(),
            "invalidUserIds": failed.all_invalid_user_ids(),
            "failedUpdates": failed.events_json(),
        }),
    ))
}
