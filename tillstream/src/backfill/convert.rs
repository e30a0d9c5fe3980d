//! GraphQL objects → webhook-shaped events, so the rules read history exactly like live events.
//!
//! Each object becomes the REST payload shape the rules already parse (64-bit integer ids from
//! `legacyResourceId`, money strings with `*_set.shop_money`, snake_case fields). An order is
//! replayed as the history Shopify would have sent, each at its own time:
//! - `orders/paid` at the first successful sale/capture (the order as paid: no refunds, not
//!   cancelled), so tiers and first purchases are reached when they really were;
//! - per refund, `refunds/create` and an `orders/updated` snapshot with the refunds so far (the
//!   snapshot reaches the customer key directly; `refunds/create` goes through the order key);
//! - the final `orders/updated` at `updated_at` with everything.
//!
//! Delivery ids are `backfill-{topic}-{legacy id}-{ms of the object's own timestamp}`: the
//! same object at the same version always gives the same id, so a re-run (or a resumed run)
//! is dropped by the processor's delivery-id dedupe, and anything the dedupe window no longer
//! covers is still merged by order id and refund id in the rules.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// Every topic a conversion emits (run files store an index into this list: append only).
pub(crate) const TOPICS: [&str; 5] = [
    "customers/update",
    "orders/paid",
    "refunds/create",
    "orders/updated",
    "products/update",
];

#[path = "convert_product.rs"]
mod products;
pub(crate) use products::product;

/// One envelope to produce.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) topic: &'static str,
    pub(crate) at_ms: i64,
    pub(crate) delivery_id: String,
    pub(crate) body: Vec<u8>,
}

/// Why an object could not be converted (it is counted and reported, never guessed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ConvertError {
    #[error("object without a usable id")]
    NoId,
    #[error("{0} is missing or not an RFC 3339 time")]
    BadTime(&'static str),
}

fn ms(v: &Value, field: &'static str) -> Result<i64, ConvertError> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis())
        .ok_or(ConvertError::BadTime(field))
}

fn opt_ms(v: &Value, field: &'static str) -> Option<i64> {
    ms(v, field).ok()
}

