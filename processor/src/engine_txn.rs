//! The engine's transaction work: begin, produce or hold records, commit on a helper thread,
//! and the one abort sequence, all driven by the state machine of `crate::txn`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use rules::Rules;

use super::{Engine, EngineContext, EngineError, KAFKA_TIMEOUT};
use crate::txn::{
    CommitThread, Held, ProducerStep, Recovery, Route, Settled, TxnFailure, WorkStart,
};

/// Fatal errors (fenced, producer unusable) end the engine; every other failure aborts.
pub(super) fn classify(error: &KafkaError) -> TxnFailure {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnFailure::Fatal(e.to_string()),
        other => TxnFailure::Abort(other.to_string()),
    }
}

/// A transition the transaction state machine refused: a bug, so the instance restarts.
pub(super) fn illegal(e: crate::txn::Illegal) -> EngineError {
    EngineError::Fatal(e.to_string())
}

/// librdkafka may ask for a plain retry of a transactional call (and only then).
pub(super) fn is_retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(e) if e.is_retriable() && !e.is_fatal() && !e.txn_requires_abort())
}

/// Runs a transactional call, retrying while librdkafka says the error is retriable.
pub(super) fn with_retries<T>(
    mut op: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, TxnFailure> {
    let mut attempts = 0;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if is_retriable(&e) && attempts < 10 => {
                attempts += 1;
                tracing::warn!(error = %e, attempts, "Retriable transaction error; retrying.");
                std::thread::sleep(Duration::from_millis(100 * attempts));
            }
            Err(e) => return Err(classify(&e)),
        }
    }
}

impl<R: Rules> Engine<R> {
    /// Starts (or continues) the pending work of the next transaction.
    pub(super) fn ensure_txn(&mut self) -> Result<(), EngineError> {
        let start = self.txn.work().map_err(illegal)?;
        if start == WorkStart::Continue {
            return Ok(());
        }
        self.txn_records = 0;
        self.txn_started = Instant::now();
        if start == WorkStart::Begin {
            self.begin(Vec::new())?;
        }
        Ok(())
    }

    /// Begins the producer transaction for the pending work and sends what was held for it.
    pub(super) fn begin(&mut self, held: Vec<Held>) -> Result<(), EngineError> {
        if let Err(e) = self.producer.begin_transaction() {
            self.txn.fence();
            return Err(EngineError::Fatal(format!("begin_transaction: {e}")));
        }
        for h in held {
            self.produce(
                &h.topic,
                &h.key,
                h.partition,
                h.payload.as_deref(),
                h.headers,
            )?;
        }
        Ok(())
    }

    /// Queues a record in the open transaction, or holds it while the previous transaction
    /// commits.
    pub(super) fn send(
        &mut self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        self.send_to(topic, key, None, payload, headers)
    }

