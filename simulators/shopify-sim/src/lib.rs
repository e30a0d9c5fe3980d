//! shopify-sim: a synthetic Shopify store that generates signed webhook deliveries, sends them like Shopify does, and writes the expected outcome.
//!
//! # Pieces
//! - [`ScenarioConfig`] (TOML) → [`generate`] → [`Scenario`] { [`Delivery`] stream,
//!   [`ExpectedOutcome`] }. Generation is pure: ChaCha RNG seeded from the config, no
//!   wall clock, only ordered maps, so the same config gives byte-identical output.
//! - [`sign`]/[`verify`]: `X-Shopify-Hmac-Sha256`.
//! - [`send`]: POSTs deliveries at an offered rate with Shopify's delivery semantics
//!   (1 s connect / 5 s total timeout, non-2xx including 3xx = failure, up to 8 retries of
//!   identical bytes with the same webhook id, exponential backoff with compressible time).
//! - [`fixtures`]: one signed fixture per topic (plus edge-case variants) for ingest tests.
//! - [`spawn_admin`]: a fake GraphQL Admin API (bulk operations over customers, orders and
//!   products, consent mutations that send the consent webhooks back, cost-based throttling,
//!   shuffled JSONL, a failing operation with partial data) serving the same store.
//! - `[products] enabled` ([`ProductsConfig`]): a product catalogue that changes over the
//!   timeline (`products/*` webhooks), orders that buy it, and [`ProductsExpectation`].
//!
//! # Truth rules (what [`ExpectedOutcome`] asserts; the processor must implement the same)
//! People are keyed by Shopify customer id (decimal string) or, for guests,
//! `email:<lower-cased email>`. All money is shop currency.
//! - **Order value** (money kept): for a non-test order that reached `paid` and was not
//!   deleted: `total_price` (shop money) − Σ refunds. A refund's amount is the sum of its
//!   `status: "success"` transactions when they are in the shop currency; otherwise
//!   (multi-currency orders, transactions in the presentment currency) the shop money of
//!   `refund_line_items[].subtotal_set + total_tax_set` plus
//!   `refund_shipping_lines[].subtotal_amount_set`. Orders never paid (pending then voided),
//!   test orders (`test: true`) and deleted orders (`orders/delete`) contribute nothing.
//!   A cancelled order with everything refunded is worth 0.
//! - **Lifetime value** = Σ order values, 2 dp.
//! - **Counted orders** (`orders_count`, first/last order, lapses): orders with a value
//!   (as above) except cancelled orders whose refunds cover the total.
//! - **First purchase**: the first non-test order to reach `paid` (by paid time); a later
//!   cancellation or deletion doesn't move it (the event has already fired).
//! - **Tier**: a tier is reached when every threshold it sets (`min_spend` on lifetime
//!   value, optional `min_orders` on counted orders) is met (defaults silver 250.00, gold
//!   1000.00, platinum 5000.00; below: `base_tier` = `none`). Tiers are kept once reached
//!   (`refunds_can_downgrade = false`, as in the rules engine), so the expected tier is
//!   the highest reached while replaying payments, refunds, cancellations and deletions
//!   in time order (`peak_lifetime_value` shows the value it was reached with).
//! - **Lapse**: for each counted order, due at `processed_at + lapse_days` (90) unless the
//!   next counted order comes at or before that; one lapse per gap; only lapses due
//!   before the end of the timeline (and before a redaction) are expected. The next
//!   counted order after a lapse is a **reactivation**, and so is a paid order placed after
//!   a lapse and taken back later (deleted, or cancelled and refunded in full): the
//!   announcement stands, as the first purchase and the tiers reached do.
//! - **Abandoned checkout**: due `abandon_after_minutes` (60) after the checkout's last
//!   update, where any update arriving before the deadline re-arms it. It must fire
//!   unless (in this priority) it never had an email or phone (`no-contact`), it completed
//!   at or before the due time (`completed`), `checkouts/delete` arrived at or before the
//!   due time (`deleted`; correlate by `cart_token`, the delete payload has no `token`),
//!   or the same person placed a non-test order between checkout creation and the due
//!   time (`ordered-in-between`). A checkout completed after its due time (a guest coming
//!   back days later) must still have fired. Consent is reported separately and is not
//!   part of the abandonment rule.
//! - Cancellations happen within 48 h and deletions within 7 days of the order, so
//!   evaluating on final order state agrees with real-time evaluation.
//! - Test orders are ignored by every rule.
//!
//! # Delivery stream
//! Beyond one delivery per action: identical duplicates, second-subscription copies (new
//! webhook id, same event id, `X-Shopify-Name` set), stale `orders/updated` retries after
//! a newer state, local reordering, and (by default) one event id shared by the topics
//! of one merchant action (e.g. `orders/create` + `orders/paid` + `orders/updated`). So
//! deduplicate on `(shop, X-Shopify-Webhook-Id)`, never on event id alone.

