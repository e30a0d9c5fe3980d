//! `tillstream replay`: rebuild the processor's state from a point in the raw topic.
//!
//! The processor's state is derived from the raw topic (the system of record, unlimited
//! retention), so a replay moves the processor group's committed offsets back and, when the
//! replay starts at the beginning, empties the topics that hold the old run's state (the
//! changelog and the repartition topic). It only ever acts on a group with no live members:
//! a running processor would keep its in-memory state and overwrite the committed offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use runtime::{KafkaConfig, TopicsConfig};

const TIMEOUT: Duration = Duration::from_secs(30);

/// How long topic deletion and re-creation may take before the command gives up.
const TOPIC_DEADLINE: Duration = Duration::from_secs(120);

/// `tillstream replay`.
#[derive(Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub(crate) struct ReplayArgs {
    /// Where to start: `earliest` (rebuild all state from the first raw record; deletes and
    /// recreates the changelog and repartition topics) or an RFC 3339 timestamp such as
    /// `2025-06-01T00:00:00Z` (reprocess raw records from that time, keeping the state).
    #[arg(long)]
    from: String,
    /// The processor's consumer group (its `application_id`).
    #[arg(
        long,
        default_value = "tillstream-processor",
        env = "TILLSTREAM__APPLICATION_ID"
    )]
    group: String,
    /// Print what would happen, per partition, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The processor's dedup window (`engine.dedup_window`): a timestamp replay older than
    /// this is refused, because already-processed events could no longer be recognised.
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    dedup_window: Duration,
}

const AFTER_HELP: &str = "\
Procedure: stop every processor instance first (the command refuses while the group has live
members), run with --dry-run to see the offsets and records involved, run for real, then start
the processors again: they rebuild state from the new offsets.

Replayed events reach Iterable again: every Iterable event and purchase id is derived from its
input, so they update what is there instead of duplicating it, and journey-triggering events
older than the rules' freshness horizons are suppressed (profile fields still update).";

/// Where the replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Timestamp(i64),
}

fn parse_from(text: &str) -> anyhow::Result<Start> {
    if text.eq_ignore_ascii_case("earliest") {
        return Ok(Start::Earliest);
    }
    let ts = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("--from must be `earliest` or an RFC 3339 timestamp (e.g. 2025-06-01T00:00:00Z), not {text:?}"))?;
    Ok(Start::Timestamp(ts.timestamp_millis()))
}

/// One partition's plan.
struct PartitionPlan {
    partition: i32,
    committed: Option<i64>,
    new: i64,
    high: i64,
}

impl PartitionPlan {
    /// The position the processor would resume from today: the committed offset, else the
    /// beginning (the processor's `auto.offset.reset` is `earliest`).
    fn current(&self, low: i64) -> i64 {
        self.committed.unwrap_or(low)
    }
}

