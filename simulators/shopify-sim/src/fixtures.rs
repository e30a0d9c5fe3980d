//! CLI-facing helpers: signed per-topic fixtures for ingest tests, and run files on disk.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::Serialize;

use crate::config::ScenarioConfig;
use crate::delivery::{Delivery, DeliveryKind};
use crate::error::SimError;
use crate::generate;
use crate::json::{J, obj};
use crate::model::{Line, Subject, Topic};
use crate::payloads::{Ctx, render};
use crate::sign::sign;
use crate::timeline;
use crate::{Scenario, is_legacy_api_version};

/// One signed HTTP fixture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fixture {
    /// File stem, e.g. `orders__create` or `customers__create.2024-10`.
    pub name: String,
    /// What the fixture exercises.
    pub description: String,
    /// Topic header value (empty bodies still carry one).
    pub topic: String,
    /// Headers exactly as to be sent (names may be lower-case in variants).
    pub headers: Vec<(String, String)>,
    /// Body bytes exactly as signed.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Status a correct receiver returns: 200 (accept), 401 (bad HMAC), 400 (empty body).
    pub expect_status: u16,
}

/// Topics that get a plain fixture (the checklist's topics this simulator produces).
const FIXTURE_TOPICS: [&str; 19] = [
    "customers/create",
    "customers/update",
    "customers_email_marketing_consent/update",
    "customers_marketing_consent/update",
    "carts/create",
    "carts/update",
    "checkouts/create",
    "checkouts/update",
    "checkouts/delete",
    "orders/create",
    "orders/updated",
    "orders/paid",
    "orders/fulfilled",
    "orders/cancelled",
    "orders/delete",
    "refunds/create",
    "customers/redact",
    "customers/data_request",
    "shop/redact",
];

/// A small scenario in which every fixture topic and variant occurs.
fn fixture_config() -> ScenarioConfig {
    ScenarioConfig {
        seed: 20_260_105,
        customers: 80,
        days: 200,
        redact_fraction: 0.2,
        data_request_fraction: 0.2,
        cancellation_fraction: 0.1,
        refund_fraction: 0.1,
        partial_refund_fraction: 0.2,
        order_delete_fraction: 0.05,
        shop_redact: true,
        faults: crate::config::Faults {
            duplicate_probability: 0.0,
            reorder_probability: 0.0,
            second_subscription_probability: 0.0,
            stale_retry_probability: 0.0,
            ..crate::config::Faults::default()
        },
        ..ScenarioConfig::default()
    }
}

fn file_stem(topic: &str) -> String {
    topic.replace('/', "__")
}

fn fixture(name: String, description: &str, d: &Delivery, secret: &str) -> Fixture {
    Fixture {
        name,
        description: description.to_owned(),
        topic: d.topic.clone(),
        headers: d.headers(secret),
        body: d.body.clone(),
        expect_status: 200,
    }
}

