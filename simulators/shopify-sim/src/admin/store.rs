//! The Admin API fake's store: the generated shop as GraphQL objects, and its bulk JSONL.
//!
//! Built from the same timeline as the webhook deliveries (same seed, same ids), folded up to
//! an optional `as_of` time, so `expected.json` is the truth for a backfill as well: the latest
//! snapshot of every customer and order, refunds merged by id, deleted orders gone, redacted
//! customers (and their orders) gone. Timestamps are UTC, as the GraphQL API returns them.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::config::ScenarioConfig;
use crate::error::SimError;
use crate::model::{Amt, Basket, CustomerSnap, Order, Product, Refund, Subject, Topic, Ts, money};
use crate::timeline;

use super::record::Record;

/// Which connection a bulk query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `customers`.
    Customers,
    /// `orders` with `lineItems` children.
    Orders,
}

/// An `updated_at` range from the bulk query's search filter (inclusive bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdatedRange {
    /// `updated_at:>=`.
    pub since: Option<DateTime<Utc>>,
    /// `updated_at:<=`.
    pub until: Option<DateTime<Utc>>,
}

impl UpdatedRange {
    pub(crate) fn contains(&self, t: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// The shop as the Admin API sees it at `as_of`.
pub struct AdminStore {
    customers: Vec<Record>,
    orders: Vec<Record>,
    /// Products (`[products] enabled` only), deleted ones gone.
    products: Vec<Record>,
    seed: u64,
    /// Latest snapshot of every customer (consent mutations change these and re-render the
    /// customer's node and webhooks from them).
    pub(crate) snaps: BTreeMap<u64, CustomerSnap>,
    pub(crate) shop_domain: String,
    pub(crate) shop_id: u64,
    pub(crate) currency: String,
}

fn utc(t: Ts) -> String {
    t.with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

fn bag(currency: &str, b: &Basket, a: Amt) -> Value {
    let pres = if b.pres.code.is_empty() {
        currency
    } else {
        b.pres.code
    };
    json!({
        "shopMoney": {"amount": money(a.shop), "currencyCode": currency},
        "presentmentMoney": {"amount": money(a.pres), "currencyCode": pres},
    })
}

impl AdminStore {
    /// Folds the scenario's timeline into the store as of `as_of` (everything when `None`).
    pub fn build(cfg: &ScenarioConfig, as_of: Option<DateTime<Utc>>) -> Result<Self, SimError> {
        let mut tl = timeline::build(cfg)?;
        tl.actions.sort_by_key(|a| (a.at, a.person, a.seq));
        let mut numbers = BTreeMap::new();
        let mut next = 1001u64;
        for a in &tl.actions {
            if let (Topic::OrdersCreate, Subject::Order(o)) = (a.topic, &a.subject) {
                numbers.entry(o.id).or_insert_with(|| {
                    next += 1;
                    next - 1
                });
            }
        }
        let mut customers: BTreeMap<u64, CustomerSnap> = BTreeMap::new();
        let mut orders: BTreeMap<u64, Order> = BTreeMap::new();
        let mut refunds: BTreeMap<u64, BTreeMap<u64, Refund>> = BTreeMap::new();
        let mut paid_at: BTreeMap<u64, Ts> = BTreeMap::new();
        let mut redacted: Vec<u64> = Vec::new();
        for a in tl
            .actions
            .iter()
            .filter(|a| as_of.is_none_or(|t| a.at <= t))
        {
            match &a.subject {
                Subject::Customer(c) => {
                    customers.insert(c.id, (**c).clone());
                }
                Subject::Order(o) => {
                    if a.topic == Topic::OrdersPaid {
                        paid_at.entry(o.id).or_insert(a.at);
                    }
                    orders.insert(o.id, (**o).clone());
                }
                Subject::Refund(r, o) => {
                    refunds.entry(o.id).or_default().insert(r.id, (**r).clone());
                    orders.insert(o.id, (**o).clone());
                }
                Subject::OrderDelete(id) => {
                    orders.remove(id);
                }
                Subject::Compliance { customer, .. } if a.topic == Topic::CustomersRedact => {
                    redacted.push(customer.id);
                }
                _ => {}
            }
        }
        for id in &redacted {
            customers.remove(id);
        }
        orders.retain(|_, o| {
            o.customer
                .as_ref()
                .is_none_or(|c| !redacted.contains(&c.id))
        });

        let currency = cfg.shop_currency.as_str();
        let snaps = customers.clone();
        let customers = customers
            .values()
            .map(|c| customer_record(currency, c))
            .collect();
        let orders = orders
            .into_values()
            .map(|mut o| {
                for r in refunds
                    .remove(&o.id)
                    .into_iter()
                    .flat_map(BTreeMap::into_values)
                {
                    if !o.refunds.iter().any(|x| x.id == r.id) {
                        o.refunds.push(r);
                    }
                }
                o.refunds.sort_by_key(|r| (r.created_at, r.id));
                let number = numbers.get(&o.id).copied().unwrap_or(0);
                order_record(
                    currency,
                    &tl.catalogue,
                    &o,
                    number,
                    paid_at.get(&o.id).copied(),
                )
            })
            .collect();
        let products = match &tl.catalog {
            Some(catalog) => catalog
                .histories
                .iter()
                .filter_map(|h| h.at(as_of.map_or(tl.end, |t| t.with_timezone(&tl.end.timezone()))))
                .map(|p| {
                    super::products::product_record(p, &catalog.url(&cfg.shop_domain, &p.handle))
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            customers,
            orders,
            products,
            seed: cfg.seed,
            snaps,
            shop_domain: cfg.shop_domain.clone(),
            shop_id: cfg.shop_id,
            currency: cfg.shop_currency.clone(),
        })
    }

    /// Re-renders customer `id`'s node from its snapshot (after a consent change), so a
    /// later bulk query returns the new state.
    pub(crate) fn refresh_customer(&mut self, id: u64) {
        let Some(snap) = self.snaps.get(&id) else {
            return;
        };
        let fresh = customer_record(&self.currency, snap);
        let gid = Value::String(gid("Customer", id));
        match self.customers.iter_mut().find(|r| r.node["id"] == gid) {
            Some(r) => *r = fresh,
            None => self.customers.push(fresh),
        }
    }

    /// Customers in the store.
    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    /// Orders in the store.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Products in the store (0 unless the scenario enables products).
    pub fn product_count(&self) -> usize {
        self.products.len()
    }

    /// The JSONL lines of a bulk query: roots plus child lines carrying `__parentId`, shuffled
    /// (deterministically per operation) so children may come before their parent.
    pub fn jsonl(&self, resource: Resource, range: UpdatedRange, op: u64) -> (Vec<String>, u64) {
        let records = match resource {
            Resource::Customers => &self.customers,
            Resource::Orders => &self.orders,
        };
        self.lines(records, range, op)
    }

    /// [`AdminStore::jsonl`] of a `products` query (variants and collections as children).
    pub(crate) fn products_jsonl(&self, range: UpdatedRange, op: u64) -> (Vec<String>, u64) {
        self.lines(&self.products, range, op)
    }

    fn lines(&self, records: &[Record], range: UpdatedRange, op: u64) -> (Vec<String>, u64) {
        let mut lines = Vec::new();
        let mut roots = 0;
        for r in records.iter().filter(|r| range.contains(r.updated_at)) {
            roots += 1;
            lines.push(r.node.to_string());
            lines.extend(r.children.iter().map(Value::to_string));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ op.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        lines.shuffle(&mut rng);
        (lines, roots)
    }
}

pub(crate) fn consent_node(state: &str, level: &str, at: Option<Ts>) -> (String, String, Value) {
    (
        state.to_uppercase(),
        level.to_uppercase(),
        at.map_or(Value::Null, |t| Value::String(utc(t))),
    )
}

fn customer_record(currency: &str, c: &CustomerSnap) -> Record {
    let (es, el, eat) = consent_node(
        c.email_consent.state.as_str(),
        c.email_consent.opt_in_level,
        c.email_consent.updated_at,
    );
    let phone = c.phone.as_ref().map_or(Value::Null, |p| {
        let (s, l, at) = c
            .sms_consent
            .as_ref()
            .map_or(("NOT_SUBSCRIBED".into(), "UNKNOWN".into(), Value::Null), |s| {
                consent_node(s.state.as_str(), s.opt_in_level, s.updated_at)
            });
        json!({"phoneNumber": p, "marketingState": s, "marketingOptInLevel": l, "marketingUpdatedAt": at})
    });
    let node = json!({
        "id": gid("Customer", c.id),
        "legacyResourceId": c.id.to_string(),
        "firstName": c.first_name,
        "lastName": c.last_name,
        "state": "ENABLED",
        "createdAt": utc(c.created_at),
        "updatedAt": utc(c.updated_at),
        "tags": c.tags,
        "defaultEmailAddress": {
            "emailAddress": c.email,
            "marketingState": es,
            "marketingOptInLevel": el,
            "marketingUpdatedAt": eat,
        },
        "defaultPhoneNumber": phone,
        "defaultAddress": {
            "city": c.address.city,
            "provinceCode": c.address.province_code,
            "countryCodeV2": "CA",
            "zip": c.address.zip,
        },
        "amountSpent": {"amount": money(c.total_spent), "currencyCode": currency},
        "numberOfOrders": c.orders_count.to_string(),
    });
    Record {
        updated_at: c.updated_at.with_timezone(&Utc),
        node,
        children: Vec::new(),
    }
}

fn order_record(
    currency: &str,
    cat: &[Product],
    o: &Order,
    number: u64,
    paid_at: Option<Ts>,
) -> Record {
    let b = &o.basket;
    let updated = o
        .refunds
        .iter()
        .map(|r| r.created_at)
        .chain([o.updated_at])
        .max()
        .unwrap_or(o.updated_at);
    let refunded = o
        .refunds
        .iter()
        .fold(Amt::default(), |a, r| a.add(r.amount));
    let mut transactions = Vec::new();
    let mut txn_id = o.id.wrapping_mul(31) % 9_000_000_000_000 + 1_000_000_000_000;
    let mut push = |kind: &str, status: &str, at: Ts, amount: Amt, gateway: &str, test: bool| {
        txn_id += 1;
        transactions.push(json!({
            "id": gid("OrderTransaction", txn_id),
            "kind": kind,
            "status": status,
            "processedAt": utc(at),
            "amountSet": bag(currency, b, amount),
            "gateway": gateway,
            "test": test,
        }));
    };
    match (paid_at, o.financial_status) {
        (Some(at), _) => push("SALE", "SUCCESS", at, b.total(), o.gateway, o.test),
        (None, "voided") => {
            push(
                "AUTHORIZATION",
                "SUCCESS",
                o.created_at,
                b.total(),
                o.gateway,
                o.test,
            );
            push(
                "VOID",
                "SUCCESS",
                o.cancelled_at.unwrap_or(o.updated_at),
                b.total(),
                o.gateway,
                o.test,
            );
        }
        (None, _) => push(
            "AUTHORIZATION",
            "PENDING",
            o.created_at,
            b.total(),
            o.gateway,
            o.test,
        ),
    }
    for r in &o.refunds {
        for t in &r.transactions {
            // The model keeps a transaction in its own currency; its shop share follows the
            // refund's own shop/presentment split.
            let shop = if r.amount.pres == 0 {
                t.amount
            } else {
                r.amount.shop * t.amount / r.amount.pres
            };
            let amt = if t.currency.is_empty() || t.currency == currency {
                Amt::new(t.amount, t.amount)
            } else {
                Amt::new(shop, t.amount)
            };
            push(
                "REFUND",
                if t.success { "SUCCESS" } else { "FAILURE" },
                t.created_at,
                amt,
                t.gateway,
                t.test,
            );
        }
    }
    let refunds: Vec<Value> = o
        .refunds
        .iter()
        .map(|r| {
            json!({
                "id": gid("Refund", r.id),
                "legacyResourceId": r.id.to_string(),
                "createdAt": utc(r.created_at),
                "note": r.note,
                "totalRefundedSet": bag(currency, b, r.amount),
            })
        })
        .collect();
    let customer = o.customer.as_ref().map_or(Value::Null, |c| {
        json!({"id": gid("Customer", c.id), "legacyResourceId": c.id.to_string(), "email": c.email,
               "firstName": c.first_name, "lastName": c.last_name})
    });
    let node = json!({
        "id": gid("Order", o.id),
        "legacyResourceId": o.id.to_string(),
        "name": format!("#{number}"),
        "email": o.email,
        "createdAt": utc(o.created_at),
        "updatedAt": utc(updated),
        "processedAt": utc(o.created_at),
        "cancelledAt": o.cancelled_at.map(utc),
        "cancelReason": o.cancel_reason.map(str::to_uppercase),
        "test": o.test,
        "currencyCode": currency,
        "presentmentCurrencyCode": if b.pres.code.is_empty() { currency } else { b.pres.code },
        "displayFinancialStatus": o.financial_status.to_uppercase(),
        "displayFulfillmentStatus": if o.fulfillment_status == Some("fulfilled") { "FULFILLED" } else { "UNFULFILLED" },
        "sourceName": "web",
        "discountCodes": b.discount_code.map_or_else(Vec::new, |c| vec![c]),
        "totalPriceSet": bag(currency, b, b.total()),
        "subtotalPriceSet": bag(currency, b, b.subtotal()),
        "totalTaxSet": bag(currency, b, b.tax()),
        "totalDiscountsSet": bag(currency, b, b.discounts()),
        "totalShippingPriceSet": bag(currency, b, b.shipping),
        "totalRefundedSet": bag(currency, b, refunded),
        "netPaymentSet": bag(currency, b, if paid_at.is_some() { b.total().sub(refunded) } else { Amt::default() }),
        "customer": customer,
        "transactions": transactions,
        "refunds": refunds,
    });
    let parent = gid("Order", o.id);
    let children = b
        .lines
        .iter()
        .map(|l| {
            let p = cat.get(l.product);
            json!({
                "id": gid("LineItem", l.id),
                "name": p.map(|p| format!("{} - {}", p.title, p.variant_title)),
                "title": p.map(|p| p.title.as_str()),
                "variantTitle": p.map(|p| p.variant_title.as_str()),
                "sku": p.map(|p| p.sku.clone()),
                "vendor": p.map(|p| p.vendor.as_str()),
                "quantity": l.quantity,
                "originalUnitPriceSet": bag(currency, b, l.price),
                "totalDiscountSet": bag(currency, b, l.discount),
                "variant": p.map(|p| json!({"id": gid("ProductVariant", p.variant_id), "legacyResourceId": p.variant_id.to_string()})),
                "product": p.map(|p| json!({"id": gid("Product", p.id), "legacyResourceId": p.id.to_string()})),
                "__parentId": parent,
            })
        })
        .collect();
    Record {
        updated_at: updated.with_timezone(&Utc),
        node,
        children,
    }
}
