//! A GraphQL product → one `products/update` in the webhook's REST shape.
//!
//! The event is placed at the product's `createdAt`, not its `updatedAt`: the import is merged
//! in event-time order, and a product must reach the product table before the orders that
//! bought it (which its latest update may well follow), or they would be sent unenriched. The
//! version the table keeps is still stamped by the body's `updated_at`, and the delivery id
//! names that version, so a re-run is recognised as before.
//!
//! The bulk query's `variants` and `collections` connections arrive reassembled as
//! `productVariants` and `collections` ([`super::super::jsonl`]). The body is what a
//! `products/update` webhook carries (snake_case, numeric ids, `tags` as one string, lower-case
//! `status`, prices as decimal strings), plus `collections` (titles), which webhooks lack and
//! the product table uses for item categories. Deleted products are not in the Admin API: only
//! their `products/delete` webhook removes them.

use serde_json::{Value, json};

use super::{ConvertError, Event, legacy_id, lower, ms, opt_ms, text, ts};

fn list<'a>(p: &'a Value, field: &str) -> &'a [Value] {
    p.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An image object (`{id, url}`) as a REST image (`{id, src}`), when it has a URL.
fn image(i: &Value) -> Option<Value> {
    let src = i.get("url").and_then(Value::as_str)?;
    Some(json!({"id": legacy_id(i), "src": src}))
}

/// A GraphQL product → `products/update` at its `createdAt` (module doc).
pub(crate) fn product(p: &Value) -> Result<Vec<Event>, ConvertError> {
    let id = legacy_id(p).ok_or(ConvertError::NoId)?;
    let updated = ms(p, "updatedAt")?;
    let created = opt_ms(p, "createdAt");
    let featured = p.get("featuredImage").and_then(image);
    // The product's images: the featured one first, then those only variants show.
    let mut images: Vec<Value> = featured.iter().cloned().collect();
    let mut variants: Vec<&Value> = list(p, "productVariants").iter().collect();
    variants.sort_by_key(|v| {
        v.get("position")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX)
    });
    let variants: Vec<Value> = variants
        .into_iter()
        .map(|v| {
            let img = v.get("image").and_then(image);
            if let Some(i) = &img
                && !images.iter().any(|x| x["id"] == i["id"])
            {
                images.push(i.clone());
            }
            json!({
                "id": legacy_id(v),
                "admin_graphql_api_id": text(v, "id"),
                "product_id": id,
                "title": text(v, "title"),
                "sku": text(v, "sku"),
                "price": v.get("price").cloned().unwrap_or(Value::Null),
                "compare_at_price": v.get("compareAtPrice").cloned().unwrap_or(Value::Null),
                "inventory_quantity": v.get("inventoryQuantity").cloned().unwrap_or(Value::Null),
                "position": v.get("position").cloned().unwrap_or(Value::Null),
                "image_id": img.map_or(Value::Null, |i| i["id"].clone()),
            })
        })
        .collect();
    for (n, i) in images.iter_mut().enumerate() {
        i["position"] = Value::from(n + 1);
    }
    let tags = list(p, "tags")
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let collections: Vec<Value> = list(p, "collections")
        .iter()
        .filter_map(|c| {
            let title = c.get("title").and_then(Value::as_str)?;
            Some(json!({"id": legacy_id(c), "title": title, "handle": text(c, "handle")}))
        })
        .collect();
    let category = p
        .pointer("/category/fullName")
        .and_then(Value::as_str)
        .map_or(Value::Null, |f| json!({"full_name": f}));
    let body = json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Product/{id}"),
        "title": text(p, "title"),
        "handle": text(p, "handle"),
        "vendor": text(p, "vendor"),
        "product_type": text(p, "productType"),
        "status": lower(p, "status"),
        "tags": tags,
        "created_at": created.map_or(Value::Null, ts),
        "updated_at": ts(updated),
        "category": category,
        "image": featured.unwrap_or(Value::Null),
        "images": images,
        "variants": variants,
        "collections": collections,
    });
    let topic = "products/update";
    Ok(vec![Event {
        topic,
        at_ms: created.unwrap_or(updated).min(updated),
        delivery_id: format!("backfill-{topic}-{id}-{updated}"),
        body: body.to_string().into_bytes(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_product_becomes_the_webhook_shape() {
        let p = json!({
            "id": "gid://shopify/Product/7", "legacyResourceId": "7", "title": "Pan", "handle": "pan",
            "vendor": "Acme", "productType": "Cookware", "status": "ACTIVE", "tags": ["a", "b"],
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-02-01T00:00:00Z",
            "category": {"fullName": "Home > Kitchen"},
            "featuredImage": {"id": "gid://shopify/ProductImage/70", "url": "https://i/70.jpg"},
            "productVariants": [
                {"id": "gid://shopify/ProductVariant/72", "legacyResourceId": "72", "sku": "P-2",
                 "price": "12.00", "compareAtPrice": null, "position": 2,
                 "image": {"id": "gid://shopify/ProductImage/71", "url": "https://i/71.jpg"}},
                {"id": "gid://shopify/ProductVariant/71", "legacyResourceId": "71", "sku": "P-1",
                 "price": "10.00", "compareAtPrice": "15.00", "position": 1, "inventoryQuantity": 3}
            ],
            "collections": [{"id": "gid://shopify/Collection/5", "title": "Sale", "handle": "sale"}]
        });
        let ev = product(&p).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].topic, "products/update");
        assert_eq!(
            ev[0].delivery_id,
            "backfill-products/update-7-1769904000000"
        );
        assert_eq!(ev[0].at_ms, 1_767_225_600_000, "placed at its creation");
        let body: Value = serde_json::from_slice(&ev[0].body).unwrap();
        assert_eq!(body["status"], "active");
        assert_eq!(body["tags"], "a, b");
        assert_eq!(body["variants"][0]["id"], 71, "by position");
        assert_eq!(body["variants"][0]["compare_at_price"], "15.00");
        assert_eq!(body["variants"][1]["image_id"], 71);
        assert_eq!(body["images"][1]["src"], "https://i/71.jpg");
        let read = rules::catalog::Product::from_payload("7", &body);
        assert_eq!(read.product_type.as_deref(), Some("Cookware"));
        assert_eq!(read.category.as_deref(), Some("Home > Kitchen"));
        assert_eq!(read.collections, ["Sale"]);
        assert_eq!(read.image_url.as_deref(), Some("https://i/70.jpg"));
        assert_eq!(
            read.variant("72").and_then(|v| v.image_url.as_deref()),
            Some("https://i/71.jpg")
        );
        assert_eq!(
            product(&json!({"updatedAt": "2026-02-01T00:00:00Z"})),
            Err(ConvertError::NoId)
        );
    }
}
