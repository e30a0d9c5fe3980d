//! Identifier conflicts (`EmailAlreadyExists`): which field is contested and the request that
//! still delivers everything else. Pure, no I/O.
//!
//! In hybrid and userID-based projects a profile's email is set through `dataFields.email`
//! (iterable-api.md §3.1). When another Iterable user already owns that address, Iterable
//! rejects the whole update (single: 400 `EmailAlreadyExists`; bulk: the record in
//! `failedUpdates.conflictEmails`). Only the address is contested: the publisher records the
//! conflict and re-sends the same update without it, so name, consent and aggregates arrive.

use serde_json::Value;

use crate::mapping::Identity;

/// The `dataFields` keys that name an Iterable user and can be owned by another one.
const CONTESTABLE: [&str; 2] = ["email", "userId"];

/// The identifiers a request body sets through `dataFields` (the candidates for a conflict).
pub fn contested(body: Option<&Value>) -> Vec<Identity> {
    let Some(fields) = body
        .and_then(|b| b.get("dataFields"))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    CONTESTABLE
        .iter()
        .filter_map(|k| {
            let v = fields.get(*k)?.as_str()?.to_owned();
            Some(if *k == "email" {
                Identity::Email(v)
            } else {
                Identity::UserId(v)
            })
        })
        .collect()
}

/// The body without its contestable identifier fields, or `None` when it sets none (then
/// the conflict is about the identifier the request is sent with, and leaving a field out
/// cannot work around it).
pub fn strip(body: Option<&Value>) -> Option<Value> {
    let mut body = body?.clone();
    let fields = body.get_mut("dataFields")?.as_object_mut()?;
    let before = fields.len();
    fields.retain(|k, _| !CONTESTABLE.contains(&k.as_str()));
    (fields.len() < before).then_some(body)
}

/// Whether a stripped body still carries profile data worth sending (an email change
/// carries nothing else).
pub fn has_data(body: &Value) -> bool {
    body.get("dataFields")
        .and_then(Value::as_object)
        .is_some_and(|f| !f.is_empty())
}

/// A readable list of the contested values, for the dead-letter reason.
pub fn describe(fields: &[Identity]) -> String {
    fields
        .iter()
        .map(|f| match f {
            Identity::Email(e) => format!("email {e}"),
            Identity::UserId(u) => format!("userId {u}"),
            Identity::CatalogItem(i) => format!("catalog item {i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contested_fields_are_removed_and_the_rest_kept() {
        let body = json!({"userId": "u1", "dataFields": {"email": "a@x", "firstName": "Ann", "ltv": 12.5}});
        assert_eq!(contested(Some(&body)), vec![Identity::Email("a@x".into())]);
        let rest = strip(Some(&body)).unwrap();
        assert_eq!(
            rest,
            json!({"userId": "u1", "dataFields": {"firstName": "Ann", "ltv": 12.5}})
        );
        assert!(has_data(&rest));
        let only_email = json!({"userId": "u1", "dataFields": {"email": "a@x"}});
        assert!(!has_data(&strip(Some(&only_email)).unwrap()));
        let no_field = json!({"currentUserId": "u1", "newEmail": "a@x"});
        assert!(contested(Some(&no_field)).is_empty());
        assert_eq!(strip(Some(&no_field)), None);
        assert_eq!(
            strip(Some(&rest)),
            None,
            "a stripped body has nothing left to strip"
        );
        assert_eq!(strip(None), None);
        assert_eq!(
            describe(&[Identity::Email("a@x".into()), Identity::UserId("u".into())]),
            "email a@x, userId u"
        );
    }
}
