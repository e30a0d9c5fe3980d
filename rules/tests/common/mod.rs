//! Test support: realistic Shopify payload builders and a tiny in-memory engine.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, FixedOffset};
use rules::{Ctx, Effect, MarketingRules, Rules, RulesConfig, State, Timer};
use schemas::{Action, CustomerKey, EventSource, IterableCommand, ShopDomain, ShopifyEnvelope};
use serde_json::{Value, json};

mod chloe;
#[allow(unused_imports)]
pub use chloe::*;

pub const SHOP: &str = "tillstream-demo.myshopify.com";
/// 2026-01-05T09:00:00-05:00.
pub const T0: i64 = 1_767_621_600_000;
pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 86_400_000;
pub const BIG_CUSTOMER: u64 = 820_982_911_946_154_508;

/// A payload timestamp in the shop's offset (-05:00), as Shopify writes it.
pub fn ts(ms: i64) -> String {
    let off = FixedOffset::west_opt(5 * 3600).unwrap();
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&off)
        .to_rfc3339()
}

pub fn shop() -> ShopDomain {
    ShopDomain::parse(SHOP).unwrap()
}

pub fn envelope(topic: &str, body: &Value, delivery: &str, at_ms: i64) -> ShopifyEnvelope {
    let bytes = serde_json::to_vec(body).unwrap();
    let key = schemas::routing_key(&shop(), topic, &bytes);
    ShopifyEnvelope {
        delivery_id: delivery.into(),
        event_id: Some(format!("ev-{delivery}")),
        topic: topic.into(),
        shop_domain: SHOP.into(),
        api_version: Some("2026-07".into()),
        triggered_at_ms: Some(at_ms),
        received_at_ms: at_ms + 250,
        routing_key: key.as_str().into(),
        source: EventSource::Webhook,
        webhook_name: None,
        body: bytes,
    }
}

pub fn legacy(mut e: ShopifyEnvelope) -> ShopifyEnvelope {
    e.api_version = Some("2024-10".into());
    e
}

// ---- payloads ------------------------------------------------------------------------

pub fn customer_json(id: u64, email: &str, created: i64, updated: i64, legacy: bool) -> Value {
    let mut c = json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Customer/{id}"),
        "email": email,
        "phone": "+16135550123",
        "first_name": "Chloé",
        "last_name": "O'Brien",
        "state": "enabled",
        "verified_email": true,
        "currency": "USD",
        "created_at": ts(created),
        "updated_at": ts(updated),
        "tax_exempt": false,
        "tax_exemptions": [],
        "addresses": [],
        "default_address": {"id": 1, "customer_id": id, "city": "Ottawa", "province": "Ontario", "province_code": "ON",
            "country": "Canada", "country_code": "CA", "zip": "K1A 0B1", "default": true}
    });
    if legacy {
        let m = c.as_object_mut().unwrap();
        m.insert("tags".into(), json!("vip, newsletter"));
        m.insert("orders_count".into(), json!(0));
        m.insert("total_spent".into(), json!("0.00"));
        m.insert("email_marketing_consent".into(), json!({"state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": ts(created)}));
        m.insert("sms_marketing_consent".into(), json!({"state": "not_subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": null, "consent_collected_from": "OTHER"}));
    }
    c
}

#[derive(Clone, Debug)]
pub struct Line {
    pub product_id: u64,
    pub variant_id: u64,
    pub title: &'static str,
    pub variant: &'static str,
    pub sku: &'static str,
    pub price: &'static str,
    pub quantity: i64,
}

pub fn line(i: usize) -> Line {
    const L: [(&str, &str, &str, &str); 4] = [
        ("Salt & Pepper Grinder Set", "Walnut", "TK-1000-W", "34.00"),
        ("Chef's Knife 8\"/20cm", "Carbon", "TK-1028-C", "129.00"),
        ("Stand Mixer Pro", "Cream", "TK-1049-C", "449.00"),
        ("Crème Brûlée Torch", "Default Title", "TK-1105-D", "36.00"),
    ];
    let (title, variant, sku, price) = L[i % 4];
    Line {
        product_id: 632_910_392_000_000_000 + i as u64,
        variant_id: 808_950_810_000_000_000 + i as u64,
        title,
        variant,
        sku,
        price,
        quantity: 1 + (i as i64 % 2),
    }
}

#[derive(Clone, Debug)]
pub struct OrderSpec {
    pub id: u64,
    pub customer: Option<u64>,
    pub email: String,
    pub created: i64,
    pub updated: i64,
    pub financial_status: &'static str,
    pub total: &'static str,
    pub presentment: Option<(&'static str, &'static str)>,
    pub lines: Vec<Line>,
    pub cancelled_at: Option<i64>,
    pub test: bool,
    pub checkout_token: Option<String>,
    pub fulfillment_status: Option<&'static str>,
    pub refunds: Vec<Value>,
    /// `processed_at` minus `created_at` (imported orders were processed before).
    pub processed_offset: i64,
}

