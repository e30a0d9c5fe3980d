//! The `[catalog]` section of the rules file: product URLs, enrichment, and the Iterable catalog.

use serde::{Deserialize, Serialize};

/// Catalog settings: how commerce items get product data, and how products reach Iterable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Product URL template for commerce items and catalog items, e.g.
    /// `https://shop.example.com/products/{handle}?variant={variant_id}`. Placeholders:
    /// `{product_id}`, `{variant_id}`, `{sku}`, `{handle}`; the URL is left out when one it
    /// uses is unknown. Unset: only URLs present in the payload are used.
    pub product_url_template: Option<String>,
    /// Enrich `trackPurchase`, `updateCart` and `checkout_abandoned` items from the product
    /// table (categories, image, URL, SKU, vendor, compare-at price).
    pub enrich: bool,
    /// Keep an Iterable catalog in sync with the store's products.
    pub sync: bool,
    /// The Iterable catalog's name (letters, digits, dashes; created on first use).
    pub name: String,
    /// What names a catalog item: `product_id` (default) or `handle`.
    pub item_id: ItemId,
    /// Where item categories come from, in order: `product_type`, `category` (Shopify's
    /// standard taxonomy, full name), `collections` (collection titles, when the payload or
    /// backfill carries them).
    pub categories_from: Vec<CategorySource>,
    /// Which catalog fields are sent (setting names of `[catalog.fields]`); empty = all.
    pub send: Vec<String>,
    /// Sync draft products too (default: only active products are in the catalog; archived
    /// and deleted ones are removed from it).
    pub include_drafts: bool,
    /// Iterable field names of catalog items.
    pub fields: CatalogFieldNames,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            product_url_template: None,
            enrich: true,
            sync: true,
            name: "shopify-products".into(),
            item_id: ItemId::ProductId,
            categories_from: vec![CategorySource::ProductType, CategorySource::Collections],
            send: Vec::new(),
            include_drafts: false,
            fields: CatalogFieldNames::default(),
        }
    }
}

/// What names a catalog item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemId {
    /// The Shopify product id (stable for the product's life).
    #[default]
    ProductId,
    /// The product handle (readable, but a renamed handle makes a new item).
    Handle,
}

/// A source of item categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CategorySource {
    /// `product_type`.
    ProductType,
    /// The standard product taxonomy category's full name.
    Category,
    /// Titles of the product's collections.
    Collections,
}

macro_rules! catalog_fields {
    ($($(#[$fm:meta])* $field:ident = $default:literal,)*) => {
        /// Iterable field names of a catalog item (keys are the settings, values the names).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct CatalogFieldNames {
            $($(#[$fm])* pub $field: String,)*
        }

        impl Default for CatalogFieldNames {
            fn default() -> Self {
                Self { $($field: $default.into(),)* }
            }
        }

        impl CatalogFieldNames {
            /// `(setting, name)` pairs, for validation, `send` and documentation.
            pub fn entries(&self) -> Vec<(&'static str, &str)> {
                vec![$((stringify!($field), self.$field.as_str()),)*]
            }
        }
    };
}

catalog_fields! {
    /// Product title (string).
    title = "name",
    /// Product handle (string).
    handle = "handle",
    /// Product type (string).
    product_type = "productType",
    /// Vendor (string).
    vendor = "vendor",
    /// Tags (array of strings).
    tags = "tags",
    /// Shopify status (`active`, `draft`).
    status = "status",
    /// Product URL from the template (string).
    url = "url",
    /// Main image URL (string).
    image_url = "imageUrl",
    /// Categories per `categories_from` (array of strings).
    categories = "categories",
    /// Lowest variant price (number).
    price = "price",
    /// Compare-at price of that variant (number).
    compare_at_price = "compareAtPrice",
    /// SKU of the first variant (string).
    sku = "sku",
    /// Whether any variant is in stock (boolean; left out when inventory is not tracked).
    available = "available",
    /// Variants: id, sku, title, price, compareAtPrice, available, imageUrl (array of objects).
    variants = "variants",
    /// Last product update (date).
    updated_at = "updatedAt",
}

impl CatalogConfig {
    /// Whether the field `setting` is sent.
    pub fn sends(&self, setting: &str) -> bool {
        self.send.is_empty() || self.send.iter().any(|s| s == setting)
    }

    /// Problems with these settings as `(setting, message)` pairs.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !is_iterable_name(&self.name) {
            out.push((
                "catalog.name".into(),
                format!(
                    "{:?}: letters, digits and dashes, 1 to 255 characters",
                    self.name
                ),
            ));
        }
        let settings: Vec<&str> = self.fields.entries().iter().map(|(s, _)| *s).collect();
        for s in &self.send {
            if !settings.contains(&s.as_str()) {
                out.push((
                    "catalog.send".into(),
                    format!("unknown field {s:?}; use one of {}", settings.join(", ")),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (setting, name) in self.fields.entries() {
            let at = format!("catalog.fields.{setting}");
            if name.is_empty() || name.len() > 255 || name.contains('.') || name.trim() != name {
                out.push((
                    at,
                    format!("{name:?}: 1 to 255 characters, no periods or edge spaces"),
                ));
            } else if !seen.insert(name) {
                out.push((at, format!("{name:?} is used twice")));
            }
        }
        out
    }
}

/// Iterable's rule for catalog names and item ids: letters, digits and dashes, ≤ 255.
pub fn is_iterable_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
