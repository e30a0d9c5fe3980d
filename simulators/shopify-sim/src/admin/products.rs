//! Products as the GraphQL Admin API returns them in a bulk query: the product as the root
//! line, its `variants` and `collections` connections as child lines with `__parentId`.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::record::Record;
use crate::catalog::ProductSnap;
use crate::model::{Ts, money};

fn utc(t: Ts) -> String {
    t.with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// Stable numeric id of a collection (collections have no id in the catalogue model).
fn collection_id(title: &str) -> u64 {
    title.bytes().fold(436_200_000_000u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b)) % 1_000_000_000_000
    })
}

/// The bulk-query record of one product version.
pub(super) fn product_record(p: &ProductSnap, url: &str) -> Record {
    let parent = gid("Product", p.id);
    let node = json!({
        "id": parent,
        "legacyResourceId": p.id.to_string(),
        "title": p.title,
        "handle": p.handle,
        "vendor": p.vendor,
        "productType": p.product_type.clone().unwrap_or_default(),
        "status": p.status.as_str().to_uppercase(),
        "tags": p.tags,
        "createdAt": utc(p.created_at),
        "updatedAt": utc(p.updated_at),
        "publishedAt": p.published_at.map(utc),
        "onlineStoreUrl": p.published_at.map(|_| url.to_owned()),
        "descriptionHtml": p.body_html,
        "category": p.category.map(|c| json!({"id": c.id, "name": c.name, "fullName": c.full_name})),
        "featuredImage": p.images.first().map(|i| json!({"id": gid("ProductImage", i.id), "url": i.src, "altText": i.alt})),
        "totalInventory": p.variants.iter().map(|v| v.inventory_quantity).sum::<i64>(),
    });
    let mut children: Vec<Value> = p
        .variants
        .iter()
        .map(|v| {
            json!({
                "id": gid("ProductVariant", v.id),
                "legacyResourceId": v.id.to_string(),
                "title": v.title,
                "sku": v.sku,
                "price": money(v.price),
                "compareAtPrice": v.compare_at.map(money),
                "inventoryQuantity": v.inventory_quantity,
                "position": v.position,
                "image": p.image_for(v).map(|i| json!({"id": gid("ProductImage", i.id), "url": i.src})),
                "__parentId": parent,
            })
        })
        .collect();
    children.extend(p.collections.iter().map(|c| {
        json!({
            "id": gid("Collection", collection_id(c)),
            "title": c,
            "handle": c.to_lowercase().replace(" & ", "-").replace(' ', "-"),
            "__parentId": parent,
        })
    }));
    Record {
        updated_at: p.updated_at.with_timezone(&Utc),
        node,
        children,
    }
}
