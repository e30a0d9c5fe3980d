//! A fake of Shopify's GraphQL Admin API for backfill tests: bulk operations, throttling, JSONL.
//!
//! `POST /admin/api/{version}/graphql.json` understands the three documents a backfill sends
//! (recognised by their root field, not parsed as GraphQL):
//! - `bulkOperationRunQuery(query: $query)`: the inner query's top connection (`customers`,
//!   `orders` or `products`, the last with `variants` and `collections` children) and its `updated_at:>=`/`updated_at:<=` search filter pick the objects;
//! - `bulkOperation(id: $id)` and `currentBulkOperation`: the status, which goes
//!   `CREATED → RUNNING → COMPLETED` (or `FAILED`) after `polls_to_complete` polls or
//!   `run_time`, whichever comes first;
//! - `customerEmailMarketingConsentUpdate` / `customerSmsMarketingConsentUpdate`
//!   ([`consent`]): the customer's consent changes and the consent webhooks are sent;
//! - anything else is answered with a GraphQL error.
//!
//! Every answer carries `extensions.cost.throttleStatus` from a leaky bucket; a request whose
//! cost exceeds what is available gets `errors[{extensions.code: "THROTTLED"}]`, as Shopify
//! does. `GET /bulk/{n}.jsonl` serves the result with children on separate lines carrying
//! `__parentId`, shuffled. With `fail_first_orders`, the first orders operation ends `FAILED`
//! (`INTERNAL_SERVER_ERROR`) with a `partialDataUrl` holding the first part of its lines. When
//! a finish webhook is configured, a signed `bulk_operations/finish` is POSTed on completion.
//!
//! [`spawn_synthetic_admin`] serves a generated store of any size instead ([`synthetic`]): its
//! files are streamed while generated, with children displaced far from their parents.

mod consent;
mod files;
mod finish;
mod products;
mod record;
mod store;
mod synthetic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

pub use store::{AdminStore, Resource, UpdatedRange};
pub use synthetic::{SyntheticSpec, SyntheticStore};

use crate::config::ScenarioConfig;
use crate::error::SimError;

/// Where and how to send `bulk_operations/finish`.
#[derive(Debug, Clone)]
pub struct FinishWebhook {
    /// Receiver URL.
    pub url: String,
    /// App secret the webhook is signed with.
    pub secret: String,
}

/// Behaviour of the fake.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// `X-Shopify-Access-Token` the fake accepts.
    pub access_token: String,
    /// Store contents as of this time (`None` = the whole timeline).
    pub as_of: Option<DateTime<Utc>>,
    /// Leaky bucket size in cost points (Shopify: 1000 legacy, plan-dependent now).
    pub maximum_available: f64,
    /// Points restored per second.
    pub restore_rate: f64,
    /// Cost of `bulkOperationRunQuery`.
    pub run_cost: f64,
    /// Cost of a status poll.
    pub poll_cost: f64,
    /// An operation finishes after this many polls ...
    pub polls_to_complete: u32,
    /// ... or this long after creation.
    pub run_time: Duration,
    /// The first orders operation fails with partial data.
    pub fail_first_orders: bool,
    /// Fraction of a failed operation's lines in its partial data.
    pub partial_fraction: f64,
    /// Send `bulk_operations/finish` here when an operation ends.
    pub finish_webhook: Option<FinishWebhook>,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            access_token: "shpat_fake_admin_token".into(),
            as_of: None,
            maximum_available: 1000.0,
            restore_rate: 50.0,
            run_cost: 10.0,
            poll_cost: 1.0,
            polls_to_complete: 3,
            run_time: Duration::from_secs(2),
            fail_first_orders: false,
            partial_fraction: 0.5,
            finish_webhook: None,
        }
    }
}

/// Counters a test can assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminStats {
    /// GraphQL requests answered (including throttled ones).
    pub requests: u64,
    /// Requests answered with `THROTTLED`.
    pub throttled: u64,
    /// Bulk operations started.
    pub operations: u64,
    /// Result or partial files downloaded.
    pub downloads: u64,
    /// Requests refused for a wrong or missing access token.
    pub unauthorized: u64,
    /// API versions seen in request paths.
    pub api_versions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Completed,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "CREATED",
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
        }
    }
}