/// Build the fixture set, signed with `secret`: one per topic (customers in both API
/// shapes) plus the checklist's edge cases (id > 2^53, `\/` and `\u0026` escapes,
/// lower-case header names, missing Event-Id/Triggered-At, a retry, a second
/// subscription, a wrong-key signature, an empty body, a body over 1 MB, null consent).
pub fn fixtures(secret: &str) -> Result<Vec<Fixture>, SimError> {
    let cfg = fixture_config();
    let scenario = generate(&cfg)?;
    let ds = &scenario.deliveries;
    let originals: Vec<&Delivery> = ds
        .iter()
        .filter(|d| d.kind == DeliveryKind::Original)
        .collect();
    let find = |pred: &dyn Fn(&Delivery) -> bool| originals.iter().copied().find(|d| pred(d));
    let mut out = Vec::new();

    for topic in FIXTURE_TOPICS {
        let shapes: &[Option<bool>] =
            if topic.starts_with("customers/create") || topic == "customers/update" {
                &[Some(true), Some(false)]
            } else {
                &[None]
            };
        for shape in shapes {
            let d = find(&|d| {
                d.topic == topic
                    && shape.is_none_or(|legacy| is_legacy_api_version(&d.api_version) == legacy)
            })
            .ok_or_else(|| SimError::MissingFixture(topic.to_owned()))?;
            let name = match shape {
                Some(_) => format!("{}.{}", file_stem(topic), d.api_version),
                None => file_stem(topic),
            };
            let desc = format!("{topic} as delivered with API version {}", d.api_version);
            out.push(fixture(name, &desc, d, secret));
        }
    }

    let big =
        find(&|d| d.topic == "orders/create" && body_id(&d.body).is_some_and(|id| id > 1 << 53))
            .ok_or_else(|| SimError::MissingFixture("orders/create with id > 2^53".into()))?;
    out.push(fixture(
        "orders__create.big-id".into(),
        "order id above 2^53: must stay an exact 64-bit integer (never f64)",
        big,
        secret,
    ));
    let esc = find(&|d| {
        d.topic == "orders/create" && contains(&d.body, b"\\/") && contains(&d.body, b"\\u0026")
    })
    .ok_or_else(|| SimError::MissingFixture("body with escapes".into()))?;
    out.push(fixture(
        "orders__create.escapes".into(),
        "body contains Shopify's \\/ and \\u0026 escapes; verify the HMAC on the raw bytes",
        esc,
        secret,
    ));

    let paid = find(&|d| d.topic == "orders/paid")
        .ok_or_else(|| SimError::MissingFixture("orders/paid".into()))?;
    let mut lower = fixture(
        "orders__paid.lowercase-headers".into(),
        "header names lower-cased (HTTP/2)",
        paid,
        secret,
    );
    lower.headers = lower
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    out.push(lower);

    let mut missing = fixture(
        "orders__paid.missing-event-id".into(),
        "no X-Shopify-Event-Id / X-Shopify-Triggered-At: optional headers, must be accepted",
        paid,
        secret,
    );
    missing
        .headers
        .retain(|(k, _)| k != "X-Shopify-Event-Id" && k != "X-Shopify-Triggered-At");
    out.push(missing);

    out.push(fixture(
        "orders__paid.retry".into(),
        "a retry of orders__paid: identical bytes, webhook id and event id (dedupe, still 200)",
        paid,
        secret,
    ));
    let mut second = paid.clone();
    second.webhook_id = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f".into();
    second.name = Some("crm-sync".into());
    out.push(fixture(
        "orders__paid.second-subscription".into(),
        "second subscription: same body and event id, new webhook id, X-Shopify-Name set",
        &second,
        secret,
    ));

    let mut wrong = fixture(
        "orders__paid.wrong-key".into(),
        "signed with the store notification key instead of the app secret: 401",
        paid,
        secret,
    );
    let bad = sign(&paid.body, b"store-notification-signing-key");
    for (k, v) in &mut wrong.headers {
        if k == "X-Shopify-Hmac-Sha256" {
            v.clone_from(&bad);
        }
    }
    wrong.expect_status = 401;
    out.push(wrong);

    let mut empty_d = paid.clone();
    empty_d.body = Vec::new();
    let mut empty = fixture(
        "orders__paid.empty-body".into(),
        "empty body: reject before HMAC",
        &empty_d,
        secret,
    );
    empty.expect_status = 400;
    out.push(empty);

    out.push(large_body(&cfg, secret)?);

    let consent = find(&|d| d.topic == "customers_email_marketing_consent/update")
        .ok_or_else(|| SimError::MissingFixture("consent".into()))?;
    let mut null_d = consent.clone();
    let customer_id = body_id_field(&consent.body, "customer_id").unwrap_or(0);
    null_d.body = obj! {
        "customer_id" => customer_id,
        "email_address" => J::Null,
        "email_marketing_consent" => J::Null,
    }
    .to_bytes();
    out.push(fixture(
        "customers_email_marketing_consent__update.null".into(),
        "consent update with null email and consent",
        &null_d,
        secret,
    ));
    Ok(out)
}

