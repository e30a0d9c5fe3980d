//! Scenario configuration: what store to simulate, how deliveries misbehave, and the truth rules.

use chrono::{DateTime, Duration, FixedOffset, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::SimError;

/// Everything that determines a run. Same config (including `seed`) → byte-identical
/// deliveries and expected outcome. Loadable from TOML; every field has a default, so a
/// scenario file only lists what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScenarioConfig {
    /// Seed of the ChaCha RNG that drives everything (ids, funnels, faults).
    pub seed: u64,
    /// The shop's `*.myshopify.com` domain, sent in `X-Shopify-Shop-Domain`.
    pub shop_domain: String,
    /// Numeric shop id used in compliance payloads (`shop_id`).
    pub shop_id: u64,
    /// Shop currency (ISO code); all `shop_money` amounts and the expected LTVs use it.
    pub shop_currency: String,
    /// Number of distinct people simulated (registered customers plus guests).
    pub customers: u32,
    /// Event time of the first event. RFC 3339 (e.g. `2026-01-05T09:00:00-05:00`) for a
    /// reproducible or historical run (a start in the past = historical mode, for backfill
    /// and replay tests), `now` for live mode, or `now-<N>d` for "N days ago". Relative
    /// values must be resolved with [`ScenarioConfig::resolve_start`] before generating.
    pub start: String,
    /// Length of the simulated timeline in days; the timeline ends at `start + days`.
    pub days: u32,
    /// The shop's UTC offset (`-05:00`); payload timestamps are written in it.
    pub shop_utc_offset: String,
    /// Mean gap in days between a customer's shopping sessions. Gaps are drawn from a
    /// wide distribution (up to 3× the mean), so with the defaults some exceed `lapse_days`.
    pub mean_days_between_sessions: f64,
    /// Fraction of registered customers who shop 4× as often with bigger baskets (they
    /// reach the upper tiers).
    pub whale_fraction: f64,
    /// Fraction of people who never register and check out as guests (email only, no
    /// `customer` object on orders).
    pub guest_fraction: f64,
    /// Fraction of checkouts that are abandoned (no order from that checkout in time).
    pub abandonment_fraction: f64,
    /// Fraction of abandoned registered-customer checkouts followed within minutes by a
    /// new checkout that completes before the abandonment is due ("ordered-in-between").
    pub order_after_abandon_fraction: f64,
    /// Fraction of registered customers' sessions checked out as a guest (not logged in: the
    /// same email, no `customer` object on the checkout and the order). The order still
    /// counts for the customer, and the checkout is the customer's to abandon. Default 0.
    pub registered_guest_checkout_fraction: f64,
    /// Fraction of abandoned guest checkouts that are completed days later (after the
    /// abandonment came due, so the abandonment must still fire).
    pub guest_complete_later_fraction: f64,
    /// Fraction of abandoned checkouts that receive `checkouts/delete` (10–600 min later).
    pub checkout_delete_fraction: f64,
    /// Fraction of abandoned guest checkouts abandoned before an email was entered
    /// (no contact: the abandonment must not fire).
    pub no_contact_fraction: f64,
    /// Fraction of sessions that start with `carts/create`/`carts/update`.
    pub cart_fraction: f64,
    /// Fraction of orders fully refunded (returned) days after purchase.
    pub refund_fraction: f64,
    /// Fraction of orders partially refunded (one or more transactions).
    pub partial_refund_fraction: f64,
    /// Fraction of orders cancelled within 48 h (paid ones get a full refund, pending
    /// ones are voided).
    pub cancellation_fraction: f64,
    /// Fraction of orders created `pending` and paid hours later (`orders/paid` then).
    pub pending_payment_fraction: f64,
    /// Fraction of orders deleted (`orders/delete`) within 7 days of creation.
    pub order_delete_fraction: f64,
    /// Fraction of non-cancelled orders that get fulfilled (`orders/fulfilled`).
    pub fulfillment_fraction: f64,
    /// Fraction of registered customers whose email marketing consent changes later.
    pub consent_change_fraction: f64,
    /// Fraction of registered customers who change their email (`customers/update`).
    pub email_change_fraction: f64,
    /// Fraction of registered customers with a phone number and SMS consent events.
    pub sms_fraction: f64,
    /// Fraction of registered customers redacted (`customers/redact`) after going quiet.
    pub redact_fraction: f64,
    /// Fraction of registered customers sending a `customers/data_request`.
    pub data_request_fraction: f64,
    /// Fraction of orders placed as test orders (`test: true`, excluded from all truth).
    pub test_order_fraction: f64,
    /// Fraction of orders presented in a foreign currency (EUR, CAD or GBP).
    pub multi_currency_fraction: f64,
    /// Fraction of orders with a 10 % discount code.
    pub discount_fraction: f64,
    /// Fraction of resource ids drawn above 2^53 (18 digits, like Shopify's samples);
    /// the rest look like production ids (13 digits).
    pub big_id_fraction: f64,
    /// Emit a final `shop/redact` (wipes the shop downstream; off by default).
    pub shop_redact: bool,
    /// Shopping sessions start at least this many hours before the end of the timeline, so
    /// their follow-ups (payments, abandonment, completions) mostly fall inside it. The
    /// demo sets 0 with a timeline ending `now`: shoppers are active up to the moment it is
    /// sent, and what they leave pending (abandoned checkouts, lapses) comes due live.
    pub session_margin_hours: u32,
    /// Webhook API versions, chosen per merchant action. Versions before `2025-01` get the
    /// legacy customer shape (tags, consent, orders_count, total_spent).
    pub api_versions: Vec<String>,
    /// Delivery misbehaviour injected on top of the clean event stream.
    pub faults: Faults,
    /// Base offered rate in deliveries per second for the sender (0 = as fast as possible).
    pub rate_per_sec: f64,
    /// Rate phases, e.g. a Black Friday burst. Each phase both multiplies the sending
    /// rate of deliveries whose trigger time falls in it and adds proportionally more
    /// shopping sessions to that part of the timeline.
    pub phases: Vec<RatePhase>,
    /// Parameters of the rules that compute the expected outcome.
    pub rules: TruthRules,
    /// The product catalogue as its own traffic (`products/*`, sales, archives, launches) and
    /// ground truth. Off by default, so the default scenario's output is unchanged.
    #[serde(skip_serializing_if = "ProductsConfig::is_default")]
    pub products: ProductsConfig,
}

