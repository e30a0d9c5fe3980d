//! Two-way consent through the real binaries (ingest, processor, publisher, shopify-writer) and the real broker; an in-test Admin API fake echoes each write back as Shopify's consent webhook.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use tests::{
    SECRET, Service, Stack, StackOptions, bin_path, free_port, get_ok, lock, prom_samples,
    wait_until,
};

const SHOP: &str = "two-way.myshopify.com";
const ITERABLE_SECRET: &str = "iterable-hook-secret";
const TOKEN: &str = "shpat_two_way";
const EMAIL_CHANNEL: i64 = 11;
const SMS_CHANNEL: i64 = 12;

/// The Admin API fake: records each mutation and sends Shopify's consent webhook back to ingest
/// (what Shopify does after a successful update), with the written `consent_updated_at`.
#[derive(Clone)]
struct Fake {
    writes: Arc<Mutex<Vec<(String, String, String)>>>,
    webhook_url: String,
    http: reqwest::Client,
}

async fn admin(State(f): State<Fake>, Json(body): Json<Value>) -> Json<Value> {
    let input = &body["variables"]["input"];
    let email = input.get("emailMarketingConsent").is_some();
    let consent = if email {
        &input["emailMarketingConsent"]
    } else {
        &input["smsMarketingConsent"]
    };
    let gid = input["customerId"].as_str().unwrap_or("").to_owned();
    let id: u64 = gid.rsplit('/').next().unwrap_or("0").parse().unwrap_or(0);
    let state = consent["marketingState"].as_str().unwrap_or("").to_owned();
    let at = consent["consentUpdatedAt"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    f.writes.lock().unwrap().push((
        gid.clone(),
        if email { "email" } else { "sms" }.to_owned(),
        state.clone(),
    ));
    let (topic, echo) = if email {
        (
            "customers_email_marketing_consent/update",
            json!({"customer_id": id, "email_address": null,
                "email_marketing_consent": {"state": state.to_lowercase(), "opt_in_level": "single_opt_in", "consent_updated_at": at}}),
        )
    } else {
        (
            "customers_marketing_consent/update",
            json!({"id": id, "phone": "+16135550123",
                "sms_marketing_consent": {"state": state.to_lowercase(), "opt_in_level": "single_opt_in", "consent_updated_at": at, "consent_collected_from": "OTHER"}}),
        )
    };
    let f2 = f.clone();
    tokio::spawn(async move {
        let _ = shopify(
            &f2.http,
            &f2.webhook_url,
            topic,
            &format!("echo-{id}-{at}"),
            &echo,
        )
        .await;
    });
    let name = if email {
        "customerEmailMarketingConsentUpdate"
    } else {
        "customerSmsMarketingConsentUpdate"
    };
    Json(
        json!({"data": {name: {"customer": {"id": gid}, "userErrors": []}},
        "extensions": {"cost": {"requestedQueryCost": 10, "actualQueryCost": 10,
            "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 990, "restoreRate": 50.0}}}}),
    )
}

/// A signed Shopify webhook to ingest; returns the status.
async fn shopify(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    id: &str,
    body: &Value,
) -> anyhow::Result<u16> {
    let bytes = serde_json::to_vec(body)?;
    let r = http
        .post(url)
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", SHOP)
        .header("X-Shopify-Webhook-Id", id)
        .header("X-Shopify-Triggered-At", chrono::Utc::now().to_rfc3339())
        .header(
            "X-Shopify-Hmac-Sha256",
            shopify_sim::sign(&bytes, SECRET.as_bytes()),
        )
        .body(bytes)
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// An Iterable system webhook to ingest; returns the status.
async fn iterable(
    http: &reqwest::Client,
    ingest: &str,
    secret: Option<&str>,
    body: &Value,
) -> anyhow::Result<u16> {
    let mut r = http
        .post(format!("{ingest}/webhooks/iterable/{SHOP}"))
        .json(body);
    if let Some(s) = secret {
        r = r.header("X-Tillstream-Webhook-Secret", s);
    }
    Ok(r.send().await?.status().as_u16())
}

fn now_iterable() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S +00:00")
        .to_string()
}

fn customer(id: u64, email: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339();
    json!({"id": id, "email": email, "first_name": "Ada", "last_name": "L", "state": "enabled",
        "created_at": now, "updated_at": now})
}

struct TwoWay {
    stack: Stack,
    writer: Service,
    writes: Arc<Mutex<Vec<(String, String, String)>>>,
    http: reqwest::Client,
}

async fn start(source_of_truth: &str) -> TwoWay {
    let kafka = runtime::testing::kafka();
    let mut options = StackOptions::historical(kafka.clone());
    options.event_time_only = false;
    options.rules_toml = format!(
        "[consent]\nemail_channel_id = {EMAIL_CHANNEL}\nsms_channel_id = {SMS_CHANNEL}\n[consent.source_of_truth]\nemail = \"{source_of_truth}\"\nsms = \"{source_of_truth}\"\n"
    );
    options.ingest_env.push((
        "TILLSTREAM__ITERABLE__SECRETS".into(),
        format!("[\"{ITERABLE_SECRET}\"]"),
    ));
    let stack = Stack::start(options).await.unwrap();

    let writes = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::new();
    let fake = Fake {
        writes: writes.clone(),
        webhook_url: stack.webhook_url(),
        http: http.clone(),
    };
    let app = Router::new()
        .route("/{shop}/admin/api/{version}/graphql.json", post(admin))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let writer = start_writer(
        &stack,
        &format!("http://{addr}/{{shop}}/admin/api/{{version}}/graphql.json"),
        SHOP,
    );
    TwoWay {
        stack,
        writer,
        writes,
        http,
    }
}

/// Starts the shopify-writer binary against `endpoint` with `shop`'s token.
fn start_writer(stack: &Stack, endpoint: &str, shop: &str) -> Service {
    let mut env = runtime::testing::service_env(&stack.kafka, &stack.topics);
    let port = free_port();
    env.push((
        "TILLSTREAM__HTTP__LISTEN".into(),
        format!("127.0.0.1:{port}"),
    ));
    env.push((
        "TILLSTREAM__GROUP_ID".into(),
        runtime::testing::unique("writer"),
    ));
    env.push(("TILLSTREAM__SHOPIFY__ENDPOINT".into(), endpoint.to_owned()));
    env.push((
        "TILLSTREAM__SHOPIFY__SHOPS".into(),
        format!("{{\"{shop}\"={{access_token=\"{TOKEN}\"}}}}"),
    ));
    env.push(("TILLSTREAM__STATS_INTERVAL".into(), "500ms".into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let mut writer = Service::new(
        "shopify-writer",
        bin_path("shopify-writer"),
        env,
        port,
        &stack.dir,
    );
    writer.start();
    writer
}

impl TwoWay {
    fn writes_for(&self, id: u64) -> Vec<(String, String)> {
        let gid = format!("gid://shopify/Customer/{id}");
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(g, _, _)| *g == gid)
            .map(|(_, c, s)| (c.clone(), s.clone()))
            .collect()
    }

    async fn view(&self, id: u64) -> Value {
        let url = format!(
            "{}/customers/{SHOP}/c/{id}",
            lock(&self.stack.processor).url()
        );
        let text = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iterable_unsubscribe_and_stop_reach_shopify_and_stay() {
    let mut t = start("latest").await;
    let ingest = lock(&t.stack.ingest).url();
    let hook = t.stack.webhook_url();

    // Ada (email) and Grace (SMS) are subscribed in Shopify.
    for (id, email) in [(7001u64, "ada@example.com"), (7002, "grace@example.com")] {
        let s = shopify(
            &t.http,
            &hook,
            "customers/create",
            &format!("create-{id}"),
            &customer(id, email),
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
    }
    let before = chrono::Utc::now() - chrono::Duration::minutes(5);
    let c = json!({"customer_id": 7001, "email_address": "ada@example.com",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": before.to_rfc3339()}});
    assert_eq!(
        shopify(
            &t.http,
            &hook,
            "customers_email_marketing_consent/update",
            "c-7001",
            &c
        )
        .await
        .unwrap(),
        200
    );
    let c = json!({"id": 7002, "phone": "+16135550123",
        "sms_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": before.to_rfc3339(), "consent_collected_from": "SHOPIFY"}});
    assert_eq!(
        shopify(
            &t.http,
            &hook,
            "customers_marketing_consent/update",
            "c-7002",
            &c
        )
        .await
        .unwrap(),
        200
    );

    // A forged Iterable webhook: 401, and nothing reaches Shopify.
    let forged = json!({"email": "ada@example.com", "userId": "7001", "eventName": "emailUnSubscribe", "dataFields": {"createdAt": now_iterable()}});
    assert_eq!(
        iterable(&t.http, &ingest, Some("guess"), &forged)
            .await
            .unwrap(),
        401
    );
    assert_eq!(
        iterable(&t.http, &ingest, None, &forged).await.unwrap(),
        401
    );

    // Ada clicks unsubscribe in an Iterable email; Grace replies STOP.
    let click = json!({"email": "ada@example.com", "userId": "7001", "eventName": "hostedUnsubscribeClick",
        "dataFields": {"createdAt": now_iterable(), "unsubSource": "EmailLink", "channelIds": [EMAIL_CHANNEL]}});
    assert_eq!(
        iterable(&t.http, &ingest, Some(ITERABLE_SECRET), &click)
            .await
            .unwrap(),
        200
    );
    let stop = json!({"email": null, "userId": "7002", "eventName": "smsReceived",
        "dataFields": {"createdAt": now_iterable(), "smsMessage": "STOP"}});
    assert_eq!(
        iterable(&t.http, &ingest, Some(ITERABLE_SECRET), &stop)
            .await
            .unwrap(),
        200
    );

    wait_until(
        "both writes in Shopify",
        Duration::from_secs(30),
        || async { (t.writes_for(7001).len() == 1 && t.writes_for(7002).len() == 1).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(
        t.writes_for(7001),
        [("email".to_owned(), "UNSUBSCRIBED".to_owned())]
    );
    assert_eq!(
        t.writes_for(7002),
        [("sms".to_owned(), "UNSUBSCRIBED".to_owned())]
    );

    // A later customers/update without consent fields, after Shopify's echo: still unsubscribed.
    let mut later = customer(7001, "ada@example.com");
    later["first_name"] = json!("Ada Augusta");
    assert_eq!(
        shopify(&t.http, &hook, "customers/update", "update-7001", &later)
            .await
            .unwrap(),
        200
    );
    t.stack.wait_drained(Duration::from_secs(60)).await.unwrap();
    let view = t.view(7001).await;
    assert_eq!(
        view["customer"]["consent"]["email"]["state"], "unsubscribed",
        "{view}"
    );
    let view = t.view(7002).await;
    assert_eq!(
        view["customer"]["consent"]["sms"]["state"], "unsubscribed",
        "{view}"
    );
    assert_eq!(
        t.writes_for(7001).len(),
        1,
        "the echo caused no second write"
    );
    assert_eq!(t.writes_for(7002).len(), 1);
    // Nothing from the forged webhook (user 7001's only write is the click's).

    // The writer's metrics say the same: one mutation per channel, answered 200, lag drained.
    let metrics = format!("{}/metrics", t.writer.url());
    let lag = wait_until(
        "the writer's lag gauge at 0",
        Duration::from_secs(30),
        || async {
            let text = get_ok(&metrics).await?;
            let lag = prom_samples(&text, "tillstream_shopify_writer_consumer_lag");
            (!lag.is_empty() && lag.iter().all(|(_, v)| *v == 0.0)).then_some(text)
        },
    )
    .await
    .unwrap();
    let mut sent = prom_samples(&lag, "tillstream_shopify_writer_requests_total");
    sent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sent,
        [
            (
                "tillstream_shopify_writer_requests_total{channel=\"email\",status=\"200\"}"
                    .to_owned(),
                1.0
            ),
            (
                "tillstream_shopify_writer_requests_total{channel=\"sms\",status=\"200\"}"
                    .to_owned(),
                1.0
            )
        ]
    );

    t.writer.terminate();
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_shopify_overwrites_an_iterable_change_back() {
    let mut t = start("shopify").await;
    let ingest = lock(&t.stack.ingest).url();
    let hook = t.stack.webhook_url();
    assert_eq!(
        shopify(
            &t.http,
            &hook,
            "customers/create",
            "create-8001",
            &customer(8001, "bo@example.com")
        )
        .await
        .unwrap(),
        200
    );
    let c = json!({"customer_id": 8001, "email_address": "bo@example.com",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in", "consent_updated_at": chrono::Utc::now().to_rfc3339()}});
    assert_eq!(
        shopify(
            &t.http,
            &hook,
            "customers_email_marketing_consent/update",
            "c-8001",
            &c
        )
        .await
        .unwrap(),
        200
    );
    t.stack.wait_drained(Duration::from_secs(60)).await.unwrap();
    let updates_before = channel_updates(&t, 8001).len();

    let unsub = json!({"email": "bo@example.com", "userId": "8001", "eventName": "emailUnSubscribe",
        "dataFields": {"createdAt": now_iterable(), "unsubSource": "Manual", "channelIds": [EMAIL_CHANNEL]}});
    assert_eq!(
        iterable(&t.http, &ingest, Some(ITERABLE_SECRET), &unsub)
            .await
            .unwrap(),
        200
    );
    t.stack.wait_drained(Duration::from_secs(60)).await.unwrap();
    // Shopify decides: the processor keeps "subscribed", writes nothing to Shopify, and tells
    // Iterable the email channel is subscribed again.
    let view = t.view(8001).await;
    assert_eq!(
        view["customer"]["consent"]["email"]["state"], "subscribed",
        "{view}"
    );
    assert!(t.writes_for(8001).is_empty());
    let updates = channel_updates(&t, 8001);
    assert_eq!(updates.len(), updates_before + 1, "{updates:?}");
    assert!(
        !updates.last().unwrap().contains(&EMAIL_CHANNEL),
        "{updates:?}"
    );

    t.writer.terminate();
    t.stack.shutdown().await;
}

/// The `unsubscribedChannelIds` of every channel update the processor sent for a customer.
fn channel_updates(t: &TwoWay, id: u64) -> Vec<Vec<i64>> {
    let suffix = format!("/c/{id}");
    runtime::testing::read_committed(
        &t.stack.kafka,
        &t.stack.topics.commands,
        t.stack.topics.partitions,
    )
    .into_iter()
    .filter_map(|(_, _, v, _)| schemas::IterableCommand::decode(&v?).ok())
    .filter(|c| c.customer_key.ends_with(&suffix))
    .filter_map(|c| match c.action {
        schemas::Action::UpdateSubscriptions(u) => u.unsubscribed_channel_ids,
        _ => None,
    })
    .collect()
}

/// The demo as a test, through both simulators: a customer subscribed in Shopify clicks
/// "unsubscribe" in an iterable-sim email; iterable-sim's system webhook reaches ingest, the
/// processor decides, shopify-writer runs the mutation on shopify-sim's Admin API, whose
/// consent webhooks come back and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsubscribe_clicked_in_iterable_sim_reaches_shopify_sim() {
    let kafka = runtime::testing::kafka();
    let cfg = shopify_sim::ScenarioConfig {
        seed: 20,
        customers: 12,
        days: 30,
        rate_per_sec: 0.0,
        redact_fraction: 0.0,
        ..Default::default()
    };
    let shop = cfg.shop_domain.clone();
    let sc = tests::scenario(&cfg).unwrap();
    let admin = shopify_sim::spawn_admin(
        &cfg,
        shopify_sim::AdminOptions {
            access_token: TOKEN.into(),
            ..Default::default()
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();

    // iterable-sim is configured before ingest runs, so ingest gets a port chosen now.
    let ingest_port = free_port();
    let mut options = StackOptions::historical(kafka);
    options.event_time_only = false;
    // iterable-sim's default channels (email 1, SMS 2); Iterable's later change wins.
    options.rules_toml = format!(
        "{}\n[consent]\nemail_channel_id = 1\nsms_channel_id = 2\n[consent.source_of_truth]\nemail = \"latest\"\nsms = \"latest\"\n",
        tests::HISTORICAL_RULES
    );
    options.ingest_port = Some(ingest_port);
    options.ingest_env.push((
        "TILLSTREAM__ITERABLE__SECRETS".into(),
        format!("[\"{ITERABLE_SECRET}\"]"),
    ));
    let hooks = &mut options.sim.system_webhooks;
    hooks.url = Some(format!(
        "http://127.0.0.1:{ingest_port}/webhooks/iterable/{shop}"
    ));
    hooks.auth_header = "X-Tillstream-Webhook-Secret".into();
    hooks.auth_value = Some(iterable_sim::Secret(ITERABLE_SECRET.into()));
    let stack = Stack::start(options).await.unwrap();
    admin.set_customer_webhook(shopify_sim::FinishWebhook {
        url: stack.webhook_url(),
        secret: SECRET.into(),
    });
    let mut writer = start_writer(
        &stack,
        &format!("{}/admin/api/{{version}}/graphql.json", admin.base_url),
        &shop,
    );

    // The store's history through ingest; then someone subscribed to email on both sides.
    tests::send_all(&stack.webhook_url(), sc.deliveries.clone(), 0.0)
        .await
        .unwrap();
    stack.wait_drained(Duration::from_secs(120)).await.unwrap();
    let email_state = |id: u64| {
        admin.customer(id).map(|c| {
            c["emailMarketingConsent"]["marketingState"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
    };
    let profiles = stack.sim_state().profiles(&iterable_sim::Filter::default());
    let id: u64 = profiles
        .iter()
        .filter(|p| !p.unsubscribed_channel_ids.contains(&1))
        .filter_map(|p| p.user_id.as_deref()?.parse().ok())
        .find(|id| email_state(*id).as_deref() == Some("SUBSCRIBED"))
        .expect("a customer subscribed to email in both simulators");
    assert_eq!(admin.customer(id).unwrap()["consentMutationsApplied"], 0);

    // The click. Shopify's echo is the consent webhook shopify-sim sends after the mutation.
    let echoes = || async {
        let text = get_ok(&format!("{}/metrics", lock(&stack.ingest).url())).await?;
        Some(
            prom_samples(&text, "tillstream_ingest_requests_total")
                .iter()
                .filter(|(k, _)| k.contains("customers_email_marketing_consent/update"))
                .map(|(_, v)| v)
                .sum::<f64>(),
        )
    };
    let echoes_before = echoes().await.unwrap();
    let sim = format!("http://{}", stack.sim.addr());
    let r = reqwest::Client::new()
        .post(format!("{sim}/_sim/simulate/unsubscribeClick"))
        .json(&json!({"userId": id.to_string()}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    wait_until(
        "shopify-sim shows the customer unsubscribed",
        Duration::from_secs(30),
        || async { (email_state(id).as_deref() == Some("UNSUBSCRIBED")).then_some(()) },
    )
    .await
    .unwrap();
    wait_until(
        "Shopify's echo at ingest",
        Duration::from_secs(30),
        || async { (echoes().await? > echoes_before).then_some(()) },
    )
    .await
    .unwrap();
    stack.wait_drained(Duration::from_secs(60)).await.unwrap();

    // After the echo: one mutation, still unsubscribed on both sides, and the processor agrees.
    let customer = admin.customer(id).unwrap();
    assert_eq!(customer["consentMutationsApplied"], 1, "{customer}");
    assert_eq!(email_state(id).as_deref(), Some("UNSUBSCRIBED"));
    let profile = stack.sim_state().profiles(&iterable_sim::Filter {
        user_id: Some(id.to_string()),
        ..Default::default()
    });
    assert!(
        profile
            .iter()
            .all(|p| p.unsubscribed_channel_ids.contains(&1)),
        "the echo re-subscribed the user in iterable-sim: {:?}",
        profile
            .iter()
            .map(|p| &p.unsubscribed_channel_ids)
            .collect::<Vec<_>>()
    );
    let url = format!("{}/customers/{shop}/c/{id}", lock(&stack.processor).url());
    let view: Value = serde_json::from_str(&get_ok(&url).await.unwrap()).unwrap();
    assert_eq!(
        view["customer"]["consent"]["email"]["state"], "unsubscribed",
        "{view}"
    );

    writer.terminate();
    stack.shutdown().await;
}
