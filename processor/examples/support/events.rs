//! The benchmarks' input: shopify-sim's store as ingest would publish it (shared by the examples).

use schemas::{EventSource, ShopDomain, ShopifyEnvelope};

/// Realistic raw events: shopify-sim's store, as ingest would publish them.
pub(crate) fn events(n: usize) -> Vec<ShopifyEnvelope> {
    let cfg = shopify_sim::ScenarioConfig {
        customers: u32::try_from(n / 50 + 10).expect("fewer than 2^32 customers"),
        ..Default::default()
    };
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
