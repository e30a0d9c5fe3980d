//! Webhook body rendering: Shopify-shaped JSON for every topic, per API version.
//!
//! Field names, types and quirks follow the reference notes (§5 and the fixture
//! checklist): 64-bit integer ids, money as 2-dp strings plus `*_set` objects, refund
//! line `subtotal`/`total_tax` as bare numbers, `total_unsettled_set` keyed by `currency`,
//! timestamps in the shop's offset (carts in UTC millis), customers in the legacy
//! (≤ 2024-10) or 2025-01+ shape.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};

use crate::catalog::Catalog;
use crate::config::is_legacy_api_version;
use crate::json::{J, obj};
use crate::model::{
    Action, Address, Amt, Basket, Cart, Checkout, Consent, CustomerSnap, Line, Order, Product,
    Refund, Subject, Ts, money, ts,
};
use crate::product_payloads::product_payload;

mod orders;
use orders::{order_payload, refund_payload};

/// Shop-level facts every payload needs.
pub(crate) struct Ctx<'a> {
    pub(crate) shop_domain: &'a str,
    pub(crate) shop_id: u64,
    pub(crate) currency: &'a str,
    pub(crate) catalogue: &'a [Product],
    /// Order id → order number (1001, 1002, … in creation order across the shop).
    pub(crate) order_numbers: &'a BTreeMap<u64, u64>,
    /// The catalogue over time, when products are enabled (renders `products/*`).
    pub(crate) catalog: Option<&'a Catalog>,
}

/// Render the body of `action` for webhook API `version`.
pub(crate) fn render(ctx: &Ctx<'_>, action: &Action, version: &str) -> Vec<u8> {
    let legacy = is_legacy_api_version(version);
    let topic = action.topic.as_str();
    let j = match &action.subject {
        Subject::Customer(c) => match topic {
            "customers_email_marketing_consent/update" => email_consent_payload(c),
            "customers_marketing_consent/update" => sms_consent_payload(c),
            _ => customer_full(ctx, c, legacy),
        },
        Subject::Cart(cart) => cart_payload(ctx, cart),
        Subject::Checkout(co) => {
            if topic == "checkouts/delete" {
                checkout_delete(ctx, co)
            } else {
                checkout_payload(ctx, co, legacy)
            }
        }
        Subject::Order(o) => order_payload(ctx, o, legacy),
        Subject::OrderDelete(id) => obj! {"id" => *id},
        Subject::Refund(r, o) => refund_payload(ctx, r, o),
        Subject::Compliance {
            customer,
            orders,
            data_request_id,
        } => compliance(ctx, customer, orders, *data_request_id),
        Subject::ShopRedact => obj! {"shop_id" => ctx.shop_id, "shop_domain" => ctx.shop_domain},
        Subject::Product { history, version } => ctx
            .catalog
            .and_then(|c| c.histories.get(*history))
            .and_then(|h| h.version(*version))
            .map_or(J::Null, product_payload),
        Subject::ProductDelete(id) => obj! {"id" => *id},
    };
    j.to_bytes()
}

// ---- small helpers ----------------------------------------------------------------------

fn ts_opt(t: Option<Ts>) -> J {
    t.map(ts).into()
}

/// Cart timestamps: UTC with milliseconds and `Z`.
fn ts_utc_millis(t: Ts) -> String {
    t.with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// Amount as a bare JSON number the way Ruby prints floats (`89.99`, `89.9`, `0.0`).
fn num(cents: i64) -> J {
    let s = money(cents);
    let s = if s.ends_with('0') {
        s[..s.len() - 1].to_owned()
    } else {
        s
    };
    J::Num(s)
}

fn pres_code<'a>(ctx: &Ctx<'a>, b: &Basket) -> &'a str {
    if b.pres.code.is_empty() {
        ctx.currency
    } else {
        b.pres.code
    }
}

fn set(ctx: &Ctx<'_>, b: &Basket, a: Amt) -> J {
    obj! {
        "shop_money" => obj!{"amount" => money(a.shop), "currency_code" => ctx.currency},
        "presentment_money" => obj!{"amount" => money(a.pres), "currency_code" => pres_code(ctx, b)},
    }
}

