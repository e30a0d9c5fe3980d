//! Simulated user actions (`POST /_sim/simulate/{action}`) and the system webhook log.
//!
//! Each action changes the user's subscription state the way Iterable does when a recipient
//! acts, then emits the system webhooks Iterable would send (reference §10b):
//!
//! | Action | State change | Webhooks |
//! |---|---|---|
//! | `unsubscribeClick` | `channelId` (default: the email channel) added to `unsubscribedChannelIds`, or `listId` left | `hostedUnsubscribeClick`, `emailUnSubscribe` (`unsubSource: EmailLink`) |
//! | `complaint` | email channel unsubscribed | `emailComplaint`, `emailUnSubscribe` (`unsubSource: Complaint`) |
//! | `bounce` | none | `emailBounce` (`recipientState: HardBounce`, or `SoftBounce` with `"hard": false`) |
//! | `smsReply` | a STOP keyword (`text`, default `STOP`) unsubscribes the SMS channel | `smsReceived` (`text`, `fromPhoneNumber`, `toPhoneNumber`) |
//! | `subscribe` | `channelId` (default: email) removed from `unsubscribedChannelIds`, or `listId` joined | `emailSubscribe` (`subscribeSource: Manual`) |
//!
//! `POST /_sim/webhooks/send` sends any body as is (other event names, malformed bodies);
//! `GET /_sim/webhooks[?eventName=&email=&userId=]` lists what was emitted and its delivery.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::json_response;
use crate::state::SimState;
use crate::store::now_secs;
use crate::webhooks::{
    EMAIL_BOUNCE, EMAIL_COMPLAINT, EMAIL_SUBSCRIBE, EMAIL_UNSUBSCRIBE, HOSTED_UNSUBSCRIBE_CLICK,
    SMS_RECEIVED, SystemEvent, WebhookView, message_id,
};

/// SMS keywords that opt a number out (carrier-standard list).
const STOP_KEYWORDS: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// Number the simulated project sends SMS from (the `toPhoneNumber` of replies).
const PROJECT_SMS_NUMBER: &str = "+15555550100";

/// What a simulated action names.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionRequest {
    email: Option<String>,
    user_id: Option<String>,
    /// Project id; default the first project.
    project: Option<u64>,
    campaign_id: Option<i64>,
    template_id: Option<i64>,
    channel_id: Option<i64>,
    list_id: Option<u64>,
    /// `smsReply`: the message text.
    text: Option<String>,
    /// `smsReply`: the sender; default the profile's `phoneNumber` field.
    from_phone_number: Option<String>,
    /// `bounce`: hard (default) or soft.
    hard: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    UnsubscribeClick,
    Complaint,
    Bounce,
    SmsReply,
    Subscribe,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "unsubscribeClick" => Action::UnsubscribeClick,
            "complaint" => Action::Complaint,
            "bounce" => Action::Bounce,
            "smsReply" => Action::SmsReply,
            "subscribe" => Action::Subscribe,
            _ => return None,
        })
    }
}

/// An error answer, boxed because results carry it through several `?`s.
fn error(status: StatusCode, msg: String) -> Box<Response> {
    Box::new(json_response(status, &json!({"error": msg})))
}

async fn simulate(
    State(s): State<SimState>,
    Path(action): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return *error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown action {action:?} (unsubscribeClick, complaint, bounce, smsReply, subscribe)"
            ),
        );
    };
    let req: ActionRequest = if body.is_empty() {
        ActionRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return *error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
        }
    };
    match apply(&s, action, &req) {
        Ok(events) => {
            let names: Vec<String> = events.iter().map(|e| e.event_name.clone()).collect();
            let seqs = s.inner.webhooks.emit(events);
            Json(json!({"ok": true, "events": names, "seqs": seqs})).into_response()
        }
        Err(resp) => *resp,
    }
}

