//! Catalog commands against real Kafka and the in-process Iterable simulator (issue 19): the
//! catalog is created on first use, items are replaced and deleted in Kafka order per item,
//! deleting from a catalog that does not exist is not an error, nothing is dead-lettered.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use iterable_sim::{Filter, SimConfig};
use schemas::command::{Action, IterableCommand, UserRef};
use serde_json::{Value, json};

fn catalog_cmd(id: &str, item: &str, action: Action) -> IterableCommand {
    IterableCommand {
        command_id: id.to_owned(),
        shop_domain: "demo.myshopify.com".into(),
        customer_key: format!("demo.myshopify.com/p/{item}"),
        user: UserRef::default(),
        event_time_ms: runtime::now_ms(),
        source_ids: vec![format!("src-{id}")],
        action,
    }
}

fn upsert(id: &str, catalog: &str, item: &str, doc: Value) -> IterableCommand {
    catalog_cmd(
        id,
        item,
        Action::CatalogUpsert {
            catalog: catalog.into(),
            item_id: item.into(),
            document: fields(doc),
        },
    )
}

fn delete(id: &str, catalog: &str, item: &str) -> IterableCommand {
    catalog_cmd(
        id,
        item,
        Action::CatalogDelete {
            catalog: catalog.into(),
            item_id: item.into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_items_are_created_replaced_and_deleted() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let sim = iterable_sim::spawn(SimConfig::default()).await.unwrap();
    let c = config(&kafka, &topics, &sim.base_url());
    let mut commands = Vec::new();
    for i in 0..50 {
        commands.push(upsert(
            &format!("u{i}"),
            "shopify-products",
            &i.to_string(),
            json!({"name": format!("P{i}"), "price": 1.5, "categories": ["A"]}),
        ));
    }
    // A price change replaces the whole item (the old field `categories` goes).
    commands.push(upsert(
        "u1b",
        "shopify-products",
        "1",
        json!({"name": "P1", "price": 2.0}),
    ));
    commands.push(delete("d2", "shopify-products", "2"));
    commands.push(delete("d99", "shopify-products", "99"));
    commands.push(delete("dx", "never-created", "1"));
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let (stop, handle) = start(c);
    let items = wait_for("the catalog", Duration::from_secs(60), || {
        let items = sim
            .state()
            .catalog_items("shopify-products", &Filter::default())?;
        let by_id: BTreeMap<String, Value> = items
            .into_iter()
            .map(|i| (i.item_id, Value::Object(i.value)))
            .collect();
        (by_id.len() == 49 && by_id.get("1").is_some_and(|v| v["price"] == 2.0)).then_some(by_id)
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert!(!items.contains_key("2"), "deleted");
    assert_eq!(
        items["1"],
        json!({"name": "P1", "price": 2.0}),
        "replaced, not merged"
    );
    assert_eq!(
        items["7"],
        json!({"name": "P7", "price": 1.5, "categories": ["A"]})
    );
    let dead =
        runtime::testing::read_committed(&kafka, &topics.publisher_dlq, topics.side_partitions);
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    let stats = sim.state().stats();
    assert_eq!(stats.totals.rate_limited, 0, "{stats:?}");
}