impl OrderSpec {
    pub fn new(id: u64, customer: Option<u64>, email: &str, at: i64, total: &'static str) -> Self {
        Self {
            id,
            customer,
            email: email.into(),
            created: at,
            updated: at,
            financial_status: "paid",
            total,
            presentment: None,
            lines: vec![line(0), line(1)],
            cancelled_at: None,
            test: false,
            checkout_token: None,
            fulfillment_status: None,
            refunds: vec![],
            processed_offset: 0,
        }
    }

    pub fn json(&self) -> Value {
        let (pc, pt) = self.presentment.unwrap_or(("USD", self.total));
        let set = |shop: &str, pres: &str| json!({"shop_money": {"amount": shop, "currency_code": "USD"}, "presentment_money": {"amount": pres, "currency_code": pc}});
        let lines: Vec<Value> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({
                    "id": 10_000 + i, "admin_graphql_api_id": format!("gid://shopify/LineItem/{}", 10_000 + i),
                    "variant_id": l.variant_id, "product_id": l.product_id, "sku": l.sku, "title": l.title,
                    "variant_title": l.variant, "name": format!("{} - {}", l.title, l.variant), "vendor": "Tillstream Kitchen",
                    "quantity": l.quantity, "price": l.price, "price_set": set(l.price, l.price), "total_discount": "0.00",
                    "discount_allocations": []
                })
            })
            .collect();
        let customer = self.customer.map(|id| {
            json!({"id": id, "email": self.email, "first_name": "Chloé", "last_name": "O'Brien", "state": "enabled",
                "created_at": ts(T0 - DAY), "updated_at": ts(T0 - DAY), "admin_graphql_api_id": format!("gid://shopify/Customer/{id}")})
        });
        json!({
            "id": self.id,
            "admin_graphql_api_id": format!("gid://shopify/Order/{}", self.id),
            "name": format!("#{}", 1000 + self.id % 1000),
            "order_number": 1000 + self.id % 1000,
            "email": self.email,
            "contact_email": self.email,
            "created_at": ts(self.created),
            "updated_at": ts(self.updated),
            "processed_at": ts(self.created + self.processed_offset),
            "cancelled_at": self.cancelled_at.map(ts),
            "cancel_reason": self.cancelled_at.map(|_| "customer"),
            "currency": "USD",
            "presentment_currency": pc,
            "total_price": self.total,
            "subtotal_price": self.total,
            "total_tax": "0.00",
            "total_discounts": "0.00",
            "current_total_price": self.total,
            "total_price_set": set(self.total, pt),
            "subtotal_price_set": set(self.total, pt),
            "financial_status": self.financial_status,
            "fulfillment_status": self.fulfillment_status,
            "test": self.test,
            "buyer_accepts_marketing": false,
            "tags": "",
            "source_name": "web",
            "checkout_token": self.checkout_token,
            "discount_codes": [],
            "customer": customer,
            "line_items": lines,
            "shipping_lines": [{"price": "8.95", "title": "Standard"}],
            "refunds": self.refunds,
            "fulfillments": if self.fulfillment_status == Some("fulfilled") {
                json!([{"id": 1, "status": "success", "created_at": ts(self.updated), "tracking_company": "Canada Post", "tracking_number": "7001", "tracking_url": "https://track.example/7001"}])
            } else { json!([]) },
        })
    }
}

/// A refund with one transaction in `currency` (and optional shop-money lines).
pub fn refund_json(
    id: u64,
    order_id: u64,
    at: i64,
    amount: &str,
    currency: &str,
    shop_lines: Option<&str>,
) -> Value {
    let lines = match shop_lines {
        Some(shop) => {
            json!([{"id": id + 1, "line_item_id": 10_000, "quantity": 1, "restock_type": "return", "subtotal": 1.0, "total_tax": 0.0,
            "subtotal_set": {"shop_money": {"amount": shop, "currency_code": "USD"}, "presentment_money": {"amount": amount, "currency_code": currency}},
            "total_tax_set": {"shop_money": {"amount": "0.00", "currency_code": "USD"}, "presentment_money": {"amount": "0.00", "currency_code": currency}}}])
        }
        None => json!([]),
    };
    json!({
        "id": id, "admin_graphql_api_id": format!("gid://shopify/Refund/{id}"), "order_id": order_id,
        "created_at": ts(at), "processed_at": ts(at), "note": "Damaged in transit", "restock": true,
        "refund_line_items": lines, "order_adjustments": [], "refund_shipping_lines": [],
        "transactions": [{"id": id + 7, "order_id": order_id, "kind": "refund", "status": "success", "amount": amount,
            "currency": currency, "gateway": "shopify_payments", "created_at": ts(at), "test": false}]
    })
}

