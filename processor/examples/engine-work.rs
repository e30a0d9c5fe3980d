//! The engine's own work per input, without Kafka (a command, not a test): a stable A/B measure.
//!
//! ```sh
//! cargo run --release -p processor --example engine-work -- --events 200000 --rounds 5
//! ```
//! processor-bench's CPU per event includes librdkafka and moves with the host by ±10 µs
//! between identical runs on a shared VM, more than most single changes save. This command runs
//! what the engine does for each input in one thread, on the same shopify-sim payloads, with
//! the same `PartitionState` and marketing rules, and times each stage: decoding the envelope,
//! routing and the dedup window, the rules (with the aggregate lent from the state), encoding
//! their effects, firing due timers, and the commit's changelog records (every `--txn` inputs).
//! The Kafka sends, metrics and trail are left out; erasure and crypto-shredding are not
//! exercised (no redacts in the simulator's store). Each round starts from empty state;
//! the JSON gives every round and the median, in µs per input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use processor::content::fingerprints;
use processor::state::PartitionState;
use rules::{Ctx, Effect, MarketingRules, Rules, RulesConfig};
use schemas::{CustomerKey, ShopifyEnvelope};

#[path = "support/events.rs"]
#[allow(dead_code)] // each example uses part of it
mod bench_events;
use bench_events::{arg, median};

/// The processor binary's allocator (`processor/src/main.rs`), so allocation costs what it
/// costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: usize = 4;
const STAGES: [&str; 7] = [
    "decode",
    "route_dedup",
    "rules",
    "effects",
    "timers",
    "commit",
    "total",
];

/// This thread's CPU time in seconds (`/proc/thread-self/stat`, clock ticks).
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// What one pass did, for a check that the rounds did the same work.
#[derive(Default, PartialEq, Debug)]
struct Work {
    inputs: usize,
    duplicates: usize,
    commands: usize,
    timers_fired: usize,
    changelog_records: usize,
}

/// One pass over `records` from empty state: seconds per stage, and what was done.
fn pass(rules: &MarketingRules, records: &[(String, Vec<u8>)], txn: usize) -> ([f64; 7], Work) {
    let mut secs = [0.0f64; 7];
    let mut work = Work::default();
    let mut parts: Vec<PartitionState> =
        (0..PARTITIONS).map(|_| PartitionState::default()).collect();
    let mut env = ShopifyEnvelope::default();
    let watermark = processor::config::TimerSettings::default().watermark();
    let mut lap = Instant::now();
    let mut stage = |secs: &mut [f64; 7], i: usize| {
        let now = Instant::now();
        secs[i] += now.duration_since(lap).as_secs_f64();
        lap = now;
    };
    let cpu_started = thread_cpu_secs();
    for (n, (record_key, bytes)) in records.iter().enumerate() {
        env.decode_into(bytes).unwrap();
        stage(&mut secs, 0);
        let key = CustomerKey::parse(record_key).unwrap();
        let p = usize::try_from(processor::partitioner::partition_for(
            record_key,
            PARTITIONS as i32,
        ))
        .unwrap();
        let state = &mut parts[p];
        let event_time = env.triggered_at_ms.unwrap_or(env.received_at_ms);
        // Every input is raw here: it moves the partition's stream time, as in the engine.
        state.clock.on_input(event_time, event_time, &watermark);
        work.inputs += 1;
        let prints = fingerprints(&env);
        let dup = state.seen_before(key.as_str(), &prints, event_time, 86_400_000, 64);
        stage(&mut secs, 1);
        if dup {
            work.duplicates += 1;
            continue;
        }
        // Timers due by stream time fire before the input, as `Engine::fire_due_timers`.
        let now = state.stream_time();
        while let Some((key_text, timer)) = state.pop_due(now) {
            let tkey = CustomerKey::parse(&key_text).unwrap();
            state.mark_dirty(&key_text);
            let ctx = Ctx {
                now_ms: now,
                event_time_ms: timer.due_ms,
                wall_clock_ms: now,
            };
            let mut agg: rules::State = state.take_aggregate(&key_text);
            let effects = rules.on_timer(&tkey, &mut agg, &timer, &ctx).unwrap();
            state.set_aggregate(&key_text, agg, timer.due_ms);
            work.timers_fired += 1;
            work.commands += apply(state, &tkey, effects);
        }
        stage(&mut secs, 4);
        state.mark_dirty(key.as_str());
        let ctx = Ctx {
            now_ms: now,
            event_time_ms: event_time,
            wall_clock_ms: now,
        };
        let mut agg: rules::State = state.take_aggregate(key.as_str());
        let effects = rules.on_event(&key, &mut agg, &env, &ctx);
        let effects = match effects {
            Ok(effects) => {
                state.set_aggregate(key.as_str(), agg, event_time);
                effects
            }
            Err(_) => {
                state.put_back_aggregate(key.as_str(), agg);
                Vec::new()
            }
        };
        stage(&mut secs, 2);
        work.commands += apply(state, &key, effects);
        stage(&mut secs, 3);
        if (n + 1) % txn == 0 || n + 1 == records.len() {
            for s in &mut parts {
                for (_, record) in s.drain_changes() {
                    if let Some(r) = record {
                        std::hint::black_box(r.encode().unwrap());
                    }
                    work.changelog_records += 1;
                }
            }
            stage(&mut secs, 5);
        }
    }
    secs[6] = thread_cpu_secs() - cpu_started;
    (secs, work)
}

