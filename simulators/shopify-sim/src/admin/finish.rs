//! `bulk_operations/finish`: the signed notice the fake POSTs when an operation ends.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::{FinishWebhook, Operation, Status, utc};

pub(super) fn finish_notice(op: &Operation) -> Value {
    json!({
        "admin_graphql_api_id": format!("gid://shopify/BulkOperation/{}", op.number),
        "completed_at": op.completed_at.map(utc),
        "created_at": utc(op.created_at),
        "error_code": if op.status == Status::Failed { Value::from("internal_server_error") } else { Value::Null },
        "status": op.status.as_str().to_lowercase(),
        "type": "query",
    })
}

pub(super) async fn send_finish(hook: FinishWebhook, notice: Value) {
    let body = notice.to_string().into_bytes();
    let signature = crate::sign::sign(&body, hook.secret.as_bytes());
    let id = format!(
        "bulk-finish-{}",
        notice["admin_graphql_api_id"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
    );
    let result = reqwest::Client::new()
        .post(&hook.url)
        .header("X-Shopify-Topic", "bulk_operations/finish")
        .header("X-Shopify-Hmac-Sha256", signature)
        .header("X-Shopify-Webhook-Id", id)
        .header(
            "X-Shopify-Triggered-At",
            crate::delivery::format_triggered_at(Utc::now()),
        )
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(5))
        .body(body)
        .send()
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, url = %hook.url, "bulk_operations/finish webhook not delivered");
    }
}
