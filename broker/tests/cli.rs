//! The `broker` command: exit codes, JSON shapes, and sealing's refusal to lose or half-write.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn broker(dir: &Path, args: &[&str], passphrase: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .current_dir(dir)
        .args(args)
        .env("BROKER_PASSPHRASE", passphrase)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("broker-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CONFIG: &str = "listen = \"127.0.0.1:9443\"\nstate_dir = \"state\"\npolicy = \"policy.toml\"\n\
    dangerous_single_administrator = true\n\
    [trust]\naws_root = true\n[signing]\nkey = \"broker.key\"\ncertificate = \"broker.pem\"\n\
    [log]\norigin = \"test.example/log\"\nkey = \"log.skey\"\n\
    [key_store]\nkind = \"software\"\nkek_label = \"kek-1\"\nfile = \"state/keystore.json\"\n";

#[test]
fn policy_check_prints_what_is_allowed_and_refuses_with_exit_1() {
    let dir = tempdir("policy");
    let pcr = "ab".repeat(48);
    std::fs::write(
        dir.join("good.toml"),
        format!("version = 7\n[models.m]\nregions = [\"eu-west-1\"]\n[[models.m.measurements]]\npcr0 = \"{pcr}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("open.toml"), "version = 1\n[models.m]\n").unwrap();
    let out = broker(&dir, &["policy", "check", "good.toml", "--json"], "");
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["version"], 7);
    assert_eq!(v["models"]["m"]["measurements"][0]["pcr0"], pcr);
    assert_eq!(v["models"]["m"]["allow_debug"], false);
    assert_eq!(v["models"]["m"]["max_age_secs"], 300);
    let out = broker(&dir, &["policy", "check", "open.toml", "--json"], "");
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["valid"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("must pin the enclave image"),
        "{v}"
    );
    // Pinning only what the parent chooses (PCR3) pins no image.
    std::fs::write(
        dir.join("parent.toml"),
        format!("version = 1\n[models.m]\n[[models.m.measurements]]\npcr3 = \"{pcr}\"\n"),
    )
    .unwrap();
    let out = broker(&dir, &["policy", "check", "parent.toml", "--json"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        json(&out)["error"]
            .as_str()
            .unwrap()
            .contains("pins neither PCR0 nor PCR8"),
        "{}",
        json(&out)
    );
    let out = broker(&dir, &["policy", "check", "missing.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(dir.join("bad.toml"), CONFIG.replace("software", "floppy")).unwrap();
    let out = broker(&dir, &["check-config", "bad.toml", "--json"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        json(&out)["error"]
            .as_str()
            .unwrap()
            .contains("key_store.kind")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sealing_registers_logs_and_never_replaces_without_force() {
    let dir = tempdir("seal");
    std::fs::write(dir.join("broker.toml"), CONFIG).unwrap();
    let pass = "a passphrase for tests";
    let out = broker(
        &dir,
        &["init", "--config", "broker.toml", "--iterations", "100000"],
        pass,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an HSM"));
    std::fs::write(dir.join("model.bin"), vec![5u8; 100_000]).unwrap();
    let seal = |extra: &[&str], pass: &str| {
        let mut args = vec![
            "seal",
            "model.bin",
            "--model-id",
            "m-1",
            "--out",
            "model.sealed",
            "--config",
            "broker.toml",
            "--chunk-size",
            "4096",
            "--json",
        ];
        args.extend_from_slice(extra);
        broker(&dir, &args, pass)
    };
    let out = seal(&[], pass);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = json(&out);
    assert_eq!(first["model_len"], 100_000);
    assert_eq!(first["log_index"], 0);
    assert!(first["key_id"].as_str().unwrap().starts_with("kek-1/"));
    let sealed = std::fs::read(dir.join("model.sealed")).unwrap();
    assert_eq!(sealed.len() as u64, first["sealed_len"].as_u64().unwrap());
    assert_eq!(&sealed[..8], b"SOVSEAL\0");
    // The same output again: refused, the file untouched, nothing left behind.
    let out = seal(&[], pass);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(dir.join("model.sealed")).unwrap(), sealed);
    // A wrong passphrase: refused before anything is written.
    let out = seal(&["--force"], "not the passphrase");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase"));
    assert_eq!(std::fs::read(dir.join("model.sealed")).unwrap(), sealed);
    // With --force: a new key, logged after the first.
    let out = seal(&["--force"], pass);
    assert_eq!(out.status.code(), Some(0));
    let second = json(&out);
    assert_ne!(second["key_id"], first["key_id"]);
    assert_eq!(second["log_index"], 1);
    assert_ne!(std::fs::read(dir.join("model.sealed")).unwrap(), sealed);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