fn product<'a>(ctx: &Ctx<'a>, i: usize) -> Option<&'a Product> {
    ctx.catalogue.get(i)
}

fn order_name(ctx: &Ctx<'_>, id: u64) -> Option<String> {
    ctx.order_numbers.get(&id).map(|n| format!("#{n}"))
}

// ---- customers --------------------------------------------------------------------------

fn default_address(a: &Address, customer_id: u64) -> J {
    obj! {
        "id" => a.id,
        "customer_id" => customer_id,
        "first_name" => &a.first_name,
        "last_name" => &a.last_name,
        "company" => J::Null,
        "address1" => &a.address1,
        "address2" => "",
        "city" => a.city,
        "province" => a.province,
        "country" => "Canada",
        "zip" => &a.zip,
        "phone" => a.phone.clone(),
        "name" => format!("{} {}", a.first_name, a.last_name),
        "province_code" => a.province_code,
        "country_code" => "CA",
        "country_name" => "Canada",
        "default" => true,
    }
}

fn order_address(a: &Address) -> J {
    obj! {
        "first_name" => &a.first_name,
        "address1" => &a.address1,
        "phone" => a.phone.clone(),
        "city" => a.city,
        "zip" => &a.zip,
        "province" => a.province,
        "country" => "Canada",
        "last_name" => &a.last_name,
        "address2" => J::Null,
        "company" => J::Null,
        "latitude" => J::Null,
        "longitude" => J::Null,
        "name" => format!("{} {}", a.first_name, a.last_name),
        "country_code" => "CA",
        "province_code" => a.province_code,
    }
}

fn email_consent(c: &Consent) -> J {
    obj! {
        "state" => c.state.as_str(),
        "opt_in_level" => c.opt_in_level,
        "consent_updated_at" => ts_opt(c.updated_at),
    }
}

fn sms_consent(c: &Option<Consent>) -> J {
    match c {
        Some(c) => obj! {
            "state" => c.state.as_str(),
            "opt_in_level" => c.opt_in_level,
            "consent_updated_at" => ts_opt(c.updated_at),
            "consent_collected_from" => "shopify",
        },
        None => J::Null,
    }
}

/// The fields every customer object opens with, in Shopify's order.
fn customer_identity(c: &CustomerSnap) -> Vec<(&'static str, J)> {
    vec![
        ("id", c.id.into()),
        ("email", c.email.as_str().into()),
        ("created_at", ts(c.created_at).into()),
        ("updated_at", ts(c.updated_at).into()),
        ("first_name", c.first_name.as_str().into()),
        ("last_name", c.last_name.as_str().into()),
    ]
}

/// `customers/create|update` body: 2025-01+ shape, or the legacy one with tags, consent,
/// `orders_count`, `total_spent`, `last_order_*`.
fn customer_full(ctx: &Ctx<'_>, c: &CustomerSnap, legacy: bool) -> J {
    let mut f = customer_identity(c);
    if legacy {
        f.push(("orders_count", u64::from(c.orders_count).into()));
    }
    f.push(("state", "enabled".into()));
    if legacy {
        f.push(("total_spent", money(c.total_spent).into()));
        f.push(("last_order_id", c.last_order_id.into()));
    }
    f.push(("note", J::Null));
    f.push(("verified_email", true.into()));
    f.push(("multipass_identifier", J::Null));
    f.push(("tax_exempt", false.into()));
    if legacy {
        f.push(("tags", c.tags.join(", ").into()));
        f.push((
            "last_order_name",
            c.last_order_id.and_then(|id| order_name(ctx, id)).into(),
        ));
    }
    f.push(("currency", ctx.currency.into()));
    f.push(("phone", c.phone.clone().into()));
    f.push(("addresses", J::Arr(vec![default_address(&c.address, c.id)])));
    f.push(("tax_exemptions", J::Arr(vec![])));
    if legacy {
        f.push(("email_marketing_consent", email_consent(&c.email_consent)));
        f.push(("sms_marketing_consent", sms_consent(&c.sms_consent)));
    }
    f.push(("admin_graphql_api_id", gid("Customer", c.id).into()));
    f.push(("default_address", default_address(&c.address, c.id)));
    J::Obj(f)
}

