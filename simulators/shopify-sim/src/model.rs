//! Domain model of the synthetic store: catalogue, customers, checkouts, orders, refunds.
//!
//! Amounts are integer minor units (cents) so totals add up exactly; every amount that
//! exists in two currencies is a [`Amt`] pair (shop money, presentment money).

use chrono::{DateTime, FixedOffset};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Payload timestamp type: always in the shop's UTC offset.
pub(crate) type Ts = DateTime<FixedOffset>;

/// An amount in shop money and presentment money, in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Amt {
    pub(crate) shop: i64,
    pub(crate) pres: i64,
}

impl Amt {
    pub(crate) fn new(shop: i64, pres: i64) -> Self {
        Amt { shop, pres }
    }
    pub(crate) fn add(self, o: Amt) -> Amt {
        Amt::new(self.shop + o.shop, self.pres + o.pres)
    }
    pub(crate) fn sub(self, o: Amt) -> Amt {
        Amt::new(self.shop - o.shop, self.pres - o.pres)
    }
}

/// Format cents as a 2-dp decimal string (`"404.95"`), Shopify's money format.
pub(crate) fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// Presentment currency of an order and its rate against the shop currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pres {
    pub(crate) code: &'static str,
    /// Presentment units per 1000 shop units.
    pub(crate) rate_milli: i64,
}

impl Pres {
    pub(crate) fn convert(self, shop_cents: i64) -> i64 {
        // Round half away from zero; all generated amounts are non-negative.
        (shop_cents * self.rate_milli + 500).div_euclid(1000)
    }
}

pub(crate) const FOREIGN_CURRENCIES: [Pres; 3] = [
    Pres {
        code: "EUR",
        rate_milli: 920,
    },
    Pres {
        code: "CAD",
        rate_milli: 1360,
    },
    Pres {
        code: "GBP",
        rate_milli: 790,
    },
];

/// A sellable variant of the catalogue (one entry per variant; `id` is its product's id).
/// `price` is the price at creation; with products enabled it changes over the timeline
/// (see `catalog::Catalog::price_at`).
#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub(crate) id: u64,
    pub(crate) variant_id: u64,
    pub(crate) sku: String,
    pub(crate) title: String,
    pub(crate) variant_title: String,
    pub(crate) vendor: String,
    pub(crate) price: i64,
    pub(crate) grams: u32,
}

/// Titles deliberately contain `&`, `/`, `"`, `<>` and non-ASCII so payload bytes carry
/// Shopify's escapes (`\u0026`, `\/`, …) and receivers that re-serialise fail the HMAC.
const CATALOGUE: [(&str, &str, i64, u32); 16] = [
    ("Salt & Pepper Grinder Set", "Walnut", 3400, 900),
    ("Cast Iron Skillet 10\"", "Black", 4500, 2600),
    ("Mortar & Pestle", "Granite", 2950, 3100),
    ("Linen Apron — Charcoal", "One size", 3800, 300),
    ("Chef's Knife 8\"/20cm", "Carbon", 12900, 250),
    ("Espresso Cups <Set of 4>", "White", 4200, 800),
    ("Copper Saucepan 2qt", "Copper", 18900, 1700),
    ("Stand Mixer Pro", "Cream", 44900, 9800),
    ("Olive Wood Spoons (3-pack)", "Natural", 2400, 200),
    ("Dutch Oven 5.5qt", "Cerise", 35900, 5400),
    ("Sharpening Stone 1000/6000", "Default Title", 3900, 700),
    ("Pour-Over Coffee Kit", "Glass", 6400, 1100),
    ("Bread Proofing Basket", "Round", 2700, 400),
    ("Spice Jars & Labels", "12 jars", 3100, 1500),
    ("Carbon Steel Wok", "14 in", 7900, 2200),
    ("Crème Brûlée Torch", "Default Title", 3600, 350),
];

/// The shop's product catalogue. Drawn from its own RNG stream so it is identical for
/// every person stream; about a third of the ids are above 2^53.
pub(crate) fn catalogue(rng: &mut ChaCha8Rng) -> Vec<Product> {
    CATALOGUE
        .iter()
        .enumerate()
        .map(|(i, (title, variant, price, grams))| {
            let i = i as u64;
            let big = i.is_multiple_of(3);
            let id = if big {
                632_910_392_000_000_000 + i * 1_000_003 + rng.random_range(0..1000)
            } else {
                7_513_594_000_000 + i * 10_007 + rng.random_range(0..1000)
            };
            let variant_id = if big {
                808_950_810_000_000_000 + i * 1_000_003 + rng.random_range(0..1000)
            } else {
                42_537_860_000_000 + i * 10_007 + rng.random_range(0..1000)
            };
            Product {
                id,
                variant_id,
                sku: format!(
                    "TK-{:04}-{}",
                    1000 + i * 7,
                    variant.chars().next().unwrap_or('X').to_ascii_uppercase()
                ),
                title: (*title).to_owned(),
                variant_title: (*variant).to_owned(),
                vendor: "Tillstream Kitchen".to_owned(),
                price: *price,
                grams: *grams,
            }
        })
        .collect()
}

