//! Smoke tests against the real broker: idempotent produce/consume and Kafka transactions.
//!
//! These prove the properties every other part of tillstream leans on: a read_committed
//! consumer never sees an aborted transaction's records, an aborted transaction leaves the
//! group's offset where it was, and a committed one moves outputs and offsets together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use runtime::KafkaConfig;
use runtime::testing::{kafka, unique};

const T: Duration = Duration::from_secs(30);

async fn create_topic(k: &KafkaConfig, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = k.client("smoke-admin").create().unwrap();
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for r in res {
        r.unwrap();
    }
}

async fn produce(k: &KafkaConfig, topic: &str, n: usize) {
    let p: FutureProducer = k.producer("smoke-producer").create().unwrap();
    for i in 0..n {
        let payload = format!("v{i}");
        let key = format!("k{i}");
        p.send(FutureRecord::to(topic).key(&key).payload(&payload), T)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Polls `consumer` until `want` messages arrived or the deadline passes; returns payloads.
fn drain(consumer: &BaseConsumer, want: usize, deadline: Duration) -> Vec<String> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < end {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

fn reader(k: &KafkaConfig, topic: &str, read_committed: bool) -> BaseConsumer {
    let c: BaseConsumer = k
        .consumer("smoke-reader", &unique("smoke-reader"), read_committed)
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// A transactional producer (a fresh transactional id from `tx`) with a transaction begun.
fn begun_transaction(
    k: &KafkaConfig,
    client: &str,
    tx: &str,
) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = k
        .transactional_producer(client, &unique(tx))
        .create()
        .unwrap();
    producer.init_transactions(T).unwrap();
    producer.begin_transaction().unwrap();
    producer
}

#[tokio::test]
async fn idempotent_produce_and_group_consume() {
    let k = kafka();
    let topic = unique("smoke-idem");
    create_topic(&k, &topic, 3).await;
    produce(&k, &topic, 50).await;

    let group = unique("smoke-group");
    let c: BaseConsumer = k.consumer("smoke-c", &group, true).create().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let got = drain(&c, 50, T);
    assert_eq!(got.len(), 50, "every produced record is consumed once");
    // Offsets are stored explicitly in tillstream (auto store is off): commit the positions.
    c.commit(&c.position().unwrap(), CommitMode::Sync).unwrap();
    let committed = c.committed(T).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0))
        .sum();
    assert_eq!(total, 50, "group offsets cover all records");
}

/// Runs one read-process-write transaction over `n` inputs and either commits or aborts it.
/// Returns (outputs seen by a read_committed reader, the group's committed offsets sum).
async fn read_process_write(commit: bool) -> (usize, i64) {
    let k = kafka();
    let input = unique("smoke-tx-in");
    let output = unique("smoke-tx-out");
    create_topic(&k, &input, 1).await;
    create_topic(&k, &output, 1).await;
    produce(&k, &input, 10).await;

    let group = unique("smoke-tx-group");
    let consumer: BaseConsumer = k.consumer("smoke-tx-c", &group, true).create().unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let inputs = drain(&consumer, 10, T);
    assert_eq!(inputs.len(), 10);

    let producer = begun_transaction(&k, "smoke-tx-p", "smoke-txid");
    for v in &inputs {
        let out = format!("processed-{v}");
        producer
            .send(BaseRecord::<str, str>::to(&output).payload(&out))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&input, 0, Offset::Offset(10))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), T)
        .unwrap();
    if commit {
        producer.commit_transaction(T).unwrap();
    } else {
        producer.flush(T).unwrap();
        producer.abort_transaction(T).unwrap();
    }

    // A read_committed reader: after an abort nothing may appear, so wait the full window.
    let r = reader(&k, &output, true);
    let seen = drain(&r, 10, if commit { T } else { Duration::from_secs(5) }).len();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&input, 0);
    let probe: BaseConsumer = k.consumer("smoke-probe", &group, true).create().unwrap();
    let committed = probe.committed_offsets(tpl, T).unwrap();
    let off = committed.elements()[0]
        .offset()
        .to_raw()
        .unwrap_or(-1)
        .max(0);
    (seen, off)
}

#[tokio::test]
async fn aborted_transaction_is_invisible_and_keeps_the_offset() {
    let (seen, offset) = read_process_write(false).await;
    assert_eq!(seen, 0, "read_committed must not see aborted records");
    assert_eq!(offset, 0, "the group offset must not move on abort");
}

#[tokio::test]
async fn committed_transaction_moves_outputs_and_offsets_together() {
    let (seen, offset) = read_process_write(true).await;
    assert_eq!(seen, 10, "all outputs visible after commit");
    assert_eq!(offset, 10, "group offset advanced with the transaction");
}

#[tokio::test]
async fn read_uncommitted_reader_does_see_aborted_records() {
    // Guards the test above against passing vacuously: the records really were written.
    let k = kafka();
    let output = unique("smoke-tx-dirty");
    create_topic(&k, &output, 1).await;
    let producer = begun_transaction(&k, "smoke-dirty-p", "smoke-txid");
    producer
        .send(BaseRecord::<str, str>::to(&output).payload("dirty"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(T).unwrap();
    producer.abort_transaction(T).unwrap();
    assert_eq!(drain(&reader(&k, &output, false), 1, T).len(), 1);
    assert_eq!(
        drain(&reader(&k, &output, true), 1, Duration::from_secs(5)).len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_deliveries_leaves_a_commit_nothing_to_flush() {
    // `wait_delivered` returns once every record of the transaction is acknowledged, so the
    // commit's own flush (which looks again only every 100 ms) has nothing to wait for.
    let k = kafka();
    let topic = unique("smoke-delivered");
    create_topic(&k, &topic, 3).await;
    let producer = begun_transaction(&k, "smoke-delivered", "smoke-delivered-tx");
    for i in 0..2_000 {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to(&topic).key(&key).payload("v"))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    assert!(producer.in_flight_count() > 0, "sent, not yet acknowledged");
    runtime::kafka::wait_delivered(&producer, T);
    assert_eq!(producer.in_flight_count(), 0, "every record acknowledged");
    assert!(
        producer.flush(Duration::ZERO).is_ok(),
        "a flush finds nothing left"
    );
    producer.commit_transaction(T).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stable_end_waits_for_a_transaction_open_on_the_partition() {
    // A restore reads a changelog partition to its stable end; while the previous owner's
    // last transaction is open there, `stable_end` says so instead of answering the offset
    // before that transaction.
    let k = kafka();
    let topic = unique("smoke-stable");
    create_topic(&k, &topic, 1).await;
    let committed: BaseConsumer = k
        .consumer("smoke-stable-c", &unique("smoke-stable"), true)
        .create()
        .unwrap();
    let probe: BaseConsumer = k
        .consumer("smoke-stable-u", &unique("smoke-stable"), false)
        .create()
        .unwrap();
    let end = || runtime::kafka::stable_end(&committed, &probe, &topic, 0, T).unwrap();
    assert_eq!(end(), Some((0, 0)), "an empty partition is stable");
    let producer = begun_transaction(&k, "smoke-stable-p", "smoke-stable-tx");
    producer
        .send(BaseRecord::<str, str>::to(&topic).key("k").payload("v"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(T).unwrap();
    assert_eq!(end(), None, "a transaction is open on the partition");
    producer.commit_transaction(T).unwrap();
    // The record and the commit marker.
    assert_eq!(end(), Some((0, 2)));
}
