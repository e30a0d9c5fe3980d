//! A synthetic store of any size (millions of orders) for backfill benchmarks, generated per
//! object from the seed and streamed, never held in memory.
//!
//! Every order is a pure function of `(seed, index)`: one to four line items from the
//! catalogue, a successful sale, and for about one order in six a refund some days later.
//! Customers own orders round-robin. The JSONL is emitted in blocks of [`BLOCK`] orders whose
//! lines (roots and children) are shuffled together, so a child may come before or after its
//! parent; the children of one order in [`FAR_HEAD`] are moved to the head of the file and
//! those of one in [`FAR_TAIL`] to its tail, millions of lines away from their parent, which a
//! streaming reader must survive. There is no ground truth beyond the counts: the store is for
//! measuring, the scenario store ([`super::AdminStore`]) is for correctness.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::store::{Resource, UpdatedRange};
use crate::model::{Product, catalogue, money};

/// Orders per shuffled block.
pub(crate) const BLOCK: u64 = 1000;
/// One order in this many has its line items at the head of the file.
pub(crate) const FAR_HEAD: u64 = 97;
/// One order in this many has its line items at the tail of the file.
pub(crate) const FAR_TAIL: u64 = 89;

/// Size and shape of a synthetic store.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// Orders in the store.
    pub orders: u64,
    /// Customers (orders are spread over them round-robin).
    pub customers: u64,
    /// RNG seed.
    pub seed: u64,
    /// The first order's time; orders are spread over the following `days`.
    pub start: DateTime<Utc>,
    /// Length of the store's history.
    pub days: u32,
    /// Shop currency.
    pub currency: String,
}

impl SyntheticSpec {
    /// `orders` orders over three years of history, one customer per four orders.
    pub fn new(orders: u64, seed: u64) -> Self {
        Self {
            orders,
            customers: (orders / 4).max(1),
            seed,
            start: DateTime::parse_from_rfc3339("2023-01-01T00:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            days: 3 * 365,
            currency: "USD".into(),
        }
    }
}

/// One generated object and its child lines.
struct Generated {
    updated_at: DateTime<Utc>,
    node: Value,
    children: Vec<Value>,
}

/// The synthetic store: a spec plus the catalogue its line items use.
pub struct SyntheticStore {
    spec: SyntheticSpec,
    catalogue: Vec<Product>,
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bag(currency: &str, cents: i64) -> Value {
    json!({
        "shopMoney": {"amount": money(cents), "currencyCode": currency},
        "presentmentMoney": {"amount": money(cents), "currencyCode": currency},
    })
}

const ORDER_BASE: u64 = 5_100_000_000_000;
const CUSTOMER_BASE: u64 = 7_200_000_000_000;
const LINE_BASE: u64 = 13_000_000_000_000;

impl SyntheticStore {
    /// A store for `spec`.
    pub fn new(spec: SyntheticSpec) -> Self {
        let catalogue = catalogue(&mut ChaCha8Rng::seed_from_u64(spec.seed));
        Self { spec, catalogue }
    }

    /// Customers in the store.
    pub fn customer_count(&self) -> u64 {
        self.spec.customers
    }

    /// Orders in the store.
    pub fn order_count(&self) -> u64 {
        self.spec.orders
    }

    fn rng(&self, kind: u64, i: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(
            self.spec.seed
                ^ kind.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9),
        )
    }

    fn order_time(&self, i: u64) -> DateTime<Utc> {
        let span_s = i64::from(self.spec.days) * 86_400;
        let n = i64::try_from(self.spec.orders.max(1)).unwrap_or(i64::MAX);
        let at = i64::try_from(i).unwrap_or(0) * span_s / n;
        self.spec.start + Duration::seconds(at)
    }

    fn customer(&self, c: u64) -> Generated {
        let mut rng = self.rng(1, c);
        let id = CUSTOMER_BASE + c;
        let created = self.order_time(c % self.spec.orders.max(1)) - Duration::days(1);
        let updated = created + Duration::minutes(rng.random_range(1..600));
        let subscribed = rng.random_bool(0.6);
        let node = json!({
            "id": format!("gid://shopify/Customer/{id}"),
            "legacyResourceId": id.to_string(),
            "firstName": format!("Synth{c}"),
            "lastName": "Customer",
            "state": "ENABLED",
            "createdAt": utc(created),
            "updatedAt": utc(updated),
            "tags": ["synthetic"],
            "defaultEmailAddress": {
                "emailAddress": format!("synth{c}@example.com"),
                "marketingState": if subscribed { "SUBSCRIBED" } else { "NOT_SUBSCRIBED" },
                "marketingOptInLevel": "SINGLE_OPT_IN",
                "marketingUpdatedAt": utc(created),
            },
            "defaultPhoneNumber": null,
            "defaultAddress": {"city": "Toronto", "provinceCode": "ON", "countryCodeV2": "CA", "zip": "M5V 2T6"},
            "amountSpent": {"amount": "0.00", "currencyCode": self.spec.currency},
            "numberOfOrders": "0",
        });
        Generated {
            updated_at: updated,
            node,
            children: Vec::new(),
        }
    }

