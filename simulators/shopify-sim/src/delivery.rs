//! Deliveries: webhook ids, event ids, trigger times, headers, and injected delivery faults.
//!
//! Turns the time-ordered actions into the stream a receiver sees: one delivery per
//! action, then at-least-once misbehaviour on top — identical duplicates, a second
//! subscription (new webhook id, same event id), stale retries of `orders/updated`
//! after a newer state, and local reordering.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::ScenarioConfig;
use crate::model::{Action, Subject, Topic};
use crate::payloads::{Ctx, render};
use crate::sign::sign;

/// Why a delivery exists (not sent on the wire; for tests and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// First delivery of an action to the primary subscription.
    Original,
    /// Identical re-delivery (same bytes, webhook id and event id) after the original.
    Duplicate,
    /// Delivery to a second subscription: same body and event id, new webhook id.
    SecondSubscription,
    /// Re-delivery of an older `orders/updated` after a newer state of the same order.
    StaleRetry,
}

/// One webhook delivery: what Shopify would POST, minus the signature (computed per
/// secret by [`Delivery::headers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `X-Shopify-Topic`, e.g. `orders/create`.
    pub topic: String,
    /// `X-Shopify-Shop-Domain`.
    pub shop_domain: String,
    /// `X-Shopify-API-Version` the body was serialised with.
    pub api_version: String,
    /// `X-Shopify-Webhook-Id`: unique per delivery, reused by retries and duplicates.
    pub webhook_id: String,
    /// `X-Shopify-Event-Id`: shared by all deliveries of one merchant action.
    pub event_id: String,
    /// `X-Shopify-Triggered-At`.
    pub triggered_at: DateTime<Utc>,
    /// `X-Shopify-Name` (subscription name), when set.
    pub name: Option<String>,
    /// Exact body bytes (these are what is signed). Base64 in JSON.
    #[serde(rename = "body_base64", with = "b64")]
    pub body: Vec<u8>,
    /// Why this delivery exists.
    pub kind: DeliveryKind,
}

impl Delivery {
    /// HTTP headers for this delivery, signed with the app secret `secret`.
    pub fn headers(&self, secret: &str) -> Vec<(String, String)> {
        let mut h = vec![
            ("X-Shopify-Topic".to_owned(), self.topic.clone()),
            (
                "X-Shopify-Hmac-Sha256".to_owned(),
                sign(&self.body, secret.as_bytes()),
            ),
            ("X-Shopify-Shop-Domain".to_owned(), self.shop_domain.clone()),
            ("X-Shopify-API-Version".to_owned(), self.api_version.clone()),
            ("X-Shopify-Webhook-Id".to_owned(), self.webhook_id.clone()),
            ("X-Shopify-Event-Id".to_owned(), self.event_id.clone()),
            (
                "X-Shopify-Triggered-At".to_owned(),
                format_triggered_at(self.triggered_at),
            ),
        ];
        if let Some(name) = &self.name {
            h.push(("X-Shopify-Name".to_owned(), name.clone()));
        }
        h.push(("Content-Type".to_owned(), "application/json".to_owned()));
        h
    }
}

