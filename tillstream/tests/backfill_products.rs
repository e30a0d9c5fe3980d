//! `tillstream backfill` of products (issue 19): shopify-sim's product store through the Admin
//! API fake's bulk query, the real broker and an in-process processor. The catalog commands
//! must name exactly the store's active products (archived and draft ones are in the Admin API
//! but not listed; deleted ones are gone), with their type and collections as categories, and
//! the purchases imported afterwards (the documented order: `--resources products` first) must
//! all be enriched from them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use runtime::testing::{fresh_topics, kafka, unique};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{Action, IterableCommand};
use shopify_sim::{AdminOptions, ScenarioConfig, generate, spawn_admin};

const TOKEN: &str = "shpat_test_token";

fn commands(k: &KafkaConfig, t: &TopicsConfig) -> Vec<IterableCommand> {
    runtime::testing::read_committed(k, &t.commands, t.partitions)
        .into_iter()
        .filter_map(|(_, _, v, _)| v)
        .map(|v| IterableCommand::decode(&v).unwrap())
        .collect()
}

/// The last catalog document per item id (deletes remove it), in command order per item.
fn catalog(
    cmds: &[IterableCommand],
) -> BTreeMap<String, serde_json::Map<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for c in cmds {
        match &c.action {
            Action::CatalogUpsert {
                item_id, document, ..
            } => {
                out.insert(item_id.clone(), document.clone());
            }
            Action::CatalogDelete { item_id, .. } => {
                out.remove(item_id);
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfilled_products_fill_the_catalog_and_enrich_the_backfilled_purchases() {
    let cfg = ScenarioConfig::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulators/shopify-sim/scenarios/products.toml"
    )))
    .unwrap();
    let run = generate(&cfg).unwrap();
    let expected = run.expected.products.clone().expect("products enabled");
    let opts = AdminOptions {
        access_token: TOKEN.into(),
        ..AdminOptions::default()
    };
    let admin = spawn_admin(&cfg, opts, "127.0.0.1:0").await.unwrap();
    let k = kafka();
    let t = fresh_topics(&k, 3).await;
    let dir = std::env::temp_dir().join(unique("backfill-products"));
    std::fs::create_dir_all(&dir).unwrap();
    let backfill = |resources: &'static str| {
        let (k, t, dir, shop, url) = (
            k.clone(),
            t.clone(),
            dir.clone(),
            cfg.shop_domain.clone(),
            admin.base_url.clone(),
        );
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
                .args(["backfill", "--shop", &shop, "--admin-url", &url])
                .args([
                    "--resources",
                    resources,
                    "--poll-interval",
                    "50ms",
                    "--checkpoint",
                ])
                .arg(dir.join(format!("checkpoint-{resources}.json")))
                .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", TOKEN)
                .env("TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS", &k.bootstrap_servers)
                .env("TILLSTREAM__TOPICS__RAW", &t.raw)
                .env("TILLSTREAM__TOPICS__ERASURES", &t.erasures)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success() && stdout.contains("backfill complete"),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    // The documented procedure: products first, the processor caught up, then the history.
    let stdout = backfill("products").await;
    assert!(stdout.contains("products/update: "), "{stdout}");

    let pcfg: processor::ProcessorConfig = serde_json::from_value(serde_json::json!({
        "application_id": unique("backfill-products-app"),
        "instance_id": "i1",
        "kafka": {"bootstrap_servers": k.bootstrap_servers},
        "http": {"listen": "127.0.0.1:0", "advertised_url": "http://127.0.0.1:0"},
        "engine": {"commit_interval": "50ms", "commit_max_records": 500, "dedup_window": "7days", "dedup_max_per_key": 64,
                   "transaction_timeout": "10s", "caught_up_lag": 2, "poll_timeout": "50ms", "session_timeout": "6s",
                   // The backfill writes the raw topic without ingest's heartbeats.
                   "timers": {"clock": "stream_time"}},
        "rules": {"kind": "marketing"},
    }))
    .unwrap();
    let pcfg = processor::ProcessorConfig {
        topics: t.clone(),
        ..pcfg
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(processor::run_with_listener(pcfg, listener, stop.clone()));

    // The catalog: exactly the active products, with type and collections as categories.
    let want: BTreeSet<&String> = expected.catalog.keys().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let purchases = |cmds: &[IterableCommand]| {
        cmds.iter()
            .filter(|c| matches!(c.action, Action::TrackPurchase { .. }))
            .count()
    };
    let mut before = usize::MAX;
    let items = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let cmds = tokio::task::block_in_place(|| commands(&k, &t));
        let items = catalog(&cmds);
        // Done when the catalog is complete and no purchase came in the last second.
        let now = purchases(&cmds);
        if items.keys().collect::<BTreeSet<_>>() == want && now == before {
            break items;
        }
        before = now;
        assert!(
            Instant::now() < deadline,
            "catalog items {:?}, want {want:?}",
            items.keys().collect::<Vec<_>>()
        );
    };
    for (id, p) in &expected.catalog {
        let doc = &items[id];
        // The product type first, then the collections (in the bulk result's order).
        let got: Vec<String> = serde_json::from_value(doc["categories"].clone()).unwrap();
        let mut want: BTreeSet<String> = p.collections.iter().cloned().collect();
        want.extend(p.product_type.iter().cloned());
        assert_eq!(doc["name"], serde_json::json!(p.title), "{id} name");
        if p.product_type.is_some() {
            assert_eq!(
                got.first(),
                p.product_type.as_ref(),
                "{id} categories {got:?}"
            );
        }
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            want,
            "{id} categories"
        );
    }

    let stdout = backfill("customers,orders").await;
    assert!(stdout.contains("orders/paid: "), "{stdout}");
    let mut before = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(180);
    let cmds = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let cmds = tokio::task::block_in_place(|| commands(&k, &t));
        let now = purchases(&cmds);
        if now > 0 && now == before {
            break cmds;
        }
        before = now;
        assert!(Instant::now() < deadline, "purchases still arriving");
    };

    // Purchases of listed products: enriched with the product's facts (type and collections).
    let mut checked = 0;
    let mut misses = Vec::new();
    for c in &cmds {
        let Action::TrackPurchase { items, .. } = &c.action else {
            continue;
        };
        for i in items {
            let product = i
                .data_fields
                .as_ref()
                .and_then(|d| d.get("product_id"))
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let Some(p) = expected.catalog.get(product) else {
                continue;
            };
            checked += 1;
            if i.categories.first() != p.product_type.as_ref() && p.product_type.is_some() {
                misses.push(format!("{product}: {:?}", i.categories));
            }
        }
    }
    assert!(checked > 50, "purchase items of listed products: {checked}");
    assert!(
        misses.is_empty(),
        "{} of {checked} backfilled purchase items not enriched, e.g. {:?}",
        misses.len(),
        &misses[..misses.len().min(5)]
    );
    let dead = runtime::testing::read_committed(&k, &t.processor_dlq, t.side_partitions).len();
    assert_eq!(dead, 0, "dead letters");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    let _ = std::fs::remove_dir_all(&dir);
}
