//! Products and the enrichment join (issue 19), against the real broker, two processor
//! instances sharing four partitions (so an order and its products are usually owned by
//! different instances and meet only through the products topic).
//!
//! Products are created, updated (a price change), archived and deleted; the catalog commands
//! must say exactly that, once per change. Purchases and carts must carry category, image and
//! URL from the product table; an order that arrives before its product is sent at once with
//! its payload's facts, and later items of that product are enriched. A product with odd
//! values (no images, `product_type: null`, 100 variants) dead-letters nothing. A replay over
//! the same raw and products topics gives the same commands, the early order now enriched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{Action, CommerceItem, IterableCommand};

const MIN: i64 = 60_000;
const CUSTOMER: u64 = 8_001;

fn product_body(id: u64, at: i64, extra: &str) -> String {
    format!(
        r#"{{"id":{id},"title":"Product {id}","handle":"product-{id}","vendor":"Acme","status":"active","updated_at":"{t}"{extra}}}"#,
        t = iso(at)
    )
}

/// Product 11: Kitchen, an image, one variant with a compare-at price.
fn salt(at: i64, price: &str) -> String {
    product_body(
        11,
        at,
        &format!(
            r#","product_type":"Kitchen","images":[{{"id":1,"src":"https://cdn.example/11.jpg","position":1}}],"variants":[{{"id":12,"sku":"SKU-12","price":"{price}","compare_at_price":"30.00","inventory_quantity":4}}]"#
        ),
    )
}

/// Product 21: no images, `product_type: null`, 100 variants.
fn odd(at: i64) -> String {
    let variants: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"id":{},"sku":null,"price":"1.00","title":"{}"}}"#,
                2_100 + i,
                "v".repeat(300)
            )
        })
        .collect();
    product_body(
        21,
        at,
        &format!(
            r#","product_type":null,"images":[],"variants":[{}]"#,
            variants.join(",")
        ),
    )
}

fn line(id: u64, product: u64, variant: u64) -> String {
    format!(
        r#"{{"id":{id},"key":"k{id}","product_id":{product},"variant_id":{variant},"title":"Line {id}","quantity":1,"price":"10.00","line_price":"10.00","total_discount":"0.00"}}"#
    )
}

fn order(id: u64, lines: &[String], at: i64) -> String {
    format!(
        r##"{{"id":{id},"name":"#{id}","email":"c@example.com","created_at":"{t}","updated_at":"{t}","processed_at":"{t}","cancelled_at":null,"currency":"USD","total_price":"20.00","subtotal_price":"20.00","total_tax":"0.00","total_discounts":"0.00","financial_status":"paid","test":false,"customer":{{"id":{CUSTOMER},"email":"c@example.com","state":"enabled"}},"line_items":[{}],"refunds":[]}}"##,
        lines.join(","),
        t = iso(at)
    )
}

fn checkout(token: &str, lines: &[String], at: i64) -> String {
    format!(
        r#"{{"token":"{token}","cart_token":"c-{token}","email":"c@example.com","created_at":"{t}","updated_at":"{t}","completed_at":null,"currency":"USD","subtotal_price":"10.00","total_price":"10.00","line_items":[{}],"customer":{{"id":{CUSTOMER},"email":"c@example.com"}}}}"#,
        lines.join(","),
        t = iso(at)
    )
}

fn rules_file() -> String {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("catalog-rules")));
    std::fs::write(
        &path,
        "[catalog]\nproduct_url_template = \"https://shop.example/products/{handle}?variant={variant_id}\"\n",
    )
    .unwrap();
    path.display().to_string()
}

fn deployment(k: &KafkaConfig, topics: &TopicsConfig, app: &str) -> Deployment {
    Deployment::new(k, topics, unique(app))
}

fn spawn_two(d: &Deployment, rules: &str) -> (Proc, Proc) {
    let env = [
        ("TILLSTREAM__RULES__KIND", "marketing"),
        ("TILLSTREAM__RULES__FILE", rules),
    ];
    (d.spawn_with("a", &env), d.spawn_with("b", &env))
}

fn catalog_cmds(cmds: &[IterableCommand]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match &c.action {
            Action::CatalogUpsert {
                item_id, document, ..
            } => Some(format!(
                "upsert {item_id} price={}",
                document.get("price").cloned().unwrap_or_default()
            )),
            Action::CatalogDelete { item_id, .. } => Some(format!("delete {item_id}")),
            _ => None,
        })
        .collect()
}