pub fn checkout_json(
    token: &str,
    id: u64,
    email: Option<&str>,
    customer: Option<u64>,
    created: i64,
    updated: i64,
    completed: Option<i64>,
) -> Value {
    let lines: Vec<Value> = [line(0), line(2)]
        .iter()
        .map(|l| json!({"key": format!("k{}", l.variant_id), "variant_id": l.variant_id, "product_id": l.product_id, "sku": l.sku,
            "title": l.title, "variant_title": l.variant, "quantity": l.quantity, "price": l.price, "line_price": l.price}))
        .collect();
    json!({
        "id": id, "token": token, "cart_token": format!("cart-{token}"), "email": email, "phone": null,
        "name": format!("#{id}"), "abandoned_checkout_url": format!("https://{SHOP}/checkouts/{token}/recover"),
        "created_at": ts(created), "updated_at": ts(updated), "completed_at": completed.map(ts), "closed_at": null,
        "currency": "USD", "presentment_currency": "USD", "buyer_accepts_marketing": false,
        "subtotal_price": "483.00", "total_price": "483.00", "total_tax": "0.00", "total_discounts": "0.00",
        "line_items": lines, "discount_codes": [],
        "customer": customer.map(|c| json!({"id": c, "email": email, "first_name": "Chloé", "last_name": "O'Brien", "state": "enabled", "updated_at": ts(T0 - DAY)}))
    })
}

pub fn email_consent_json(customer: u64, email: &str, state: &str, at: i64) -> Value {
    json!({"customer_id": customer, "email_address": email,
        "email_marketing_consent": {"state": state, "opt_in_level": "single_opt_in", "consent_updated_at": ts(at)}})
}

pub fn sms_consent_json(customer: u64, state: &str, at: i64) -> Value {
    json!({"id": customer, "phone": "+16135550123",
        "sms_marketing_consent": {"state": state, "opt_in_level": "single_opt_in", "consent_updated_at": ts(at), "consent_collected_from": "SHOPIFY"}})
}

// ---- a tiny engine -------------------------------------------------------------------

/// Routes deliveries with the real routing rule, delivers forwards through a queue and fires
/// timers in due order, like the processor engine (without Kafka).
pub struct Harness {
    pub rules: MarketingRules,
    pub states: BTreeMap<String, State>,
    /// Journey events not sent because older than their freshness horizon, in order.
    pub suppressed: Vec<String>,
    pub timers: BTreeMap<String, BTreeMap<String, Timer>>,
    pub now: i64,
    /// Fixed wall clock (a replay); `None` = the wall clock equals stream time (live).
    pub wall: Option<i64>,
    /// Fire due timers before the input that made them due (true) or after it.
    pub timers_first: bool,
    pub commands: Vec<IterableCommand>,
    pub reports: Vec<Value>,
    pub purged: Vec<String>,
    pub forwards: Vec<(String, String)>,
    /// Consent writes for Shopify (two-way consent).
    pub shopify_commands: Vec<schemas::ShopifyCommand>,
}

impl Harness {
    pub fn new(cfg: RulesConfig) -> Self {
        Self {
            rules: MarketingRules::try_new(cfg).unwrap(),
            states: BTreeMap::new(),
            suppressed: Vec::new(),
            timers: BTreeMap::new(),
            now: i64::MIN,
            wall: None,
            timers_first: true,
            commands: vec![],
            reports: vec![],
            purged: vec![],
            forwards: vec![],
            shopify_commands: vec![],
        }
    }

    pub fn default() -> Self {
        Self::new(RulesConfig::default())
    }

    fn ctx(&self, event_time: i64) -> Ctx {
        Ctx {
            now_ms: self.now,
            event_time_ms: event_time,
            wall_clock_ms: self.wall.unwrap_or(self.now),
        }
    }

    pub fn deliver(&mut self, e: ShopifyEnvelope) {
        let t = e.triggered_at_ms.unwrap_or(e.received_at_ms);
        self.now = self.now.max(t);
        if self.timers_first {
            self.fire_due();
        }
        let key = CustomerKey::parse(&e.routing_key).unwrap();
        self.process(key, e);
        if !self.timers_first {
            self.fire_due();
        }
    }

