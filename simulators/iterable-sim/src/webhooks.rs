//! System webhooks (reference §10b): subscription events in Iterable's shape, recorded and
//! POSTed to the configured receiver with the configured auth header, retried on non-2xx.
//!
//! Events come from two places: state changes made through the API (`updateSubscriptions`,
//! `lists/*`; Iterable fires webhooks for those too, `unsubSource: "API"`) and the inspection
//! API's simulated user actions (`POST /_sim/simulate/...`). One worker task sends them in
//! order, one at a time, so a receiver sees a user's unsubscribe before a later resubscribe.
//! Every event is recorded with its delivery state for `GET /_sim/webhooks`.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SystemWebhookConfig;
use crate::store::profiles::Profile;
use crate::store::{format_ts, generate_id, now_secs};

/// Event names the simulator produces itself (any other can be sent raw).
pub(crate) const EMAIL_UNSUBSCRIBE: &str = "emailUnSubscribe";
pub(crate) const EMAIL_SUBSCRIBE: &str = "emailSubscribe";
pub(crate) const EMAIL_COMPLAINT: &str = "emailComplaint";
pub(crate) const EMAIL_BOUNCE: &str = "emailBounce";
pub(crate) const SMS_RECEIVED: &str = "smsReceived";
pub(crate) const HOSTED_UNSUBSCRIBE_CLICK: &str = "hostedUnsubscribeClick";

/// One system webhook body: `{"email","userId","eventName","dataFields"}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SystemEvent {
    pub(crate) email: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) event_name: String,
    pub(crate) data_fields: Map<String, Value>,
}

impl SystemEvent {
    /// An event about `profile` with `createdAt` now and the user's identifiers repeated in
    /// `dataFields`, as Iterable's bodies carry them; `fields` are added on top.
    pub(crate) fn about(profile: &Profile, event_name: &str, fields: Value) -> Self {
        let mut data = Map::new();
        data.insert("createdAt".into(), Value::String(format_ts(now_secs())));
        if let Some(e) = &profile.email {
            data.insert("email".into(), Value::String(e.clone()));
        }
        if let Some(u) = &profile.user_id {
            data.insert("userId".into(), Value::String(u.clone()));
        }
        if let Value::Object(extra) = fields {
            data.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
        }
        SystemEvent {
            email: profile.email.clone(),
            user_id: profile.user_id.clone(),
            event_name: event_name.to_string(),
            data_fields: data,
        }
    }

    /// `emailUnSubscribe` / `emailSubscribe` for a subscription change.
    pub(crate) fn subscription(
        profile: &Profile,
        subscribe: bool,
        channel_ids: &[i64],
        list_ids: &[u64],
        source: &str,
    ) -> Self {
        let name = if subscribe {
            EMAIL_SUBSCRIBE
        } else {
            EMAIL_UNSUBSCRIBE
        };
        let source_key = if subscribe {
            "subscribeSource"
        } else {
            "unsubSource"
        };
        SystemEvent::about(
            profile,
            name,
            json!({"channelIds": channel_ids, "emailListIds": list_ids, source_key: source}),
        )
    }

    pub(crate) fn body(&self) -> Value {
        json!({
            "email": self.email,
            "userId": self.user_id,
            "eventName": self.event_name,
            "dataFields": self.data_fields,
        })
    }
}

/// Where a recorded event stands. Transitions (only in [`Webhooks::attempted`]):
/// `Pending → Delivered`, `Pending → Pending` (a failed attempt with retries left),
/// `Pending → Failed`. `Unsent` is final from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryState {
    /// No URL configured, or the event name is not in `system_webhooks.events`.
    Unsent,
    /// Queued or being retried.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt failed.
    Failed,
}

/// A recorded system webhook (served by `GET /_sim/webhooks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    /// Order of emission, from 1.
    pub seq: u64,
    /// `eventName`.
    pub event_name: String,
    /// `email` of the body.
    pub email: Option<String>,
    /// `userId` of the body.
    pub user_id: Option<String>,
    /// The exact JSON sent.
    pub body: Value,
    /// Delivery state.
    pub state: DeliveryState,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Status of the last attempt (`None`: no answer, e.g. connection refused).
    pub last_status: Option<u16>,
    /// Transport error of the last attempt.
    pub last_error: Option<String>,
}

/// Recorder and queue of system webhooks.
pub(crate) struct Webhooks {
    config: SystemWebhookConfig,
    log: Mutex<Vec<WebhookView>>,
    tx: mpsc::UnboundedSender<u64>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<u64>>>,
}

