//! The rules file (`tillstream-rules.toml`): thresholds, delays, horizons, names and ids, validated.
//!
//! Every field has a default, so a rules file lists only what it changes. The defaults are the
//! ones the rest of the system (notably the Shopify simulator's expected outcome) assumes.
//! [`RulesConfig::from_toml_str`] reports every problem it finds at once, not just the first.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::catalog::config::CatalogConfig;
pub use crate::consent_policy::{IterableEventsConfig, SourceOfTruth, SourceOfTruthConfig};
pub use validate::{ConfigError, ConfigErrors};

mod validate;

/// Everything the marketing rules can be told.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// How Iterable users are identified (must match the Iterable project type).
    pub identity: IdentityConfig,
    /// Loyalty (VIP) tiers.
    pub tiers: TiersConfig,
    /// Win-back: lapse after N days without a paid order.
    pub winback: WinbackConfig,
    /// Abandoned checkouts and Iterable's cart.
    pub checkout: CheckoutConfig,
    /// Welcome (`customer_created`) options.
    pub welcome: WelcomeConfig,
    /// Refund options.
    pub refunds: RefundsConfig,
    /// Marketing consent mapping to Iterable lists and channels.
    pub consent: ConsentConfig,
    /// GDPR (`customers/redact`) behaviour.
    pub gdpr: GdprConfig,
    /// Freshness horizons: how old a trigger may be and still start a journey.
    pub freshness: FreshnessConfig,
    /// Products: URLs, enrichment of commerce items, the Iterable catalog.
    pub catalog: CatalogConfig,
    /// Tolerance for events that arrive out of order.
    pub timing: TimingConfig,
    /// Iterable profile field names.
    pub fields: FieldNames,
    /// Iterable custom event names.
    pub events: EventNames,
}

/// Iterable's project types (Iterable calls them "unique identifier" modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// UserID-based project: `userId` = Shopify customer id; email is a profile field.
    UserId,
    /// Email-based project: users are identified by email; email changes use `updateEmail`.
    Email,
    /// Hybrid project: `userId` = Shopify customer id when there is one, plus email.
    #[default]
    Hybrid,
}

/// What to do with people known only by email (guest checkouts and orders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestPolicy {
    /// Send nothing for guests (the only safe choice for a userID-based project).
    Skip,
    /// Identify guests by email.
    Email,
}

/// Identity settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// `user_id`, `email` or `hybrid` (default), matching the Iterable project type.
    pub mode: IdentityMode,
    /// Guests (email only): `skip` or `email`. Unset: `skip` in `user_id` mode, else `email`.
    pub guests: Option<GuestPolicy>,
    /// What `customers/delete` does: `keep` (default) or `delete`.
    pub customer_delete: CustomerDeletePolicy,
}

/// What a Shopify `customers/delete` does to the Iterable user and tillstream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerDeletePolicy {
    /// Keep the Iterable user and the state: the person's history stays available to
    /// marketers (Shopify deletes only customers without orders; GDPR goes through redact).
    #[default]
    Keep,
    /// Delete the Iterable user (`DELETE /api/users/...`, not a GDPR forget), release the
    /// email so later guest activity is a guest's, and purge the customer key's state.
    Delete,
}

impl IdentityConfig {
    /// The effective guest policy.
    pub fn guest_policy(&self) -> GuestPolicy {
        self.guests.unwrap_or(match self.mode {
            IdentityMode::UserId => GuestPolicy::Skip,
            IdentityMode::Email | IdentityMode::Hybrid => GuestPolicy::Email,
        })
    }
}

/// One VIP tier. A tier is reached when every threshold it sets is met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLevel {
    /// Tier name written to the profile and the `vip_tier_upgraded` event (e.g. `gold`).
    pub name: String,
    /// Minimum lifetime value in shop currency (inclusive), e.g. `"1000.00"`.
    #[serde(
        default,
        deserialize_with = "de_opt_decimal",
        serialize_with = "ser_opt_decimal"
    )]
    pub min_spend: Option<Decimal>,
    /// Minimum number of counted orders (inclusive).
    #[serde(default)]
    pub min_orders: Option<u32>,
    /// Iterable list the customer joins while in this tier (requires email consent).
    #[serde(default)]
    pub list_id: Option<i64>,
}

