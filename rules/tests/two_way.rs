//! Two-way consent: Iterable events, the source-of-truth policy, echoes, and a property test over interleavings.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use rules::RulesConfig;
use rules::config::SourceOfTruth;
use schemas::{Action, ConsentChannel, MarketingState, ShopifyEnvelope};
use serde_json::{Value, json};

const CUSTOMER: u64 = 7001;
const EMAIL: &str = "ada@example.com";
const EMAIL_CHANNEL: i64 = 11;
const SMS_CHANNEL: i64 = 12;
const KEY: &str = "tillstream-demo.myshopify.com/c/7001";

fn cfg(email: SourceOfTruth) -> RulesConfig {
    let mut c = RulesConfig::default();
    c.consent.email_channel_id = Some(EMAIL_CHANNEL);
    c.consent.sms_channel_id = Some(SMS_CHANNEL);
    c.consent.source_of_truth.email = email;
    c
}

fn iterable(event: &str, data: Value, delivery: &str, at: i64) -> ShopifyEnvelope {
    let body = json!({"email": EMAIL, "userId": CUSTOMER.to_string(), "eventName": event, "dataFields": data});
    envelope(&format!("iterable/{event}"), &body, delivery, at)
}

fn start(cfg: RulesConfig) -> Harness {
    let mut h = Harness::new(cfg);
    h.deliver(envelope(
        "customers/create",
        &customer_json(CUSTOMER, EMAIL, T0, T0, false),
        "create",
        T0,
    ));
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(CUSTOMER, EMAIL, "subscribed", T0),
        "consent-0",
        T0,
    ));
    h
}

/// The email channel in the last channel update sent to Iterable: unsubscribed?
fn iterable_email_unsubscribed(h: &Harness) -> Option<bool> {
    h.commands.iter().rev().find_map(|c| match &c.action {
        Action::UpdateSubscriptions(u) => u
            .unsubscribed_channel_ids
            .as_ref()
            .map(|ids| ids.contains(&EMAIL_CHANNEL)),
        _ => None,
    })
}

#[test]
fn an_unsubscribe_in_iterable_reaches_shopify_once_and_survives_echo_and_updates() {
    let mut h = start(cfg(SourceOfTruth::Latest));
    assert_eq!(iterable_email_unsubscribed(&h), Some(false));
    let click = T0 + HOUR;
    h.deliver(iterable(
        "hostedUnsubscribeClick",
        json!({"createdAt": "x", "unsubSource": "EmailLink", "channelIds": [EMAIL_CHANNEL]}),
        "it-1",
        click,
    ));
    assert_eq!(h.shopify_commands.len(), 1);
    let w = &h.shopify_commands[0];
    assert_eq!(
        (
            w.channel,
            w.marketing_state,
            w.customer_id,
            w.consent_updated_at_ms
        ),
        (
            ConsentChannel::Email,
            MarketingState::Unsubscribed,
            7001,
            click
        )
    );
    // Iterable already holds the unsubscribe (the user made it there): nothing to send back.
    assert_eq!(iterable_email_unsubscribed(&h), Some(false));
    assert_eq!(h.profile("c/7001")["shopify_email_consent"], "unsubscribed");

    // Shopify's echo of our write: recognised, nothing more is written either way.
    let (cmds, writes) = (h.commands.len(), h.shopify_commands.len());
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(CUSTOMER, EMAIL, "unsubscribed", click),
        "echo-1",
        click + MIN,
    ));
    // A later customers/update without consent fields changes nothing.
    h.deliver(envelope(
        "customers/update",
        &customer_json(CUSTOMER, EMAIL, T0, click + 2 * MIN, false),
        "update-1",
        click + 2 * MIN,
    ));
    // Iterable's own echo of the channel update we sent.
    h.deliver(iterable(
        "emailUnSubscribe",
        json!({"unsubSource": "API", "channelIds": [EMAIL_CHANNEL]}),
        "it-echo",
        click + 3 * MIN,
    ));
    assert_eq!(h.shopify_commands.len(), writes);
    assert!(
        h.commands[cmds..]
            .iter()
            .all(|c| !matches!(c.action, Action::UpdateSubscriptions(_))),
        "{:?}",
        &h.commands[cmds..]
    );
    assert_eq!(h.profile("c/7001")["shopify_email_consent"], "unsubscribed");
}

