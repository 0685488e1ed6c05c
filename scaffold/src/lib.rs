//! What the four binaries share, written once:
//!
//! - [`logging`]: `tracing` to standard error, text on a terminal or JSON lines for collectors
//!   (`--log-format`), levels from `RUST_LOG`;
//! - [`read_bounded`]: a file of at most so many bytes, read without trusting its size;
//! - [`shutdown_signal`]: SIGTERM or SIGINT;
//! - [`main`]: the frame every binary's `main` shares: logging started, the command run, an
//!   error printed with its causes and turned into exit code 2;
//! - [`Connections`] and [`Limit`]: the one bounded accept loop's parts: admission against a
//!   limit, the tasks of a listener, and draining them within a grace period at shutdown;
//! - [`serve_http`]: a plain HTTP/1.1 server on them (the tile server, the witness).
//!
//! ```
//! use scaffold::{Connections, Limit};
//!
//! # async fn demo() {
//! let limit = Limit::new(2);
//! let mut connections = Connections::new();
//! let first = limit.admit().expect("a slot");
//! let second = limit.admit().expect("a slot");
//! assert!(limit.admit().is_none(), "the third is refused");
//! connections.spawn(first, async {});
//! connections.spawn(second, async {});
//! connections.drain(std::time::Duration::from_secs(1)).await;
//! assert_eq!(limit.in_use(), 0);
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
//! ```

#![forbid(unsafe_code)]

mod connections;
mod files;
pub mod http;
pub mod logging;
mod serve;

// The public interface is:
pub use crate::connections::{Connections, Limit, Permit};
pub use crate::files::{ReadError, read_bounded};
pub use crate::serve::{HttpLimits, serve_http};

/// The frame of every binary's `main`: start logging (`log`, at `level` unless `RUST_LOG` says
/// otherwise), run the command, and turn an error into `program: error: …` (with its causes)
/// on standard error and exit code 2; with JSON logs it is also logged, for collectors. A
/// command's own verdicts (1 for a refusal) are its exit codes.
pub fn main<E: core::fmt::Display>(
    program: &str,
    level: logging::Level,
    log: logging::LogArgs,
    command: impl FnOnce() -> Result<std::process::ExitCode, E>,
) -> std::process::ExitCode {
    log.init(program, level);
    match command() {
        Ok(code) => code,
        Err(e) => {
            if log.log_format == logging::LogFormat::Json {
                tracing::error!("{e:#}");
            }
            eprintln!("{program}: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// SIGTERM or SIGINT. If the signals cannot be watched, this never completes (and says so), so
/// that a service keeps running rather than stopping at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutdown requested");
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM and SIGINT; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