fn ts(ms: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

/// A 64-bit id from `legacyResourceId` (a string in JSON), else from the gid's tail.
fn legacy_id(v: &Value) -> Option<u64> {
    let from_legacy = match v.get("legacyResourceId") {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    from_legacy.or_else(|| {
        v.get("id")
            .and_then(Value::as_str)
            .and_then(|g| g.rsplit('/').next())
            .and_then(|t| t.split('?').next())
            .and_then(|t| t.parse().ok())
    })
}

fn text(v: &Value, field: &str) -> Value {
    v.get(field)
        .filter(|x| x.is_string())
        .cloned()
        .unwrap_or(Value::Null)
}

fn lower(v: &Value, field: &str) -> Value {
    v.get(field)
        .and_then(Value::as_str)
        .map_or(Value::Null, |s| Value::String(s.to_lowercase()))
}

/// GraphQL `MoneyBag` → REST `*_set`.
fn money_set(bag: &Value) -> Value {
    let side = |k: &str| {
        bag.get(k).map_or(
            Value::Null,
            |m| json!({"amount": text(m, "amount"), "currency_code": text(m, "currencyCode")}),
        )
    };
    if bag.is_null() {
        return Value::Null;
    }
    json!({"shop_money": side("shopMoney"), "presentment_money": side("presentmentMoney")})
}

fn shop_amount(bag: &Value) -> Option<rust_decimal::Decimal> {
    bag.pointer("/shopMoney/amount")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn sorted_event(topic: &'static str, id: u64, at_ms: i64, body: &Value) -> Event {
    Event {
        topic,
        at_ms,
        delivery_id: format!("backfill-{topic}-{id}-{at_ms}"),
        body: body.to_string().into_bytes(),
    }
}

/// A GraphQL customer → one `customers/update`.
pub(crate) fn customer(c: &Value) -> Result<Vec<Event>, ConvertError> {
    let id = legacy_id(c).ok_or(ConvertError::NoId)?;
    let updated = ms(c, "updatedAt")?;
    let consent = |o: &Value| {
        if o.is_null() {
            return Value::Null;
        }
        json!({
            "state": lower(o, "marketingState"),
            "opt_in_level": lower(o, "marketingOptInLevel"),
            "consent_updated_at": opt_ms(o, "marketingUpdatedAt").map_or(Value::Null, ts),
        })
    };
    let email = c.get("defaultEmailAddress").cloned().unwrap_or(Value::Null);
    let phone = c.get("defaultPhoneNumber").cloned().unwrap_or(Value::Null);
    let addr = c.get("defaultAddress").cloned().unwrap_or(Value::Null);
    let mut body = json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Customer/{id}"),
        "email": if email.is_null() { text(c, "email") } else { text(&email, "emailAddress") },
        "phone": if phone.is_null() { text(c, "phone") } else { text(&phone, "phoneNumber") },
        "first_name": text(c, "firstName"),
        "last_name": text(c, "lastName"),
        "state": lower(c, "state"),
        "created_at": opt_ms(c, "createdAt").map_or(Value::Null, ts),
        "updated_at": ts(updated),
        "tags": c.get("tags").filter(|t| t.is_array()).cloned().unwrap_or(Value::Null),
        "default_address": if addr.is_null() { Value::Null } else {
            json!({"city": text(&addr, "city"), "province_code": text(&addr, "provinceCode"), "country_code": text(&addr, "countryCodeV2"), "zip": text(&addr, "zip")})
        },
    });
    if let Some(o) = body.as_object_mut() {
        if !email.is_null() {
            o.insert("email_marketing_consent".into(), consent(&email));
        }
        if !phone.is_null() {
            o.insert("sms_marketing_consent".into(), consent(&phone));
        }
    }
    Ok(vec![sorted_event("customers/update", id, updated, &body)])
}

fn line_item(li: &Value) -> Value {
    let price = li
        .get("originalUnitPriceSet")
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "id": legacy_id(li),
        "admin_graphql_api_id": text(li, "id"),
        "variant_id": li.get("variant").and_then(legacy_id),
        "product_id": li.get("product").and_then(legacy_id),
        "sku": text(li, "sku"),
        "title": text(li, "title"),
        "variant_title": text(li, "variantTitle"),
        "name": text(li, "name"),
        "vendor": text(li, "vendor"),
        "quantity": li.get("quantity").and_then(Value::as_i64),
        "price": price.pointer("/shopMoney/amount").cloned().unwrap_or(Value::Null),
        "price_set": money_set(&price),
        "total_discount": li.pointer("/totalDiscountSet/shopMoney/amount").cloned().unwrap_or(Value::Null),
        "total_discount_set": money_set(li.get("totalDiscountSet").unwrap_or(&Value::Null)),
    })
}

/// One refund in the `refunds/create` shape, its money as one successful transaction carrying
/// the refund's own shop-money total (`amount_set.shop_money`, which the rules prefer).
fn refund(
    r: &Value,
    order_id: u64,
    shop_currency: &Value,
) -> Option<(u64, i64, rust_decimal::Decimal, Value)> {
    let id = legacy_id(r)?;
    let at = ms(r, "createdAt").ok()?;
    let bag = r.get("totalRefundedSet").cloned().unwrap_or(Value::Null);
    let amount = shop_amount(&bag).unwrap_or_default();
    let body = json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Refund/{id}"),
        "order_id": order_id,
        "created_at": ts(at),
        "processed_at": ts(at),
        "note": text(r, "note"),
        "refund_line_items": [],
        "refund_shipping_lines": [],
        "order_adjustments": [],
        "transactions": [{
            "kind": "refund",
            "status": "success",
            "amount": amount.to_string(),
            "currency": shop_currency,
            "amount_set": money_set(&bag),
        }],
    });
    Some((id, at, amount, body))
}

