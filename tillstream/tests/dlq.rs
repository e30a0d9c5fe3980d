//! `tillstream dlq inspect|redrive` against the real broker: headers shown, redriven once.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use runtime::testing::{fresh_topics, kafka, unique};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{Action, EventSource, IterableCommand, ShopifyEnvelope, UserRef};

const T: Duration = Duration::from_secs(10);

/// Runs the CLI against the test broker and the test's topic names.
fn cli(k: &KafkaConfig, t: &TopicsConfig, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(args)
        .env_remove("TILLSTREAM_CONFIG")
        .envs(runtime::testing::service_env(k, t))
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let all = format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{all}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn envelope(delivery: &str) -> Vec<u8> {
    ShopifyEnvelope {
        delivery_id: delivery.into(),
        event_id: None,
        topic: "orders/paid".into(),
        shop_domain: "demo.myshopify.com".into(),
        api_version: Some("2025-07".into()),
        triggered_at_ms: Some(1_750_000_000_000),
        received_at_ms: 1_750_000_000_500,
        routing_key: "demo.myshopify.com/c/7".into(),
        source: EventSource::Webhook,
        webhook_name: None,
        body: br#"{"id":1001,"customer":{"id":7}}"#.to_vec(),
    }
    .encode()
    .unwrap()
}

/// A dead letter as the processor writes it: original key and bytes, reason in headers.
async fn dead_letter(
    k: &KafkaConfig,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let p: FutureProducer = k.producer("test").create().unwrap();
    let mut h = OwnedHeaders::new();
    for (name, value) in headers {
        h = h.insert(Header {
            key: name,
            value: Some(*value),
        });
    }
    p.send(
        FutureRecord::to(topic).key(key).payload(payload).headers(h),
        T,
    )
    .await
    .unwrap();
    p.flush(T).unwrap();
}

/// Every record of `topic` (waits until `expected` are there, then a moment for extras).
fn read_all(
    k: &KafkaConfig,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<(String, Vec<u8>, Option<String>)> {
    let c: BaseConsumer = k.consumer("test", &unique("read"), true).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settle: Option<Instant> = None;
    loop {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let source = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "tillstream.redrive.source"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().unwrap_or_default().to_vec(),
                source,
            ));
        }
        if out.len() >= expected {
            let since = *settle.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(500) {
                return out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} records in {topic}",
            out.len()
        );
    }
}

fn total(k: &KafkaConfig, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = k.consumer("test", "unused", true).create().unwrap();
    (0..partitions)
        .map(|p| c.fetch_watermarks(topic, p, T).unwrap().1)
        .sum()
}

