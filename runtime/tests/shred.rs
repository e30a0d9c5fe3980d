//! Crypto-shredding against the real broker: keys written by a sealer open bodies in a key
//! ring, also keys written after the ring loaded (the tail); a tombstone makes a subject's
//! bodies open for nobody; another writer's cached key is dropped when an erasure deletes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::Secret;
use runtime::partitioner::partition_for;
use runtime::shred::{ErasureConfig, KeyRing, Opened, Sealer, sealed_key_id};
use runtime::testing::{fresh_topics, kafka};

const CUSTOMER: &str = "shred-it.myshopify.com/c/1";
const OTHER: &str = "shred-it.myshopify.com/c/2";

fn cfg() -> ErasureConfig {
    ErasureConfig {
        master_key: Some(Secret::new("runtime-shred-test-master-key-0123456789")),
        ..ErasureConfig::default()
    }
}

fn opened(ring: &KeyRing, body: &[u8], key: &str, partitions: i32) -> Option<Vec<u8>> {
    match ring.open(body, partition_for(key, partitions)).unwrap() {
        Opened::Opened(b) => Some(b),
        Opened::KeyGone => None,
        Opened::Plain(_) => panic!("sealed body taken for plain"),
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_make_a_subjects_bodies_unreadable_and_writers_forget_them() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let writer = Sealer::for_kafka(&cfg(), &k, &topics).unwrap().unwrap();
    let before = writer
        .seal(CUSTOMER, br#"{"first_name":"Ada"}"#)
        .await
        .unwrap();
    let other = writer.seal(OTHER, br#"{"first_name":"Bo"}"#).await.unwrap();

    let mut ring = KeyRing::new(&cfg(), &k, &topics.keys).unwrap().unwrap();
    ring.load_all().unwrap();
    assert_eq!(ring.len(), 2);
    assert_eq!(
        opened(&ring, &before, CUSTOMER, 4).unwrap(),
        br#"{"first_name":"Ada"}"#
    );

    // A key written after the ring loaded: found by waiting for the tail, not refused.
    let late = Sealer::for_kafka(&cfg(), &k, &topics).unwrap().unwrap();
    let after = late.seal(CUSTOMER, b"{}").await.unwrap();
    assert_ne!(sealed_key_id(&after), sealed_key_id(&before));
    assert_eq!(opened(&ring, &after, CUSTOMER, 4).unwrap(), b"{}");

    // Erasure: the ring gives up the subject's keys (both writers'), the caller tombstones
    // them; a freshly loaded ring cannot open the subject's bodies any more, the other's yes.
    let gone = ring.erase(CUSTOMER);
    assert_eq!(gone.len(), 2, "{gone:?}");
    let producer: FutureProducer = k.producer("shred-test").create().unwrap();
    for (p, id) in &gone {
        assert_eq!(*p, partition_for(CUSTOMER, 4));
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&topics.keys)
                    .partition(*p)
                    .key(id.as_str()),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let mut fresh = KeyRing::new(&cfg(), &k, &topics.keys).unwrap().unwrap();
    fresh.load_all().unwrap();
    assert_eq!(opened(&fresh, &before, CUSTOMER, 4), None);
    assert_eq!(opened(&fresh, &after, CUSTOMER, 4), None);
    assert!(opened(&fresh, &other, OTHER, 4).is_some());

    // The writers watching the topic drop the deleted key: the next body of the subject (a new
    // person using the address) is sealed under a new key, which opens.
    let mut next = Vec::new();
    wait_for("the writer to drop the deleted key", || {
        next = futures::executor::block_on(late.seal(CUSTOMER, b"{\"again\":1}")).unwrap();
        sealed_key_id(&next) != sealed_key_id(&after)
    })
    .await;
    assert_eq!(
        opened(&fresh, &next, CUSTOMER, 4).unwrap(),
        b"{\"again\":1}"
    );
}
