//! The consent mutations, one request each, and what Shopify's answer means (cost, throttling, userErrors).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use runtime::Secret;
use schemas::{ConsentChannel, ShopifyCommand};
use serde_json::{Value, json};

/// Requested cost assumed before Shopify has told us one (a consent mutation costs 10).
const DEFAULT_COST: f64 = 10.0;

/// What one attempt ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied: Shopify holds the consent now (and will send its webhook back).
    Applied,
    /// Shopify refused it for good (`userErrors`, a 4xx, an unknown customer): dead letter.
    Rejected {
        /// Low-cardinality kind (`user_errors`, `http_4xx`, `graphql_errors`).
        kind: &'static str,
        /// Shopify's reason.
        reason: String,
    },
    /// Try again after the wait (throttled, 5xx, 429, network, bad token): lag builds in Kafka.
    Retry {
        /// Why.
        reason: String,
        /// How long Shopify says to wait, when it says.
        wait: Option<Duration>,
    },
}

/// The request body of a command: the mutation for its channel with variables.
pub fn request_body(cmd: &ShopifyCommand) -> Value {
    let at = chrono::DateTime::from_timestamp_millis(cmd.consent_updated_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let consent = json!({
        "marketingState": cmd.marketing_state.graphql(),
        "marketingOptInLevel": "SINGLE_OPT_IN",
        "consentUpdatedAt": at,
    });
    let gid = format!("gid://shopify/Customer/{}", cmd.customer_id);
    let (mutation, field, input) = match cmd.channel {
        ConsentChannel::Email => (
            "customerEmailMarketingConsentUpdate",
            "emailMarketingConsent",
            json!({"customerId": gid, "emailMarketingConsent": consent}),
        ),
        ConsentChannel::Sms => (
            "customerSmsMarketingConsentUpdate",
            "smsMarketingConsent",
            json!({"customerId": gid, "smsMarketingConsent": consent}),
        ),
    };
    let input_type = match cmd.channel {
        ConsentChannel::Email => "CustomerEmailMarketingConsentUpdateInput",
        ConsentChannel::Sms => "CustomerSmsMarketingConsentUpdateInput",
    };
    let query = format!(
        "mutation tillstreamConsent($input: {input_type}!) {{ {mutation}(input: $input) {{ customer {{ id {field} {{ marketingState consentUpdatedAt }} }} userErrors {{ field message }} }} }}"
    );
    json!({"query": query, "variables": {"input": input}})
}

/// A shop's cost bucket as Shopify last reported it (`extensions.cost.throttleStatus`).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    available: f64,
    restore_rate: f64,
    maximum: f64,
    at: Instant,
    requested: f64,
}

/// Per-shop cost buckets: wait before a request the bucket cannot pay for.
#[derive(Debug, Default)]
pub struct Throttle {
    shops: HashMap<String, Bucket>,
}

impl Throttle {
    /// How long to wait before sending to `shop` (zero when the bucket can pay).
    pub fn wait(&self, shop: &str) -> Duration {
        let Some(b) = self.shops.get(shop) else {
            return Duration::ZERO;
        };
        let elapsed = b.at.elapsed().as_secs_f64();
        let now = (b.available + elapsed * b.restore_rate).min(b.maximum);
        let need = b.requested.max(1.0);
        if now >= need || b.restore_rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((need - now) / b.restore_rate).min(60.0))
    }

    /// Reads `extensions.cost` of an answer; returns the wait a `THROTTLED` answer implies.
    fn observe(&mut self, shop: &str, body: &Value) -> Option<Duration> {
        let cost = body.pointer("/extensions/cost")?;
        let status = cost.get("throttleStatus")?;
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        let bucket = Bucket {
            available: num(status, "currentlyAvailable")?,
            restore_rate: num(status, "restoreRate").unwrap_or(50.0),
            maximum: num(status, "maximumAvailable").unwrap_or(1000.0),
            at: Instant::now(),
            requested: num(cost, "requestedQueryCost").unwrap_or(DEFAULT_COST),
        };
        self.shops.insert(shop.to_owned(), bucket);
        Some(self.wait(shop))
    }
}

/// Sends one command and classifies the answer; also returns the HTTP status the request got
/// (`"error"` when none came back), for the requests metric.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    token: &Secret,
    cmd: &ShopifyCommand,
    throttle: &mut Throttle,
) -> (Outcome, String) {
    let response = http
        .post(url)
        .header("X-Shopify-Access-Token", token.expose())
        .json(&request_body(cmd))
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            let outcome = Outcome::Retry {
                reason: format!("request failed: {e}"),
                wait: None,
            };
            return (outcome, "error".to_owned());
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| publisher::retry::parse_retry_after(v, chrono::Utc::now()));
    let text = response.text().await.unwrap_or_default();
    let outcome = classify(status, retry_after, &text, &cmd.shop_domain, throttle);
    (outcome, status.as_u16().to_string())
}

