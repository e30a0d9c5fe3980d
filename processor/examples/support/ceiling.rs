//! The stateless transactional pass-through that processor-bench compares the processor with.

use super::*;

/// The stateless transactional pass-through: records/s and CPU µs per record (this process's
/// CPU from its first record to its last commit: librdkafka's cost of consuming and producing
/// the same bodies in transactions, the floor under the processor's own figure).
pub(crate) fn ceiling(k: &KafkaConfig, input: &str, n: usize, txn_records: usize) -> (f64, f64) {
    let output = unique("bench-out");
    let mut cfg = k.client("bench-admin");
    cfg.set("group.id", unique("bench-ceiling"));
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        k.client("bench-admin").create().unwrap();
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        rt.block_on(admin.create_topics(
            &[rdkafka::admin::NewTopic::new(
                &output,
                PARTITIONS,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        ))
        .unwrap()
    });
    let group = unique("bench-ceiling");
    let consumer: BaseConsumer = k.consumer("bench-c", &group, true).create().unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = k
        .transactional_producer("bench-p", &unique("bench-tx"))
        .create()
        .unwrap();
    producer.init_transactions(T).unwrap();
    let mut done = 0;
    let mut in_txn = 0;
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let mut started: Option<(Instant, f64)> = None;
    producer.begin_transaction().unwrap();
    let commit = |offsets: &HashMap<i32, i64>| {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(input, *p, Offset::Offset(*o))
                .unwrap();
        }
        producer
            .send_offsets_to_transaction(&tpl, &consumer.group_metadata().unwrap(), T)
            .unwrap();
        // As the processor commits: without it each commit waits at least 100 ms in
        // rust-rdkafka's flush (runtime::kafka::wait_delivered), and the ceiling was 20-30 % lower.
        runtime::kafka::wait_delivered(&producer, T);
        producer.commit_transaction(T).unwrap();
        producer.begin_transaction().unwrap();
    };
    while done < n {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        started.get_or_insert_with(|| (Instant::now(), cpu_secs(std::process::id())));
        let mut rec =
            BaseRecord::<[u8], [u8]>::to(&output).payload(m.payload().unwrap_or_default());
        if let Some(key) = m.key() {
            rec = rec.key(key);
        }
        while let Err((e, r)) = producer.send(rec) {
            assert!(
                matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "{e}"
            );
            rec = r;
            std::thread::sleep(Duration::from_millis(1));
        }
        offsets.insert(m.partition(), m.offset() + 1);
        done += 1;
        in_txn += 1;
        if in_txn >= txn_records {
            commit(&offsets);
            in_txn = 0;
        }
    }
    commit(&offsets);
    let (secs, cpu) = started
        .map(|(at, cpu)| {
            (
                at.elapsed().as_secs_f64(),
                cpu_secs(std::process::id()) - cpu,
            )
        })
        .unwrap_or((1.0, 0.0));
    (n as f64 / secs, cpu * 1e6 / n as f64)
}
