//! The Shopify payloads the rules read, for API versions before and after 2025-01.
//!
//! Only the fields the rules use are declared; everything else is skipped. Ids are 64-bit
//! integers (a JSON number, a decimal string or a `gid://` string; never a float), money is
//! `rust_decimal` (from Shopify's decimal strings, or from numbers where Shopify sends numbers),
//! timestamps keep their offsets and become Unix milliseconds. Customer payloads from 2025-01 on
//! no longer carry tags or consent (consent has its own topics); every such field is optional,
//! so both shapes parse with the same types and absent means "unknown", never "withdrawn".

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::domain::RuleError;

mod customer_topics;
mod scalars;
pub use customer_topics::*;
pub use scalars::{Id, Money, Ts};
use scalars::{first_filled, lenient_ts, tags};

/// Parses a topic's body, mapping any failure to [`RuleError::Unparseable`] with the path of
/// the field at fault (`line_items[0].price: "12,50" is not a decimal amount`). Coercions of
/// secondary fields are noted for [`crate::lenient::take`].
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(
    topic: &str,
    body: &[u8],
) -> Result<T, RuleError> {
    // Tracking the path allocates a segment per field of every input (the parse was 14 % of
    // the processor's CPU in perf, processor-bench); only a body that fails is parsed again
    // to say where.
    let mark = crate::lenient::mark();
    // A body valid as UTF-8 as a whole (every real one) is checked once here, so the parser
    // does not check each string again (a fifth of the parse on shopify-sim's orders). Any
    // other body keeps the byte parser's answer: it does not check the strings it skips.
    let fast = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    if let Ok(v) = fast {
        return Ok(v);
    }
    crate::lenient::rewind(mark);
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        RuleError::Unparseable {
            topic: topic.to_owned(),
            message: if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            },
        }
    })
}

/// Whether a webhook API version predates 2025-01 (legacy customer shape).
pub fn is_legacy_api(version: Option<&str>) -> bool {
    // Versions are `YYYY-MM` (or `unstable`), so a string comparison orders them.
    version.is_some_and(|v| {
        v.len() >= 7 && v.as_bytes()[..4].iter().all(u8::is_ascii_digit) && v < "2025-01"
    })
}

/// `{"amount": "...", "currency_code": "USD"}` (also `currency` in a few places).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MoneyAmount {
    /// The amount.
    pub amount: Option<Money>,
    /// ISO currency code.
    #[serde(alias = "currency")]
    pub currency_code: Option<String>,
}

/// A `*_set` object: the amount in shop and presentment currency.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MoneySet {
    /// Shop currency.
    pub shop_money: Option<MoneyAmount>,
    /// What the buyer saw.
    pub presentment_money: Option<MoneyAmount>,
}

impl MoneySet {
    /// The shop-money amount, when present.
    pub fn shop(&self) -> Option<Decimal> {
        self.shop_money.as_ref().and_then(|m| m.amount).map(|m| m.0)
    }
    /// The presentment amount, when present.
    pub fn presentment(&self) -> Option<Decimal> {
        self.presentment_money
            .as_ref()
            .and_then(|m| m.amount)
            .map(|m| m.0)
    }
    /// The shop currency code, when present.
    pub fn shop_currency(&self) -> Option<&str> {
        self.shop_money
            .as_ref()
            .and_then(|m| m.currency_code.as_deref())
    }
}

/// Marketing consent (`email_marketing_consent`, `sms_marketing_consent`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Consent {
    /// `subscribed`, `not_subscribed`, `unsubscribed`, `pending`, `redacted`, `invalid`.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub state: Option<String>,
    /// `single_opt_in`, `confirmed_opt_in`, `unknown`.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub opt_in_level: Option<String>,
    /// When the consent last changed.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub consent_updated_at: Option<Ts>,
}

/// The address subset the profile keeps.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Address {
    /// City.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub city: Option<String>,
    /// Province code.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub province_code: Option<String>,
    /// Country code.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub country_code: Option<String>,
    /// Postal code.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub zip: Option<String>,
}

/// A customer: `customers/*` payloads and the `customer` embedded in orders and checkouts.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Customer {
    /// Customer id.
    pub id: Option<Id>,
    /// Email.
    pub email: Option<String>,
    /// Phone (E.164).
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub phone: Option<String>,
    /// First name.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub last_name: Option<String>,
    /// `enabled`, `disabled`, `invited`, `declined`.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub state: Option<String>,
    /// Created.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<Ts>,
    /// Last updated.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub updated_at: Option<Ts>,
    /// Default address.
    pub default_address: Option<Address>,
    /// Tags (≤ 2024-10 only).
    #[serde(default, deserialize_with = "tags")]
    pub tags: Option<Vec<String>>,
    /// Email consent (≤ 2024-10 only).
    pub email_marketing_consent: Option<Consent>,
    /// SMS consent (≤ 2024-10 only).
    pub sms_marketing_consent: Option<Consent>,
    /// Pre-2022 boolean consent.
    #[serde(default, deserialize_with = "crate::lenient::flag")]
    pub accepts_marketing: Option<bool>,
    /// When `accepts_marketing` last changed.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub accepts_marketing_updated_at: Option<Ts>,
    /// Pre-2022 opt-in level.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub marketing_opt_in_level: Option<String>,
}

