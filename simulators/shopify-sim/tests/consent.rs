//! Admin API consent mutations: answers, userErrors, cost and throttling, the customer's new
//! state (inspection and bulk backfill), and the signed webhooks Shopify sends back.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use shopify_sim::{AdminOptions, AdminServer, FinishWebhook, ScenarioConfig, spawn_admin, verify};

const SECRET: &str = "consent-test-secret";
const TOKEN: &str = "shpat_fake_admin_token";

type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn receive(State(s): State<Seen>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    s.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::OK
}

async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/webhooks/shopify", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/shopify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn scenario() -> ScenarioConfig {
    ScenarioConfig {
        customers: 40,
        days: 60,
        seed: 7,
        ..ScenarioConfig::default()
    }
}

/// A registered, unredacted customer with (true) or without (false) a phone.
fn customer(cfg: &ScenarioConfig, with_phone: bool) -> u64 {
    let s = shopify_sim::generate(cfg).unwrap();
    s.expected
        .customers
        .values()
        .find(|c| !c.guest && !c.redacted && c.sms_consent.is_some() == with_phone)
        .and_then(|c| c.customer_id)
        .unwrap()
}

async fn gql(server: &AdminServer, query: &str, vars: Value) -> Value {
    reqwest::Client::new()
        .post(format!(
            "{}/admin/api/2026-07/graphql.json",
            server.base_url
        ))
        .header("X-Shopify-Access-Token", TOKEN)
        .json(&json!({"query": query, "variables": vars}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const EMAIL: &str = "mutation($input: CustomerEmailMarketingConsentUpdateInput!) { customerEmailMarketingConsentUpdate(input: $input) { customer { id emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } } userErrors { field message code } } }";
const SMS: &str = "mutation($input: CustomerSmsMarketingConsentUpdateInput!) { customerSmsMarketingConsentUpdate(input: $input) { customer { id smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt consentCollectedFrom } } userErrors { field message code } } }";

fn email_input(id: u64, state: &str) -> Value {
    json!({"input": {"customerId": format!("gid://shopify/Customer/{id}"),
        "emailMarketingConsent": {"marketingState": state, "marketingOptInLevel": "SINGLE_OPT_IN",
            "consentUpdatedAt": "2026-01-20T10:00:00Z"}}})
}

/// Polls until the receiver holds `n` deliveries.
async fn deliveries(seen: &Seen, n: usize) -> Vec<(HeaderMap, Vec<u8>)> {
    let start = Instant::now();
    loop {
        {
            let s = seen.lock().unwrap();
            if s.len() >= n {
                return s.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{n} webhooks not received"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn email_unsubscribe_updates_the_customer_and_sends_signed_webhooks() {
    let cfg = scenario();
    let id = customer(&cfg, true);
    let server = spawn_admin(&cfg, AdminOptions::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let (url, seen) = receiver().await;
    server.set_customer_webhook(FinishWebhook {
        url,
        secret: SECRET.into(),
    });

    let r = gql(&server, EMAIL, email_input(id, "UNSUBSCRIBED")).await;
    let out = &r["data"]["customerEmailMarketingConsentUpdate"];
    assert_eq!(out["userErrors"], json!([]));
    assert_eq!(
        out["customer"]["id"],
        format!("gid://shopify/Customer/{id}")
    );
    assert_eq!(
        out["customer"]["emailMarketingConsent"],
        json!({"marketingState": "UNSUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
               "consentUpdatedAt": "2026-01-20T10:00:00Z"})
    );
    let cost = &r["extensions"]["cost"];
    assert_eq!(cost["requestedQueryCost"], 10.0);
    assert_eq!(cost["actualQueryCost"], 10.0);
    assert_eq!(cost["throttleStatus"]["maximumAvailable"], 1000.0);

    // The consent topic and customers/update: signed, one event id, two webhook ids.
    let got = deliveries(&seen, 2).await;
    let mut topics: Vec<&str> = got
        .iter()
        .map(|(h, _)| header(h, "x-shopify-topic"))
        .collect();
    topics.sort_unstable();
    assert_eq!(
        topics,
        [
            "customers/update",
            "customers_email_marketing_consent/update"
        ]
    );
    for (h, body) in &got {
        assert!(verify(
            body,
            SECRET.as_bytes(),
            header(h, "x-shopify-hmac-sha256")
        ));
        assert_eq!(header(h, "x-shopify-shop-domain"), cfg.shop_domain);
        assert_eq!(header(h, "x-shopify-api-version"), "2026-07");
    }
    assert_eq!(
        header(&got[0].0, "x-shopify-event-id"),
        header(&got[1].0, "x-shopify-event-id")
    );
    assert_ne!(
        header(&got[0].0, "x-shopify-webhook-id"),
        header(&got[1].0, "x-shopify-webhook-id")
    );
    for (h, body) in &got {
        let v: Value = serde_json::from_slice(body).unwrap();
        if header(h, "x-shopify-topic") == "customers/update" {
            assert_eq!(v["id"], id);
            assert!(v.get("email_marketing_consent").is_none());
        } else {
            assert_eq!(v["customer_id"], id);
            assert_eq!(v["email_marketing_consent"]["state"], "unsubscribed");
            assert_eq!(
                v["email_marketing_consent"]["opt_in_level"],
                "single_opt_in"
            );
            assert!(
                v["email_marketing_consent"]["consent_updated_at"]
                    .as_str()
                    .unwrap()
                    .starts_with("2026-01-20T")
            );
        }
    }

    // Inspection, in process and over HTTP.
    let view = server.customer(id).unwrap();
    assert_eq!(
        view["emailMarketingConsent"]["marketingState"],
        "UNSUBSCRIBED"
    );
    assert_eq!(view["consentMutationsApplied"], 1);
    let http: Value = reqwest::get(format!("{}/_sim/customers/{id}", server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(http, view);

    // The same state again changes nothing and sends nothing.
    let r = gql(&server, EMAIL, email_input(id, "UNSUBSCRIBED")).await;
    assert_eq!(
        r["data"]["customerEmailMarketingConsentUpdate"]["userErrors"],
        json!([])
    );
    assert_eq!(server.customer(id).unwrap()["consentMutationsApplied"], 1);

    // SMS: STOP-style unsubscribe of a customer with a phone.
    let sms = json!({"input": {"customerId": format!("gid://shopify/Customer/{id}"),
        "smsMarketingConsent": {"marketingState": "UNSUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN"}}});
    let r = gql(&server, SMS, sms).await;
    let c = &r["data"]["customerSmsMarketingConsentUpdate"]["customer"]["smsMarketingConsent"];
    assert_eq!(c["marketingState"], "UNSUBSCRIBED");
    assert_eq!(c["consentCollectedFrom"], "OTHER");
    let got = deliveries(&seen, 4).await;
    let sms_hook = got
        .iter()
        .find(|(h, _)| header(h, "x-shopify-topic") == "customers_marketing_consent/update")
        .unwrap();
    let v: Value = serde_json::from_slice(&sms_hook.1).unwrap();
    assert_eq!(v["sms_marketing_consent"]["state"], "unsubscribed");

    // A bulk backfill afterwards sees the new state.
    let run = gql(
        &server,
        "mutation($query: String!) { bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message } } }",
        json!({"query": "{ customers { edges { node { id defaultEmailAddress { marketingState } } } } }"}),
    )
    .await;
    let op = run["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"].clone();
    let start = Instant::now();
    let file = loop {
        let r = gql(
            &server,
            "query($id: ID!) { bulkOperation(id: $id) { status url } }",
            json!({"id": op}),
        )
        .await;
        if r["data"]["bulkOperation"]["status"] == "COMPLETED" {
            break r["data"]["bulkOperation"]["url"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = reqwest::get(file).await.unwrap().text().await.unwrap();
    let line: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["id"] == format!("gid://shopify/Customer/{id}"))
        .unwrap();
    assert_eq!(
        line["defaultEmailAddress"]["marketingState"],
        "UNSUBSCRIBED"
    );
    assert_eq!(line["defaultPhoneNumber"]["marketingState"], "UNSUBSCRIBED");
}

#[tokio::test]
async fn user_errors_and_invalid_variables() {
    let cfg = scenario();
    let with_phone = customer(&cfg, true);
    let no_phone = customer(&cfg, false);
    let server = spawn_admin(&cfg, AdminOptions::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let errors = |r: &Value, root: &str| r["data"][root]["userErrors"].clone();

    let r = gql(&server, EMAIL, email_input(with_phone, "NOT_SUBSCRIBED")).await;
    let e = errors(&r, "customerEmailMarketingConsentUpdate");
    assert_eq!(e[0]["code"], "INCLUSION");
    assert_eq!(
        e[0]["field"],
        json!(["emailMarketingConsent", "marketingState"])
    );
    assert_eq!(
        r["data"]["customerEmailMarketingConsentUpdate"]["customer"],
        Value::Null
    );

    let r = gql(&server, EMAIL, email_input(1, "UNSUBSCRIBED")).await;
    let e = errors(&r, "customerEmailMarketingConsentUpdate");
    assert_eq!(e[0]["message"], "Customer not found");

    let r = gql(
        &server,
        SMS,
        json!({"input": {"customerId": format!("gid://shopify/Customer/{no_phone}"),
            "smsMarketingConsent": {"marketingState": "SUBSCRIBED"}}}),
    )
    .await;
    let e = errors(&r, "customerSmsMarketingConsentUpdate");
    assert_eq!(e[0]["code"], "MISSING_ARGUMENT");

    // Values outside the enums fail before the resolver: top-level errors, no data.
    let r = gql(&server, EMAIL, email_input(with_phone, "GONE")).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("marketingState")
    );
    assert!(r.get("data").is_none());
    let r = gql(&server, EMAIL, json!({})).await;
    assert!(r["errors"].is_array());

    // Nothing changed.
    assert_eq!(
        server.customer(with_phone).unwrap()["consentMutationsApplied"],
        0
    );
}

#[tokio::test]
async fn mutations_spend_the_cost_bucket_and_are_throttled() {
    let cfg = scenario();
    let id = customer(&cfg, true);
    let opts = AdminOptions {
        maximum_available: 25.0,
        restore_rate: 0.5,
        ..AdminOptions::default()
    };
    let server = spawn_admin(&cfg, opts, "127.0.0.1:0").await.unwrap();
    let states = ["UNSUBSCRIBED", "SUBSCRIBED", "UNSUBSCRIBED"];
    let mut answers = Vec::new();
    for s in states {
        answers.push(gql(&server, EMAIL, email_input(id, s)).await);
    }
    // 25 points hold two mutations of 10; the third is throttled and not applied.
    assert!(answers[0]["errors"].is_null() && answers[1]["errors"].is_null());
    let t = &answers[2];
    assert_eq!(t["errors"][0]["extensions"]["code"], "THROTTLED");
    assert_eq!(t["extensions"]["cost"]["actualQueryCost"], Value::Null);
    assert_eq!(t["extensions"]["cost"]["requestedQueryCost"], 10.0);
    assert!(
        t["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
            .as_f64()
            .unwrap()
            < 10.0
    );
    let view = server.customer(id).unwrap();
    assert_eq!(
        view["emailMarketingConsent"]["marketingState"],
        "SUBSCRIBED"
    );
    assert_eq!(view["consentMutationsApplied"], 2);
    assert_eq!(server.stats().throttled, 1);
}