/// Commerce items by product id, of purchases and carts.
fn items(cmds: &[IterableCommand]) -> Vec<(String, &CommerceItem)> {
    cmds.iter()
        .flat_map(|c| match &c.action {
            Action::TrackPurchase { items, .. } | Action::UpdateCart { items } => items.as_slice(),
            _ => &[],
        })
        .map(|i| {
            let p = i.data_fields.as_ref().unwrap()["product_id"]
                .as_str()
                .unwrap()
                .to_owned();
            (p, i)
        })
        .collect()
}

fn user_commands(cmds: &[IterableCommand]) -> BTreeMap<String, String> {
    cmds.iter()
        .filter(|c| !c.action.is_catalog())
        .map(|c| (c.command_id.clone(), format!("{:?}", c.action)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn products_sync_the_catalog_and_enrich_purchases_and_carts() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let t0 = runtime::now_ms() - 180 * MIN;
    let rules = rules_file();
    let live = deployment(&k, &topics, "catalog-live");
    let (mut a, mut b) = spawn_two(&live, &rules);

    // The catalog first: create, a price change, an odd product, one deleted, one archived.
    let products = vec![
        envelope("products/create", "p1", t0, &salt(t0, "25.00")),
        envelope("products/update", "p2", t0 + MIN, &salt(t0 + MIN, "20.00")),
        // The same update again under another delivery id, a minute later: no new command.
        envelope(
            "products/update",
            "p2b",
            t0 + 2 * MIN,
            &salt(t0 + MIN, "20.00"),
        ),
        envelope("products/create", "p3", t0, &odd(t0)),
        envelope("products/create", "p4", t0, &product_body(31, t0, "")),
        envelope("products/delete", "p5", t0 + 3 * MIN, r#"{"id":31}"#),
        envelope("products/create", "p6", t0, &product_body(41, t0, "")),
        envelope(
            "products/update",
            "p7",
            t0 + 4 * MIN,
            &product_body(41, t0 + 4 * MIN, "").replace("\"active\"", "\"archived\""),
        ),
    ];
    produce(&k, &topics.raw, &products).await;
    let cmds = wait_drained(&k, &topics, &live.application_id);
    let mut catalog = catalog_cmds(&cmds);
    catalog.sort();
    assert_eq!(
        catalog,
        [
            "delete 31",
            "delete 41",
            "upsert 11 price=20.0",
            "upsert 11 price=25.0",
            "upsert 21 price=1.0",
            "upsert 31 price=null",
            "upsert 41 price=null",
        ],
        "one catalog command per change of an item"
    );
    let odd_doc = cmds
        .iter()
        .find_map(|c| match &c.action {
            Action::CatalogUpsert {
                item_id, document, ..
            } if item_id == "21" => Some(document.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        serde_json::to_vec(&odd_doc).unwrap().len() <= 30 * 1024,
        "30 KB cap"
    );

    // An order of product 11 and the odd product, and an order of product 51 that Shopify
    // delivers before product 51 itself.
    let early = envelope(
        "orders/paid",
        "o2",
        t0 + 50 * MIN,
        &order(902, &[line(9_021, 51, 52)], t0 + 50 * MIN),
    );
    produce(
        &k,
        &topics.raw,
        &[
            envelope(
                "orders/paid",
                "o1",
                t0 + 30 * MIN,
                &order(
                    901,
                    &[line(9_011, 11, 12), line(9_012, 21, 2_150)],
                    t0 + 30 * MIN,
                ),
            ),
            early,
        ],
    )
    .await;
    let cmds = wait_drained(&k, &topics, &live.application_id);
    let before_product: Vec<_> = items(&cmds)
        .into_iter()
        .filter(|(p, _)| p == "51")
        .collect();
    assert_eq!(
        before_product.len(),
        1,
        "the early order is sent, not blocked"
    );
    assert!(before_product[0].1.categories.is_empty() && before_product[0].1.image_url.is_none());

    // Product 51 arrives (updated before the order), then a checkout with it.
    produce(
        &k,
        &topics.raw,
        &[envelope(
            "products/create",
            "p8",
            t0 + 40 * MIN,
            &product_body(51, t0 + 40 * MIN, r#","product_type":"Garden","image":{"src":"https://cdn.example/51.jpg"},"variants":[{"id":52,"sku":"SKU-52","price":"10.00"}]"#),
        )],
    )
    .await;
    wait_for("product 51 in the catalog", Duration::from_secs(60), || {
        catalog_cmds(&commands(&k, &topics))
            .iter()
            .any(|c| c.starts_with("upsert 51"))
            .then_some(())
    });
    produce(
        &k,
        &topics.raw,
        &[envelope(
            "checkouts/create",
            "c1",
            t0 + 70 * MIN,
            &checkout("tok-1", &[line(9_031, 51, 52)], t0 + 70 * MIN),
        )],
    )
    .await;
    let first = wait_drained(&k, &topics, &live.application_id);
    a.terminate();
    b.terminate();
    let dead = read_all(&k, &topics.processor_dlq, topics.side_partitions);
    assert!(dead.is_empty(), "dead letters: {}", dead.len());

    let all = items(&first);
    let expect = |p: &str, category: Option<&str>, image: Option<&str>, sku: &str| {
        let hits: Vec<_> = all.iter().filter(|(id, _)| id == p).collect();
        assert!(!hits.is_empty(), "items of product {p}");
        for (_, i) in hits {
            assert_eq!(
                i.categories.first().map(String::as_str),
                category,
                "{p}: {i:?}"
            );
            assert_eq!(i.image_url.as_deref(), image, "{p}: {i:?}");
            assert_eq!(i.sku.as_deref(), Some(sku), "{p}: {i:?}");
            assert!(
                i.url.as_deref().is_some_and(|u| u.starts_with(&format!(
                    "https://shop.example/products/product-{p}?variant="
                ))),
                "{p}: {i:?}"
            );
            assert_eq!(i.data_fields.as_ref().unwrap()["vendor"], "Acme");
        }
    };
    expect(
        "11",
        Some("Kitchen"),
        Some("https://cdn.example/11.jpg"),
        "SKU-12",
    );
    let salt_item = all.iter().find(|(p, _)| p == "11").unwrap().1;
    assert_eq!(
        salt_item.data_fields.as_ref().unwrap()["compare_at_price"],
        30.0
    );
    let odd_items: Vec<_> = all.iter().filter(|(p, _)| p == "21").collect();
    assert_eq!(odd_items.len(), 1, "the odd product's order went through");
    assert!(odd_items[0].1.url.is_some() && odd_items[0].1.image_url.is_none());
    let carts: Vec<_> = first
        .iter()
        .filter(|c| matches!(c.action, Action::UpdateCart { .. }))
        .collect();
    assert!(!carts.is_empty(), "the checkout updated the cart");
    let cart_items = items(&carts.into_iter().cloned().collect::<Vec<_>>())
        .into_iter()
        .map(|(p, i)| (p, i.clone()))
        .collect::<Vec<_>>();
    assert!(
        cart_items.iter().all(|(p, i)| p == "51"
            && i.categories == ["Garden"]
            && i.image_url.as_deref() == Some("https://cdn.example/51.jpg")),
        "after the product arrived, its items are enriched: {cart_items:?}"
    );

    // Replay: fresh state and commands, the same raw topic and the same products topic.
    let mut replay_topics = fresh_topics(&k, 4).await;
    replay_topics.raw = topics.raw.clone();
    replay_topics.products = topics.products.clone();
    let replay = deployment(&k, &replay_topics, "catalog-replay");
    let (mut a, mut b) = spawn_two(&replay, &rules);
    let second = wait_drained(&k, &replay_topics, &replay.application_id);
    a.terminate();
    b.terminate();
    assert_eq!(
        catalog_cmds(&second),
        Vec::<String>::new(),
        "a replay re-sends no unchanged product"
    );
    let (mut live_cmds, mut replay_cmds) = (user_commands(&first), user_commands(&second));
    let early_id = first
        .iter()
        .find(|c| {
            items(std::slice::from_ref(*c))
                .iter()
                .any(|(p, _)| p == "51")
                && matches!(c.action, Action::TrackPurchase { .. })
        })
        .map(|c| c.command_id.clone())
        .unwrap();
    let early_replayed = replay_cmds.remove(&early_id).unwrap();
    live_cmds.remove(&early_id);
    assert_eq!(replay_cmds, live_cmds, "replay: the same enriched commands");
    assert!(
        early_replayed.contains("Garden"),
        "replay: the order that arrived before its product is enriched now: {early_replayed}"
    );
    let _ = std::fs::remove_file(rules);
}
