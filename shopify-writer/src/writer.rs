//! The consume → mutate → commit loop: one command at a time, offset committed only after success or dead letter.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use publisher::dlq::headers;
use publisher::retry::Backoff;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::Secret;
use schemas::ShopifyCommand;
use tokio_util::sync::CancellationToken;

use crate::graphql::{self, Outcome, Throttle};
use crate::lag::LagContext;

/// The writer's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// `tillstream_shopify_writer_commands_total{channel,outcome}`: applied, dead_lettered.
    pub commands: IntCounterVec,
    /// `tillstream_shopify_writer_retries_total{reason}`: throttled, transient.
    pub retries: IntCounterVec,
    /// `tillstream_shopify_writer_dead_letters_total{kind}`.
    pub dead_letters: IntCounterVec,
    /// `tillstream_shopify_writer_throttle_waits_total`: waits before a request the bucket could not pay for.
    pub throttle_waits: IntCounter,
    /// `tillstream_shopify_writer_requests_total{channel,status}`: every mutation sent, by the
    /// HTTP status it got (`error` when none: network, timeout).
    pub requests: IntCounterVec,
    /// `tillstream_shopify_writer_consumer_lag{partition}`: commands not yet applied or
    /// dead-lettered (high watermark minus committed offset, from librdkafka's statistics).
    pub consumer_lag: IntGaugeVec,
}

impl Metrics {
    /// Registers on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let throttle_waits = IntCounter::new(
            "tillstream_shopify_writer_throttle_waits_total",
            "Requests delayed because the shop's cost bucket could not pay for them.",
        )?;
        registry.register(Box::new(throttle_waits.clone()))?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "tillstream_shopify_writer_consumer_lag",
                "Shopify commands not yet applied or dead-lettered, by partition.",
            ),
            &["partition"],
        )?;
        registry.register(Box::new(consumer_lag.clone()))?;
        Ok(Self {
            commands: vec(
                "tillstream_shopify_writer_commands_total",
                "Consent commands finished, by channel and outcome (applied, dead_lettered).",
                &["channel", "outcome"],
            )?,
            retries: vec(
                "tillstream_shopify_writer_retries_total",
                "Attempts that will be retried, by reason (throttled, transient).",
                &["reason"],
            )?,
            dead_letters: vec(
                "tillstream_shopify_writer_dead_letters_total",
                "Commands dead-lettered, by kind.",
                &["kind"],
            )?,
            throttle_waits,
            requests: vec(
                "tillstream_shopify_writer_requests_total",
                "Consent mutations sent to Shopify, by channel and HTTP status (error: none came back).",
                &["channel", "status"],
            )?,
            consumer_lag,
        })
    }
}

/// Shutdown interrupted a command: its offset is not committed, it is redone after a restart.
#[derive(Debug)]
pub struct Aborted;

/// Everything the loop needs.
pub struct Writer {
    pub(crate) http: reqwest::Client,
    pub(crate) tokens: BTreeMap<String, Secret>,
    pub(crate) urls: BTreeMap<String, String>,
    pub(crate) backoff: Backoff,
    pub(crate) throttle: Throttle,
    pub(crate) producer: FutureProducer,
    pub(crate) source_topic: String,
    pub(crate) dlq_topic: String,
    pub(crate) metrics: Metrics,
}