#[test]
fn policy_shopify_overwrites_an_iterable_change_back_in_iterable() {
    let mut h = start(cfg(SourceOfTruth::Shopify));
    let before = h.commands.len();
    h.deliver(iterable(
        "emailUnSubscribe",
        json!({"channelIds": [EMAIL_CHANNEL]}),
        "it-1",
        T0 + HOUR,
    ));
    assert!(h.shopify_commands.is_empty(), "Shopify is never written");
    let resent = h.commands[before..]
        .iter()
        .filter(|c| matches!(c.action, Action::UpdateSubscriptions(_)))
        .count();
    assert_eq!(resent, 1, "Iterable is told again");
    assert_eq!(
        iterable_email_unsubscribed(&h),
        Some(false),
        "re-subscribed in Iterable"
    );
}

#[test]
fn policy_iterable_overwrites_a_shopify_change_back_in_shopify() {
    let mut h = start(cfg(SourceOfTruth::Iterable));
    h.deliver(iterable("emailUnSubscribe", json!({}), "it-1", T0 + HOUR));
    assert_eq!(h.shopify_commands.len(), 1);
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(CUSTOMER, EMAIL, "unsubscribed", T0 + HOUR),
        "echo",
        T0 + HOUR,
    ));
    // The merchant re-subscribes in Shopify later: Iterable's word stands, written back.
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(CUSTOMER, EMAIL, "subscribed", T0 + 2 * HOUR),
        "consent-2",
        T0 + 2 * HOUR,
    ));
    assert_eq!(h.shopify_commands.len(), 2);
    assert_eq!(
        h.shopify_commands[1].marketing_state,
        MarketingState::Unsubscribed
    );
}

#[test]
fn stop_complaint_and_bounces() {
    let mut h = start(cfg(SourceOfTruth::Latest));
    h.deliver(envelope(
        "customers_marketing_consent/update",
        &sms_consent_json(CUSTOMER, "subscribed", T0),
        "sms-0",
        T0,
    ));
    h.deliver(iterable(
        "smsReceived",
        json!({"smsMessage": "hello"}),
        "sms-a",
        T0 + MIN,
    ));
    assert!(h.shopify_commands.is_empty(), "not a keyword");
    h.deliver(iterable(
        "smsReceived",
        json!({"smsMessage": " stop please"}),
        "sms-b",
        T0 + 2 * MIN,
    ));
    assert_eq!(h.shopify_commands.len(), 1);
    assert_eq!(h.shopify_commands[0].channel, ConsentChannel::Sms);
    assert_eq!(
        h.shopify_commands[0].marketing_state,
        MarketingState::Unsubscribed
    );

    // A soft bounce never unsubscribes; a hard one only when configured (default: not).
    h.deliver(iterable(
        "emailBounce",
        json!({"bounceType": "hard"}),
        "b-1",
        T0 + 3 * MIN,
    ));
    assert_eq!(h.shopify_commands.len(), 1);
    h.deliver(iterable("emailComplaint", json!({}), "c-1", T0 + 4 * MIN));
    assert_eq!(
        h.shopify_commands.len(),
        2,
        "complaints unsubscribe by default"
    );
    assert_eq!(h.shopify_commands[1].channel, ConsentChannel::Email);

    let mut c = cfg(SourceOfTruth::Latest);
    c.consent.iterable_events.complaint_unsubscribes = false;
    c.consent.iterable_events.hard_bounce_unsubscribes = true;
    let mut h = start(c);
    h.deliver(iterable("emailComplaint", json!({}), "c-1", T0 + MIN));
    h.deliver(iterable(
        "emailBounce",
        json!({"bounceType": "soft"}),
        "b-0",
        T0 + 2 * MIN,
    ));
    assert!(h.shopify_commands.is_empty());
    h.deliver(iterable(
        "emailBounce",
        json!({"bounceType": "Hard"}),
        "b-1",
        T0 + 3 * MIN,
    ));
    assert_eq!(h.shopify_commands.len(), 1);
}

