//! Checking a rules file: every problem at once, each with the setting it is about.

use std::collections::BTreeSet;
use std::fmt;

use super::*;

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The setting, as a TOML path (e.g. `tiers.levels[1].min_spend`).
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid rules file ({} problem{})",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Profile fields Iterable manages itself; writing them is an error.
const RESERVED_FIELDS: [&str; 11] = [
    "email",
    "userId",
    "emailListIds",
    "userListIds",
    "profileUpdatedAt",
    "signupDate",
    "signupSource",
    "itblInternal",
    "itblUserId",
    "shoppingCartItems",
    "phoneNumberDetails",
];

impl RulesConfig {
    /// Parses and validates a rules file, reporting every problem found.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        let cfg: RulesConfig = toml::from_str(text).map_err(|e| {
            let setting = e
                .span()
                .map(|s| locate(text, s.start))
                .unwrap_or_else(|| "rules file".into());
            ConfigErrors(vec![ConfigError {
                setting,
                message: e.message().trim().to_owned(),
            }])
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every setting; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = Vec::new();
        let mut err =
            |setting: String, message: String| errs.push(ConfigError { setting, message });

        // Tiers.
        let t = &self.tiers;
        if t.base_tier.trim().is_empty() {
            err("tiers.base_tier".into(), "must not be empty".into());
        }
        let mut names = BTreeSet::new();
        let mut prev: Option<&TierLevel> = None;
        for (i, l) in t.levels.iter().enumerate() {
            let at = |f: &str| format!("tiers.levels[{i}].{f}");
            if l.name.trim().is_empty() {
                err(at("name"), "must not be empty".into());
            } else if l.name == t.base_tier {
                err(at("name"), format!("{:?} is also the base tier", l.name));
            } else if !names.insert(l.name.as_str()) {
                err(at("name"), format!("duplicate tier {:?}", l.name));
            }
            if l.min_spend.is_none() && l.min_orders.is_none() {
                err(
                    at("min_spend"),
                    "a tier needs min_spend, min_orders or both".into(),
                );
            }
            if l.min_spend.is_some_and(|s| s.is_sign_negative()) {
                err(at("min_spend"), "must not be negative".into());
            }
            if let Some(id) = l.list_id {
                check_id(&mut err, at("list_id"), id);
            }
            if let Some(p) = prev {
                // Levels are listed lowest first; a higher level with a lower threshold would
                // make "the highest level reached" depend on list order in surprising ways.
                let lower_spend = matches!((p.min_spend, l.min_spend), (Some(a), Some(b)) if b < a);
                let lower_orders =
                    matches!((p.min_orders, l.min_orders), (Some(a), Some(b)) if b < a);
                if lower_spend || lower_orders {
                    err(
                        at("name"),
                        format!(
                            "tier {:?} has a lower threshold than {:?} listed before it; list tiers lowest first",
                            l.name, p.name
                        ),
                    );
                }
            }
            prev = Some(l);
        }
        if t.levels.len() > 30 {
            err("tiers.levels".into(), "at most 30 tiers".into());
        }

        if self.winback.lapse_days == 0 || self.winback.lapse_days > 3650 {
            err(
                "winback.lapse_days".into(),
                format!(
                    "must be between 1 and 3650, got {}",
                    self.winback.lapse_days
                ),
            );
        }
        let m = self.checkout.abandon_after_minutes;
        if m == 0 || m > 43_200 {
            err(
                "checkout.abandon_after_minutes".into(),
                format!("must be between 1 and 43200 (30 days), got {m}"),
            );
        }
        if self.refunds.recent_refund_days > 3650 {
            err(
                "refunds.recent_refund_days".into(),
                "must be at most 3650".into(),
            );
        }
        if let Some(id) = self.welcome.list_id {
            check_id(&mut err, "welcome.list_id".into(), id);
        }
        for (name, ids) in [
            ("consent.email_list_ids", &self.consent.email_list_ids),
            ("consent.sms_list_ids", &self.consent.sms_list_ids),
        ] {
            let mut seen = BTreeSet::new();
            for (i, id) in ids.iter().enumerate() {
                check_id(&mut err, format!("{name}[{i}]"), *id);
                if !seen.insert(id) {
                    err(format!("{name}[{i}]"), format!("duplicate list id {id}"));
                }
            }
        }
        for (name, id) in [
            ("consent.email_channel_id", self.consent.email_channel_id),
            ("consent.sms_channel_id", self.consent.sms_channel_id),
        ] {
            if let Some(id) = id {
                check_id(&mut err, name.into(), id);
            }
        }
        if let (Some(a), Some(b)) = (self.consent.email_channel_id, self.consent.sms_channel_id)
            && a == b
        {
            err(
                "consent.sms_channel_id".into(),
                "must differ from consent.email_channel_id".into(),
            );
        }

        for (name, hz) in self.freshness.entries() {
            if let Err(m) = hz.millis() {
                err(format!("freshness.{name}"), m);
            }
        }

        match self.timing.out_of_order_grace.millis() {
            Err(m) => err("timing.out_of_order_grace".into(), m),
            Ok(Some(g)) if g > 86_400_000 => {
                err("timing.out_of_order_grace".into(), "at most 1d".into())
            }
            Ok(_) => {}
        }
        if let Some(tpl) = &self.catalog.product_url_template
            && let Err(m) = check_template(tpl)
        {
            err("catalog.product_url_template".into(), m);
        }
        for (setting, message) in self.catalog.problems() {
            err(setting, message);
        }

        let mut seen = BTreeSet::new();
        for (setting, name) in self.fields.entries() {
            let at = format!("fields.{setting}");
            if let Err(m) = check_name(name) {
                err(at, m);
            } else if name.contains('.') {
                err(
                    at,
                    format!("{name:?}: Iterable field names must not contain '.'"),
                );
            } else if RESERVED_FIELDS.contains(&name) {
                err(
                    at,
                    format!("{name:?} is managed by Iterable or tillstream and cannot be used"),
                );
            } else if !seen.insert(name) {
                err(at, format!("{name:?} is used for two fields"));
            }
        }
        let mut seen = BTreeSet::new();
        for (setting, name) in self.events.entries() {
            let at = format!("events.{setting}");
            if let Err(m) = check_name(name) {
                err(at, m);
            } else if !seen.insert(name) {
                err(at, format!("{name:?} is used for two events"));
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errs))
        }
    }
}

fn check_id(err: &mut impl FnMut(String, String), at: String, id: i64) {
    if id <= 0 {
        err(at, format!("Iterable ids are positive, got {id}"));
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 255 {
        return Err("at most 255 bytes".into());
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?}: no leading/trailing spaces or control characters"
        ));
    }
    Ok(())
}

fn check_template(tpl: &str) -> Result<(), String> {
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| "unclosed '{'".to_owned())?;
        let name = &after[..close];
        if !["product_id", "variant_id", "sku", "handle"].contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; use {{product_id}}, {{variant_id}}, {{sku}} or {{handle}}"
            ));
        }
        rest = &after[close + 1..];
    }
    if !(tpl.starts_with("https://") || tpl.starts_with("http://")) {
        return Err("must be an absolute http(s) URL".into());
    }
    Ok(())
}

/// Turns a byte offset into a `line N` hint for TOML syntax errors.
fn locate(text: &str, offset: usize) -> String {
    let line = text
        .get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1);
    format!("rules file line {line}")
}