/// Runs `tillstream replay`.
pub(crate) async fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    args: &ReplayArgs,
) -> anyhow::Result<()> {
    let from = parse_from(&args.from)?;
    if let Start::Timestamp(ts) = from {
        let window_ms = i64::try_from(args.dedup_window.as_millis()).unwrap_or(i64::MAX);
        if runtime::now_ms().saturating_sub(ts) > window_ms {
            bail!(
                "{} is older than the processor's dedup window ({}): events after it that were already \
                 processed could no longer be recognised as duplicates. Use --from earliest to rebuild \
                 all state instead.",
                args.from,
                humantime::format_duration(args.dedup_window)
            );
        }
    }
    let consumer: BaseConsumer = kafka
        .consumer("tillstream-replay", &args.group, true)
        .create()
        .context("cannot create a Kafka client")?;

    let mode = if args.dry_run {
        " (dry run: nothing is changed)"
    } else {
        ""
    };
    match from {
        Start::Earliest => println!(
            "Replay of consumer group {} from the earliest raw record{mode}",
            args.group
        ),
        Start::Timestamp(_) => println!(
            "Replay of consumer group {} from {}{mode}",
            args.group, args.from
        ),
    }
    ensure_no_members(&consumer, &args.group)?;
    println!("Group {}: no live members.", args.group);
    check_co_partitioning(&consumer, topics)?;

    let raw_plan = plan_raw(&consumer, topics, &args.group, from)?;
    print_plan(&topics.raw, &raw_plan.0, &raw_plan.1);

    match from {
        Start::Earliest => {
            // Deleting the state is only safe when the raw topic still holds every event.
            let trimmed: Vec<String> = raw_plan
                .1
                .iter()
                .filter(|(_, low)| **low > 0)
                .map(|(p, low)| format!("partition {p} starts at offset {low}"))
                .collect();
            if !trimmed.is_empty() {
                bail!(
                    "{} no longer holds every event ({}): rebuilding from it would lose the state of the \
                     deleted events. Its retention must be unlimited (`tillstream topics apply` sets it); \
                     use --from <timestamp> to reprocess while keeping the state.",
                    topics.raw,
                    trimmed.join(", ")
                );
            }
            let changelog_records = record_count(&consumer, &topics.changelog)?;
            let repartition_records = record_count(&consumer, &topics.repartition)?;
            let verb = if args.dry_run {
                "Would delete and recreate"
            } else {
                "Deleting and recreating"
            };
            println!("\n{verb} the previous run's state:");
            println!(
                "  {:<44} {changelog_records} records (compacted state)",
                topics.changelog
            );
            println!(
                "  {:<44} {repartition_records} records (events re-keyed to their customer); committed offsets become 0",
                topics.repartition
            );
            print_notes(from);
            if args.dry_run {
                return Ok(());
            }
            topics
                .apply(kafka)
                .await
                .context("the topic catalogue does not match the cluster; nothing was changed")?;
            // Raw offsets first: if anything below fails, a processor started now replays
            // from the beginning (deduplicating what its old state already holds) rather
            // than resuming with emptied state.
            let raw = offsets_tpl(&topics.raw, raw_plan.0.iter().map(|p| (p.partition, p.new)))?;
            commit(&consumer, &raw, &args.group)?;
            recreate_state_topics(kafka, &consumer, topics).await?;
            let repartition =
                offsets_tpl(&topics.repartition, (0..topics.partitions).map(|p| (p, 0)))?;
            commit(&consumer, &repartition, &args.group)
                .context("run the replay again once the processors are stopped")?;
        }
        Start::Timestamp(_) => {
            print_notes(from);
            if args.dry_run {
                return Ok(());
            }
            let changed = raw_plan
                .0
                .iter()
                .filter(|p| Some(p.new) != p.committed)
                .map(|p| (p.partition, p.new));
            let tpl = offsets_tpl(&topics.raw, changed)?;
            if tpl.count() > 0 {
                ensure_no_members(&consumer, &args.group)?;
                commit(&consumer, &tpl, &args.group)?;
            }
        }
    }
    println!(
        "\nDone. Start the processors: they restore from {} and resume from the new offsets.",
        topics.changelog
    );
    Ok(())
}

/// Refuses while the group has members: their in-memory state and their next commit would
/// undo the replay, and the broker rejects commits from outside a live group anyway.
pub(crate) fn ensure_no_members(consumer: &BaseConsumer, group: &str) -> anyhow::Result<()> {
    let list = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .with_context(|| format!("cannot describe consumer group {group}"))?;
    let members: Vec<String> = list
        .groups()
        .iter()
        .flat_map(|g| g.members())
        .map(|m| {
            format!(
                "{} (client {}, host {})",
                m.id(),
                m.client_id(),
                m.client_host()
            )
        })
        .collect();
    if !members.is_empty() {
        bail!(
            "consumer group {group} still has {} live member(s):\n  {}\nStop the processors first (every instance), \
             wait until they have left the group, then run the replay again.",
            members.len(),
            members.join("\n  ")
        );
    }
    Ok(())
}

/// Partition count of `topic`, or an error naming it when it does not exist.
pub(crate) fn partition_count<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> anyhow::Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("cannot read metadata of {topic}"))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
        }
        _ => bail!(
            "topic {topic} does not exist (run `tillstream topics apply`, and check the TILLSTREAM__TOPICS__* names)"
        ),
    }
}