/// `X-Shopify-Triggered-At` format: UTC, 6-digit fractional seconds, `Z`.
pub fn format_triggered_at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// UUID-v4-shaped id from the RNG (no uuid dependency needed for 16 random bytes).
pub(crate) fn uuid(rng: &mut ChaCha8Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Build the delivery stream from time-sorted actions.
pub(crate) fn deliveries(
    cfg: &ScenarioConfig,
    ctx: &Ctx<'_>,
    actions: &[Action],
    rng: &mut ChaCha8Rng,
) -> Vec<Delivery> {
    // One API version and event id per merchant action (group).
    let mut groups: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    let mut base: Vec<(Delivery, Option<u64>)> = Vec::with_capacity(actions.len());
    let max_delay = i64::from(cfg.faults.max_trigger_delay_ms) * 1000;
    for a in actions {
        let shared = cfg.faults.shared_event_id_across_topics;
        let (vi, event_id) = if shared {
            groups
                .entry(a.group)
                .or_insert_with(|| (rng.random_range(0..cfg.api_versions.len()), uuid(rng)))
                .clone()
        } else {
            (rng.random_range(0..cfg.api_versions.len()), uuid(rng))
        };
        let version = cfg.api_versions.get(vi).cloned().unwrap_or_default();
        let delay = Duration::microseconds(rng.random_range(1000..=max_delay.max(1000)));
        let body = render(ctx, a, &version);
        let order_id = match &a.subject {
            Subject::Order(o) if a.topic != Topic::OrdersDelete => Some(o.id),
            _ => None,
        };
        base.push((
            Delivery {
                topic: a.topic.as_str().to_owned(),
                shop_domain: cfg.shop_domain.clone(),
                api_version: version,
                webhook_id: uuid(rng),
                event_id,
                triggered_at: a.at.with_timezone(&Utc) + delay,
                name: None,
                body,
                kind: DeliveryKind::Original,
            },
            order_id,
        ));
    }
    // Shopify stamps trigger times in the order it emits; the stable sort keeps
    // same-instant actions in timeline order.
    base.sort_by_key(|(d, _)| d.triggered_at);
    inject_faults(cfg, base, rng)
}

fn inject_faults(
    cfg: &ScenarioConfig,
    base: Vec<(Delivery, Option<u64>)>,
    rng: &mut ChaCha8Rng,
) -> Vec<Delivery> {
    const SLOT: u64 = 1024;
    let f = &cfg.faults;
    let n = base.len() as u64;
    // (position, tie-break, delivery); positions are original index × SLOT plus an
    // offset so inserted copies land after the delivery they follow.
    let mut out: Vec<(u64, u64, Delivery)> = Vec::with_capacity(base.len() + base.len() / 8);
    let mut tie = 0u64;
    let mut push = |out: &mut Vec<(u64, u64, Delivery)>, pos: u64, d: Delivery| {
        tie += 1;
        out.push((pos, tie, d));
    };
    for (i, (d, order_id)) in base.iter().enumerate() {
        let i = i as u64;
        let shift = if f.reorder_window > 0 && rng.random::<f64>() < f.reorder_probability {
            rng.random_range(1..=u64::from(f.reorder_window))
        } else {
            0
        };
        push(
            &mut out,
            (i + shift) * SLOT + if shift > 0 { 512 } else { 0 },
            d.clone(),
        );

        if rng.random::<f64>() < f.second_subscription_probability {
            let mut copy = d.clone();
            copy.webhook_id = uuid(rng);
            copy.name = Some(f.second_subscription_name.clone());
            copy.kind = DeliveryKind::SecondSubscription;
            let off = rng.random_range(0..=3);
            push(&mut out, (i + off) * SLOT + 600, copy);
        }
        if rng.random::<f64>() < f.duplicate_probability {
            let mut copy = d.clone();
            copy.kind = DeliveryKind::Duplicate;
            let off = rng.random_range(1..=50).min(n.saturating_sub(i));
            push(&mut out, (i + off) * SLOT + 700, copy);
        }
        if d.topic == "orders/updated" && rng.random::<f64>() < f.stale_retry_probability {
            // Re-deliver after the next newer state of the same order, if there is one.
            let newer = base
                .iter()
                .enumerate()
                .skip(i as usize + 1)
                .find(|(_, (o, oid))| *oid == *order_id && o.triggered_at > d.triggered_at)
                .map(|(j, _)| j as u64);
            if let Some(j) = newer {
                let mut copy = d.clone();
                copy.kind = DeliveryKind::StaleRetry;
                push(&mut out, j * SLOT + 800, copy);
            }
        }
    }
    out.sort_by_key(|(pos, tie, _)| (*pos, *tie));
    out.into_iter().map(|(_, _, d)| d).collect()
}