/// VIP tier settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// Tier name below the lowest level.
    pub base_tier: String,
    /// Whether refunds, cancellations and deletions can lower the tier. Default `false`:
    /// a tier once reached is kept.
    pub refunds_can_downgrade: bool,
    /// Levels from lowest to highest; the highest level reached applies.
    pub levels: Vec<TierLevel>,
}

impl Default for TiersConfig {
    fn default() -> Self {
        let level = |name: &str, cents: i64| TierLevel {
            name: name.into(),
            min_spend: Some(Decimal::new(cents, 2)),
            min_orders: None,
            list_id: None,
        };
        Self {
            base_tier: "none".into(),
            refunds_can_downgrade: false,
            levels: vec![
                level("silver", 25_000),
                level("gold", 100_000),
                level("platinum", 500_000),
            ],
        }
    }
}

/// Win-back settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WinbackConfig {
    /// Whether `customer_lapsed` / `customer_reactivated` are produced.
    pub enabled: bool,
    /// Days after the last counted order's `processed_at` at which a customer lapses.
    pub lapse_days: u32,
}

impl Default for WinbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lapse_days: 90,
        }
    }
}

/// Abandoned-checkout settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutConfig {
    /// Whether `checkout_abandoned` is produced.
    pub enabled: bool,
    /// Minutes after the checkout's last `updated_at` at which it counts as abandoned.
    pub abandon_after_minutes: u32,
    /// Keep Iterable's cart (`shoppingCartItems`) current with `commerce/updateCart`.
    pub update_cart: bool,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            abandon_after_minutes: 60,
            update_cart: true,
        }
    }
}

/// Welcome settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WelcomeConfig {
    /// Iterable list new customers join (only with email marketing consent).
    pub list_id: Option<i64>,
}

/// Refund settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefundsConfig {
    /// Days the "recent refund" profile flag stays `true` after the last refund (0 = never set).
    pub recent_refund_days: u32,
}

impl Default for RefundsConfig {
    fn default() -> Self {
        Self {
            recent_refund_days: 30,
        }
    }
}

/// Consent mapping. Shopify's consent is the source of truth; nobody without consent is
/// subscribed to anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsentConfig {
    /// Lists joined while email consent is `subscribed` (left when it is withdrawn).
    pub email_list_ids: Vec<i64>,
    /// Lists joined while SMS consent is `subscribed`.
    pub sms_list_ids: Vec<i64>,
    /// Iterable marketing channel for email: unsubscribed unless email consent is `subscribed`.
    pub email_channel_id: Option<i64>,
    /// Iterable marketing channel for SMS: unsubscribed unless SMS consent is `subscribed`.
    pub sms_channel_id: Option<i64>,
    /// Count `subscribed` as consent only with `opt_in_level = confirmed_opt_in`.
    pub require_confirmed_opt_in: bool,
    /// Treat a guest order's or checkout's `buyer_accepts_marketing: true` as email consent.
    pub guest_checkout_consent: bool,
    /// Two-way consent: which side wins per attribute (`shopify`, `iterable`, `latest`).
    pub source_of_truth: SourceOfTruthConfig,
    /// Two-way consent: how Iterable's system webhooks count.
    pub iterable_events: IterableEventsConfig,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        Self {
            email_list_ids: Vec::new(),
            sms_list_ids: Vec::new(),
            email_channel_id: None,
            sms_channel_id: None,
            require_confirmed_opt_in: false,
            guest_checkout_consent: true,
            source_of_truth: SourceOfTruthConfig::default(),
            iterable_events: IterableEventsConfig::default(),
        }
    }
}

/// Which Iterable call a GDPR redaction makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactMode {
    /// `users/forget`: delete and block future collection.
    #[default]
    Forget,
    /// `DELETE /users/...`: delete only.
    Delete,
    /// Purge tillstream's state but send nothing to Iterable.
    None,
}

/// GDPR settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GdprConfig {
    /// What `customers/redact` does in Iterable: `forget` (default), `delete` or `none`.
    pub redact: RedactMode,
}

/// A freshness horizon: `off`, or a duration such as `90m`, `36h`, `7d`, `3600s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon(pub String);

