//! `attest log serve` and `attest log audit`: the log as C2SP tlog-tiles, and a monitor that
//! trusts nothing it is served. Honest logs pass, from tiles and from the directory, also as
//! they grow under a running server; forks, rollbacks, forged bundles and tiles, checkpoints by
//! another key, missing cosignatures and undecodable entries are refused with exit code 1.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest::{PcrIndex, PcrValue, Timestamp};
use proofs::cosignature::Cosigner;
use proofs::entry::{Entry, KeyRelease, LogEntry, Outcome, Revocation, RevocationTarget};
use proofs::tiles::{Resource, TILE_WIDTH, level_width, read_entries, read_tile};
use proofs::{FileStore, Log, MemoryStore, NoteSigner};

mod common;

use common::{attest, code, json, tempdir};

const ORIGIN: &str = "gov.example/key-release-log";

/// Entry `i` of the test logs: mostly releases and denials for two models, some revocations;
/// `variant` changes every entry (another history).
fn entry(i: u64, variant: u8) -> Vec<u8> {
    let entry = if i % 97 == 96 {
        Entry::Revocation(Revocation {
            time: Timestamp::from_unix_millis(1_780_000_000_000 + i),
            target: RevocationTarget::Model,
            value: format!("model-{variant}"),
            reason: "order".into(),
        })
    } else {
        let denied = i.is_multiple_of(5);
        Entry::KeyRelease(KeyRelease {
            time: Timestamp::from_unix_millis(1_780_000_000_000 + i),
            outcome: if denied {
                Outcome::Denied
            } else {
                Outcome::Released
            },
            reason: if denied { "pcr_mismatch" } else { "ok" }.into(),
            model_id: if i.is_multiple_of(2) {
                "model-a"
            } else {
                "model-b"
            }
            .into(),
            key_id: format!("dek-{variant}-{i}"),
            policy_version: 1,
            module_id: Some(format!("i-0abc-enc{i:04}")),
            pcrs: (0..3u8)
                .map(|p| (PcrIndex::new(p).unwrap(), PcrValue::measure(&[p])))
                .collect(),
            region: Some("eu-west-1".into()),
            document_sha384: Some([variant; 48]),
            nonce: Some(i.to_be_bytes().to_vec()),
            lease_ms: None,
        })
    };
    LogEntry::new(entry).unwrap().bytes().to_vec()
}

/// A log in memory: `first` entries of history 0, then `then` of history `variant`.
fn memory_log(signer: &NoteSigner, first: u64, then: u64, variant: u8) -> Log<MemoryStore> {
    let skey = signer.to_skey().unwrap();
    let mut log = Log::open(MemoryStore::new(), NoteSigner::parse(&skey).unwrap()).unwrap();
    for i in 0..first {
        log.append(&entry(i, 0)).unwrap();
    }
    for i in first..first + then {
        log.append(&entry(i, variant)).unwrap();
    }
    log.checkpoint().unwrap();
    log
}

/// Every tile, bundle and the checkpoint of `log`, by path.
fn files(log: &Log<MemoryStore>) -> HashMap<String, Vec<u8>> {
    let size = log.size();
    let mut files = HashMap::new();
    files.insert(
        "/checkpoint".to_owned(),
        log.latest_checkpoint().unwrap().note.clone().into_bytes(),
    );
    for level in 0..=5u8 {
        let hashes = level_width(size, level);
        for index in 0..hashes.div_ceil(TILE_WIDTH) {
            let width = u16::try_from((hashes - index * TILE_WIDTH).min(256)).unwrap();
            let tile = read_tile(log.store(), size, level, index, width)
                .unwrap()
                .unwrap();
            let path = Resource::Tile {
                level,
                index,
                width,
            }
            .path();
            files.insert(format!("/{path}"), tile);
        }
    }
    for index in 0..size.div_ceil(TILE_WIDTH) {
        let width = u16::try_from((size - index * TILE_WIDTH).min(256)).unwrap();
        let bundle = read_entries(size, index, width, |first, n| {
            (first..first + n).map(|i| log.entry(i)).collect()
        })
        .unwrap()
        .unwrap();
        files.insert(
            format!("/{}", Resource::Entries { index, width }.path()),
            bundle,
        );
    }
    files
}

