//! Product catalogue: off by default; with `[products] enabled`, `products/*` webhooks whose
//! replay gives `expected.products.catalog`, orders and checkouts that reference on-sale
//! variants at their price, the enrichment truth, and the Admin API products bulk query.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shopify_sim::{AdminOptions, DeliveryKind, ScenarioConfig, generate, spawn_admin};

fn with_products() -> ScenarioConfig {
    let mut cfg = ScenarioConfig {
        seed: 11,
        customers: 150,
        days: 240,
        ..ScenarioConfig::default()
    };
    cfg.products.enabled = true;
    cfg
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn default_scenario_has_no_product_traffic() {
    let cfg = ScenarioConfig {
        customers: 40,
        ..ScenarioConfig::default()
    };
    let s = generate(&cfg).unwrap();
    assert!(
        s.deliveries
            .iter()
            .all(|d| !d.topic.starts_with("products/"))
    );
    assert!(s.expected.products.is_none());
    let text = serde_json::to_string(&s.expected).unwrap();
    assert!(!text.contains("\"products\""));
    assert!(!cfg.to_toml_string().unwrap().contains("[products]"));
}

#[test]
fn product_webhooks_replay_to_the_expected_catalog() {
    let cfg = with_products();
    let s = generate(&cfg).unwrap();
    let truth = s.expected.products.clone().unwrap();

    // Replay products/* by payload updated_at (deliveries are unordered, with duplicates).
    let mut state: BTreeMap<u64, (String, Value)> = BTreeMap::new();
    let mut deleted: BTreeSet<u64> = BTreeSet::new();
    let mut by_topic: BTreeMap<String, usize> = BTreeMap::new();
    for d in s
        .deliveries
        .iter()
        .filter(|d| d.topic.starts_with("products/"))
    {
        *by_topic.entry(d.topic.clone()).or_default() += 1;
        let v = parse(&d.body);
        let id = v["id"].as_u64().unwrap();
        if d.topic == "products/delete" {
            deleted.insert(id);
            continue;
        }
        let at = v["updated_at"].as_str().unwrap().to_owned();
        // Same-offset RFC 3339 strings order like times.
        if state.get(&id).is_none_or(|(t, _)| *t <= at) {
            state.insert(id, (at, v));
        }
    }
    for t in ["products/create", "products/update", "products/delete"] {
        assert!(
            by_topic.get(t).copied().unwrap_or(0) > 0,
            "no {t}: {by_topic:?}"
        );
    }
    let live: BTreeMap<u64, &Value> = state
        .iter()
        .filter(|(id, (_, v))| !deleted.contains(id) && v["status"] == "active")
        .map(|(id, (_, v))| (*id, v))
        .collect();
    let want: BTreeSet<u64> = truth.catalog.values().map(|p| p.id).collect();
    assert_eq!(live.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(truth.removed.values().any(|r| r == "archived"));
    assert!(truth.removed.values().any(|r| r == "deleted"));
    for (id, v) in &live {
        let p = &truth.catalog[&id.to_string()];
        assert_eq!(v["handle"], p.handle);
        assert_eq!(v["product_type"].as_str(), p.product_type.as_deref());
        assert_eq!(v["category"]["full_name"].as_str(), p.category.as_deref());
        let variants = v["variants"].as_array().unwrap();
        assert_eq!(variants.len(), p.variants.len());
        for (got, want) in variants.iter().zip(&p.variants) {
            assert_eq!(got["id"], want.id);
            assert_eq!(got["sku"].as_str(), want.sku.as_deref());
            assert_eq!(got["price"], want.price);
            assert_eq!(
                got["compare_at_price"].as_str(),
                want.compare_at_price.as_deref()
            );
        }
        assert_eq!(
            v["variant_gids"].as_array().unwrap().len(),
            p.variants.len()
        );
    }
    // The odd products: 100 variants, null type, no images, no category; SKU-less variants.
    let odd = live
        .values()
        .find(|v| v["variants"].as_array().unwrap().len() == 100)
        .expect("the 100-variant product");
    assert_eq!(odd["product_type"], Value::Null);
    assert_eq!(odd["images"], json!([]));
    assert_eq!(odd["image"], Value::Null);
    assert_eq!(odd["category"], Value::Null);
    assert!(
        state
            .values()
            .any(|(_, v)| v["variants"][0]["sku"].is_null())
    );
    // Sales show up as compare_at_price above price.
    assert!(
        state
            .values()
            .any(|(_, v)| v["tags"].as_str().unwrap().contains("sale"))
    );
}

#[test]
fn orders_and_checkouts_reference_on_sale_variants_at_their_price() {
    let cfg = with_products();
    let s = generate(&cfg).unwrap();
    let truth = s.expected.products.clone().unwrap();
    let mut orders = 0;
    let mut on_sale_items = 0;
    let mut new_products = BTreeSet::new();
    for d in s
        .deliveries
        .iter()
        .filter(|d| d.topic == "orders/create" && d.kind == DeliveryKind::Original)
    {
        let o = parse(&d.body);
        orders += 1;
        let items = &truth.purchase_items[&o["id"].as_u64().unwrap().to_string()];
        let lines = o["line_items"].as_array().unwrap();
        // Every line's product was on sale when ordered, so every line has an enrichment.
        assert_eq!(items.len(), lines.len(), "order {}", o["id"]);
        let same_currency = o["presentment_currency"] == o["currency"];
        for (line, item) in lines.iter().zip(items) {
            assert_eq!(line["id"], item.line_item_id);
            assert_eq!(line["product_id"], item.product_id);
            assert_eq!(line["variant_id"], item.variant_id);
            assert_eq!(line["sku"].as_str(), item.sku.as_deref().or(Some("")));
            if same_currency {
                assert_eq!(line["price"], item.price);
            }
            assert!(
                item.url
                    .starts_with(&format!("https://{}/products/", cfg.shop_domain))
            );
            if let Some(t) = &item.product_type {
                assert_eq!(item.categories.first(), Some(t));
            }
            on_sale_items += usize::from(item.compare_at_price.is_some());
            new_products.insert(item.product_id);
        }
    }
    assert!(orders > 50, "{orders} orders");
    assert!(on_sale_items > 0, "no item bought on sale");
    assert!(
        new_products.len() > 16,
        "only the built-in products were sold"
    );
    assert!(!truth.cart_items.is_empty());
    let mut checkout_sale_lines = 0;
    for d in s
        .deliveries
        .iter()
        .filter(|d| d.topic == "checkouts/create")
    {
        let co = parse(&d.body);
        let items = &truth.cart_items[co["token"].as_str().unwrap()];
        for (line, item) in co["line_items"].as_array().unwrap().iter().zip(items) {
            assert_eq!(line["variant_id"], item.variant_id);
            assert_eq!(line["product_id"], item.product_id);
            if line["compare_at_price"].is_string() {
                checkout_sale_lines += 1;
            }
        }
    }
    assert!(
        checkout_sale_lines > 0,
        "no checkout line shows a compare-at price"
    );
}

#[tokio::test]
async fn admin_api_serves_products_in_bulk() {
    let cfg = with_products();
    let s = generate(&cfg).unwrap();
    let truth = s.expected.products.unwrap();
    let server = spawn_admin(&cfg, AdminOptions::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let gql = |query: &str, vars: Value| {
        let url = format!("{}/admin/api/2026-07/graphql.json", server.base_url);
        let body = json!({"query": query, "variables": vars});
        async move {
            reqwest::Client::new()
                .post(url)
                .header("X-Shopify-Access-Token", "shpat_fake_admin_token")
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let run = gql(
        "mutation($query: String!) { bulkOperationRunQuery(query: $query) { bulkOperation { id } userErrors { message } } }",
        json!({"query": "{ products { edges { node { id handle variants { edges { node { id sku price } } } } } } }"}),
    )
    .await;
    let id = run["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"].clone();
    let start = Instant::now();
    let url = loop {
        let r = gql(
            "query($id: ID!) { bulkOperation(id: $id) { status url } }",
            json!({"id": id}),
        )
        .await;
        if r["data"]["bulkOperation"]["status"] == "COMPLETED" {
            break r["data"]["bulkOperation"]["url"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let roots: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("__parentId").is_none())
        .collect();
    // Active products plus archived/draft ones; deleted ones are gone.
    let active: BTreeSet<String> = roots
        .iter()
        .filter(|r| r["status"] == "ACTIVE")
        .map(|r| r["legacyResourceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(active, truth.catalog.keys().cloned().collect());
    let not_deleted = truth.removed.values().filter(|r| *r != "deleted").count();
    assert_eq!(roots.len(), truth.catalog.len() + not_deleted);
    for p in truth.catalog.values() {
        let parent = format!("gid://shopify/Product/{}", p.id);
        let variants = lines
            .iter()
            .filter(|l| l["__parentId"] == parent.as_str() && l.get("sku").is_some())
            .count();
        assert_eq!(variants, p.variants.len());
    }
}
