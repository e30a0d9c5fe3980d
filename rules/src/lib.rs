//! tillstream's marketing rules, as pure functions over a per-customer aggregate.
//!
//! This crate depends on no Kafka client, clock or I/O: purity is enforced by the dependency
//! graph. The processor engine drives it through the [`domain::Rules`] trait.

pub mod domain;

pub use domain::{Ctx, Effect, RuleError, Rules, Timer};
