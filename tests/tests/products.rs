//! Products end to end (issue 19): shopify-sim's `scenarios/products.toml` (launches, drafts,
//! sales, archives, deletions, odd products) through ingest → Kafka → processor → publisher →
//! iterable-sim. Iterable's catalog must equal shopify-sim's `expected.products.catalog` (no
//! archived, draft or deleted product in it); every purchase and abandoned-checkout item must
//! carry its product's category, image, URL and SKU (purchases also the compare-at price as of
//! the order); nothing is dead-lettered; and a replay of the raw topic into fresh state sends
//! the same enriched purchases again.
//!
//! Collections are not compared: `products/*` webhooks do not carry them (only the Admin API
//! does, and the products backfill is not built yet), so an item's categories are checked to
//! start with the product type.
#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use iterable_sim::{Filter, SimState};
use serde_json::{Map, Value};
use shopify_sim::{ExpectedOutcome, ItemEnrichment, ScenarioConfig};
use tests::{
    HISTORICAL_RULES, Stack, StackOptions, checkout_event_id, drain_past_timeline_end, scenario,
    send_all,
};

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
}

fn money(s: Option<&str>) -> Option<f64> {
    s.and_then(|s| s.parse().ok())
}

/// Catalog items by id.
fn catalog(sim: &SimState) -> BTreeMap<String, Map<String, Value>> {
    sim.catalog_items("shopify-products", &Filter::default())
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.item_id, i.value))
        .collect()
}

/// Purchase items by order id.
fn purchase_items(sim: &SimState) -> BTreeMap<String, Vec<Value>> {
    sim.purchases(&Filter::default())
        .into_iter()
        .filter_map(|p| Some((text(p.data_fields.get("order_id"))?, p.items)))
        .collect()
}

/// Checks one item (a purchase item or an abandoned-checkout item, which name the image and
/// URL alike) against the expected enrichment; returns what differs.
fn item_problems(what: &str, items: &[Value], line: &ItemEnrichment) -> Vec<String> {
    let variant = line.variant_id.to_string();
    let Some(item) = items.iter().find(|i| {
        text(i.pointer("/dataFields/variant_id")).or_else(|| text(i.get("variant_id")))
            == Some(variant.clone())
    }) else {
        return vec![format!("{what}: no item for variant {variant}")];
    };
    let mut out = Vec::new();
    let categories: Vec<String> = item["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    if categories.first() != line.product_type.as_ref() {
        out.push(format!(
            "{what} variant {variant}: categories {categories:?}, want {:?} first",
            line.product_type
        ));
    }
    for (field, got, want) in [
        (
            "imageUrl",
            text(item.get("imageUrl")),
            line.image_url.clone(),
        ),
        ("url", text(item.get("url")), Some(line.url.clone())),
        ("sku", text(item.get("sku")), line.sku.clone()),
    ] {
        if got != want {
            out.push(format!(
                "{what} variant {variant}: {field} {got:?}, want {want:?}"
            ));
        }
    }
    out
}

