//! Products: the normalised product the processor's product table holds, read leniently from
//! `products/*` payloads (and the backfill's bulk results), plus what is built from it: catalog
//! items ([`document`]) and enriched commerce items ([`enrich`]). Pure, like the rest of the crate.
//!
//! Reading never fails: a product payload with odd values (no images, `product_type: null`,
//! 100 variants, prices as numbers) yields a product with fewer facts, never an error, so it
//! can never dead-letter anything.

pub mod config;
pub mod document;
pub mod enrich;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use config::{CatalogConfig, CatalogFieldNames, CategorySource, ItemId};

/// Most variants kept per product (a webhook carries at most 100 in full).
pub const MAX_VARIANTS: usize = 100;

/// The Shopify topics that carry products. One list: the processor routes these to the
/// product table, ingest counts them as used.
pub const PRODUCT_TOPICS: [&str; 3] = ["products/create", "products/update", "products/delete"];

/// Whether `topic` carries a product.
pub fn is_product_topic(topic: &str) -> bool {
    PRODUCT_TOPICS.contains(&topic)
}

/// One product as the table keeps it: only what enrichment and the catalog use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Product {
    /// Shopify product id.
    pub id: String,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Handle (URL slug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Product type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_type: Option<String>,
    /// Standard taxonomy category (full name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Collection titles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    /// Vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `active`, `draft` or `archived` (lower case); `None` when the payload has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Main image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Variants, in payload order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// `updated_at`, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_ms: Option<i64>,
}

/// One variant.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Variant {
    /// Variant id.
    pub id: String,
    /// SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Variant title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// Compare-at price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_at_price: Option<Decimal>,
    /// Inventory quantity, when tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<i64>,
    /// The variant's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

impl Product {
    /// Reads a product payload; `id` is the product id from the record key, used when the
    /// body has none. Never fails (see the module doc).
    pub fn from_payload(id: &str, body: &Value) -> Self {
        let images = body["images"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let image_by_id = |image_id: &Value| {
            let want = id_text(image_id)?;
            images
                .iter()
                .find(|i| id_text(&i["id"]).as_deref() == Some(want.as_str()))
                .and_then(|i| text(&i["src"]))
        };
        let image_url = text(&body["image"]["src"]).or_else(|| {
            // The lowest position first; payload order when positions are missing.
            let mut sorted: Vec<&Value> = images.iter().collect();
            sorted.sort_by_key(|i| i["position"].as_i64().unwrap_or(i64::MAX));
            sorted.iter().find_map(|i| text(&i["src"]))
        });
        let variants = body["variants"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| {
                Some(Variant {
                    id: id_text(&v["id"])?,
                    sku: text(&v["sku"]),
                    title: text(&v["title"]).filter(|t| t != "Default Title"),
                    price: decimal(&v["price"]),
                    compare_at_price: decimal(&v["compare_at_price"]),
                    inventory: v["inventory_quantity"].as_i64(),
                    image_url: image_by_id(&v["image_id"]),
                })
            })
            .take(MAX_VARIANTS)
            .collect();
        let tags = match &body["tags"] {
            Value::String(s) => split_tags(s),
            Value::Array(a) => a.iter().filter_map(text).collect(),
            _ => Vec::new(),
        };
        let collections = body["collections"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|c| text(&c["title"]).or_else(|| text(c)))
            .collect();
        let category = text(&body["category"]["full_name"])
            .or_else(|| text(&body["category"]["fullName"]))
            .or_else(|| text(&body["category"]["name"]))
            .or_else(|| text(&body["category"]));
        Self {
            id: id_text(&body["id"]).unwrap_or_else(|| id.to_owned()),
            title: text(&body["title"]),
            handle: text(&body["handle"]),
            product_type: text(&body["product_type"]).or_else(|| text(&body["productType"])),
            category,
            collections,
            vendor: text(&body["vendor"]),
            tags,
            status: text(&body["status"]).map(|s| s.to_ascii_lowercase()),
            image_url,
            variants,
            updated_ms: text(&body["updated_at"])
                .or_else(|| text(&body["updatedAt"]))
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.timestamp_millis()),
        }
    }

    /// The variant with id `variant_id`.
    pub fn variant(&self, variant_id: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.id == variant_id)
    }

    /// The categories per `sources`, in order, without duplicates.
    pub fn categories(&self, sources: &[CategorySource]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |c: &str| {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_owned());
            }
        };
        for s in sources {
            match s {
                CategorySource::ProductType => self.product_type.iter().for_each(|c| push(c)),
                CategorySource::Category => self.category.iter().for_each(|c| push(c)),
                CategorySource::Collections => self.collections.iter().for_each(|c| push(c)),
            }
        }
        out
    }

    /// Whether the product belongs in the catalog (active, or draft when configured).
    pub fn listed(&self, cfg: &CatalogConfig) -> bool {
        match self.status.as_deref() {
            None | Some("active") => true,
            Some("draft") => cfg.include_drafts,
            Some(_) => false,
        }
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An id as text: JSON integers, numeric strings, and gids (`gid://shopify/Product/1` → `1`).
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => {
            let s = s.trim();
            let s = s.rsplit('/').next().unwrap_or(s);
            (!s.is_empty()).then(|| s.to_owned())
        }
        _ => None,
    }
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_payloads_read_without_error() {
        let p = Product::from_payload(
            "7",
            &json!({"product_type": null, "images": "x", "variants": [{"price": 1}]}),
        );
        assert_eq!(p.id, "7");
        assert_eq!((p.product_type, p.image_url), (None, None));
        assert!(p.variants.is_empty(), "a variant without id is skipped");
        let many: Vec<Value> = (0..150)
            .map(|i| json!({"id": i, "price": "1.50"}))
            .collect();
        let p = Product::from_payload("7", &json!({"id": 7, "variants": many}));
        assert_eq!(p.variants.len(), MAX_VARIANTS);
        assert_eq!(Product::from_payload("9", &json!("not an object")).id, "9");
    }

    #[test]
    fn images_tags_and_categories() {
        let p = Product::from_payload(
            "1",
            &json!({"id": 1, "product_type": "Shoes", "tags": "a, b,", "status": "ACTIVE",
                "collections": [{"title": "Summer"}, "Shoes"],
                "images": [{"id": 5, "src": "https://i/2", "position": 2}, {"id": 6, "src": "https://i/1", "position": 1}],
                "variants": [{"id": 10, "image_id": 5, "sku": "S"}, {"id": 11}],
                "updated_at": "2026-01-05T10:00:00Z"}),
        );
        assert_eq!(p.image_url.as_deref(), Some("https://i/1"));
        assert_eq!(
            p.variant("10").and_then(|v| v.image_url.as_deref()),
            Some("https://i/2")
        );
        assert_eq!(p.tags, ["a", "b"]);
        assert_eq!(p.status.as_deref(), Some("active"));
        assert_eq!(
            p.categories(&[CategorySource::ProductType, CategorySource::Collections]),
            ["Shoes", "Summer"]
        );
        assert_eq!(p.updated_ms, Some(1_767_607_200_000));
    }
}