    fn order(&self, i: u64) -> Generated {
        let cur = self.spec.currency.as_str();
        let mut rng = self.rng(2, i);
        let id = ORDER_BASE + i;
        let gid = format!("gid://shopify/Order/{id}");
        let created = self.order_time(i) + Duration::seconds(rng.random_range(0..600));
        let paid = created + Duration::seconds(rng.random_range(1..120));
        let c = i % self.spec.customers.max(1);
        let lines = rng.random_range(1..=4u64);
        let mut subtotal = 0i64;
        let mut children = Vec::new();
        for l in 0..lines {
            let p = &self.catalogue[rng.random_range(0..self.catalogue.len())];
            let quantity: u32 = rng.random_range(1..=3);
            subtotal += p.price * i64::from(quantity);
            children.push(json!({
                "id": format!("gid://shopify/LineItem/{}", LINE_BASE + i * 4 + l),
                "name": format!("{} - {}", p.title, p.variant_title),
                "title": &p.title,
                "variantTitle": &p.variant_title,
                "sku": &p.sku,
                "vendor": &p.vendor,
                "quantity": quantity,
                "originalUnitPriceSet": bag(cur, p.price),
                "totalDiscountSet": bag(cur, 0),
                "variant": {"id": format!("gid://shopify/ProductVariant/{}", p.variant_id), "legacyResourceId": p.variant_id.to_string()},
                "product": {"id": format!("gid://shopify/Product/{}", p.id), "legacyResourceId": p.id.to_string()},
                "__parentId": gid,
            }));
        }
        let tax = subtotal * 13 / 100;
        let shipping = 800;
        let total = subtotal + tax + shipping;
        let mut transactions = vec![json!({
            "id": format!("gid://shopify/OrderTransaction/{}", LINE_BASE + i * 4),
            "kind": "SALE", "status": "SUCCESS", "processedAt": utc(paid), "gateway": "shopify_payments",
            "test": false, "amountSet": bag(cur, total),
        })];
        let mut refunds = Vec::new();
        let mut updated = paid + Duration::minutes(5);
        let mut refunded = 0;
        if rng.random_bool(1.0 / 6.0) {
            let at = paid + Duration::days(rng.random_range(1..30));
            refunded = total * rng.random_range(10..=100) / 100;
            let rid = ORDER_BASE + i;
            refunds.push(json!({
                "id": format!("gid://shopify/Refund/{rid}"), "legacyResourceId": rid.to_string(),
                "createdAt": utc(at), "note": "synthetic refund", "totalRefundedSet": bag(cur, refunded),
            }));
            transactions.push(json!({
                "id": format!("gid://shopify/OrderTransaction/{}", LINE_BASE + i * 4 + 1),
                "kind": "REFUND", "status": "SUCCESS", "processedAt": utc(at), "gateway": "shopify_payments",
                "test": false, "amountSet": bag(cur, refunded),
            }));
            updated = at;
        }
        let node = json!({
            "id": gid,
            "legacyResourceId": id.to_string(),
            "name": format!("#{}", 1001 + i),
            "email": format!("synth{c}@example.com"),
            "createdAt": utc(created),
            "updatedAt": utc(updated),
            "processedAt": utc(created),
            "cancelledAt": null,
            "cancelReason": null,
            "test": false,
            "currencyCode": cur,
            "presentmentCurrencyCode": cur,
            "displayFinancialStatus": if refunded == 0 { "PAID" } else if refunded == total { "REFUNDED" } else { "PARTIALLY_REFUNDED" },
            "displayFulfillmentStatus": "FULFILLED",
            "sourceName": "web",
            "discountCodes": [],
            "totalPriceSet": bag(cur, total),
            "subtotalPriceSet": bag(cur, subtotal),
            "totalTaxSet": bag(cur, tax),
            "totalDiscountsSet": bag(cur, 0),
            "totalShippingPriceSet": bag(cur, shipping),
            "totalRefundedSet": bag(cur, refunded),
            "netPaymentSet": bag(cur, total - refunded),
            "customer": {"id": format!("gid://shopify/Customer/{}", CUSTOMER_BASE + c), "legacyResourceId": (CUSTOMER_BASE + c).to_string(),
                         "email": format!("synth{c}@example.com"), "firstName": format!("Synth{c}"), "lastName": "Customer"},
            "transactions": transactions,
            "refunds": refunds,
        });
        Generated {
            updated_at: updated,
            node,
            children,
        }
    }