/// Product catalogue generation (see `catalog.rs`). With `enabled = false` (default) orders
/// draw from the 16 built-in single-variant products with fixed prices and no `products/*`
/// webhook is sent; with it on, the 16 become part of a larger catalogue that changes over
/// the timeline, and baskets draw only what is on sale at the time, at that time's price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProductsConfig {
    /// Master switch. Default false.
    pub enabled: bool,
    /// Products beyond the 16 built-in ones. Default 24.
    pub extra_products: u32,
    /// Most variants of a generated product (1..=this). Default 4.
    pub max_variants: u32,
    /// Extra built-in products get up to this many more variants. Default 2.
    pub extra_base_variants: u32,
    /// Of the extra products, how many are launched during the timeline (`products/create`
    /// then) rather than existing at its start. Default 4.
    pub launches: u32,
    /// Products that go on sale (price −20 %, `compare_at_price` = the old price) once;
    /// half of those return to the full price later. Default 0.3.
    pub sale_fraction: f64,
    /// Products archived during the timeline (`products/update` with `status: archived`);
    /// half of those are deleted later. Default 0.1.
    pub archive_fraction: f64,
    /// Products deleted outright (`products/delete`). Default 0.05.
    pub delete_fraction: f64,
    /// Products created as drafts and published (`active`) a few days later. Default 0.05.
    pub draft_fraction: f64,
    /// Add the odd products a sync must survive: one with no images, a null
    /// `product_type`, no category and 100 variants; one whose variants have no SKU.
    /// Default true.
    pub odd_products: bool,
    /// Product URL in the ground truth: `{shop_domain}` and `{handle}` are replaced.
    /// Default `https://{shop_domain}/products/{handle}`.
    pub url_template: String,
}

impl Default for ProductsConfig {
    fn default() -> Self {
        ProductsConfig {
            enabled: false,
            extra_products: 24,
            max_variants: 4,
            extra_base_variants: 2,
            launches: 4,
            sale_fraction: 0.3,
            archive_fraction: 0.1,
            delete_fraction: 0.05,
            draft_fraction: 0.05,
            odd_products: true,
            url_template: "https://{shop_domain}/products/{handle}".into(),
        }
    }
}

