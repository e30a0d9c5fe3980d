//! Single delivery and what all delivery tasks share: one unit over single endpoints, with
//! limiter, retries, splitting and dead letters; each reports back what is done.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::batch::{Path, to_bytes};
use crate::client::IterableClient;
use crate::config::{IterableConfig, RetryConfig};
use crate::conflict;
use crate::dlq::{Aborted, DeadLetters, Failure, Source};
use crate::lanes::Lane;
use crate::limits::Limiters;
use crate::mapping::{Endpoint, Family, Identity, Method, Request};
use crate::metrics::Metrics;
use crate::retry::{Attempt, Backoff, RetryAction, RetryLogic, SingleLogic};

/// What the delivery side keeps of a command: enough to complete its offset, measure its
/// age and dead-letter it.
#[derive(Debug, Clone)]
pub(crate) struct JobMeta {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) event_time_ms: i64,
    pub(crate) command_id: Option<String>,
    pub(crate) family: Option<Family>,
    pub(crate) lane: Option<Lane>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
}

impl JobMeta {
    /// The source record, as the dead-letter topic repeats it.
    fn source(&self) -> Source<'_> {
        Source {
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            payload: &self.payload,
            command_id: self.command_id.as_deref(),
        }
    }
}

/// One request item: a command, or several coalesced profile updates of one user.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) jobs: Vec<JobMeta>,
    pub(crate) request: Request,
    /// Serialised body: the single request, and the bulk item.
    pub(crate) body: Vec<u8>,
    pub(crate) identity: Identity,
    pub(crate) event_name: Option<String>,
    /// The separate items a coalesced item was built from, tried one by one if Iterable
    /// rejects the merged one, so one bad update does not take the others down with it.
    pub(crate) parts: Vec<Item>,
}

impl Item {
    /// This item with `body` (the request minus its contested identifier fields) in place of
    /// its own; the parts lose the fields too, in case they are ever tried one by one.
    fn without_contested(self, body: serde_json::Value) -> Item {
        let parts = self
            .parts
            .into_iter()
            .map(|p| match conflict::strip(p.request.body.as_ref()) {
                Some(b) => p.without_contested(b),
                None => p,
            })
            .collect();
        Item {
            body: to_bytes(&body),
            request: Request {
                body: Some(body),
                ..self.request
            },
            parts,
            ..self
        }
    }
}

/// What is left of an item after an identifier conflict was recorded.
pub(crate) enum Resolved {
    /// The item without the contested fields: send it.
    Resend(Item),
    /// The contested field was all the item carried: finished, undelivered.
    Finished(Item),
    /// The item sets no identifier field, so nothing can be left out: a plain conflict.
    Reject(Item),
}

/// The consecutive commands of one user dispatched together.
#[derive(Debug)]
pub(crate) struct Unit {
    pub(crate) user: Arc<str>,
    pub(crate) lane: Lane,
    pub(crate) items: Vec<Item>,
}

/// Reports from delivery tasks to the dispatcher.
#[derive(Debug)]
pub(crate) enum Event {
    /// These commands are finished: delivered or dead-lettered.
    Done { jobs: Vec<JobMeta> },
    /// The user's dispatched commands of `lane` are all finished; the next may go.
    Release {
        user: Arc<str>,
        lane: Lane,
        path: Option<(Family, Path)>,
        /// Whether the dispatch held one of the lane's single-request slots.
        slot: bool,
    },
}

/// Shared by all delivery tasks.
pub(crate) struct Deliverer {
    pub(crate) client: IterableClient,
    pub(crate) limiters: Limiters,
    pub(crate) metrics: Metrics,
    pub(crate) backoff: Backoff,
    pub(crate) retry: RetryConfig,
    pub(crate) timeouts: (Duration, Duration),
    pub(crate) dlq: DeadLetters,
    pub(crate) events: UnboundedSender<Event>,
    /// Cancelled at the shutdown deadline: tasks stop where they are, reporting nothing,
    /// so their commands stay uncommitted and are redelivered.
    pub(crate) abort: CancellationToken,
    /// Bulk batches per family that have not yet passed the rate limiter; a partly filled
    /// batch is only flushed on its timer when this is zero, so batches fill up while the
    /// limiter is the bottleneck.
    pub(crate) bulk_waiting: [Arc<AtomicUsize>; 2],
}

