//! Catalog endpoints over HTTP: create, bulk upsert (merge vs replace), PUT/PATCH, deletes,
//! the 30 KB item cap, id and field-name rules, the 1000-item cap and the per-key limits.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, config_without_limits};
use iterable_sim::{DEFAULT_API_KEY, SimConfig};
use serde_json::{Value, json};

async fn items(sim: &Sim, catalog: &str) -> Value {
    sim.inspect(&format!("/_sim/catalogs/{catalog}/items"))
        .await
}

fn item<'a>(items: &'a Value, id: &str) -> Option<&'a Value> {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["itemId"] == id)
        .map(|i| &i["value"])
}

#[tokio::test]
async fn create_upsert_merge_replace_and_delete() {
    let sim = Sim::start(config_without_limits()).await;
    // Items into a catalog that does not exist: 404.
    let r = sim
        .post(
            "/api/catalogs/Products/items",
            json!({"documents": {"a": {"x": 1}}, "replaceUploadedFieldsOnly": false}),
        )
        .await;
    assert_eq!(r.status_and_code(), (404, Some("NotFound")));

    let r = sim.post("/api/catalogs/Products", json!({})).await;
    assert_eq!(r.status_and_code(), (200, Some("Success")));
    // Names are case-insensitive: creating it again conflicts.
    let r = sim.post("/api/catalogs/products", json!({})).await;
    assert_eq!(r.status, 409);

    let r = sim
        .post(
            "/api/catalogs/products/items",
            json!({"documents": {
                "sku-1": {"title": "Pan", "price": 10.5, "tags": ["a"]},
                "sku-2": {"title": "Pot", "price": 20.0},
            }, "replaceUploadedFieldsOnly": false}),
        )
        .await;
    assert_eq!(r.status_and_code(), (202, Some("Success")));
    let all = items(&sim, "PRODUCTS").await;
    assert_eq!(all.as_array().unwrap().len(), 2);

    // replaceUploadedFieldsOnly: true merges the uploaded fields into the stored item.
    sim.post(
        "/api/catalogs/Products/items",
        json!({"documents": {"sku-1": {"price": 9.0}}, "replaceUploadedFieldsOnly": true}),
    )
    .await;
    let all = items(&sim, "Products").await;
    assert_eq!(
        item(&all, "sku-1").unwrap(),
        &json!({"title": "Pan", "price": 9.0, "tags": ["a"]})
    );
    // false overwrites the whole item.
    sim.post(
        "/api/catalogs/Products/items",
        json!({"documents": {"sku-1": {"price": 8.0}}, "replaceUploadedFieldsOnly": false}),
    )
    .await;
    let all = items(&sim, "Products").await;
    assert_eq!(item(&all, "sku-1").unwrap(), &json!({"price": 8.0}));

    // replaceUploadedFieldsOnly is required.
    let r = sim
        .post(
            "/api/catalogs/Products/items",
            json!({"documents": {"sku-3": {"a": 1}}}),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));

    // PUT replaces, PATCH merges; both create a missing item.
    let put = sim
        .send(
            reqwest::Method::PUT,
            "/api/catalogs/Products/items/sku-2",
            Some(("Api-Key", DEFAULT_API_KEY)),
            Some(json!({"value": {"title": "Stock pot"}}).to_string()),
        )
        .await;
    assert_eq!(put.status, 202);
    let patch = sim
        .send(
            reqwest::Method::PATCH,
            "/api/catalogs/Products/items/sku-2",
            Some(("Api-Key", DEFAULT_API_KEY)),
            Some(json!({"update": {"price": 21.0}}).to_string()),
        )
        .await;
    assert_eq!(patch.status, 202);
    let patch_new = sim
        .send(
            reqwest::Method::PATCH,
            "/api/catalogs/Products/items/sku-9",
            Some(("Api-Key", DEFAULT_API_KEY)),
            Some(json!({"update": {"price": 1.0}}).to_string()),
        )
        .await;
    assert_eq!(patch_new.status, 202);
    let all = items(&sim, "Products").await;
    assert_eq!(
        item(&all, "sku-2").unwrap(),
        &json!({"title": "Stock pot", "price": 21.0})
    );
    assert_eq!(item(&all, "sku-9").unwrap(), &json!({"price": 1.0}));

    let got = sim.api_get("/api/catalogs/Products/items/sku-2").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["params"]["value"]["price"], 21.0);

    // Deletes: single (404 for an unknown item) and bulk (unknown ids ignored).
    let d = sim.api_delete("/api/catalogs/Products/items/sku-9").await;
    assert_eq!(d.status, 202);
    let d = sim.api_delete("/api/catalogs/Products/items/sku-9").await;
    assert_eq!(d.status, 404);
    let d = sim
        .send(
            reqwest::Method::DELETE,
            "/api/catalogs/Products/items",
            Some(("Api-Key", DEFAULT_API_KEY)),
            Some(json!({"itemIds": ["sku-1", "nope"]}).to_string()),
        )
        .await;
    assert_eq!(d.status, 202);
    let all = items(&sim, "Products").await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["itemId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sku-2"]);
    let cats = sim.inspect("/_sim/catalogs").await;
    assert_eq!(cats[0]["size"], 1);
    assert_eq!(cats[0]["deleted"], 2);
}

