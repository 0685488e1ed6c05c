//! The `attest` command line: exit codes, JSON shapes, input encodings, the policy file and the
//! national-root flow from the README.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A production document (not debug), from the real documents next to the library's tests.
const PROD: &str = "marlin-20240226-3a4a0301.cbor";

mod common;

use common::{attest, code, json, tempdir};

fn nitro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../attest/tests/data/nitro")
}

fn attest_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn doc_path(name: &str) -> String {
    nitro_dir().join(name).display().to_string()
}

#[test]
fn verify_exit_codes_mean_verified_refused_and_error() {
    let doc = doc_path(PROD);
    let ok = attest(&["verify", &doc, "--at", "document"]);
    assert_eq!(code(&ok), 0, "{}", stdout(&ok));
    assert!(stdout(&ok).starts_with("verified: i-0df237f0418feb41e-enc018d1c7ef94eb110"));

    let today = attest(&["verify", &doc]);
    assert_eq!(code(&today), 1);
    let line = stdout(&today);
    assert!(
        line.starts_with("rejected: leaf certificate")
            && line.contains("expired at 2024-02-26T09:59:36Z"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);

    assert_eq!(code(&attest(&["verify", "/no/such/file"])), 2);
    assert_eq!(code(&attest(&["verify", &doc, "--at", "yesterday"])), 2);
    assert_eq!(code(&attest(&["verify", &doc, "--max-age", "soon"])), 2);
    assert_eq!(code(&attest(&["verify", &doc, "--nonce", "xyz"])), 2);
    assert_eq!(code(&attest(&["verify", &doc, "--no-aws-root"])), 2);
    assert_eq!(code(&attest(&["verify"])), 2);
    assert_eq!(code(&attest(&["frobnicate"])), 2);
    assert_eq!(code(&attest(&["--help"])), 0);
}

#[test]
fn verify_json_has_the_documented_shape() {
    let doc = doc_path("anjuna-20240124-8d6106b4-debug.cbor");
    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "document",
        "--allow-debug",
        "--json",
    ]);
    assert_eq!(code(&out), 0);
    let v = json(&out);
    assert_eq!(v["version"], 1);
    assert_eq!(v["verified"], true);
    assert_eq!(v["encoding"], "cbor");
    assert_eq!(v["region"], "us-east-2");
    assert_eq!(v["debug"], true);
    assert_eq!(v["trust"]["aws_root"], true);
    assert_eq!(v["trust"]["via_cross_certificate"], false);
    assert_eq!(
        v["document"]["module_id"],
        "i-0e4fe5de7ee5abe78-enc018d3cadd7d66279"
    );
    assert_eq!(v["document"]["timestamp_ms"], 1_706_120_065_635_u64);
    assert_eq!(v["document"]["nonce"], "4e6f6e63650a");
    assert_eq!(v["document"]["pcrs"].as_object().unwrap().len(), 16);
    assert_eq!(v["measurements_pinned"], false);

    let out = attest(&["verify", &doc, "--at", "document", "--json"]);
    assert_eq!(code(&out), 1);
    let v = json(&out);
    assert_eq!(v["verified"], false);
    assert_eq!(v["error"]["kind"], "debug_mode");

    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "2026-01-01T00:00:00Z",
        "--allow-debug",
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "certificate_expired");
    assert_eq!(v["error"]["certificate"], "leaf certificate");
    assert_eq!(v["error"]["not_after"], "2024-01-24T21:14:17Z");
}

#[test]
fn hex_base64_and_stdin_inputs_are_detected() {
    let bytes = std::fs::read(nitro_dir().join(PROD)).unwrap();
    let hex = data_encoding::HEXLOWER.encode(&bytes);
    let b64 = data_encoding::BASE64.encode(&bytes);
    for (input, encoding) in [
        (hex.as_bytes(), "hex"),
        (b64.as_bytes(), "base64"),
        (bytes.as_slice(), "cbor"),
    ] {
        let out = attest_stdin(&["verify", "-", "--at", "document", "--json"], input);
        assert_eq!(code(&out), 0, "{encoding}");
        assert_eq!(json(&out)["encoding"], encoding);
    }
    assert_eq!(
        code(&attest_stdin(&["verify", "-"], b"%%% not a document %%%")),
        2
    );
    // Well-encoded but malformed: a verdict.
    let out = attest_stdin(&["verify", "-", "--json"], &[0x84, 0x40, 0xa0, 0x40, 0x40]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["error"]["kind"], "malformed_document");
}

