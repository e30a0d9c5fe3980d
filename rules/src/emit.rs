//! The per-input context: collects commands, timers and forwards, applies freshness horizons.

use schemas::{
    Action, CustomerKey, DataFields, EventSource, IterableCommand, ShopifyEnvelope, UserRef,
};

use crate::config::RulesConfig;
use crate::domain::{Ctx, Effect, Timer};
use crate::format;

/// Journey-triggering kinds, each with its own freshness horizon (same order as the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CustomerCreated = 0,
    FirstPurchase,
    Purchase,
    TierUpgraded,
    Lapsed,
    Reactivated,
    CheckoutAbandoned,
    CartUpdated,
    OrderFulfilled,
    OrderRefunded,
    OrderCancelled,
}

/// Number of [`Kind`]s.
pub(crate) const KINDS: usize = 11;

/// Settings resolved once from the config: horizons per [`Kind`] and the timer grace.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) horizons: [Option<i64>; KINDS],
    /// Timers fire this long after their decision time (out-of-order tolerance).
    pub(crate) grace_ms: i64,
}

/// A command whose user is filled in at the end (from the state as it is after the input).
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) id: String,
    pub(crate) time_ms: i64,
    pub(crate) action: Action,
    /// Set for commands about the identity as it was *before* the input (email changes,
    /// deletions); `None` = the identity after the input.
    pub(crate) user: Option<UserRef>,
}

