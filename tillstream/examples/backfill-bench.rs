//! Backfill benchmark (a command, not a test): the real `tillstream backfill` binary against
//! shopify-sim's synthetic Admin API store of `--orders` orders, producing to the broker in
//! `TILLSTREAM_TEST_KAFKA` (default 127.0.0.1:9092; use a private one for millions of orders).
//!
//! ```sh
//! KAFKA_PORT=19492 scripts/kafka start
//! cargo build --release -p tillstream --bins --examples
//! TILLSTREAM_TEST_KAFKA=127.0.0.1:19492 target/release/examples/backfill-bench --orders 2000000
//! ```
//! Prints one JSON document: store size, events, wall time per phase, events/s, the peak
//! resident memory of the backfill process (sampled `VmHWM`, the kernel's high-water mark) and
//! the largest size its spill directory reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runtime::testing::{fresh_topics, kafka, unique};
use shopify_sim::{AdminOptions, SyntheticSpec, spawn_synthetic_admin};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` (peak resident set) of `pid` in KiB.
fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// The number after `label` in `text` (`"sorted in 12.3 s"` → 12.3).
fn after(text: &str, label: &str) -> Option<f64> {
    let rest = text.split(label).nth(1)?;
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

#[tokio::main]
async fn main() {
    let orders = arg("--orders", 2_000_000);
    let partitions = i32::try_from(arg("--partitions", 12)).unwrap();
    let k = kafka();
    let topics = fresh_topics(&k, partitions).await;
    let spec = SyntheticSpec::new(orders, 42);
    let opts = AdminOptions {
        access_token: "shpat_bench".into(),
        polls_to_complete: 1,
        run_time: Duration::from_millis(100),
        ..AdminOptions::default()
    };
    let t = Instant::now();
    let admin = spawn_synthetic_admin(spec, opts, "127.0.0.1:0")
        .await
        .unwrap();
    eprintln!(
        "synthetic store: {} customers, {} orders (counted in {:?})",
        admin.customers,
        admin.orders,
        t.elapsed()
    );
    let work = std::env::temp_dir().join(unique("backfill-bench"));
    std::fs::create_dir_all(&work).unwrap();
    let checkpoint = work.join("checkpoint.json");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("tillstream");
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args(["backfill", "--shop", "bench-store.myshopify.com"])
        .args(["--admin-url", &admin.base_url, "--poll-interval", "100ms"])
        .args(["--checkpoint", checkpoint.to_str().unwrap()])
        .args(["--progress-interval", "30s"])
        .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", "shpat_bench")
        // Every topic of the fresh catalogue (the backfill also reads the erasure registry
        // and, with a master key, the data keys).
        .envs(runtime::testing::service_env(&k, &topics))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it with --bins)", bin.display()));
    let pid = child.id();
    let (mut peak_kib, mut spill_peak) = (0u64, 0u64);
    let status = loop {
        peak_kib = peak_kib.max(hwm_kib(pid));
        spill_peak = spill_peak.max(dir_bytes(&work.join("checkpoint.spill")));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "backfill failed: {stdout}");
    let events = stdout
        .split("backfill complete: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let sort_s = after(&stdout, "sorted in").unwrap_or_default();
    let produce_s = after(&stdout, "s, produced in").unwrap_or_default();
    let report = serde_json::json!({
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "orders": admin.orders,
        "customers": admin.customers,
        "events": events,
        "partitions": partitions,
        "wall_s": (wall * 10.0).round() / 10.0,
        "download_and_sort_s": sort_s,
        "produce_s": produce_s,
        "events_per_s_end_to_end": (events as f64 / wall).round(),
        "events_per_s_produce": (events as f64 / produce_s.max(0.001)).round(),
        "peak_rss_mib": (peak_kib as f64 / 1024.0 * 10.0).round() / 10.0,
        "peak_spill_mib": spill_peak / (1 << 20),
        "downloads": admin.stats().downloads,
        "summary": stdout.lines().last(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let _ = std::fs::remove_dir_all(&work);
}
