//! Enrichment: the product table's facts added to commerce items the order or checkout payload
//! left without them. Payload facts win (they describe what was bought at the time); only
//! missing ones are filled, so an item is never worse than its payload.

use std::sync::Arc;

use schemas::command::{Action, CommerceItem, IterableCommand};
use serde_json::{Map, Value};

use super::document::product_url;
use super::{CatalogConfig, Product};
use crate::format;

/// Fills the items of `cmd` (`trackPurchase`, `updateCart`, and the custom event named
/// `checkout_event`) from `lookup` (product id → the product version to use). Returns how many
/// items found their product.
pub fn enrich_command(
    cfg: &CatalogConfig,
    checkout_event: &str,
    cmd: &mut IterableCommand,
    lookup: &dyn Fn(&str) -> Option<Arc<Product>>,
) -> usize {
    match &mut cmd.action {
        Action::TrackPurchase { items, .. } | Action::UpdateCart { items } => items
            .iter_mut()
            .map(|i| enrich_item(cfg, i, lookup))
            .filter(|hit| *hit)
            .count(),
        Action::TrackEvent {
            event_name,
            data_fields,
            ..
        } if event_name == checkout_event => match data_fields.get_mut("items") {
            Some(Value::Array(items)) => items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .map(|i| enrich_object(cfg, i, lookup))
                .filter(|hit| *hit)
                .count(),
            _ => 0,
        },
        _ => 0,
    }
}

/// The part of `product` that enrichment reads (ids, handle, image, categories, vendor, and per
/// variant its SKU, image and compare-at price). The product table keeps older versions in
/// this form only: they serve as-of lookups, never the catalog, and two versions with equal
/// facts enrich an item alike, so the table can collapse them.
pub fn facts(product: &Product) -> Product {
    Product {
        id: product.id.clone(),
        handle: product.handle.clone(),
        product_type: product.product_type.clone(),
        category: product.category.clone(),
        collections: product.collections.clone(),
        vendor: product.vendor.clone(),
        image_url: product.image_url.clone(),
        variants: product
            .variants
            .iter()
            .map(|v| super::Variant {
                id: v.id.clone(),
                sku: v.sku.clone(),
                compare_at_price: v.compare_at_price,
                image_url: v.image_url.clone(),
                ..super::Variant::default()
            })
            .collect(),
        ..Product::default()
    }
}

fn field<'a>(m: Option<&'a Map<String, Value>>, k: &str) -> Option<&'a str> {
    m.and_then(|m| m.get(k)).and_then(Value::as_str)
}

fn enrich_item(
    cfg: &CatalogConfig,
    item: &mut CommerceItem,
    lookup: &dyn Fn(&str) -> Option<Arc<Product>>,
) -> bool {
    let Some(product) = field(item.data_fields.as_ref(), "product_id").and_then(lookup) else {
        return false;
    };
    let variant_id = field(item.data_fields.as_ref(), "variant_id").map(str::to_owned);
    let variant = variant_id.as_deref().and_then(|v| product.variant(v));
    if item.categories.is_empty() {
        item.categories = product.categories(&cfg.categories_from);
    }
    if item.sku.is_none() {
        item.sku = variant.and_then(|v| v.sku.clone());
    }
    if item.image_url.is_none() {
        item.image_url = variant
            .and_then(|v| v.image_url.clone())
            .or_else(|| product.image_url.clone());
    }
    if item.url.is_none() {
        item.url = product_url(
            cfg,
            Some(&product.id),
            variant_id.as_deref(),
            item.sku.as_deref(),
            product.handle.as_deref(),
        );
    }
    let data = item.data_fields.get_or_insert_with(Map::new);
    add_facts(data, &product, variant);
    true
}

