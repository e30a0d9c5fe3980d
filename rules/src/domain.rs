//! The boundary between the engine and the rules: what rules see and what they may ask for.
//!
//! Rules are pure: `(state, input, ctx) -> (state', effects)`. They never touch Kafka, clocks or
//! I/O; the engine supplies time through [`Ctx`] and carries out the [`Effect`]s inside the same
//! Kafka transaction as the input's offset. That is what makes replays deterministic and crashes
//! harmless: the same log and the same rules give the same effects, ids included.

use schemas::{CustomerKey, IterableCommand, ShopifyCommand, ShopifyEnvelope};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Time as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The partition's "now": its stream time (highest event time seen) while the consumer
    /// lags, and the later of stream time and the wall clock once it has caught up. Timers fire
    /// when this passes their due time. Unix milliseconds.
    pub now_ms: i64,
    /// Event time of the input being processed (for timers: their due time). Unix ms.
    pub event_time_ms: i64,
    /// The wall clock at processing time, for freshness horizons only ("is this trigger too old
    /// to send as a campaign?"). Never use it for state: it is not replayed. Unix ms.
    pub wall_clock_ms: i64,
}

/// A durable timer as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Rule-defined kind, e.g. `abandoned_checkout`.
    pub kind: String,
    /// Unique within the key; setting a timer with an existing id replaces it.
    pub timer_id: String,
    /// Due instant in event time, Unix ms.
    pub due_ms: i64,
    /// Rule-defined payload.
    pub payload: serde_json::Value,
}

/// What the rules ask the engine to do, in order, atomically with the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a command for the publisher.
    Command(IterableCommand),
    /// Write a consent command for the Shopify writer (two-way consent).
    ShopifyCommand(ShopifyCommand),
    /// Arm (or re-arm, by `timer_id`) a timer on this key.
    SetTimer(Timer),
    /// Cancel a timer on this key by id (no-op if absent).
    CancelTimer {
        /// The timer's id.
        timer_id: String,
    },
    /// Send a message to another key's state through the repartition topic. The envelope's
    /// `routing_key` is ignored; `to` decides. Use a `tillstream/...` topic name and a JSON
    /// body for internal messages (links such as "order 7 belongs to customer 5"), or forward
    /// the original Shopify envelope as is.
    Forward {
        /// The key that must receive the message.
        to: CustomerKey,
        /// The message.
        envelope: Box<ShopifyEnvelope>,
    },
    /// Publish what this key's state holds (answer to `customers/data_request`).
    DataReport(serde_json::Value),
    /// A journey event that was due but not sent: older than its freshness horizon (a replay
    /// or backfill of old history). Nothing to do; the engine's decision trail shows it.
    Suppressed {
        /// The event name.
        event: String,
        /// When it was due (Unix ms).
        due_ms: i64,
    },
    /// Purge this key: the engine writes a changelog tombstone, drops its timers and dedup
    /// window, and starts from `Default` if the key is seen again (GDPR redaction).
    ///
    /// Returned on the shop key `{shop}/s/-` (the answer to `shop/redact`) it means "purge the
    /// whole shop": the rules cannot enumerate keys, so the engine purges every key of that
    /// shop on every partition.
    Purge,
}

/// Why a rule could not process an input; the engine dead-letters the input with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The body is not the JSON the topic promises (missing id, wrong types, not JSON).
    #[error("unparseable {topic} body: {message}")]
    Unparseable {
        /// The Shopify topic.
        topic: String,
        /// What was wrong.
        message: String,
    },
    /// The input is well-formed but the rules cannot act on it.
    #[error("rule {rule} failed: {message}")]
    Failed {
        /// The rule's name.
        rule: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// A set of rules over a per-key aggregate. The engine is generic over it, so it is proven with
/// a tiny rule set and runs the marketing rules unchanged.
pub trait Rules: Send + Sync + 'static {
    /// The per-key aggregate; persisted as JSON inside the changelog record.
    type State: Default
        + Clone
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + std::fmt::Debug
        + 'static;

    /// Applies one input (a raw event or a forwarded message) to the key's state. On an
    /// error `state` must be as it was before the call: the engine lends the stored value
    /// itself, not a copy, and keeps it.
    fn on_event(
        &self,
        key: &CustomerKey,
        state: &mut Self::State,
        input: &ShopifyEnvelope,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError>;

    /// Fires a due timer. The engine has already removed it from the key's timers. On an
    /// error `state` must be as it was before the call, as for [`Rules::on_event`].
    fn on_timer(
        &self,
        key: &CustomerKey,
        state: &mut Self::State,
        timer: &Timer,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError>;
}
