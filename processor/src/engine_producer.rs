//! An engine thread's transactional producer, and what its client reports once it is replaced.

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};

use super::{EngineError, KAFKA_TIMEOUT};

/// An engine thread's producer.
pub(super) type TxnProducer = ThreadedProducer<TxnProducerContext>;

/// Creates a transactional producer and initialises its transactions: an older producer with
/// the same transactional id is fenced, and its open transaction completed or aborted.
pub(super) fn transactional_producer(
    cfg: &rdkafka::ClientConfig,
) -> Result<TxnProducer, EngineError> {
    let producer: TxnProducer = cfg.create_with_context(TxnProducerContext::default())?;
    producer
        .init_transactions(KAFKA_TIMEOUT)
        .map_err(|e| EngineError::Fatal(format!("init_transactions: {e}")))?;
    Ok(producer)
}

/// The producer's client context. A producer the engine replaced (its commit was stuck) is
/// fenced by its successor on purpose, and its client then reports fatal "fenced" errors as it
/// winds down: those are logged at debug level, so an operator's error log holds only what
/// needs acting on (the replacement itself is a warning and a `stuck` transaction count).
#[derive(Debug, Default)]
pub(super) struct TxnProducerContext {
    replaced: AtomicBool,
}

impl TxnProducerContext {
    /// Marks the producer as replaced, before its successor fences it.
    pub(super) fn replaced(&self) {
        self.replaced.store(true, Ordering::Release);
    }

    fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }
}

impl ClientContext for TxnProducerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        use RDKafkaLogLevel as L;
        if self.is_replaced() {
            tracing::debug!(target: "librdkafka", ?level, "librdkafka (replaced producer): {fac} {log_message}");
            return;
        }
        // rdkafka's own mapping of levels, in `tracing` (rdkafka logs through `log`).
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            }
            L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}");
            }
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.is_replaced() {
            tracing::debug!(%error, reason, "librdkafka (replaced producer)");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ProducerContext for TxnProducerContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;
    use runtime::testing::event_levels;
    use tracing::Level;

    use super::*;

    #[test]
    fn a_replaced_producers_fencing_is_not_logged_as_an_error() {
        let seen = event_levels(|| {
            let ctx = TxnProducerContext::default();
            let fenced = || KafkaError::Global(RDKafkaErrorCode::Fenced);
            ctx.log(
                RDKafkaLogLevel::Error,
                "FATAL",
                "fenced by a newer instance",
            );
            ctx.error(fenced(), "fenced by a newer instance");
            ctx.replaced();
            ctx.log(
                RDKafkaLogLevel::Error,
                "FATAL",
                "fenced by a newer instance",
            );
            ctx.error(fenced(), "fenced by a newer instance");
            ctx.log(
                RDKafkaLogLevel::Warning,
                "GETPID",
                "concurrent transactions",
            );
        });
        assert_eq!(
            seen,
            [
                Level::ERROR,
                Level::ERROR,
                Level::DEBUG,
                Level::DEBUG,
                Level::DEBUG
            ],
            "a live producer's errors stay errors; a replaced one's are debug"
        );
    }
}