fn enrich_object(
    cfg: &CatalogConfig,
    item: &mut Map<String, Value>,
    lookup: &dyn Fn(&str) -> Option<Arc<Product>>,
) -> bool {
    let Some(product) = field(Some(item), "product_id").and_then(lookup) else {
        return false;
    };
    let variant_id = field(Some(item), "variant_id").map(str::to_owned);
    let variant = variant_id.as_deref().and_then(|v| product.variant(v));
    let missing = |m: &Map<String, Value>, k: &str| m.get(k).is_none_or(Value::is_null);
    if missing(item, "categories") {
        let c = product.categories(&cfg.categories_from);
        item.insert("categories".into(), Value::from(c));
    }
    if missing(item, "sku")
        && let Some(s) = variant.and_then(|v| v.sku.clone())
    {
        item.insert("sku".into(), Value::String(s));
    }
    if missing(item, "imageUrl")
        && let Some(u) = variant
            .and_then(|v| v.image_url.clone())
            .or_else(|| product.image_url.clone())
    {
        item.insert("imageUrl".into(), Value::String(u));
    }
    if missing(item, "url") {
        let sku = field(Some(item), "sku").map(str::to_owned);
        if let Some(u) = product_url(
            cfg,
            Some(&product.id),
            variant_id.as_deref(),
            sku.as_deref(),
            product.handle.as_deref(),
        ) {
            item.insert("url".into(), Value::String(u));
        }
    }
    add_facts(item, &product, variant);
    true
}

/// Vendor and compare-at price, when the item has none.
fn add_facts(m: &mut Map<String, Value>, product: &Product, variant: Option<&super::Variant>) {
    if !m.contains_key("vendor")
        && let Some(v) = &product.vendor
    {
        m.insert("vendor".into(), Value::String(v.clone()));
    }
    if !m.contains_key("compare_at_price")
        && let Some(c) = variant.and_then(|v| v.compare_at_price)
    {
        m.insert("compare_at_price".into(), format::money(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use schemas::command::UserRef;
    use serde_json::json;

    fn product() -> Arc<Product> {
        Arc::new(Product::from_payload(
            "1",
            &json!({"id": 1, "handle": "shoe", "product_type": "Shoes", "vendor": "Acme",
                "image": {"src": "https://i/p"},
                "variants": [{"id": 10, "sku": "S-10", "compare_at_price": "20.00"}]}),
        ))
    }

    fn purchase(data: Value) -> IterableCommand {
        IterableCommand {
            command_id: "c".into(),
            shop_domain: "s".into(),
            customer_key: "s/c/1".into(),
            user: UserRef::default(),
            event_time_ms: 0,
            source_ids: vec![],
            action: Action::TrackPurchase {
                created_at_s: 0,
                total: Decimal::ONE,
                items: vec![CommerceItem {
                    id: "10".into(),
                    sku: None,
                    name: "Shoe".into(),
                    price: Decimal::ONE,
                    quantity: 1,
                    categories: vec![],
                    url: Some("https://payload/url".into()),
                    image_url: None,
                    data_fields: data.as_object().cloned(),
                }],
                data_fields: Map::new(),
            },
        }
    }

    #[test]
    fn missing_facts_are_filled_payload_facts_kept() {
        let cfg = CatalogConfig::default();
        let mut cmd = purchase(json!({"product_id": "1", "variant_id": "10"}));
        let n = enrich_command(&cfg, "checkout_abandoned", &mut cmd, &|id| {
            (id == "1").then(product)
        });
        assert_eq!(n, 1);
        let Action::TrackPurchase { items, .. } = &cmd.action else {
            unreachable!()
        };
        let i = &items[0];
        assert_eq!(i.categories, ["Shoes"]);
        assert_eq!(i.sku.as_deref(), Some("S-10"));
        assert_eq!(i.image_url.as_deref(), Some("https://i/p"));
        assert_eq!(
            i.url.as_deref(),
            Some("https://payload/url"),
            "payload wins"
        );
        let d = i.data_fields.as_ref().unwrap();
        assert_eq!(
            (d["vendor"].clone(), d["compare_at_price"].clone()),
            (json!("Acme"), json!(20.0))
        );
        let mut unknown = purchase(json!({"product_id": "2"}));
        let before = unknown.clone();
        assert_eq!(enrich_command(&cfg, "x", &mut unknown, &|_| None), 0);
        assert_eq!(
            unknown, before,
            "an unknown product leaves the payload's item"
        );
    }
}
