//! The real binary against the real broker and an in-test Admin API fake: kill -9 mid-stream
//! loses nothing, THROTTLED answers are waited out, userErrors are dead-lettered with their reason.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{ConsentChannel, MarketingState, ShopifyCommand};
use serde_json::{Value, json};

const SHOP: &str = "writer-test.myshopify.com";
const TOKEN: &str = "shpat_test_token";
const REFUSED_CUSTOMER: i64 = 999;

/// What the fake Admin API saw: (customer gid, state, consentUpdatedAt) per applied mutation.
#[derive(Default)]
struct Fake {
    applied: Vec<(String, String, String)>,
    requests: usize,
    throttled: usize,
    bad_token: usize,
}

async fn graphql(
    State(fake): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    // Slow enough that a request is in flight when the process dies.
    tokio::time::sleep(Duration::from_millis(15)).await;
    let mut f = fake.lock().unwrap();
    f.requests += 1;
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        f.bad_token += 1;
        return Json(json!({"errors": "[API] Invalid API key or access token"}));
    }
    // Every 7th request is throttled with an empty bucket that refills at 200/s.
    if f.requests % 7 == 0 {
        f.throttled += 1;
        return Json(json!({
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 10, "actualQueryCost": null,
                "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 0, "restoreRate": 200.0}}}
        }));
    }
    let input = &body["variables"]["input"];
    let gid = input["customerId"].as_str().unwrap_or("").to_owned();
    let consent = if input.get("emailMarketingConsent").is_some() {
        &input["emailMarketingConsent"]
    } else {
        &input["smsMarketingConsent"]
    };
    let name = if input.get("emailMarketingConsent").is_some() {
        "customerEmailMarketingConsentUpdate"
    } else {
        "customerSmsMarketingConsentUpdate"
    };
    if gid.ends_with(&format!("/{REFUSED_CUSTOMER}")) {
        return Json(json!({"data": {name: {"customer": null,
            "userErrors": [{"field": ["input", "smsMarketingConsent"], "message": "Phone number is required"}]}}}));
    }
    f.applied.push((
        gid.clone(),
        consent["marketingState"].as_str().unwrap_or("").to_owned(),
        consent["consentUpdatedAt"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    ));
    Json(json!({
        "data": {name: {"customer": {"id": gid}, "userErrors": []}},
        "extensions": {"cost": {"requestedQueryCost": 10, "actualQueryCost": 10,
            "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 990, "restoreRate": 200.0}}}
    }))
}

/// The writer process; killed when dropped, so a failing assertion leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &std::path::Path, log: &std::path::Path, port: u16) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_shopify-writer"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,rdkafka=warn")
        .env("TILLSTREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map(Running)
        .unwrap()
}

/// A port free right now (the writer binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The samples of metric `name` (labels as written) on the writer's `/metrics`, if it answers.
async fn samples(port: u16, name: &str) -> Option<Vec<(String, f64)>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

fn command(i: i64, customer: i64, state: MarketingState) -> ShopifyCommand {
    ShopifyCommand {
        command_id: format!("cmd-{i}"),
        shop_domain: SHOP.into(),
        customer_key: format!("{SHOP}/c/{customer}"),
        customer_id: customer,
        channel: if customer == REFUSED_CUSTOMER {
            ConsentChannel::Sms
        } else {
            ConsentChannel::Email
        },
        marketing_state: state,
        consent_updated_at_ms: 1_767_621_600_000 + i * 1000,
        event_time_ms: 1_767_621_600_000 + i * 1000,
        reason: "test".into(),
        source_ids: vec![format!("d-{i}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_applies_every_command() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;

    let fake = Arc::new(Mutex::new(Fake::default()));
    let app = Router::new()
        .route("/{shop}/admin/api/{version}/graphql.json", post(graphql))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(runtime::testing::unique("shopify-writer-kill9"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("writer.toml");
    std::fs::write(
        &config,
        format!(
            r#"group_id = "{group}"
stats_interval = "500ms"
[kafka]
bootstrap_servers = "{servers}"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[topics]
shopify_commands = "{commands}"
shopify_writer_dlq = "{dlq}"
[http]
listen = "127.0.0.1:0"
[shopify]
endpoint = "http://{addr}/{{shop}}/admin/api/{{version}}/graphql.json"
[shopify.shops."{SHOP}"]
access_token = "{TOKEN}"
[retry]
initial_backoff = "20ms"
max_backoff = "300ms"
"#,
            group = runtime::testing::unique("writer"),
            servers = kafka.bootstrap_servers,
            commands = topics.shopify_commands,
            dlq = topics.shopify_writer_dlq,
        ),
    )
    .unwrap();
    let log = dir.join("writer.log");

    // 40 customers, 5 alternating changes each (the last one decides), and one refused.
    let mut commands = Vec::new();
    for round in 0..5i64 {
        for c in 1..=40i64 {
            let state = if (round + c) % 2 == 0 {
                MarketingState::Subscribed
            } else {
                MarketingState::Unsubscribed
            };
            commands.push(command(round * 100 + c, c, state));
        }
    }
    commands.push(command(
        10_000,
        REFUSED_CUSTOMER,
        MarketingState::Unsubscribed,
    ));
    let producer: FutureProducer = kafka.producer("writer-test").create().unwrap();
    for c in &commands {
        producer
            .send(
                FutureRecord::to(&topics.shopify_commands)
                    .key(&c.customer_key)
                    .payload(&c.encode().unwrap()),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let applied = || fake.lock().unwrap().applied.len();
    let mut child = spawn(&config, &log, free_port());
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied() < 60 {
        assert!(
            Instant::now() < deadline,
            "only {} applied before the kill",
            applied()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let at_kill = applied();
    assert!(
        at_kill < commands.len() - 1,
        "the kill came too late to test anything"
    );

    let port = free_port();
    let mut child = spawn(&config, &log, port);
    let want = commands.len() - 1;
    let deadline = Instant::now() + Duration::from_secs(90);
    let distinct = || {
        let f = fake.lock().unwrap();
        let mut set: Vec<_> = f.applied.clone();
        set.sort();
        set.dedup();
        set.len()
    };
    while distinct() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} commands applied; log {}",
            distinct(),
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The refused command is dead-lettered with Shopify's reason, once.
    let consumer: StreamConsumer = kafka
        .consumer("writer-test", &runtime::testing::unique("dlq-reader"), true)
        .create()
        .unwrap();
    consumer.subscribe(&[&topics.shopify_writer_dlq]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a dead letter")
        .unwrap();
    let reason = rdkafka::message::Headers::iter(m.headers().unwrap())
        .find(|h| h.key == "tillstream.reason")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    assert!(reason.contains("Phone number is required"), "{reason}");
    assert_eq!(
        ShopifyCommand::decode(m.payload().unwrap())
            .unwrap()
            .customer_id,
        REFUSED_CUSTOMER
    );

    // What an operator sees: mutations sent, throttled answers, and a lag that drains to 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = samples(port, "tillstream_shopify_writer_consumer_lag")
            .await
            .unwrap_or_default();
        if !lag.is_empty() && lag.iter().all(|(_, v)| *v == 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer's lag gauge never drained to 0: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent: f64 = samples(port, "tillstream_shopify_writer_requests_total")
        .await
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("status=\"200\""))
        .map(|(_, v)| v)
        .sum();
    let throttled: f64 = samples(port, "tillstream_shopify_writer_retries_total")
        .await
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("reason=\"throttled\""))
        .map(|(_, v)| v)
        .sum();
    // The restarted writer applied at least what was left after the kill, and the fake
    // throttles one request in seven.
    assert!(
        sent as usize >= want.saturating_sub(at_kill),
        "{sent} requests counted, {} left after the kill",
        want.saturating_sub(at_kill)
    );
    assert!(throttled >= 1.0, "{throttled} throttled answers counted");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status();
    child.0.wait().unwrap();

    let f = fake.lock().unwrap();
    // Every change applied; redone ones are only those the killed process had not committed
    // (one at a time, so at most one, plus the one in flight).
    let duplicates = f.applied.len() - want;
    assert!(duplicates <= 2, "{duplicates} commands applied twice");
    assert!(f.throttled > 0, "the fake throttled some requests");
    assert_eq!(f.bad_token, 0);
    // Per customer, the last change is the one Shopify holds: order per key is kept.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for (gid, state, _) in &f.applied {
        last.insert(gid, state);
    }
    for c in 1..=40i64 {
        let want = if (4 + c) % 2 == 0 {
            "SUBSCRIBED"
        } else {
            "UNSUBSCRIBED"
        };
        assert_eq!(
            last[format!("gid://shopify/Customer/{c}").as_str()],
            want,
            "customer {c}"
        );
    }
}