fn family_index(f: Family) -> usize {
    match f {
        Family::Users => 0,
        Family::Events => 1,
    }
}

impl Deliverer {
    pub(crate) fn new(
        client: IterableClient,
        limiters: Limiters,
        metrics: Metrics,
        retry: RetryConfig,
        iterable: &IterableConfig,
        dlq: DeadLetters,
        events: UnboundedSender<Event>,
    ) -> Self {
        Self {
            client,
            limiters,
            metrics,
            backoff: Backoff::new(&retry),
            retry,
            timeouts: (iterable.request_timeout, iterable.bulk_request_timeout),
            dlq,
            events,
            abort: CancellationToken::new(),
            bulk_waiting: [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))],
        }
    }

    pub(crate) fn bulk_waiting(&self, family: Family) -> &AtomicUsize {
        &self.bulk_waiting[family_index(family)]
    }

    pub(crate) fn done(&self, jobs: Vec<JobMeta>, delivered: bool, path: Path) {
        if delivered {
            let now = runtime::now_ms();
            self.metrics
                .delivered
                .with_label_values(&[path.label()])
                .inc_by(jobs.len() as u64);
            for j in &jobs {
                // Precision loss is irrelevant for an age histogram.
                #[allow(clippy::cast_precision_loss)]
                let age = (now - j.event_time_ms).max(0) as f64 / 1000.0;
                self.metrics.delivered_age.observe(age);
                if let Some(l) = j.lane {
                    self.metrics
                        .lane_age
                        .with_label_values(&[l.name()])
                        .observe(age);
                }
            }
        }
        // The receiver only goes away when the dispatcher has stopped; nothing to do then.
        let _ = self.events.send(Event::Done { jobs });
    }

    pub(crate) fn release(
        &self,
        user: Arc<str>,
        lane: Lane,
        path: Option<(Family, Path)>,
        slot: bool,
    ) {
        let _ = self.events.send(Event::Release {
            user,
            lane,
            path,
            slot,
        });
    }

    /// Counts a retry of `endpoint` for `reason`, then waits out the backoff for `attempt_no`.
    pub(crate) async fn back_off(
        &self,
        endpoint: Endpoint,
        reason: &str,
        attempt_no: u32,
        after: Option<Duration>,
    ) -> Result<(), Aborted> {
        self.metrics
            .retries
            .with_label_values(&[endpoint.name(), reason])
            .inc();
        self.sleep(self.backoff.delay(attempt_no, after)).await
    }

    async fn sleep(&self, d: Duration) -> Result<(), Aborted> {
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            () = self.abort.cancelled() => Err(Aborted),
        }
    }

    /// One attempt: in-flight slot, rate limiter, request; records metrics.
    pub(crate) async fn attempt(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &[String],
        body: Option<&[u8]>,
    ) -> Result<Attempt, Aborted> {
        let limiter = self.limiters.get(endpoint);
        let label = endpoint.name();
        let _permit = tokio::select! {
            p = limiter.slot() => p,
            () = self.abort.cancelled() => return Err(Aborted),
        };
        let waited = tokio::select! {
            w = limiter.admit() => w,
            () = self.abort.cancelled() => return Err(Aborted),
        };
        self.metrics
            .limiter_wait
            .with_label_values(&[label])
            .observe(waited.as_secs_f64());
        let timeout = if endpoint.is_bulk() {
            self.timeouts.1
        } else {
            self.timeouts.0
        };
        let start = Instant::now();
        let result = tokio::select! {
            r = self.client.send(method, path, body, timeout) => r,
            () = self.abort.cancelled() => return Err(Aborted),
        };
        self.metrics
            .request_duration
            .with_label_values(&[label])
            .observe(start.elapsed().as_secs_f64());
        self.metrics
            .requests
            .with_label_values(&[label, &result.status_label()])
            .inc();
        Ok(result)
    }

    pub(crate) async fn dead_letter(
        &self,
        item: &Item,
        kind: &str,
        endpoint: Endpoint,
        attempt: Option<&Attempt>,
    ) -> Result<(), Aborted> {
        let reason = format!("{} rejected the command ({kind})", endpoint.name());
        let jobs: Vec<&JobMeta> = item.jobs.iter().collect();
        self.write_dead_letters(&jobs, &item.body, kind, &reason, endpoint, attempt)
            .await
    }

    /// Writes one dead letter per job, each with the request `body` and the answer.
    async fn write_dead_letters(
        &self,
        jobs: &[&JobMeta],
        body: &[u8],
        kind: &str,
        reason: &str,
        endpoint: Endpoint,
        attempt: Option<&Attempt>,
    ) -> Result<(), Aborted> {
        let (status, response, detail) = match attempt {
            Some(Attempt::Response { status, body, .. }) => {
                (Some(*status), Some(body.as_str()), format!("HTTP {status}"))
            }
            Some(Attempt::Transport { message, .. }) => (None, None, message.clone()),
            None => (None, None, String::new()),
        };
        for job in jobs {
            let source = job.source();
            let failure = Failure {
                kind,
                reason: format!("{reason}: {detail}"),
                endpoint: Some(endpoint.name()),
                request: Some(body),
                status,
                response,
            };
            self.dlq.send(&source, &failure, &self.abort).await?;
        }
        Ok(())
    }

    /// Handles an identifier conflict (`EmailAlreadyExists`) of `item`: records it on the
    /// dead-letter topic (kind `identifier_conflict`) and returns the item without the
    /// contested field, so nothing but that field is held back.
    pub(crate) async fn resolve_conflict(
        &self,
        item: Item,
        endpoint: Endpoint,
        attempt: &Attempt,
    ) -> Result<Resolved, Aborted> {
        let contested = conflict::contested(item.request.body.as_ref());
        let Some(rest) = conflict::strip(item.request.body.as_ref()) else {
            return Ok(Resolved::Reject(item));
        };
        let sent = conflict::has_data(&rest);
        let reason = format!(
            "{} already belongs to another Iterable user; {}",
            conflict::describe(&contested),
            if sent {
                "the rest of the update is delivered without it"
            } else {
                "the update carried nothing else"
            }
        );
        // Of a coalesced item, only the commands that set the contested field are recorded.
        let recorded: Vec<&JobMeta> = if item.parts.is_empty() {
            item.jobs.iter().collect()
        } else {
            item.parts
                .iter()
                .filter(|p| !conflict::contested(p.request.body.as_ref()).is_empty())
                .flat_map(|p| &p.jobs)
                .collect()
        };
        self.write_dead_letters(
            &recorded,
            &item.body,
            "identifier_conflict",
            &reason,
            endpoint,
            Some(attempt),
        )
        .await?;
        self.metrics
            .conflicts
            .with_label_values(&[endpoint.name()])
            .inc_by(recorded.len() as u64);
        if !sent {
            return Ok(Resolved::Finished(item));
        }
        Ok(Resolved::Resend(item.without_contested(rest)))
    }

    /// Delivers one unit over single endpoints, item after item.
    pub(crate) async fn deliver_single(self: Arc<Self>, unit: Unit) {
        let path = unit.items.first().and_then(|i| match i.request.endpoint {
            Endpoint::UsersUpdate => Some((Family::Users, Path::Single)),
            Endpoint::EventsTrack => Some((Family::Events, Path::Single)),
            _ => None,
        });
        let mut queue: VecDeque<Item> = unit.items.into();
        while let Some(item) = queue.pop_front() {
            match self.single_item(item).await {
                Ok(Some(parts)) => {
                    for p in parts.into_iter().rev() {
                        queue.push_front(p);
                    }
                }
                Ok(None) => {}
                Err(Aborted) => return,
            }
        }
        self.release(unit.user, unit.lane, path, true);
    }

    /// Returns the parts to try separately when a coalesced item was rejected.
    async fn single_item(&self, mut item: Item) -> Result<Option<Vec<Item>>, Aborted> {
        let endpoint = item.request.endpoint;
        let logic = SingleLogic(endpoint);
        let mut attempt_no = 0u32;
        let mut not_found = 0u32;
        let mut created = false;
        loop {
            let attempt = self
                .attempt(
                    endpoint,
                    item.request.method,
                    &item.request.path,
                    item.request.body.as_ref().map(|_| item.body.as_slice()),
                )
                .await?;
            if endpoint.is_catalog_item()
                && !created
                && matches!(attempt, Attempt::Response { status: 404, .. })
            {
                // The catalog does not exist yet: create it on first use, then write again.
                created = true;
                self.create_catalog(&item.request).await?;
                continue;
            }
            match logic.classify(&attempt) {
                RetryAction::Success | RetryAction::Partial(_) => {
                    self.done(item.jobs, true, Path::Single);
                    return Ok(None);
                }
                RetryAction::Retry { reason, after } => {
                    self.back_off(endpoint, reason, attempt_no, after).await?;
                    attempt_no = attempt_no.saturating_add(1);
                }
                RetryAction::NotFound => {
                    not_found += 1;
                    if not_found >= self.retry.not_found_attempts {
                        self.dead_letter(&item, "not_found", endpoint, Some(&attempt))
                            .await?;
                        self.done(item.jobs, false, Path::Single);
                        return Ok(None);
                    }
                    self.back_off(endpoint, "not_found", attempt_no, None)
                        .await?;
                    attempt_no = attempt_no.saturating_add(1);
                }
                RetryAction::Reject { reason } => {
                    if !item.parts.is_empty() {
                        return Ok(Some(item.parts));
                    }
                    self.dead_letter(&item, &reason, endpoint, Some(&attempt))
                        .await?;
                    self.done(item.jobs, false, Path::Single);
                    return Ok(None);
                }
                RetryAction::Conflict => {
                    match self.resolve_conflict(item, endpoint, &attempt).await? {
                        Resolved::Resend(rest) => {
                            item = rest;
                            attempt_no = 0;
                        }
                        Resolved::Finished(rest) => {
                            self.done(rest.jobs, false, Path::Single);
                            return Ok(None);
                        }
                        Resolved::Reject(rest) => {
                            self.dead_letter(&rest, "conflict", endpoint, Some(&attempt))
                                .await?;
                            self.done(rest.jobs, false, Path::Single);
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// Creates the catalog `request` writes to. Its outcome only decides whether the write
    /// that follows can succeed, and that write is classified as usual.
    async fn create_catalog(&self, request: &Request) -> Result<(), Aborted> {
        let Some(name) = crate::mapping_catalog::catalog_of(request) else {
            return Ok(());
        };
        let create = crate::mapping_catalog::create_catalog(name);
        let attempt = self
            .attempt(create.endpoint, create.method, &create.path, None)
            .await?;
        tracing::info!(catalog = name, status = %attempt.status_label(), "Created the Iterable catalog on first use.");
        Ok(())
    }

    /// Dead-letters a command that never reached Iterable (undecodable, unmappable).
    pub(crate) async fn dead_letter_unsent(
        self: Arc<Self>,
        job: JobMeta,
        kind: &'static str,
        reason: String,
        user: Option<(Arc<str>, Lane)>,
    ) {
        let source = job.source();
        let failure = Failure {
            kind,
            reason,
            ..Failure::default()
        };
        if self.dlq.send(&source, &failure, &self.abort).await.is_err() {
            return;
        }
        self.done(vec![job], false, Path::Single);
        if let Some((user, lane)) = user {
            self.release(user, lane, None, false);
        }
    }
}