mod admin;
mod catalog;
mod config;
mod delivery;
mod error;
mod expected;
mod expected_products;
mod fixtures;
mod json;
mod model;
mod payloads;
mod product_payloads;
mod sender;
mod sign;
mod timeline;

use std::collections::BTreeMap;

pub use admin::{
    AdminOptions, AdminServer, AdminStats, AdminStore, FinishWebhook, Resource, SyntheticSpec,
    SyntheticStore, UpdatedRange, spawn_admin, spawn_synthetic_admin,
};
pub use config::{
    Faults, ProductsConfig, RatePhase, ScenarioConfig, TierRule, TruthRules, is_legacy_api_version,
};
pub use delivery::{Delivery, DeliveryKind, format_triggered_at};
pub use error::SimError;
pub use expected::{
    AbandonedCheckout, CustomerExpectation, DeliveryStats, ExpectedOutcome, NotFireReason,
    OrderExpectation,
};
pub use expected_products::{CatalogProduct, CatalogVariant, ItemEnrichment, ProductsExpectation};
pub use fixtures::{Fixture, fixtures, read_deliveries_jsonl, write_fixtures, write_run};
pub use sender::{LatencySummary, SendOptions, SendReport, rate_multiplier_at, send};
pub use sign::{sign, verify};

use crate::model::Topic;
use crate::payloads::Ctx;

/// A generated run: the deliveries in send order and the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Deliveries in the order they should be sent.
    pub deliveries: Vec<Delivery>,
    /// Expected outcome once everything has been processed.
    pub expected: ExpectedOutcome,
}

/// Generate the deliveries and expected outcome for `cfg`. Pure and deterministic.
///
/// Fails on an invalid config, or when `start` is relative (`now…`) and has not been
/// resolved with [`ScenarioConfig::resolve_start`].
pub fn generate(cfg: &ScenarioConfig) -> Result<Scenario, SimError> {
    let mut tl = timeline::build(cfg)?;
    // Timeline order; simultaneous actions keep per-person creation order.
    tl.actions.sort_by_key(|a| (a.at, a.person, a.seq));

    // Order numbers follow creation order across the whole shop, like Shopify's.
    let mut order_numbers = BTreeMap::new();
    let mut next = 1001u64;
    for a in &tl.actions {
        if let (Topic::OrdersCreate, model::Subject::Order(o)) = (a.topic, &a.subject) {
            order_numbers.entry(o.id).or_insert_with(|| {
                next += 1;
                next - 1
            });
        }
    }
    let ctx = Ctx {
        shop_domain: &cfg.shop_domain,
        shop_id: cfg.shop_id,
        currency: &cfg.shop_currency,
        catalogue: &tl.catalogue,
        order_numbers: &order_numbers,
        catalog: tl.catalog.as_ref(),
    };
    let mut rng = timeline::stream(cfg.seed, timeline::DELIVERY_STREAM);
    let deliveries = delivery::deliveries(cfg, &ctx, &tl.actions, &mut rng);
    let expected = expected::compute(cfg, &tl, &deliveries);
    Ok(Scenario {
        deliveries,
        expected,
    })
}
