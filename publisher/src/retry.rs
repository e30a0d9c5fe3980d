//! Retry classification (retry / partial / split / dead-letter / success) and backoff.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use crate::config::RetryConfig;
use crate::mapping::{Endpoint, Identity};

/// What came back from one HTTP attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// Iterable answered.
    Response {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
        /// The body as text (may be HTML or plain text on errors).
        body: String,
    },
    /// No answer: timeout, connection refused or reset, TLS failure.
    Transport {
        /// Short low-cardinality kind: `timeout`, `connect`, `other`.
        kind: &'static str,
        /// The error message.
        message: String,
    },
}

impl Attempt {
    /// Status label for metrics: the code or the transport kind.
    pub fn status_label(&self) -> String {
        match self {
            Self::Response { status, .. } => status.to_string(),
            Self::Transport { kind, .. } => (*kind).to_owned(),
        }
    }
}

/// The decision for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryAction {
    /// Accepted.
    Success,
    /// Try the same request again after a backoff (or the given `Retry-After`).
    Retry {
        /// Low-cardinality reason for metrics.
        reason: &'static str,
        /// Server-requested delay.
        after: Option<Duration>,
    },
    /// A bulk request was answered 200 but some items failed.
    Partial(BulkFailures),
    /// The request as a whole was rejected for its content: a bulk request is split to find
    /// the offending record; a single record is dead-lettered.
    Reject {
        /// Low-cardinality reason (`http_400`, `type_mismatch`, ...).
        reason: String,
    },
    /// Not found yet (Iterable may still be processing the profile): retried a few times,
    /// then dead-lettered.
    NotFound,
    /// An identifier the request sets (`dataFields.email`) belongs to another Iterable user
    /// (`EmailAlreadyExists`): the rest of the request is re-sent without it.
    Conflict,
}

/// Classifies an attempt. Implemented per request kind, as in Vector's `RetryLogic`.
pub trait RetryLogic {
    /// The decision for `attempt`.
    fn classify(&self, attempt: &Attempt) -> RetryAction;
}

