//! Logging setup shared by every binary (the three services and the CLI): one flag set, text
//! or JSON lines.

use tracing_subscriber::EnvFilter;

/// The filter when neither `--log-level` nor `RUST_LOG` says otherwise: librdkafka's own
/// chatter is only interesting when it warns.
pub const DEFAULT_FILTER: &str = "info,rdkafka=warn";

/// How a binary logs. Flattened into every binary's arguments so `--log-json` /
/// `TILLSTREAM_LOG_JSON` and `--log-level` / `TILLSTREAM_LOG_LEVEL` mean the same everywhere.
/// These are process settings, not configuration keys: they are read before the configuration
/// is loaded, so a configuration error is logged in the chosen format.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log JSON lines (one object per line, for log shippers) instead of text.
    #[arg(
        long = "log-json",
        env = "TILLSTREAM_LOG_JSON",
        global = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false"
    )]
    pub json: bool,
    /// What to log: a level (`debug`) or `RUST_LOG`-style directives
    /// (`info,processor=debug`). Unset: `RUST_LOG`, else `info,rdkafka=warn`.
    #[arg(long = "log-level", env = "TILLSTREAM_LOG_LEVEL", global = true)]
    pub level: Option<String>,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--log-level` is not a valid filter.
    #[error("invalid --log-level / TILLSTREAM_LOG_LEVEL {value:?}: {message}")]
    Level {
        /// The rejected filter.
        value: String,
        /// The parser's complaint.
        message: String,
    },
}

impl LogArgs {
    /// The effective filter: `--log-level`, else `RUST_LOG`, else [`DEFAULT_FILTER`].
    pub fn filter(&self) -> Result<EnvFilter, TelemetryError> {
        match &self.level {
            Some(level) => EnvFilter::try_new(level).map_err(|e| TelemetryError::Level {
                value: level.clone(),
                message: e.to_string(),
            }),
            None => Ok(EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))),
        }
    }

    /// Initialises the global subscriber (once: a second call, as in tests starting several
    /// services in one process, is harmless).
    pub fn init(&self) -> Result<(), TelemetryError> {
        // stderr everywhere: the CLI's stdout is its answer (`--json` output for scripts).
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.filter()?)
            .with_writer(std::io::stderr)
            .with_target(true);
        let _ = if self.json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        Ok(())
    }
}

/// Text or JSON logs with the default filter (for tests and tools without flags).
pub fn init(json: bool) {
    let _ = LogArgs { json, level: None }.init();
}

#[cfg(test)]
mod tests {
    use super::LogArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
        rest: Vec<String>,
    }

    #[test]
    fn log_json_accepts_a_bare_flag_and_boolish_values() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.log.json);
        assert!(!parse(&["x"]).unwrap());
        assert!(parse(&["x", "--log-json"]).unwrap());
        assert!(parse(&["x", "--log-json=true"]).unwrap());
        assert!(!parse(&["x", "--log-json=false"]).unwrap());
        assert!(parse(&["x", "--log-json=1"]).unwrap());
        // A bare flag never swallows the next argument (a subcommand, a key).
        let c = Cli::try_parse_from(["x", "--log-json", "customer"]).unwrap();
        assert!(c.log.json);
        assert_eq!(c.rest, ["customer"]);
    }

    #[test]
    fn a_bad_level_is_an_error_naming_it() {
        let args = LogArgs {
            json: false,
            level: Some("info,=[".into()),
        };
        let err = args.filter().unwrap_err().to_string();
        assert!(err.contains("info,=["), "{err}");
    }
}