/// Postal address (shipping/billing/default).
#[derive(Debug, Clone)]
pub(crate) struct Address {
    pub(crate) id: u64,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) address1: String,
    pub(crate) city: &'static str,
    pub(crate) province: &'static str,
    pub(crate) province_code: &'static str,
    pub(crate) zip: String,
    pub(crate) phone: Option<String>,
}

/// Marketing consent states as written in webhooks (lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsentState {
    Subscribed,
    NotSubscribed,
    Unsubscribed,
    /// Confirmation requested (double opt-in); only set through the Admin API here.
    Pending,
}

impl ConsentState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConsentState::Subscribed => "subscribed",
            ConsentState::NotSubscribed => "not_subscribed",
            ConsentState::Unsubscribed => "unsubscribed",
            ConsentState::Pending => "pending",
        }
    }
}

/// A consent record (email or SMS).
#[derive(Debug, Clone)]
pub(crate) struct Consent {
    pub(crate) state: ConsentState,
    pub(crate) opt_in_level: &'static str,
    pub(crate) updated_at: Option<Ts>,
}

/// Snapshot of a registered customer at one point in time.
#[derive(Debug, Clone)]
pub(crate) struct CustomerSnap {
    pub(crate) id: u64,
    pub(crate) email: String,
    pub(crate) phone: Option<String>,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
    pub(crate) address: Address,
    pub(crate) email_consent: Consent,
    pub(crate) sms_consent: Option<Consent>,
    pub(crate) tags: Vec<&'static str>,
    /// Shopify's own running figures (legacy payloads only), not the truth.
    pub(crate) orders_count: u32,
    pub(crate) total_spent: i64,
    pub(crate) last_order_id: Option<u64>,
}

/// One line of a basket/order.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) id: u64,
    pub(crate) product: usize,
    pub(crate) quantity: u32,
    /// Unit list price.
    pub(crate) price: Amt,
    /// Line discount (allocation of the order's discount code).
    pub(crate) discount: Amt,
    pub(crate) tax: Amt,
}

impl Line {
    pub(crate) fn gross(&self) -> Amt {
        let q = i64::from(self.quantity);
        Amt::new(self.price.shop * q, self.price.pres * q)
    }
    pub(crate) fn net(&self) -> Amt {
        self.gross().sub(self.discount)
    }
}

/// Lines plus shipping, discount and currency: everything a checkout and its order share.
#[derive(Debug, Clone)]
pub(crate) struct Basket {
    pub(crate) lines: Vec<Line>,
    pub(crate) shipping: Amt,
    pub(crate) discount_code: Option<&'static str>,
    pub(crate) pres: Pres,
}

impl Basket {
    pub(crate) fn line_items_total(&self) -> Amt {
        self.lines
            .iter()
            .fold(Amt::default(), |a, l| a.add(l.gross()))
    }
    pub(crate) fn discounts(&self) -> Amt {
        self.lines
            .iter()
            .fold(Amt::default(), |a, l| a.add(l.discount))
    }
    pub(crate) fn subtotal(&self) -> Amt {
        self.line_items_total().sub(self.discounts())
    }
    pub(crate) fn tax(&self) -> Amt {
        self.lines.iter().fold(Amt::default(), |a, l| a.add(l.tax))
    }
    pub(crate) fn total(&self) -> Amt {
        self.subtotal().add(self.tax()).add(self.shipping)
    }
    pub(crate) fn grams(&self, cat: &[Product]) -> u64 {
        self.lines
            .iter()
            .map(|l| u64::from(cat.get(l.product).map_or(0, |p| p.grams)) * u64::from(l.quantity))
            .sum()
    }
}

/// A checkout (keyed by `token`).
#[derive(Debug, Clone)]
pub(crate) struct Checkout {
    pub(crate) id: u64,
    pub(crate) token: String,
    pub(crate) cart_token: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) customer: Option<Box<CustomerSnap>>,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
    pub(crate) completed_at: Option<Ts>,
    pub(crate) basket: Basket,
    pub(crate) buyer_accepts_marketing: bool,
    pub(crate) shipping_address: Option<Address>,
}

/// An online-store cart (`carts/*`): no customer, times in UTC.
#[derive(Debug, Clone)]
pub(crate) struct Cart {
    pub(crate) token: String,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
    pub(crate) lines: Vec<Line>,
}

/// A payment transaction on a refund.
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    pub(crate) id: u64,
    pub(crate) success: bool,
    /// In `currency` (presentment currency for multi-currency orders).
    pub(crate) amount: i64,
    pub(crate) currency: &'static str,
    pub(crate) gateway: &'static str,
    pub(crate) parent_id: u64,
    pub(crate) created_at: Ts,
    pub(crate) test: bool,
}

/// A refunded (part of a) line.
#[derive(Debug, Clone)]
pub(crate) struct RefundLine {
    pub(crate) id: u64,
    pub(crate) line_index: usize,
    pub(crate) quantity: u32,
    pub(crate) subtotal: Amt,
    pub(crate) tax: Amt,
}