impl ProductsConfig {
    fn is_default(&self) -> bool {
        *self == ProductsConfig::default()
    }

    fn validate(&self) -> Result<(), SimError> {
        for (name, v) in [
            ("products.sale_fraction", self.sale_fraction),
            ("products.archive_fraction", self.archive_fraction),
            ("products.delete_fraction", self.delete_fraction),
            ("products.draft_fraction", self.draft_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(SimError::Config(format!(
                    "{name} must be in [0, 1], got {v}"
                )));
            }
        }
        if self.max_variants == 0 || self.max_variants > 100 {
            return Err(SimError::Config(
                "products.max_variants must be in 1..=100".into(),
            ));
        }
        if self.launches > self.extra_products {
            return Err(SimError::Config(
                "products.launches must not exceed products.extra_products".into(),
            ));
        }
        if self.extra_products > 10_000 {
            return Err(SimError::Config(
                "products.extra_products must be at most 10000".into(),
            ));
        }
        Ok(())
    }
}

/// Delivery faults: at-least-once and unordered, like Shopify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability that a delivery is sent again later with identical bytes and the same
    /// webhook id and event id (a duplicate after success).
    pub duplicate_probability: f64,
    /// Probability that a delivery is moved later in the stream.
    pub reorder_probability: f64,
    /// How many positions a reordered delivery may move (the out-of-order window).
    pub reorder_window: u32,
    /// Probability that an event also goes to a second subscription: same body and
    /// `X-Shopify-Event-Id`, new `X-Shopify-Webhook-Id`, `X-Shopify-Name` set.
    pub second_subscription_probability: f64,
    /// `X-Shopify-Name` of the second subscription.
    pub second_subscription_name: String,
    /// Probability that an `orders/updated` is re-delivered (same bytes and ids) after a
    /// newer state of the same order was delivered — a stale retry.
    pub stale_retry_probability: f64,
    /// Give deliveries of different topics from one merchant action (e.g. `orders/create`,
    /// `orders/paid`, `orders/updated`) the same `X-Shopify-Event-Id`, as Shopify does.
    /// Deduplicating on event id alone then loses topics; dedupe on webhook id.
    pub shared_event_id_across_topics: bool,
    /// Largest delay in milliseconds between an action and `X-Shopify-Triggered-At`.
    pub max_trigger_delay_ms: u32,
}

/// A sending-rate phase over a fraction of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePhase {
    /// Label for reports (e.g. `black-friday`).
    #[serde(default)]
    pub name: String,
    /// Where the phase starts, as a fraction (0..1) of the timeline.
    pub at_fraction: f64,
    /// How long it lasts, as a fraction of the timeline.
    pub duration_fraction: f64,
    /// Rate multiplier during the phase (10.0 = 10× the base rate).
    pub multiplier: f64,
}

/// A loyalty tier threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRule {
    /// Tier name (e.g. `gold`).
    pub name: String,
    /// Minimum lifetime value in shop currency (inclusive), as a decimal string.
    #[serde(default)]
    pub min_spend: Option<Decimal>,
    /// Minimum number of counted orders (inclusive).
    #[serde(default)]
    pub min_orders: Option<u32>,
}

