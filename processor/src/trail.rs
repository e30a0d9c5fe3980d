//! The decision trail: one record per input or timer saying what the rules decided and why.
//!
//! An operator's first question about a customer is "why did (or didn't) they get that email?".
//! The state answers what is true now; the trail answers how it came to be: for every input the
//! engine handled for a key (a webhook, a forwarded fact, a fired timer) one JSON record with the
//! input (topic, delivery id, event time), the outcome (applied, duplicate, erased, dead-lettered
//! with the reason) and what the rules did (commands with their ids, timers armed and cancelled,
//! forwards, journey events suppressed as too old). It is written to the decisions topic, keyed
//! and partitioned like the state, **in the same transaction** as the state and the commands,
//! so the trail shows exactly the decisions that took effect (an aborted attempt leaves none).
//! `tillstream explain <key>` reads one key's records back and adds what the publisher did with
//! each command. The topic keeps `transient_retention` (7 days), like the commands.

use rules::Effect;
use schemas::Action;
use serde::{Deserialize, Serialize};

/// What the engine did with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rules ran; see the effects.
    Applied,
    /// Dropped: its delivery id or content was seen before (dedup window).
    Duplicate,
    /// Dropped: its subject was erased (GDPR) before its event time.
    Erased,
    /// Sent to the dead-letter topic; see `reason`.
    DeadLetter,
}

/// The input a decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// A record from the raw or repartition topic.
    Event {
        /// Shopify topic, or `tillstream/...` for internal messages.
        topic: String,
        /// Delivery id (`X-Shopify-Webhook-Id`, or derived for internal messages).
        delivery_id: String,
        /// Event time (Unix ms).
        event_time_ms: i64,
    },
    /// A timer that came due.
    Timer {
        /// The rule's timer kind.
        timer_kind: String,
        /// Its id.
        timer_id: String,
        /// Due time (Unix ms).
        due_ms: i64,
    },
}

/// A command the rules wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRef {
    /// The command id (Iterable's event or purchase id).
    pub id: String,
    /// `trackEvent:first_purchase`, `upsertUser`, ...
    pub action: String,
}

/// A timer the rules armed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRef {
    /// The rule's timer kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// When it is due (Unix ms).
    pub due_ms: i64,
}

/// A message to another key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRef {
    /// The receiving key.
    pub to: String,
    /// The message's topic.
    pub topic: String,
}

/// A journey event that was due but not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressedRef {
    /// The event name.
    pub event: String,
    /// When it was due (Unix ms): older than its freshness horizon when decided.
    pub due_ms: i64,
}

/// One decision: the record written to the decisions topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The key (`{shop}/{kind}/{id}`).
    pub key: String,
    /// Wall clock when it was decided (Unix ms).
    pub decided_at_ms: i64,
    /// The input.
    pub input: Input,
    /// The outcome.
    pub outcome: Outcome,
    /// Why it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Commands written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandRef>,
    /// Timers armed (or moved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers_set: Vec<TimerRef>,
    /// Timers cancelled, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers_cancelled: Vec<String>,
    /// Messages to other keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<ForwardRef>,
    /// Journey events suppressed as too old.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<SuppressedRef>,
    /// The key's state was purged (GDPR).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purged: bool,
}

impl Decision {
    /// A decision with no effects (yet).
    pub fn new(key: &str, decided_at_ms: i64, input: Input, outcome: Outcome) -> Self {
        Self {
            key: key.to_owned(),
            decided_at_ms,
            input,
            outcome,
            reason: None,
            commands: Vec::new(),
            timers_set: Vec::new(),
            timers_cancelled: Vec::new(),
            forwards: Vec::new(),
            suppressed: Vec::new(),
            purged: false,
        }
    }

    /// With the dead-letter reason.
    #[must_use]
    pub fn because(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// With what the rules' effects did (read before the engine consumes them).
    #[must_use]
    pub fn with_effects(mut self, effects: &[Effect]) -> Self {
        for e in effects {
            match e {
                Effect::Command(c) => self.commands.push(CommandRef {
                    id: c.command_id.clone(),
                    action: match &c.action {
                        Action::TrackEvent { event_name, .. } => format!("trackEvent:{event_name}"),
                        other => other.kind().to_owned(),
                    },
                }),
                Effect::SetTimer(t) => self.timers_set.push(TimerRef {
                    kind: t.kind.clone(),
                    id: t.timer_id.clone(),
                    due_ms: t.due_ms,
                }),
                Effect::CancelTimer { timer_id } => self.timers_cancelled.push(timer_id.clone()),
                Effect::Forward { to, envelope } => self.forwards.push(ForwardRef {
                    to: to.as_str().to_owned(),
                    topic: envelope.topic.clone(),
                }),
                Effect::Suppressed { event, due_ms } => self.suppressed.push(SuppressedRef {
                    event: event.clone(),
                    due_ms: *due_ms,
                }),
                Effect::Purge => self.purged = true,
                Effect::DataReport(_) => {}
            }
        }
        self
    }

    /// The record's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_decision_round_trips_and_names_its_effects() {
        let d = Decision::new(
            "s.myshopify.com/c/1",
            5,
            Input::Timer {
                timer_kind: "refund".into(),
                timer_id: "refund:7:8".into(),
                due_ms: 4,
            },
            Outcome::Applied,
        )
        .with_effects(&[
            Effect::CancelTimer {
                timer_id: "winback".into(),
            },
            Effect::Suppressed {
                event: "order_refunded".into(),
                due_ms: 4,
            },
        ]);
        let back: Decision = serde_json::from_slice(&d.to_bytes()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.timers_cancelled, ["winback"]);
        assert_eq!(back.suppressed[0].event, "order_refunded");
        let text = String::from_utf8(d.to_bytes()).unwrap();
        assert!(text.contains("\"kind\":\"timer\""), "{text}");
        assert!(
            !text.contains("commands"),
            "empty lists are left out: {text}"
        );
    }
}
