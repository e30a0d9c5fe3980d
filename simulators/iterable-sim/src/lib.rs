//! iterable-sim: an in-memory, faithful simulator of the Iterable REST API endpoints tillstream uses.
//!
//! Start it in-process with [`spawn`] (binds `127.0.0.1:0`) or [`run`] (your listener), or
//! mount [`app`] yourself. Everything is in memory and per project: profiles, custom events,
//! purchases, carts, static lists, catalogs, first-write field types, forgotten users. Requests pass an
//! exact per-(project, endpoint) rate limiter ([`ratelimit`]) and optional fault injection
//! ([`faults`]); the `/_sim/` inspection API ([`inspect`]) shows what was written and counts
//! requests, admissions and 429s per endpoint.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iterable_sim::Error> {
//! let sim = iterable_sim::spawn(iterable_sim::SimConfig::default()).await?;
//! let url = format!("{}/api/events/track", sim.base_url());
//! // POST to `url` with header `Api-Key: iterable-sim-key` ...
//! let events = sim.state().events(&iterable_sim::Filter::default());
//! # let _ = (url, events);
//! sim.shutdown().await
//! # }
//! ```

mod auth;
pub mod config;
pub mod endpoint;
mod error;
pub mod faults;
mod handlers;
pub mod inspect;
pub mod ratelimit;
mod server;
mod simulate;
mod state;
pub mod stats;
mod store;
mod webhooks;

pub use config::{
    BehaviourConfig, BodyLimits, DEFAULT_API_KEY, EndpointLimit, LimitModel, ProjectConfig,
    ProjectType, RateLimitBody, RateLimitConfig, RateLimitResponse, Secret, SimConfig,
    SystemWebhookConfig, TooLargeResponse,
};
pub use endpoint::Endpoint;
pub use error::{ApiError, Error};
pub use faults::{FaultSpec, FaultStatus, FaultWindow};
pub use inspect::{
    CartView, CatalogItemView, CatalogView, EventView, Filter, ListView, ProfileView, PurchaseView,
    UserRef,
};
pub use server::{SimHandle, app, run, spawn, spawn_on};
pub use state::SimState;
pub use stats::{EndpointStats, StatsView};
pub use webhooks::{DeliveryState, WebhookView};
