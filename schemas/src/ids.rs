//! Typed identifiers: shop domains, delivery ids and processor keys.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The shop domain is empty, too long or has characters a hostname cannot have.
    #[error("invalid shop domain {0:?}: expected a hostname such as example.myshopify.com")]
    ShopDomain(String),
    /// The key does not have the `{shop}/{kind}/{id}` shape.
    #[error("invalid key {0:?}: expected {{shop}}/{{kind}}/{{id}}")]
    Key(String),
}

/// A shop's `*.myshopify.com` domain (X-Shopify-Shop-Domain), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShopDomain(String);

impl ShopDomain {
    /// Validates a hostname-shaped domain and lower-cases it (header values are not trusted).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let d = raw.trim().to_ascii_lowercase();
        let ok = !d.is_empty()
            && d.len() <= 255
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !d.starts_with('.')
            && !d.ends_with('.');
        if ok {
            Ok(Self(d))
        } else {
            Err(IdError::ShopDomain(raw.to_owned()))
        }
    }

    /// The domain as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShopDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// X-Shopify-Webhook-Id: identifies one delivery; Shopify's retries reuse it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(pub String);

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a processor key names. The routing rule picks the most specific kind a payload allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// A Shopify customer, by numeric id: the normal case.
    Customer,
    /// A person known only by e-mail (guest checkout or order).
    Email,
    /// An order known only by id (refunds, orders/delete): forwarded to its customer.
    Order,
    /// A checkout with no contact details, by token.
    Checkout,
    /// An online-store cart, by token: carts carry no customer.
    Cart,
    /// A product, by id.
    Product,
    /// The shop itself (shop/redact, app/uninstalled, unknown shapes).
    Shop,
}

impl KeyKind {
    /// The one-letter tag used inside keys.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Customer => "c",
            Self::Email => "e",
            Self::Order => "o",
            Self::Checkout => "k",
            Self::Cart => "t",
            Self::Product => "p",
            Self::Shop => "s",
        }
    }

    /// Whether keys of this kind name a person: their raw bodies are sealed under the person's
    /// data key (crypto-shredding) and a redact erases them. Carts, products and the shop key
    /// name nobody.
    pub fn names_person(self) -> bool {
        matches!(
            self,
            Self::Customer | Self::Email | Self::Order | Self::Checkout
        )
    }

    fn from_tag(tag: &str) -> Option<Self> {
        Some(match tag {
            "c" => Self::Customer,
            "e" => Self::Email,
            "o" => Self::Order,
            "k" => Self::Checkout,
            "t" => Self::Cart,
            "p" => Self::Product,
            "s" => Self::Shop,
            _ => return None,
        })
    }
}

/// A processor key, `{shop}/{kind}/{id}`: the Kafka key on the raw, repartition, changelog and
/// commands topics, so that everything about one customer lands on one partition.
///
/// The kind is read once when the key is built: the rules ask for it several times per input
/// (re-splitting the text each time was 1.5 % of the processor's CPU). It is a function of the
/// text, so comparing and hashing the pair agrees with comparing and hashing the text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomerKey {
    text: String,
    kind: KeyKind,
}

impl CustomerKey {
    /// Builds a key; e-mail ids are lower-cased so one person has one key.
    pub fn new(shop: &ShopDomain, kind: KeyKind, id: &str) -> Self {
        let id = if kind == KeyKind::Email {
            id.trim().to_lowercase()
        } else {
            id.to_owned()
        };
        Self {
            text: format!("{}/{}/{}", shop.as_str(), kind.tag(), id),
            kind,
        }
    }

    /// Parses a key read from Kafka or from a query.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let mut parts = raw.splitn(3, '/');
        let (shop, kind, id) = (parts.next(), parts.next(), parts.next());
        match (shop, kind.and_then(KeyKind::from_tag), id) {
            (Some(s), Some(kind), Some(id)) if !s.is_empty() && !id.is_empty() => Ok(Self {
                text: raw.to_owned(),
                kind,
            }),
            _ => Err(IdError::Key(raw.to_owned())),
        }
    }

    /// The key as stored on Kafka.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The kind of entity this key names.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The shop part of the key.
    pub fn shop(&self) -> &str {
        self.text.split('/').next().unwrap_or_default()
    }

    /// The id part of the key (customer id, e-mail, order id, ...).
    pub fn id(&self) -> &str {
        self.text.splitn(3, '/').nth(2).unwrap_or_default()
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let shop = ShopDomain::parse("Demo.myshopify.com").unwrap();
        let k = CustomerKey::new(&shop, KeyKind::Email, " Alice@Example.COM ");
        assert_eq!(k.as_str(), "demo.myshopify.com/e/alice@example.com");
        let back = CustomerKey::parse(k.as_str()).unwrap();
        assert_eq!(back.kind(), KeyKind::Email);
        assert_eq!(back.id(), "alice@example.com");
        assert_eq!(back.shop(), "demo.myshopify.com");
        assert!(CustomerKey::parse("nope").is_err());
        assert!(CustomerKey::parse("s/x/1").is_err());
    }

    #[test]
    fn every_kind_survives_a_round_trip_and_a_built_key_equals_its_parsed_text() {
        let shop = ShopDomain::parse("s.myshopify.com").unwrap();
        for kind in [
            KeyKind::Customer,
            KeyKind::Email,
            KeyKind::Order,
            KeyKind::Checkout,
            KeyKind::Cart,
            KeyKind::Product,
            KeyKind::Shop,
        ] {
            // An id holding the separator stays the id: the kind is the second part.
            let built = CustomerKey::new(&shop, kind, "a/b");
            let parsed = CustomerKey::parse(built.as_str()).unwrap();
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed, built);
            assert_eq!(parsed.id(), "a/b");
        }
    }

    #[test]
    fn shop_domains_are_validated() {
        assert!(ShopDomain::parse("").is_err());
        assert!(ShopDomain::parse("evil/../x").is_err());
        assert!(ShopDomain::parse("a b.myshopify.com").is_err());
        assert_eq!(
            ShopDomain::parse("x-1.myshopify.com").unwrap().as_str(),
            "x-1.myshopify.com"
        );
    }
}