/// Whether the rules send a purchase for `order`: paid, not a test, not deleted, and its buyer
/// not erased (expected.json's view of the order).
fn purchase_expected(expected: &ExpectedOutcome, order: &str) -> bool {
    expected.customers.values().any(|c| {
        !c.redacted
            && c.orders
                .iter()
                .any(|o| o.id.to_string() == order && o.paid && !o.test && !o.deleted)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iterable_catalog_equals_the_store_and_items_are_enriched() {
    let started = Instant::now();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../simulators/shopify-sim/scenarios/products.toml");
    let mut cfg = ScenarioConfig::from_file(&path).unwrap();
    cfg.rate_per_sec = 0.0;
    let sc = scenario(&cfg).unwrap();
    let expected = sc.expected.products.clone().expect("products enabled");
    let shop = sc.expected.shop_domain.clone();
    let mut options = StackOptions::historical(runtime::testing::kafka());
    // The same URLs as the ground truth's template, in the rules file's placeholders.
    let template = expected.url_template.replace("{shop_domain}", &shop);
    let rules = format!("{HISTORICAL_RULES}\n[catalog]\nproduct_url_template = \"{template}\"\n");
    options.rules_toml = rules.clone();
    let mut stack = Stack::start(options).await.unwrap();
    let report = send_all(
        &stack.webhook_url(),
        sc.deliveries.clone(),
        cfg.rate_per_sec,
    )
    .await
    .unwrap();
    eprintln!("sent {} deliveries", report.sent);
    drain_past_timeline_end(&stack, &sc, started).await;
    let sim = stack.sim_state();

    // The catalog: exactly the active products, with their final values.
    let items = catalog(sim);
    let want: BTreeSet<&String> = expected.catalog.keys().collect();
    let got: BTreeSet<&String> = items.keys().collect();
    assert_eq!(got, want, "catalog item ids");
    for (id, p) in &expected.catalog {
        let item = &items[id];
        let at = |k: &str| text(item.get(k));
        assert_eq!(at("name").as_deref(), Some(p.title.as_str()), "{id} name");
        assert_eq!(
            at("handle").as_deref(),
            Some(p.handle.as_str()),
            "{id} handle"
        );
        assert_eq!(
            at("vendor").as_deref(),
            Some(p.vendor.as_str()),
            "{id} vendor"
        );
        assert_eq!(at("productType"), p.product_type, "{id} type");
        assert_eq!(at("url").as_deref(), Some(p.url.as_str()), "{id} url");
        assert_eq!(at("imageUrl"), p.image_url, "{id} image");
        let variants: BTreeMap<String, (Option<f64>, Option<f64>)> = item
            .get("variants")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    text(v.get("id")).unwrap_or_default(),
                    (number(v.get("price")), number(v.get("compareAtPrice"))),
                )
            })
            .collect();
        for v in &p.variants {
            let prices = (money(Some(&v.price)), money(v.compare_at_price.as_deref()));
            match variants.get(&v.id.to_string()) {
                Some(got) => assert_eq!(*got, prices, "{id} variant {} prices", v.id),
                // Only the 30 KB item cap may drop variants, and only of very large products.
                None => assert!(p.variants.len() > 50, "{id}: variant {} missing", v.id),
            }
        }
    }
    for id in expected.removed.keys() {
        assert!(
            !items.contains_key(id),
            "removed product {id} still in the catalog"
        );
    }

    // Purchase items: every expected order, every line, as of the order's time.
    let purchases = purchase_items(sim);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (order, lines) in &expected.purchase_items {
        let Some(got) = purchases.get(order) else {
            if purchase_expected(&sc.expected, order) {
                problems.push(format!("order {order}: no purchase"));
            }
            continue;
        };
        for line in lines {
            let what = format!("order {order}");
            let mut p = item_problems(&what, got, line);
            if p.is_empty() {
                let item = got
                    .iter()
                    .find(|i| {
                        text(i.pointer("/dataFields/variant_id"))
                            == Some(line.variant_id.to_string())
                    })
                    .unwrap();
                let compare = number(item.pointer("/dataFields/compare_at_price"));
                if compare != money(line.compare_at_price.as_deref()) {
                    p.push(format!(
                        "{what} variant {}: compare_at_price {compare:?}, want {:?}",
                        line.variant_id, line.compare_at_price
                    ));
                }
            }
            problems.extend(p);
            checked += 1;
        }
    }

    // Abandoned-checkout items (the carts that were abandoned and got the event).
    let events: BTreeMap<String, Map<String, Value>> = sim
        .events(&Filter::default())
        .into_iter()
        .map(|e| (e.id, e.data_fields))
        .collect();
    let mut carts = 0;
    for (token, lines) in &expected.cart_items {
        let Some(fields) = events.get(&checkout_event_id(&shop, token)) else {
            continue;
        };
        let got: Vec<Value> = fields
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for line in lines {
            problems.extend(item_problems(&format!("checkout {token}"), &got, line));
            carts += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} purchase and {carts} checkout items differ:\n{}",
        problems.len(),
        problems[..problems.len().min(40)].join("\n")
    );
    assert!(checked > 100, "purchase items checked: {checked}");
    assert!(carts > 10, "abandoned-checkout items checked: {carts}");
    let dead = stack.side_topic_records(&stack.topics.processor_dlq)
        + stack.side_topic_records(&stack.topics.publisher_dlq);
    assert_eq!(dead, 0, "dead letters");
    eprintln!(
        "checked {} catalog items, {checked} purchase and {carts} checkout items at {:?}",
        items.len(),
        started.elapsed()
    );

    // Replay: a fresh processor deployment reads the raw topic from the beginning (its own
    // product table, rebuilt from the log) and must send the same enriched purchases.
    let updates_before: u64 = sim
        .purchases(&Filter::default())
        .iter()
        .map(|p| p.update_count)
        .sum();
    stack
        .replace_processor_with_fresh_replay(&rules)
        .await
        .unwrap();
    stack.wait_drained(Duration::from_secs(240)).await.unwrap();
    let sim = stack.sim_state();
    let updates_after: u64 = sim
        .purchases(&Filter::default())
        .iter()
        .map(|p| p.update_count)
        .sum();
    assert!(
        updates_after > updates_before,
        "the replay re-sent no purchase (did it run?)"
    );
    let replayed = purchase_items(sim);
    let differ: Vec<String> = purchases
        .iter()
        .filter(|(order, got)| replayed.get(*order) != Some(got))
        .map(|(order, got)| {
            format!(
                "order {order}: live {got:?}\nreplay {:?}",
                replayed.get(order)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "replay: {} of {} purchases differ:\n{}",
        differ.len(),
        purchases.len(),
        differ[..differ.len().min(3)].join("\n")
    );
    assert_eq!(catalog(sim), items, "replay: the same catalog");
    let dead = stack.side_topic_records(&stack.topics.processor_dlq)
        + stack.side_topic_records(&stack.topics.publisher_dlq);
    assert_eq!(dead, 0, "dead letters after the replay");
    eprintln!("replay identical at {:?}", started.elapsed());
    stack.shutdown().await;
}
