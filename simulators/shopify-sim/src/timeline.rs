//! Timeline generation: per-person funnels (sign-up, carts, checkouts, orders, refunds,
//! consent and email changes, redaction) producing webhook actions plus a truth ledger.
//!
//! Each person draws from their own ChaCha stream (`set_stream`), so adding a customer or
//! changing one person's draws never shifts anyone else's traffic, and ids come from
//! disjoint per-person ranges so they are unique without a global counter.

use chrono::{Duration, FixedOffset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod checkouts;
mod orders;

use crate::catalog::Catalog;
use crate::config::ScenarioConfig;
use crate::error::SimError;
use crate::model::{
    Action, Address, Amt, Basket, Cart, Checkout, Consent, ConsentState, CustomerSnap,
    FOREIGN_CURRENCIES, Fulfillment, Line, Order, Pres, Product, Refund, RefundLine, Subject,
    Topic, Transaction, Ts, catalogue,
};

/// RNG stream numbers; persons use `PERSON_STREAM_BASE + index`.
pub(crate) const CATALOGUE_STREAM: u64 = 1;
pub(crate) const DELIVERY_STREAM: u64 = 2;
const SHOP_STREAM: u64 = 3;
const PRODUCT_STREAM: u64 = 4;
const PERSON_STREAM_BASE: u64 = 1 << 32;

/// Truth about one order, as needed by the expected-outcome rules.
#[derive(Debug, Clone)]
pub(crate) struct OrderTruth {
    pub(crate) id: u64,
    pub(crate) processed_at: Ts,
    pub(crate) paid_at: Option<Ts>,
    pub(crate) test: bool,
    pub(crate) cancelled: bool,
    pub(crate) cancelled_at: Option<Ts>,
    pub(crate) deleted: bool,
    pub(crate) deleted_at: Option<Ts>,
    pub(crate) total_shop: i64,
    pub(crate) refunded_shop: i64,
    /// (time, shop cents) of each refund.
    pub(crate) refunds: Vec<(Ts, i64)>,
}

/// Truth about one checkout.
#[derive(Debug, Clone)]
pub(crate) struct CheckoutTruth {
    pub(crate) token: String,
    /// `created_at` followed by every update's `updated_at` (including the completing one).
    pub(crate) updates: Vec<Ts>,
    pub(crate) completed_at: Option<Ts>,
    pub(crate) deleted_at: Option<Ts>,
    /// Whether the checkout ever carried an email or phone.
    pub(crate) contact: bool,
}

/// Truth about one person (registered customer or guest).
#[derive(Debug, Clone)]
pub(crate) struct PersonTruth {
    pub(crate) key: String,
    pub(crate) customer_id: Option<u64>,
    pub(crate) email: String,
    pub(crate) email_consent: Option<ConsentState>,
    pub(crate) sms_consent: Option<ConsentState>,
    pub(crate) redacted_at: Option<Ts>,
    pub(crate) orders: Vec<OrderTruth>,
    pub(crate) checkouts: Vec<CheckoutTruth>,
}

/// Output of timeline generation.
#[derive(Debug)]
pub(crate) struct Timeline {
    pub(crate) start: Ts,
    pub(crate) end: Ts,
    pub(crate) catalogue: Vec<Product>,
    /// The catalogue over time (`[products] enabled`); `catalogue` is then its flattened
    /// variants.
    pub(crate) catalog: Option<Catalog>,
    pub(crate) actions: Vec<Action>,
    pub(crate) people: Vec<PersonTruth>,
    /// Checkouts that can't be attributed to anyone (no email, no phone).
    pub(crate) unattributed: Vec<CheckoutTruth>,
}

const FIRST: [&str; 16] = [
    "Ava", "Liam", "Noah", "Emma", "Olivia", "Mateo", "Chloé", "Zoë", "Ren", "Priya", "Kofi",
    "Ingrid", "Diego", "Hana", "Omar", "Maeve",
];
const LAST: [&str; 16] = [
    "Smith", "García", "O'Brien", "Nguyen", "Kowalski", "Okafor", "Jensen", "Müller", "Silva",
    "Tanaka", "Haddad", "Dubois", "Rossi", "Patel", "Byrne", "Novak",
];
const CITIES: [(&str, &str, &str); 4] = [
    ("Ottawa", "Ontario", "ON"),
    ("Toronto", "Ontario", "ON"),
    ("Montréal", "Quebec", "QC"),
    ("Vancouver", "British Columbia", "BC"),
];
const DOMAINS: [&str; 3] = ["example.com", "example.net", "example.org"];
const TAX_BP: i64 = 825; // 8.25 % in basis points
const FREE_SHIPPING_CENTS: i64 = 10_000;
const SHIPPING_CENTS: i64 = 895;

/// Generate the timeline for a validated config.
pub(crate) fn build(cfg: &ScenarioConfig) -> Result<Timeline, SimError> {
    cfg.validate()?;
    let offset = cfg.shop_offset()?;
    let start = cfg.start_time()?;
    let end = start + Duration::days(i64::from(cfg.days));
    let mut cat_rng = stream(cfg.seed, CATALOGUE_STREAM);
    let mut cat = catalogue(&mut cat_rng);
    let catalog = cfg.products.enabled.then(|| {
        let mut rng = stream(cfg.seed, PRODUCT_STREAM);
        let (catalog, flat) = Catalog::build(cfg, &cat, &mut rng, start, end);
        cat = flat;
        catalog
    });

    let mut actions = Vec::new();
    let mut people = Vec::new();
    let mut unattributed = Vec::new();
    for person in 0..cfg.customers {
        let mut g = Gen {
            cfg,
            cat: &cat,
            catalog: catalog.as_ref(),
            rng: stream(cfg.seed, PERSON_STREAM_BASE + u64::from(person)),
            person,
            ids: 0,
            groups: 0,
            seq: 0,
            start,
            end,
            offset,
            actions: Vec::new(),
            unattributed: Vec::new(),
            customer: None,
            orders_created: Vec::new(),
            money: Vec::new(),
            as_guest: false,
            truth: PersonTruth {
                key: String::new(),
                customer_id: None,
                email: String::new(),
                email_consent: None,
                sms_consent: None,
                redacted_at: None,
                orders: Vec::new(),
                checkouts: Vec::new(),
            },
        };
        g.run();
        actions.append(&mut g.actions);
        unattributed.append(&mut g.unattributed);
        people.push(g.truth);
    }
    if let Some(c) = &catalog {
        actions.extend(c.actions().into_iter().filter(|a| a.at < end));
    }
    if cfg.shop_redact {
        let mut rng = stream(cfg.seed, SHOP_STREAM);
        let at = end - Duration::seconds(rng.random_range(60..3600));
        actions.push(Action {
            at,
            topic: Topic::ShopRedact,
            subject: Subject::ShopRedact,
            group: u64::MAX,
            person: u32::MAX,
            seq: 0,
        });
    }
    Ok(Timeline {
        start,
        end,
        catalogue: cat,
        catalog,
        actions,
        people,
        unattributed,
    })
}

/// A ChaCha RNG for `seed` on an independent stream.
pub(crate) fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    Cancel,
    FullRefund,
    PartialRefund,
}