impl Writer {
    /// Reads until `shutdown`; each record is applied or dead-lettered, then its offset committed.
    pub async fn run(
        &mut self,
        consumer: &StreamConsumer<LagContext>,
        shutdown: &CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                m = consumer.recv() => m,
                () = shutdown.cancelled() => return,
            };
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error; continuing.");
                    continue;
                }
            };
            if self.handle(&message, shutdown).await.is_err() {
                return;
            }
            // Committed only now: a crash before this line redoes the command (setting the
            // same consent again is harmless), never skips it.
            if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
                tracing::warn!(%error, "Offset commit failed; the command may be redone after a restart.");
            }
        }
    }

    async fn handle(
        &mut self,
        m: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Result<(), Aborted> {
        let payload = m.payload().unwrap_or_default();
        let cmd = match ShopifyCommand::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .dead_letter(m, None, "undecodable", &e.to_string(), None, shutdown)
                    .await;
            }
        };
        let shop = cmd.shop_domain.to_ascii_lowercase();
        let (Some(token), Some(url)) = (
            self.tokens.get(&shop).cloned(),
            self.urls.get(&shop).cloned(),
        ) else {
            let reason = format!("no access token configured for {shop}");
            return self
                .dead_letter(m, Some(&cmd), "unknown_shop", &reason, None, shutdown)
                .await;
        };
        let mut attempt = 0u32;
        loop {
            let wait = self.throttle.wait(&shop);
            if !wait.is_zero() {
                self.metrics.throttle_waits.inc();
                sleep(wait, shutdown).await?;
            }
            let (outcome, status) =
                graphql::send(&self.http, &url, &token, &cmd, &mut self.throttle).await;
            self.metrics
                .requests
                .with_label_values(&[cmd.channel.name(), status.as_str()])
                .inc();
            match outcome {
                Outcome::Applied => {
                    self.metrics
                        .commands
                        .with_label_values(&[cmd.channel.name(), "applied"])
                        .inc();
                    tracing::info!(command_id = %cmd.command_id, shop = %shop, channel = cmd.channel.name(), state = cmd.marketing_state.graphql(), "Consent written to Shopify.");
                    return Ok(());
                }
                Outcome::Rejected { kind, reason } => {
                    let body = graphql::request_body(&cmd).to_string();
                    return self
                        .dead_letter(
                            m,
                            Some(&cmd),
                            kind,
                            &reason,
                            Some(body.as_bytes()),
                            shutdown,
                        )
                        .await;
                }
                Outcome::Retry { reason, wait } => {
                    let label = if reason == "THROTTLED" {
                        "throttled"
                    } else {
                        "transient"
                    };
                    self.metrics.retries.with_label_values(&[label]).inc();
                    let delay = wait.unwrap_or_else(|| self.backoff.delay(attempt, None));
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(command_id = %cmd.command_id, shop = %shop, attempt, %reason, delay = ?delay, "Shopify write will be retried.");
                    sleep(delay, shutdown).await?;
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        cmd: Option<&ShopifyCommand>,
        kind: &str,
        reason: &str,
        request: Option<&[u8]>,
        shutdown: &CancellationToken,
    ) -> Result<(), Aborted> {
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let failed_at = runtime::now_ms().to_string();
        let fields: [(&str, Option<&[u8]>); 8] = [
            (headers::REASON, Some(reason.as_bytes())),
            (headers::REASON_KIND, Some(kind.as_bytes())),
            (headers::SOURCE_TOPIC, Some(self.source_topic.as_bytes())),
            (headers::SOURCE_PARTITION, Some(partition.as_bytes())),
            (headers::SOURCE_OFFSET, Some(offset.as_bytes())),
            (headers::FAILED_AT, Some(failed_at.as_bytes())),
            (headers::COMMAND_ID, cmd.map(|c| c.command_id.as_bytes())),
            (headers::REQUEST, request),
        ];
        let mut attempt = 0u32;
        loop {
            let mut h = OwnedHeaders::new();
            for (key, value) in fields {
                if value.is_some() {
                    h = h.insert(Header { key, value });
                }
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dlq_topic)
                .payload(m.payload().unwrap_or_default())
                .headers(h);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            let sent = tokio::select! {
                r = self.producer.send(record, Duration::from_secs(30)) => r,
                () = shutdown.cancelled() => return Err(Aborted),
            };
            match sent {
                Ok(_) => {
                    self.metrics.dead_letters.with_label_values(&[kind]).inc();
                    if let Some(c) = cmd {
                        self.metrics
                            .commands
                            .with_label_values(&[c.channel.name(), "dead_lettered"])
                            .inc();
                    }
                    tracing::warn!(kind, %reason, partition = m.partition(), offset = m.offset(), "Shopify command dead-lettered.");
                    return Ok(());
                }
                Err((error, _)) => {
                    attempt = attempt.saturating_add(1);
                    tracing::error!(%error, attempt, "Cannot write to the dead-letter topic; retrying.");
                    sleep(self.backoff.delay(attempt, None), shutdown).await?;
                }
            }
        }
    }
}

async fn sleep(d: Duration, shutdown: &CancellationToken) -> Result<(), Aborted> {
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = shutdown.cancelled() => Err(Aborted),
    }
}