/// What the fake serves: the scenario's store, or a generated one of any size.
enum Source {
    Scenario(AdminStore),
    Synthetic(Arc<SyntheticStore>),
}

/// An operation's result file: materialised lines, or a synthetic store's query streamed on
/// download (`objects` and an estimated `size` known up front).
enum Contents {
    Lines(Vec<String>),
    Synthetic {
        resource: Resource,
        range: UpdatedRange,
        objects: u64,
        size: u64,
    },
}

struct Operation {
    number: u64,
    created: Instant,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    polls: u32,
    fail: bool,
    contents: Contents,
    roots: u64,
    status: Status,
    query: String,
}

impl Operation {
    fn objects(&self) -> usize {
        match &self.contents {
            Contents::Lines(l) => l.len(),
            Contents::Synthetic { objects, .. } => usize::try_from(*objects).unwrap_or(usize::MAX),
        }
    }

    fn size(&self) -> u64 {
        match &self.contents {
            Contents::Lines(l) => l.iter().map(|l| l.len() as u64 + 1).sum(),
            Contents::Synthetic { size, .. } => *size,
        }
    }
}

struct Inner {
    store: Source,
    /// Full-range `(roots, objects, estimated bytes)` per resource of a synthetic store,
    /// computed once at start-up (a generation pass over millions of objects).
    synthetic_counts: Vec<(Resource, u64, u64, u64)>,
    opts: AdminOptions,
    base_url: String,
    available: f64,
    refilled: Instant,
    ops: Vec<Operation>,
    orders_failed_once: bool,
    /// Where consent changes send their webhooks (see [`AdminServer::set_customer_webhook`]).
    customer_webhook: Option<FinishWebhook>,
    /// Consent mutations that changed something, per customer id.
    consent_updates: BTreeMap<u64, u64>,
    stats: AdminStats,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake; dropping it stops the server.
pub struct AdminServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://{addr}`: the Admin API base URL to give the backfill.
    pub base_url: String,
    /// Customers in the fake's store.
    pub customers: usize,
    /// Orders in the fake's store.
    pub orders: usize,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// A snapshot of the counters.
    pub fn stats(&self) -> AdminStats {
        lock(&self.shared).stats.clone()
    }

    /// Sends the webhooks of consent changes (the consent topic and `customers/update`) to
    /// `hook.url`, signed with `hook.secret`, with Shopify's retries.
    pub fn set_customer_webhook(&self, hook: FinishWebhook) {
        lock(&self.shared).customer_webhook = Some(hook);
    }

    /// A customer's current email and SMS consent, as `GET /_sim/customers/{id}` serves it;
    /// `None` for an unknown customer (or a synthetic store).
    pub fn customer(&self, id: u64) -> Option<Value> {
        customer_json(&lock(&self.shared), id)
    }

    /// Empties the cost bucket and keeps it empty for `hold`, as another app of the same
    /// shop spending everything it restores would.
    pub fn drain_bucket(&self, hold: Duration) {
        let mut s = lock(&self.shared);
        s.available = 0.0;
        // `duration_since` saturates, so nothing is restored before `refilled`.
        s.refilled = Instant::now() + hold;
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds the store for `cfg` and serves the fake on `listen` (`127.0.0.1:0` for tests).
pub async fn spawn_admin(
    cfg: &ScenarioConfig,
    opts: AdminOptions,
    listen: &str,
) -> Result<AdminServer, SimError> {
    let store = AdminStore::build(cfg, opts.as_of)?;
    let counts = (store.customer_count(), store.order_count());
    serve(Source::Scenario(store), Vec::new(), counts, opts, listen).await
}

/// Serves a synthetic store of `spec.orders` orders (see [`synthetic`]); counting its
/// objects takes one generation pass before the server answers.
pub async fn spawn_synthetic_admin(
    spec: SyntheticSpec,
    opts: AdminOptions,
    listen: &str,
) -> Result<AdminServer, SimError> {
    let store = Arc::new(SyntheticStore::new(spec));
    let s = store.clone();
    let totals = tokio::task::spawn_blocking(move || {
        [Resource::Customers, Resource::Orders].map(|r| {
            let (roots, objects) = s.counts(r, UpdatedRange::default());
            (r, roots, objects, s.estimated_size(r, objects))
        })
    })
    .await
    .map_err(|e| SimError::io("synthetic store", std::io::Error::other(e)))?;
    let counts = (
        usize::try_from(store.customer_count()).unwrap_or(usize::MAX),
        usize::try_from(store.order_count()).unwrap_or(usize::MAX),
    );
    serve(
        Source::Synthetic(store),
        totals.to_vec(),
        counts,
        opts,
        listen,
    )
    .await
}

async fn serve(
    store: Source,
    synthetic_counts: Vec<(Resource, u64, u64, u64)>,
    (customers, orders): (usize, usize),
    opts: AdminOptions,
    listen: &str,
) -> Result<AdminServer, SimError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| SimError::io(listen, e))?;
    let addr = listener.local_addr().map_err(|e| SimError::io(listen, e))?;
    let base_url = format!("http://{addr}");
    let shared = Arc::new(Mutex::new(Inner {
        store,
        synthetic_counts,
        available: opts.maximum_available,
        opts,
        base_url: base_url.clone(),
        refilled: Instant::now(),
        ops: Vec::new(),
        orders_failed_once: false,
        customer_webhook: None,
        consent_updates: BTreeMap::new(),
        stats: AdminStats::default(),
    }));
    let app = router(shared.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin fake stopped");
        }
    });
    Ok(AdminServer {
        addr,
        base_url,
        customers,
        orders,
        shared,
        task,
    })
}