/// An `orders/create` over 1 MB (thousands of line items), signed like any other.
fn large_body(cfg: &ScenarioConfig, secret: &str) -> Result<Fixture, SimError> {
    let tl = timeline::build(cfg)?;
    let action = tl
        .actions
        .iter()
        .filter(|a| a.topic == Topic::OrdersCreate)
        .min_by_key(|a| (a.at, a.person, a.seq))
        .ok_or_else(|| SimError::MissingFixture("orders/create".into()))?;
    let mut action = action.clone();
    if let Subject::Order(o) = &mut action.subject {
        let template: Option<Line> = o.basket.lines.first().cloned();
        if let Some(t) = template {
            o.basket.lines = (0..1200u64)
                .map(|i| Line {
                    id: 9_100_000_000_000 + i,
                    product: (i as usize) % tl.catalogue.len().max(1),
                    ..t.clone()
                })
                .collect();
        }
    }
    let numbers = BTreeMap::new();
    let ctx = Ctx {
        shop_domain: &cfg.shop_domain,
        shop_id: cfg.shop_id,
        currency: &cfg.shop_currency,
        catalogue: &tl.catalogue,
        order_numbers: &numbers,
        catalog: None,
    };
    let body = render(&ctx, &action, "2026-07");
    let d = Delivery {
        topic: "orders/create".into(),
        shop_domain: cfg.shop_domain.clone(),
        api_version: "2026-07".into(),
        webhook_id: "0b9d7c1e-3f2a-4e5b-9c8d-7e6f5a4b3c2d".into(),
        event_id: "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5".into(),
        triggered_at: action.at.with_timezone(&chrono::Utc),
        name: None,
        body,
        kind: DeliveryKind::Original,
    };
    Ok(fixture(
        "orders__create.large".into(),
        "orders/create body over 1 MB: no body-size limit may truncate it",
        &d,
        secret,
    ))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn body_id(body: &[u8]) -> Option<u64> {
    body_id_field(body, "id")
}

fn body_id_field(body: &[u8], field: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(field)?.as_u64()
}

#[derive(Serialize)]
struct FixtureMeta<'a> {
    name: &'a str,
    topic: &'a str,
    description: &'a str,
    expect_status: u16,
    body_file: String,
    headers: &'a [(String, String)],
}

/// Write fixtures to `dir`: `<name>.json` (body bytes) and `<name>.headers.json`
/// (headers as `[name, value]` pairs plus metadata), and an `index.json`.
pub fn write_fixtures(dir: &Path, fixtures: &[Fixture], secret: &str) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir.display().to_string(), e))?;
    let mut index = Vec::new();
    for f in fixtures {
        let body_file = format!("{}.json", f.name);
        write(&dir.join(&body_file), &f.body)?;
        let meta = FixtureMeta {
            name: &f.name,
            topic: &f.topic,
            description: &f.description,
            expect_status: f.expect_status,
            body_file: body_file.clone(),
            headers: &f.headers,
        };
        let mut text = serde_json::to_vec_pretty(&meta)?;
        text.push(b'\n');
        write(&dir.join(format!("{}.headers.json", f.name)), &text)?;
        index.push(serde_json::json!({
            "name": f.name,
            "topic": f.topic,
            "expect_status": f.expect_status,
            "body_file": body_file,
            "headers_file": format!("{}.headers.json", f.name),
        }));
    }
    let idx = serde_json::json!({"secret": secret, "fixtures": index});
    let mut text = serde_json::to_vec_pretty(&idx)?;
    text.push(b'\n');
    write(&dir.join("index.json"), &text)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    std::fs::write(path, bytes).map_err(|e| SimError::io(path.display().to_string(), e))
}

/// Write a generated run to `dir`: `deliveries.jsonl` (one [`Delivery`] per line, body
/// base64), `expected.json` and `scenario.toml` (the config that produced it).
pub fn write_run(dir: &Path, cfg: &ScenarioConfig, scenario: &Scenario) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir.display().to_string(), e))?;
    let path = dir.join("deliveries.jsonl");
    let file =
        std::fs::File::create(&path).map_err(|e| SimError::io(path.display().to_string(), e))?;
    let mut w = std::io::BufWriter::new(file);
    for d in &scenario.deliveries {
        serde_json::to_writer(&mut w, d)?;
        w.write_all(b"\n")
            .map_err(|e| SimError::io(path.display().to_string(), e))?;
    }
    w.flush()
        .map_err(|e| SimError::io(path.display().to_string(), e))?;
    let mut expected = serde_json::to_vec_pretty(&scenario.expected)?;
    expected.push(b'\n');
    write(&dir.join("expected.json"), &expected)?;
    write(&dir.join("scenario.toml"), cfg.to_toml_string()?.as_bytes())
}

/// Read a `deliveries.jsonl` written by [`write_run`].
pub fn read_deliveries_jsonl(path: &Path) -> Result<Vec<Delivery>, SimError> {
    let file =
        std::fs::File::open(path).map_err(|e| SimError::io(path.display().to_string(), e))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| SimError::io(path.display().to_string(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line)?);
    }
    Ok(out)
}