    fn generate(&self, resource: Resource, i: u64) -> Generated {
        match resource {
            Resource::Customers => self.customer(i),
            Resource::Orders => self.order(i),
        }
    }

    fn count(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Customers => self.spec.customers,
            Resource::Orders => self.spec.orders,
        }
    }

    /// `(root objects, all objects)` of a bulk query: one generation pass without output.
    pub fn counts(&self, resource: Resource, range: UpdatedRange) -> (u64, u64) {
        let (mut roots, mut all) = (0, 0);
        for i in 0..self.count(resource) {
            let g = self.generate(resource, i);
            if range.contains(g.updated_at) {
                roots += 1;
                all += 1 + g.children.len() as u64;
            }
        }
        (roots, all)
    }

    /// The file size of `objects` lines, estimated from the first objects' (Shopify reports
    /// the exact `fileSize`; clients use it only to plan, so an estimate is honest enough).
    pub fn estimated_size(&self, resource: Resource, objects: u64) -> u64 {
        let (mut lines, mut bytes) = (0u64, 0u64);
        for i in 0..self.count(resource).min(500) {
            let g = self.generate(resource, i);
            for v in std::iter::once(&g.node).chain(&g.children) {
                lines += 1;
                bytes += v.to_string().len() as u64 + 1;
            }
        }
        bytes.checked_div(lines).unwrap_or(0) * objects
    }

    /// Streams the JSONL of a bulk query to `out`, one chunk of lines per call; stops early
    /// when `out` returns false (the client went away).
    pub fn stream(
        &self,
        resource: Resource,
        range: UpdatedRange,
        op: u64,
        mut out: impl FnMut(String) -> bool,
    ) {
        let n = self.count(resource);
        let far = |i: u64, every: u64| resource == Resource::Orders && i % every == every - 1;
        let children_of = |every: u64, out: &mut dyn FnMut(String) -> bool| -> bool {
            let mut chunk = String::new();
            for i in (every - 1..n).step_by(usize::try_from(every).unwrap_or(1)) {
                let g = self.order(i);
                if !range.contains(g.updated_at) {
                    continue;
                }
                for c in &g.children {
                    chunk.push_str(&c.to_string());
                    chunk.push('\n');
                }
                if chunk.len() > 256 * 1024 && !out(std::mem::take(&mut chunk)) {
                    return false;
                }
            }
            chunk.is_empty() || out(chunk)
        };
        if resource == Resource::Orders && !children_of(FAR_HEAD, &mut out) {
            return;
        }
        let mut shuffle = ChaCha8Rng::seed_from_u64(self.spec.seed ^ op);
        let mut block = 0;
        while block < n {
            let mut lines = Vec::new();
            for i in block..(block + BLOCK).min(n) {
                let g = self.generate(resource, i);
                if !range.contains(g.updated_at) {
                    continue;
                }
                lines.push(g.node.to_string());
                if !far(i, FAR_HEAD) && !far(i, FAR_TAIL) {
                    lines.extend(g.children.iter().map(Value::to_string));
                }
            }
            lines.shuffle(&mut shuffle);
            let mut chunk = lines.join("\n");
            if !chunk.is_empty() {
                chunk.push('\n');
            }
            if !out(chunk) {
                return;
            }
            block += BLOCK;
        }
        if resource == Resource::Orders {
            children_of(FAR_TAIL, &mut out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn every_child_has_its_parent_some_far_away_and_counts_agree() {
        let store = SyntheticStore::new(SyntheticSpec::new(3000, 7));
        let mut text = String::new();
        store.stream(Resource::Orders, UpdatedRange::default(), 1, |c| {
            text.push_str(&c);
            true
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (roots, all) = store.counts(Resource::Orders, UpdatedRange::default());
        assert_eq!((roots, all), (3000, lines.len() as u64));
        let mut at: BTreeMap<String, usize> = BTreeMap::new();
        for (n, l) in lines.iter().enumerate() {
            if l.get("__parentId").is_none() {
                at.insert(l["id"].as_str().unwrap().to_owned(), n);
            }
        }
        let mut distances = BTreeSet::new();
        for (n, l) in lines.iter().enumerate() {
            if let Some(p) = l.get("__parentId").and_then(Value::as_str) {
                let parent = at[p];
                distances.insert(n.abs_diff(parent));
            }
        }
        assert!(
            distances.iter().any(|d| *d > 5000),
            "some children are far away"
        );
        let before = lines.iter().enumerate().any(|(n, l)| {
            l.get("__parentId")
                .and_then(Value::as_str)
                .is_some_and(|p| at[p] > n)
        });
        assert!(before, "some children come before their parent");
    }
}