/// Classification shared by single and bulk requests for non-2xx answers.
fn classify_error(
    endpoint: Endpoint,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> RetryAction {
    let code = error_code(body);
    match status {
        429 => RetryAction::Retry {
            reason: "rate_limited",
            after: retry_after,
        },
        408 => RetryAction::Retry {
            reason: "timeout",
            after: retry_after,
        },
        // A revoked or mistyped key is an operational problem, not the command's fault:
        // dead-lettering every command would empty the topic into the DLQ. Retry (lag builds,
        // /readyz and the logs say why) until someone fixes the key.
        401 | 403 => RetryAction::Retry {
            reason: "unauthorized",
            after: retry_after,
        },
        404 if endpoint.not_found_is_success() => RetryAction::Success,
        400..=499 => match code.as_deref() {
            Some("UnknownUserIdError" | "UnknownEmailError" | "NotFound") => RetryAction::NotFound,
            // Decided by the code, not the status: the contract documents 400 for it, and a
            // 409 with this code means the same contested address.
            Some("EmailAlreadyExists") => RetryAction::Conflict,
            Some("RequestFieldsTypesMismatched") => RetryAction::Reject {
                reason: "type_mismatch".into(),
            },
            Some("BatchTooLarge") => RetryAction::Reject {
                reason: "too_large".into(),
            },
            Some("ForgottenUserError") => RetryAction::Reject {
                reason: "forgotten_user".into(),
            },
            _ if status == 413 => RetryAction::Reject {
                reason: "too_large".into(),
            },
            _ => RetryAction::Reject {
                reason: format!("http_{status}"),
            },
        },
        500..=599 => RetryAction::Retry {
            reason: "server_error",
            after: retry_after,
        },
        _ => RetryAction::Retry {
            reason: "unexpected_status",
            after: retry_after,
        },
    }
}

fn error_code(body: &str) -> Option<String> {
    // Error bodies are not always JSON (HTML 404s, plain-text 429s): absent code, not an error.
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("code").and_then(Value::as_str).map(str::to_owned)
}

/// Logic for single-record endpoints.
#[derive(Debug, Clone, Copy)]
pub struct SingleLogic(pub Endpoint);

impl RetryLogic for SingleLogic {
    fn classify(&self, attempt: &Attempt) -> RetryAction {
        match attempt {
            Attempt::Transport { kind, .. } => RetryAction::Retry {
                reason: if *kind == "timeout" {
                    "timeout"
                } else {
                    "connection"
                },
                after: None,
            },
            Attempt::Response { status, .. } if (200..300).contains(status) => RetryAction::Success,
            Attempt::Response {
                status,
                retry_after,
                body,
            } => classify_error(self.0, *status, *retry_after, body),
        }
    }
}

/// Logic for bulk endpoints: 200 answers are inspected item by item.
#[derive(Debug, Clone, Copy)]
pub struct BulkLogic(pub Endpoint);

impl RetryLogic for BulkLogic {
    fn classify(&self, attempt: &Attempt) -> RetryAction {
        match attempt {
            Attempt::Response { status, body, .. } if (200..300).contains(status) => {
                let failures = BulkFailures::parse(body);
                if failures.is_empty() {
                    RetryAction::Success
                } else {
                    RetryAction::Partial(failures)
                }
            }
            other => SingleLogic(self.0).classify(other),
        }
    }
}

/// How one item of a bulk request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFailure {
    /// Permanent: dead-letter with this reason.
    Permanent(&'static str),
    /// The user is not known (yet): retry a few times.
    NotFound,
    /// Iterable failed internally for a valid identifier: retry.
    Transient,
    /// Listed in `conflictEmails`/`conflictUserIds`: re-send without the contested field.
    Conflict,
}

/// Per-item failures of a 200 bulk answer, keyed by identifier (Iterable reports
/// identifiers, not indices) and, for events, by disallowed event name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkFailures {
    /// Failures by identifier.
    pub by_identity: HashMap<Identity, ItemFailure>,
    /// Event names Iterable refuses to track.
    pub disallowed_event_names: Vec<String>,
}

impl BulkFailures {
    /// Reads `failedUpdates`, the deprecated top-level `invalidEmails`/`invalidUserIds`,
    /// the subscription-style `valid*Failures` and `disallowedEventNames`. A body that is not
    /// JSON yields no failures: the status said the request was accepted.
    pub fn parse(body: &str) -> Self {
        use ItemFailure::{Conflict, NotFound, Permanent, Transient};
        let mut out = Self::default();
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            return out;
        };
        let failed = v.get("failedUpdates");
        let f = |name: &str| failed.and_then(|f| f.get(name));
        // (list, holds emails, failure), in this order: for one identifier, the first failure
        // listed stays unless a later one is permanent.
        for (list, email, failure) in [
            (f("notFoundEmails"), true, NotFound),
            (f("notFoundUserIds"), false, NotFound),
            (v.get("validEmailFailures"), true, Transient),
            (v.get("validUserIdFailures"), false, Transient),
            (f("conflictEmails"), true, Conflict),
            (f("conflictUserIds"), false, Conflict),
            (f("forgottenEmails"), true, Permanent("forgotten_user")),
            (f("forgottenUserIds"), false, Permanent("forgotten_user")),
            (f("invalidDataEmails"), true, Permanent("invalid_data")),
            (f("invalidDataUserIds"), false, Permanent("invalid_data")),
            (f("invalidEmails"), true, Permanent("invalid_identifier")),
            (f("invalidUserIds"), false, Permanent("invalid_identifier")),
            (
                v.get("invalidEmails"),
                true,
                Permanent("invalid_identifier"),
            ),
            (
                v.get("invalidUserIds"),
                false,
                Permanent("invalid_identifier"),
            ),
        ] {
            for id in list
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let key = if email {
                    Identity::Email(id.to_owned())
                } else {
                    Identity::UserId(id.to_owned())
                };
                // A permanent failure wins over a retryable one for the same identifier.
                let entry = out.by_identity.entry(key).or_insert(failure);
                if matches!(failure, Permanent(_) | Conflict) {
                    *entry = failure;
                }
            }
        }
        out.disallowed_event_names = v
            .get("disallowedEventNames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        out
    }

    /// No item failed.
    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty() && self.disallowed_event_names.is_empty()
    }

    /// The failure of one item, if any. `contested` are the identifiers the item sets in
    /// `dataFields`: Iterable may name a conflict by the contested address rather than by
    /// the identifier the record was sent with, so both count for the conflict lists.
    pub fn failure_of(
        &self,
        identity: &Identity,
        contested: &[Identity],
        event_name: Option<&str>,
    ) -> Option<ItemFailure> {
        if let Some(name) = event_name
            && self.disallowed_event_names.iter().any(|n| n == name)
        {
            return Some(ItemFailure::Permanent("disallowed_event_name"));
        }
        let own = self.by_identity.get(identity).copied();
        if matches!(own, Some(ItemFailure::Permanent(_))) {
            return own;
        }
        let conflict = contested
            .iter()
            .any(|c| self.by_identity.get(c) == Some(&ItemFailure::Conflict));
        if conflict {
            Some(ItemFailure::Conflict)
        } else {
            own
        }
    }
}

