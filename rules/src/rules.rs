//! [`MarketingRules`]: dispatches inputs to the rule families and derives the profile afterwards.
//!
//! Every input runs in three steps: the topic's handler updates the facts and queues journey
//! events; the derived rules (tier, win-back timer, recent-refund flag) run on the new figures;
//! then the profile fields implied by the state are compared with those implied by the state
//! before, and only the difference is upserted, followed by list and channel reconciliation.
//! A duplicate therefore changes nothing and sends nothing.

use std::sync::Arc;

use schemas::{CustomerKey, KeyKind, ShopifyEnvelope};

use crate::aggregate::State;
use crate::checkout::{self, CHECKOUT_TIMER};
use crate::config::{ConfigErrors, FreshnessConfig, RulesConfig};
use crate::domain::{Ctx, Effect, RuleError, Rules, Timer};
use crate::email_index::{self, CHECKOUT_DUE, GUEST_HISTORY, GUEST_PROFILE};
use crate::emit::{Cx, KINDS, Tuning};
use crate::first_purchase::{self, FIRST_PURCHASE_TIMER};
use crate::lenient::{self, Coercions};
use crate::messages::{CHECKOUT_COMPLETED, DATA_REQUEST, EMAIL_CLAIM, REDACT};
use crate::refunds::{self, RECENT_REFUND_TIMER, REFUND_TIMER};
use crate::routing;
use crate::shopify::{self, parse};
use crate::tiers::TIER_TIMER;
use crate::winback::{self, WINBACK_TIMER};
use crate::{gdpr, ltv, orders, profile, profile_fields, tiers, two_way};

/// The marketing rules, configured.
#[derive(Debug, Clone)]
pub struct MarketingRules {
    cfg: RulesConfig,
    tuning: Tuning,
    /// Secondary fields coerced or ignored while parsing (shared by clones).
    coerced: Arc<lenient::Counters>,
}

impl MarketingRules {
    /// Builds the rules. Horizons that do not parse (a config that skipped validation) fall
    /// back to the defaults; use [`MarketingRules::try_new`] to refuse them instead.
    pub fn new(cfg: RulesConfig) -> Self {
        let defaults = FreshnessConfig::default();
        let mut horizons = [None; KINDS];
        for (slot, ((_, h), (_, d))) in horizons
            .iter_mut()
            .zip(cfg.freshness.entries().into_iter().zip(defaults.entries()))
        {
            *slot = h.millis().or_else(|_| d.millis()).unwrap_or(None);
        }
        let grace_ms = cfg
            .timing
            .out_of_order_grace
            .millis()
            .ok()
            .flatten()
            .unwrap_or(0);
        Self {
            cfg,
            tuning: Tuning { horizons, grace_ms },
            coerced: Arc::default(),
        }
    }

    /// Validates, then builds.
    pub fn try_new(cfg: RulesConfig) -> Result<Self, ConfigErrors> {
        cfg.validate()?;
        Ok(Self::new(cfg))
    }

    /// The configuration.
    pub fn config(&self) -> &RulesConfig {
        &self.cfg
    }

    /// How many secondary-field values were coerced or ignored so far (by every clone), for
    /// the engine's metrics; see README.md, "Lenient and strict fields".
    pub fn coercions(&self) -> Coercions {
        self.coerced.snapshot()
    }

    fn run<'a>(
        &'a self,
        key: &'a CustomerKey,
        state: &mut State,
        ctx: &Ctx,
        origin: (Vec<String>, String),
        input: Option<&'a ShopifyEnvelope>,
        handler: impl FnOnce(&mut Cx<'a>, &mut State) -> Result<(), RuleError>,
    ) -> Result<Vec<Effect>, RuleError> {
        let mut cx = Cx::new(&self.cfg, &self.tuning, key, *ctx, origin, input);
        let person = profile::is_person(key);
        let before_sum = ltv::summary(state);
        let before_id = profile::identity(&self.cfg, key, state);
        // An empty state has sent nothing yet: its first upsert carries every field.
        let before_fields = if person && *state != State::default() {
            profile_fields::fields(&self.cfg, key, state, &before_sum)
        } else {
            Default::default()
        };

        // Work on a copy so a failing handler leaves the state untouched.
        let mut next = state.clone();
        handler(&mut cx, &mut next)?;
        if cx.purge || !person {
            *state = next;
            return Ok(cx.finish(None, None, Vec::new()));
        }
        two_way::decide(&mut cx, &mut next);
        let after_sum = ltv::summary(&next);
        tiers::derive(&mut cx, &mut next, &after_sum);
        first_purchase::derive(&mut cx, &mut next);
        winback::derive(&mut cx, &mut next, &before_sum, &after_sum);
        refunds::derive_recent(&mut cx, &mut next);

        let after_id = profile::identity(&self.cfg, key, &next);
        let hold = email_index::holds(key, &next);
        let mut defer = false;
        let mut lists = Vec::new();
        let mut upsert = None;
        if after_id.is_some() {
            let after_fields = profile_fields::fields(&self.cfg, key, &next, &after_sum);
            // A person who could not be sent before gets the whole profile now.
            let base = if before_id.is_some() && !cx.full_profile {
                before_fields
            } else {
                Default::default()
            };
            let changed = profile_fields::diff(&base, &after_fields);
            if key.kind() == KeyKind::Email && !cx.full_profile {
                // A guest's profile waits until no claim can still be in flight.
                defer = !changed.is_empty();
            } else {
                upsert = profile::upsert(&cx, changed);
            }
            profile::reconcile_subscriptions(&cx, &mut next, &mut lists);
        }
        // So do an unclaimed guest's first commands (email_index::holds).
        defer |= hold && !cx.full_profile && !(cx.cmds.is_empty() && lists.is_empty());
        if defer {
            email_index::defer_profile(&mut cx);
        }
        let release = cx.full_profile;
        *state = next;
        let out = cx.finish(after_id, upsert, lists);
        Ok(if hold {
            email_index::hold(state, out, release)
        } else {
            out
        })
    }
}

