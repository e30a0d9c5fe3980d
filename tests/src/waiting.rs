//! Waiting with deadlines and reading what the services expose: polling, `/metrics`, deliveries.

use super::*;

/// Polls `f` every 200 ms until it returns `Some`, or fails after `timeout` naming `what`.
///
/// # Errors
/// When the deadline passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET `url` and return the body when the status is 200.
pub async fn get_ok(url: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let r = client.get(url).send().await.ok()?;
    if r.status().is_success() {
        r.text().await.ok()
    } else {
        None
    }
}

/// The publisher's backlog per lane (`tillstream_publisher_lane_pending`) from its operations
/// server at `url`; empty while it does not answer.
pub async fn lane_pending(url: &str) -> std::collections::BTreeMap<String, i64> {
    let m = get_ok(&format!("{url}/metrics")).await.unwrap_or_default();
    prom_samples(&m, "tillstream_publisher_lane_pending")
        .into_iter()
        .filter_map(|(labels, v)| {
            let lane = labels.split("lane=\"").nth(1)?.split('"').next()?;
            Some((lane.to_owned(), v as i64))
        })
        .collect()
}

/// Sums the samples of a Prometheus metric whose name (before `{`) is `name`, grouped by the
/// full sample name with labels.
pub fn prom_samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// A hand-written webhook delivery of `shop` (delivery id `wh-{id}`, event id `ev-{id}`,
/// triggered at `at_ms`), for tests that script a few events rather than a shopify-sim store.
///
/// # Panics
/// When `at_ms` is out of range.
pub fn delivery(
    shop: &str,
    topic: &str,
    id: &str,
    at_ms: i64,
    body: &serde_json::Value,
) -> shopify_sim::Delivery {
    shopify_sim::Delivery {
        topic: topic.into(),
        shop_domain: shop.into(),
        api_version: "2026-01".into(),
        webhook_id: format!("wh-{id}"),
        event_id: format!("ev-{id}"),
        triggered_at: chrono::DateTime::from_timestamp_millis(at_ms).expect("a time in range"),
        name: None,
        body: serde_json::to_vec(body).unwrap_or_default(),
        kind: shopify_sim::DeliveryKind::Original,
    }
}