/// Exponential backoff with full jitter, honouring `Retry-After`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    max_retry_after: Duration,
}

impl Backoff {
    /// From the retry configuration.
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            initial: config.initial_backoff,
            max: config.max_backoff,
            max_retry_after: config.max_retry_after,
        }
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 0). Full jitter: uniform in
    /// `0..min(max, initial × 2^attempt)`, so many clients retrying at once spread out. A
    /// `Retry-After` from the server replaces the jitter (capped).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let bound = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Attempt {
        Attempt::Response {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    #[test]
    fn statuses_are_classified() {
        let s = SingleLogic(Endpoint::EventsTrack);
        assert_eq!(s.classify(&resp(200, "{}")), RetryAction::Success);
        assert!(matches!(
            s.classify(&resp(429, "Rate limit exceeded. Please try again later.")),
            RetryAction::Retry {
                reason: "rate_limited",
                ..
            }
        ));
        assert!(matches!(
            s.classify(&resp(503, "<html>")),
            RetryAction::Retry {
                reason: "server_error",
                ..
            }
        ));
        assert!(matches!(
            s.classify(&resp(401, r#"{"code":"BadApiKey"}"#)),
            RetryAction::Retry {
                reason: "unauthorized",
                ..
            }
        ));
        assert_eq!(
            s.classify(&resp(400, r#"{"code":"BadParams","msg":"x"}"#)),
            RetryAction::Reject {
                reason: "http_400".into()
            }
        );
        assert_eq!(
            s.classify(&resp(409, r#"{"code":"ForgottenUserError"}"#)),
            RetryAction::Reject {
                reason: "forgotten_user".into()
            }
        );
        assert_eq!(
            s.classify(&resp(400, r#"{"code":"RequestFieldsTypesMismatched"}"#)),
            RetryAction::Reject {
                reason: "type_mismatch".into()
            }
        );
        assert_eq!(
            s.classify(&resp(413, "too big")),
            RetryAction::Reject {
                reason: "too_large".into()
            }
        );
        assert_eq!(
            s.classify(&resp(400, r#"{"code":"UnknownUserIdError"}"#)),
            RetryAction::NotFound
        );
        assert!(matches!(
            s.classify(&Attempt::Transport {
                kind: "timeout",
                message: String::new()
            }),
            RetryAction::Retry {
                reason: "timeout",
                ..
            }
        ));
        assert_eq!(
            SingleLogic(Endpoint::UsersDeleteByUserId).classify(&resp(404, "")),
            RetryAction::Success
        );
        assert_eq!(
            SingleLogic(Endpoint::EventsTrack).classify(&resp(404, "<html/>")),
            RetryAction::Reject {
                reason: "http_404".into()
            }
        );
    }

    #[test]
    fn bulk_failures_are_read_by_identifier() {
        let body = r#"{"successCount":1,"failCount":3,"failedUpdates":{"forgottenUserIds":["u2"],"notFoundEmails":["n@x"],"invalidEmails":["bad"]},"disallowedEventNames":["blocked"]}"#;
        let b = BulkLogic(Endpoint::UsersBulkUpdate);
        let RetryAction::Partial(f) = b.classify(&resp(200, body)) else {
            panic!("expected partial")
        };
        assert_eq!(
            f.failure_of(&Identity::UserId("u2".into()), &[], None),
            Some(ItemFailure::Permanent("forgotten_user"))
        );
        assert_eq!(
            f.failure_of(&Identity::Email("n@x".into()), &[], None),
            Some(ItemFailure::NotFound)
        );
        assert_eq!(
            f.failure_of(&Identity::Email("bad".into()), &[], None),
            Some(ItemFailure::Permanent("invalid_identifier"))
        );
        assert_eq!(
            f.failure_of(&Identity::UserId("ok".into()), &[], None),
            None
        );
        assert_eq!(
            f.failure_of(&Identity::UserId("ok".into()), &[], Some("blocked")),
            Some(ItemFailure::Permanent("disallowed_event_name"))
        );
        assert_eq!(
            b.classify(&resp(
                200,
                r#"{"successCount":2,"failCount":0,"failedUpdates":{}}"#
            )),
            RetryAction::Success
        );
        assert_eq!(b.classify(&resp(200, "not json")), RetryAction::Success);
    }

    #[test]
    fn email_conflicts_are_recognised_single_and_bulk() {
        let s = SingleLogic(Endpoint::UsersUpdate);
        let body =
            r#"{"msg":"Email already exists: a@x","code":"EmailAlreadyExists","params":null}"#;
        assert_eq!(s.classify(&resp(400, body)), RetryAction::Conflict);
        assert_eq!(s.classify(&resp(409, body)), RetryAction::Conflict);
        // Named by the contested address or by the record's own identifier: both count.
        let b = BulkLogic(Endpoint::UsersBulkUpdate);
        let by_email =
            r#"{"successCount":1,"failCount":1,"failedUpdates":{"conflictEmails":["a@x"]}}"#;
        let RetryAction::Partial(f) = b.classify(&resp(200, by_email)) else {
            panic!("expected partial")
        };
        let contested = [Identity::Email("a@x".into())];
        assert_eq!(
            f.failure_of(&Identity::UserId("u1".into()), &contested, None),
            Some(ItemFailure::Conflict)
        );
        assert_eq!(
            f.failure_of(&Identity::UserId("u2".into()), &[], None),
            None
        );
        let by_user =
            r#"{"successCount":0,"failCount":1,"failedUpdates":{"conflictUserIds":["u1"]}}"#;
        let RetryAction::Partial(f) = b.classify(&resp(200, by_user)) else {
            panic!("expected partial")
        };
        assert_eq!(
            f.failure_of(&Identity::UserId("u1".into()), &contested, None),
            Some(ItemFailure::Conflict)
        );
    }

    #[test]
    fn backoff_is_jittered_bounded_and_honours_retry_after() {
        let b = Backoff::new(&RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
            not_found_attempts: 3,
        });
        for attempt in 0..40 {
            let d = b.delay(attempt, None);
            assert!(d <= Duration::from_secs(1));
            if attempt == 0 {
                assert!(d <= Duration::from_millis(100));
            }
        }
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
