//! The CLI never brings an erased customer back: `dlq redrive` and `backfill` consult the
//! erasure registry (issue 14 item 1), and `raw rewrite` makes the raw log forget (item 2),
//! against the real broker and the Admin API fake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use processor::erasure::{ErasureConfig, Registry};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use runtime::testing::{fresh_topics, kafka, read_committed};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{
    Action, CustomerKey, EventSource, IterableCommand, ShopDomain, ShopifyEnvelope, UserRef,
};
use shopify_sim::{AdminOptions, ScenarioConfig, generate, spawn_admin};

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "shpat_test_token";

/// Writes the markers a processor writes when it purges `keys` at `at_ms` (default hash key,
/// as the CLI under test uses).
async fn erase(k: &KafkaConfig, t: &TopicsConfig, keys: &[String], at_ms: i64) {
    let mut registry = Registry::new(&ErasureConfig::default().hash_key);
    let p: FutureProducer = k.producer("test-erase").create().unwrap();
    for key in keys {
        let marker = registry
            .erase(&CustomerKey::parse(key).unwrap(), at_ms)
            .unwrap();
        p.send(
            FutureRecord::to(&t.erasures)
                .key(&marker.key)
                .payload(&marker.value),
            T,
        )
        .await
        .unwrap();
    }
    p.flush(T).unwrap();
}

