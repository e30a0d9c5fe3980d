//! A product as an Iterable catalog item: its id and its fields, per `[catalog]`.

use serde_json::{Map, Value};

use super::{CatalogConfig, ItemId, Product, Variant};
use crate::format;

/// Iterable's cap on one catalog item's JSON.
pub const MAX_ITEM_BYTES: usize = 30 * 1024;

/// The catalog item id of `product`, made safe for Iterable (letters, digits, dashes).
pub fn item_id(cfg: &CatalogConfig, product: &Product) -> String {
    let raw = match cfg.item_id {
        ItemId::ProductId => product.id.as_str(),
        ItemId::Handle => product.handle.as_deref().unwrap_or(&product.id),
    };
    let id = schemas::iterable_id(&[raw]);
    // iterable_id caps at 512; catalog ids at 255. Product ids and handles are far shorter,
    // so the cut only ever touches hostile input.
    id.chars().take(255).collect()
}

/// Fills the product URL template; `None` when unset or a placeholder it uses is unknown.
pub fn product_url(
    cfg: &CatalogConfig,
    product_id: Option<&str>,
    variant_id: Option<&str>,
    sku: Option<&str>,
    handle: Option<&str>,
) -> Option<String> {
    let mut url = cfg.product_url_template.clone()?;
    for (ph, v) in [
        ("{product_id}", product_id),
        ("{variant_id}", variant_id),
        ("{sku}", sku),
        ("{handle}", handle),
    ] {
        if url.contains(ph) {
            url = url.replace(ph, v?);
        }
    }
    Some(url)
}

/// The catalog item of a listed product: the configured fields that have a value.
pub fn document(cfg: &CatalogConfig, product: &Product) -> Map<String, Value> {
    let names = &cfg.fields;
    let mut doc = Map::new();
    let mut put = |setting: &str, name: &str, value: Option<Value>| {
        if let Some(v) = value
            && cfg.sends(setting)
        {
            doc.insert(name.to_owned(), v);
        }
    };
    let s = |v: &Option<String>| v.clone().map(Value::String);
    let cheapest = product
        .variants
        .iter()
        .filter(|v| v.price.is_some())
        .min_by_key(|v| v.price);
    let first = product.variants.first();
    put("title", &names.title, s(&product.title));
    put("handle", &names.handle, s(&product.handle));
    put(
        "product_type",
        &names.product_type,
        s(&product.product_type),
    );
    put("vendor", &names.vendor, s(&product.vendor));
    put(
        "tags",
        &names.tags,
        (!product.tags.is_empty()).then(|| Value::from(product.tags.clone())),
    );
    put("status", &names.status, s(&product.status));
    put(
        "url",
        &names.url,
        product_url(
            cfg,
            Some(&product.id),
            first.map(|v| v.id.as_str()),
            first.and_then(|v| v.sku.as_deref()),
            product.handle.as_deref(),
        )
        .map(Value::String),
    );
    put("image_url", &names.image_url, s(&product.image_url));
    put(
        "categories",
        &names.categories,
        Some(Value::from(product.categories(&cfg.categories_from))),
    );
    put(
        "price",
        &names.price,
        cheapest.and_then(|v| v.price).map(format::money),
    );
    put(
        "compare_at_price",
        &names.compare_at_price,
        cheapest.and_then(|v| v.compare_at_price).map(format::money),
    );
    put("sku", &names.sku, first.and_then(|v| s(&v.sku)));
    put("available", &names.available, available(&product.variants));
    put(
        "updated_at",
        &names.updated_at,
        product.updated_ms.map(format::date),
    );
    if cfg.sends("variants") && !product.variants.is_empty() {
        let variants: Vec<Value> = product.variants.iter().map(variant_value).collect();
        doc.insert(names.variants.clone(), Value::Array(variants));
        // Iterable refuses items over 30 KB; the variants are the only unbounded part, so
        // drop them from the end until the item fits (100 long-titled variants can exceed it).
        while Value::Object(doc.clone()).to_string().len() > MAX_ITEM_BYTES {
            let Some(Value::Array(vs)) = doc.get_mut(&names.variants) else {
                break;
            };
            if vs.pop().is_none() {
                break;
            }
        }
    }
    doc
}

fn available(variants: &[Variant]) -> Option<Value> {
    let tracked: Vec<i64> = variants.iter().filter_map(|v| v.inventory).collect();
    (!tracked.is_empty()).then(|| Value::Bool(tracked.iter().any(|q| *q > 0)))
}

fn variant_value(v: &Variant) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(v.id.clone()));
    for (k, val) in [
        ("sku", v.sku.clone().map(Value::String)),
        ("title", v.title.clone().map(Value::String)),
        ("price", v.price.map(format::money)),
        ("compareAtPrice", v.compare_at_price.map(format::money)),
        ("available", v.inventory.map(|q| Value::Bool(q > 0))),
        ("imageUrl", v.image_url.clone().map(Value::String)),
    ] {
        if let Some(val) = val {
            m.insert(k.into(), val);
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_follow_the_config_and_stay_under_30_kb() {
        let long = "x".repeat(400);
        let variants: Vec<Value> = (0..100)
            .map(|i| json!({"id": i, "title": long, "sku": format!("S{i}"), "price": "9.99"}))
            .collect();
        let p = Product::from_payload(
            "1",
            &json!({"id": 1, "title": "T", "handle": "t", "variants": variants}),
        );
        let cfg = CatalogConfig {
            product_url_template: Some("https://s.example/products/{handle}".into()),
            ..CatalogConfig::default()
        };
        let doc = document(&cfg, &p);
        assert_eq!(doc["name"], "T");
        assert_eq!(doc["url"], "https://s.example/products/t");
        assert_eq!(doc["price"], 9.99);
        assert!(Value::Object(doc.clone()).to_string().len() <= MAX_ITEM_BYTES);
        assert!(
            doc["variants"]
                .as_array()
                .is_some_and(|v| !v.is_empty() && v.len() < 100)
        );
        let only = CatalogConfig {
            send: vec!["title".into()],
            ..cfg
        };
        assert_eq!(Value::Object(document(&only, &p)), json!({"name": "T"}));
    }

    #[test]
    fn item_ids_are_safe() {
        let p = Product {
            id: "42".into(),
            handle: Some("red shoe.v2".into()),
            ..Product::default()
        };
        let mut cfg = CatalogConfig::default();
        assert_eq!(item_id(&cfg, &p), "42");
        cfg.item_id = ItemId::Handle;
        assert_eq!(item_id(&cfg, &p), "red-shoe-v2");
    }
}