#[tokio::test]
async fn rejects_bad_ids_oversized_items_dotted_fields_and_big_batches() {
    let mut config = config_without_limits();
    config.projects[0].catalogs = vec!["products".into()];
    let sim = Sim::start(config).await;
    let upsert = |docs: Value| json!({"documents": docs, "replaceUploadedFieldsOnly": false});

    // Item ids: alphanumerics and dashes, at most 255 characters.
    for bad in ["has space", "under_score", "dot.ted", &"x".repeat(256)] {
        let r = sim
            .post(
                "/api/catalogs/products/items",
                upsert(json!({ bad: {"a": 1} })),
            )
            .await;
        assert_eq!(r.status_and_code(), (400, Some("BadParams")), "{bad}");
    }
    let ok_id = "x".repeat(255);
    let r = sim
        .post(
            "/api/catalogs/products/items",
            upsert(json!({ ok_id: {"a": 1} })),
        )
        .await;
    assert_eq!(r.status, 202);

    // 30 KB per item (strict: 30,000 bytes of JSON), and one bad item fails the request.
    let big = |n: usize| json!({"d": "y".repeat(n)});
    let fits = big(30_000 - r#"{"d":""}"#.len());
    let over = big(30_001 - r#"{"d":""}"#.len());
    let r = sim
        .post(
            "/api/catalogs/products/items",
            upsert(json!({"fits": fits, "over": over})),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));
    let all = items(&sim, "products").await;
    assert!(
        item(&all, "fits").is_none(),
        "a failed request writes nothing"
    );
    let r = sim
        .post(
            "/api/catalogs/products/items",
            upsert(json!({"fits": fits})),
        )
        .await;
    assert_eq!(r.status, 202);
    let put = sim
        .send(
            reqwest::Method::PUT,
            "/api/catalogs/products/items/over",
            Some(("Api-Key", DEFAULT_API_KEY)),
            Some(json!({ "value": over }).to_string()),
        )
        .await;
    assert_eq!(put.status, 400);

    // No periods in field names, at any depth.
    let r = sim
        .post(
            "/api/catalogs/products/items",
            upsert(json!({"d": {"outer": {"in.ner": 1}}})),
        )
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BadParams")));

    // At most 1000 documents per request.
    let docs = |n: usize| -> Value {
        Value::Object(
            (0..n)
                .map(|i| (format!("i-{i}"), json!({"n": i})))
                .collect(),
        )
    };
    let r = sim
        .post("/api/catalogs/products/items", upsert(docs(1001)))
        .await;
    assert_eq!(r.status_and_code(), (400, Some("BatchTooLarge")));
    let r = sim
        .post("/api/catalogs/products/items", upsert(docs(1000)))
        .await;
    assert_eq!(r.status, 202);
    let cats = sim.inspect("/_sim/catalogs").await;
    assert_eq!(cats[0]["size"], 1002);

    // Bad catalog names.
    let r = sim.post("/api/catalogs/bad_name", json!({})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn bulk_upserts_are_limited_per_api_key() {
    // A small limit (the published 100/s is checked in the unit tests) so that sequential
    // requests outrun the refill whatever the machine's speed.
    let config = SimConfig::from_toml_str(
        r#"
        [[projects]]
        id = 1
        api_keys = ["k1", "k2"]
        catalogs = ["products"]
        [rate_limits.endpoints."catalogs/bulkUpdateItems"]
        per_second = 1
        burst = 5
        "#,
    )
    .unwrap();
    let sim = Sim::start(config).await;
    let body = json!({"documents": {"a": {"n": 1}}, "replaceUploadedFieldsOnly": true});
    // Two keys of one project each get their own bucket, unlike the per-project endpoints:
    // k2 is admitted after k1 has used up its burst.
    for key in ["k1", "k2"] {
        let mut ok = 0;
        for _ in 0..20 {
            let r = sim
                .post_with_key("/api/catalogs/products/items", key, body.clone())
                .await;
            match r.status {
                202 => ok += 1,
                429 => assert_eq!(r.json["code"], "RateLimitExceeded"),
                s => panic!("unexpected status {s}"),
            }
        }
        assert!((5..=7).contains(&ok), "{key}: {ok} admitted");
    }
    // PATCH has no published limit: never limited.
    for _ in 0..20 {
        let r = sim
            .send(
                reqwest::Method::PATCH,
                "/api/catalogs/products/items/a",
                Some(("Api-Key", "k1")),
                Some(json!({"update": {"n": 2}}).to_string()),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let stats = sim.stats().await;
    let ep = &stats.endpoints["catalogs/bulkUpdateItems"];
    assert!(ep.rate_limited >= 26);
    assert_eq!(ep.records_succeeded, ep.success);
}