impl Webhooks {
    pub(crate) fn new(config: SystemWebhookConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Webhooks {
            config,
            log: Mutex::new(Vec::new()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<WebhookView>> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `events` and queues those that are to be sent; returns their sequence numbers.
    pub(crate) fn emit(&self, events: Vec<SystemEvent>) -> Vec<u64> {
        events
            .into_iter()
            .map(|e| {
                let body = e.body();
                self.record(e, body)
            })
            .collect()
    }

    /// Records and queues an event whose exact body is given (`POST /_sim/webhooks/send`).
    pub(crate) fn emit_raw(&self, event: SystemEvent, body: Value) -> Vec<u64> {
        vec![self.record(event, body)]
    }

    fn record(&self, e: SystemEvent, body: Value) -> u64 {
        let mut log = self.log();
        {
            let seq = log.last().map_or(1, |l| l.seq + 1);
            let wanted =
                self.config.events.is_empty() || self.config.events.contains(&e.event_name);
            let send = self.config.url.is_some() && wanted;
            log.push(WebhookView {
                seq,
                event_name: e.event_name.clone(),
                email: e.email.clone(),
                user_id: e.user_id.clone(),
                body,
                state: if send {
                    DeliveryState::Pending
                } else {
                    DeliveryState::Unsent
                },
                attempts: 0,
                last_status: None,
                last_error: None,
            });
            if send {
                // The receiver lives as long as the worker; without one (a state never
                // served) the event simply stays pending.
                let _ = self.tx.send(seq);
            }
            seq
        }
    }

    /// Recorded events, oldest first.
    pub(crate) fn views(&self) -> Vec<WebhookView> {
        self.log().clone()
    }

    /// Forgets recorded events (queued ones are then skipped by the worker).
    pub(crate) fn reset(&self) {
        self.log().clear();
    }

    /// The one place delivery states change: an attempt of `seq` ended with `outcome`.
    fn attempted(&self, seq: u64, outcome: &Result<u16, String>, retries_left: bool) {
        let mut log = self.log();
        let Some(v) = log.iter_mut().find(|v| v.seq == seq) else {
            return;
        };
        v.attempts += 1;
        let ok = match outcome {
            Ok(status) => {
                v.last_status = Some(*status);
                v.last_error = None;
                (200..300).contains(status)
            }
            Err(e) => {
                v.last_status = None;
                v.last_error = Some(e.clone());
                false
            }
        };
        v.state = match (ok, retries_left) {
            (true, _) => DeliveryState::Delivered,
            (false, true) => DeliveryState::Pending,
            (false, false) => DeliveryState::Failed,
        };
    }

    fn body_of(&self, seq: u64) -> Option<Value> {
        self.log()
            .iter()
            .find(|v| v.seq == seq)
            .map(|v| v.body.clone())
    }

    /// Starts the sending task (once; later calls do nothing). It ends at `shutdown`.
    pub(crate) fn start(self: &std::sync::Arc<Self>, shutdown: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let Some(url) = self.config.url.clone() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(Duration::from_millis(this.config.timeout_ms))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the system webhook client");
                    return;
                }
            };
            loop {
                let seq = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = rx.recv() => match s { Some(s) => s, None => return },
                };
                if !this.deliver(&client, &url, seq, &shutdown).await {
                    return;
                }
            }
        });
    }

    /// Sends one event with retries; false when shut down meanwhile.
    async fn deliver(
        &self,
        client: &reqwest::Client,
        url: &str,
        seq: u64,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(body) = self.body_of(seq) else {
            return true;
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let cfg = &self.config;
        for attempt in 0..=cfg.max_retries {
            let mut req = client
                .post(url)
                .header("content-type", "application/json")
                .body(bytes.clone());
            if let Some(v) = &cfg.auth_value {
                req = req.header(cfg.auth_header.as_str(), v.expose());
            }
            let outcome = req
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string());
            let retries_left = attempt < cfg.max_retries;
            self.attempted(seq, &outcome, retries_left);
            if matches!(outcome, Ok(s) if (200..300).contains(&s)) || !retries_left {
                return true;
            }
            let backoff = cfg
                .backoff_base_ms
                .saturating_mul(1u64 << attempt.min(20))
                .min(cfg.backoff_max_ms);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
            }
        }
        true
    }
}

/// A unique id for events about a message (`messageId`, used by receivers to deduplicate).
pub(crate) fn message_id() -> String {
    generate_id()
}