/// A line of an order or checkout.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct LineItem {
    /// Line id.
    pub id: Option<Id>,
    /// Checkout line key.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub key: Option<String>,
    /// Variant id.
    pub variant_id: Option<Id>,
    /// Product id.
    pub product_id: Option<Id>,
    /// SKU.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub sku: Option<String>,
    /// Product title.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub title: Option<String>,
    /// Variant title.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub variant_title: Option<String>,
    /// Product and variant title (orders).
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub name: Option<String>,
    /// Vendor.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub vendor: Option<String>,
    /// Product type, when a payload carries it.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub product_type: Option<String>,
    /// Product handle, when a payload carries it.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub handle: Option<String>,
    /// Quantity.
    #[serde(default, deserialize_with = "crate::lenient::int")]
    pub quantity: Option<i64>,
    /// Unit list price (shop currency for orders).
    pub price: Option<Money>,
    /// Unit price in both currencies.
    pub price_set: Option<MoneySet>,
    /// Line price (checkouts).
    pub line_price: Option<Money>,
    /// Product URL, when a payload carries it.
    #[serde(alias = "product_url")]
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub url: Option<String>,
    /// Image URL, when a payload carries it.
    #[serde(alias = "image")]
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub image_url: Option<String>,
}

/// A discount code.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct DiscountCode {
    /// The code.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub code: Option<String>,
}

/// A payment transaction on a refund.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Transaction {
    /// Transaction id.
    pub id: Option<Id>,
    /// `refund`, `sale`, ...
    pub kind: Option<String>,
    /// `success`, `failure`, `pending`, `error`.
    pub status: Option<String>,
    /// Amount in `currency`.
    pub amount: Option<Money>,
    /// Transaction currency (presentment currency for multi-currency orders).
    pub currency: Option<String>,
    /// Test transaction.
    #[serde(default, deserialize_with = "crate::lenient::strict_flag")]
    pub test: Option<bool>,
    /// Amount in both currencies, when sent.
    pub amount_set: Option<MoneySet>,
}

/// A refunded line.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RefundLineItem {
    /// Subtotal in both currencies.
    pub subtotal_set: Option<MoneySet>,
    /// Tax in both currencies.
    pub total_tax_set: Option<MoneySet>,
}

/// A refunded shipping line.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RefundShippingLine {
    /// Subtotal in both currencies.
    pub subtotal_amount_set: Option<MoneySet>,
    /// Tax in both currencies.
    pub tax_amount_set: Option<MoneySet>,
}

/// `refunds/create`, and the entries of an order's `refunds[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    /// Refund id.
    pub id: Id,
    /// Order id.
    pub order_id: Option<Id>,
    /// Created.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<Ts>,
    /// Processed.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub processed_at: Option<Ts>,
    /// Merchant note.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub note: Option<String>,
    /// Money movements.
    #[serde(default)]
    pub transactions: Vec<Transaction>,
    /// Refunded lines.
    #[serde(default)]
    pub refund_line_items: Vec<RefundLineItem>,
    /// Refunded shipping.
    #[serde(default)]
    pub refund_shipping_lines: Vec<RefundShippingLine>,
}

/// A fulfillment.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Fulfillment {
    /// Created.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<Ts>,
    /// `success`, ...
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub status: Option<String>,
    /// Carrier.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub tracking_company: Option<String>,
    /// Tracking number.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub tracking_number: Option<String>,
    /// Tracking URL.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub tracking_url: Option<String>,
}

