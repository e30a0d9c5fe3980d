//! The soak's command line.

use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: soak [--duration-secs S] [--rate PER_S] [--kill-min-secs S] [--kill-max-secs S] \
     [--broker-down-secs S] [--sample-secs S] [--seed N] [--partitions N] [--drain-timeout-secs S] \
     [--log-level LEVEL] [--clock inputs|stream_time (default inputs)] [--targets ingest,processor,publisher,brokers] [--no-probes] [--bootstrap HOST:PORT,...] [--out DIR]";

/// Which timer clock the processor runs with (`engine.timers.clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// Production's: a timer fires once every input that could cancel it is in. The history
    /// is sent compressed, so every delivery is a late arrival and timers wait until the
    /// sending has ended (what a backfill does), then fire.
    Inputs,
    /// The partition's stream time (compressed simulations): timers fire while sending, but
    /// a stall of the repartition topic moves the clock past facts still in flight.
    StreamTime,
}

impl Clock {
    /// The value of `engine.timers.clock`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Clock::Inputs => "inputs",
            Clock::StreamTime => "stream_time",
        }
    }
}

/// The soak's settings.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) duration: Duration,
    pub(crate) rate: f64,
    pub(crate) kill_min: u64,
    pub(crate) kill_max: u64,
    pub(crate) broker_down: Duration,
    pub(crate) sample: Duration,
    pub(crate) seed: u64,
    pub(crate) partitions: i32,
    pub(crate) drain_timeout: Duration,
    pub(crate) log_level: String,
    pub(crate) clock: Clock,
    /// What the faults may kill (`--targets`; default: every service and, on a private cluster,
    /// every broker).
    pub(crate) targets: Targets,
    /// Whether to send the latency probes (off: no end-to-end age, a pure scenario load).
    pub(crate) probes: bool,
    pub(crate) bootstrap: Option<String>,
    pub(crate) out: PathBuf,
}

/// What the faults may kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Targets {
    pub(crate) ingest: bool,
    pub(crate) processor: bool,
    pub(crate) publisher: bool,
    pub(crate) brokers: bool,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            ingest: true,
            processor: true,
            publisher: true,
            brokers: true,
        }
    }
}

impl Targets {
    /// `ingest,processor,publisher,brokers`, any non-empty subset.
    fn parse(list: &str) -> anyhow::Result<Self> {
        let mut t = Self {
            ingest: false,
            processor: false,
            publisher: false,
            brokers: false,
        };
        for name in list.split(',').map(str::trim) {
            match name {
                "ingest" => t.ingest = true,
                "processor" => t.processor = true,
                "publisher" => t.publisher = true,
                "brokers" => t.brokers = true,
                other => anyhow::bail!(
                    "--targets lists ingest, processor, publisher, brokers; got {other:?}"
                ),
            }
        }
        anyhow::ensure!(
            t != Targets {
                ingest: false,
                processor: false,
                publisher: false,
                brokers: false
            },
            "--targets is empty"
        );
        Ok(t)
    }
}

/// Parses the command line.
///
/// # Errors
/// On an unknown flag or a value that does not parse.
pub(crate) fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        duration: Duration::from_secs(3600),
        rate: 40.0,
        kill_min: 60,
        kill_max: 240,
        broker_down: Duration::from_secs(30),
        sample: Duration::from_secs(5),
        seed: chrono::Utc::now().timestamp().unsigned_abs(),
        partitions: 4,
        drain_timeout: Duration::from_secs(900),
        log_level: "warn".into(),
        clock: Clock::Inputs,
        targets: Targets::default(),
        probes: true,
        bootstrap: None,
        out: PathBuf::from("soak-out"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--duration-secs" => a.duration = Duration::from_secs(val()?.parse()?),
            "--rate" => a.rate = val()?.parse()?,
            "--kill-min-secs" => a.kill_min = val()?.parse()?,
            "--kill-max-secs" => a.kill_max = val()?.parse()?,
            "--broker-down-secs" => a.broker_down = Duration::from_secs(val()?.parse()?),
            "--sample-secs" => a.sample = Duration::from_secs_f64(val()?.parse()?),
            "--seed" => a.seed = val()?.parse()?,
            "--partitions" => a.partitions = val()?.parse()?,
            "--drain-timeout-secs" => a.drain_timeout = Duration::from_secs(val()?.parse()?),
            "--log-level" => a.log_level = val()?,
            "--clock" => {
                a.clock = match val()?.as_str() {
                    "inputs" => Clock::Inputs,
                    "stream_time" => Clock::StreamTime,
                    other => anyhow::bail!("--clock is inputs or stream_time, got {other}"),
                }
            }
            "--targets" => a.targets = Targets::parse(&val()?)?,
            "--no-probes" => a.probes = false,
            "--bootstrap" => a.bootstrap = Some(val()?),
            "--out" => a.out = PathBuf::from(val()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    anyhow::ensure!(a.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(!a.duration.is_zero(), "--duration-secs must be positive");
    anyhow::ensure!(!a.sample.is_zero(), "--sample-secs must be positive");
    anyhow::ensure!(
        // 0 disables the faults whatever the minimum (scripts/soak's usage says so).
        a.kill_max == 0 || a.kill_max >= a.kill_min,
        "--kill-max-secs must be 0 (no faults) or at least --kill-min-secs"
    );
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::Targets;

    #[test]
    fn targets_name_a_non_empty_subset() {
        let t = Targets::parse("processor").unwrap();
        assert!(t.processor && !t.ingest && !t.publisher && !t.brokers);
        let t = Targets::parse("brokers, ingest").unwrap();
        assert!(t.brokers && t.ingest && !t.processor);
        assert!(Targets::parse("").is_err());
        assert!(Targets::parse("zookeeper").is_err());
    }
}
