//! `attest log` and `attest receipt`: proofs and receipts made with the library are checked by
//! the command line, with its exit codes and JSON.
#![expect(
    clippy::unwrap_used,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attest::sim::{SimulatedPki, SimulatedRequest};
use attest::{PcrIndex, PcrValue, Region, Timestamp};
use aws_lc_rs::digest::{SHA384, digest};
use data_encoding::HEXLOWER;
use proofs::entry::{Entry, KeyRelease, LogEntry, Outcome};
use proofs::receipt::{ReceiptClaims, ReceiptSigner};
use proofs::{Log, MemoryStore, NoteSigner};

mod common;

use common::{attest, code, json as stdout_json, tempdir as dir};

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    (0..16u8)
        .map(|i| (PcrIndex::new(i).unwrap(), PcrValue::measure(&[i])))
        .collect()
}

fn release(i: u64) -> LogEntry {
    LogEntry::new(Entry::KeyRelease(KeyRelease {
        time: Timestamp::from_unix_millis(1_780_000_000_000 + i),
        outcome: if i.is_multiple_of(3) {
            Outcome::Denied
        } else {
            Outcome::Released
        },
        reason: if i.is_multiple_of(3) {
            "pcr_mismatch".into()
        } else {
            "ok".into()
        },
        model_id: "smollm2-135m".into(),
        key_id: format!("dek-{i}"),
        policy_version: 4,
        module_id: Some(format!("i-0abc-enc{i:04}")),
        pcrs: pcrs(),
        region: Some("eu-west-1".into()),
        document_sha384: Some([i as u8; 48]),
        nonce: Some(vec![1, 2, 3, i as u8]),
        lease_ms: None,
    }))
    .unwrap()
}

/// A log of 50 key-release entries with a checkpoint at 20 and one at 50.
struct LogFiles {
    dir: PathBuf,
    vkey: String,
    proof: String,
    entry: String,
    old: String,
    new: String,
    consistency: String,
}

fn log_files(name: &str) -> LogFiles {
    let dir = dir(name);
    let signer = NoteSigner::generate("gov.example/key-release-log").unwrap();
    let vkey = signer.verifier().to_vkey();
    let mut log = Log::open(MemoryStore::new(), signer).unwrap();
    for i in 0..20 {
        log.append(release(i).bytes()).unwrap();
    }
    let old = log.checkpoint().unwrap().note;
    for i in 20..50 {
        log.append(release(i).bytes()).unwrap();
    }
    let new = log.checkpoint().unwrap().note;
    LogFiles {
        proof: write(
            &dir,
            "e17.tlog-proof",
            log.prove_inclusion(17).unwrap().to_text(),
        ),
        entry: write(&dir, "e17.cbor", release(17).bytes()),
        old: write(&dir, "old.checkpoint", old),
        new: write(&dir, "new.checkpoint", new),
        consistency: write(
            &dir,
            "20-50.proof",
            log.prove_consistency(20, 50).unwrap().to_text(),
        ),
        dir,
        vkey,
    }
}