/// The co-partitioned topics must agree with the configured partition count before anything
/// is deleted: recreating the state topics with another count would split customers' state.
fn check_co_partitioning(consumer: &BaseConsumer, topics: &TopicsConfig) -> anyhow::Result<()> {
    for t in [&topics.raw, &topics.changelog, &topics.repartition] {
        let n = partition_count(consumer, t)?;
        if n != topics.partitions {
            bail!(
                "{t} has {n} partitions but the configuration says {}; fix topics.partitions first",
                topics.partitions
            );
        }
    }
    Ok(())
}

/// Committed offsets of `group` on every partition of `topic` (None = nothing committed).
fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, partitions - 1);
    let got = consumer
        .committed_offsets(tpl, TIMEOUT)
        .with_context(|| format!("cannot read committed offsets on {topic}"))?;
    Ok(got
        .elements_for_topic(topic)
        .iter()
        .map(|e| {
            let off = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), off)
        })
        .collect())
}

/// The raw topic's plan and each partition's low watermark.
fn plan_raw(
    consumer: &BaseConsumer,
    topics: &TopicsConfig,
    group: &str,
    from: Start,
) -> anyhow::Result<(Vec<PartitionPlan>, BTreeMap<i32, i64>)> {
    let n = topics.partitions;
    let committed = committed(consumer, &topics.raw, n)?;
    let mut by_time: BTreeMap<i32, Option<i64>> = BTreeMap::new();
    if let Start::Timestamp(ts) = from {
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(&topics.raw, p, Offset::Offset(ts))?;
        }
        let found = consumer
            .offsets_for_times(tpl, TIMEOUT)
            .context("cannot look up offsets by time")?;
        for e in found.elements_for_topic(&topics.raw) {
            by_time.insert(
                e.partition(),
                if let Offset::Offset(o) = e.offset() {
                    Some(o)
                } else {
                    None
                },
            );
        }
    }
    let mut plans = Vec::new();
    let mut lows = BTreeMap::new();
    for p in 0..n {
        let (low, high) = consumer
            .fetch_watermarks(&topics.raw, p, TIMEOUT)
            .with_context(|| format!("cannot read watermarks of {}[{p}]", topics.raw))?;
        lows.insert(p, low);
        let committed = committed.get(&p).copied().flatten();
        let mut plan = PartitionPlan {
            partition: p,
            committed,
            new: low,
            high,
        };
        if let Start::Timestamp(_) = from {
            // No record at or after the time: the partition's end. Never move a partition
            // forward: that would skip records the processor has not read yet.
            let at = by_time.get(&p).copied().flatten().unwrap_or(high).max(low);
            plan.new = at.min(plan.current(low));
        }
        plans.push(plan);
    }
    tracing::debug!(group, partitions = n, "Replay planned.");
    Ok((plans, lows))
}

fn print_plan(topic: &str, plans: &[PartitionPlan], lows: &BTreeMap<i32, i64>) {
    println!("\n{topic}: committed offset → new offset, records to reprocess");
    println!(
        "  {:>9}  {:>12}    {:<12} {:>10}",
        "partition", "committed", "new", "records"
    );
    let mut total = 0i64;
    for p in plans {
        let low = lows.get(&p.partition).copied().unwrap_or(0);
        let committed = p
            .committed
            .map_or_else(|| "none".to_owned(), |c| c.to_string());
        let records = (p.high - p.new).max(0);
        total += records;
        let note = if p.new == p.current(low) && p.committed.is_some() {
            "  (unchanged)"
        } else {
            ""
        };
        println!(
            "  {:>9}  {committed:>12} →  {:<12} {records:>10}{note}",
            p.partition, p.new
        );
    }
    println!("  {:>9}  {:>12}    {:<12} {total:>10}", "total", "", "");
}

fn print_notes(from: Start) {
    println!("\nWhat to expect:");
    match from {
        Start::Earliest => {
            println!(
                "  * Every raw event is processed again in event-time order; state, timers and dedup windows are rebuilt."
            );
            println!(
                "  * Poison records are dead-lettered again (new copies in the processor's dead-letter topic)."
            );
        }
        Start::Timestamp(_) => {
            println!(
                "  * WARNING: the changelog (current state) is kept. Events before the timestamp are not reprocessed;"
            );
            println!(
                "    events after it that were already processed are recognised as duplicates only through the"
            );
            println!(
                "    processor's dedup window (7 days of event time by default). Replays older than the window"
            );
            println!("    must use --from earliest.");
        }
    }
    println!(
        "  * Iterable ids are deterministic (derived from the input), so replayed events and purchases update"
    );
    println!("    what Iterable has instead of duplicating it.");
    println!(
        "  * Journey-triggering events older than the rules' freshness horizons are suppressed; profile fields"
    );
    println!("    still update.");
}

