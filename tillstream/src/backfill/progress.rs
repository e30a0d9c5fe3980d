//! Progress of a long phase (download, sort, produce): a bar with rate and ETA on a terminal,
//! and a log line with the same figures every `interval` otherwise (CI, `kubectl logs`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One phase's progress.
pub(crate) struct Progress {
    what: &'static str,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    /// Counted from here: a resumed run's rate is this run's, not the checkpoint's.
    base: u64,
    started: Instant,
    last_line: Instant,
    interval: Duration,
    bar: Option<ProgressBar>,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    /// Starts a phase at `done` of `total` (`None`: unknown).
    pub(crate) fn new(
        what: &'static str,
        unit: &'static str,
        done: u64,
        total: Option<u64>,
        interval: Duration,
    ) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = format!(
                "{{spinner}} {what} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
            );
            bar.set_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(done);
            bar
        });
        let now = Instant::now();
        Self {
            what,
            unit,
            total,
            done,
            base: done,
            started: now,
            last_line: now,
            interval,
            bar,
        }
    }

    /// Items per second in this run so far.
    pub(crate) fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.done - self.base) as f64 / secs
        } else {
            0.0
        }
    }

    /// The figures as one line: `12000/50000 events (24.0%), 3500/s, ETA 11s`.
    pub(crate) fn line(&self) -> String {
        let rate = self.rate();
        match self.total {
            Some(total) if total > 0 => {
                let pct = self.done as f64 * 100.0 / total as f64;
                let eta = if rate > 0.0 {
                    human(Duration::from_secs_f64(
                        total.saturating_sub(self.done) as f64 / rate,
                    ))
                } else {
                    "unknown".into()
                };
                format!(
                    "{}/{total} {} ({pct:.1}%), {rate:.0}/s, ETA {eta}",
                    self.done, self.unit
                )
            }
            _ => format!("{} {}, {rate:.0}/s", self.done, self.unit),
        }
    }

    /// Moves to `done`; `note` is shown beside the bar.
    pub(crate) fn set(&mut self, done: u64, note: impl FnOnce() -> String) {
        self.done = done;
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(note());
            }
            None if self.last_line.elapsed() >= self.interval => {
                self.last_line = Instant::now();
                eprintln!("{}: {} {}", self.what, self.line(), note());
            }
            None => {}
        }
    }

    /// Ends the phase; returns how long it took.
    pub(crate) fn finish(self) -> Duration {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_share_rate_and_eta() {
        let mut p = Progress::new(
            "produce",
            "events",
            100,
            Some(1100),
            Duration::from_secs(3600),
        );
        p.started -= Duration::from_secs(10);
        p.set(600, String::new);
        // 500 in 10 s = 50/s; 500 left = 10 s.
        assert_eq!(p.line(), "600/1100 events (54.5%), 50/s, ETA 10s");
        assert_eq!(human(Duration::from_secs(3725)), "1h02m");
    }
}
