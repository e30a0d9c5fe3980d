//! `/api/...` routes and the request pipeline every endpoint goes through.
//!
//! Pipeline, in order (each step may answer and stop):
//! 1. count the request; read the body up to the endpoint's cap → `413`/`400 BatchTooLarge`;
//! 2. outage fault → `503` (plain text, like a load balancer page);
//! 3. API key → project, else `401 BadApiKey`;
//! 4. 429 storm fault, then the exact rate limiter → `429 RateLimitExceeded`;
//! 5. random 5xx / held request / latency faults;
//! 6. parse (`400 BadJsonBody` for malformed JSON, `400 BadParams` for wrong shapes) and apply
//!    under the project's lock.

pub(crate) mod catalogs;
pub(crate) mod commerce;
pub(crate) mod common;
pub(crate) mod events;
pub(crate) mod lists;
mod routes;
pub(crate) mod users;

pub(crate) use routes::{not_found, router};