impl Rules for MarketingRules {
    type State = State;

    fn on_event(
        &self,
        key: &CustomerKey,
        state: &mut State,
        input: &ShopifyEnvelope,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError> {
        lenient::clear();
        let out = self.on_input(key, state, input, ctx);
        self.coerced.record(&lenient::take());
        out
    }

    fn on_timer(
        &self,
        key: &CustomerKey,
        state: &mut State,
        timer: &Timer,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError> {
        let tag = format!("{}-{}", timer.timer_id, timer.due_ms);
        let sources = vec![format!("timer:{}:{}", timer.timer_id, timer.due_ms)];
        self.run(key, state, ctx, (sources, tag), None, |cx, st| {
            match timer.kind.as_str() {
                // On an email key a customer owns, the owner decides (once).
                CHECKOUT_TIMER if email_index::hand_due_timer(cx, st, timer) => {}
                CHECKOUT_TIMER => checkout::fire(cx, st, timer)?,
                WINBACK_TIMER => winback::fire(cx, st, timer),
                RECENT_REFUND_TIMER => refunds::expire(st, &timer.payload),
                REFUND_TIMER => refunds::fire(cx, st, timer),
                TIER_TIMER => tiers::fire(cx, st, timer),
                FIRST_PURCHASE_TIMER => first_purchase::fire(cx, st, timer),
                GUEST_PROFILE => cx.full_profile = true,
                _ => {}
            }
            Ok(())
        })
    }
}

impl MarketingRules {
    /// One input, by topic.
    fn on_input(
        &self,
        key: &CustomerKey,
        state: &mut State,
        input: &ShopifyEnvelope,
        ctx: &Ctx,
    ) -> Result<Vec<Effect>, RuleError> {
        let topic = input.topic.as_str();
        let body = input.body.as_slice();
        let sources = vec![input.delivery_id.clone()];
        let tag = input.delivery_id.clone();
        if !profile::is_person(key) {
            if key.kind() == KeyKind::Shop {
                return self.run(key, state, ctx, (sources, tag), Some(input), |cx, st| {
                    if topic == "shop/redact" {
                        *st = State::default();
                        cx.purge = true;
                    }
                    Ok(())
                });
            }
            return self.run(key, state, ctx, (sources, tag), Some(input), |cx, st| {
                routing::on_entity(cx, st, input)
            });
        }
        self.run(key, state, ctx, (sources, tag), Some(input), |cx, st| {
            if email_index::forward_if_owned(cx, st, input)? {
                return Ok(());
            }
            match topic {
                "orders/create"
                | "orders/updated"
                | "orders/paid"
                | "orders/cancelled"
                | "orders/fulfilled"
                | "orders/partially_fulfilled" => {
                    let o: shopify::Order = parse(topic, body)?;
                    orders::on_order(cx, st, topic, &o);
                }
                "orders/delete" => orders::on_delete(cx, st, &parse(topic, body)?),
                "refunds/create" => refunds::on_refund(cx, st, &parse(topic, body)?),
                "customers/create" | "customers/update" | "customers/enable"
                | "customers/disable" => {
                    profile::on_customer(cx, st, topic, &parse(topic, body)?);
                }
                "customers_email_marketing_consent/update" => {
                    profile::on_email_consent(cx, st, &parse(topic, body)?)
                }
                "customers_marketing_consent/update" => {
                    profile::on_sms_consent(cx, st, &parse(topic, body)?)
                }
                "customer.tags_added" => profile::on_tags(cx, st, true, &parse(topic, body)?),
                "customer.tags_removed" => profile::on_tags(cx, st, false, &parse(topic, body)?),
                "checkouts/create" | "checkouts/update" => {
                    checkout::on_checkout(cx, st, &parse(topic, body)?)
                }
                "checkouts/delete" => checkout::on_delete(cx, st, &parse(topic, body)?),
                "customers/redact" => gdpr::redact(cx, st, Some(&parse(topic, body)?)),
                "customers/data_request" => gdpr::data_request(cx, st, Some(&parse(topic, body)?)),
                CHECKOUT_COMPLETED => routing::on_completion(cx, st, &parse(topic, body)?),
                "customers/delete" => profile::on_delete(cx, st, &parse(topic, body)?),
                EMAIL_CLAIM => email_index::on_claim(cx, st, &parse(topic, body)?)?,
                GUEST_HISTORY => email_index::on_history(cx, st, parse(topic, body)?),
                CHECKOUT_DUE => email_index::on_due(cx, st, parse(topic, body)?)?,
                REDACT => gdpr::redact(cx, st, None),
                DATA_REQUEST => gdpr::data_request(cx, st, None),
                // Iterable system webhooks (two-way consent, rules/src/two_way.rs).
                t if t.starts_with(schemas::ITERABLE_TOPIC_PREFIX) => {
                    two_way::on_iterable(cx, st, t, body)?
                }
                // Carts carry no person, products are catalog data, everything else is not a
                // marketing signal: accepted and ignored.
                _ => {}
            }
            Ok(())
        })
    }
}