/// Parameters of the truth rules (see the crate docs); they must match the processor's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TruthRules {
    /// A customer lapses this many days after their last counted order's `processed_at`.
    pub lapse_days: u32,
    /// An abandoned checkout is due this many minutes after its last update.
    pub abandon_after_minutes: u32,
    /// Tier thresholds, lowest first; a tier is reached when every threshold it sets is
    /// met, and the highest tier reached applies.
    pub tiers: Vec<TierRule>,
    /// Tier name below the lowest threshold.
    pub base_tier: String,
    /// Whether refunds, cancellations and deletions can lower the tier. Default `false`:
    /// a tier once reached is kept (the expected tier is the highest reached at any time).
    pub refunds_can_downgrade: bool,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            seed: 42,
            shop_domain: "tillstream-demo.myshopify.com".into(),
            shop_id: 548_380_009,
            shop_currency: "USD".into(),
            customers: 200,
            start: "2026-01-05T09:00:00-05:00".into(),
            days: 365,
            shop_utc_offset: "-05:00".into(),
            mean_days_between_sessions: 45.0,
            whale_fraction: 0.05,
            guest_fraction: 0.2,
            abandonment_fraction: 0.35,
            order_after_abandon_fraction: 0.15,
            guest_complete_later_fraction: 0.3,
            // Off by default so the default store's output (and every figure measured on it)
            // stays the same; `tests/tests/alignment.rs` turns it on (0.3).
            registered_guest_checkout_fraction: 0.0,
            checkout_delete_fraction: 0.1,
            no_contact_fraction: 0.15,
            cart_fraction: 0.5,
            refund_fraction: 0.05,
            partial_refund_fraction: 0.08,
            cancellation_fraction: 0.03,
            pending_payment_fraction: 0.05,
            order_delete_fraction: 0.01,
            fulfillment_fraction: 0.9,
            consent_change_fraction: 0.2,
            email_change_fraction: 0.1,
            sms_fraction: 0.3,
            redact_fraction: 0.03,
            data_request_fraction: 0.03,
            test_order_fraction: 0.02,
            multi_currency_fraction: 0.15,
            discount_fraction: 0.2,
            big_id_fraction: 0.2,
            shop_redact: false,
            session_margin_hours: 48,
            api_versions: vec!["2024-10".into(), "2026-07".into()],
            faults: Faults::default(),
            rate_per_sec: 50.0,
            phases: Vec::new(),
            rules: TruthRules::default(),
            products: ProductsConfig::default(),
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            duplicate_probability: 0.02,
            reorder_probability: 0.05,
            reorder_window: 20,
            second_subscription_probability: 0.03,
            second_subscription_name: "crm-sync".into(),
            stale_retry_probability: 0.05,
            shared_event_id_across_topics: true,
            max_trigger_delay_ms: 2000,
        }
    }
}

impl Default for TruthRules {
    fn default() -> Self {
        TruthRules {
            lapse_days: 90,
            abandon_after_minutes: 60,
            tiers: vec![
                TierRule {
                    name: "silver".into(),
                    min_spend: Some(Decimal::new(25_000, 2)),
                    min_orders: None,
                },
                TierRule {
                    name: "gold".into(),
                    min_spend: Some(Decimal::new(100_000, 2)),
                    min_orders: None,
                },
                TierRule {
                    name: "platinum".into(),
                    min_spend: Some(Decimal::new(500_000, 2)),
                    min_orders: None,
                },
            ],
            base_tier: "none".into(),
            refunds_can_downgrade: false,
        }
    }
}