/// `orders/*` (create, updated, paid, cancelled, fulfilled, partially_fulfilled).
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: Id,
    /// `#1001`.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub name: Option<String>,
    /// Order number.
    #[serde(default, deserialize_with = "crate::lenient::uint")]
    pub order_number: Option<u64>,
    /// Contact email.
    pub email: Option<String>,
    /// Contact email (newer name).
    pub contact_email: Option<String>,
    /// Created.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<Ts>,
    /// Updated: orders the versions of one order.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub updated_at: Option<Ts>,
    /// Processed: the business time of the purchase.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub processed_at: Option<Ts>,
    /// Cancelled.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub cancelled_at: Option<Ts>,
    /// Why.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub cancel_reason: Option<String>,
    /// Test order.
    #[serde(default, deserialize_with = "crate::lenient::strict_flag")]
    pub test: Option<bool>,
    /// Shop currency.
    pub currency: Option<String>,
    /// Buyer's currency.
    pub presentment_currency: Option<String>,
    /// Total, shop currency.
    pub total_price: Option<Money>,
    /// Total, both currencies.
    pub total_price_set: Option<MoneySet>,
    /// Subtotal, both currencies.
    pub subtotal_price_set: Option<MoneySet>,
    /// Discounts, both currencies.
    pub total_discounts_set: Option<MoneySet>,
    /// Tax, both currencies.
    pub total_tax_set: Option<MoneySet>,
    /// Shipping, both currencies.
    pub total_shipping_price_set: Option<MoneySet>,
    /// `pending|authorized|partially_paid|paid|partially_refunded|refunded|voided`.
    pub financial_status: Option<String>,
    /// `null|partial|fulfilled|restocked`.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub fulfillment_status: Option<String>,
    /// Token of the checkout this order completed.
    pub checkout_token: Option<String>,
    /// `web`, `pos`, ...
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub source_name: Option<String>,
    /// Order status page.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub order_status_url: Option<String>,
    /// Checkout marketing checkbox.
    #[serde(default, deserialize_with = "crate::lenient::flag")]
    pub buyer_accepts_marketing: Option<bool>,
    /// The customer (absent or null for guests).
    pub customer: Option<Customer>,
    /// Lines.
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    /// Discount codes.
    #[serde(default)]
    pub discount_codes: Vec<DiscountCode>,
    /// Refunds so far (newer payloads of a refunded order carry them).
    #[serde(default)]
    pub refunds: Vec<Refund>,
    /// Fulfillments.
    #[serde(default)]
    pub fulfillments: Vec<Fulfillment>,
}

impl Order {
    /// The contact email: order email, then contact email, then the customer's.
    pub fn contact(&self) -> Option<&str> {
        first_filled([
            self.email.as_deref(),
            self.contact_email.as_deref(),
            self.customer.as_ref().and_then(|c| c.email.as_deref()),
        ])
    }

    /// The total in shop money.
    pub fn total_shop(&self) -> Option<Decimal> {
        self.total_price_set
            .as_ref()
            .and_then(MoneySet::shop)
            .or(self.total_price.map(|m| m.0))
    }

    /// The total in presentment money, when the buyer saw another currency.
    pub fn total_presentment(&self) -> Option<Decimal> {
        let shop = self.currency.as_deref()?;
        let pres = self.presentment_currency.as_deref()?;
        if shop.eq_ignore_ascii_case(pres) {
            return None;
        }
        self.total_price_set
            .as_ref()
            .and_then(MoneySet::presentment)
    }
}

/// When an order was placed, read without the rest of the payload (the email index decides
/// whose order it is by that time).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Placement {
    /// Created.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<Ts>,
    /// Processed (the placed time when present, as for the order's fact).
    #[serde(default, deserialize_with = "lenient_ts")]
    pub processed_at: Option<Ts>,
}

/// `orders/delete`.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderDelete {
    /// Order id.
    pub id: Id,
}

/// `checkouts/create`, `checkouts/update`.
#[derive(Debug, Clone, Deserialize)]
pub struct Checkout {
    /// Token (the stable key of a checkout).
    pub token: Option<String>,
    /// Numeric id (older versions; what `checkouts/delete` carries).
    pub id: Option<Id>,
    /// `"#<id>"`: the id where the payload has no `id` field (2026 versions).
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub name: Option<String>,
    /// Cart token.
    pub cart_token: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// SMS phone.
    pub sms_marketing_phone: Option<String>,
    /// Created.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<Ts>,
    /// Last updated: the abandonment clock starts here.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub updated_at: Option<Ts>,
    /// Set when converted to an order.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub completed_at: Option<Ts>,
    /// Recovery URL.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub abandoned_checkout_url: Option<String>,
    /// Shop currency.
    pub currency: Option<String>,
    /// Buyer's currency.
    pub presentment_currency: Option<String>,
    /// Total.
    pub total_price: Option<Money>,
    /// Subtotal.
    pub subtotal_price: Option<Money>,
    /// Marketing checkbox.
    #[serde(default, deserialize_with = "crate::lenient::flag")]
    pub buyer_accepts_marketing: Option<bool>,
    /// The customer, when logged in.
    pub customer: Option<Customer>,
    /// Lines.
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    /// Discount codes.
    #[serde(default)]
    pub discount_codes: Vec<DiscountCode>,
}