#[test]
fn policy_options_refuse_with_one_clear_line() {
    let doc = doc_path(PROD);
    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "document",
        "--region",
        "eu-central-1",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stdout(&out).trim(),
        "rejected: region ap-south-1 is not allowed (allowed: eu-central-1)"
    );

    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "2024-02-26T07:10:00Z",
        "--max-age",
        "5m",
    ]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("stale"), "{}", stdout(&out));
    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "2024-02-26T07:10:00Z",
        "--max-age",
        "10m",
    ]);
    assert_eq!(code(&out), 0);

    let out = attest(&[
        "verify", &doc, "--at", "document", "--nonce", "00ff", "--json",
    ]);
    assert_eq!(json(&out)["error"]["kind"], "nonce_missing");
}

#[test]
fn a_policy_file_pins_measurements_and_flags_override_it() {
    let dir = tempdir("policy");
    let doc = doc_path(PROD);
    let pcrs = &json(&attest(&["inspect", &doc, "--json"]))["pcrs"];
    let good = format!(
        "max_age = \"1h\"\nregions = [\"ap-south-1\"]\n[[measurements]]\npcr0 = {}\npcr1 = {}\npcr2 = {}\n",
        pcrs["0"], pcrs["1"], pcrs["2"]
    );
    std::fs::write(dir.join("good.toml"), &good).unwrap();
    let policy = dir.join("good.toml").display().to_string();
    let out = attest(&["verify", &doc, "--at", "document", "--policy", &policy]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("match the policy"));

    let check = attest(&["policy", "check", &policy]);
    assert_eq!(code(&check), 0);
    assert!(stdout(&check).contains("one of 1 set(s)"));

    // The command line replaces the file's regions.
    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "document",
        "--policy",
        &policy,
        "--region",
        "us-east-1",
    ]);
    assert_eq!(code(&out), 1);

    let bad = good.replace(&pcrs["2"].to_string(), &format!("\"{}\"", "11".repeat(48)));
    std::fs::write(dir.join("bad.toml"), bad).unwrap();
    let out = attest(&[
        "verify",
        &doc,
        "--at",
        "document",
        "--json",
        "--policy",
        dir.join("bad.toml").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "pcr_mismatch");
    assert_eq!(v["error"]["differences"][0]["pcr"], 2);
    assert_eq!(v["error"]["differences"][0]["actual"], pcrs["2"]);

    std::fs::write(dir.join("typo.toml"), "max_agee = \"1h\"\n").unwrap();
    let out = attest(&["policy", "check", dir.join("typo.toml").to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_agee"));
}

#[test]
fn the_national_root_flow_from_the_readme_works() {
    let dir = tempdir("national");
    let p = |name: &str| dir.join(name).display().to_string();
    let out = attest(&[
        "pki",
        "init-root",
        "--cert",
        &p("root.pem"),
        "--key",
        &p("root.key"),
        "--not-before",
        "2020-01-01T00:00:00Z",
        "--days",
        "7300",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Refuses to overwrite.
    let again = attest(&[
        "pki",
        "init-root",
        "--cert",
        &p("root.pem"),
        "--key",
        &p("root.key"),
    ]);
    assert_eq!(code(&again), 2);

    let out = attest(&[
        "pki",
        "cross-certify",
        "--issuer-cert",
        &p("root.pem"),
        "--issuer-key",
        &p("root.key"),
        "--not-before",
        "2021-01-01T00:00:00Z",
        "--not-after",
        "2024-03-01T00:00:00Z",
        "--out",
        &p("cross.pem"),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));

    let national = [
        "--no-aws-root",
        "--root",
        &p("root.pem"),
        "--cross-cert",
        &p("cross.pem"),
        "--at",
        "document",
        "--json",
    ];
    let feb = doc_path(PROD);
    let out = attest(&[&["verify", feb.as_str()][..], &national[..]].concat());
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_eq!(json(&out)["trust"]["via_cross_certificate"], true);

    let july = doc_path("marlin-20240720-9606fab0.cbor");
    let out = attest(&[&["verify", july.as_str()][..], &national[..]].concat());
    assert_eq!(code(&out), 1);
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "certificate_expired");
    assert_eq!(v["error"]["certificate"], "cross-certificate");

    // A national root without its cross-certificate reaches no document: a configuration
    // error, said before any document is read.
    let out = attest(&[
        "verify",
        &feb,
        "--no-aws-root",
        "--root",
        &p("root.pem"),
        "--at",
        "document",
        "--json",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only through a cross-certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inspect_is_labelled_unverified() {
    let doc = doc_path(PROD);
    let out = attest(&["inspect", &doc]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("NOT VERIFIED"));
    let v = json(&attest(&["inspect", &doc, "--json"]));
    assert_eq!(v["verified"], false);
    let chain = v["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 5);
    assert_eq!(chain[1]["region"], "ap-south-1");
    assert_eq!(chain[0]["sha256"], attest::AWS_NITRO_ROOT_G1_SHA256);
}

#[test]
fn logs_go_to_stderr_and_carry_no_document_contents() {
    let doc = doc_path("anjuna-20240124-8d6106b4-debug.cbor");
    for format in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_attest"))
            .args([
                "verify",
                &doc,
                "--at",
                "document",
                "--allow-debug",
                "--json",
                "--log-format",
                format,
            ])
            .env("RUST_LOG", "attest=trace")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0);
        assert_eq!(
            json(&out)["verified"],
            true,
            "stdout stays JSON with logging on"
        );
        let logs = String::from_utf8(out.stderr.clone()).unwrap();
        assert!(logs.contains("document verified"), "{format}: {logs}");
        let user_data = "48656c6c6f20576f726c64210a";
        let public_key = &json(&out)["document"]["public_key"].as_str().unwrap()[..64].to_owned();
        assert!(
            !logs.contains(user_data) && !logs.contains(public_key.as_str()),
            "{logs}"
        );
    }
}

#[test]
fn a_simulated_document_verifies_only_against_its_development_root() {
    let dir = tempdir("simulate");
    let p = |name: &str| dir.join(name).display().to_string();
    // A national root, a simulated Nitro root, and the national root's cross-certificate for
    // it: the development image of a nation cross-certifying AWS's root.
    for (cert, key, name) in [
        ("root.pem", "root.key", "Development National Root CA"),
        ("nitro.pem", "nitro.key", "Simulated Nitro Root"),
    ] {
        let out = attest(&[
            "pki",
            "init-root",
            "--cert",
            &p(cert),
            "--key",
            &p(key),
            "--name",
            name,
        ]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = attest(&[
        "pki",
        "cross-certify",
        "--issuer-cert",
        &p("root.pem"),
        "--issuer-key",
        &p("root.key"),
        "--target",
        &p("nitro.pem"),
        "--out",
        &p("cross.pem"),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let pcr0 = "ab".repeat(48);
    let simulate = |issuer: &str, out_file: &str, pcr: bool| {
        let issuer_key = issuer.replace(".pem", ".key");
        let pcr_arg = format!("0={pcr0}");
        let mut args = vec![
            "pki",
            "simulate",
            "--issuer-cert",
            issuer,
            "--issuer-key",
            &issuer_key,
            "--region",
            "ap-south-1",
            "--nonce",
            "0badc0de",
            "--user-data",
            "cafe",
            "--out",
            out_file,
        ];
        if pcr {
            args.extend(["--pcr", &pcr_arg]);
        }
        let out = attest(&args);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    };
    simulate(&p("nitro.pem"), &p("sim.cbor"), true);

    let national = [
        "--no-aws-root",
        "--root",
        &p("root.pem"),
        "--cross-cert",
        &p("cross.pem"),
    ];
    let verify = |doc: &str, trust: &[&str]| {
        attest(
            &[
                &[
                    "verify",
                    doc,
                    "--nonce",
                    "0badc0de",
                    "--region",
                    "ap-south-1",
                    "--json",
                ][..],
                trust,
            ]
            .concat(),
        )
    };
    // Through the national root's cross-certificate, and with the simulated root trusted
    // directly as a Nitro root.
    for trust in [
        &national[..],
        &["--no-aws-root", "--nitro-root", &p("nitro.pem")][..],
    ] {
        let out = verify(&p("sim.cbor"), trust);
        assert_eq!(code(&out), 0, "{trust:?}: {}", stdout(&out));
        let v = json(&out);
        assert_eq!(v["document"]["pcrs"]["0"], pcr0);
        assert_eq!(v["document"]["user_data"], "cafe");
        assert_eq!(v["document"]["nonce"], "0badc0de");
    }
    assert_eq!(
        json(&verify(&p("sim.cbor"), &national[..]))["trust"]["via_cross_certificate"],
        true
    );

    let out = attest(&["verify", &p("sim.cbor"), "--json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["error"]["kind"], "untrusted_root");

    // A Nitro-shaped chain issued by the national root itself: refused, the national root is
    // not a Nitro root.
    simulate(&p("root.pem"), &p("national.cbor"), true);
    let out = verify(&p("national.cbor"), &national[..]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "untrusted_root");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("national root"),
        "{v}"
    );
    // Nor can the national root be both.
    let out = verify(
        &p("national.cbor"),
        &[&national[..], &["--nitro-root", &p("root.pem")][..]].concat(),
    );
    assert_eq!(code(&out), 2, "{}", stdout(&out));

    // Without --pcr 0 the document reports debug mode, which is refused by default.
    simulate(&p("nitro.pem"), &p("debug.cbor"), false);
    let out = verify(&p("debug.cbor"), &national[..]);
    assert_eq!(json(&out)["error"]["kind"], "debug_mode");
}
