//! A Shopify line item as an Iterable commerce item (orders' purchases, checkouts' carts).

use rust_decimal::Decimal;
use schemas::{CommerceItem, DataFields};
use serde_json::Value;

use crate::config::RulesConfig;
use crate::format::text;
use crate::shopify::LineItem;

/// A line's display name: `Title - Variant` (Shopify's `name`), without "Default Title".
pub(crate) fn item_name(li: &LineItem) -> String {
    if let Some(n) = text(li.name.as_deref()) {
        return n.to_owned();
    }
    let title = text(li.title.as_deref()).unwrap_or("Item");
    match text(li.variant_title.as_deref()) {
        Some(v) if v != "Default Title" => format!("{title} - {v}"),
        _ => title.to_owned(),
    }
}

/// A line as an Iterable commerce item (`shop_money`: prefer the shop-money unit price).
pub(crate) fn item(cfg: &RulesConfig, li: &LineItem, shop_money: bool) -> CommerceItem {
    let id = li
        .variant_id
        .or(li.product_id)
        .or(li.id)
        .map(|i| i.0.to_string())
        .or_else(|| text(li.sku.as_deref()).map(str::to_owned))
        .or_else(|| text(li.key.as_deref()).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    let price = if shop_money {
        li.price_set.as_ref().and_then(|s| s.shop())
    } else {
        None
    }
    .or(li.price.map(|m| m.0))
    .unwrap_or(Decimal::ZERO);
    let mut data = DataFields::new();
    if let Some(p) = li.product_id {
        data.insert("product_id".into(), Value::String(p.0.to_string()));
    }
    if let Some(v) = li.variant_id {
        data.insert("variant_id".into(), Value::String(v.0.to_string()));
    }
    if let Some(v) = text(li.variant_title.as_deref()) {
        data.insert("variant".into(), Value::String(v.to_owned()));
    }
    if let Some(v) = text(li.vendor.as_deref()) {
        data.insert("vendor".into(), Value::String(v.to_owned()));
    }
    CommerceItem {
        id,
        sku: text(li.sku.as_deref()).map(str::to_owned),
        name: item_name(li),
        price,
        quantity: li.quantity.unwrap_or(1),
        categories: text(li.product_type.as_deref())
            .map(|c| vec![c.to_owned()])
            .unwrap_or_default(),
        url: text(li.url.as_deref())
            .map(str::to_owned)
            .or_else(|| product_url(cfg, li)),
        image_url: text(li.image_url.as_deref()).map(str::to_owned),
        data_fields: (!data.is_empty()).then_some(data),
    }
}

/// Fills the product URL template; `None` when a placeholder it uses is unknown.
fn product_url(cfg: &RulesConfig, li: &LineItem) -> Option<String> {
    let mut url = cfg.catalog.product_url_template.clone()?;
    let values = [
        ("{product_id}", li.product_id.map(|i| i.0.to_string())),
        ("{variant_id}", li.variant_id.map(|i| i.0.to_string())),
        ("{sku}", text(li.sku.as_deref()).map(str::to_owned)),
        ("{handle}", text(li.handle.as_deref()).map(str::to_owned)),
    ];
    for (ph, v) in values {
        if url.contains(ph) {
            url = url.replace(ph, &v?);
        }
    }
    Some(url)
}
