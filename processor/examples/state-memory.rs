//! Measures resident memory per key of the in-memory partition state alone (no Kafka).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use processor::state::PartitionState;
use runtime::testing::rss_kib;
use schemas::{DedupRecord, KeyStateRecord, TimerRecord};

/// What the marketing rules hold for a customer with two paid orders (as in processor-bench),
/// with per-customer ids, times and hashes so nothing is artificially repetitive.
fn aggregate(i: u64) -> String {
    let t = 1_767_279_600_000 + (i % 86_400) * 1_000;
    let h1 = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let h2 = h1.rotate_left(17);
    format!(
        r#"{{"p":{{"e":{{"t":{t2},"v":"customer{i}@example.com"}},"pf":{{"t":{t2},"fn":"Ada","ln":"Lovelace"}},"cu":"USD","f":4}},"o":[{{"i":{o1},"t":{t},"u":{t},"v":"120.50","s":"paid","f":773,"h":{h1}}},{{"i":{o2},"t":{t2},"u":{t2},"v":"89.99","s":"paid","f":773,"h":{h2}}}]}}"#,
        t2 = t + 86_400_000,
        o1 = 5_000_000_000 + 2 * i,
        o2 = 5_000_000_001 + 2 * i,
    )
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let parts: Vec<String> = std::env::args().skip(2).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let before = rss_kib(std::process::id());
    let mut p = PartitionState::default();
    for i in 0..n {
        let key = format!("bench.myshopify.com/c/{}", 6_000_000_000_000 + i);
        let rec = KeyStateRecord {
            key: key.clone(),
            shop_domain: "bench.myshopify.com".into(),
            updated_at_ms: 1_767_366_000_000,
            aggregate_json: if parts.contains(&"noagg") {
                "{}".into()
            } else {
                aggregate(i)
            },
            timers: if parts.contains(&"notimer") {
                vec![]
            } else {
                // The rules' win-back timer: due 90 days after the last order.
                vec![TimerRecord {
                    kind: "winback".into(),
                    timer_id: "winback".into(),
                    due_ms: 1_775_142_000_000 + (i % 86_400) as i64 * 1_000,
                    payload_json: format!(
                        r#"{{"last_order_id":"{}","last_order_ms":1767366000000}}"#,
                        5_000_000_001 + 2 * i
                    ),
                }]
            },
            dedup: if parts.contains(&"nodedup") {
                vec![]
            } else {
                vec![DedupRecord {
                    fingerprint: format!("{:016x}", i * 7919),
                    event_time_ms: 1_767_366_000_000,
                }]
            },
        };
        p.load(&key, Some(rec)).unwrap();
    }
    let after = rss_kib(std::process::id());
    let first = "bench.myshopify.com/c/6000000000000";
    println!(
        "one key's entry: {} bytes (aggregate {} packed)",
        p.entry_bytes(first).unwrap_or(0),
        p.get(first).map_or(0, |e| e.aggregate.len())
    );
    println!("{n} keys {parts:?}: {} B/key", (after - before) * 1024 / n);
}
