//! The `host` command line: configuration checks, and refusing to run without a configuration.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::process::{Command, Output};

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_summarises_a_valid_file_and_names_mistakes() {
    let dir = std::env::temp_dir().join(format!("host-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("host.toml");
    std::fs::write(
        &good,
        "[enclave]\nmode = \"nitro\"\n[enclave.nitro]\neif = \"e.eif\"\ncpu_count = 2\n\
         memory_mib = 1024\n[[relay]]\nport = 8001\ntarget = \"broker.example:9443\"\n",
    )
    .unwrap();
    let out = host(&["check-config", good.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["enclave"]["launch"]["mode"], "nitro");
    assert_eq!(
        json["enclave"]["launch"]["eif"],
        dir.join("e.eif").to_str().unwrap()
    );
    assert_eq!(json["relays"][0]["target"], "broker.example:9443");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[enclave]\nmode = \"nitro\"\nmemory = 1\n").unwrap();
    let out = host(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("memory"));
}

#[test]
fn run_needs_a_configuration_or_dev() {
    let out = host(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev"));
}
