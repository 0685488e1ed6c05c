//! Logs go to standard error, so that standard output stays the command's answer: text (with
//! colours on a terminal) or JSON lines, levels from `RUST_LOG` (for example
//! `RUST_LOG=broker=debug`). Logs carry hashes, ids, sizes and timings, never a key, a prompt, a
//! response or a whole attestation document.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging option every binary takes, flattened into its command line
/// (`#[command(flatten)]`), so that all four spell and document it alike.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LogArgs {
    /// Log format on standard error: text, or json for log collectors. Levels come from
    /// RUST_LOG (for example RUST_LOG=debug, or RUST_LOG=broker=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Start logging for `program`; `default` is the level when `RUST_LOG` is unset.
    pub fn init(self, program: &str, default: LevelFilter) {
        init(program, self.log_format, default);
    }
}

/// Start logging for `program` in `format`; `default` is the level when `RUST_LOG` is unset or
/// unreadable. A second call, or a failure, leaves logging as it was and says so.
pub fn init(program: &str, format: LogFormat, default: LevelFilter) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(default));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::TRACE);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Json => builder.json().finish().with(filter).try_init(),
    };
    if let Err(e) = result {
        eprintln!("{program}: warning: logging disabled: {e}");
    }
}

pub use tracing_subscriber::filter::LevelFilter as Level;
