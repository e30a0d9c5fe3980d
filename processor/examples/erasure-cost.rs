//! What the erasure registry costs per input: the check every input passes before dedup
//! (`Registry::covers`: two keyed HMAC-SHA256 digests, key and shop, and two hash lookups) and
//! the registry's memory, printed as JSON.
//!
//! ```sh
//! cargo run --release -p processor --example erasure-cost -- 100000 1000000
//! ```
//! Arguments: erased subjects in the registry (default 100,000), checks to time (1,000,000).

use std::hint::black_box;
use std::time::Instant;

use processor::erasure::{ErasureConfig, Registry};
use schemas::{CustomerKey, KeyKind, ShopDomain};

fn rss_kib() -> u64 {
    runtime::testing::rss_kib(std::process::id())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let erased: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let checks: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let shop = ShopDomain::parse("bench.myshopify.com").unwrap_or_else(|_| unreachable!());
    let key = |i: u64| {
        CustomerKey::new(
            &shop,
            KeyKind::Customer,
            &(6_000_000_000_000 + i).to_string(),
        )
    };

    let before = rss_kib();
    let mut registry = Registry::new(&ErasureConfig::default().hash_key);
    for i in 0..erased {
        let _ = registry.erase(&key(i), 1_767_225_600_000);
    }
    let after = rss_kib();

    // Keys that were never erased: the common case, every live input pays it.
    let keys: Vec<CustomerKey> = (0..1_000).map(|i| key(erased + 1 + i)).collect();
    let started = Instant::now();
    let mut hits = 0u64;
    for i in 0..checks {
        let k = &keys[usize::try_from(i % 1_000).unwrap_or(0)];
        hits += u64::from(registry.covers(black_box(k), black_box(1_767_225_600_001)));
    }
    let ns = started.elapsed().as_nanos() as f64 / checks as f64;
    let empty = Registry::new(&ErasureConfig::default().hash_key);
    let started = Instant::now();
    for i in 0..checks {
        let k = &keys[usize::try_from(i % 1_000).unwrap_or(0)];
        hits += u64::from(empty.covers(black_box(k), black_box(1_767_225_600_001)));
    }
    let ns_empty = started.elapsed().as_nanos() as f64 / checks as f64;
    println!(
        "{}",
        serde_json::json!({
            "erased_subjects": erased,
            "checks": checks,
            "hits": hits,
            "ns_per_check": (ns * 10.0).round() / 10.0,
            "ns_per_check_empty_registry": (ns_empty * 10.0).round() / 10.0,
            "registry_bytes_per_subject": ((after.saturating_sub(before)) * 1024) as f64 / erased.max(1) as f64,
        })
    );
}