    fn process(&mut self, key: CustomerKey, e: ShopifyEnvelope) {
        let mut queue = VecDeque::from([(key, e)]);
        while let Some((key, e)) = queue.pop_front() {
            let t = e.triggered_at_ms.unwrap_or(e.received_at_ms);
            let ctx = self.ctx(t);
            let mut st = self.states.get(key.as_str()).cloned().unwrap_or_default();
            let effects = self
                .rules
                .on_event(&key, &mut st, &e, &ctx)
                .unwrap_or_else(|err| panic!("{} on {key}: {err}", e.topic));
            self.states.insert(key.as_str().into(), st);
            self.apply(&key, effects, &mut queue);
        }
    }

    fn apply(
        &mut self,
        key: &CustomerKey,
        effects: Vec<Effect>,
        queue: &mut VecDeque<(CustomerKey, ShopifyEnvelope)>,
    ) {
        for eff in effects {
            match eff {
                Effect::Command(c) => self.commands.push(c),
                Effect::ShopifyCommand(c) => self.shopify_commands.push(c),
                Effect::SetTimer(t) => {
                    self.timers
                        .entry(key.as_str().into())
                        .or_default()
                        .insert(t.timer_id.clone(), t);
                }
                Effect::CancelTimer { timer_id } => {
                    if let Some(m) = self.timers.get_mut(key.as_str()) {
                        m.remove(&timer_id);
                    }
                }
                Effect::Forward { to, envelope } => {
                    self.forwards
                        .push((to.as_str().into(), envelope.topic.clone()));
                    queue.push_back((to, *envelope));
                }
                Effect::DataReport(v) => self.reports.push(v),
                Effect::Suppressed { event, .. } => self.suppressed.push(event),
                Effect::Purge => {
                    self.states.remove(key.as_str());
                    self.timers.remove(key.as_str());
                    self.purged.push(key.as_str().into());
                }
            }
        }
    }

    /// Fires every timer due at or before `now`, in due order.
    pub fn fire_due(&mut self) {
        loop {
            let next = self
                .timers
                .iter()
                .flat_map(|(k, m)| {
                    m.values()
                        .map(move |t| (t.due_ms, k.clone(), t.timer_id.clone()))
                })
                .filter(|(d, _, _)| *d <= self.now)
                .min();
            let Some((_, k, id)) = next else { return };
            let Some(timer) = self.timers.get_mut(&k).and_then(|m| m.remove(&id)) else {
                return;
            };
            let key = CustomerKey::parse(&k).unwrap();
            // Live (no fixed wall clock): the engine is caught up and fires the timer when its
            // due time comes on the wall clock, even if the next event arrives much later.
            let ctx = match self.wall {
                Some(_) => self.ctx(timer.due_ms),
                None => Ctx {
                    now_ms: timer.due_ms,
                    event_time_ms: timer.due_ms,
                    wall_clock_ms: timer.due_ms,
                },
            };
            let mut st = self.states.get(&k).cloned().unwrap_or_default();
            let effects = self.rules.on_timer(&key, &mut st, &timer, &ctx).unwrap();
            self.states.insert(k.clone(), st);
            let mut queue = VecDeque::new();
            self.apply(&key, effects, &mut queue);
            while let Some((key, e)) = queue.pop_front() {
                self.process(key, e);
            }
        }
    }

    /// Lets time pass until `t`.
    pub fn advance(&mut self, t: i64) {
        self.now = self.now.max(t);
        self.fire_due();
    }

    /// Lets all timers fire.
    pub fn finish(&mut self) {
        while let Some(d) = self
            .timers
            .values()
            .flat_map(|m| m.values().map(|t| t.due_ms))
            .min()
        {
            self.advance(d);
        }
    }

    pub fn state(&self, key: &str) -> &State {
        self.states
            .get(&format!("{SHOP}/{key}"))
            .unwrap_or_else(|| panic!("no state for {key}"))
    }

    /// Track events by name.
    pub fn events(&self, name: &str) -> Vec<&IterableCommand> {
        self.commands.iter().filter(|c| matches!(&c.action, Action::TrackEvent { event_name, .. } if event_name == name)).collect()
    }

    pub fn event_fields(&self, name: &str) -> Vec<serde_json::Map<String, Value>> {
        self.events(name)
            .into_iter()
            .filter_map(|c| match &c.action {
                Action::TrackEvent { data_fields, .. } => Some(data_fields.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn purchases(&self) -> Vec<&IterableCommand> {
        self.commands
            .iter()
            .filter(|c| matches!(c.action, Action::TrackPurchase { .. }))
            .collect()
    }

    /// The profile Iterable would hold for a key: every upsert merged in order.
    pub fn profile(&self, key: &str) -> serde_json::Map<String, Value> {
        let full = format!("{SHOP}/{key}");
        let mut m = serde_json::Map::new();
        for c in self.commands.iter().filter(|c| c.customer_key == full) {
            if let Action::UpsertUser { data_fields, .. } = &c.action {
                for (k, v) in data_fields {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        m
    }
}
