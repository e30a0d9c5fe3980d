//! tillstream's marketing rules, as pure functions over a per-customer aggregate.
//!
//! This crate depends on no Kafka client, clock or I/O: purity is enforced by the dependency
//! graph. The processor engine drives it through the [`domain::Rules`] trait, implemented by
//! [`MarketingRules`] over the aggregate [`State`], configured by a [`RulesConfig`] (see
//! `tillstream-rules.example.toml` and README.md for the field scheme and event names).

pub mod aggregate;
pub mod catalog;
mod checkout;
pub mod config;
pub mod consent_policy;
pub mod domain;
mod email_index;
mod emit;
mod first_purchase;
pub mod format;
mod gdpr;
pub mod ids;
mod items;
mod lenient;
pub mod ltv;
pub mod messages;
mod orders;
mod profile;
mod profile_fields;
mod refunds;
pub mod routing;
mod rules;
pub mod shopify;
mod tiers;
mod two_way;
pub mod view;
mod winback;

pub use aggregate::State;
pub use config::{ConfigError, ConfigErrors, RulesConfig};
pub use domain::{Ctx, Effect, RuleError, Rules, Timer};
pub use lenient::Coercions;
pub use rules::MarketingRules;