impl ScenarioConfig {
    /// Parse a TOML scenario (missing fields take their defaults) and validate it.
    pub fn from_toml_str(text: &str) -> Result<Self, SimError> {
        let cfg: ScenarioConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a TOML scenario file.
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::io(path.display().to_string(), e))?;
        Self::from_toml_str(&text)
    }

    /// Serialise back to TOML (written next to generated runs for provenance).
    pub fn to_toml_string(&self) -> Result<String, SimError> {
        Ok(toml::to_string(self)?)
    }

    /// Check ranges so generation never has to guess (or panic) on bad input.
    pub fn validate(&self) -> Result<(), SimError> {
        self.products.validate()?;
        let fractions = [
            ("whale_fraction", self.whale_fraction),
            ("guest_fraction", self.guest_fraction),
            ("abandonment_fraction", self.abandonment_fraction),
            (
                "order_after_abandon_fraction",
                self.order_after_abandon_fraction,
            ),
            (
                "guest_complete_later_fraction",
                self.guest_complete_later_fraction,
            ),
            (
                "registered_guest_checkout_fraction",
                self.registered_guest_checkout_fraction,
            ),
            ("checkout_delete_fraction", self.checkout_delete_fraction),
            ("no_contact_fraction", self.no_contact_fraction),
            ("cart_fraction", self.cart_fraction),
            ("refund_fraction", self.refund_fraction),
            ("partial_refund_fraction", self.partial_refund_fraction),
            ("cancellation_fraction", self.cancellation_fraction),
            ("pending_payment_fraction", self.pending_payment_fraction),
            ("order_delete_fraction", self.order_delete_fraction),
            ("fulfillment_fraction", self.fulfillment_fraction),
            ("consent_change_fraction", self.consent_change_fraction),
            ("email_change_fraction", self.email_change_fraction),
            ("sms_fraction", self.sms_fraction),
            ("redact_fraction", self.redact_fraction),
            ("data_request_fraction", self.data_request_fraction),
            ("test_order_fraction", self.test_order_fraction),
            ("multi_currency_fraction", self.multi_currency_fraction),
            ("discount_fraction", self.discount_fraction),
            ("big_id_fraction", self.big_id_fraction),
            (
                "faults.duplicate_probability",
                self.faults.duplicate_probability,
            ),
            (
                "faults.reorder_probability",
                self.faults.reorder_probability,
            ),
            (
                "faults.second_subscription_probability",
                self.faults.second_subscription_probability,
            ),
            (
                "faults.stale_retry_probability",
                self.faults.stale_retry_probability,
            ),
        ];
        for (name, v) in fractions {
            if !(0.0..=1.0).contains(&v) {
                return Err(SimError::Config(format!(
                    "{name} must be in 0..=1, got {v}"
                )));
            }
        }
        let order_outcomes =
            self.refund_fraction + self.partial_refund_fraction + self.cancellation_fraction;
        if order_outcomes > 1.0 {
            return Err(SimError::Config(format!(
                "refund_fraction + partial_refund_fraction + cancellation_fraction must be <= 1, got {order_outcomes}"
            )));
        }
        if self.customers > 1_000_000 {
            return Err(SimError::Config("customers must be <= 1000000".into()));
        }
        if self.days == 0 || self.days > 3660 {
            return Err(SimError::Config("days must be in 1..=3660".into()));
        }
        if !(self.mean_days_between_sessions.is_finite()
            && (1.0..=3650.0).contains(&self.mean_days_between_sessions))
        {
            return Err(SimError::Config(
                "mean_days_between_sessions must be in 1..=3650".into(),
            ));
        }
        if !self.rate_per_sec.is_finite() || self.rate_per_sec < 0.0 {
            return Err(SimError::Config("rate_per_sec must be >= 0".into()));
        }
        for p in &self.phases {
            let ok = p.at_fraction.is_finite()
                && p.duration_fraction.is_finite()
                && p.multiplier.is_finite()
                && (0.0..=1.0).contains(&p.at_fraction)
                && p.duration_fraction > 0.0
                && p.duration_fraction <= 1.0
                && p.multiplier > 0.0
                && p.multiplier <= 1000.0;
            if !ok {
                return Err(SimError::Config(format!(
                    "phase {:?}: at_fraction in 0..=1, duration_fraction in (0,1], multiplier in (0,1000]",
                    p.name
                )));
            }
        }
        if self.api_versions.is_empty() {
            return Err(SimError::Config("api_versions must not be empty".into()));
        }
        for v in &self.api_versions {
            if !valid_api_version(v) {
                return Err(SimError::Config(format!(
                    "api version {v:?} is not YYYY-MM or unstable"
                )));
            }
        }
        if !self.shop_domain.ends_with(".myshopify.com") {
            return Err(SimError::Config(
                "shop_domain must be a *.myshopify.com domain".into(),
            ));
        }
        if self.shop_currency.len() != 3
            || !self.shop_currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(SimError::Config(
                "shop_currency must be a 3-letter ISO code".into(),
            ));
        }
        if self.faults.second_subscription_name.is_empty()
            || self.faults.second_subscription_name.len() > 50
            || !self
                .faults
                .second_subscription_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SimError::Config(
                "faults.second_subscription_name: 1-50 chars of [A-Za-z0-9_-]".into(),
            ));
        }
        if self.rules.lapse_days == 0 || self.rules.abandon_after_minutes == 0 {
            return Err(SimError::Config(
                "rules.lapse_days and rules.abandon_after_minutes must be > 0".into(),
            ));
        }
        let mut prev: Option<Decimal> = None;
        for t in &self.rules.tiers {
            if t.name.is_empty() || (t.min_spend.is_none() && t.min_orders.is_none()) {
                return Err(SimError::Config(
                    "rules.tiers: every tier needs a name and min_spend and/or min_orders".into(),
                ));
            }
            if let Some(m) = t.min_spend {
                if m <= Decimal::ZERO || prev.is_some_and(|p| m <= p) {
                    return Err(SimError::Config(
                        "rules.tiers: min_spend must be positive and increasing".into(),
                    ));
                }
                prev = Some(m);
            }
        }
        self.shop_offset()?;
        if !is_relative_start(&self.start) {
            // Keep every derived time (timeline end plus follow-ups) far from chrono's limits.
            let start = parse_start(&self.start)?;
            if !(1970..=9000).contains(&chrono::Datelike::year(&start)) {
                return Err(SimError::Time {
                    field: "start",
                    value: self.start.clone(),
                    reason: "year must be within 1970..=9000".into(),
                });
            }
        }
        Ok(())
    }

    /// The shop's UTC offset.
    pub fn shop_offset(&self) -> Result<FixedOffset, SimError> {
        parse_offset(&self.shop_utc_offset)
    }

    /// Absolute start time; fails with [`SimError::UnresolvedStart`] for `now`/`now-<N>d`.
    pub fn start_time(&self) -> Result<DateTime<FixedOffset>, SimError> {
        if is_relative_start(&self.start) {
            return Err(SimError::UnresolvedStart(self.start.clone()));
        }
        Ok(parse_start(&self.start)?.with_timezone(&self.shop_offset()?))
    }

    /// Replace a relative start (`now`, `now-<N>d`) with an absolute one computed from
    /// `now`, truncated to whole seconds. This is the only place a clock enters; the CLI
    /// calls it, `generate` never does.
    pub fn resolve_start(&self, now: DateTime<Utc>) -> Result<ScenarioConfig, SimError> {
        let mut out = self.clone();
        let s = self.start.trim();
        if !is_relative_start(s) {
            return Ok(out);
        }
        let days_ago: i64 = if s == "now" {
            0
        } else {
            let n = s
                .strip_prefix("now-")
                .and_then(|r| r.strip_suffix('d'))
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| SimError::Time {
                    field: "start",
                    value: s.to_owned(),
                    reason: "expected RFC 3339, `now` or `now-<N>d`".into(),
                })?;
            i64::from(n)
        };
        let at = now
            .checked_sub_signed(Duration::days(days_ago))
            .ok_or_else(|| SimError::Time {
                field: "start",
                value: s.to_owned(),
                reason: "too far in the past".into(),
            })?;
        let at = DateTime::<Utc>::from_timestamp(at.timestamp(), 0).unwrap_or(at);
        out.start = at.with_timezone(&self.shop_offset()?).to_rfc3339();
        Ok(out)
    }
}