impl Checkout {
    /// The numeric id `checkouts/delete` is keyed by: `id` (older versions), else the digits of
    /// `name` (`"#450789469"` for id 450789469 in Shopify's own examples; the 2026 create and
    /// update payloads carry only `name`). Anything but `#` and digits is no id.
    pub fn checkout_id(&self) -> Option<Id> {
        self.id.or_else(|| {
            let digits = self.name.as_deref()?.trim().strip_prefix('#')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok().map(Id)
        })
    }

    /// The contact email: checkout email, then the customer's.
    pub fn email(&self) -> Option<&str> {
        first_filled([
            self.email.as_deref(),
            self.customer.as_ref().and_then(|c| c.email.as_deref()),
        ])
    }

    /// The contact phone.
    pub fn phone(&self) -> Option<&str> {
        first_filled([
            self.phone.as_deref(),
            self.sms_marketing_phone.as_deref(),
            self.customer.as_ref().and_then(|c| c.phone.as_deref()),
        ])
    }
}

/// `checkouts/delete`: minimal, with the numeric id and no token.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutDelete {
    /// Checkout id.
    pub id: Option<Id>,
    /// Token, when present.
    pub token: Option<String>,
    /// Cart token.
    pub cart_token: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::scalars::parse_ts;
    use super::*;

    #[test]
    fn a_checkout_id_comes_from_id_else_from_name() {
        let co = |body: &str| {
            serde_json::from_str::<Checkout>(body)
                .unwrap()
                .checkout_id()
        };
        // Shopify's example: id 450789469, name "#450789469".
        assert_eq!(co(r##"{"name": "#450789469"}"##), Some(Id(450_789_469)));
        assert_eq!(co(r##"{"id": 7, "name": "#450789469"}"##), Some(Id(7)));
        for odd in [
            r##"{"name": "#1001-A"}"##,
            r##"{"name": "#"}"##,
            r#"{"name": "1001"}"#,
            r#"{"name": null}"#,
            "{}",
        ] {
            assert_eq!(co(odd), None, "{odd}");
        }
    }

    #[test]
    fn ids_never_go_through_floats() {
        let o: Order = serde_json::from_str(r#"{"id":820982911946154508}"#).unwrap();
        assert_eq!(o.id, Id(820_982_911_946_154_508));
        let o: Order =
            serde_json::from_str(r#"{"id":"gid://shopify/Order/820982911946154509"}"#).unwrap();
        assert_eq!(o.id, Id(820_982_911_946_154_509));
        assert!(serde_json::from_str::<Order>(r#"{"id":1.5}"#).is_err());
        assert!(serde_json::from_str::<Order>(r#"{"id":-3}"#).is_err());
    }

    #[test]
    fn money_and_time() {
        let r: RefundLineItem = serde_json::from_str(
            r#"{"subtotal_set":{"shop_money":{"amount":89.99,"currency_code":"USD"}}}"#,
        )
        .unwrap();
        assert_eq!(r.subtotal_set.unwrap().shop(), Some(Decimal::new(8999, 2)));
        assert_eq!(
            parse_ts("2021-12-31T19:00:00-05:00"),
            Some(1_640_995_200_000)
        );
        assert_eq!(
            parse_ts("2022-01-01T00:00:00.000Z"),
            Some(1_640_995_200_000)
        );
        assert!(is_legacy_api(Some("2024-10")));
        assert!(!is_legacy_api(Some("2025-01")));
        assert!(!is_legacy_api(Some("unstable")));
        assert!(!is_legacy_api(None));
    }

    #[test]
    fn a_body_parses_the_same_whether_or_not_it_is_utf8_as_a_whole() {
        let order = |body: &[u8]| parse::<Order>("orders/create", body).map(|o| (o.id, o.email));
        let good = r#"{"id": 7, "email": "a\u00e9@x.com", "note": "café"}"#.as_bytes();
        assert_eq!(
            order(good).unwrap(),
            (Id(7), Some("a\u{e9}@x.com".to_owned()))
        );
        // Invalid UTF-8 in a field no rule reads: the byte parser skips it unchecked, and so
        // must the parse (the record is not dead-lettered for a byte in an unread note).
        let odd = b"{\"id\": 7, \"email\": \"a@x.com\", \"note\": \"\xff\"}";
        assert_eq!(order(odd).unwrap(), (Id(7), Some("a@x.com".to_owned())));
        // In a field that is read, it is an error with the field's path.
        let bad = b"{\"id\": 7, \"email\": \"\xff\"}";
        let err = order(bad).unwrap_err().to_string();
        assert!(err.contains("email"), "{err}");
    }
}