fn customer_json(s: &Inner, id: u64) -> Option<Value> {
    match &s.store {
        Source::Scenario(store) => store
            .snaps
            .get(&id)
            .map(|c| consent::customer_view(c, s.consent_updates.get(&id).copied().unwrap_or(0))),
        Source::Synthetic(_) => None,
    }
}

async fn customer_route(State(shared): State<Shared>, Path(id): Path<u64>) -> Response {
    match customer_json(&lock(&shared), id) {
        Some(v) => axum::Json(v).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/admin/api/{version}/graphql.json", post(graphql))
        .route("/bulk/{file}", get(files::download))
        .route("/_sim/customers/{id}", get(customer_route))
        .with_state(shared)
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Inner {
    /// Refills the bucket and takes `cost`; `None` when throttled.
    fn take(&mut self, cost: f64) -> Option<()> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.available =
            (self.available + elapsed * self.opts.restore_rate).min(self.opts.maximum_available);
        if self.available < cost {
            return None;
        }
        self.available -= cost;
        Some(())
    }

    fn cost(&self, requested: f64, actual: Option<f64>) -> Value {
        json!({
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": self.opts.maximum_available,
                "currentlyAvailable": (self.available * 10.0).floor() / 10.0,
                "restoreRate": self.opts.restore_rate,
            }
        })
    }

    /// Moves an operation on (a poll, or time passing); returns true when it just finished.
    fn advance(&mut self, i: usize, polled: bool) -> bool {
        let (polls_needed, run_time) = (self.opts.polls_to_complete, self.opts.run_time);
        let Some(op) = self.ops.get_mut(i) else {
            return false;
        };
        if matches!(op.status, Status::Completed | Status::Failed) {
            return false;
        }
        if polled {
            op.polls += 1;
        }
        if op.polls >= polls_needed || op.created.elapsed() >= run_time {
            op.status = if op.fail {
                Status::Failed
            } else {
                Status::Completed
            };
            op.completed_at = Some(Utc::now());
            return true;
        }
        op.status = if op.polls == 0 {
            Status::Created
        } else {
            Status::Running
        };
        false
    }

    fn op_json(&self, op: &Operation) -> Value {
        let done = matches!(op.status, Status::Completed | Status::Failed);
        let partial_lines = self.partial_len(op);
        let (objects, url, partial) = match op.status {
            Status::Completed => (
                op.objects(),
                Some(format!("{}/bulk/{}.jsonl", self.base_url, op.number)),
                None,
            ),
            Status::Failed => (
                partial_lines,
                None,
                Some(format!(
                    "{}/bulk/{}-partial.jsonl",
                    self.base_url, op.number
                )),
            ),
            Status::Running => (op.objects() / 2, None, None),
            Status::Created => (0, None, None),
        };
        let size = if done { op.size() } else { 0 };
        json!({
            "id": format!("gid://shopify/BulkOperation/{}", op.number),
            "type": "QUERY",
            "status": op.status.as_str(),
            "errorCode": if op.status == Status::Failed { Value::from("INTERNAL_SERVER_ERROR") } else { Value::Null },
            "createdAt": utc(op.created_at),
            "completedAt": op.completed_at.map(utc),
            "objectCount": objects.to_string(),
            "rootObjectCount": if op.status == Status::Completed { op.roots } else { 0 }.to_string(),
            "fileSize": if op.status == Status::Completed { Value::from(size.to_string()) } else { Value::Null },
            "url": url,
            "partialDataUrl": partial,
            "query": op.query,
        })
    }

    fn partial_len(&self, op: &Operation) -> usize {
        ((op.objects() as f64) * self.opts.partial_fraction.clamp(0.0, 1.0)) as usize
    }
}