/// Records currently in `topic` (sum of high − low watermarks; compaction may leave gaps).
fn record_count(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
    let n = partition_count(consumer, topic)?;
    let mut total = 0;
    for p in 0..n {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .with_context(|| format!("cannot read watermarks of {topic}[{p}]"))?;
        total += (high - low).max(0);
    }
    Ok(total)
}

fn offsets_tpl(
    topic: &str,
    offsets: impl Iterator<Item = (i32, i64)>,
) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    Ok(tpl)
}

/// Commits offsets for the group from outside it; the broker accepts this only while the
/// group has no members, which is exactly the condition the replay needs.
fn commit(consumer: &BaseConsumer, tpl: &TopicPartitionList, group: &str) -> anyhow::Result<()> {
    consumer.assign(tpl).context("cannot assign partitions")?;
    consumer.commit(tpl, CommitMode::Sync).with_context(|| {
        format!("cannot commit the new offsets for group {group} (did a processor start?)")
    })?;
    consumer.unassign().ok();
    for e in tpl.elements() {
        if let Offset::Offset(o) = e.offset() {
            tracing::debug!(
                topic = e.topic(),
                partition = e.partition(),
                offset = o,
                "Committed."
            );
        }
    }
    println!(
        "\nCommitted {} partition offset(s) for group {group}.",
        tpl.count()
    );
    Ok(())
}

/// Deletes the changelog and repartition topics and creates them again, empty, with the
/// catalogue's partitions and configs.
async fn recreate_state_topics(
    kafka: &KafkaConfig,
    consumer: &BaseConsumer,
    topics: &TopicsConfig,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.client("tillstream-replay-admin").create()?;
    let names = [topics.changelog.as_str(), topics.repartition.as_str()];
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("deleting {}", names.join(", ")));
    let results = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .context("cannot delete the state topics")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => bail!("cannot delete {topic}: {code}"),
        }
    }
    let deadline = Instant::now() + TOPIC_DEADLINE;
    // Deletion is asynchronous on the broker: wait until metadata no longer lists them, or
    // the re-creation below would "verify" the old topics.
    loop {
        let md = consumer.fetch_metadata(None, TIMEOUT)?;
        if !md
            .topics()
            .iter()
            .any(|t| names.contains(&t.name()) && t.error().is_none())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the broker still lists {} after {:?}",
                names.join(", "),
                TOPIC_DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spinner.set_message(format!("recreating {}", names.join(", ")));
    loop {
        match topics.apply(kafka).await {
            Ok(_) => {}
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("cannot recreate the state topics");
            }
            Err(e) => tracing::debug!(error = %e, "Re-creation not possible yet; retrying."),
        }
        let empty = names.iter().all(|t| {
            partition_count(consumer, t).is_ok_and(|n| n == topics.partitions)
                && (0..topics.partitions).all(|p| {
                    consumer
                        .fetch_watermarks(t, p, TIMEOUT)
                        .is_ok_and(|(_, high)| high == 0)
                })
        });
        if empty {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not come back empty within {:?}",
                names.join(", "),
                TOPIC_DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spinner.finish_and_clear();
    println!(
        "Recreated {} and {} (empty).",
        topics.changelog, topics.repartition
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from() {
        assert_eq!(parse_from("earliest").ok(), Some(Start::Earliest));
        assert_eq!(
            parse_from("2025-06-01T00:00:00Z").ok(),
            Some(Start::Timestamp(1_748_736_000_000))
        );
        assert_eq!(
            parse_from("2025-06-01T02:00:00+02:00").ok(),
            Some(Start::Timestamp(1_748_736_000_000))
        );
        assert!(parse_from("yesterday").is_err());
    }
}
