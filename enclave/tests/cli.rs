//! The `enclave` command line: configuration checks and what they print.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn enclave(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(args)
        .output()
        .unwrap()
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("enclave-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_prints_the_pcr_an_enclave_will_report() {
    let path = write_config("ok.toml", "control_port = 5002\nidle_timeout = \"10s\"\n");
    let out = enclave(&["check-config", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = enclave::Config::load(&path).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["pcr"], 16);
    assert_eq!(json["pcr_value"], config.expected_pcr().to_hex());
    assert_eq!(json["canonical"], config.canonical());
}

#[test]
fn check_config_names_what_is_wrong() {
    let path = write_config("bad.toml", "control_port = 5001\ncontrl = 1\n");
    let out = enclave(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("contrl"));
    let missing = enclave(&["check-config", "/nonexistent/enclave.toml"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn run_outside_an_enclave_fails_with_a_clear_error() {
    // The embedded defaults use /dev/nsm, which this machine does not have.
    if std::path::Path::new("/dev/nsm").exists() {
        return;
    }
    let out = enclave(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/nsm"));
}

#[test]
fn help_teaches_by_example() {
    let out = enclave(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("enclave run --config"));
}
