//! System webhooks against a small receiving server: events fired by API state changes and by
//! simulated user actions, their bodies, the auth header, retries on non-2xx, giving up.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{Sim, config_without_limits, eventually};
use iterable_sim::{DeliveryState, Secret, SimConfig, WebhookView};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(10);

/// What the receiver saw, and how many more requests it answers 503.
#[derive(Default)]
struct Seen {
    bodies: Vec<Value>,
    auth: Vec<Option<String>>,
    fail_next: usize,
}

type Shared = Arc<Mutex<Seen>>;

async fn receive(State(s): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let mut seen = s.lock().unwrap();
    if seen.fail_next > 0 {
        seen.fail_next -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    seen.bodies.push(serde_json::from_str(&body).unwrap());
    seen.auth.push(
        headers
            .get("x-webhook-secret")
            .map(|v| v.to_str().unwrap().to_string()),
    );
    StatusCode::OK
}

/// Starts a receiver; returns its URL and what it saw.
async fn receiver(fail_first: usize) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(Seen {
        fail_next: fail_first,
        ..Seen::default()
    }));
    let app = axum::Router::new()
        .route("/iterable", axum::routing::post(receive))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/iterable", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

fn config(url: &str, max_retries: u32) -> SimConfig {
    let mut c = config_without_limits();
    c.system_webhooks.url = Some(url.to_string());
    c.system_webhooks.auth_header = "X-Webhook-Secret".into();
    c.system_webhooks.auth_value = Some(Secret("s3cret".into()));
    c.system_webhooks.max_retries = max_retries;
    c.system_webhooks.backoff_base_ms = 5;
    c
}

/// Waits until the receiver has at least `n` bodies; returns them.
async fn bodies(seen: &Shared, n: usize) -> Vec<Value> {
    eventually(DEADLINE, || async {
        let s = seen.lock().unwrap();
        (s.bodies.len() >= n).then(|| s.bodies.clone())
    })
    .await
}