#[derive(Debug, Clone, Copy)]
enum Intent {
    Session,
    EmailChange,
    ConsentChange,
    SmsChange,
    DataRequest,
}

struct Gen<'a> {
    cfg: &'a ScenarioConfig,
    cat: &'a [Product],
    catalog: Option<&'a Catalog>,
    rng: ChaCha8Rng,
    person: u32,
    ids: u64,
    groups: u64,
    seq: u32,
    start: Ts,
    end: Ts,
    offset: FixedOffset,
    actions: Vec<Action>,
    unattributed: Vec<CheckoutTruth>,
    /// Current state of a registered customer (None for guests).
    customer: Option<CustomerSnap>,
    /// The registered customer is checking out as a guest: payloads carry no customer.
    as_guest: bool,
    /// Non-test order creation times (for Shopify's legacy `orders_count`).
    orders_created: Vec<Ts>,
    /// (time, signed shop cents) payments and refunds (for legacy `total_spent`).
    money: Vec<(Ts, i64)>,
    truth: PersonTruth,
}

impl Gen<'_> {
    // ---- primitives -------------------------------------------------------------------

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn secs(&mut self, lo: i64, hi: i64) -> Duration {
        Duration::seconds(self.rng.random_range(lo..=hi))
    }

    fn mins(&mut self, lo: i64, hi: i64) -> Duration {
        self.secs(lo * 60, hi * 60)
    }

    fn hours(&mut self, lo: i64, hi: i64) -> Duration {
        self.secs(lo * 3600, hi * 3600)
    }

    fn days(&mut self, lo: i64, hi: i64) -> Duration {
        self.secs(lo * 86_400, hi * 86_400)
    }

    /// A fresh id: production-looking (13 digits) or above 2^53 (18 digits), from a
    /// per-person range so ids never collide across people.
    fn id(&mut self) -> u64 {
        self.ids += 1;
        let slot =
            u64::from(self.person) * 1_000_000 + self.ids * 11 + self.rng.random_range(0..11);
        if self.chance(self.cfg.big_id_fraction) {
            820_982_911_946_154_508 + slot
        } else {
            6_004_604_174_410 + slot
        }
    }

    fn hex_token(&mut self) -> String {
        let a: u64 = self.rng.random();
        let b: u64 = self.rng.random();
        format!("{a:016x}{b:016x}")
    }

    fn group(&mut self) -> u64 {
        self.groups += 1;
        u64::from(self.person) << 24 | self.groups
    }

    /// Emits an order topic and the `orders/updated` Shopify sends with it, in one group.
    fn emit_order_change(&mut self, at: Ts, topic: Topic, o: &Order, group: u64) {
        for topic in [topic, Topic::OrdersUpdated] {
            self.emit(at, topic, Subject::Order(Box::new(o.clone())), group);
        }
    }

    fn emit(&mut self, at: Ts, topic: Topic, subject: Subject, group: u64) {
        // Follow-ups scheduled past the end of the timeline never happen.
        if at >= self.end {
            return;
        }
        self.seq += 1;
        self.actions.push(Action {
            at,
            topic,
            subject,
            group,
            person: self.person,
            seq: self.seq,
        });
    }

    fn round_time(&self, t: Ts) -> Ts {
        t.with_timezone(&self.offset)
    }

    // ---- people -----------------------------------------------------------------------

    fn run(&mut self) {
        let guest = self.chance(self.cfg.guest_fraction);
        let first = FIRST[self.rng.random_range(0..FIRST.len())].to_owned();
        let last = LAST[self.rng.random_range(0..LAST.len())].to_owned();
        let domain = DOMAINS[self.rng.random_range(0..DOMAINS.len())];
        let local = format!(
            "{}.{}{}",
            ascii_slug(&first),
            ascii_slug(&last),
            self.person
        );
        if guest {
            // Guests sometimes type their email with capitals: keys must be lower-cased.
            let email = if self.chance(0.3) {
                format!("{}@{}", capitalise(&local), capitalise(domain))
            } else {
                format!("{local}@{domain}")
            };
            self.truth.key = format!("email:{}", email.to_lowercase());
            self.truth.email = email.clone();
            self.run_guest(email, first, last);
        } else {
            self.run_registered(format!("{local}@{domain}"), first, last);
        }
    }

    fn address(&mut self, first: &str, last: &str, phone: Option<String>) -> Address {
        let (city, province, code) = CITIES[self.rng.random_range(0..CITIES.len())];
        Address {
            id: self.id(),
            first_name: first.to_owned(),
            last_name: last.to_owned(),
            address1: format!("{} Rue Sainte-Catherine", self.rng.random_range(1..999)),
            city,
            province,
            province_code: code,
            zip: format!(
                "K{}A 0B{}",
                self.rng.random_range(1..9),
                self.rng.random_range(1..9)
            ),
            phone,
        }
    }

    /// Session start times: a wide gap distribution (some gaps exceed the lapse period)
    /// plus extra sessions inside rate phases, at least a day apart so the only orders
    /// near an abandoned checkout are the deliberate "ordered-in-between" ones.
    fn session_times(&mut self, from: Ts, mean_days: f64, max_sessions: usize) -> Vec<Ts> {
        let last_start = self.end - Duration::hours(i64::from(self.cfg.session_margin_hours));
        let mut times = Vec::new();
        let mut t = from + self.hours(1, 48);
        while t < last_start && times.len() < max_sessions {
            times.push(t);
            let gap = if self.chance(0.7) {
                self.rng.random_range(1.0..mean_days.max(1.5))
            } else {
                self.rng.random_range(mean_days..mean_days * 3.0)
            };
            t += Duration::seconds((gap * 86_400.0) as i64);
        }
        let total_secs = (self.end - self.start).num_seconds() as f64;
        for phase in &self.cfg.phases {
            if phase.multiplier <= 1.0 {
                continue;
            }
            let ws = self.start + Duration::seconds((phase.at_fraction * total_secs) as i64);
            let we = ws + Duration::seconds((phase.duration_fraction * total_secs) as i64);
            let ws = ws.max(from);
            let we = we.min(last_start);
            if we <= ws {
                continue;
            }
            let len_days = (we - ws).num_seconds() as f64 / 86_400.0;
            let extra = (phase.multiplier - 1.0) * len_days / mean_days;
            let mut n = extra.floor() as u32;
            if self.rng.random::<f64>() < extra.fract() {
                n += 1;
            }
            for _ in 0..n.min(50) {
                let off = self.rng.random_range(0..=(we - ws).num_seconds());
                times.push(ws + Duration::seconds(off));
            }
        }
        times.sort();
        let mut kept: Vec<Ts> = Vec::with_capacity(times.len());
        for t in times {
            if kept.last().is_none_or(|p| t - *p >= Duration::days(1)) {
                kept.push(t);
            }
        }
        kept
    }

    fn run_registered(&mut self, email: String, first: String, last: String) {
        let span = (self.end - self.start).num_seconds();
        let off = Duration::seconds(self.rng.random_range(0..=span * 6 / 10));
        let signup = self.round_time(self.start + off);
        let whale = self.chance(self.cfg.whale_fraction);
        let phone = self
            .chance(self.cfg.sms_fraction)
            .then(|| format!("+1613555{:04}", self.rng.random_range(0..10_000)));
        let address = self.address(&first, &last, phone.clone());
        let subscribed = self.chance(0.55);
        let id = self.id();
        let email_consent = Consent {
            state: if subscribed {
                ConsentState::Subscribed
            } else {
                ConsentState::NotSubscribed
            },
            opt_in_level: "single_opt_in",
            updated_at: subscribed.then_some(signup),
        };
        let sms_consent = if phone.is_some() {
            let sub = self.chance(0.5);
            Some(Consent {
                state: if sub {
                    ConsentState::Subscribed
                } else {
                    ConsentState::NotSubscribed
                },
                opt_in_level: "single_opt_in",
                updated_at: sub.then_some(signup),
            })
        } else {
            None
        };
        let mut tags = vec!["newsletter"];
        if whale {
            tags.push("vip");
        }
        let customer = CustomerSnap {
            id,
            email: email.clone(),
            phone,
            first_name: first,
            last_name: last,
            created_at: signup,
            updated_at: signup,
            address,
            email_consent,
            sms_consent,
            tags,
            orders_count: 0,
            total_spent: 0,
            last_order_id: None,
        };
        self.truth.key = id.to_string();
        self.truth.customer_id = Some(id);
        self.truth.email = email;
        self.truth.email_consent = Some(customer.email_consent.state);
        self.truth.sms_consent = customer.sms_consent.as_ref().map(|c| c.state);
        self.customer = Some(customer.clone());

        let g = self.group();
        self.emit(
            signup,
            Topic::CustomersCreate,
            Subject::Customer(Box::new(customer.clone())),
            g,
        );
        if subscribed {
            self.emit(
                signup,
                Topic::EmailConsentUpdate,
                Subject::Customer(Box::new(customer.clone())),
                g,
            );
        }
        if customer
            .sms_consent
            .as_ref()
            .is_some_and(|c| c.state == ConsentState::Subscribed)
        {
            self.emit(
                signup,
                Topic::SmsConsentUpdate,
                Subject::Customer(Box::new(customer)),
                g,
            );
        }

        let mean = self.cfg.mean_days_between_sessions / if whale { 4.0 } else { 1.0 };
        let mut intents: Vec<(Ts, Intent)> = self
            .session_times(signup, mean, 400)
            .into_iter()
            .map(|t| (t, Intent::Session))
            .collect();
        let life = (self.end - signup).num_seconds().max(1);
        let side = |g: &mut Self, p: f64, intent: Intent, out: &mut Vec<(Ts, Intent)>| {
            if g.chance(p) {
                let t = signup + Duration::seconds(g.rng.random_range(3600..=life.max(3601)));
                out.push((t, intent));
            }
        };
        let mut extra = Vec::new();
        side(
            self,
            self.cfg.email_change_fraction,
            Intent::EmailChange,
            &mut extra,
        );
        side(
            self,
            self.cfg.consent_change_fraction,
            Intent::ConsentChange,
            &mut extra,
        );
        if self.customer.as_ref().is_some_and(|c| c.phone.is_some()) {
            side(
                self,
                self.cfg.consent_change_fraction,
                Intent::SmsChange,
                &mut extra,
            );
        }
        side(
            self,
            self.cfg.data_request_fraction,
            Intent::DataRequest,
            &mut extra,
        );
        intents.append(&mut extra);
        intents.sort_by_key(|(t, _)| *t);

        // Redaction: the customer asks to be forgotten at some point and goes quiet; the
        // redact request arrives at the later of request+10d and last order+60d.
        let redact_request = if self.chance(self.cfg.redact_fraction) {
            let lo = span * 3 / 10;
            let t = signup + Duration::seconds(self.rng.random_range(lo.min(life)..=life));
            intents.retain(|(it, _)| *it < t);
            Some(t)
        } else {
            None
        };

        for (t, intent) in intents {
            match intent {
                Intent::Session => self.registered_session(t),
                Intent::EmailChange => self.email_change(t),
                Intent::ConsentChange => self.consent_change(t, false),
                Intent::SmsChange => self.consent_change(t, true),
                Intent::DataRequest => self.compliance(t, Topic::CustomersDataRequest),
            }
        }

        if let Some(req) = redact_request {
            if self.chance(0.5) {
                self.compliance(req, Topic::CustomersDataRequest);
            }
            let last_order = self.truth.orders.iter().map(|o| o.processed_at).max();
            let last_activity = self.actions.iter().map(|a| a.at).max().unwrap_or(signup);
            let mut at = req + Duration::days(10);
            if let Some(lo) = last_order {
                at = at.max(lo + Duration::days(60));
            }
            at = at.max(last_activity + Duration::days(1)) + self.mins(1, 600);
            if at < self.end {
                self.compliance(at, Topic::CustomersRedact);
                self.truth.redacted_at = Some(at);
            }
        }
    }

    fn run_guest(&mut self, email: String, first: String, last: String) {
        let span = (self.end - self.start).num_seconds();
        let from = self.start + Duration::seconds(self.rng.random_range(0..=span * 8 / 10));
        let mean = self.cfg.mean_days_between_sessions * 1.5;
        for t in self.session_times(from, mean, 6) {
            self.guest_session(t, &email, &first, &last);
        }
    }

    /// Customer snapshot as of `t`, with Shopify's own running stats for legacy payloads.
    fn snapshot(&self, t: Ts) -> Option<Box<CustomerSnap>> {
        if self.as_guest {
            return None;
        }
        let mut c = self.customer.clone()?;
        c.orders_count = self.orders_created.iter().filter(|o| **o <= t).count() as u32;
        c.total_spent = self
            .money
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, m)| m)
            .sum();
        c.last_order_id = self
            .truth
            .orders
            .iter()
            .filter(|o| !o.test && o.processed_at <= t)
            .max_by_key(|o| o.processed_at)
            .map(|o| o.id);
        Some(Box::new(c))
    }

    fn touch_customer(&mut self, t: Ts) {
        if let Some(c) = self.customer.as_mut() {
            c.updated_at = c.updated_at.max(t);
        }
    }

    fn email_change(&mut self, t: Ts) {
        let Some(c) = self.customer.as_mut() else {
            return;
        };
        let domain = DOMAINS[(self.person as usize + 1) % DOMAINS.len()];
        c.email = format!(
            "{}.{}+new{}@{}",
            ascii_slug(&c.first_name),
            ascii_slug(&c.last_name),
            self.person,
            domain
        );
        self.truth.email = c.email.clone();
        self.touch_customer(t);
        if let Some(snap) = self.snapshot(t) {
            let g = self.group();
            self.emit(t, Topic::CustomersUpdate, Subject::Customer(snap), g);
        }
    }

    fn consent_change(&mut self, t: Ts, sms: bool) {
        let confirmed = self.chance(0.2);
        let Some(c) = self.customer.as_mut() else {
            return;
        };
        let consent = if sms {
            match c.sms_consent.as_mut() {
                Some(s) => s,
                None => return,
            }
        } else {
            &mut c.email_consent
        };
        consent.state = match consent.state {
            ConsentState::Subscribed => ConsentState::Unsubscribed,
            ConsentState::NotSubscribed | ConsentState::Unsubscribed | ConsentState::Pending => {
                ConsentState::Subscribed
            }
        };
        consent.opt_in_level = if confirmed {
            "confirmed_opt_in"
        } else {
            "single_opt_in"
        };
        consent.updated_at = Some(t);
        let state = consent.state;
        if sms {
            self.truth.sms_consent = Some(state);
        } else {
            self.truth.email_consent = Some(state);
        }
        self.touch_customer(t);
        if let Some(snap) = self.snapshot(t) {
            let g = self.group();
            let topic = if sms {
                Topic::SmsConsentUpdate
            } else {
                Topic::EmailConsentUpdate
            };
            self.emit(t, topic, Subject::Customer(snap.clone()), g);
            self.emit(t, Topic::CustomersUpdate, Subject::Customer(snap), g);
        }
    }

    fn compliance(&mut self, t: Ts, topic: Topic) {
        let Some(snap) = self.snapshot(t) else { return };
        let orders = self
            .truth
            .orders
            .iter()
            .filter(|o| o.processed_at <= t)
            .map(|o| o.id)
            .collect();
        let data_request_id =
            (topic == Topic::CustomersDataRequest).then(|| self.id() % 100_000_000);
        let g = self.group();
        self.emit(
            t,
            topic,
            Subject::Compliance {
                customer: snap,
                orders,
                data_request_id,
            },
            g,
        );
    }
}

/// `a / b` rounded half away from zero, for non-negative `a` and positive `b`.
fn round_div(a: i64, b: i64) -> i64 {
    if b == 0 { 0 } else { (a + b / 2).div_euclid(b) }
}

fn ascii_slug(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'é' | 'è' => Some('e'),
            'ë' => Some('e'),
            'í' => Some('i'),
            'ü' => Some('u'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
