//! Chloé, the customer of the table tests, and her usual first steps.

use serde_json::Value;

use super::*;

pub const C: u64 = 5_120_000_000_001;
pub const EMAIL: &str = "chloe@example.com";

pub fn ckey() -> String {
    format!("c/{C}")
}

pub fn paid(h: &mut Harness, id: u64, at: i64, total: &'static str) {
    h.deliver(envelope(
        "orders/paid",
        &OrderSpec::new(id, Some(C), EMAIL, at, total).json(),
        &format!("paid-{id}"),
        at,
    ));
}

/// The usual opening: Chloé registers at `T0` (current API shape).
pub fn customer_created(h: &mut Harness) {
    h.deliver(envelope(
        "customers/create",
        &customer_json(C, EMAIL, T0, T0, false),
        "cc",
        T0,
    ));
}

pub fn num(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// A `checkouts/update` of checkout `token` last updated at `updated`.
pub fn checkout(
    h: &mut Harness,
    token: &str,
    id: u64,
    email: Option<&str>,
    customer: Option<u64>,
    updated: i64,
) {
    let body = checkout_json(token, id, email, customer, updated - 5 * MIN, updated, None);
    h.deliver(envelope(
        "checkouts/update",
        &body,
        &format!("co-{token}-{updated}"),
        updated,
    ));
}
