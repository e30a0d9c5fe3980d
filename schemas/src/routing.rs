//! The routing rule: which Kafka key (and so which partition) a raw Shopify event gets.
//!
//! Everything about one customer must reach one partition, because the processor keeps
//! per-customer state per partition. The rule picks, per topic, the most specific identity the
//! payload carries (see the table in ARCHITECTURE.md):
//!
//! 1. a Shopify customer id → `{shop}/c/{id}`;
//! 2. else an e-mail (guest checkouts and orders) → `{shop}/e/{email}`;
//! 3. else the entity's own id: orders `o`, checkouts `k`, carts `t`, products `p`;
//! 4. else (shop-level topics, unknown topics, bodies that are not JSON objects) the shop key
//!    `{shop}/s/-`.
//!
//! Events keyed by an entity (refunds carry only `order_id`, `orders/delete` only `id`) are
//! brought to their customer by the processor through its repartition topic. The body is only
//! scanned for the few fields named here; unknown fields are skipped without allocation.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::ids::{CustomerKey, KeyKind, ShopDomain};

/// A JSON id that may be a number or a string (gids, tokens).
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Num(u64),
    Signed(i64),
    Text(String),
    #[allow(dead_code)] // Floats or objects: present but unusable as a key.
    Other(IgnoredAny),
}

impl Id {
    fn text(&self) -> Option<String> {
        match self {
            Id::Num(n) => Some(n.to_string()),
            Id::Signed(n) => Some(n.to_string()),
            // gid://shopify/Customer/123 → 123, so gids and numeric ids give one key.
            Id::Text(s) if !s.is_empty() => Some(s.rsplit('/').next().unwrap_or(s).to_owned()),
            _ => None,
        }
    }
}

/// A field read if it has the expected shape and skipped otherwise: one odd value (a numeric
/// email, a customer given as a string) must not send the whole event to the shop key.
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose<T> {
    Usable(T),
    #[allow(dead_code)] // Present but of another type: treated as absent.
    Other(IgnoredAny),
}

impl<T> Loose<T> {
    fn get(this: &Option<Self>) -> Option<&T> {
        match this {
            Some(Loose::Usable(t)) => Some(t),
            _ => None,
        }
    }
}

#[derive(Deserialize, Default)]
struct Person {
    id: Option<Id>,
    email: Option<Loose<String>>,
}

#[derive(Deserialize, Default)]
struct Fields {
    id: Option<Id>,
    token: Option<Id>,
    customer: Option<Loose<Person>>,
    email: Option<Loose<String>>,
    contact_email: Option<Loose<String>>,
    customer_id: Option<Id>,
    #[serde(rename = "customerId")]
    customer_id_camel: Option<Id>,
    order_id: Option<Id>,
    order_edit: Option<Loose<OrderEdit>>,
    /// Iterable system webhooks (`iterable/*` topics) name the user by `userId` and `email`.
    #[serde(rename = "userId")]
    user_id: Option<Id>,
}

#[derive(Deserialize, Default)]
struct OrderEdit {
    order_id: Option<Id>,
}