// ---- the property: interleavings of changes on both sides ----------------------------

/// One step of the world.
#[derive(Debug, Clone)]
enum Step {
    /// The user changes email consent in Shopify (admin, storefront).
    ShopifyUser(bool),
    /// The user changes it in Iterable (unsubscribe link, preference centre).
    IterableUser(bool),
    /// One webhook in flight reaches the processor (any of them: delivery order is free).
    Deliver(prop::sample::Index),
    /// The next write the processor decided for one side (Shopify or Iterable) reaches it.
    Apply(prop::sample::Index),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => any::<bool>().prop_map(Step::ShopifyUser),
        1 => any::<bool>().prop_map(Step::IterableUser),
        3 => any::<prop::sample::Index>().prop_map(Step::Deliver),
        3 => any::<prop::sample::Index>().prop_map(Step::Apply),
    ]
}

/// A write in flight to a platform.
enum Write {
    Shopify(bool, i64),
    Iterable(bool),
}

struct World {
    h: Harness,
    shopify: (bool, i64),
    iterable: bool,
    inflight: Vec<ShopifyEnvelope>,
    writes: Vec<Write>,
    seen_commands: usize,
    seen_shopify: usize,
    now: i64,
    seq: u32,
    shopify_writes: usize,
    iterable_writes: usize,
}

impl World {
    fn new(policy: SourceOfTruth) -> Self {
        let h = start(cfg(policy));
        let mut w = Self {
            h,
            shopify: (true, T0),
            iterable: true,
            inflight: vec![],
            writes: vec![],
            seen_commands: 0,
            seen_shopify: 0,
            now: T0 + MIN,
            seq: 0,
            shopify_writes: 0,
            iterable_writes: 0,
        };
        w.collect();
        w.writes.clear(); // the initial subscription is already in Iterable
        w
    }

    fn id(&mut self, p: &str) -> String {
        self.seq += 1;
        format!("{p}-{}", self.seq)
    }

    fn shopify_webhook(&mut self) {
        let (sub, at) = self.shopify;
        let state = if sub { "subscribed" } else { "unsubscribed" };
        let id = self.id("shop");
        self.inflight.push(envelope(
            "customers_email_marketing_consent/update",
            &email_consent_json(CUSTOMER, EMAIL, state, at),
            &id,
            self.now,
        ));
    }

    fn iterable_webhook(&mut self, source: &str) {
        let event = if self.iterable {
            "emailSubscribe"
        } else {
            "emailUnSubscribe"
        };
        let id = self.id("it");
        let mut e = iterable(
            event,
            json!({"unsubSource": source, "channelIds": [EMAIL_CHANNEL]}),
            &id,
            self.now,
        );
        e.delivery_id = id;
        self.inflight.push(e);
    }

    /// Picks up what the processor decided since the last call.
    fn collect(&mut self) {
        for c in &self.h.commands[self.seen_commands..] {
            if let Action::UpdateSubscriptions(u) = &c.action
                && let Some(ids) = &u.unsubscribed_channel_ids
            {
                self.writes
                    .push(Write::Iterable(!ids.contains(&EMAIL_CHANNEL)));
            }
        }
        self.seen_commands = self.h.commands.len();
        for c in &self.h.shopify_commands[self.seen_shopify..] {
            self.writes.push(Write::Shopify(
                c.marketing_state == MarketingState::Subscribed,
                c.consent_updated_at_ms,
            ));
        }
        self.seen_shopify = self.h.shopify_commands.len();
    }