/// Runs the CLI against the test broker and the test's topic names.
fn cli(k: &KafkaConfig, t: &TopicsConfig, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(args)
        .env_remove("TILLSTREAM_CONFIG")
        .envs(runtime::testing::service_env(k, t))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn command(customer: u64) -> IterableCommand {
    IterableCommand {
        command_id: format!("cmd-{customer}"),
        shop_domain: "demo.myshopify.com".into(),
        customer_key: format!("demo.myshopify.com/c/{customer}"),
        user: UserRef {
            user_id: Some(customer.to_string()),
            email: None,
        },
        event_time_ms: 1_750_000_000_000,
        source_ids: vec!["d-1".into()],
        action: Action::UpsertUser {
            data_fields: serde_json::Map::new(),
            merge_nested_objects: false,
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_never_sends_an_erased_customers_dead_letters() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let p: FutureProducer = k.producer("test").create().unwrap();
    for customer in [7, 8] {
        let cmd = command(customer);
        let bytes = cmd.encode().unwrap();
        p.send(
            FutureRecord::to(&t.publisher_dlq)
                .key(&cmd.customer_key)
                .payload(&bytes),
            T,
        )
        .await
        .unwrap();
    }
    p.flush(T).unwrap();
    erase(
        &k,
        &t,
        &["demo.myshopify.com/c/7".to_owned()],
        1_760_000_000_000,
    )
    .await;

    let out = cli(&k, &t, &["dlq", "redrive", "--topic", "publisher"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Redrove 1 record(s)"), "{}", text(&out));
    assert!(stdout.contains("erased subject"), "{}", text(&out));
    let sent: Vec<String> = read_committed(&k, &t.commands, t.partitions)
        .into_iter()
        .filter_map(|(_, _, v, _)| v)
        .map(|v| IterableCommand::decode(&v).unwrap().customer_key)
        .collect();
    assert_eq!(sent, vec!["demo.myshopify.com/c/8".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_leaves_erased_customers_out_of_the_raw_topic() {
    let cfg = ScenarioConfig {
        seed: 7,
        customers: 12,
        start: "2024-01-08T09:00:00-05:00".into(),
        days: 120,
        redact_fraction: 0.0,
        data_request_fraction: 0.0,
        mean_days_between_sessions: 20.0,
        ..ScenarioConfig::default()
    };
    cfg.validate().unwrap();
    let truth = generate(&cfg).unwrap().expected;
    // The erased customer: registered, with orders the Admin API still returns.
    let ada = truth
        .customers
        .values()
        .find(|c| c.customer_id.is_some() && !c.orders.is_empty())
        .expect("a registered customer with orders");
    let ada_id = ada.customer_id.unwrap().to_string();
    let shop = &cfg.shop_domain;
    let opts = AdminOptions {
        access_token: TOKEN.into(),
        ..AdminOptions::default()
    };
    let admin = spawn_admin(&cfg, opts, "127.0.0.1:0").await.unwrap();
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let keys = [
        format!("{shop}/c/{ada_id}"),
        format!("{shop}/e/{}", ada.email.to_lowercase()),
    ];
    erase(&k, &t, &keys, runtime::now_ms()).await;

    let checkpoint = std::env::temp_dir().join(runtime::testing::unique("erasure-checkpoint"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(["backfill", "--shop", shop, "--admin-url", &admin.base_url])
        .args(["--poll-interval", "50ms", "--since", "2024-01-01"])
        .args(["--until", "2030-01-01", "--checkpoint"])
        .arg(&checkpoint)
        .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", TOKEN)
        .envs(runtime::testing::service_env(&k, &t))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let raw: Vec<ShopifyEnvelope> = read_committed(&k, &t.raw, t.partitions)
        .into_iter()
        .filter_map(|(_, _, v, _)| v)
        .map(|v| ShopifyEnvelope::decode(&v).unwrap())
        .collect();
    assert!(
        raw.len() > 10,
        "the other customers were imported: {}",
        text(&out)
    );
    let about_ada: Vec<String> = raw
        .iter()
        .filter(|e| {
            keys.contains(&e.routing_key) || String::from_utf8_lossy(&e.body).contains(&ada.email)
        })
        .map(|e| format!("{} {}", e.topic, e.routing_key))
        .collect();
    assert_eq!(
        about_ada,
        Vec::<String>::new(),
        "backfill wrote the erased customer into the raw topic again"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("about erased customers left out"),
        "{}",
        text(&out)
    );
}

/// A webhook as ingest writes it to the raw topic.
fn webhook(topic: &str, delivery: &str, at_ms: i64, body: &str) -> ShopifyEnvelope {
    let shop = ShopDomain::parse("demo.myshopify.com").unwrap();
    ShopifyEnvelope {
        delivery_id: delivery.into(),
        event_id: None,
        topic: topic.into(),
        shop_domain: shop.as_str().into(),
        api_version: Some("2026-07".into()),
        triggered_at_ms: Some(at_ms),
        received_at_ms: at_ms,
        routing_key: schemas::routing_key(&shop, topic, body.as_bytes())
            .as_str()
            .to_owned(),
        source: EventSource::Webhook,
        webhook_name: None,
        body: body.as_bytes().to_vec(),
    }
}

/// Writes `log` to the raw topic as ingest would (keyed by routing key).
async fn publish(k: &KafkaConfig, t: &TopicsConfig, log: &[ShopifyEnvelope]) {
    let p: FutureProducer = k.producer("test-ingest").create().unwrap();
    for e in log {
        let bytes = e.encode().unwrap();
        p.send(
            FutureRecord::to(&t.raw).key(&e.routing_key).payload(&bytes),
            T,
        )
        .await
        .unwrap();
    }
    p.flush(T).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_then_rewritten_raw_topic_holds_no_byte_of_an_erased_customer_and_keeps_everyone_else()
 {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let at = 1_760_000_000_000;
    let ada = r#""email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","phone":"+15550107001","default_address":{"address1":"12 Analytical Row","city":"London","zip":"N1 9GU"}"#;
    let log = [
        webhook(
            "customers/create",
            "a1",
            at,
            &format!(r#"{{"id":7001,{ada}}}"#),
        ),
        webhook(
            "customers/create",
            "b1",
            at + 1,
            r#"{"id":7002,"email":"bob@example.com","last_name":"Babbage"}"#,
        ),
        webhook(
            "orders/paid",
            "a2",
            at + 2,
            &format!(r#"{{"id":9001,"customer":{{"id":7001,{ada}}},"total_price":"10.00"}}"#),
        ),
        webhook(
            "orders/paid",
            "a3",
            at + 3,
            r#"{"id":9003,"email":"ada@example.com","customer":null,"shipping_address":{"address1":"12 Analytical Row"}}"#,
        ),
        webhook(
            "refunds/create",
            "a4",
            at + 4,
            r#"{"id":990001,"order_id":9001}"#,
        ),
        webhook(
            "orders/paid",
            "b2",
            at + 5,
            r#"{"id":9002,"customer":{"id":7002,"email":"bob@example.com"},"total_price":"8.00"}"#,
        ),
        webhook(
            "customers/redact",
            "a5",
            at + 6,
            r#"{"customer":{"id":7001,"email":"ada@example.com","phone":"+15550107001"},"orders_to_redact":[9001]}"#,
        ),
    ];
    publish(&k, &t, &log).await;
    // A raw topic written before the registry existed: its redact is found and recorded
    // (customer, email and order keys, as the processor marks them).
    let seeded = cli(&k, &t, &["raw", "seed-erasures"]);
    assert!(seeded.status.success(), "{}", text(&seeded));
    assert!(
        String::from_utf8_lossy(&seeded.stdout).contains("Recorded 3 marker(s)"),
        "{}",
        text(&seeded)
    );

    let to = format!("{}.v2", t.raw);
    let out = cli(&k, &t, &["raw", "rewrite", "--to", &to]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Copied 2 record(s); left out 5"),
        "{}",
        text(&out)
    );

    // A plain consumer of the new topic: not one of Ada's personal fields, in any record.
    let copied = read_committed(&k, &to, t.partitions);
    for (_, key, value, _) in &copied {
        let bytes = [
            key.clone().unwrap_or_default(),
            value.clone().unwrap_or_default(),
        ]
        .concat();
        let text = String::from_utf8_lossy(&bytes);
        for personal in [
            "ada@example.com",
            "Lovelace",
            "+15550107001",
            "Analytical Row",
            "N1 9GU",
        ] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }
    // Everyone else: the same records, byte for byte, in the same partitions and order.
    let bobs: Vec<(i32, Vec<u8>)> = read_committed(&k, &t.raw, t.partitions)
        .into_iter()
        .filter(|(_, key, _, _)| key.as_deref().is_some_and(|k| k.ends_with(b"/c/7002")))
        .map(|(p, _, v, _)| (p, v.unwrap()))
        .collect();
    assert_eq!(bobs.len(), 2);
    let kept: Vec<(i32, Vec<u8>)> = copied
        .into_iter()
        .map(|(p, _, v, _)| (p, v.unwrap()))
        .collect();
    // Sorted by partition only (stable): each partition's order is compared as read.
    let (mut kept, mut bobs) = (kept, bobs);
    kept.sort_by_key(|(p, _)| *p);
    bobs.sort_by_key(|(p, _)| *p);
    assert_eq!(kept, bobs);

    // Into a topic that already holds records: refused.
    let again = cli(&k, &t, &["raw", "rewrite", "--to", &to]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds records"));
}

/// Dead letters keep their bytes forever (unlimited retention): `dlq rewrite` copies each
/// dead-letter topic without the erased customer's records (processor: the original envelope;
/// publisher: the command with its personal fields), and keeps everyone else's.
#[tokio::test(flavor = "multi_thread")]
async fn rewritten_dead_letter_topics_hold_no_record_of_an_erased_customer() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let at = 1_760_000_000_000;
    let p: FutureProducer = k.producer("test-dlq").create().unwrap();
    for (customer, email) in [(7101, "ada@example.com"), (7102, "bob@example.com")] {
        let e = webhook(
            "orders/paid",
            &format!("d{customer}"),
            at,
            &format!(
                r#"{{"id":{},"customer":{{"id":{customer},"email":"{email}"}},"total_price":"12,50"}}"#,
                customer + 1000
            ),
        );
        p.send(
            FutureRecord::to(&t.processor_dlq)
                .key(&e.routing_key)
                .payload(&e.encode().unwrap()),
            T,
        )
        .await
        .unwrap();
        let cmd = command(customer);
        p.send(
            FutureRecord::to(&t.publisher_dlq)
                .key(&cmd.customer_key)
                .payload(&cmd.encode().unwrap()),
            T,
        )
        .await
        .unwrap();
    }
    p.flush(T).unwrap();
    erase(
        &k,
        &t,
        &["demo.myshopify.com/c/7101".to_owned()],
        at + 60_000,
    )
    .await;

    for (which, source, personal) in [
        ("processor", &t.processor_dlq, "ada@example.com"),
        ("publisher", &t.publisher_dlq, "demo.myshopify.com/c/7101"),
    ] {
        let to = format!("{source}.v2");
        let out = cli(&k, &t, &["dlq", "rewrite", "--topic", which, "--to", &to]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Copied 1 record(s); left out 1"),
            "{which}: {}",
            text(&out)
        );
        let copied = read_committed(&k, &to, t.side_partitions);
        assert_eq!(copied.len(), 1, "{which}");
        for (_, key, value, _) in &copied {
            let bytes = [
                key.clone().unwrap_or_default(),
                value.clone().unwrap_or_default(),
            ]
            .concat();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(personal),
                "{which}: {personal} copied"
            );
        }
    }
}

/// Migration to crypto-shredding: with a master key, `raw rewrite` seals every plain body about
/// a person it copies (a key written per subject first) and copies the rest as it is; the
/// project's key ring opens the sealed bodies back to the original bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_raw_rewrite_with_a_master_key_seals_the_plain_bodies_about_people() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let at = 1_760_000_000_000;
    let log = [
        webhook(
            "customers/create",
            "m1",
            at,
            r#"{"id":7301,"email":"mia@example.com","last_name":"Quarrington"}"#,
        ),
        webhook(
            "orders/paid",
            "m2",
            at + 1,
            r#"{"id":9301,"email":"guest@example.com","customer":null,"total_price":"5.00"}"#,
        ),
        webhook(
            "products/update",
            "m3",
            at + 2,
            r#"{"id":55,"title":"Tea"}"#,
        ),
    ];
    publish(&k, &t, &log).await;
    let master = "migration-test-master-key-0123456789abcdef";
    let to = format!("{}.sealed", t.raw);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(["raw", "rewrite", "--to", &to])
        .env_remove("TILLSTREAM_CONFIG")
        .envs(runtime::testing::service_env(&k, &t))
        .env("TILLSTREAM__ERASURE__MASTER_KEY", master)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Sealed 2 plain body(ies)"),
        "{}",
        text(&out)
    );
    let cfg = ErasureConfig {
        master_key: Some(runtime::Secret::new(master)),
        ..ErasureConfig::default()
    };
    let mut ring = runtime::shred::KeyRing::new(&cfg, &k, &t.keys)
        .unwrap()
        .unwrap();
    ring.load_all().unwrap();
    let copied = read_committed(&k, &to, t.partitions);
    assert_eq!(copied.len(), 3);
    for (partition, _, value, _) in copied {
        let env = ShopifyEnvelope::decode(&value.unwrap()).unwrap();
        let original = log
            .iter()
            .find(|e| e.delivery_id == env.delivery_id)
            .unwrap();
        let person = CustomerKey::parse(&env.routing_key)
            .unwrap()
            .kind()
            .names_person();
        assert_eq!(
            runtime::shred::is_sealed(&env.body),
            person,
            "{}",
            env.topic
        );
        let plain = match ring.open(&env.body, partition).unwrap() {
            runtime::shred::Opened::Plain(b) => b.to_vec(),
            runtime::shred::Opened::Opened(b) => b,
            runtime::shred::Opened::KeyGone => panic!("no key for {}", env.topic),
        };
        assert_eq!(plain, original.body);
        assert!(!String::from_utf8_lossy(&value_text(&env)).contains("Quarrington"));
    }
}

/// The envelope's bytes as stored (what a plain consumer reads).
fn value_text(env: &ShopifyEnvelope) -> Vec<u8> {
    env.encode().unwrap()
}