fn graphql_error(message: &str) -> Value {
    json!({"errors": [{"message": message}]})
}

async fn graphql(
    State(shared): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut finished = Vec::new();
    let response = {
        let mut s = lock(&shared);
        s.stats.requests += 1;
        if !s.stats.api_versions.contains(&version) {
            s.stats.api_versions.push(version.clone());
        }
        let token = headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok());
        if token != Some(s.opts.access_token.as_str()) {
            s.stats.unauthorized += 1;
            let body = json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        let Ok(req) = serde_json::from_str::<Value>(&body) else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(graphql_error("Invalid JSON in request body")),
            )
                .into_response();
        };
        let query = req
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let vars = req.get("variables").cloned().unwrap_or(Value::Null);
        let is_run = query.contains("bulkOperationRunQuery");
        let consent = consent::Channel::of_query(&query);
        let requested = if consent.is_some() {
            consent::MUTATION_COST
        } else if is_run {
            s.opts.run_cost
        } else {
            s.opts.poll_cost
        };
        if s.take(requested).is_none() {
            s.stats.throttled += 1;
            let mut body = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}]});
            body["extensions"] = json!({"cost": s.cost(requested, None)});
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
        // Operations that ran out their time finish even when nobody polls (for the webhook).
        for i in 0..s.ops.len() {
            if s.advance(i, false) {
                finished.push(i);
            }
        }
        let mut body = if let Some(ch) = consent {
            consent::handle(&mut s, ch, &vars)
        } else if is_run {
            let before = s.ops.len();
            let body = run_query(&mut s, &query, &vars);
            if s.ops.len() > before {
                finish_on_time(shared.clone(), before, s.opts.run_time);
            }
            body
        } else if query.contains("bulkOperation(") {
            let id = vars
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    query
                        .split("gid://shopify/BulkOperation/")
                        .nth(1)
                        .map(|t| t.chars().take_while(char::is_ascii_digit).collect())
                });
            let number = id
                .as_deref()
                .and_then(|i| i.rsplit('/').next())
                .and_then(|n| n.parse::<u64>().ok());
            match number.and_then(|n| s.ops.iter().position(|o| o.number == n)) {
                Some(i) => {
                    if s.advance(i, true) {
                        finished.push(i);
                    }
                    json!({"data": {"bulkOperation": s.op_json(&s.ops[i])}})
                }
                None => json!({"data": {"bulkOperation": null}}),
            }
        } else if query.contains("currentBulkOperation") {
            match s.ops.len().checked_sub(1) {
                Some(i) => {
                    if s.advance(i, true) {
                        finished.push(i);
                    }
                    json!({"data": {"currentBulkOperation": s.op_json(&s.ops[i])}})
                }
                None => json!({"data": {"currentBulkOperation": null}}),
            }
        } else {
            graphql_error(
                "The Admin API fake only answers bulk operation queries and consent mutations",
            )
        };
        body["extensions"] = json!({"cost": s.cost(requested, Some(requested))});
        for i in &finished {
            if let (Some(hook), Some(op)) = (s.opts.finish_webhook.clone(), s.ops.get(*i)) {
                let notice = finish::finish_notice(op);
                tokio::spawn(finish::send_finish(hook, notice));
            }
        }
        body
    };
    (StatusCode::OK, axum::Json(response)).into_response()
}