async fn create_user(sim: &Sim, email: &str) {
    let r = sim
        .post(
            "/api/users/update",
            json!({"email": email, "userId": "u-1", "dataFields": {"phoneNumber": "+15145550199"}}),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn api_subscription_changes_fire_webhooks_with_auth_and_retries() {
    let (url, seen) = receiver(2).await;
    let sim = Sim::start(config(&url, 8)).await;
    create_user(&sim, "ann@example.com").await;

    let r = sim
        .post(
            "/api/users/updateSubscriptions",
            json!({"email": "ann@example.com", "unsubscribedChannelIds": [1]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let got = bodies(&seen, 1).await;
    assert_eq!(got[0]["eventName"], "emailUnSubscribe");
    assert_eq!(got[0]["email"], "ann@example.com");
    assert_eq!(got[0]["userId"], "u-1");
    assert_eq!(got[0]["dataFields"]["channelIds"], json!([1]));
    assert_eq!(got[0]["dataFields"]["unsubSource"], "API");
    let created = got[0]["dataFields"]["createdAt"].as_str().unwrap();
    assert!(
        created.ends_with(" +00:00") && created.len() == 26,
        "{created}"
    );

    // Same state again: no change, no webhook. Then a resubscribe and a list subscribe.
    sim.post(
        "/api/users/updateSubscriptions",
        json!({"email": "ann@example.com", "unsubscribedChannelIds": [1]}),
    )
    .await;
    sim.post(
        "/api/users/updateSubscriptions",
        json!({"email": "ann@example.com", "unsubscribedChannelIds": []}),
    )
    .await;
    sim.post(
        "/api/lists/subscribe",
        json!({"listId": 2, "subscribers": [{"email": "ann@example.com"}]}),
    )
    .await;
    sim.post(
        "/api/lists/unsubscribe",
        json!({"listId": 2, "subscribers": [{"email": "ann@example.com"}], "campaignId": 77}),
    )
    .await;
    let got = bodies(&seen, 4).await;
    let names: Vec<&str> = got
        .iter()
        .map(|b| b["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "emailUnSubscribe",
            "emailSubscribe",
            "emailSubscribe",
            "emailUnSubscribe"
        ]
    );
    assert_eq!(got[1]["dataFields"]["channelIds"], json!([1]));
    assert_eq!(got[2]["dataFields"]["emailListIds"], json!([2]));
    assert_eq!(got[3]["dataFields"]["emailListIds"], json!([2]));
    assert_eq!(got[3]["dataFields"]["campaignId"], 77);
    assert!(
        seen.lock()
            .unwrap()
            .auth
            .iter()
            .all(|a| a.as_deref() == Some("s3cret"))
    );

    // The first event needed three attempts (two 503s), all with identical bodies.
    let log: Vec<WebhookView> =
        serde_json::from_value(sim.inspect("/_sim/webhooks").await).unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].attempts, 3);
    assert_eq!(log[0].body, got[0]);
    assert!(log.iter().all(|v| v.state == DeliveryState::Delivered));
    // The secret never shows in the served config.
    let cfg = sim.inspect("/_sim/config").await;
    assert_eq!(cfg["system_webhooks"]["auth_value"], "<redacted>");
}

#[tokio::test]
async fn simulated_user_actions_change_state_and_fire_webhooks() {
    let (url, seen) = receiver(0).await;
    let sim = Sim::start(config(&url, 8)).await;
    create_user(&sim, "bo@example.com").await;

    let r = sim
        .post(
            "/_sim/simulate/unsubscribeClick",
            json!({"email": "bo@example.com", "campaignId": 12}),
        )
        .await;
    assert_eq!(r.status, 200);
    let got = bodies(&seen, 2).await;
    assert_eq!(got[0]["eventName"], "hostedUnsubscribeClick");
    assert_eq!(got[1]["eventName"], "emailUnSubscribe");
    assert_eq!(got[1]["dataFields"]["unsubSource"], "EmailLink");
    assert_eq!(got[1]["dataFields"]["campaignId"], 12);
    assert_eq!(
        got[0]["dataFields"]["messageId"],
        got[1]["dataFields"]["messageId"]
    );
    let profile = &sim.inspect("/_sim/profiles?email=bo@example.com").await[0];
    assert_eq!(profile["unsubscribedChannelIds"], json!([1]));

    // STOP reply: smsReceived with the text and the user's number; SMS channel unsubscribed.
    sim.post("/_sim/simulate/smsReply", json!({"userId": "u-1"}))
        .await;
    let got = bodies(&seen, 3).await;
    assert_eq!(got[2]["eventName"], "smsReceived");
    assert_eq!(got[2]["dataFields"]["text"], "STOP");
    assert_eq!(got[2]["dataFields"]["fromPhoneNumber"], "+15145550199");
    let profile = &sim.inspect("/_sim/profiles?email=bo@example.com").await[0];
    assert_eq!(profile["unsubscribedChannelIds"], json!([1, 2]));

    // A non-STOP reply changes nothing.
    sim.post(
        "/_sim/simulate/smsReply",
        json!({"email": "bo@example.com", "text": "hello"}),
    )
    .await;
    sim.post(
        "/_sim/simulate/complaint",
        json!({"email": "bo@example.com"}),
    )
    .await;
    sim.post("/_sim/simulate/bounce", json!({"email": "bo@example.com"}))
        .await;
    sim.post(
        "/_sim/simulate/subscribe",
        json!({"email": "bo@example.com"}),
    )
    .await;
    let got = bodies(&seen, 8).await;
    let names: Vec<&str> = got[3..]
        .iter()
        .map(|b| b["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "smsReceived",
            "emailComplaint",
            "emailUnSubscribe",
            "emailBounce",
            "emailSubscribe"
        ]
    );
    assert_eq!(got[5]["dataFields"]["unsubSource"], "Complaint");
    assert_eq!(got[6]["dataFields"]["recipientState"], "HardBounce");
    let profile = &sim.inspect("/_sim/profiles?email=bo@example.com").await[0];
    assert_eq!(profile["unsubscribedChannelIds"], json!([2]));

    // Unknown users and actions are refused; raw bodies go out as they are.
    let r = sim
        .post(
            "/_sim/simulate/complaint",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = sim.post("/_sim/simulate/dance", json!({})).await;
    assert_eq!(r.status, 404);
    let raw = json!({"email": "bo@example.com", "eventName": "emailOpen", "dataFields": {"x": 1}});
    sim.post("/_sim/webhooks/send", raw.clone()).await;
    let got = bodies(&seen, 9).await;
    assert_eq!(got[8], raw);
}

#[tokio::test]
async fn gives_up_after_max_retries_and_records_unsent_without_url() {
    let (url, seen) = receiver(usize::MAX).await;
    let sim = Sim::start(config(&url, 2)).await;
    create_user(&sim, "cy@example.com").await;
    sim.post(
        "/_sim/simulate/complaint",
        json!({"email": "cy@example.com"}),
    )
    .await;
    let log = eventually(DEADLINE, || async {
        let log = sim.handle.state().webhooks();
        log.iter()
            .all(|v| v.state == DeliveryState::Failed)
            .then_some(log)
    })
    .await;
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|v| v.attempts == 3 && v.last_status == Some(503))
    );
    assert!(seen.lock().unwrap().bodies.is_empty());

    // No URL: events are recorded, never sent.
    let quiet = Sim::start(config_without_limits()).await;
    create_user(&quiet, "di@example.com").await;
    quiet
        .post(
            "/api/users/updateSubscriptions",
            json!({"email": "di@example.com", "unsubscribedChannelIds": [1]}),
        )
        .await;
    let log = quiet.handle.state().webhooks();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].state, DeliveryState::Unsent);
    assert_eq!(log[0].attempts, 0);
}