fn command() -> IterableCommand {
    IterableCommand {
        command_id: "cmd-abc-123".into(),
        shop_domain: "demo.myshopify.com".into(),
        customer_key: "demo.myshopify.com/c/7".into(),
        user: UserRef {
            user_id: Some("7".into()),
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
async fn inspect_shows_headers_and_decoded_payloads() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    dead_letter(
        &k,
        &t.processor_dlq,
        "demo.myshopify.com/c/7",
        &envelope("d-1"),
        &[
            ("tillstream.error.kind", "rule_error"),
            ("tillstream.error.message", "total is not a decimal"),
            ("tillstream.source.topic", &t.raw),
            ("tillstream.source.partition", "1"),
            ("tillstream.source.offset", "42"),
        ],
    )
    .await;
    dead_letter(
        &k,
        &t.processor_dlq,
        "demo.myshopify.com/s/-",
        b"\xc3\x01\xff\x00garbage\x1b[2J",
        &[("tillstream.error.kind", "undecodable")],
    )
    .await;
    dead_letter(
        &k,
        &t.publisher_dlq,
        "demo.myshopify.com/c/7",
        &command().encode().unwrap(),
        &[
            ("tillstream.reason", "400 from users/update: invalid email"),
            ("tillstream.reason.kind", "http_400"),
            ("tillstream.response.status", "400"),
            ("tillstream.source.topic", &t.commands),
        ],
    )
    .await;

    let out = ok(&cli(
        &k,
        &t,
        &["dlq", "inspect", "--topic", "processor", "--from-beginning"],
    ));
    for want in [
        "tillstream.error.kind",
        "rule_error",
        "total is not a decimal",
        "tillstream.source.offset",
        "payload: ShopifyEnvelope",
        "topic orders/paid",
        "delivery d-1",
        r#"body {"id":1001"#,
        "not a ShopifyEnvelope",
        "2 record(s) shown",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains('\u{1b}'),
        "control characters from the payload are escaped:\n{out}"
    );

    let limited = ok(&cli(
        &k,
        &t,
        &["dlq", "inspect", "--topic", "processor", "--limit", "1"],
    ));
    assert!(
        limited.contains("1 record(s) shown (limit reached"),
        "{limited}"
    );
    let filtered = ok(&cli(
        &k,
        &t,
        &[
            "dlq",
            "inspect",
            "--topic",
            "processor",
            "--filter-kind",
            "undecodable",
        ],
    ));
    assert!(
        filtered.contains("1 record(s) shown") && !filtered.contains("rule_error"),
        "{filtered}"
    );

    let out = ok(&cli(&k, &t, &["dlq", "inspect", "--topic", "publisher"]));
    for want in [
        "tillstream.reason.kind",
        "http_400",
        "invalid email",
        "payload: IterableCommand",
        "id cmd-abc-123",
        "action upsert_user",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_republishes_each_dead_letter_once() {
    let k = kafka();
    let t = fresh_topics(&k, 2).await;
    let poison = [
        ("demo.myshopify.com/c/7", envelope("d-1")),
        ("demo.myshopify.com/c/8", envelope("d-2")),
    ];
    for (key, payload) in &poison {
        dead_letter(
            &k,
            &t.processor_dlq,
            key,
            payload,
            &[
                ("tillstream.error.kind", "rule_error"),
                ("tillstream.source.topic", &t.raw),
            ],
        )
        .await;
    }
    // A timer dead letter is not an input record: reported, not redriven.
    dead_letter(
        &k,
        &t.processor_dlq,
        "demo.myshopify.com/c/9",
        br#"{"timer_id":"t"}"#,
        &[("tillstream.error.kind", "timer_rule_error")],
    )
    .await;

    let dry = ok(&cli(
        &k,
        &t,
        &["dlq", "redrive", "--topic", "processor", "--dry-run"],
    ));
    assert!(dry.contains("Would redrive 2 record(s)"), "{dry}");
    assert_eq!(total(&k, &t.raw, 2), 0, "a dry run sends nothing");

    let first = ok(&cli(&k, &t, &["dlq", "redrive", "--topic", "processor"]));
    assert!(first.contains("Redrove 2 record(s)"), "{first}");
    assert!(
        first.contains("timer dead letters are not input records"),
        "{first}"
    );
    let mut raw = read_all(&k, &t.raw, 2, 2);
    raw.sort();
    assert_eq!(raw.len(), 2, "{raw:?}");
    for ((key, payload), (got_key, got_payload, source)) in poison.iter().zip(&raw) {
        assert_eq!(got_key, key);
        assert_eq!(got_payload, payload, "original bytes");
        assert!(
            source
                .as_deref()
                .is_some_and(|s| s.starts_with(&t.processor_dlq)),
            "{source:?}"
        );
    }

    let second = ok(&cli(&k, &t, &["dlq", "redrive", "--topic", "processor"]));
    assert!(second.contains("Nothing to redrive"), "{second}");
    assert_eq!(total(&k, &t.raw, 2), 2, "the second run redrove nothing");

    // A new dead letter after the run: only it is redriven next time.
    dead_letter(
        &k,
        &t.processor_dlq,
        "demo.myshopify.com/c/10",
        &envelope("d-3"),
        &[("tillstream.error.kind", "undecodable")],
    )
    .await;
    let third = ok(&cli(&k, &t, &["dlq", "redrive", "--topic", "processor"]));
    assert!(third.contains("Redrove 1 record(s)"), "{third}");
    assert_eq!(read_all(&k, &t.raw, 2, 3).len(), 3);

    // The publisher's dead letters go back to the commands topic, filtered by kind.
    let cmd = command().encode().unwrap();
    dead_letter(
        &k,
        &t.publisher_dlq,
        "demo.myshopify.com/c/7",
        &cmd,
        &[
            ("tillstream.reason.kind", "http_400"),
            ("tillstream.source.topic", &t.commands),
        ],
    )
    .await;
    dead_letter(
        &k,
        &t.publisher_dlq,
        "demo.myshopify.com/c/7",
        &cmd,
        &[("tillstream.reason.kind", "forgotten_user")],
    )
    .await;
    let publisher = ok(&cli(
        &k,
        &t,
        &[
            "dlq",
            "redrive",
            "--topic",
            "publisher",
            "--filter-kind",
            "http_400",
        ],
    ));
    assert!(
        publisher.contains("Redrove 1 record(s)")
            && publisher.contains("Left 1 record(s) of other kinds"),
        "{publisher}"
    );
    let commands = read_all(&k, &t.commands, 2, 1);
    assert_eq!(commands.len(), 1);
    assert_eq!(IterableCommand::decode(&commands[0].1).unwrap(), command());
    let again = ok(&cli(
        &k,
        &t,
        &[
            "dlq",
            "redrive",
            "--topic",
            "publisher",
            "--filter-kind",
            "http_400",
        ],
    ));
    assert!(again.contains("Nothing to redrive"), "{again}");
}