/// A GraphQL order (with `lineItems` reassembled) → its history as events.
pub(crate) fn order(o: &Value) -> Result<Vec<Event>, ConvertError> {
    let id = legacy_id(o).ok_or(ConvertError::NoId)?;
    let updated = ms(o, "updatedAt")?;
    let created = ms(o, "createdAt")?;
    let processed = opt_ms(o, "processedAt").unwrap_or(created);
    let cancelled = opt_ms(o, "cancelledAt");
    let currency = text(o, "currencyCode");
    let status = lower(o, "displayFinancialStatus");
    let status_str = status.as_str().unwrap_or_default().to_owned();
    let fulfillment = match o.get("displayFulfillmentStatus").and_then(Value::as_str) {
        Some("FULFILLED") => Value::from("fulfilled"),
        Some("PARTIALLY_FULFILLED") => Value::from("partial"),
        _ => Value::Null,
    };
    let customer = o.get("customer").filter(|c| !c.is_null()).map_or(Value::Null, |c| {
        json!({"id": legacy_id(c), "email": text(c, "email"), "first_name": text(c, "firstName"), "last_name": text(c, "lastName")})
    });
    let set = |k: &str| money_set(o.get(k).unwrap_or(&Value::Null));
    let total_bag = o.get("totalPriceSet").cloned().unwrap_or(Value::Null);
    let total = shop_amount(&total_bag).unwrap_or_default();
    let lines: Vec<Value> = o
        .get("lineItems")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(line_item).collect())
        .unwrap_or_default();
    let codes: Vec<Value> = o
        .get("discountCodes")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .map(|c| json!({"code": c}))
                .collect()
        })
        .unwrap_or_default();
    let mut refunds: Vec<(u64, i64, rust_decimal::Decimal, Value)> = o
        .get("refunds")
        .and_then(Value::as_array)
        .map(|rs| rs.iter().filter_map(|r| refund(r, id, &currency)).collect())
        .unwrap_or_default();
    refunds.sort_by_key(|r| (r.1, r.0));
    let base = json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "name": text(o, "name"),
        "email": text(o, "email"),
        "created_at": ts(created),
        "processed_at": ts(processed),
        "test": o.get("test").and_then(Value::as_bool).unwrap_or(false),
        "currency": currency,
        "presentment_currency": text(o, "presentmentCurrencyCode"),
        "total_price": total_bag.pointer("/shopMoney/amount").cloned().unwrap_or(Value::Null),
        "total_price_set": money_set(&total_bag),
        "subtotal_price_set": set("subtotalPriceSet"),
        "total_tax_set": set("totalTaxSet"),
        "total_discounts_set": set("totalDiscountsSet"),
        "total_shipping_price_set": set("totalShippingPriceSet"),
        "source_name": text(o, "sourceName"),
        "discount_codes": codes,
        "customer": customer,
        "line_items": lines,
    });
    let snapshot =
        |at: i64, fin: &str, refunds: &[Value], cancelled_at: Option<i64>, fulfillment: &Value| {
            let mut b = base.clone();
            if let Some(m) = b.as_object_mut() {
                let extra: Map<String, Value> = [
                    ("updated_at", ts(at)),
                    ("financial_status", Value::from(fin)),
                    ("fulfillment_status", fulfillment.clone()),
                    ("cancelled_at", cancelled_at.map_or(Value::Null, ts)),
                    (
                        "cancel_reason",
                        if cancelled_at.is_some() {
                            lower(o, "cancelReason")
                        } else {
                            Value::Null
                        },
                    ),
                    ("refunds", Value::Array(refunds.to_vec())),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                m.extend(extra);
            }
            b
        };

    // When the money was taken: the first successful sale or capture.
    let paid_at = o
        .get("transactions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| {
            matches!(
                t.get("kind").and_then(Value::as_str),
                Some("SALE" | "CAPTURE")
            )
        })
        .filter(|t| t.get("status").and_then(Value::as_str) == Some("SUCCESS"))
        .filter_map(|t| opt_ms(t, "processedAt"))
        .min()
        .or_else(|| {
            matches!(
                status_str.as_str(),
                "paid" | "partially_paid" | "partially_refunded" | "refunded"
            )
            .then_some(processed)
        });

    let mut events = Vec::new();
    let mut final_topic = "orders/updated";
    if let Some(paid) = paid_at {
        if paid < updated {
            let fin = if status_str == "partially_paid" {
                "partially_paid"
            } else {
                "paid"
            };
            events.push(sorted_event(
                "orders/paid",
                id,
                paid,
                &snapshot(paid, fin, &[], None, &Value::Null),
            ));
        } else {
            final_topic = "orders/paid";
        }
    }
    let mut so_far: Vec<Value> = Vec::new();
    let mut refunded = rust_decimal::Decimal::ZERO;
    for (rid, at, amount, body) in &refunds {
        events.push(sorted_event("refunds/create", *rid, *at, body));
        so_far.push(body.clone());
        refunded += *amount;
        if *at < updated {
            let fin = if refunded >= total && !total.is_zero() {
                "refunded"
            } else {
                "partially_refunded"
            };
            let c = cancelled.filter(|c| *c <= *at);
            events.push(sorted_event(
                "orders/updated",
                id,
                *at,
                &snapshot(*at, fin, &so_far, c, &Value::Null),
            ));
        }
    }
    events.push(sorted_event(
        final_topic,
        id,
        updated,
        &snapshot(updated, &status_str, &so_far, cancelled, &fulfillment),
    ));
    // Two snapshots at the same millisecond would share a delivery id; the later one has
    // everything, so keep it.
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<Event> = events
        .into_iter()
        .rev()
        .filter(|e| seen.insert(e.delivery_id.clone()))
        .collect();
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(a: &str) -> Value {
        json!({"shopMoney": {"amount": a, "currencyCode": "USD"}, "presentmentMoney": {"amount": a, "currencyCode": "USD"}})
    }

    #[test]
    fn an_order_becomes_paid_refund_and_final_snapshots() {
        let o = json!({
            "id": "gid://shopify/Order/9007199254740993", "legacyResourceId": "9007199254740993", "name": "#1001",
            "email": "a@b.c", "createdAt": "2024-01-01T10:00:00Z", "processedAt": "2024-01-01T10:00:00Z",
            "updatedAt": "2024-01-10T10:00:00Z", "cancelledAt": null, "test": false, "currencyCode": "USD",
            "presentmentCurrencyCode": "USD", "displayFinancialStatus": "PARTIALLY_REFUNDED", "displayFulfillmentStatus": "FULFILLED",
            "totalPriceSet": bag("100.00"),
            "customer": {"id": "gid://shopify/Customer/5", "legacyResourceId": "5", "email": "a@b.c"},
            "transactions": [{"kind": "SALE", "status": "SUCCESS", "processedAt": "2024-01-01T11:00:00Z", "amountSet": bag("100.00")}],
            "refunds": [{"id": "gid://shopify/Refund/7", "legacyResourceId": "7", "createdAt": "2024-01-05T10:00:00Z", "totalRefundedSet": bag("25.00")}],
            "lineItems": [{"id": "gid://shopify/LineItem/3", "quantity": 2, "originalUnitPriceSet": bag("50.00"), "variant": {"legacyResourceId": "8"}}],
        });
        let ev = order(&o).unwrap();
        let topics: Vec<_> = ev.iter().map(|e| e.topic).collect();
        assert_eq!(
            topics,
            [
                "orders/paid",
                "refunds/create",
                "orders/updated",
                "orders/updated"
            ]
        );
        assert_eq!(
            ev[0].delivery_id,
            "backfill-orders/paid-9007199254740993-1704106800000"
        );
        let paid: Value = serde_json::from_slice(&ev[0].body).unwrap();
        assert_eq!(
            paid["id"].as_u64(),
            Some(9_007_199_254_740_993),
            "ids stay 64-bit integers"
        );
        assert_eq!(
            (
                paid["financial_status"].as_str(),
                paid["refunds"].as_array().map(Vec::len)
            ),
            (Some("paid"), Some(0))
        );
        assert_eq!(paid["customer"]["id"], 5);
        assert_eq!(paid["line_items"][0]["variant_id"], 8);
        let last: Value = serde_json::from_slice(&ev[3].body).unwrap();
        assert_eq!(last["financial_status"], "partially_refunded");
        assert_eq!(last["fulfillment_status"], "fulfilled");
        assert_eq!(
            last["refunds"][0]["transactions"][0]["amount_set"]["shop_money"]["amount"],
            "25.00"
        );
        let r: Value = serde_json::from_slice(&ev[1].body).unwrap();
        assert_eq!(r["order_id"].as_u64(), Some(9_007_199_254_740_993));
        assert_eq!(order(&o).unwrap(), ev, "deterministic");
    }

    #[test]
    fn unpaid_and_broken_orders() {
        let o = json!({"legacyResourceId": "1", "createdAt": "2024-01-01T10:00:00Z", "updatedAt": "2024-01-02T10:00:00Z", "displayFinancialStatus": "VOIDED"});
        let ev = order(&o).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].topic, "orders/updated");
        assert_eq!(order(&json!({"createdAt": "x"})), Err(ConvertError::NoId));
        assert_eq!(
            order(&json!({"legacyResourceId": "1", "updatedAt": "yesterday"})),
            Err(ConvertError::BadTime("updatedAt"))
        );
        let c = customer(&json!({"legacyResourceId": "5", "updatedAt": "2024-01-02T10:00:00Z",
            "defaultEmailAddress": {"emailAddress": "a@b.c", "marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN"}})).unwrap();
        let b: Value = serde_json::from_slice(&c[0].body).unwrap();
        assert_eq!(
            (
                b["email"].as_str(),
                b["email_marketing_consent"]["state"].as_str()
            ),
            (Some("a@b.c"), Some("subscribed"))
        );
    }
}
