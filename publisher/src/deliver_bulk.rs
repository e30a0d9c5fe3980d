//! Bulk delivery: one batch over `users/bulkUpdate` or `events/trackBulk`, with per-item
//! failures, identifier conflicts, splitting and per-unit release.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::batch::{Path, assemble};
use crate::conflict;
use crate::deliver::{Deliverer, Item, JobMeta, Resolved, Unit};
use crate::dlq::Aborted;
use crate::lanes::Lane;
use crate::mapping::{Endpoint, Family, Method};
use crate::retry::{Attempt, BulkLogic, ItemFailure, RetryAction, RetryLogic};

impl Deliverer {
    /// Delivers a batch of units over the bulk endpoint of `family`.
    ///
    /// Failures are handled per item: items named in `failedUpdates` are dead-lettered (or
    /// retried when the failure is transient), the rest are done. A request rejected as a
    /// whole (type mismatch, too large) is split in halves until the offending record is
    /// alone; halves go in order, so a user's commands keep their order.
    pub(crate) async fn deliver_bulk(self: Arc<Self>, family: Family, units: Vec<Unit>) {
        let endpoint = family.bulk();
        let logic = BulkLogic(endpoint);
        let mut progress = Progress {
            remaining: units.iter().map(|u| u.items.len()).collect(),
            users: Vec::new(),
            family,
        };
        let mut all = Vec::new();
        for (i, unit) in units.into_iter().enumerate() {
            progress.users.push(unit.user);
            all.extend(unit.items.into_iter().map(|item| (i, item)));
        }
        let mut first_admission = true;
        let mut queue: VecDeque<Chunk> = VecDeque::from([(all, 0, 0)]);
        let bulk_path: Vec<String> = match family {
            Family::Users => vec!["users".into(), "bulkUpdate".into()],
            Family::Events => vec!["events".into(), "trackBulk".into()],
        };
        while let Some((chunk, attempt_no, not_found)) = queue.pop_front() {
            if chunk.is_empty() {
                continue;
            }
            let body = assemble(family, chunk.iter().map(|(_, i)| i.body.as_slice()));
            self.metrics
                .batch_records
                .with_label_values(&[endpoint.name()])
                .observe(chunk.len() as f64);
            #[allow(clippy::cast_precision_loss)]
            self.metrics
                .batch_bytes
                .with_label_values(&[endpoint.name()])
                .observe(body.len() as f64);
            let result = self
                .attempt(endpoint, Method::Post, &bulk_path, Some(&body))
                .await;
            if first_admission {
                first_admission = false;
                self.bulk_waiting(family).fetch_sub(1, Ordering::AcqRel);
            }
            let Ok(attempt) = result else { return };
            match logic.classify(&attempt) {
                RetryAction::Success => {
                    for (u, item) in chunk {
                        progress.finish(&self, u, item.jobs, true);
                    }
                }
                RetryAction::Partial(failures) => {
                    let mut again = Vec::new();
                    let mut split_parts = Vec::new();
                    for (u, item) in chunk {
                        let contested = conflict::contested(item.request.body.as_ref());
                        match failures.failure_of(
                            &item.identity,
                            &contested,
                            item.event_name.as_deref(),
                        ) {
                            None => progress.finish(&self, u, item.jobs, true),
                            Some(ItemFailure::Conflict) => {
                                let Ok(resolved) =
                                    self.resolve_conflict(item, endpoint, &attempt).await
                                else {
                                    return;
                                };
                                match resolved {
                                    // Sent again at once, like the parts of a split item.
                                    Resolved::Resend(rest) => split_parts.push((u, rest)),
                                    Resolved::Finished(rest) => {
                                        progress.finish(&self, u, rest.jobs, false);
                                    }
                                    Resolved::Reject(rest) => {
                                        if progress
                                            .dead_letter(
                                                &self, u, rest, "conflict", endpoint, &attempt,
                                            )
                                            .await
                                            .is_err()
                                        {
                                            return;
                                        }
                                    }
                                }
                            }
                            Some(ItemFailure::Permanent("invalid_data"))
                                if !item.parts.is_empty() =>
                            {
                                // The unit now waits for its parts instead of the merged item.
                                progress.replace(u, item.parts.len());
                                split_parts.extend(item.parts.into_iter().map(|p| (u, p)));
                            }
                            Some(ItemFailure::Permanent(kind)) => {
                                if progress
                                    .dead_letter(&self, u, item, kind, endpoint, &attempt)
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Some(ItemFailure::NotFound)
                                if not_found + 1 >= self.retry.not_found_attempts =>
                            {
                                if progress
                                    .dead_letter(&self, u, item, "not_found", endpoint, &attempt)
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Some(ItemFailure::NotFound | ItemFailure::Transient) => {
                                again.push((u, item))
                            }
                        }
                    }
                    if !split_parts.is_empty() {
                        queue.push_front((split_parts, 0, not_found));
                    }
                    if !again.is_empty() {
                        if self
                            .back_off(endpoint, "partial", attempt_no, None)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        queue.push_front((again, attempt_no.saturating_add(1), not_found + 1));
                    }
                }
                RetryAction::Retry { reason, after } => {
                    if self
                        .back_off(endpoint, reason, attempt_no, after)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    queue.push_front((chunk, attempt_no.saturating_add(1), not_found));
                }
                RetryAction::NotFound if not_found + 1 < self.retry.not_found_attempts => {
                    if self
                        .back_off(endpoint, "not_found", attempt_no, None)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    queue.push_front((chunk, attempt_no.saturating_add(1), not_found + 1));
                }
                RetryAction::Conflict if chunk.len() == 1 => {
                    let Some((u, item)) = chunk.into_iter().next() else {
                        continue;
                    };
                    let Ok(resolved) = self.resolve_conflict(item, endpoint, &attempt).await else {
                        return;
                    };
                    match resolved {
                        Resolved::Resend(rest) => queue.push_front((vec![(u, rest)], 0, not_found)),
                        Resolved::Finished(rest) => progress.finish(&self, u, rest.jobs, false),
                        Resolved::Reject(rest) => {
                            if progress
                                .dead_letter(&self, u, rest, "conflict", endpoint, &attempt)
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                action @ (RetryAction::NotFound
                | RetryAction::Reject { .. }
                | RetryAction::Conflict) => {
                    let kind = match action {
                        RetryAction::Reject { reason } => reason,
                        RetryAction::Conflict => "conflict".to_owned(),
                        _ => "not_found".to_owned(),
                    };
                    let mut chunk = chunk;
                    if chunk.len() > 1 {
                        // Bisect to isolate the record(s) Iterable rejects.
                        self.metrics
                            .retries
                            .with_label_values(&[endpoint.name(), "split"])
                            .inc();
                        let second = chunk.split_off(chunk.len() / 2);
                        queue.push_front((second, 0, not_found));
                        queue.push_front((chunk, 0, not_found));
                    } else if let Some((u, item)) = chunk.pop() {
                        if item.parts.is_empty() {
                            if progress
                                .dead_letter(&self, u, item, &kind, endpoint, &attempt)
                                .await
                                .is_err()
                            {
                                return;
                            }
                        } else {
                            progress.replace(u, item.parts.len());
                            queue.push_front((
                                item.parts.into_iter().map(|p| (u, p)).collect(),
                                0,
                                not_found,
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Items of a bulk request (with the index of their unit), attempts so far, and "not found"
/// answers so far.
type Chunk = (Vec<(usize, Item)>, u32, u32);

/// Which units of a batch still have unfinished items.
struct Progress {
    remaining: Vec<usize>,
    users: Vec<Arc<str>>,
    family: Family,
}

impl Progress {
    /// One item of `unit` is finished; the user is released with its last item.
    fn finish(&mut self, this: &Deliverer, unit: usize, jobs: Vec<JobMeta>, delivered: bool) {
        this.done(jobs, delivered, Path::Bulk);
        if let Some(r) = self.remaining.get_mut(unit) {
            *r = r.saturating_sub(1);
            if *r == 0
                && let Some(user) = self.users.get(unit)
            {
                this.release(
                    user.clone(),
                    Lane::of_family(self.family),
                    Some((self.family, Path::Bulk)),
                    false,
                );
            }
        }
    }

    /// Dead-letters one item of `unit`, which finishes it undelivered.
    async fn dead_letter(
        &mut self,
        this: &Deliverer,
        unit: usize,
        item: Item,
        kind: &str,
        endpoint: Endpoint,
        attempt: &Attempt,
    ) -> Result<(), Aborted> {
        this.dead_letter(&item, kind, endpoint, Some(attempt))
            .await?;
        self.finish(this, unit, item.jobs, false);
        Ok(())
    }

    /// One item of `unit` was replaced by `parts` items.
    fn replace(&mut self, unit: usize, parts: usize) {
        if let Some(r) = self.remaining.get_mut(unit) {
            *r = (*r + parts).saturating_sub(1);
        }
    }
}
