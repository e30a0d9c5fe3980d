//! User profiles: identity resolution per project type, merge semantics, forgotten users.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::config::ProjectType;
use crate::store::fasthash::{FastMap, FastSet};

/// Internal profile handle (creation order).
pub(crate) type ProfileId = u64;

/// One user profile.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) email: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) data: Map<String, Value>,
    /// `shoppingCartItems`; `None` until a cart was written.
    pub(crate) cart: Option<Vec<Value>>,
    pub(crate) cart_updates: u64,
    pub(crate) lists: BTreeSet<u64>,
    pub(crate) unsubscribed_channel_ids: Vec<i64>,
    pub(crate) unsubscribed_message_type_ids: Vec<i64>,
    pub(crate) subscribed_message_type_ids: Vec<i64>,
    pub(crate) signup_at: u64,
    pub(crate) updated_at: u64,
    pub(crate) update_count: u64,
}

/// Identifiers a request names a user by.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ident<'a> {
    pub(crate) email: Option<&'a str>,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) prefer_user_id: bool,
}

impl Ident<'_> {
    /// The identifier a failure is reported under (email first, as bulk answers list it).
    pub(crate) fn key(&self) -> Key {
        match (self.email, self.user_id) {
            (Some(e), _) => Key::Email(e.to_string()),
            (None, Some(u)) => Key::UserId(u.to_string()),
            (None, None) => Key::Email(String::new()),
        }
    }
}

/// An identifier value, tagged by kind (selects `*Emails` vs `*UserIds` in bulk answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Email(String),
    UserId(String),
}

/// Why a user could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Neither identifier given (or not the one the project type requires).
    Missing(&'static str),
    InvalidEmail(String),
    InvalidUserId(String),
    Forgotten(Key),
    Conflict(Key, String),
    NotFound(Key),
    EmailExists(String),
}

/// Whether resolution may create a missing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Yes,
    No,
}

/// All profiles of one project plus the forgotten-identifier sets.
#[derive(Debug, Default)]
pub(crate) struct Profiles {
    pub(crate) by_id: BTreeMap<ProfileId, Profile>,
    by_email: FastMap<String, Vec<ProfileId>>,
    by_user_id: FastMap<String, Vec<ProfileId>>,
    pub(crate) forgotten_emails: FastSet<String>,
    pub(crate) forgotten_user_ids: FastSet<String>,
    next_id: ProfileId,
}

/// Email format check: one `@`, non-empty local part, dotted domain, no spaces or controls.
pub(crate) fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && e.len() <= 254
        && e.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// userId check (reference §6.4): non-empty, ≤ 52 chars, printable ASCII, no trailing space.
pub(crate) fn valid_user_id(u: &str) -> bool {
    !u.is_empty()
        && u.chars().count() <= 52
        && u.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !u.ends_with(' ')
}

fn index_add(index: &mut FastMap<String, Vec<ProfileId>>, key: &str, id: ProfileId) {
    let ids = index.entry(key.to_string()).or_default();
    if !ids.contains(&id) {
        ids.push(id);
    }
}

/// Sets the identifier `field` picks to `value`, moving the profile in `index` to match.
fn set_indexed(
    by_id: &mut BTreeMap<ProfileId, Profile>,
    index: &mut FastMap<String, Vec<ProfileId>>,
    id: ProfileId,
    value: &str,
    field: fn(&mut Profile) -> &mut Option<String>,
) {
    let old = by_id.get_mut(&id).and_then(|p| field(p).clone());
    if old.as_deref() == Some(value) {
        return;
    }
    if let Some(o) = old {
        index_remove(index, &o, id);
    }
    index_add(index, value, id);
    if let Some(p) = by_id.get_mut(&id) {
        *field(p) = Some(value.to_string());
    }
}

