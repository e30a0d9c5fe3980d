//! `products/create|update` bodies (shopify.md §5 "products/create|update", fixture checklist).
//!
//! Full detail for the first 100 variants and every variant in `variant_gids`, as Shopify
//! sends; `category` is the taxonomy category object (null when unset); `tags` is one
//! comma-separated string; prices are 2-dp strings, `compare_at_price` null when not on sale.

use crate::catalog::{Image, ProductSnap, VariantSnap};
use crate::json::{J, obj};
use crate::model::{money, ts};

/// Shopify puts full variant detail in product webhooks for this many variants only.
const FULL_VARIANTS: usize = 100;

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

fn image(p: &ProductSnap, i: &Image) -> J {
    let variant_ids: Vec<J> = p
        .variants
        .iter()
        .filter(|v| v.image_id == Some(i.id))
        .map(|v| J::U(v.id))
        .collect();
    obj! {
        "id" => i.id,
        "alt" => i.alt.clone(),
        "position" => u64::from(i.position),
        "product_id" => p.id,
        "created_at" => ts(p.created_at),
        "updated_at" => ts(p.updated_at),
        "admin_graphql_api_id" => gid("ProductImage", i.id),
        "width" => 2048u64,
        "height" => 2048u64,
        "src" => i.src.as_str(),
        "variant_ids" => variant_ids,
    }
}

fn variant(p: &ProductSnap, v: &VariantSnap) -> J {
    obj! {
        "id" => v.id,
        "product_id" => p.id,
        "title" => v.title.as_str(),
        "price" => money(v.price),
        "position" => u64::from(v.position),
        "inventory_policy" => "deny",
        "compare_at_price" => v.compare_at.map(money),
        "option1" => v.title.as_str(),
        "option2" => J::Null,
        "option3" => J::Null,
        "created_at" => ts(p.created_at),
        "updated_at" => ts(p.updated_at),
        "taxable" => true,
        "barcode" => J::Null,
        "sku" => v.sku.clone(),
        "grams" => u64::from(v.grams),
        "inventory_quantity" => v.inventory_quantity,
        "old_inventory_quantity" => v.inventory_quantity,
        "inventory_item_id" => v.inventory_item_id,
        "image_id" => v.image_id,
        "admin_graphql_api_id" => gid("ProductVariant", v.id),
    }
}

/// The body of `products/create` and `products/update`.
pub(crate) fn product_payload(p: &ProductSnap) -> J {
    let option_values: Vec<J> = p.variants.iter().map(|v| J::Str(v.title.clone())).collect();
    let images: Vec<J> = p.images.iter().map(|i| image(p, i)).collect();
    let media: Vec<J> = p
        .images
        .iter()
        .map(|i| {
            obj! {
                "id" => i.id + 1,
                "position" => u64::from(i.position),
                "alt" => i.alt.clone(),
                "media_content_type" => "IMAGE",
                "admin_graphql_api_id" => gid("MediaImage", i.id + 1),
                "preview_image" => obj!{"width" => 2048u64, "height" => 2048u64, "src" => i.src.as_str(), "status" => "READY"},
            }
        })
        .collect();
    let category = match p.category {
        Some(c) => obj! {
            "admin_graphql_api_id" => c.id,
            "name" => c.name,
            "full_name" => c.full_name,
        },
        None => J::Null,
    };
    obj! {
        "admin_graphql_api_id" => gid("Product", p.id),
        "body_html" => p.body_html.as_str(),
        "created_at" => ts(p.created_at),
        "handle" => p.handle.as_str(),
        "id" => p.id,
        "product_type" => p.product_type.clone(),
        "published_at" => p.published_at.map(ts),
        "template_suffix" => J::Null,
        "title" => p.title.as_str(),
        "updated_at" => ts(p.updated_at),
        "vendor" => p.vendor.as_str(),
        "status" => p.status.as_str(),
        "published_scope" => "global",
        "tags" => p.tags.join(", "),
        "variants" => p.variants.iter().take(FULL_VARIANTS).map(|v| variant(p, v)).collect::<Vec<J>>(),
        "options" => vec![obj! {
            "name" => "Title",
            "id" => p.id + 1,
            "product_id" => p.id,
            "position" => 1u64,
            "values" => option_values,
        }],
        "images" => images,
        "image" => p.images.first().map(|i| image(p, i)),
        "media" => media,
        "variant_gids" => p.variants.iter().map(|v| obj! {
            "admin_graphql_api_id" => gid("ProductVariant", v.id),
            "updated_at" => ts(p.updated_at),
        }).collect::<Vec<J>>(),
        "has_variants_that_requires_components" => false,
        "category" => category,
    }
}