impl Horizon {
    /// The horizon in milliseconds, `None` for `off`.
    pub fn millis(&self) -> Result<Option<i64>, String> {
        parse_duration_ms(&self.0)
    }
}

impl Serialize for Horizon {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Horizon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Kept as text so validation can report a bad value together with every other problem.
        String::deserialize(d).map(Horizon)
    }
}

fn h(s: &str) -> Horizon {
    Horizon(s.into())
}

/// Per-kind freshness horizons. A journey-triggering event whose due time is older than its
/// horizon at the moment it would be emitted (`wall clock − due > horizon`) is not sent; state
/// and profile fields are still updated. This is what keeps a backfill or a replay from
/// sending last year's abandoned checkouts. `off` disables the check for that kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreshnessConfig {
    /// `customer_created`.
    pub customer_created: Horizon,
    /// `first_purchase`.
    pub first_purchase: Horizon,
    /// `commerce/trackPurchase` (history, so `off` by default).
    pub purchase: Horizon,
    /// `vip_tier_upgraded`.
    pub vip_tier_upgraded: Horizon,
    /// `customer_lapsed`.
    pub customer_lapsed: Horizon,
    /// `customer_reactivated`.
    pub customer_reactivated: Horizon,
    /// `checkout_abandoned`.
    pub checkout_abandoned: Horizon,
    /// `commerce/updateCart` (Iterable records an `updateCart` event that journeys can use).
    pub cart_updated: Horizon,
    /// `order_fulfilled`.
    pub order_fulfilled: Horizon,
    /// `order_refunded`.
    pub order_refunded: Horizon,
    /// `order_cancelled`.
    pub order_cancelled: Horizon,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        Self {
            customer_created: h("3d"),
            first_purchase: h("3d"),
            purchase: h("off"),
            vip_tier_upgraded: h("7d"),
            customer_lapsed: h("7d"),
            customer_reactivated: h("3d"),
            checkout_abandoned: h("1d"),
            cart_updated: h("1d"),
            order_fulfilled: h("3d"),
            order_refunded: h("3d"),
            order_cancelled: h("3d"),
        }
    }
}

impl FreshnessConfig {
    /// `(setting, horizon)` pairs in a fixed order (the order of the rules' trigger kinds).
    pub fn entries(&self) -> [(&'static str, &Horizon); 11] {
        [
            ("customer_created", &self.customer_created),
            ("first_purchase", &self.first_purchase),
            ("purchase", &self.purchase),
            ("vip_tier_upgraded", &self.vip_tier_upgraded),
            ("customer_lapsed", &self.customer_lapsed),
            ("customer_reactivated", &self.customer_reactivated),
            ("checkout_abandoned", &self.checkout_abandoned),
            ("cart_updated", &self.cart_updated),
            ("order_fulfilled", &self.order_fulfilled),
            ("order_refunded", &self.order_refunded),
            ("order_cancelled", &self.order_cancelled),
        ]
    }
}

/// Out-of-order tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingConfig {
    /// Timers fire this long after their decision time (`off` = at it), so that events up to
    /// this late (Shopify does not order deliveries) are still taken into account: a checkout
    /// completed 59 minutes after its last update but delivered 3 minutes late still stops the
    /// abandonment. Decisions use the business time; only the firing is delayed.
    pub out_of_order_grace: Horizon,
}

impl Default for TimingConfig {
    fn default() -> Self {
        Self {
            out_of_order_grace: h("5m"),
        }
    }
}

macro_rules! names {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident = $default:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $field: String,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default.into(),)* }
            }
        }

        impl $name {
            /// `(setting, value)` pairs, for validation and documentation.
            pub fn entries(&self) -> Vec<(&'static str, &str)> {
                vec![$((stringify!($field), self.$field.as_str()),)*]
            }
        }
    };
}