fn is_relative_start(s: &str) -> bool {
    s.trim().starts_with("now")
}

fn parse_start(s: &str) -> Result<DateTime<FixedOffset>, SimError> {
    DateTime::parse_from_rfc3339(s.trim()).map_err(|e| SimError::Time {
        field: "start",
        value: s.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_offset(s: &str) -> Result<FixedOffset, SimError> {
    let err = |reason: &str| SimError::Time {
        field: "shop_utc_offset",
        value: s.to_owned(),
        reason: reason.to_owned(),
    };
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() != 6
        || b[3] != b':'
        || !(b[0] == b'+' || b[0] == b'-')
        || !digits(1..3)
        || !digits(4..6)
    {
        return Err(err("expected ±HH:MM"));
    }
    let h: i32 = s[1..3].parse().map_err(|_| err("bad hours"))?;
    let m: i32 = s[4..6].parse().map_err(|_| err("bad minutes"))?;
    let secs = (h * 3600 + m * 60) * if b[0] == b'-' { -1 } else { 1 };
    FixedOffset::east_opt(secs).ok_or_else(|| err("out of range"))
}

fn valid_api_version(v: &str) -> bool {
    if v == "unstable" {
        return true;
    }
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

/// Whether `version` serialises customers in the pre-2025-01 shape (tags, consent,
/// orders_count, total_spent on the customer payload). `unstable` counts as new.
pub fn is_legacy_api_version(version: &str) -> bool {
    version != "unstable" && version < "2025-01"
}
