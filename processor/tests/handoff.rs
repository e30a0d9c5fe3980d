//! A rebalance revokes every partition of an instance (eager protocol) and gives most of them
//! back: the partitions that stay are taken over from memory, not restored from the
//! changelog again, and their state is the one a restore would have read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};

/// Two orders for each of 40 customers, batch `tag`.
fn batch(tag: &str, at: i64) -> Vec<schemas::ShopifyEnvelope> {
    let mut orders = Vec::new();
    for c in 1..=40u64 {
        for o in 0..2u64 {
            let id = c * 100 + o + if tag == "b2" { 50 } else { 0 };
            orders.push(order(c, id, &format!("{tag}-{c}-{o}"), at + o as i64));
        }
    }
    orders
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_kept_through_a_rebalance_are_taken_over_not_restored() {
    let k = kafka();
    let topics = fresh_topics(&k, 4).await;
    let d = Deployment::new(&k, &topics, unique("handoff"));
    let one = [("TILLSTREAM__ENGINE__THREADS", "1")];
    let a = d.spawn_with("a", &one);
    wait_for("instance a", Duration::from_secs(90), || {
        a.ready().then_some(())
    });
    let at = runtime::now_ms() - 3_600_000;
    let first = batch("b1", at);
    produce(&k, &topics.raw, &first).await;
    wait_for("batch 1 counted", Duration::from_secs(120), || {
        (commands(&k, &topics).len() >= first.len()).then_some(())
    });

    // A second instance joins: every partition of a is revoked, two come back to it.
    let b = d.spawn_with("b", &one);
    let handoffs = || metric(&a, "tillstream_processor_restore_handoffs_total");
    let taken = wait_for(
        "a to take its partitions back",
        Duration::from_secs(90),
        || (b.ready() && a.ready() && handoffs().is_some_and(|n| n >= 1.0)).then(handoffs),
    );
    assert!(taken.is_some_and(|n| n <= 4.0), "handoffs {taken:?}");

    // The counts carry on from the state a took over (and b restored): 3 and 4 for everyone.
    let second = batch("b2", at + 10);
    produce(&k, &topics.raw, &second).await;
    let want = first.len() + second.len();
    let cmds = wait_for("batch 2 counted", Duration::from_secs(120), || {
        let c = commands(&k, &topics);
        (c.len() >= want).then_some(c)
    });
    assert_eq!(cmds.len(), want, "no duplicates");
    let counts = order_counts(&cmds);
    assert_eq!(counts.len(), 40);
    for (key, seen) in counts {
        assert_eq!(seen, vec![1, 2, 3, 4], "order counts of {key}");
    }
    drop((a, b));
}