    fn run(&mut self, s: &Step) {
        self.now += 1000;
        match s {
            Step::ShopifyUser(sub) => {
                self.shopify = (*sub, self.now);
                self.shopify_webhook();
            }
            Step::IterableUser(sub) if self.iterable != *sub => {
                self.iterable = *sub;
                self.iterable_webhook("EmailLink");
            }
            Step::Deliver(i) if !self.inflight.is_empty() => {
                let e = self.inflight.remove(i.index(self.inflight.len()));
                self.h.deliver(e);
                self.collect();
            }
            Step::Apply(i) if !self.writes.is_empty() => {
                // Each side applies our writes in order (the writer and the publisher keep
                // one customer's commands in order); which side goes next is free.
                let shopify_first = i.index(2) == 0;
                let pos = self
                    .writes
                    .iter()
                    .position(|w| matches!(w, Write::Shopify(..)) == shopify_first)
                    .unwrap_or(0);
                match self.writes.remove(pos) {
                    Write::Shopify(sub, at) => {
                        self.shopify_writes += 1;
                        self.shopify = (sub, at);
                        self.shopify_webhook();
                    }
                    Write::Iterable(sub) => {
                        self.iterable_writes += 1;
                        if self.iterable != sub {
                            self.iterable = sub;
                            self.iterable_webhook("API");
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Delivers and applies everything until nothing moves (bounded: flapping fails).
    fn settle(&mut self) {
        for _ in 0..200 {
            if self.inflight.is_empty() && self.writes.is_empty() {
                return;
            }
            self.run(&Step::Deliver(any_index()));
            self.run(&Step::Apply(any_index()));
        }
        panic!("never settled: the two sides keep bouncing");
    }
}

fn any_index() -> prop::sample::Index {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    any::<prop::sample::Index>()
        .new_tree(&mut TestRunner::deterministic())
        .unwrap()
        .current()
}

fn policy() -> impl Strategy<Value = SourceOfTruth> {
    prop_oneof![
        Just(SourceOfTruth::Shopify),
        Just(SourceOfTruth::Iterable),
        Just(SourceOfTruth::Latest),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// Whatever the interleaving of user changes, webhook deliveries and our own writes landing,
    /// the two platforms end in the same state, the one the policy dictates from what the
    /// processor saw, after a bounded number of writes.
    #[test]
    fn both_sides_converge_without_flapping(policy in policy(), steps in prop::collection::vec(step(), 0..40)) {
        converges(policy, &steps)?;
    }
}

fn converges(policy: SourceOfTruth, steps: &[Step]) -> Result<(), TestCaseError> {
    {
        let mut w = World::new(policy);
        let users = steps
            .iter()
            .filter(|s| matches!(s, Step::ShopifyUser(_) | Step::IterableUser(_)))
            .count();
        let mut last_shopify_user = true;
        for s in steps {
            if let Step::ShopifyUser(sub) = s {
                last_shopify_user = *sub;
            }
            w.run(s);
        }
        w.settle();
        prop_assert_eq!(w.shopify.0, w.iterable, "platforms disagree");
        let eff = rules_effective(&w.h);
        prop_assert_eq!(
            eff,
            w.shopify.0,
            "platforms differ from the processor's decision"
        );
        if policy == SourceOfTruth::Shopify {
            prop_assert_eq!(w.shopify.0, last_shopify_user, "Shopify is the truth");
            prop_assert_eq!(w.shopify_writes, 0);
        }
        // Each user change causes at most one write per side, plus a race's correction.
        prop_assert!(
            w.shopify_writes + w.iterable_writes <= 3 * users + 1,
            "{} + {} writes for {} user changes",
            w.shopify_writes,
            w.iterable_writes,
            users
        );
    }
    Ok(())
}

/// The effective email consent as the processor shows it (the customer view).
fn rules_effective(h: &Harness) -> bool {
    let view = rules::view::customer_view(
        h.rules.config(),
        &schemas::CustomerKey::parse(KEY).unwrap(),
        h.state("c/7001"),
    );
    view.consent.unwrap().email.state == "subscribed"
}