fn index_remove(index: &mut FastMap<String, Vec<ProfileId>>, key: &str, id: ProfileId) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|x| *x != id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl Profiles {
    pub(crate) fn get(&self, id: ProfileId) -> Option<&Profile> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ProfileId) -> Option<&mut Profile> {
        self.by_id.get_mut(&id)
    }

    pub(crate) fn find_email(&self, email: &str) -> Option<ProfileId> {
        self.by_email.get(email).and_then(|v| v.first()).copied()
    }

    pub(crate) fn find_user_id(&self, user_id: &str) -> Option<ProfileId> {
        self.by_user_id
            .get(user_id)
            .and_then(|v| v.first())
            .copied()
    }

    pub(crate) fn all_with_user_id(&self, user_id: &str) -> Vec<ProfileId> {
        self.by_user_id.get(user_id).cloned().unwrap_or_default()
    }

    pub(crate) fn is_forgotten(&self, ident: &Ident<'_>) -> Option<Key> {
        if let Some(e) = ident.email
            && self.forgotten_emails.contains(e)
        {
            return Some(Key::Email(e.to_string()));
        }
        if let Some(u) = ident.user_id
            && self.forgotten_user_ids.contains(u)
        {
            return Some(Key::UserId(u.to_string()));
        }
        None
    }

    fn create(&mut self, email: Option<&str>, user_id: Option<&str>, now: u64) -> ProfileId {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(e) = email {
            index_add(&mut self.by_email, e, id);
        }
        if let Some(u) = user_id {
            index_add(&mut self.by_user_id, u, id);
        }
        self.by_id.insert(
            id,
            Profile {
                email: email.map(str::to_string),
                user_id: user_id.map(str::to_string),
                data: Map::new(),
                cart: None,
                cart_updates: 0,
                lists: BTreeSet::new(),
                unsubscribed_channel_ids: Vec::new(),
                unsubscribed_message_type_ids: Vec::new(),
                subscribed_message_type_ids: Vec::new(),
                signup_at: now,
                updated_at: now,
                update_count: 0,
            },
        );
        id
    }

    /// Sets (or replaces) a profile's email, keeping the index in step.
    pub(crate) fn set_email(&mut self, id: ProfileId, email: &str) {
        set_indexed(&mut self.by_id, &mut self.by_email, id, email, |p| {
            &mut p.email
        });
    }

    /// Sets (or replaces) a profile's userId, keeping the index in step.
    pub(crate) fn set_user_id(&mut self, id: ProfileId, user_id: &str) {
        set_indexed(&mut self.by_id, &mut self.by_user_id, id, user_id, |p| {
            &mut p.user_id
        });
    }

    /// Removes a profile entirely; returns it.
    pub(crate) fn remove(&mut self, id: ProfileId) -> Option<Profile> {
        let p = self.by_id.remove(&id)?;
        if let Some(e) = &p.email {
            index_remove(&mut self.by_email, e, id);
        }
        if let Some(u) = &p.user_id {
            index_remove(&mut self.by_user_id, u, id);
        }
        Some(p)
    }

    /// Validates identifiers and the forgotten sets (no lookup).
    pub(crate) fn precheck(&self, ident: &Ident<'_>) -> Result<(), Failure> {
        if let Some(e) = ident.email
            && !valid_email(e)
        {
            return Err(Failure::InvalidEmail(e.to_string()));
        }
        if let Some(u) = ident.user_id
            && !valid_user_id(u)
        {
            return Err(Failure::InvalidUserId(u.to_string()));
        }
        match self.is_forgotten(ident) {
            Some(k) => Err(Failure::Forgotten(k)),
            None => Ok(()),
        }
    }

    /// Finds the profile `ident` names, creating it when allowed (reference §6.4).
    pub(crate) fn resolve(
        &mut self,
        ptype: ProjectType,
        ident: &Ident<'_>,
        create: Create,
        now: u64,
    ) -> Result<ProfileId, Failure> {
        self.precheck(ident)?;
        match ptype {
            ProjectType::Hybrid => self.resolve_hybrid(ident, create, now),
            ProjectType::UserId => {
                let Some(u) = ident.user_id else {
                    return Err(Failure::Missing(
                        "userId is required to identify users in a userID-based project",
                    ));
                };
                let id = match self.find_user_id(u) {
                    Some(id) => id,
                    None if create == Create::Yes => self.create(None, Some(u), now),
                    None => return Err(Failure::NotFound(Key::UserId(u.to_string()))),
                };
                // email is an ordinary, non-unique attribute here.
                if let Some(e) = ident.email {
                    self.set_email(id, e);
                }
                Ok(id)
            }
            ProjectType::Email => match (ident.email, ident.user_id) {
                (Some(e), u) => {
                    let id = match self.find_email(e) {
                        Some(id) => id,
                        None if create == Create::Yes => self.create(Some(e), None, now),
                        None => return Err(Failure::NotFound(Key::Email(e.to_string()))),
                    };
                    // Email wins; a userId sent alongside overwrites the profile's userId.
                    if let Some(u) = u {
                        self.set_user_id(id, u);
                    }
                    Ok(id)
                }
                (None, Some(u)) => match self.find_user_id(u) {
                    Some(id) => Ok(id),
                    None if create == Create::Yes && ident.prefer_user_id => {
                        let placeholder =
                            format!("{:032x}@placeholder.email", rand::random::<u128>());
                        Ok(self.create(Some(&placeholder), Some(u), now))
                    }
                    None => Err(Failure::NotFound(Key::UserId(u.to_string()))),
                },
                (None, None) => Err(Failure::Missing("email or userId is required")),
            },
        }
    }

    fn resolve_hybrid(
        &mut self,
        ident: &Ident<'_>,
        create: Create,
        now: u64,
    ) -> Result<ProfileId, Failure> {
        let by_email = ident.email.and_then(|e| self.find_email(e));
        let by_user = ident.user_id.and_then(|u| self.find_user_id(u));
        let id = match (by_email, by_user) {
            (None, None) if ident.email.is_none() && ident.user_id.is_none() => {
                return Err(Failure::Missing("email or userId is required"));
            }
            (None, None) => {
                if create == Create::No {
                    return Err(Failure::NotFound(ident.key()));
                }
                return Ok(self.create(ident.email, ident.user_id, now));
            }
            (Some(a), Some(b)) if a != b => {
                return Err(Failure::Conflict(
                    ident.key(),
                    "Email/userId conflict: they belong to different users".into(),
                ));
            }
            (Some(id), _) | (None, Some(id)) => id,
        };
        let Some(p) = self.by_id.get(&id) else {
            return Err(Failure::NotFound(ident.key()));
        };
        // Both identifiers are unique: filling a missing one is fine, replacing one is a
        // conflict (identifier changes go through dataFields).
        let set_email = match (ident.email, &p.email) {
            (Some(e), Some(cur)) if e != cur => {
                return Err(Failure::Conflict(
                    ident.key(),
                    format!("userId belongs to a user with another email ({cur})"),
                ));
            }
            (Some(e), None) => Some(e),
            _ => None,
        };
        let set_user = match (ident.user_id, &p.user_id) {
            (Some(u), Some(cur)) if u != cur => {
                return Err(Failure::Conflict(
                    ident.key(),
                    format!("email belongs to a user with another userId ({cur})"),
                ));
            }
            (Some(u), None) => Some(u),
            _ => None,
        };
        if let Some(e) = set_email {
            self.set_email(id, e);
        }
        if let Some(u) = set_user {
            self.set_user_id(id, u);
        }
        Ok(id)
    }

    /// Applies identifier changes carried in `dataFields` (`email`, `userId`) where the project
    /// type allows it (reference §3.1): hybrid and userID-based change email this way; every
    /// type may set userId. Email-based projects must use `updateEmail`, so a `dataFields.email`
    /// there is ignored.
    pub(crate) fn apply_identifier_fields(
        &mut self,
        ptype: ProjectType,
        id: ProfileId,
        data: &Map<String, Value>,
    ) -> Result<(), Failure> {
        self.check_identifier_fields(ptype, Some(id), data)?;
        let new_email = data.get("email").and_then(Value::as_str);
        let new_user = data.get("userId").and_then(Value::as_str);
        if let Some(e) = new_email
            && ptype != ProjectType::Email
        {
            self.set_email(id, e);
        }
        if let Some(u) = new_user {
            self.set_user_id(id, u);
        }
        Ok(())
    }

    /// The profile an update for `ident` would write, without creating or changing anything.
    pub(crate) fn lookup(&self, ident: &Ident<'_>) -> Option<ProfileId> {
        ident
            .user_id
            .and_then(|u| self.find_user_id(u))
            .or_else(|| ident.email.and_then(|e| self.find_email(e)))
    }

    /// Whether the identifier changes in `dataFields` are allowed for profile `id` (`None`:
    /// a profile the update would create). Checked before anything is written, so a
    /// rejected update leaves no trace (a 400 writes nothing).
    pub(crate) fn check_identifier_fields(
        &self,
        ptype: ProjectType,
        id: Option<ProfileId>,
        data: &Map<String, Value>,
    ) -> Result<(), Failure> {
        let new_email = data.get("email").and_then(Value::as_str);
        let new_user = data.get("userId").and_then(Value::as_str);
        if let Some(e) = new_email
            && ptype != ProjectType::Email
        {
            if !valid_email(e) {
                return Err(Failure::InvalidEmail(e.to_string()));
            }
            if self.forgotten_emails.contains(e) {
                return Err(Failure::Forgotten(Key::Email(e.to_string())));
            }
            if ptype == ProjectType::Hybrid
                && let Some(other) = self.find_email(e)
                && Some(other) != id
            {
                return Err(Failure::EmailExists(e.to_string()));
            }
        }
        if let Some(u) = new_user {
            if !valid_user_id(u) {
                return Err(Failure::InvalidUserId(u.to_string()));
            }
            if self.forgotten_user_ids.contains(u) {
                return Err(Failure::Forgotten(Key::UserId(u.to_string())));
            }
            if ptype != ProjectType::Email
                && let Some(other) = self.find_user_id(u)
                && Some(other) != id
            {
                return Err(Failure::Conflict(
                    Key::UserId(u.to_string()),
                    "userId already belongs to another user".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Merges `incoming` into `stored` (reference §3.1): fields not sent are kept; a top-level
/// object replaces the stored one unless `merge_nested`, in which case its keys are merged
/// into the stored object (one level: deeper objects inside it are replaced).
pub(crate) fn merge_data(
    stored: &mut Map<String, Value>,
    incoming: Map<String, Value>,
    merge_nested: bool,
) {
    for (k, v) in incoming {
        if k == "email" || k == "userId" {
            continue;
        }
        match (merge_nested, v) {
            (true, Value::Object(new_obj)) => match stored.get_mut(&k) {
                Some(Value::Object(old)) => {
                    for (nk, nv) in new_obj {
                        old.insert(nk, nv);
                    }
                }
                _ => {
                    stored.insert(k, Value::Object(new_obj));
                }
            },
            (_, v) => {
                stored.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn merge_replaces_or_merges_objects() {
        let mut stored = obj(json!({"a": 1, "o": {"x": 1, "y": {"z": 1}}}));
        merge_data(&mut stored, obj(json!({"o": {"y": {"w": 2}}})), true);
        assert_eq!(
            Value::Object(stored.clone()),
            json!({"a": 1, "o": {"x": 1, "y": {"w": 2}}})
        );
        merge_data(&mut stored, obj(json!({"o": {"q": 1}})), false);
        assert_eq!(Value::Object(stored), json!({"a": 1, "o": {"q": 1}}));
    }

    #[test]
    fn identifiers_validation() {
        assert!(valid_email("a@b.co"));
        assert!(!valid_email("a b@c.co"));
        assert!(!valid_email("ab.co"));
        assert!(!valid_email("a@b"));
        assert!(valid_user_id("cust-1"));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id("x "));
        assert!(!valid_user_id(&"x".repeat(53)));
        assert!(!valid_user_id("é"));
    }

    #[test]
    fn hybrid_conflict_and_fill() {
        let mut p = Profiles::default();
        let a = p
            .resolve(
                ProjectType::Hybrid,
                &Ident {
                    email: Some("a@x.io"),
                    ..Ident::default()
                },
                Create::Yes,
                0,
            )
            .unwrap();
        let same = p
            .resolve(
                ProjectType::Hybrid,
                &Ident {
                    email: Some("a@x.io"),
                    user_id: Some("u1"),
                    prefer_user_id: false,
                },
                Create::Yes,
                0,
            )
            .unwrap();
        assert_eq!(a, same);
        assert_eq!(p.find_user_id("u1"), Some(a));
        let err = p.resolve(
            ProjectType::Hybrid,
            &Ident {
                email: Some("a@x.io"),
                user_id: Some("u2"),
                prefer_user_id: false,
            },
            Create::Yes,
            0,
        );
        assert!(matches!(err, Err(Failure::Conflict(..))));
    }

    #[test]
    fn email_project_user_id_needs_prefer_user_id() {
        let mut p = Profiles::default();
        let ident = Ident {
            user_id: Some("u1"),
            ..Ident::default()
        };
        assert!(matches!(
            p.resolve(ProjectType::Email, &ident, Create::Yes, 0),
            Err(Failure::NotFound(_))
        ));
        let ident = Ident {
            prefer_user_id: true,
            ..ident
        };
        let id = p
            .resolve(ProjectType::Email, &ident, Create::Yes, 0)
            .unwrap();
        let email = p.get(id).and_then(|x| x.email.clone()).unwrap();
        assert!(email.ends_with("@placeholder.email"));
    }
}