/// Encodes the effects as the engine does before sending them; returns the commands.
fn apply(state: &mut PartitionState, key: &CustomerKey, effects: Vec<Effect>) -> usize {
    let mut commands = 0;
    for effect in effects {
        match effect {
            Effect::Command(cmd) => {
                std::hint::black_box(cmd.encode().unwrap());
                commands += 1;
            }
            Effect::ShopifyCommand(cmd) => {
                std::hint::black_box(cmd.encode().unwrap());
            }
            Effect::SetTimer(t) => state.set_timer(key.as_str(), t),
            Effect::CancelTimer { timer_id } => state.cancel_timer(key.as_str(), &timer_id),
            Effect::Forward { envelope, .. } => {
                std::hint::black_box(envelope.encode().unwrap());
            }
            Effect::DataReport(r) => {
                std::hint::black_box(r.to_string());
            }
            Effect::Purge => state.purge(key.as_str()),
            Effect::Suppressed { .. } => {}
        }
    }
    state.mark_dirty(key.as_str());
    commands
}

fn main() {
    let size = |name, default| usize::try_from(arg(name, default)).unwrap_or(usize::MAX);
    let n = size("--events", 200_000);
    let rounds = size("--rounds", 5).max(1);
    let txn = size("--txn", 5_000).max(1);
    let records: Vec<(String, Vec<u8>)> = bench_events::events(n)
        .iter()
        .map(|e| (e.routing_key.clone(), e.encode().unwrap()))
        .collect();
    let rules = MarketingRules::new(RulesConfig::default());
    let mut per_round: Vec<[f64; 7]> = Vec::new();
    let mut first: Option<Work> = None;
    for _ in 0..rounds {
        let (secs, work) = pass(&rules, &records, txn);
        match &first {
            None => first = Some(work),
            Some(w) => assert_eq!(w, &work, "two rounds did different work"),
        }
        per_round.push(secs.map(|s| s * 1e6 / records.len().max(1) as f64));
    }
    let work = first.unwrap();
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    let mut stages = serde_json::Map::new();
    for (i, name) in STAGES.iter().enumerate() {
        stages.insert(
            (*name).to_owned(),
            serde_json::json!({
                "median_us": round2(median(per_round.iter().map(|r| r[i]).collect())),
                "rounds_us": per_round.iter().map(|r| round2(r[i])).collect::<Vec<_>>(),
            }),
        );
    }
    let out = serde_json::json!({
        "what": "the engine's per-input work without Kafka, one thread, µs per input (total: thread CPU time; stages: wall time)",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "input": {"events": records.len(), "partitions": PARTITIONS, "records_per_transaction": txn},
        "work": {"inputs": work.inputs, "duplicates": work.duplicates, "commands": work.commands, "timers_fired": work.timers_fired, "changelog_records": work.changelog_records},
        "rounds": rounds,
        "stages": stages,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