/// A refund (`refunds/create`).
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub(crate) id: u64,
    pub(crate) order_id: u64,
    pub(crate) created_at: Ts,
    pub(crate) note: Option<&'static str>,
    pub(crate) restock: bool,
    pub(crate) lines: Vec<RefundLine>,
    pub(crate) shipping: Option<Amt>,
    pub(crate) transactions: Vec<Transaction>,
    /// Money returned (shop and presentment). Successful transactions sum to `amount.pres`
    /// (to `amount.shop` for shop-currency orders); for line-based refunds the lines plus
    /// shipping sum to `amount` as well, so both ways of reading the payload agree.
    pub(crate) amount: Amt,
}

/// A fulfillment on an order.
#[derive(Debug, Clone)]
pub(crate) struct Fulfillment {
    pub(crate) id: u64,
    pub(crate) created_at: Ts,
    pub(crate) tracking_number: String,
}

/// An order snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) checkout_id: u64,
    pub(crate) checkout_token: String,
    pub(crate) cart_token: String,
    pub(crate) token: String,
    pub(crate) customer: Option<Box<CustomerSnap>>,
    pub(crate) email: String,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
    pub(crate) closed_at: Option<Ts>,
    pub(crate) cancelled_at: Option<Ts>,
    pub(crate) cancel_reason: Option<&'static str>,
    pub(crate) basket: Basket,
    pub(crate) test: bool,
    pub(crate) financial_status: &'static str,
    pub(crate) fulfillment_status: Option<&'static str>,
    pub(crate) fulfillments: Vec<Fulfillment>,
    pub(crate) refunds: Vec<Refund>,
    pub(crate) buyer_accepts_marketing: bool,
    pub(crate) gateway: &'static str,
    pub(crate) confirmation_number: String,
    pub(crate) shipping_address: Address,
}

impl Order {
    pub(crate) fn refunded(&self) -> Amt {
        self.refunds
            .iter()
            .fold(Amt::default(), |a, r| a.add(r.amount))
    }
}

/// Webhook topics the simulator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Topic {
    CustomersCreate,
    CustomersUpdate,
    EmailConsentUpdate,
    SmsConsentUpdate,
    CartsCreate,
    CartsUpdate,
    CheckoutsCreate,
    CheckoutsUpdate,
    CheckoutsDelete,
    OrdersCreate,
    OrdersUpdated,
    OrdersPaid,
    OrdersFulfilled,
    OrdersCancelled,
    OrdersDelete,
    RefundsCreate,
    CustomersRedact,
    CustomersDataRequest,
    ShopRedact,
    ProductsCreate,
    ProductsUpdate,
    ProductsDelete,
}

impl Topic {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Topic::CustomersCreate => "customers/create",
            Topic::CustomersUpdate => "customers/update",
            Topic::EmailConsentUpdate => "customers_email_marketing_consent/update",
            Topic::SmsConsentUpdate => "customers_marketing_consent/update",
            Topic::CartsCreate => "carts/create",
            Topic::CartsUpdate => "carts/update",
            Topic::CheckoutsCreate => "checkouts/create",
            Topic::CheckoutsUpdate => "checkouts/update",
            Topic::CheckoutsDelete => "checkouts/delete",
            Topic::OrdersCreate => "orders/create",
            Topic::OrdersUpdated => "orders/updated",
            Topic::OrdersPaid => "orders/paid",
            Topic::OrdersFulfilled => "orders/fulfilled",
            Topic::OrdersCancelled => "orders/cancelled",
            Topic::OrdersDelete => "orders/delete",
            Topic::RefundsCreate => "refunds/create",
            Topic::CustomersRedact => "customers/redact",
            Topic::CustomersDataRequest => "customers/data_request",
            Topic::ShopRedact => "shop/redact",
            Topic::ProductsCreate => "products/create",
            Topic::ProductsUpdate => "products/update",
            Topic::ProductsDelete => "products/delete",
        }
    }
}

/// What an action's payload is rendered from (a snapshot as of the action's time).
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    Customer(Box<CustomerSnap>),
    Cart(Box<Cart>),
    Checkout(Box<Checkout>),
    Order(Box<Order>),
    OrderDelete(u64),
    Refund(Box<Refund>, Box<Order>),
    Compliance {
        customer: Box<CustomerSnap>,
        orders: Vec<u64>,
        data_request_id: Option<u64>,
    },
    ShopRedact,
    /// Version `version` of catalogue product `history` (see `catalog::Catalog`).
    Product {
        history: usize,
        version: usize,
    },
    /// `products/delete` of this product id.
    ProductDelete(u64),
}

/// One webhook-producing action in the timeline.
#[derive(Debug, Clone)]
pub(crate) struct Action {
    pub(crate) at: Ts,
    pub(crate) topic: Topic,
    pub(crate) subject: Subject,
    /// Merchant-action group: actions of one group share an `X-Shopify-Event-Id`.
    pub(crate) group: u64,
    /// Owner person index (for stable ordering of simultaneous actions).
    pub(crate) person: u32,
    /// Creation order within the person (stable tie-break).
    pub(crate) seq: u32,
}

/// Shop-offset timestamp, `2026-01-05T09:00:00-05:00`.
pub(crate) fn ts(t: Ts) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}
