//! Measures resident memory per key of the in-memory partition state alone (no Kafka).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use processor::state::PartitionState;
use schemas::{DedupRecord, KeyStateRecord, TimerRecord};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let parts: Vec<String> = std::env::args().skip(2).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let agg = "x".repeat(338);
    let before = rss_kib();
    let mut p = PartitionState::default();
    for i in 0..n {
        let key = format!("bench.myshopify.com/c/{}", 6_000_000_000_000 + i);
        let rec = KeyStateRecord {
            key: key.clone(),
            shop_domain: "bench.myshopify.com".into(),
            updated_at_ms: 1,
            aggregate_json: if parts.contains(&"noagg") {
                "{}".into()
            } else {
                format!("\"{agg}\"")
            },
            timers: if parts.contains(&"notimer") {
                vec![]
            } else {
                vec![TimerRecord {
                    kind: "lapse".into(),
                    timer_id: "lapse".into(),
                    due_ms: 1 + i as i64,
                    payload_json: "{}".into(),
                }]
            },
            dedup: if parts.contains(&"nodedup") {
                vec![]
            } else {
                vec![DedupRecord {
                    fingerprint: format!("{:016x}", i * 7919),
                    event_time_ms: 1,
                }]
            },
        };
        p.load(&key, Some(rec)).unwrap();
    }
    let after = rss_kib();
    println!("{n} keys {parts:?}: {} B/key", (after - before) * 1024 / n);
}
