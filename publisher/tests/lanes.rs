//! Delivery lanes against real Kafka and the simulator: a saturated `updateCart` does not
//! delay the other lanes, carts coalesce to the last one, cross-lane order holds.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use iterable_sim::{EndpointLimit, Filter, SimConfig};
use rust_decimal::Decimal;
use schemas::command::{Action, IterableCommand};
use serde_json::json;

fn purchase(id: &str, user: usize) -> IterableCommand {
    command(
        id,
        user,
        Action::TrackPurchase {
            created_at_s: 1_700_000_000,
            total: Decimal::new(1999, 2),
            items: vec![item("bought")],
            data_fields: fields(json!({})),
        },
    )
}

/// The simulator with `commerce/updateCart` limited to `per_second`.
fn sim_config(cart_per_second: f64) -> SimConfig {
    let mut c = SimConfig::default();
    c.behaviour.track_creates_unknown_users = true;
    c.rate_limits.endpoints.insert(
        "commerce/updateCart".into(),
        EndpointLimit {
            per_second: Some(cart_per_second),
            burst: None,
            per_day: None,
        },
    );
    c
}

fn cart_skus(sim: &iterable_sim::SimHandle, user: usize) -> Option<Vec<String>> {
    let carts = sim.state().carts(&Filter {
        user_id: Some(format!("u{user}")),
        ..Filter::default()
    });
    let c = carts.into_iter().next()?;
    Some(
        c.items
            .iter()
            .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
            .collect(),
    )
}

/// Black Friday in miniature: 40 users each update their cart 30 times (1,200 carts at a
/// limit of 5/s would take four minutes one by one), interleaved with each user's profile
/// update and journey event. The events and profiles must arrive within seconds, and each
/// user's cart must end as the last one sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_carts_do_not_delay_other_lanes_and_coalesce_to_the_last_cart() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let sim = iterable_sim::spawn(sim_config(5.0)).await.unwrap();
    let mut c = config(&kafka, &topics, &sim.base_url());
    c.limits.commerce_update_cart.per_second = 4.5;
    c.limits.commerce_update_cart.concurrency = 2;
    c.batching.enabled = false;
    // Small bounds, so that an implementation that buffers carts one per command (instead of
    // one per user) pauses the consumer and holds the other lanes back.
    c.pipeline.max_pending = 400;
    c.pipeline.max_pending_per_lane = 200;
    let users = 40;
    let mut commands = Vec::new();
    for round in 0..30 {
        for u in 0..users {
            commands.push(cart(
                &format!("cart-{u}-{round}"),
                u,
                &format!("sku-{u}-{round}"),
            ));
            if round == 10 {
                commands.push(upsert(&format!("up-{u}"), u, json!({"tier": "vip"})));
                commands.push(event(&format!("ev-{u}"), u, 0));
            }
        }
    }
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let began = Instant::now();
    let (stop, handle) = start(c);
    wait_for("every journey event", Duration::from_secs(60), || {
        (sim_event_ids(&sim)
            .iter()
            .filter(|id| id.starts_with("ev-"))
            .count()
            == users)
            .then_some(())
    })
    .await;
    let events_after = began.elapsed();
    wait_for("every profile", Duration::from_secs(60), || {
        let vip = sim
            .state()
            .profiles(&Filter::default())
            .iter()
            .filter(|p| p.data_fields.get("tier") == Some(&json!("vip")))
            .count();
        (vip == users).then_some(())
    })
    .await;
    let profiles_after = began.elapsed();
    assert!(
        events_after < Duration::from_secs(10) && profiles_after < Duration::from_secs(10),
        "other lanes waited behind the carts: events after {events_after:?}, profiles after {profiles_after:?}"
    );
    // Every user's cart ends as the last one produced, with far fewer requests than carts.
    wait_for(
        "the last cart of every user",
        Duration::from_secs(60),
        || {
            (0..users)
                .all(|u| cart_skus(&sim, u) == Some(vec![format!("sku-{u}-29")]))
                .then_some(())
        },
    )
    .await;
    let cart_requests = sim.state().stats().endpoints["commerce/updateCart"].success;
    assert!(
        cart_requests < 30 * users as u64 / 3,
        "carts were not coalesced: {cart_requests} requests for {} carts",
        30 * users
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(sim_429s(&sim), 0);
}

/// Cross-lane order as documented: an event waits for its user's earlier profile write (the
/// simulator rejects events for unknown users, so an event sent first would be refused);
/// a purchase clears the carts queued before it and a later cart survives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_lane_order_is_kept_per_user() {
    let kafka = runtime::testing::kafka();
    let topics = runtime::testing::fresh_topics(&kafka, 3).await;
    let mut sc = sim_config(20.0);
    // Events for unknown users fail (Iterable's behaviour): the profile must come first.
    sc.behaviour.track_creates_unknown_users = false;
    // A slow profile lane, a fast events lane.
    sc.rate_limits.endpoints.insert(
        "users/update".into(),
        EndpointLimit {
            per_second: Some(20.0),
            burst: None,
            per_day: None,
        },
    );
    let sim = iterable_sim::spawn(sc).await.unwrap();
    let mut c = config(&kafka, &topics, &sim.base_url());
    c.limits.users_update.per_second = 18.0;
    c.limits.commerce_update_cart.per_second = 18.0;
    c.batching.enabled = false;
    let users = 60;
    let mut commands = Vec::new();
    for u in 0..users {
        commands.push(upsert(&format!("up-{u}"), u, json!({"n": u})));
        commands.push(event(&format!("ev-{u}"), u, 0));
        commands.push(cart(&format!("cart-a-{u}"), u, "before"));
        commands.push(purchase(&format!("buy-{u}"), u));
        if u % 2 == 0 {
            commands.push(cart(&format!("cart-b-{u}"), u, "after"));
        }
    }
    produce(&producer(&kafka), &topics.commands, &commands).await;
    let (stop, handle) = start(c);
    wait_for("every event and purchase", Duration::from_secs(60), || {
        let events = sim_event_ids(&sim)
            .iter()
            .filter(|id| id.starts_with("ev-"))
            .count();
        let purchases = sim.state().purchases(&Filter::default()).len();
        (events == users && purchases == users).then_some(())
    })
    .await;
    wait_for("final carts", Duration::from_secs(60), || {
        (0..users)
            .all(|u| {
                let want: Vec<String> = if u % 2 == 0 {
                    vec!["after".into()]
                } else {
                    vec![]
                };
                cart_skus(&sim, u).unwrap_or_default() == want
            })
            .then_some(())
    })
    .await;
    let stats = sim.state().stats();
    let track = stats.endpoints["events/track"];
    assert_eq!(
        (track.success, track.client_errors),
        (users as u64, 0),
        "an event overtook its profile: {stats:?}"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}
