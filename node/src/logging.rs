//! Logging for Canopy's binaries: `tracing` to standard error, filtered by `RUST_LOG`
//! (default `warn`), as lines for people or as one JSON object per event for log collectors.
//! Colour codes are written only to a terminal, and never when `NO_COLOR` is set.

use std::io::IsTerminal;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields), for journald, Loki,
    /// Elasticsearch and the like.
    Json,
}

/// The logging flag both binaries take.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// How logs are written to standard error: `text` lines for people, or `json`, one
    /// object per event for log collectors. `RUST_LOG` sets what is logged (default `warn`;
    /// `info` shows the swarm, tasks and rounds).
    #[arg(
        long,
        global = true,
        env = "CANOPY_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
}

/// The `RUST_LOG` filter, or `warn` when it is unset or does not parse.
fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
}

/// Whether colour codes belong in the log: standard error is a terminal and `NO_COLOR` is
/// unset or empty.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