/// Customer as embedded in orders and checkouts (no counts; consent/tags only ≤ 2024-10).
fn customer_embedded(ctx: &Ctx<'_>, c: &CustomerSnap, legacy: bool) -> J {
    let mut f = customer_identity(c);
    f.extend([
        ("state", "enabled".into()),
        ("note", J::Null),
        ("verified_email", true.into()),
        ("multipass_identifier", J::Null),
        ("tax_exempt", false.into()),
        ("phone", c.phone.clone().into()),
    ]);
    if legacy {
        f.push(("email_marketing_consent", email_consent(&c.email_consent)));
        f.push(("sms_marketing_consent", sms_consent(&c.sms_consent)));
        f.push(("tags", c.tags.join(", ").into()));
    }
    f.push(("currency", ctx.currency.into()));
    f.push(("tax_exemptions", J::Arr(vec![])));
    f.push(("admin_graphql_api_id", gid("Customer", c.id).into()));
    f.push(("default_address", default_address(&c.address, c.id)));
    J::Obj(f)
}

fn email_consent_payload(c: &CustomerSnap) -> J {
    obj! {
        "customer_id" => c.id,
        "email_address" => &c.email,
        "email_marketing_consent" => email_consent(&c.email_consent),
    }
}

fn sms_consent_payload(c: &CustomerSnap) -> J {
    obj! {
        "id" => c.id,
        "phone" => c.phone.clone(),
        "sms_marketing_consent" => sms_consent(&c.sms_consent),
    }
}

// ---- carts and checkouts ----------------------------------------------------------------

fn cart_payload(ctx: &Ctx<'_>, cart: &Cart) -> J {
    let b = Basket {
        lines: cart.lines.clone(),
        shipping: Amt::default(),
        discount_code: None,
        pres: crate::model::Pres {
            code: "",
            rate_milli: 1000,
        },
    };
    let lines: Vec<J> = cart
        .lines
        .iter()
        .map(|l| {
            let p = product(ctx, l.product);
            let variant_id = p.map_or(0, |p| p.variant_id);
            let unit = Amt::new(l.price.shop, l.price.shop);
            let line_price = Amt::new(l.gross().shop, l.gross().shop);
            obj! {
                "id" => variant_id,
                "properties" => obj!{},
                "quantity" => u64::from(l.quantity),
                "variant_id" => variant_id,
                "key" => format!("{variant_id}:{:x}", l.id % 0xffff_ffff),
                "discounted_price" => money(unit.shop),
                "discounts" => J::Arr(vec![]),
                "gift_card" => false,
                "grams" => p.map_or(0u64, |p| u64::from(p.grams)),
                "line_price" => money(line_price.shop),
                "original_line_price" => money(line_price.shop),
                "original_price" => money(unit.shop),
                "price" => money(unit.shop),
                "product_id" => p.map_or(0, |p| p.id),
                "sku" => p.map(|p| p.sku.clone()),
                "taxable" => true,
                "title" => p.map(|p| format!("{} - {}", p.title, p.variant_title)),
                "total_discount" => "0.00",
                "vendor" => p.map(|p| p.vendor.as_str()),
                "discounted_price_set" => set(ctx, &b, unit),
                "line_price_set" => set(ctx, &b, line_price),
                "original_line_price_set" => set(ctx, &b, line_price),
                "price_set" => set(ctx, &b, unit),
                "total_discount_set" => set(ctx, &b, Amt::default()),
            }
        })
        .collect();
    obj! {
        "id" => &cart.token,
        "token" => &cart.token,
        "line_items" => lines,
        "note" => J::Null,
        "updated_at" => ts_utc_millis(cart.updated_at),
        "created_at" => ts_utc_millis(cart.created_at),
    }
}

fn tax_lines(ctx: &Ctx<'_>, b: &Basket, tax: Amt) -> J {
    J::Arr(vec![obj! {
        "price" => money(tax.shop),
        "rate" => J::Num("0.0825".into()),
        "title" => "HST",
        "price_set" => set(ctx, b, tax),
        "channel_liable" => false,
    }])
}

