//! In-memory state of every project: profiles, field types, events, purchases, lists, catalogs.
//!
//! Each project lives behind its own mutex; a request holds it for its whole (synchronous)
//! processing, which makes every request — including a bulk one — atomic, as the
//! "type mismatch fails the whole request" rule requires.

pub(crate) mod catalogs;
pub(crate) mod fasthash;
pub(crate) mod profiles;
pub(crate) mod records;
pub(crate) mod types;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ProjectConfig, ProjectType, SimConfig};
use profiles::Profiles;
use records::{EventRecord, Keyed, PurchaseRecord};
use types::TypeRegistry;

/// State of one project.
#[derive(Debug)]
pub(crate) struct ProjectStore {
    pub(crate) id: u64,
    pub(crate) ptype: ProjectType,
    pub(crate) create_new_fields: bool,
    list_ids: BTreeSet<u64>,
    any_list_id: bool,
    pub(crate) profiles: Profiles,
    pub(crate) types: TypeRegistry,
    pub(crate) events: Keyed<EventRecord>,
    pub(crate) purchases: Keyed<PurchaseRecord>,
    pub(crate) catalogs: catalogs::Catalogs,
    /// Channel an email unsubscribe applies to.
    pub(crate) email_channel_id: i64,
    /// Channel a STOP reply applies to.
    pub(crate) sms_channel_id: i64,
}

impl ProjectStore {
    fn new(p: &ProjectConfig) -> Self {
        ProjectStore {
            id: p.id,
            ptype: p.project_type,
            create_new_fields: p.create_new_fields,
            list_ids: p.list_ids.iter().copied().collect(),
            any_list_id: p.any_list_id,
            profiles: Profiles::default(),
            types: TypeRegistry::default(),
            events: Keyed::default(),
            purchases: Keyed::default(),
            email_channel_id: p.email_channel_id,
            sms_channel_id: p.sms_channel_id,
            catalogs: {
                let mut c = catalogs::Catalogs::default();
                for name in &p.catalogs {
                    c.create(name);
                }
                c
            },
        }
    }

    /// Whether `list_id` exists in this project.
    pub(crate) fn list_exists(&self, list_id: u64) -> bool {
        self.any_list_id || self.list_ids.contains(&list_id)
    }

    /// Configured list ids (for the lists view; lists with members are added there).
    pub(crate) fn configured_lists(&self) -> &BTreeSet<u64> {
        &self.list_ids
    }
}

/// All projects.
pub(crate) struct Store {
    projects: Vec<Mutex<ProjectStore>>,
    configs: Vec<ProjectConfig>,
}

impl Store {
    pub(crate) fn new(config: &SimConfig) -> Self {
        Store {
            projects: config
                .projects
                .iter()
                .map(|p| Mutex::new(ProjectStore::new(p)))
                .collect(),
            configs: config.projects.clone(),
        }
    }

    /// Locks project `index`. A poisoned lock is recovered: handlers never panic by design,
    /// and a partially applied request is preferable to a simulator that stops answering.
    pub(crate) fn project(&self, index: usize) -> Option<MutexGuard<'_, ProjectStore>> {
        self.projects
            .get(index)
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn len(&self) -> usize {
        self.projects.len()
    }

    /// Forgets everything (profiles, types, events, purchases, forgotten sets).
    pub(crate) fn reset(&self) {
        for (i, cfg) in self.configs.iter().enumerate() {
            if let Some(mut p) = self.project(i) {
                *p = ProjectStore::new(cfg);
            }
        }
    }
}

/// Current Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh Iterable-style id (32 hex digits).
pub(crate) fn generate_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Formats Unix seconds as Iterable's `yyyy-MM-dd HH:mm:ss +00:00`.
pub(crate) fn format_ts(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for the whole u64-seconds range we can see.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_ts(0), "1970-01-01 00:00:00 +00:00");
        assert_eq!(format_ts(1_470_163_225), "2016-08-02 18:40:25 +00:00");
        assert_eq!(format_ts(951_782_400), "2000-02-29 00:00:00 +00:00");
    }
}
