//! `tillstream raw seed-erasures`: record in the erasure registry every redact the raw topic holds.
//!
//! A deployment that processed redacts before the erasure registry existed has no markers for
//! them, so its first replay would send those customers' data again before reaching their
//! redact. This command reads the raw topic once and writes the markers the processor would
//! have written: the redacted customer id, the email address, each order of `orders_to_redact`, and for `shop/redact` the shop, each at
//! the redact's event time. Writing a marker twice is harmless (the topic is compacted and
//! the value is the same), so the command can be run again.

use anyhow::Context;
use clap::Args;
use processor::erasure::{ErasureConfig, Registry};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{CustomerKey, KeyKind, ShopDomain, ShopifyEnvelope};
use serde::Deserialize;

use crate::topic_reader::{read, reader, spans};

/// `tillstream raw seed-erasures`.
#[derive(Args, Debug)]
pub(crate) struct SeedArgs {
    /// List what would be recorded; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The parts of a `customers/redact` body that name the person.
#[derive(Deserialize)]
struct Redact {
    customer: Option<Person>,
    #[serde(default)]
    orders_to_redact: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Person {
    id: Option<serde_json::Value>,
    email: Option<String>,
}

/// An id given as a number or a string, as Shopify payloads do.
fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The keys a redact record erases (what the processor purges and marks for it).
fn erased_keys(env: &ShopifyEnvelope) -> Vec<CustomerKey> {
    let Ok(shop) = ShopDomain::parse(&env.shop_domain) else {
        return Vec::new();
    };
    match env.topic.as_str() {
        "shop/redact" => vec![CustomerKey::new(&shop, KeyKind::Shop, "-")],
        "customers/redact" => {
            let Ok(r) = serde_json::from_slice::<Redact>(&env.body) else {
                return Vec::new();
            };
            let mut keys = Vec::new();
            if let Some(p) = &r.customer {
                if let Some(id) = p.id.as_ref().and_then(id_text) {
                    keys.push(CustomerKey::new(&shop, KeyKind::Customer, &id));
                }
                // The key normalises the address as the routing rule does.
                if let Some(email) = p.email.as_deref().filter(|e| !e.trim().is_empty()) {
                    keys.push(CustomerKey::new(&shop, KeyKind::Email, email));
                }
            }
            keys.extend(
                r.orders_to_redact
                    .iter()
                    .filter_map(id_text)
                    .map(|id| CustomerKey::new(&shop, KeyKind::Order, &id)),
            );
            keys
        }
        _ => Vec::new(),
    }
}

/// Runs `tillstream raw seed-erasures`.
pub(crate) async fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    erasure: &ErasureConfig,
    args: &SeedArgs,
) -> anyhow::Result<()> {
    let mut registry = Registry::new(&erasure.hash_key);
    let consumer = reader(
        kafka,
        "tillstream-seed-erasures",
        "tillstream-seed-erasures",
    )?;
    let source = spans(&consumer, &topics.raw, true)?;
    let mut markers = Vec::new();
    tokio::task::block_in_place(|| {
        read(&consumer, &topics.raw, &source, |m| {
            if let Ok(env) = ShopifyEnvelope::decode(m.payload().unwrap_or_default()) {
                let at = env.triggered_at_ms.unwrap_or(env.received_at_ms);
                for key in erased_keys(&env) {
                    if let Some(marker) = registry.erase(&key, at) {
                        markers.push((key.shop().to_owned(), key.kind(), marker));
                    }
                }
            }
            Ok(true)
        })
    })?;
    if args.dry_run {
        for (shop, kind, _) in &markers {
            println!("  would record an erased {} key of {shop}", kind.tag());
        }
        println!(
            "Would record {} marker(s) in {}.",
            markers.len(),
            topics.erasures
        );
        return Ok(());
    }
    let producer: FutureProducer = kafka
        .producer("tillstream-seed-erasures")
        .create()
        .context("cannot create a Kafka producer")?;
    for (_, _, marker) in &markers {
        producer
            .send(
                FutureRecord::to(&topics.erasures)
                    .key(&marker.key)
                    .payload(&marker.value),
                std::time::Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("cannot write a marker to {}", topics.erasures))?;
    }
    println!(
        "Recorded {} marker(s) in {} from the redacts in {}.",
        markers.len(),
        topics.erasures,
        topics.raw
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(topic: &str, body: &str) -> ShopifyEnvelope {
        ShopifyEnvelope {
            delivery_id: "d".into(),
            event_id: None,
            topic: topic.into(),
            shop_domain: "s.myshopify.com".into(),
            api_version: None,
            triggered_at_ms: Some(5),
            received_at_ms: 5,
            routing_key: "s.myshopify.com/s/-".into(),
            source: schemas::EventSource::Webhook,
            webhook_name: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_customer_redact_erases_the_id_the_address_and_the_orders() {
        let env = redact(
            "customers/redact",
            r#"{"customer":{"id":7,"email":" Ada@Example.com"},"orders_to_redact":[9,"10"]}"#,
        );
        let keys: Vec<String> = erased_keys(&env)
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "s.myshopify.com/c/7",
                "s.myshopify.com/e/ada@example.com",
                "s.myshopify.com/o/9",
                "s.myshopify.com/o/10"
            ]
        );
        assert_eq!(
            erased_keys(&redact("shop/redact", "{}"))[0].as_str(),
            "s.myshopify.com/s/-"
        );
        assert!(erased_keys(&redact("customers/redact", "not json")).is_empty());
        assert!(erased_keys(&redact("orders/paid", "{}")).is_empty());
    }
}