#[test]
fn inclusion_is_verified_and_the_entry_decoded() {
    let f = log_files("inclusion");
    let out = attest(&[
        "log",
        "verify-inclusion",
        &f.proof,
        "--entry",
        &f.entry,
        "--log-key",
        &f.vkey,
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v = stdout_json(&out);
    assert_eq!(v["verified"], true);
    assert_eq!(v["index"], 17);
    assert_eq!(v["checkpoint"]["size"], 50);
    assert_eq!(v["checkpoint"]["origin"], "gov.example/key-release-log");
    assert_eq!(v["entry"]["type"], "key-release");
    assert_eq!(v["entry"]["key_id"], "dek-17");
    assert_eq!(v["entry"]["outcome"], "released");

    // The same by leaf hash, and in text.
    let leaf = proofs::Hash::leaf(release(17).bytes()).to_hex();
    let out = attest(&[
        "log",
        "verify-inclusion",
        &f.proof,
        "--leaf-hash",
        &leaf,
        "--log-key",
        &f.vkey,
    ]);
    assert_eq!(code(&out), 0);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("included: entry 17 of gov.example/key-release-log")
    );
}

#[test]
fn inclusion_refusals_have_stable_kinds() {
    let f = log_files("refusals");
    let kind = |args: &[&str]| {
        let out = attest(args);
        assert_eq!(
            code(&out),
            1,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = stdout_json(&out);
        assert_eq!(v["verified"], false);
        v["error"]["kind"].as_str().unwrap().to_owned()
    };
    // Another entry than the one proven.
    let other = write(&f.dir, "e18.cbor", release(18).bytes());
    assert_eq!(
        kind(&[
            "log",
            "verify-inclusion",
            &f.proof,
            "--entry",
            &other,
            "--log-key",
            &f.vkey,
            "--json"
        ]),
        "proof_failed"
    );
    // A checkpoint signed by a key we do not trust.
    let stranger = NoteSigner::generate("gov.example/key-release-log")
        .unwrap()
        .verifier()
        .to_vkey();
    assert_eq!(
        kind(&[
            "log",
            "verify-inclusion",
            &f.proof,
            "--entry",
            &f.entry,
            "--log-key",
            &stranger,
            "--json"
        ]),
        "untrusted_checkpoint"
    );
    // A tampered audit path.
    let text = std::fs::read_to_string(&f.proof).unwrap();
    let line = text.lines().nth(2).unwrap();
    let mut flipped = proofs::Hash::from_base64(line).unwrap();
    flipped.0[0] ^= 1;
    let tampered = write(&f.dir, "tampered", text.replace(line, &flipped.to_base64()));
    assert_eq!(
        kind(&[
            "log",
            "verify-inclusion",
            &tampered,
            "--entry",
            &f.entry,
            "--log-key",
            &f.vkey,
            "--json"
        ]),
        "proof_failed"
    );
    // A checkpoint whose size was changed: its signature no longer holds.
    let resized = write(&f.dir, "resized", text.replace("\n50\n", "\n51\n"));
    assert_eq!(
        kind(&[
            "log",
            "verify-inclusion",
            &resized,
            "--entry",
            &f.entry,
            "--log-key",
            &f.vkey,
            "--json"
        ]),
        "bad_checkpoint_signature"
    );
    // Not a proof at all.
    let junk = write(&f.dir, "junk", "hello\n");
    assert_eq!(
        kind(&[
            "log",
            "verify-inclusion",
            &junk,
            "--entry",
            &f.entry,
            "--log-key",
            &f.vkey,
            "--json"
        ]),
        "malformed_proof"
    );
    // Another log.
    assert_eq!(
        kind(&[
            "log",
            "verify-inclusion",
            &f.proof,
            "--entry",
            &f.entry,
            "--log-key",
            &f.vkey,
            "--origin",
            "other.example/log",
            "--json"
        ]),
        "wrong_log"
    );
}

#[test]
fn usage_errors_exit_2() {
    let f = log_files("usage");
    for args in [
        vec!["log", "verify-inclusion", &f.proof, "--entry", &f.entry],
        vec![
            "log",
            "verify-inclusion",
            &f.proof,
            "--entry",
            &f.entry,
            "--log-key",
            "not-a-key",
        ],
        vec![
            "log",
            "verify-inclusion",
            "/nonexistent",
            "--entry",
            &f.entry,
            "--log-key",
            &f.vkey,
        ],
        vec!["log", "verify-inclusion", &f.proof, "--log-key", &f.vkey],
        vec![
            "log",
            "verify-inclusion",
            &f.proof,
            "--leaf-hash",
            "abc",
            "--log-key",
            &f.vkey,
        ],
    ] {
        let out = attest(&args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn consistency_is_verified_and_forgeries_refused() {
    let f = log_files("consistency");
    let out = attest(&[
        "log",
        "verify-consistency",
        "--old",
        &f.old,
        "--new",
        &f.new,
        "--proof",
        &f.consistency,
        "--log-key",
        &f.vkey,
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let v = stdout_json(&out);
    assert_eq!(
        (v["old"]["size"].clone(), v["new"]["size"].clone()),
        (20.into(), 50.into())
    );

    // Swapped checkpoints.
    let out = attest(&[
        "log",
        "verify-consistency",
        "--old",
        &f.new,
        "--new",
        &f.old,
        "--proof",
        &f.consistency,
        "--log-key",
        &f.vkey,
        "--json",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout_json(&out)["error"]["kind"], "size_mismatch");

    // A forked log: the same key signs a checkpoint of size 50 over other entries.
    let skey_dir = dir("fork");
    let signer = NoteSigner::generate("gov.example/key-release-log").unwrap();
    let vkey = signer.verifier().to_vkey();
    let mut honest = Log::open(
        MemoryStore::new(),
        NoteSigner::parse(&signer.to_skey().unwrap()).unwrap(),
    )
    .unwrap();
    let mut fork = Log::open(MemoryStore::new(), signer).unwrap();
    for i in 0..50 {
        honest.append(release(i).bytes()).unwrap();
        fork.append(release(if i == 10 { 99 } else { i }).bytes())
            .unwrap();
        if i == 19 {
            honest.checkpoint().unwrap();
        }
    }
    let old = write(
        &skey_dir,
        "old",
        honest.latest_checkpoint().unwrap().note.clone(),
    );
    let forked = write(&skey_dir, "forked", fork.checkpoint().unwrap().note);
    let proof = write(
        &skey_dir,
        "proof",
        fork.prove_consistency(20, 50).unwrap().to_text(),
    );
    let out = attest(&[
        "log",
        "verify-consistency",
        "--old",
        &old,
        "--new",
        &forked,
        "--proof",
        &proof,
        "--log-key",
        &vkey,
        "--json",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout_json(&out)["error"]["kind"], "proof_failed");
}

#[test]
fn a_log_key_certified_by_the_national_root_is_accepted() {
    let d = dir("certified");
    let s = |p: &str| d.join(p).display().to_string();
    for args in [
        vec![
            "pki",
            "init-root",
            "--cert",
            &s("root.pem"),
            "--key",
            &s("root.key"),
            "--days",
            "30",
        ],
        vec![
            "log",
            "new-key",
            "--name",
            "gov.example/key-release-log",
            "--key",
            &s("log.key"),
            "--vkey",
            &s("log.vkey"),
        ],
        vec![
            "pki",
            "certify-log-key",
            "--issuer-cert",
            &s("root.pem"),
            "--issuer-key",
            &s("root.key"),
            "--log-key",
            &s("log.vkey"),
            "--days",
            "30",
            "--out",
            &s("log.pem"),
        ],
        vec![
            "pki",
            "init-root",
            "--cert",
            &s("other.pem"),
            "--key",
            &s("other.key"),
            "--days",
            "30",
        ],
    ] {
        let out = attest(&args);
        assert_eq!(
            code(&out),
            0,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let skey = std::fs::read_to_string(d.join("log.key")).unwrap();
    let mut log = Log::open(MemoryStore::new(), NoteSigner::parse(skey.trim()).unwrap()).unwrap();
    log.append(release(0).bytes()).unwrap();
    log.checkpoint().unwrap();
    let proof = write(&d, "p", log.prove_inclusion(0).unwrap().to_text());
    let entry = write(&d, "e", release(0).bytes());
    let out = attest(&[
        "log",
        "verify-inclusion",
        &proof,
        "--entry",
        &entry,
        "--log-cert",
        &s("log.pem"),
        "--log-root",
        &s("root.pem"),
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    // A root that did not certify the key: the key cannot be learned.
    let out = attest(&[
        "log",
        "verify-inclusion",
        &proof,
        "--entry",
        &entry,
        "--log-cert",
        &s("log.pem"),
        "--log-root",
        &s("other.pem"),
    ]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not trusted"));
}

#[test]
fn receipts_are_verified_offline() {
    let d = dir("receipt");
    let now = t("2026-06-01T12:00:00Z");
    let root =
        attest::sim::simulated_nitro_root(t("2026-01-01T00:00:00Z"), t("2036-01-01T00:00:00Z"))
            .unwrap();
    let root_path = write(&d, "root.der", root.certificate.as_ref());
    let pki = SimulatedPki::new(
        &root.certificate,
        &root.private_key_pem,
        Region::try_from("eu-west-1").unwrap(),
        now,
    )
    .unwrap();
    let signer = ReceiptSigner::generate().unwrap();
    let key = signer.public_key_der().unwrap();
    let doc = pki
        .attest(
            &SimulatedRequest {
                pcrs: pcrs(),
                public_key: Some(&key),
                ..Default::default()
            },
            now,
        )
        .unwrap();
    let doc_path = write(&d, "doc.cbor", &doc);

    let log_signer = NoteSigner::generate("gov.example/key-release-log").unwrap();
    let vkey = log_signer.verifier().to_vkey();
    let mut log = Log::open(MemoryStore::new(), log_signer).unwrap();
    let index = log.append(release(1).bytes()).unwrap();
    let checkpoint = log.checkpoint().unwrap().note;
    let sha = |b: &[u8]| -> [u8; 48] { digest(&SHA384, b).as_ref().try_into().unwrap() };
    let claims = ReceiptClaims {
        time: t("2026-06-01T12:01:00Z"),
        sequence: 0,
        request_sha384: sha(b"request"),
        response_sha384: sha(b"response"),
        model_digest: sha(b"model"),
        policy_version: 4,
        key_release_index: index,
        checkpoint,
    };
    let receipt = write(&d, "r.receipt", signer.sign(&claims).unwrap());
    let request = write(&d, "request", "request");
    let response = write(&d, "response", "response");
    let model = HEXLOWER.encode(&sha(b"model"));
    let base = |response: &str| {
        vec![
            "receipt".to_owned(),
            "verify".into(),
            receipt.clone(),
            "--document".into(),
            doc_path.clone(),
            "--request".into(),
            request.clone(),
            "--response".into(),
            response.to_owned(),
            "--model-digest".into(),
            model.clone(),
            "--policy-version".into(),
            "4".into(),
            "--no-aws-root".into(),
            "--nitro-root".into(),
            root_path.clone(),
            "--max-age".into(),
            "1h".into(),
            "--json".into(),
        ]
    };
    let run = |args: &[String]| attest(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut args = base(&response);
    args.extend(["--log-key".into(), vkey.clone()]);
    let out = run(&args);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    assert_eq!(v["receipt"]["key_release_index"], 0);
    assert_eq!(v["log_checked"], true);
    assert_eq!(v["checkpoint"]["size"], 1);

    // Another response than the one signed for.
    let other = write(&d, "other", "another response");
    let mut args = base(&other);
    args.extend(["--log-key".into(), vkey.clone()]);
    let out = run(&args);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout_json(&out)["error"]["kind"], "mismatch");

    // Without a log key the caller must say that the log is not checked.
    let out = run(&base(&response));
    assert_eq!(code(&out), 2);
    let mut args = base(&response);
    args.push("--no-log-check".into());
    let out = run(&args);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout_json(&out)["log_checked"], false);

    // The default five-minute freshness is measured at the receipt's time: one minute passes.
    let mut args = base(&response);
    args.retain(|a| a != "--max-age" && a != "1h");
    args.extend(["--max-age".into(), "30s".into(), "--no-log-check".into()]);
    let out = run(&args);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout_json(&out)["error"]["kind"], "document_refused");
}