/// Everything one input (event or timer) produces.
pub(crate) struct Cx<'a> {
    pub(crate) cfg: &'a RulesConfig,
    tuning: &'a Tuning,
    pub(crate) key: &'a CustomerKey,
    pub(crate) ctx: Ctx,
    /// Delivery ids the commands derive from.
    pub(crate) sources: Vec<String>,
    /// What makes ids of per-input commands unique: the delivery id, or timer id and due time.
    pub(crate) tag: String,
    /// The input envelope (events only), for forwards.
    pub(crate) input: Option<&'a ShopifyEnvelope>,
    /// Commands that must precede everything (email changes).
    pub(crate) pre: Vec<Pending>,
    /// Purchases and journey events.
    pub(crate) cmds: Vec<Pending>,
    /// Timers, forwards, reports (after commands).
    pub(crate) tail: Vec<Effect>,
    /// Purge the key after everything else.
    pub(crate) purge: bool,
    /// Events that were due but too old to send: name and due time.
    pub(crate) suppressed: Vec<(String, i64)>,
    /// An email key's deferred profile write is due: send the whole profile now.
    pub(crate) full_profile: bool,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        cfg: &'a RulesConfig,
        tuning: &'a Tuning,
        key: &'a CustomerKey,
        ctx: Ctx,
        (sources, tag): (Vec<String>, String),
        input: Option<&'a ShopifyEnvelope>,
    ) -> Self {
        Self {
            cfg,
            tuning,
            key,
            ctx,
            sources,
            tag,
            input,
            pre: Vec::new(),
            cmds: Vec::new(),
            tail: Vec::new(),
            purge: false,
            suppressed: Vec::new(),
            full_profile: false,
        }
    }

    /// The shop domain of the key.
    pub(crate) fn shop(&self) -> &'a str {
        self.key.shop()
    }

    /// Whether a trigger due at `due_ms` may still start a journey: during a replay or
    /// backfill the wall clock is far ahead of the trigger and old triggers are dropped.
    pub(crate) fn fresh(&self, kind: Kind, due_ms: i64) -> bool {
        match self.tuning.horizons.get(kind as usize).copied().flatten() {
            None => true,
            Some(h) => self.ctx.wall_clock_ms.saturating_sub(due_ms) <= h,
        }
    }

    /// Queues a custom event if fresh; returns whether it was queued.
    pub(crate) fn event(
        &mut self,
        kind: Kind,
        name: &str,
        id: String,
        at_ms: i64,
        fields: DataFields,
    ) -> bool {
        if !self.fresh(kind, at_ms) {
            self.suppressed.push((name.to_owned(), at_ms));
            return false;
        }
        self.cmds.push(Pending {
            id,
            time_ms: at_ms,
            action: Action::TrackEvent {
                event_name: name.to_owned(),
                created_at_s: format::seconds(at_ms),
                data_fields: fields,
            },
            user: None,
        });
        true
    }

    /// Queues a command for the identity after this input.
    pub(crate) fn command(&mut self, id: String, time_ms: i64, action: Action) {
        self.cmds.push(Pending {
            id,
            time_ms,
            action,
            user: None,
        });
    }

    /// Arms (or re-arms) a timer for a decision at `decide_ms`; it fires `grace_ms` later so
    /// that late events with earlier business times are in the state by then.
    pub(crate) fn set_timer(
        &mut self,
        kind: &str,
        timer_id: String,
        decide_ms: i64,
        payload: serde_json::Value,
    ) {
        let due_ms = self.due_for(decide_ms);
        self.tail.push(Effect::SetTimer(Timer {
            kind: kind.to_owned(),
            timer_id,
            due_ms,
            payload,
        }));
    }

    /// When a timer for a decision at `decide_ms` is due (the out-of-order grace later).
    pub(crate) fn due_for(&self, decide_ms: i64) -> i64 {
        decide_ms.saturating_add(self.tuning.grace_ms)
    }

    /// Cancels a timer.
    pub(crate) fn cancel_timer(&mut self, timer_id: String) {
        self.tail.push(Effect::CancelTimer { timer_id });
    }

    /// Sends an internal `tillstream/...` message to another key. Its delivery id is derived
    /// from the source delivery id and the purpose, so replays produce the same message.
    pub(crate) fn send(
        &mut self,
        to: CustomerKey,
        topic: &str,
        purpose: &str,
        body: &serde_json::Value,
    ) {
        let (event_id, triggered, received, source) = match self.input {
            Some(i) => (
                i.event_id.clone(),
                i.triggered_at_ms,
                i.received_at_ms,
                i.source,
            ),
            None => (
                None,
                Some(self.ctx.event_time_ms),
                self.ctx.event_time_ms,
                EventSource::Webhook,
            ),
        };
        let envelope = ShopifyEnvelope {
            delivery_id: format!("{}:{purpose}", self.tag),
            event_id,
            topic: topic.to_owned(),
            shop_domain: self.shop().to_owned(),
            api_version: None,
            // Internal messages carry the source's event time so the receiver orders them the same.
            triggered_at_ms: triggered.or(Some(self.ctx.event_time_ms)),
            received_at_ms: received,
            routing_key: to.as_str().to_owned(),
            source,
            webhook_name: None,
            body: body.to_string().into_bytes(),
        };
        self.tail.push(Effect::Forward {
            to,
            envelope: Box::new(envelope),
        });
    }

    /// Forwards the input envelope unchanged to another key.
    pub(crate) fn forward_input(&mut self, to: CustomerKey) {
        if let Some(input) = self.input {
            self.tail.push(Effect::Forward {
                to,
                envelope: Box::new(input.clone()),
            });
        }
    }

    /// Builds the final command list: `pre`, the profile upsert, the rest; commands without a
    /// usable identity are dropped (e.g. guests in a userID-based project).
    pub(crate) fn finish(
        self,
        identity: Option<UserRef>,
        upsert: Option<Pending>,
        lists: Vec<Pending>,
    ) -> Vec<Effect> {
        let mut out = Vec::with_capacity(self.pre.len() + self.cmds.len() + self.tail.len() + 2);
        let shop = self.key.shop().to_owned();
        let key = self.key.as_str().to_owned();
        let mut push = |p: Pending| {
            let user = match p.user.or_else(|| identity.clone()) {
                Some(u) => u,
                None => return,
            };
            out.push(Effect::Command(IterableCommand {
                command_id: p.id,
                shop_domain: shop.clone(),
                customer_key: key.clone(),
                user,
                event_time_ms: p.time_ms,
                source_ids: self.sources.clone(),
                action: p.action,
            }));
        };
        self.pre.into_iter().for_each(&mut push);
        upsert.into_iter().for_each(&mut push);
        self.cmds.into_iter().for_each(&mut push);
        lists.into_iter().for_each(&mut push);
        out.extend(self.tail);
        out.extend(
            self.suppressed
                .into_iter()
                .map(|(event, due_ms)| Effect::Suppressed { event, due_ms }),
        );
        if self.purge {
            out.push(Effect::Purge);
        }
        out
    }
}
