//! What the benchmark examples share: their input (shopify-sim's store as ingest would publish
//! it), their `--name value` arguments and the median of their rounds. Each example uses part
//! of it.

use schemas::{EventSource, ShopDomain, ShopifyEnvelope};

/// The value after `name` on the command line, else `default`.
pub(crate) fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// The middle value of the rounds (the upper middle of an even count, so it is one round's).
pub(crate) fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds.get(rounds.len() / 2).copied().unwrap_or(0.0)
}

/// Realistic raw events: shopify-sim's store, as ingest would publish them.
pub(crate) fn events(n: usize) -> Vec<ShopifyEnvelope> {
    store_events(n, false)
}

/// The first `n` deliveries of shopify-sim's store (`products`: with its product catalogue),
/// as ingest would publish them.
pub(crate) fn store_events(n: usize, products: bool) -> Vec<ShopifyEnvelope> {
    let mut cfg = shopify_sim::ScenarioConfig {
        customers: u32::try_from(n / 50 + 10).expect("fewer than 2^32 customers"),
        ..Default::default()
    };
    cfg.products.enabled = products;
    let scenario = shopify_sim::generate(&cfg).expect("the simulator's store is valid");
    let shop = ShopDomain::parse(&cfg.shop_domain).expect("the simulator's store is valid");
    scenario
        .deliveries
        .into_iter()
        .take(n)
        .map(|d| {
            let key = schemas::routing_key(&shop, &d.topic, &d.body);
            let at = d.triggered_at.timestamp_millis();
            ShopifyEnvelope {
                delivery_id: d.webhook_id,
                event_id: Some(d.event_id),
                topic: d.topic,
                shop_domain: shop.as_str().to_owned(),
                api_version: Some(d.api_version),
                triggered_at_ms: Some(at),
                received_at_ms: at,
                routing_key: key.as_str().to_owned(),
                source: EventSource::Webhook,
                webhook_name: None,
                body: d.body,
            }
        })
        .collect()
}
