//! What the handlers share: body parsing, the project lock, batch checks and error shapes.

use std::sync::MutexGuard;

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::state::SimState;
use crate::store::ProjectStore;
use crate::store::fasthash::FastMap;
use crate::store::profiles::{Failure, Key};
use crate::store::types::{FieldType, TypeCheck, commit};

/// Parses a JSON body: syntax errors → `BadJsonBody`, shape/type errors → `BadParams`.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_params(format!("Invalid params: {e}")),
        _ => ApiError::bad_json(format!("Could not parse JSON body: {e}")),
    })
}

/// A required request field: absent → `400 BadParams` "`<name>` is required".
pub(crate) fn required<T>(value: Option<T>, name: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::bad_params(format!("{name} is required")))
}

/// Locks the project (index comes from authentication, so it exists).
pub(crate) fn lock(
    state: &SimState,
    project: usize,
) -> Result<MutexGuard<'_, ProjectStore>, ApiError> {
    state.inner.store.project(project).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GenericError",
            "unknown project",
        )
    })
}

/// The single-endpoint answer for a user failure.
pub(crate) fn failure_error(f: Failure) -> ApiError {
    match f {
        Failure::Missing(msg) => ApiError::bad_params(msg),
        Failure::InvalidEmail(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidEmailAddressError",
            format!("Invalid email: {e}"),
        ),
        Failure::InvalidUserId(u) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidUserIdError",
            format!("Invalid userId: {u:?}"),
        ),
        Failure::Forgotten(_) => ApiError::forgotten(),
        Failure::Conflict(_, msg) => ApiError::conflict(msg),
        Failure::NotFound(Key::Email(e)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownEmailError",
            format!("No user exists with email {e}"),
        ),
        Failure::NotFound(Key::UserId(u)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownUserIdError",
            format!("No user exists with userId {u}"),
        ),
        Failure::EmailExists(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "EmailAlreadyExists",
            format!("Email already exists: {e}"),
        ),
    }
}

/// The whole-request answer for a type mismatch.
pub(crate) fn type_mismatch((msg, params): (String, Value)) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "RequestFieldsTypesMismatched", msg).with_params(params)
}

/// A bulk request type-checked as a whole: one mismatch fails every record, like a bad body.
pub(crate) struct CheckedBatch {
    /// Per record, the unknown fields to drop (`createNewFields: false`).
    pub(crate) drops: Vec<Vec<String>>,
    /// `createdFields` of the answer.
    pub(crate) created: Vec<String>,
    /// `filteredOutFields` of the answer.
    pub(crate) filtered: Vec<String>,
    /// Types to [`commit`](crate::store::types::commit) once the records are written.
    pub(crate) pending: FastMap<(String, String), FieldType>,
}

/// Type-checks each record with `check` against the project's registry.
pub(crate) fn check_batch<T>(
    ps: &ProjectStore,
    records: &[T],
    mut check: impl FnMut(&mut TypeCheck<'_>, &T) -> Vec<String>,
) -> Result<CheckedBatch, ApiError> {
    let mut tc = TypeCheck::new(&ps.types, ps.id);
    let drops = records.iter().map(|r| check(&mut tc, r)).collect();
    tc.result().map_err(type_mismatch)?;
    let (created, filtered) = tc.created_and_filtered();
    Ok(CheckedBatch {
        drops,
        created,
        filtered,
        pending: tc.into_pending(),
    })
}

/// Ends a checked bulk write: commits its types, releases the project, counts the records.
pub(crate) fn finish_bulk(
    state: &SimState,
    mut ps: MutexGuard<'_, ProjectStore>,
    pending: FastMap<(String, String), FieldType>,
    ep: Endpoint,
    ok: u64,
    failed: &FailedUpdates,
) {
    commit(&mut ps.types, pending);
    drop(ps);
    state.inner.stats.records(ep, ok, failed.count);
}

/// Rejects bulk requests above `bulk_max_records`.
pub(crate) fn check_record_cap(state: &SimState, n: usize) -> Result<(), ApiError> {
    match state.inner.config.body_limits.bulk_max_records {
        Some(max) if n > max => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BatchTooLarge",
            format!("Batch of {n} records exceeds the maximum of {max}"),
        )),
        _ => Ok(()),
    }
}