/// A checkout line; `at` picks the catalogue version for `compare_at_price` (products
/// enabled only; null otherwise, as before).
fn checkout_line(ctx: &Ctx<'_>, b: &Basket, l: &Line, at: Ts) -> J {
    let p = product(ctx, l.product);
    let compare_at = ctx
        .catalog
        .and_then(|c| c.variant_at(l.product, at))
        .and_then(|(_, v)| v.compare_at)
        .map(money);
    obj! {
        "key" => format!("{:032x}", u128::from(l.id) * 0x9e37_79b9_7f4a_7c15),
        "fulfillment_service" => "manual",
        "gift_card" => false,
        "grams" => p.map_or(0u64, |p| u64::from(p.grams)),
        "presentment_title" => p.map(|p| p.title.as_str()),
        "presentment_variant_title" => p.map(|p| p.variant_title.as_str()),
        "product_id" => p.map(|p| p.id),
        "quantity" => u64::from(l.quantity),
        "requires_shipping" => true,
        "sku" => p.map(|p| p.sku.clone()),
        "tax_lines" => tax_lines(ctx, b, l.tax),
        "taxable" => true,
        "title" => p.map(|p| p.title.as_str()),
        "variant_id" => p.map(|p| p.variant_id),
        "variant_title" => p.map(|p| p.variant_title.as_str()),
        "variant_price" => money(l.price.shop),
        "vendor" => p.map(|p| p.vendor.as_str()),
        "user_id" => J::Null,
        "unit_price_measurement" => obj!{"measured_type" => J::Null, "quantity_value" => J::Null, "quantity_unit" => J::Null, "reference_value" => J::Null, "reference_unit" => J::Null},
        "rank" => J::Null,
        "compare_at_price" => compare_at,
        "line_price" => money(l.gross().shop),
        "price" => money(l.price.shop),
        "applied_discounts" => J::Arr(vec![]),
        "discount_allocations" => discount_allocations(ctx, b, l),
        "properties" => obj!{},
    }
}

fn discount_allocations(ctx: &Ctx<'_>, b: &Basket, l: &Line) -> J {
    if l.discount.shop == 0 {
        return J::Arr(vec![]);
    }
    J::Arr(vec![obj! {
        "amount" => money(l.discount.shop),
        "amount_set" => set(ctx, b, l.discount),
        "discount_application_index" => 0u64,
    }])
}

fn discount_codes(b: &Basket) -> J {
    match b.discount_code {
        Some(code) => J::Arr(vec![obj! {
            "code" => code,
            "amount" => money(b.discounts().shop),
            "type" => "percentage",
        }]),
        None => J::Arr(vec![]),
    }
}

fn checkout_url(ctx: &Ctx<'_>, co: &Checkout) -> String {
    // Query-string `&` and path `/` come out as `\u0026` and `\/` in the body bytes.
    format!(
        "https://{}/{}/checkouts/ac/{}/recover?key={}&locale=en-CA",
        ctx.shop_domain,
        ctx.shop_id,
        co.token,
        &co.cart_token[..co.cart_token.len().min(16)]
    )
}