names! {
    /// Iterable profile field names (see README.md for types and meaning).
    FieldNames {
        /// Shopify customer id (string).
        customer_id = "shopify_customer_id",
        /// First name.
        first_name = "firstName",
        /// Last name.
        last_name = "lastName",
        /// Phone in E.164 (Iterable's SMS field).
        phone = "phoneNumber",
        /// Shopify customer state (`enabled`, `disabled`, `invited`, `declined`).
        customer_state = "shopify_customer_state",
        /// When the Shopify customer was created (date).
        created_at = "shopify_created_at",
        /// Default address: city.
        city = "shopify_city",
        /// Default address: province code.
        province_code = "shopify_province_code",
        /// Default address: country code.
        country_code = "shopify_country_code",
        /// Default address: postal code.
        zip = "shopify_zip",
        /// Customer tags (legacy payloads only), array of strings.
        tags = "shopify_tags",
        /// Lifetime value, shop currency (number, 2 dp).
        lifetime_value = "shopify_lifetime_value",
        /// Counted orders (number).
        orders_count = "shopify_orders_count",
        /// Average order value, shop currency (number, 2 dp).
        average_order_value = "shopify_average_order_value",
        /// First counted order (date).
        first_order_at = "shopify_first_order_at",
        /// Last counted order (date).
        last_order_at = "shopify_last_order_at",
        /// Last counted order id (string).
        last_order_id = "shopify_last_order_id",
        /// Shop currency of the money fields (ISO code).
        currency = "shopify_currency",
        /// Current VIP tier name.
        vip_tier = "shopify_vip_tier",
        /// Lapsed (no paid order for `lapse_days`), boolean.
        lapsed = "shopify_lapsed",
        /// A refund within `recent_refund_days`, boolean.
        recent_refund = "shopify_recent_refund",
        /// Last refund (date).
        last_refund_at = "shopify_last_refund_at",
        /// Email marketing consent state as Shopify reports it.
        email_consent = "shopify_email_consent",
        /// SMS marketing consent state as Shopify reports it.
        sms_consent = "shopify_sms_consent",
    }
}

names! {
    /// Iterable custom event names.
    EventNames {
        /// `customers/create`.
        customer_created = "customer_created",
        /// The first paid order.
        first_purchase = "first_purchase",
        /// A VIP tier was reached for the first time.
        vip_tier_upgraded = "vip_tier_upgraded",
        /// No paid order for `lapse_days`.
        customer_lapsed = "customer_lapsed",
        /// A paid order after a lapse.
        customer_reactivated = "customer_reactivated",
        /// A checkout with contact details was abandoned.
        checkout_abandoned = "checkout_abandoned",
        /// An order was fulfilled.
        order_fulfilled = "order_fulfilled",
        /// Money was refunded.
        order_refunded = "order_refunded",
        /// An order was cancelled.
        order_cancelled = "order_cancelled",
    }
}

/// Parses `off`, `<n>s`, `<n>m`, `<n>h` or `<n>d` into milliseconds.
pub(crate) fn parse_duration_ms(raw: &str) -> Result<Option<i64>, String> {
    let s = raw.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || format!("{raw:?} is not a duration; use e.g. \"90m\", \"36h\", \"7d\" or \"off\"");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(unit_at);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let per = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!(
            "{raw:?}: a horizon of zero would suppress everything; use \"off\" to disable the check"
        ));
    }
    n.checked_mul(per)
        .filter(|v| *v <= 3650 * 86_400_000)
        .map(Some)
        .ok_or_else(|| format!("{raw:?} is longer than 10 years"))
}

/// Money in TOML may be written as a string (`"250.00"`, exact) or a number.
fn de_opt_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
        Float(f64),
    }
    let raw = Option::<Raw>::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(Raw::Text(s)) => Decimal::from_str(s.trim())
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a decimal amount"))),
        Some(Raw::Int(i)) => Ok(Some(Decimal::from(i))),
        Some(Raw::Float(f)) => Decimal::from_str(&f.to_string())
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{f} is not a decimal amount"))),
    }
}

fn ser_opt_decimal<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(RulesConfig::default().validate(), Ok(()));
        assert_eq!(
            RulesConfig::from_toml_str("").map(|c| c.winback.lapse_days),
            Ok(90)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("off"), Ok(None));
        assert_eq!(parse_duration_ms("90m"), Ok(Some(5_400_000)));
        assert_eq!(parse_duration_ms("2d"), Ok(Some(172_800_000)));
        assert!(parse_duration_ms("2 weeks").is_err());
        assert!(parse_duration_ms("0h").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