fn nonempty(s: &Option<Loose<String>>) -> Option<&str> {
    Loose::get(s).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Topic prefix of Iterable system webhooks on the raw topic: `iterable/{eventName}`.
pub const ITERABLE_TOPIC_PREFIX: &str = "iterable/";

/// The Iterable system webhook events ingest publishes (as `iterable/{eventName}`); the rules
/// turn them into consent changes. Every other event name is counted and ignored by ingest.
pub const ITERABLE_CONSENT_EVENTS: [&str; 6] = [
    "emailBounce",
    "emailComplaint",
    "emailSubscribe",
    "emailUnSubscribe",
    "hostedUnsubscribeClick",
    "smsReceived",
];

/// Computes the Kafka key of a raw event from its shop, topic and body bytes.
pub fn routing_key(shop: &ShopDomain, topic: &str, body: &[u8]) -> CustomerKey {
    let shop_key = || CustomerKey::new(shop, KeyKind::Shop, "-");
    let Ok(f) = serde_json::from_slice::<Fields>(body) else {
        return shop_key();
    };
    let key = |kind, id: &Option<Id>| {
        id.as_ref()
            .and_then(Id::text)
            .map(|id| CustomerKey::new(shop, kind, &id))
    };
    let person = |f: &Fields| {
        let customer = Loose::get(&f.customer);
        customer
            .and_then(|c| key(KeyKind::Customer, &c.id))
            .or_else(|| {
                customer
                    .and_then(|c| nonempty(&c.email))
                    .or_else(|| nonempty(&f.email))
                    .or_else(|| nonempty(&f.contact_email))
                    .map(|e| CustomerKey::new(shop, KeyKind::Email, e))
            })
    };
    let routed = match topic {
        "customers_email_marketing_consent/update" => key(KeyKind::Customer, &f.customer_id),
        "customer.tags_added" | "customer.tags_removed" | "customers/purchasing_summary" => {
            key(KeyKind::Customer, &f.customer_id_camel)
        }
        t if t.starts_with("customers/")
            && t != "customers/redact"
            && t != "customers/data_request" =>
        {
            key(KeyKind::Customer, &f.id)
        }
        "customers_marketing_consent/update" => key(KeyKind::Customer, &f.id),
        "customers/redact" | "customers/data_request" => person(&f),
        "orders/delete" => key(KeyKind::Order, &f.id),
        "orders/edited" => key(
            KeyKind::Order,
            &Loose::get(&f.order_edit)
                .and_then(|o| o.order_id.as_ref())
                .and_then(Id::text)
                .map(Id::Text),
        ),
        "refunds/create" | "order_transactions/create" => key(KeyKind::Order, &f.order_id),
        t if t.starts_with("orders/") => person(&f).or_else(|| key(KeyKind::Order, &f.id)),
        "checkouts/delete" => key(KeyKind::Checkout, &f.id),
        t if t.starts_with("checkouts/") => person(&f).or_else(|| key(KeyKind::Checkout, &f.token)),
        t if t.starts_with("carts/") => {
            key(KeyKind::Cart, &f.token).or_else(|| key(KeyKind::Cart, &f.id))
        }
        t if t.starts_with("products/") => key(KeyKind::Product, &f.id),
        // Iterable system webhooks (issue 20): tillstream writes the Shopify customer id as
        // Iterable's userId, so a numeric userId is the customer; otherwise the address (an
        // email key owned by a customer forwards to it in the processor).
        t if t.starts_with(ITERABLE_TOPIC_PREFIX) => f
            .user_id
            .as_ref()
            .and_then(Id::text)
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            .map(|id| CustomerKey::new(shop, KeyKind::Customer, &id))
            .or_else(|| nonempty(&f.email).map(|e| CustomerKey::new(shop, KeyKind::Email, e))),
        _ => None,
    };
    routed.unwrap_or_else(shop_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(topic: &str, body: &str) -> String {
        let shop = ShopDomain::parse("demo.myshopify.com").unwrap();
        routing_key(&shop, topic, body.as_bytes())
            .as_str()
            .to_owned()
    }

    #[test]
    fn orders_go_to_their_customer_then_email_then_order() {
        assert_eq!(
            route(
                "orders/paid",
                r#"{"id":1,"customer":{"id":820982911946154508},"email":"a@b.c"}"#
            ),
            "demo.myshopify.com/c/820982911946154508"
        );
        assert_eq!(
            route("orders/paid", r#"{"id":1,"customer":null,"email":"A@B.c"}"#),
            "demo.myshopify.com/e/a@b.c"
        );
        assert_eq!(
            route("orders/paid", r#"{"id":7,"email":""}"#),
            "demo.myshopify.com/o/7"
        );
        assert_eq!(
            route("refunds/create", r#"{"id":9,"order_id":7}"#),
            "demo.myshopify.com/o/7"
        );
        assert_eq!(
            route("orders/delete", r#"{"id":7}"#),
            "demo.myshopify.com/o/7"
        );
    }

    #[test]
    fn iterable_webhooks_go_to_the_customer_then_the_email() {
        assert_eq!(
            route(
                "iterable/emailUnSubscribe",
                r#"{"userId":"42","email":"A@b.c","eventName":"emailUnSubscribe"}"#
            ),
            "demo.myshopify.com/c/42"
        );
        assert_eq!(
            route(
                "iterable/emailUnSubscribe",
                r#"{"userId":"not-a-customer","email":"A@b.c"}"#
            ),
            "demo.myshopify.com/e/a@b.c"
        );
        assert_eq!(
            route("iterable/smsReceived", r#"{"userId":null,"email":null}"#),
            "demo.myshopify.com/s/-"
        );
    }

    #[test]
    fn customers_consent_checkouts_carts() {
        assert_eq!(
            route("customers/update", r#"{"id":5,"email":"x@y.z"}"#),
            "demo.myshopify.com/c/5"
        );
        assert_eq!(
            route(
                "customers_email_marketing_consent/update",
                r#"{"customer_id":5}"#
            ),
            "demo.myshopify.com/c/5"
        );
        assert_eq!(
            route(
                "customers_marketing_consent/update",
                r#"{"id":5,"phone":"+1"}"#
            ),
            "demo.myshopify.com/c/5"
        );
        assert_eq!(
            route(
                "customer.tags_added",
                r#"{"customerId":"gid://shopify/Customer/5"}"#
            ),
            "demo.myshopify.com/c/5"
        );
        assert_eq!(
            route("checkouts/update", r#"{"token":"abc","email":"g@h.i"}"#),
            "demo.myshopify.com/e/g@h.i"
        );
        assert_eq!(
            route("checkouts/create", r#"{"token":"abc"}"#),
            "demo.myshopify.com/k/abc"
        );
        assert_eq!(
            route("carts/update", r#"{"id":"tok","token":"tok"}"#),
            "demo.myshopify.com/t/tok"
        );
        assert_eq!(
            route(
                "customers/redact",
                r#"{"customer":{"id":5,"email":"x@y.z"}}"#
            ),
            "demo.myshopify.com/c/5"
        );
    }

    #[test]
    fn an_odd_field_does_not_cost_the_route() {
        assert_eq!(
            route(
                "orders/paid",
                r#"{"id":1,"customer":{"id":5,"email":42},"email":42}"#
            ),
            "demo.myshopify.com/c/5"
        );
        assert_eq!(
            route("orders/paid", r#"{"id":7,"customer":"guest","email":true}"#),
            "demo.myshopify.com/o/7"
        );
        assert_eq!(
            route(
                "orders/paid",
                r#"{"id":7,"customer":null,"contact_email":"G@h.i"}"#
            ),
            "demo.myshopify.com/e/g@h.i"
        );
    }

    #[test]
    fn anything_else_goes_to_the_shop_key() {
        assert_eq!(
            route("shop/redact", r#"{"shop_id":1}"#),
            "demo.myshopify.com/s/-"
        );
        assert_eq!(route("orders/paid", "not json"), "demo.myshopify.com/s/-");
        assert_eq!(route("orders/paid", ""), "demo.myshopify.com/s/-");
        assert_eq!(
            route("orders/paid", r#"{"id":1.5}"#),
            "demo.myshopify.com/s/-"
        );
        assert_eq!(
            route("weird/topic", r#"{"id":1}"#),
            "demo.myshopify.com/s/-"
        );
    }
}