fn checkout_payload(ctx: &Ctx<'_>, co: &Checkout, legacy: bool) -> J {
    let b = &co.basket;
    let mut f: Vec<(&'static str, J)> = Vec::new();
    if legacy {
        // Older versions carried a numeric checkout id; 2026 samples key on `token`.
        f.push(("id", co.id.into()));
    }
    let lines: Vec<J> = b
        .lines
        .iter()
        .map(|l| checkout_line(ctx, b, l, co.created_at))
        .collect();
    f.extend([
        ("token", co.token.as_str().into()),
        ("cart_token", co.cart_token.as_str().into()),
        ("email", co.email.clone().into()),
        ("gateway", J::Null),
        ("buyer_accepts_marketing", co.buyer_accepts_marketing.into()),
        ("buyer_accepts_sms_marketing", false.into()),
        ("sms_marketing_phone", J::Null),
        ("created_at", ts(co.created_at).into()),
        ("updated_at", ts(co.updated_at).into()),
        (
            "landing_site",
            "/collections/kitchen?utm_source=newsletter&utm_medium=email".into(),
        ),
        ("note", J::Null),
        ("note_attributes", J::Arr(vec![])),
        ("referring_site", "https://www.google.com/".into()),
        ("shipping_lines", shipping_lines(ctx, b, false)),
        ("taxes_included", false.into()),
        ("total_weight", b.grams(ctx.catalogue).into()),
        ("currency", ctx.currency.into()),
        ("completed_at", ts_opt(co.completed_at)),
        ("closed_at", J::Null),
        ("user_id", J::Null),
        ("location_id", J::Null),
        ("source_identifier", J::Null),
        ("source_url", J::Null),
        ("device_id", J::Null),
        ("phone", co.phone.clone().into()),
        ("customer_locale", "en-CA".into()),
        ("line_items", J::Arr(lines)),
        ("name", format!("#{}", co.id).into()),
        ("source", J::Null),
        ("abandoned_checkout_url", checkout_url(ctx, co).into()),
        ("discount_codes", discount_codes(b)),
        ("tax_lines", tax_lines(ctx, b, b.tax())),
        ("source_name", "web".into()),
        ("presentment_currency", pres_code(ctx, b).into()),
        ("total_discounts", money(b.discounts().shop).into()),
        (
            "total_line_items_price",
            money(b.line_items_total().shop).into(),
        ),
        ("total_price", money(b.total().shop).into()),
        ("total_tax", money(b.tax().shop).into()),
        ("subtotal_price", money(b.subtotal().shop).into()),
        ("total_duties", J::Null),
    ]);
    if let Some(a) = &co.shipping_address {
        f.push(("billing_address", order_address(a)));
        f.push(("shipping_address", order_address(a)));
    }
    if let Some(c) = &co.customer {
        f.push(("customer", customer_embedded(ctx, c, legacy)));
    }
    J::Obj(f)
}

/// `checkouts/delete` is minimal and has no `token`; correlate by `cart_token` or `id`.
fn checkout_delete(ctx: &Ctx<'_>, co: &Checkout) -> J {
    let b = &co.basket;
    obj! {
        "id" => co.id,
        "presentment_currency" => pres_code(ctx, b),
        "buyer_accepts_sms_marketing" => false,
        "sms_marketing_phone" => J::Null,
        "total_price" => money(b.total().shop),
        "total_duties" => J::Null,
        "cart_token" => &co.cart_token,
        "subtotal_price" => money(b.subtotal().shop),
        "reservation_token" => J::Null,
    }
}

fn shipping_lines(ctx: &Ctx<'_>, b: &Basket, with_id: bool) -> J {
    let (code, title) = if b.shipping.shop == 0 {
        ("Free", "Free Shipping")
    } else {
        ("Standard", "Standard Shipping")
    };
    let mut f: Vec<(&'static str, J)> = Vec::new();
    if with_id {
        f.push(("id", J::U(271_878_346_596_884_015)));
    }
    f.extend([
        ("carrier_identifier", J::Null),
        ("code", code.into()),
        ("discounted_price", money(b.shipping.shop).into()),
        ("discounted_price_set", set(ctx, b, b.shipping)),
        ("is_removed", false.into()),
        ("phone", J::Null),
        ("price", money(b.shipping.shop).into()),
        ("price_set", set(ctx, b, b.shipping)),
        ("requested_fulfillment_service_id", J::Null),
        ("source", "shopify".into()),
        ("title", title.into()),
        ("tax_lines", J::Arr(vec![])),
        ("discount_allocations", J::Arr(vec![])),
    ]);
    J::Arr(vec![J::Obj(f)])
}

// ---- compliance -------------------------------------------------------------------------

fn compliance(ctx: &Ctx<'_>, c: &CustomerSnap, orders: &[u64], data_request_id: Option<u64>) -> J {
    let customer = obj! {"id" => c.id, "email" => &c.email, "phone" => c.phone.clone()};
    let ids = J::Arr(orders.iter().map(|id| J::U(*id)).collect());
    match data_request_id {
        Some(req) => obj! {
            "shop_id" => ctx.shop_id,
            "shop_domain" => ctx.shop_domain,
            "orders_requested" => ids,
            "customer" => customer,
            "data_request" => obj!{"id" => req},
        },
        None => obj! {
            "shop_id" => ctx.shop_id,
            "shop_domain" => ctx.shop_domain,
            "customer" => customer,
            "orders_to_redact" => ids,
        },
    }
}