/// A static HTTP server for `files` (a hostile mirror, when they are altered).
fn static_server(files: HashMap<String, Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split(' ').nth(1).unwrap_or_default();
            let (status, body) = match files.get(path) {
                Some(body) => ("200 OK", body.clone()),
                None => ("404 Not Found", b"not found\n".to_vec()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    addr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn audit(source: &str, vkey: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["log", "audit", source, "--log-key", vkey, "--json"];
    args.extend_from_slice(extra);
    attest(&args)
}

/// The kind of refusal an audit reported, with exit code 1.
fn refusal(out: &std::process::Output) -> String {
    assert_eq!(
        code(out),
        1,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)["error"]["kind"].as_str().unwrap().to_owned()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Server, SocketAddr) {
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["log", "serve"])
        .arg(dir)
        .args(["--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "attest log serve never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

/// GET `path`: the status line and head, and the body.
fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&answer[..split]).into_owned(),
        answer[split + 4..].to_vec(),
    )
}

#[test]
fn a_served_log_is_audited_from_its_tiles_and_from_its_directory_as_it_grows() {
    let dir = tempdir("log-serve");
    let log_dir = dir.join("log");
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier().to_vkey();
    let skey = signer.to_skey().unwrap();
    let mut log = Log::open(
        FileStore::open(&log_dir).unwrap(),
        NoteSigner::parse(&skey).unwrap(),
    )
    .unwrap();
    for i in 0..600 {
        log.append(&entry(i, 0)).unwrap();
    }
    log.checkpoint().unwrap();
    // Appended, but no checkpoint covers them yet: not served.
    log.append(&entry(600, 0)).unwrap();
    let (_server, addr) = serve(&log_dir);
    let url = format!("http://{addr}");

    // The server: the checkpoint, immutable full tiles, partial tiles, nothing beyond.
    let (head, body) = get(addr, "/checkpoint");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, log.latest_checkpoint().unwrap().note.as_bytes());
    let (head, body) = get(addr, "/tile/0/000");
    assert!(
        head.contains("immutable") && body.len() == 256 * 32,
        "{head}"
    );
    let (head, body) = get(addr, "/tile/0/002.p/88");
    assert!(
        head.starts_with("HTTP/1.1 200") && !head.contains("immutable") && body.len() == 88 * 32,
        "{head}"
    );
    for beyond in [
        "/tile/0/002.p/89",
        "/tile/0/003",
        "/tile/entries/002",
        "/tile/2/000.p/1",
        "/tile/0/2",
        "/nothing",
    ] {
        let (head, _) = get(addr, beyond);
        assert!(head.starts_with("HTTP/1.1 404"), "{beyond}: {head}");
    }

    let saved = dir.join("saved.checkpoint");
    let out = audit(&url, &vkey, &["--save", saved.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let report = json(&out);
    assert_eq!(report["checkpoint"]["size"], 600);
    // Level 0: two full tiles and a partial one; level 1: a partial one of two hashes.
    assert_eq!(report["tiles_checked"], 4);
    let summary = &report["summary"];
    let revocations = (0..600).filter(|i| i % 97 == 96).count();
    let denials = (0..600)
        .filter(|i: &u64| i % 97 != 96 && i.is_multiple_of(5))
        .count();
    assert_eq!(summary["entries_by_kind"]["revocation"], revocations);
    assert_eq!(summary["entries_by_kind"]["key-release"], 600 - revocations);
    let denied: u64 = summary["denials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(denied, u64::try_from(denials).unwrap());
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        log.latest_checkpoint().unwrap().note.as_bytes()
    );
    // The directory gives the same answer.
    let out = audit(log_dir.to_str().unwrap(), &vkey, &[]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        json(&out)["checkpoint"]["root"],
        report["checkpoint"]["root"]
    );

    // The log grows under the running server, and its witness cosigns the new checkpoint.
    for i in 601..1000 {
        log.append(&entry(i, 0)).unwrap();
    }
    let checkpoint = log.checkpoint().unwrap();
    let witness = Cosigner::generate("witness.example").unwrap();
    let text = proofs::Note::parse(checkpoint.note.as_bytes())
        .unwrap()
        .text;
    log.add_cosignatures(&[witness.cosign(&text, 1_780_000_000).unwrap()])
        .unwrap();
    let witness_vkey = witness.verifier().to_vkey();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = audit(
            &url,
            &vkey,
            &[
                "--saved",
                saved.to_str().unwrap(),
                "--witness",
                &witness_vkey,
            ],
        );
        if code(&out) == 0 {
            let report = json(&out);
            assert_eq!(report["checkpoint"]["size"], 1000);
            assert_eq!(report["consistent_with_saved_size"], 600);
            assert_eq!(report["cosigned_by"][0]["witness"], "witness.example");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never published size 1000"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A second witness required that never cosigned: refused.
    let other = Cosigner::generate("other-witness.example")
        .unwrap()
        .verifier()
        .to_vkey();
    let out = audit(
        &url,
        &vkey,
        &[
            "--witness",
            &witness_vkey,
            "--witness",
            &other,
            "--witnesses-required",
            "2",
        ],
    );
    assert_eq!(refusal(&out), "not_witnessed");
}

#[test]
fn a_monitor_refuses_forks_rollbacks_and_forged_tiles() {
    let dir = tempdir("log-audit-forged");
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier().to_vkey();
    let honest = memory_log(&signer, 700, 0, 0);
    let saved = write(
        &dir,
        "saved.checkpoint",
        memory_log(&signer, 600, 0, 0)
            .latest_checkpoint()
            .unwrap()
            .note
            .as_bytes(),
    );
    let honest_files = files(&honest);
    let url = |files: HashMap<String, Vec<u8>>| format!("http://{}", static_server(files));
    let out = audit(&url(honest_files.clone()), &vkey, &["--saved", &saved]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));

    // A fork: the same key signs another history after entry 500. Its checkpoint verifies on
    // its own, but not against what this monitor saw before.
    let fork = memory_log(&signer, 500, 400, 1);
    let out = audit(&url(files(&fork)), &vkey, &["--saved", &saved]);
    assert_eq!(refusal(&out), "inconsistent");
    // A rollback to fewer entries than were seen.
    let rollback = memory_log(&signer, 550, 0, 0);
    let out = audit(&url(files(&rollback)), &vkey, &["--saved", &saved]);
    assert_eq!(refusal(&out), "inconsistent");

    // A mirror that swaps one entry for another valid one: its hash tiles no longer match.
    let mut forged = honest_files.clone();
    let bundle = forged.get_mut("/tile/entries/001").unwrap();
    let original = entry(256, 0);
    let replacement = entry(256, 9);
    assert_eq!(original.len(), replacement.len());
    let at = 2;
    bundle[at..at + original.len()].copy_from_slice(&replacement);
    let out = audit(&url(forged), &vkey, &[]);
    assert_eq!(refusal(&out), "tile_mismatch");
    // ... and when the hash tiles are forged to match, the root does not.
    let mut forged = files(&{
        let mut log = memory_log(&signer, 256, 0, 0);
        log.append(&replacement).unwrap();
        for i in 257..700 {
            log.append(&entry(i, 0)).unwrap();
        }
        log.checkpoint().unwrap();
        log
    });
    forged.insert("/checkpoint".into(), honest_files["/checkpoint"].clone());
    let out = audit(&url(forged), &vkey, &[]);
    assert_eq!(refusal(&out), "root_mismatch");
    // A forged hash tile beside honest entries.
    let mut forged = honest_files.clone();
    forged.get_mut("/tile/0/000").unwrap()[0] ^= 1;
    let out = audit(&url(forged), &vkey, &[]);
    assert_eq!(refusal(&out), "tile_mismatch");
    // A bundle with an entry too few.
    let mut forged = honest_files.clone();
    let bundle = forged.get_mut("/tile/entries/000").unwrap();
    let first_len = usize::from(u16::from_be_bytes([bundle[0], bundle[1]]));
    bundle.drain(..2 + first_len);
    let out = audit(&url(forged), &vkey, &[]);
    assert_eq!(refusal(&out), "malformed_bundle");

    // A bundle the checkpoint covers, withheld.
    let mut withheld = honest_files.clone();
    withheld.remove("/tile/entries/001");
    let out = audit(&url(withheld), &vkey, &[]);
    assert_eq!(refusal(&out), "withheld");

    // A checkpoint by another key under the same name.
    let impostor = NoteSigner::generate(ORIGIN).unwrap();
    let out = audit(&url(files(&memory_log(&impostor, 700, 0, 0))), &vkey, &[]);
    assert_eq!(refusal(&out), "bad_checkpoint");

    // An entry that hashes and is signed, but is not an entry.
    let mut garbage = memory_log(&signer, 10, 0, 0);
    garbage.append(b"not an entry").unwrap();
    garbage.checkpoint().unwrap();
    let out = audit(&url(files(&garbage)), &vkey, &[]);
    assert_eq!(refusal(&out), "undecodable_entry");

    // Usage errors are exit 2, not a verdict.
    let out = attest(&["log", "audit", "https://x.example:1", "--log-key", &vkey]);
    assert_eq!(code(&out), 2);
    let missing: PathBuf = dir.join("no-such-log");
    let out = attest(&[
        "log",
        "audit",
        missing.to_str().unwrap(),
        "--log-key",
        &vkey,
    ]);
    assert_eq!(code(&out), 2);
}