/// Applies `action` to the named user; returns the webhooks to emit.
fn apply(
    s: &SimState,
    action: Action,
    req: &ActionRequest,
) -> Result<Vec<SystemEvent>, Box<Response>> {
    let index = match req.project {
        None => 0,
        Some(id) => s
            .config()
            .projects
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no project {id}")))?,
    };
    let mut ps = s
        .inner
        .store
        .project(index)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no project".into()))?;
    let id = match (&req.email, &req.user_id) {
        (Some(e), _) => ps.profiles.find_email(e),
        (None, Some(u)) => ps.profiles.find_user_id(u),
        (None, None) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "email or userId is required".into(),
            ));
        }
    };
    let (email_channel, sms_channel) = (ps.email_channel_id, ps.sms_channel_id);
    let Some(p) = id.and_then(|id| ps.profiles.get_mut(id)) else {
        return Err(error(StatusCode::NOT_FOUND, "no such user".into()));
    };
    let campaign = json!({"campaignId": req.campaign_id, "templateId": req.template_id});
    let about = |p: &crate::store::profiles::Profile, name: &str, extra: Value| {
        let mut e = SystemEvent::about(p, name, campaign.clone());
        if let Value::Object(m) = extra {
            e.data_fields
                .extend(m.into_iter().filter(|(_, v)| !v.is_null()));
        }
        e
    };
    let mut events = Vec::new();
    let channel = req.channel_id.unwrap_or(email_channel);
    match action {
        Action::UnsubscribeClick => {
            let msg = message_id();
            events.push(about(
                p,
                HOSTED_UNSUBSCRIBE_CLICK,
                json!({"messageId": msg, "url": format!("https://links.iterable.com/u/click?_m={msg}")}),
            ));
            let (channels, lists) = leave(p, req.list_id, channel);
            events.push(about(
                p,
                EMAIL_UNSUBSCRIBE,
                json!({"messageId": msg, "channelIds": channels, "emailListIds": lists, "unsubSource": "EmailLink"}),
            ));
        }
        Action::Complaint => {
            let msg = message_id();
            events.push(about(p, EMAIL_COMPLAINT, json!({"messageId": msg})));
            let (channels, lists) = leave(p, None, email_channel);
            events.push(about(
                p,
                EMAIL_UNSUBSCRIBE,
                json!({"messageId": msg, "channelIds": channels, "emailListIds": lists, "unsubSource": "Complaint"}),
            ));
        }
        Action::Bounce => {
            let hard = req.hard.unwrap_or(true);
            events.push(about(
                p,
                EMAIL_BOUNCE,
                json!({
                    "messageId": message_id(),
                    "recipientState": if hard { "HardBounce" } else { "SoftBounce" },
                    "bounceMessage": if hard { "550 5.1.1 The email account does not exist" } else { "452 4.2.2 Mailbox full" },
                }),
            ));
        }
        Action::SmsReply => {
            let text = req.text.clone().unwrap_or_else(|| "STOP".into());
            let from = req.from_phone_number.clone().or_else(|| {
                p.data
                    .get("phoneNumber")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            let stop = STOP_KEYWORDS
                .iter()
                .any(|k| text.trim().eq_ignore_ascii_case(k));
            if stop && !p.unsubscribed_channel_ids.contains(&sms_channel) {
                p.unsubscribed_channel_ids.push(sms_channel);
                p.updated_at = now_secs();
            }
            events.push(about(
                p,
                SMS_RECEIVED,
                json!({"messageId": message_id(), "text": text, "fromPhoneNumber": from, "toPhoneNumber": PROJECT_SMS_NUMBER}),
            ));
        }
        Action::Subscribe => {
            let (channels, lists) = match req.list_id {
                Some(l) => {
                    p.lists.insert(l);
                    (Vec::new(), vec![l])
                }
                None => {
                    p.unsubscribed_channel_ids.retain(|c| *c != channel);
                    (vec![channel], Vec::new())
                }
            };
            p.updated_at = now_secs();
            events.push(about(
                p,
                EMAIL_SUBSCRIBE,
                json!({"channelIds": channels, "emailListIds": lists, "subscribeSource": "Manual"}),
            ));
        }
    }
    Ok(events)
}

/// Leaves `list` if given, else unsubscribes `channel`; returns (channelIds, emailListIds).
fn leave(
    p: &mut crate::store::profiles::Profile,
    list: Option<u64>,
    channel: i64,
) -> (Vec<i64>, Vec<u64>) {
    p.updated_at = now_secs();
    match list {
        Some(l) => {
            p.lists.remove(&l);
            (Vec::new(), vec![l])
        }
        None => {
            if !p.unsubscribed_channel_ids.contains(&channel) {
                p.unsubscribed_channel_ids.push(channel);
            }
            (vec![channel], Vec::new())
        }
    }
}

/// `POST /_sim/webhooks/send`: a raw body, sent as is (its `eventName`, `email` and `userId`
/// are read only for the log).
async fn send_raw(State(s): State<SimState>, Json(body): Json<Value>) -> Response {
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let event = SystemEvent {
        email: text("email"),
        user_id: text("userId"),
        event_name: text("eventName").unwrap_or_default(),
        data_fields: body
            .get("dataFields")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    let seqs = s.inner.webhooks.emit_raw(event, body);
    Json(json!({"ok": true, "seqs": seqs})).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogFilter {
    event_name: Option<String>,
    email: Option<String>,
    user_id: Option<String>,
}

async fn log(State(s): State<SimState>, Query(f): Query<LogFilter>) -> Json<Vec<WebhookView>> {
    Json(
        s.webhooks()
            .into_iter()
            .filter(|v| f.event_name.as_ref().is_none_or(|n| *n == v.event_name))
            .filter(|v| f.email.is_none() || v.email == f.email)
            .filter(|v| f.user_id.is_none() || v.user_id == f.user_id)
            .collect(),
    )
}

/// The simulation routes (merged into the `/_sim` router).
pub(crate) fn router() -> Router<SimState> {
    Router::new()
        .route("/_sim/simulate/{action}", post(simulate))
        .route("/_sim/webhooks", get(log))
        .route("/_sim/webhooks/send", post(send_raw))
}