/// Ends operation `i` once its run time is up even when nobody polls or calls the API (a
/// client polling slowly learns of it from the finish webhook, as with Shopify).
fn finish_on_time(shared: Shared, i: usize, run_time: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(run_time).await;
        let send = {
            let mut s = lock(&shared);
            if !s.advance(i, false) {
                return;
            }
            match (s.opts.finish_webhook.clone(), s.ops.get(i)) {
                (Some(hook), Some(op)) => (hook, finish::finish_notice(op)),
                _ => return,
            }
        };
        finish::send_finish(send.0, send.1).await;
    });
}

fn run_query(s: &mut Inner, query: &str, vars: &Value) -> Value {
    let inner = vars
        .get("query")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| query.to_owned());
    let body = inner.trim_start().trim_start_matches('{').trim_start();
    if body.starts_with("products") {
        return run_products_query(s, &inner);
    }
    let resource = if body.starts_with("orders") {
        Resource::Orders
    } else if body.starts_with("customers") {
        Resource::Customers
    } else {
        return json!({"data": {"bulkOperationRunQuery": {"bulkOperation": null, "userErrors": [
            {"field": ["query"], "message": "The fake supports bulk queries over `customers`, `orders` or `products` only"}]}}});
    };
    let range = parse_range(&inner);
    let number = s.ops.len() as u64 + 1;
    let (contents, roots) = match &s.store {
        Source::Scenario(store) => {
            let (lines, roots) = store.jsonl(resource, range, number);
            (Contents::Lines(lines), roots)
        }
        Source::Synthetic(store) => {
            let known = s
                .synthetic_counts
                .iter()
                .find(|c| c.0 == resource && range == UpdatedRange::default());
            let (roots, objects, size) = match known {
                Some(&(_, roots, objects, size)) => (roots, objects, size),
                None => {
                    let (roots, objects) = store.counts(resource, range);
                    (roots, objects, store.estimated_size(resource, objects))
                }
            };
            let contents = Contents::Synthetic {
                resource,
                range,
                objects,
                size,
            };
            (contents, roots)
        }
    };
    // A synthetic file is streamed, never materialised: it has no partial data to cut.
    let fail = resource == Resource::Orders
        && s.opts.fail_first_orders
        && !s.orders_failed_once
        && matches!(contents, Contents::Lines(_));
    if fail {
        s.orders_failed_once = true;
    }
    s.stats.operations += 1;
    s.ops.push(Operation {
        number,
        created: Instant::now(),
        created_at: Utc::now(),
        completed_at: None,
        polls: 0,
        fail,
        contents,
        roots,
        status: Status::Created,
        query: inner,
    });
    let op = s.op_json(&s.ops[s.ops.len() - 1]);
    json!({"data": {"bulkOperationRunQuery": {"bulkOperation": {"id": op["id"], "status": op["status"]}, "userErrors": []}}})
}

/// A `products` bulk query: the scenario store's products (none in a synthetic store).
fn run_products_query(s: &mut Inner, inner: &str) -> Value {
    let range = parse_range(inner);
    let number = s.ops.len() as u64 + 1;
    let (lines, roots) = match &s.store {
        Source::Scenario(store) => store.products_jsonl(range, number),
        Source::Synthetic(_) => (Vec::new(), 0),
    };
    s.stats.operations += 1;
    s.ops.push(Operation {
        number,
        created: Instant::now(),
        created_at: Utc::now(),
        completed_at: None,
        polls: 0,
        fail: false,
        contents: Contents::Lines(lines),
        roots,
        status: Status::Created,
        query: inner.to_owned(),
    });
    let op = s.op_json(&s.ops[s.ops.len() - 1]);
    json!({"data": {"bulkOperationRunQuery": {"bulkOperation": {"id": op["id"], "status": op["status"]}, "userErrors": []}}})
}

/// Reads `updated_at:>='…'` and `updated_at:<='…'` from a search filter.
fn parse_range(query: &str) -> UpdatedRange {
    let value = |op: &str| -> Option<DateTime<Utc>> {
        let pat = format!("updated_at:{op}");
        let rest = query.split(&pat).nth(1)?;
        let rest = rest.trim_start_matches(['\'', '"', '\\']);
        let end = rest.find(['\'', '"', '\\', ' ', ')']).unwrap_or(rest.len());
        DateTime::parse_from_rfc3339(&rest[..end])
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    UpdatedRange {
        since: value(">="),
        until: value("<="),
    }
}
