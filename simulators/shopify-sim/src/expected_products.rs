//! Ground truth of the product catalogue (`expected.products`, only with products enabled):
//! what Iterable's catalog must hold at the end, and the enrichment each purchase and cart
//! item must carry.
//!
//! Rules (the pipeline's must match; field names and the URL template are the defaults):
//! - **Catalog**: every product whose final version is `active` and not deleted, with its
//!   final title, handle, vendor, type, taxonomy category, collections, tags, URL, image and
//!   variants (price and `compare_at_price` as last sent). Archived, draft-at-end and deleted
//!   products are listed in `removed` with the reason: they must not be in the catalog.
//! - **Item enrichment**: for each line of an order (keyed by order id) and of a checkout's
//!   last version (keyed by checkout token), the product as of the order's `created_at` /
//!   the checkout's `updated_at`: `categories` = `[product_type]` followed by the
//!   product's collections; `image_url` = the variant's own image, else the product's first,
//!   else null; `url` from the template. Title, handle, type, category, collections, vendor
//!   and images never change after a product is created, so those fields do not depend on
//!   when the join happens; `price`/`compare_at_price` do (sales), and are given as of the
//!   item's time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, ProductSnap, ProductStatus, VariantSnap};
use crate::model::ts;
use crate::model::{Line, Subject, Topic, Ts, money};
use crate::timeline::Timeline;

/// `expected.products`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductsExpectation {
    /// Template the `url` fields were made with (`{shop_domain}`, `{handle}`).
    pub url_template: String,
    /// Products the catalog must hold at the end, keyed by decimal product id.
    pub catalog: BTreeMap<String, CatalogProduct>,
    /// Products that must not be in it, keyed by product id: `archived`, `draft` or
    /// `deleted`.
    pub removed: BTreeMap<String, String>,
    /// Per order id, the enrichment of each line item.
    pub purchase_items: BTreeMap<String, Vec<ItemEnrichment>>,
    /// Per checkout token, the enrichment of each line of the checkout's last version.
    pub cart_items: BTreeMap<String, Vec<ItemEnrichment>>,
}

/// A product as the catalog must hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogProduct {
    /// Product id.
    pub id: u64,
    /// Title.
    pub title: String,
    /// Handle.
    pub handle: String,
    /// Vendor.
    pub vendor: String,
    /// `product_type` (null for the odd product).
    pub product_type: Option<String>,
    /// Taxonomy category `full_name` (`A > B > C`), if any.
    pub category: Option<String>,
    /// Collections (Admin API only; not in `products/*` payloads).
    pub collections: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Product URL.
    pub url: String,
    /// First image, if any.
    pub image_url: Option<String>,
    /// `updated_at` of the final version.
    pub updated_at: String,
    /// Variants.
    pub variants: Vec<CatalogVariant>,
}

/// A variant as the catalog must hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogVariant {
    /// Variant id.
    pub id: u64,
    /// SKU (null for the SKU-less odd product).
    pub sku: Option<String>,
    /// Variant title.
    pub title: String,
    /// Price, 2 dp.
    pub price: String,
    /// Compare-at price while on sale.
    pub compare_at_price: Option<String>,
    /// Inventory.
    pub inventory_quantity: i64,
    /// The variant's image (own, else the product's first).
    pub image_url: Option<String>,
}

/// What one purchase or cart item must be enriched with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemEnrichment {
    /// Line item id (orders) or the line's id in the checkout.
    pub line_item_id: u64,
    /// Product id.
    pub product_id: u64,
    /// Variant id.
    pub variant_id: u64,
    /// SKU.
    pub sku: Option<String>,
    /// `[product_type]` followed by collections.
    pub categories: Vec<String>,
    /// `product_type`.
    pub product_type: Option<String>,
    /// Collections.
    pub collections: Vec<String>,
    /// Taxonomy category `full_name`.
    pub category: Option<String>,
    /// Image URL.
    pub image_url: Option<String>,
    /// Product URL.
    pub url: String,
    /// Vendor.
    pub vendor: String,
    /// Unit price of the variant at the item's time.
    pub price: String,
    /// Compare-at price at the item's time.
    pub compare_at_price: Option<String>,
}

fn variant_view(p: &ProductSnap, v: &VariantSnap) -> CatalogVariant {
    CatalogVariant {
        id: v.id,
        sku: v.sku.clone(),
        title: v.title.clone(),
        price: money(v.price),
        compare_at_price: v.compare_at.map(money),
        inventory_quantity: v.inventory_quantity,
        image_url: p.image_for(v).map(|i| i.src.clone()),
    }
}

fn enrich(catalog: &Catalog, shop: &str, lines: &[Line], at: Ts) -> Vec<ItemEnrichment> {
    lines
        .iter()
        .filter_map(|l| {
            let (p, v) = catalog.variant_at(l.product, at)?;
            let mut categories: Vec<String> = p.product_type.iter().cloned().collect();
            categories.extend(p.collections.iter().cloned());
            Some(ItemEnrichment {
                line_item_id: l.id,
                product_id: p.id,
                variant_id: v.id,
                sku: v.sku.clone(),
                categories,
                product_type: p.product_type.clone(),
                collections: p.collections.clone(),
                category: p.category.map(|c| c.full_name.to_owned()),
                image_url: p.image_for(v).map(|i| i.src.clone()),
                url: catalog.url(shop, &p.handle),
                vendor: p.vendor.clone(),
                price: money(v.price),
                compare_at_price: v.compare_at.map(money),
            })
        })
        .collect()
}

/// `expected.products` for a timeline built with products enabled.
pub(crate) fn compute(shop: &str, tl: &Timeline) -> Option<ProductsExpectation> {
    let catalog = tl.catalog.as_ref()?;
    let mut products = BTreeMap::new();
    let mut removed = BTreeMap::new();
    for h in &catalog.histories {
        let Some(p) = h.last() else {
            if let Some((_, _, first)) = h.versions.first() {
                removed.insert(first.id.to_string(), "deleted".to_owned());
            }
            continue;
        };
        if p.status != ProductStatus::Active {
            removed.insert(p.id.to_string(), p.status.as_str().to_owned());
            continue;
        }
        products.insert(
            p.id.to_string(),
            CatalogProduct {
                id: p.id,
                title: p.title.clone(),
                handle: p.handle.clone(),
                vendor: p.vendor.clone(),
                product_type: p.product_type.clone(),
                category: p.category.map(|c| c.full_name.to_owned()),
                collections: p.collections.clone(),
                tags: p.tags.clone(),
                url: catalog.url(shop, &p.handle),
                image_url: p.images.first().map(|i| i.src.clone()),
                updated_at: ts(p.updated_at),
                variants: p.variants.iter().map(|v| variant_view(p, v)).collect(),
            },
        );
    }
    let mut purchase_items = BTreeMap::new();
    let mut cart_items = BTreeMap::new();
    for a in &tl.actions {
        match (&a.topic, &a.subject) {
            (Topic::OrdersCreate, Subject::Order(o)) => {
                purchase_items.insert(
                    o.id.to_string(),
                    enrich(catalog, shop, &o.basket.lines, o.created_at),
                );
            }
            (Topic::CheckoutsCreate | Topic::CheckoutsUpdate, Subject::Checkout(co)) => {
                // Actions are in time order here, so the last version wins.
                cart_items.insert(
                    co.token.clone(),
                    enrich(catalog, shop, &co.basket.lines, co.updated_at),
                );
            }
            _ => {}
        }
    }
    Some(ProductsExpectation {
        url_template: catalog.url_template.clone(),
        catalog: products,
        removed,
        purchase_items,
        cart_items,
    })
}