/// What an answer means (pure, so it is unit-tested without HTTP).
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    text: &str,
    shop: &str,
    throttle: &mut Throttle,
) -> Outcome {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let wait = throttle.observe(shop, &body);
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Outcome::Retry {
            reason: format!("HTTP {status}"),
            wait: retry_after.or(wait),
        };
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // A wrong or revoked token: every command of the shop would fail the same way, so
        // hold them (lag grows, the error is logged) rather than dead-letter them all.
        return Outcome::Retry {
            reason: format!("HTTP {status}: check the shop's access token"),
            wait: None,
        };
    }
    if !status.is_success() {
        return Outcome::Rejected {
            kind: "http_4xx",
            reason: format!("HTTP {status}: {}", truncate(text)),
        };
    }
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        let throttled = errors
            .iter()
            .any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED"));
        if throttled {
            return Outcome::Retry {
                reason: "THROTTLED".into(),
                wait: wait.or(Some(Duration::from_secs(1))),
            };
        }
        if !errors.is_empty() {
            return Outcome::Rejected {
                kind: "graphql_errors",
                reason: truncate(&Value::Array(errors.clone()).to_string()),
            };
        }
    }
    let Some(data) = body.get("data").and_then(Value::as_object) else {
        return Outcome::Retry {
            reason: format!("answer without data: {}", truncate(text)),
            wait: None,
        };
    };
    let payload = data.values().next().cloned().unwrap_or(Value::Null);
    let user_errors = payload
        .get("userErrors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !user_errors.is_empty() {
        let reason = user_errors
            .iter()
            .map(|e| {
                let field = e.get("field").map(Value::to_string).unwrap_or_default();
                let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                format!("{field}: {msg}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Outcome::Rejected {
            kind: "user_errors",
            reason,
        };
    }
    if payload.get("customer").is_none_or(Value::is_null) {
        return Outcome::Rejected {
            kind: "no_customer",
            reason: "the mutation returned no customer".into(),
        };
    }
    Outcome::Applied
}

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Outcome {
        classify(
            StatusCode::OK,
            None,
            body,
            "a.myshopify.com",
            &mut Throttle::default(),
        )
    }

    #[test]
    fn answers_are_classified() {
        let applied = r#"{"data":{"customerEmailMarketingConsentUpdate":{"customer":{"id":"gid://shopify/Customer/1"},"userErrors":[]}},"extensions":{"cost":{"requestedQueryCost":10,"actualQueryCost":10,"throttleStatus":{"maximumAvailable":1000.0,"currentlyAvailable":990,"restoreRate":50.0}}}}"#;
        assert_eq!(ok(applied), Outcome::Applied);
        let user = r#"{"data":{"customerSmsMarketingConsentUpdate":{"customer":null,"userErrors":[{"field":["input","smsMarketingConsent"],"message":"Phone is required"}]}}}"#;
        assert!(
            matches!(ok(user), Outcome::Rejected { kind: "user_errors", reason } if reason.contains("Phone is required"))
        );
        let throttled = r#"{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}}],"extensions":{"cost":{"requestedQueryCost":10,"actualQueryCost":null,"throttleStatus":{"maximumAvailable":1000.0,"currentlyAvailable":5,"restoreRate":50.0}}}}"#;
        match ok(throttled) {
            Outcome::Retry { wait: Some(w), .. } => {
                assert!(
                    w > Duration::from_millis(50) && w <= Duration::from_millis(110),
                    "{w:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut t = Throttle::default();
        let server = classify(StatusCode::BAD_GATEWAY, None, "", "a", &mut t);
        assert!(matches!(server, Outcome::Retry { .. }));
        let auth = classify(StatusCode::UNAUTHORIZED, None, "", "a", &mut t);
        assert!(matches!(auth, Outcome::Retry { .. }));
        let bad = classify(StatusCode::UNPROCESSABLE_ENTITY, None, "nope", "a", &mut t);
        assert!(matches!(
            bad,
            Outcome::Rejected {
                kind: "http_4xx",
                ..
            }
        ));
    }

    #[test]
    fn the_bucket_makes_the_next_request_wait() {
        let mut t = Throttle::default();
        let low = r#"{"data":{"x":{"customer":{"id":"1"},"userErrors":[]}},"extensions":{"cost":{"requestedQueryCost":10,"throttleStatus":{"maximumAvailable":1000.0,"currentlyAvailable":0,"restoreRate":100.0}}}}"#;
        ok(low);
        classify(StatusCode::OK, None, low, "s", &mut t);
        let w = t.wait("s");
        assert!(
            w > Duration::from_millis(50) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        assert_eq!(t.wait("other"), Duration::ZERO);
    }
}