    /// Like [`Self::send`], to an explicit partition (`None`: by key).
    pub(super) fn send_to(
        &mut self,
        topic: &str,
        key: &str,
        partition: Option<i32>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        match self.txn.route().map_err(illegal)? {
            Route::Produce => self.produce(topic, key, partition, payload, headers),
            Route::Hold(held) => {
                held.push(Held {
                    topic: topic.to_owned(),
                    key: key.to_owned(),
                    partition,
                    payload: payload.map(<[u8]>::to_vec),
                    headers,
                });
                Ok(())
            }
        }
    }
    /// Queues a record in the open transaction, waiting while the local queue is full.
    pub(super) fn produce(
        &self,
        topic: &str,
        key: &str,
        partition: Option<i32>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(key);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // The background thread drains the queue; back off briefly.
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Whether the open transaction commits now: it is full, it is `commit_interval` old, or
    /// the input is `drained` (the last poll found nothing to read), when waiting out the
    /// interval would only hold back the output of a burst's last records or a lone webhook.
    pub(super) fn should_commit(&self, drained: bool) -> bool {
        self.txn.is_open()
            && (drained
                || self.txn_records >= self.cfg.commit_max_records
                || self.txn_started.elapsed() >= self.cfg.commit_interval)
    }

    /// Commits everything pending and waits for it (revocation, shutdown). A failure recovers
    /// as `recovery` says.
    pub(super) fn commit(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
        recovery: Recovery,
    ) -> Result<(), EngineError> {
        self.settle_commit(consumer, true, recovery)?;
        if !self.txn.is_open() {
            return Ok(());
        }
        self.start_commit(consumer, recovery)?;
        self.settle_commit(consumer, true, recovery)
    }

    /// Writes dirty state and the consumed offsets into the open transaction, then commits it
    /// on a helper thread.
    ///
    /// The commit (flush, `AddOffsetsToTxn`, `TxnOffsetCommit`, `EndTxn`) is several broker
    /// round trips during which the loop would otherwise stand still; instead it goes on
    /// consuming and running the rules, holding the next transaction's records in memory until
    /// this commit ends ([`Engine::settle_commit`] then begins the next transaction and sends
    /// them). Exactly-once is unaffected: nothing of the next transaction reaches Kafka before
    /// this one is committed, and if this commit fails the held work is dropped with the state
    /// it produced and redone from the last committed offsets.
    pub(super) fn start_commit(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
        recovery: Recovery,
    ) -> Result<(), EngineError> {
        if !self.txn.is_open() {
            return Ok(());
        }
        if let Err(e) = self.publish_clocks() {
            tracing::warn!(error = %e, "Could not announce progress; aborting.");
            self.txn.step_failed().map_err(illegal)?;
            return self.recover(consumer, recovery);
        }
        let changelog = self.topics.changelog.clone();
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for state in self.partitions.values_mut() {
            for (key, record) in state.drain_changes() {
                let bytes = match record {
                    None => None,
                    Some(r) => Some(
                        r.encode()
                            .map_err(|e| EngineError::Fatal(format!("cannot encode state: {e}")))?,
                    ),
                };
                writes.push((key, bytes));
            }
        }
        let mut sent = Ok(());
        for (key, bytes) in &writes {
            sent = self.produce(&changelog, key, None, bytes.as_deref(), None);
            if sent.is_err() {
                break;
            }
        }
        let offsets = std::mem::take(&mut self.offsets);
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), offset) in &offsets {
            if sent.is_ok() {
                sent = tpl
                    .add_partition_offset(topic, *p, Offset::Offset(*offset))
                    .map_err(EngineError::Kafka);
            }
        }
        let meta = if offsets.is_empty() {
            None
        } else {
            match consumer.group_metadata() {
                Some(m) => Some(m),
                None if sent.is_ok() => {
                    sent = Err(EngineError::Fatal("no consumer group metadata".into()));
                    None
                }
                None => None,
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "Could not complete the transaction; aborting.");
            self.txn.step_failed().map_err(illegal)?;
            return self.recover(consumer, recovery);
        }
        let producer = Arc::clone(&self.producer);
        let spawned = CommitThread::spawn(self.commit_deadline(), move || {
            if let Some(meta) = &meta {
                with_retries(|| producer.send_offsets_to_transaction(&tpl, meta, KAFKA_TIMEOUT))?;
            }
            runtime::kafka::wait_delivered(&*producer, KAFKA_TIMEOUT);
            with_retries(|| producer.commit_transaction(KAFKA_TIMEOUT))
        });
        match spawned {
            Ok(handle) => self.txn.commit_started(handle).map_err(illegal),
            Err(e) => {
                self.txn.fence();
                Err(EngineError::Fatal(format!(
                    "cannot start the commit thread: {e}"
                )))
            }
        }
    }

    /// How long a commit may run before the engine gives up on the Kafka client
    /// (`engine.commit_deadline`, 30 s: one client call's timeout, which every call of the
    /// commit is given); a commit still running then is stuck (librdkafka's
    /// `send_offsets_to_transaction` can wait forever on a coordinator that moved,
    /// confluentinc/librdkafka#5456) or the cluster has been unreachable for that long. Giving
    /// up is safe at any point: the replacing producer's `init_transactions` (same
    /// transactional id) completes or aborts the transaction. Waiting longer only prolongs the
    /// stall: in the soak every stuck commit ran to the deadline (87 s with the former
    /// `transaction_timeout` + 30 s, 60 s with 30 s + 30 s), none came back on its own.
    fn commit_deadline(&self) -> Duration {
        self.cfg.commit_deadline
    }

    /// Takes the result of the commit in flight (waiting for it when `wait`, else only if it
    /// has ended). On success the next transaction begins with the held records; an abortable
    /// failure recovers as `recovery` says; a fatal one ends the engine.
    pub(super) fn settle_commit(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
        wait: bool,
        recovery: Recovery,
    ) -> Result<(), EngineError> {
        match self.txn.settle(wait) {
            None => Ok(()),
            Some(Settled::Committed {
                seconds,
                begin_with,
            }) => {
                self.committed(seconds);
                match begin_with {
                    Some(held) => self.begin(held),
                    None => Ok(()),
                }
            }
            Some(Settled::Fenced(m)) => Err(EngineError::Fatal(m)),
            Some(Settled::Stuck(m)) => {
                tracing::warn!(error = %m, "Commit stuck; replacing the producer.");
                self.recover(consumer, recovery)
            }
            Some(Settled::Failed(m)) => {
                tracing::warn!(error = %m, "Transaction failed; aborting.");
                self.recover(consumer, recovery)
            }
        }
    }

    /// Replaces a producer whose client got stuck in a commit. The new one has the same
    /// transactional id: its `init_transactions` fences the stuck one and completes or aborts
    /// the transaction it left, so the rebuild that follows reads a settled log. The stuck
    /// producer lives on only as long as the commit thread that holds it. A restart did the same
    /// before, at the price of rejoining the group (a session timeout for the dead member)
    /// and restoring every partition from scratch.
    fn replace_producer(&mut self) -> Result<(), EngineError> {
        self.metrics
            .transactions
            .with_label_values(&["stuck"])
            .inc();
        let started = Instant::now();
        // Its successor fences it on purpose: what its client reports then is no error.
        self.producer.context().replaced();
        let producer = super::transactional_producer(&self.producer_cfg).inspect_err(|_| {
            self.txn.fence();
        })?;
        self.producer = Arc::new(producer);
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "Replaced the stuck producer."
        );
        Ok(())
    }

    /// Aborts the producer's open transaction. A failed abort leaves the producer unusable: fatal
    /// when the work is to be redone (`rewind`), only logged when the partitions are going (a
    /// fenced producer shows at the next transaction).
    fn abort_producer(&mut self, rewind: bool) -> Result<(), EngineError> {
        self.metrics
            .transactions
            .with_label_values(&["abort"])
            .inc();
        let Err(e) = self.producer.abort_transaction(KAFKA_TIMEOUT) else {
            return Ok(());
        };
        if !rewind {
            tracing::error!(error = %e, "Abort failed.");
            return Ok(());
        }
        self.txn.fence();
        Err(match classify(&e) {
            TxnFailure::Fatal(m) => EngineError::Fatal(m),
            TxnFailure::Abort(m) | TxnFailure::Stuck(m) => {
                EngineError::Fatal(format!("abort failed: {m}"))
            }
        })
    }

    pub(super) fn committed(&self, seconds: f64) {
        self.metrics
            .transactions
            .with_label_values(&["commit"])
            .inc();
        self.metrics.commit_seconds.observe(seconds);
        self.update_gauges();
    }

    /// The one abort sequence: ends the pending work without committing it (waiting for a
    /// commit in flight, aborting the producer's transaction, dropping held records and
    /// offsets) and, with [`Recovery::Rewind`], rebuilds every owned partition's state from the
    /// committed changelog and seeks the consumer back to the committed offsets, so the engine
    /// redoes the aborted work from exactly the state it was based on.
    pub(super) fn recover(
        &mut self,
        consumer: &BaseConsumer<EngineContext<R>>,
        recovery: Recovery,
    ) -> Result<(), EngineError> {
        self.aborts += 1;
        let plan = self.txn.abort(recovery).map_err(illegal)?;
        self.offsets.clear();
        if let Some(seconds) = plan.committed {
            self.committed(seconds);
        }
        match plan.producer {
            ProducerStep::Keep => {}
            ProducerStep::Replace => self.replace_producer()?,
            ProducerStep::Abort => self.abort_producer(plan.rewind)?,
        }
        if !plan.rewind {
            return Ok(());
        }
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        let states = self.restore_all(&owned)?;
        self.partitions.extend(states);
        // Erasure: forget markers of the aborted work, as the state just did; products too.
        self.reload_erasures()?;
        self.reload_catalog()?;
        let assignment = consumer.assignment()?;
        let committed = consumer.committed_offsets(assignment, KAFKA_TIMEOUT)?;
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            consumer.seek(e.topic(), e.partition(), offset, KAFKA_TIMEOUT)?;
        }
        self.txn.rewound().map_err(illegal)?;
        self.update_gauges();
        Ok(())
    }
}
