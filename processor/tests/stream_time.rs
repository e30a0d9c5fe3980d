//! The `stream_time` timer clock against the real broker: only a partition's own raw input
//! moves its stream time, so a forward read ahead of the raw backlog fires no timer early.
//!
//! Several engine threads (or instances) read their raw partitions at different speeds, so a
//! partition's repartition input can hold forwards whose event time is hours ahead of its own
//! raw backlog (seen after a broker restart with two engine threads, issue 17: the forwards of
//! the thread that caught up first moved the other partitions' stream time past checkouts
//! whose completing orders were still in their raw backlog).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use runtime::testing::{fresh_topics, kafka, unique};

const MIN: i64 = 60_000;

fn abandoned_for(cmds: &[schemas::IterableCommand], key: &str) -> usize {
    cmds.iter()
        .filter(|c| event_name(c) == "checkout_abandoned" && c.customer_key == key)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forward_ahead_of_the_raw_backlog_fires_no_timer_early() {
    let k = kafka();
    // One partition: the raw input and the forward meet on it whatever the partitioner does.
    let topics = fresh_topics(&k, 1).await;
    let d = Deployment::new(&k, &topics, unique("stream-time"));
    // Stream time alone decides, never the wall clock: the store is hours in the past (within
    // the abandoned-checkout email's freshness of a day).
    let p = d.spawn_with(
        "st",
        &[
            ("TILLSTREAM__RULES__KIND", "marketing"),
            ("TILLSTREAM__ENGINE__CAUGHT_UP_LAG", "-1"),
        ],
    );
    let t0 = runtime::now_ms() - 10 * 60 * MIN;
    let (a, b) = ("a@stream.example", "b@stream.example");
    let (key_a, key_b) = (format!("{SHOP}/e/{a}"), format!("{SHOP}/e/{b}"));

    // A's guest checkout: its abandoned-checkout timer comes due about an hour later.
    let checkout_a = envelope(
        "checkouts/create",
        "d-checkout-a",
        t0,
        &guest_checkout_body("tok-a", a, "40.00", t0),
    );
    produce_in_order(&k, &topics.raw, &[(None, checkout_a)]).await;

    // Another key's order, five hours later, arrives as a forward (the repartition topic)
    // before the raw backlog behind the checkout is read; its purchase shows it was applied.
    let later = t0 + 5 * 60 * MIN;
    let forward = envelope(
        "orders/paid",
        "d-forward",
        later,
        &order_body(9_001, 777, "f@stream.example", "25.00", "tok-f", later),
    );
    produce_in_order(&k, &topics.repartition, &[(Some(0), forward)]).await;
    let forwarded_key = customer_key(777);
    wait_for("the forward's purchase", Duration::from_secs(60), || {
        commands(&k, &topics)
            .iter()
            .any(|c| c.customer_key == forwarded_key)
            .then_some(())
    });

    // The raw backlog: A's order completes the checkout ten minutes after it; B abandons a
    // checkout; a third customer's order three hours later moves the raw input past both
    // due times.
    let placed = t0 + 10 * MIN;
    let b_at = t0 + 20 * MIN;
    let filler_at = t0 + 3 * 60 * MIN;
    let backlog = [
        envelope(
            "orders/paid",
            "d-order-a",
            placed,
            &guest_order_body(9_002, a, "40.00", "tok-a", placed),
        ),
        envelope(
            "checkouts/create",
            "d-checkout-b",
            b_at,
            &guest_checkout_body("tok-b", b, "30.00", b_at),
        ),
        envelope(
            "orders/paid",
            "d-filler",
            filler_at,
            &order_body(9_003, 778, "g@stream.example", "25.00", "tok-g", filler_at),
        ),
    ];
    let backlog: Vec<_> = backlog.into_iter().map(|e| (None, e)).collect();
    produce_in_order(&k, &topics.raw, &backlog).await;

    // B's timer fires on the raw input (the positive control), A's never.
    wait_for("B's abandoned checkout", Duration::from_secs(60), || {
        (abandoned_for(&commands(&k, &topics), &key_b) > 0).then_some(())
    });
    let cmds = wait_drained(&k, &topics, &d.application_id);
    assert_eq!(abandoned_for(&cmds, &key_b), 1, "B abandoned once");
    assert_eq!(
        abandoned_for(&cmds, &key_a),
        0,
        "A's checkout was completed before its due time; the forward five hours ahead must \
         not have fired its timer"
    );
    drop(p);
}