/// `failedUpdates` of bulk answers: identifiers (not indices) per failure kind.
#[derive(Debug, Default)]
pub(crate) struct FailedUpdates {
    conflict_emails: Vec<String>,
    conflict_user_ids: Vec<String>,
    forgotten_emails: Vec<String>,
    forgotten_user_ids: Vec<String>,
    invalid_data_emails: Vec<String>,
    invalid_data_user_ids: Vec<String>,
    invalid_emails: Vec<String>,
    invalid_user_ids: Vec<String>,
    not_found_emails: Vec<String>,
    not_found_user_ids: Vec<String>,
    pub(crate) count: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Conflict,
    Forgotten,
    InvalidData,
    Invalid,
    NotFound,
}

impl FailedUpdates {
    /// Files `failure` of a record; `fallback` names the record when the failure carries no
    /// identifier of its own.
    pub(crate) fn record(&mut self, failure: Failure, fallback: Key) {
        self.count += 1;
        let (kind, key) = match failure {
            Failure::InvalidEmail(e) => (Kind::Invalid, Key::Email(e)),
            Failure::InvalidUserId(u) => (Kind::Invalid, Key::UserId(u)),
            Failure::Forgotten(k) => (Kind::Forgotten, k),
            Failure::Conflict(k, _) => (Kind::Conflict, k),
            Failure::EmailExists(e) => (Kind::Conflict, Key::Email(e)),
            Failure::NotFound(k) => (Kind::NotFound, k),
            Failure::Missing(_) => (Kind::InvalidData, fallback),
        };
        let (emails, user_ids) = match kind {
            Kind::Conflict => (&mut self.conflict_emails, &mut self.conflict_user_ids),
            Kind::Forgotten => (&mut self.forgotten_emails, &mut self.forgotten_user_ids),
            Kind::InvalidData => (
                &mut self.invalid_data_emails,
                &mut self.invalid_data_user_ids,
            ),
            Kind::Invalid => (&mut self.invalid_emails, &mut self.invalid_user_ids),
            Kind::NotFound => (&mut self.not_found_emails, &mut self.not_found_user_ids),
        };
        match key {
            Key::Email(e) => emails.push(e),
            Key::UserId(u) => user_ids.push(u),
        }
    }

    /// `failedUpdates` of `UserBulkUpdateListResponse` (users/bulkUpdate, lists/*).
    pub(crate) fn users_json(&self) -> Value {
        json!({
            "conflictEmails": self.conflict_emails,
            "conflictUserIds": self.conflict_user_ids,
            "forgottenEmails": self.forgotten_emails,
            "forgottenUserIds": self.forgotten_user_ids,
            "invalidDataEmails": self.invalid_data_emails,
            "invalidDataUserIds": self.invalid_data_user_ids,
            "invalidEmails": self.invalid_emails,
            "invalidUserIds": self.invalid_user_ids,
            "notFoundEmails": self.not_found_emails,
            "notFoundUserIds": self.not_found_user_ids,
        })
    }

    /// `failedUpdates` of `BulkTrackResponse`, which has no conflict/invalidData buckets:
    /// those identifiers are reported as invalid.
    pub(crate) fn events_json(&self) -> Value {
        json!({
            "invalidEmails": self.all_invalid_emails(),
            "invalidUserIds": self.all_invalid_user_ids(),
            "notFoundEmails": self.not_found_emails,
            "notFoundUserIds": self.not_found_user_ids,
            "forgottenEmails": self.forgotten_emails,
            "forgottenUserIds": self.forgotten_user_ids,
        })
    }

    /// Deprecated top-level `invalidEmails`.
    pub(crate) fn invalid_emails(&self) -> &[String] {
        &self.invalid_emails
    }

    /// Deprecated top-level `invalidUserIds`.
    pub(crate) fn invalid_user_ids(&self) -> &[String] {
        &self.invalid_user_ids
    }

    /// Invalid, conflicting and invalid-data emails together.
    pub(crate) fn all_invalid_emails(&self) -> Vec<String> {
        let mut v = self.invalid_emails.clone();
        v.extend(self.conflict_emails.iter().cloned());
        v.extend(self.invalid_data_emails.iter().cloned());
        v
    }

    /// Invalid, conflicting and invalid-data userIds together.
    pub(crate) fn all_invalid_user_ids(&self) -> Vec<String> {
        let mut v = self.invalid_user_ids.clone();
        v.extend(self.conflict_user_ids.iter().cloned());
        v.extend(self.invalid_data_user_ids.iter().cloned());
        v
    }
}

/// `400 {"msg":"error.lists.invalidListId(<id>)","code":"Success",...}` — yes, `Success`.
pub(crate) fn invalid_list(ps: &ProjectStore, list_id: u64) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "Success",
        format!("error.lists.invalidListId({list_id})"),
    )
    .with_params(json!({"projectId": ps.id, "listId": list_id}))
}
