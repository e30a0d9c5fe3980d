//! The consumer loop: Kafka records in, commits out, rebalance callbacks, backpressure and
//! graceful shutdown around the [`Dispatcher`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::config::PublisherConfig;
use crate::deliver::Event;
use crate::dispatch::{Dispatcher, lock};
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;

/// Consumer callbacks: commit finished work of revoked partitions, start assigned ones
/// fresh, and export librdkafka's lag statistics.
pub(crate) struct PublisherContext {
    pub(crate) offsets: Arc<Mutex<OffsetTracker>>,
    pub(crate) topic: String,
    pub(crate) metrics: Metrics,
}

impl ClientContext for PublisherContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.committed_offset >= 0 && p.hi_offset >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[&partition.to_string()])
                        .set((p.hi_offset - p.committed_offset).max(0));
                }
            }
        }
    }
}

impl ConsumerContext for PublisherContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what is done before the partition moves, so the next owner redelivers
            // only the commands still in flight here.
            let mut commit = TopicPartitionList::new();
            {
                let mut offsets = lock(&self.offsets);
                for e in tpl.elements() {
                    if let Some(o) = offsets.revoke(e.partition()) {
                        let _ = commit.add_partition_offset(
                            e.topic(),
                            e.partition(),
                            Offset::Offset(o),
                        );
                    }
                }
            }
            if commit.count() > 0
                && let Err(error) = consumer.commit(&commit, CommitMode::Sync)
            {
                tracing::warn!(%error, "Cannot commit offsets of revoked partitions; they will be redelivered.");
            }
            tracing::info!(partitions = tpl.count(), "Partitions revoked.");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut offsets = lock(&self.offsets);
            for e in tpl.elements() {
                offsets.assign(e.partition());
            }
            tracing::info!(partitions = tpl.count(), "Partitions assigned.");
        }
    }
}

/// Runs the consume → dispatch → commit loop until `shutdown`, then drains.
pub(crate) async fn run_loop(
    config: Arc<PublisherConfig>,
    consumer: StreamConsumer<PublisherContext>,
    mut dispatcher: Dispatcher,
    mut events: UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let topic = config.topics.commands.clone();
    let mut fatal = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_commit = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_pause = Instant::now();
    let mut paused = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(event) = events.recv() => dispatcher.on_event(event),
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    dispatcher.accept(m.partition(), m.offset(), m.key(), m.payload());
                    // Pause as soon as the bound is reached; records librdkafka already fetched
                    // for paused partitions are discarded and fetched again after resume.
                    if !paused
                        && dispatcher.over_bound()
                        && let Ok(assignment) = consumer.assignment()
                        && consumer.pause(&assignment).is_ok()
                    {
                        tracing::debug!(pending = dispatcher.pending(), "Pausing consumption (backpressure).");
                        paused = true;
                        last_pause = Instant::now();
                    }
                }
                // A fatal consumer error (e.g. a static member fenced after a coordinator
                // failover) leaves a consumer that never delivers again: drain what is in
                // flight and exit with the error so the orchestrator restarts the instance.
                Err(error @ KafkaError::MessageConsumptionFatal(_)) => {
                    tracing::error!(%error, "Fatal Kafka consumer error; stopping.");
                    fatal = Some(error);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                dispatcher.on_tick(now);
                if now.duration_since(last_commit) >= config.pipeline.commit_interval {
                    last_commit = now;
                    if let Some(tpl) = dispatcher.commits(&topic)
                        && let Err(error) = consumer.commit(&tpl, CommitMode::Async)
                    {
                        tracing::warn!(%error, "Offset commit failed; it is retried with the next one.");
                    }
                }
                if now.duration_since(last_sweep) >= Duration::from_secs(1) {
                    last_sweep = now;
                    dispatcher.sweep(now);
                }
                // Backpressure: pause fetching above the bound so an outage builds lag in Kafka,
                // not memory; keep polling so the group membership stays alive. Re-applied
                // periodically to cover partitions assigned while paused.
                let over = dispatcher.over_bound();
                let under = dispatcher.under_resume_mark();
                if over && (!paused || now.duration_since(last_pause) >= Duration::from_secs(1)) {
                    if let Ok(assignment) = consumer.assignment()
                        && consumer.pause(&assignment).is_ok()
                    {
                        if !paused {
                            tracing::debug!(pending = dispatcher.pending(), "Pausing consumption (backpressure).");
                        }
                        paused = true;
                        last_pause = now;
                    }
                } else if paused
                    && under
                    && let Ok(assignment) = consumer.assignment()
                    && consumer.resume(&assignment).is_ok()
                {
                    tracing::debug!(pending = dispatcher.pending(), "Resuming consumption.");
                    paused = false;
                }
            }
        }
    }

    // Graceful shutdown: stop fetching (the loop above no longer polls), send open batches,
    // let in-flight requests finish within the bound, then commit what is done.
    tracing::info!(
        pending = dispatcher.pending(),
        "Draining in-flight requests."
    );
    dispatcher.draining = true;
    dispatcher.flush_all();
    dispatcher.tasks.close();
    let deadline = tokio::time::sleep(config.pipeline.shutdown_timeout);
    tokio::pin!(deadline);
    let wait = dispatcher.tasks.clone();
    let finished = wait.wait();
    tokio::pin!(finished);
    loop {
        tokio::select! {
            biased;
            Some(event) = events.recv() => dispatcher.on_event(event),
            () = &mut finished => break,
            () = &mut deadline => {
                tracing::warn!("Shutdown deadline reached; abandoning in-flight requests (they will be redelivered).");
                dispatcher.deliverer.abort.cancel();
                break;
            }
        }
    }
    while let Ok(event) = events.try_recv() {
        dispatcher.on_event(event);
    }
    if let Some(tpl) = dispatcher.commits(&topic) {
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => tracing::info!("Final offsets committed."),
            Err(error) => {
                tracing::warn!(%error, "Final commit failed; the uncommitted tail will be redelivered.")
            }
        }
    }
    dispatcher.deliverer.abort.cancel();
    fatal.map_or(Ok(()), Err)
}
