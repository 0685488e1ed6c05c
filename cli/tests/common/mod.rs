//! Running the `attest` binary and reading what it printed, for the CLI's integration tests.

#![allow(
    dead_code,
    reason = "shared by several test crates, each using a part: an expectation would be unfulfilled in some"
)]
#![expect(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Run `attest` with these arguments.
pub fn attest(args: &[&str]) -> Output {
    attest_env(args, &[])
}

/// Run `attest` with these arguments and extra environment variables.
pub fn attest_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_attest"));
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// The exit code.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

/// Standard output, parsed as JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A fresh, empty directory for one test.
pub fn tempdir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
