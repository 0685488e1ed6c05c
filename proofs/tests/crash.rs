//! Crash safety: a writer process is killed with SIGKILL at random moments while it appends and
//! signs checkpoints; after every kill the log is reopened and must hold every entry the writer
//! had acknowledged, byte for byte, with a tree consistent with the last checkpoint it signed.
//!
//! The writer is this test binary run again (`crash_writer`, ignored in normal runs), so the
//! test needs no extra binary.
#![expect(
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proofs::merkle::verify_consistency;
use proofs::{FileStore, Hash, Log, LogStore, NoteSigner};

const DIR_VAR: &str = "PROOFS_CRASH_DIR";
const KEY_VAR: &str = "PROOFS_CRASH_KEY";

fn entry(i: u64) -> Vec<u8> {
    format!("crash-test entry {i} {}", "x".repeat((i % 97) as usize)).into_bytes()
}

/// The writer: appends batches forever, printing `ack <size>` after each durable append and
/// `checkpoint <size> <root>` after each signed checkpoint.
#[test]
#[ignore = "run by killed_writers_lose_no_acknowledged_entry as its child process"]
fn crash_writer() {
    let dir = std::env::var(DIR_VAR).unwrap();
    let signer = NoteSigner::parse(&std::env::var(KEY_VAR).unwrap()).unwrap();
    let mut log = Log::open(FileStore::open(dir).unwrap(), signer).unwrap();
    let mut out = std::io::stdout().lock();
    let mut round = 0u64;
    loop {
        let size = log.size();
        let batch = 1 + round % 7;
        let entries: Vec<Vec<u8>> = (size..size + batch).map(entry).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        log.append_batch(&refs).unwrap();
        writeln!(out, "ack {}", log.size()).unwrap();
        out.flush().unwrap();
        if round.is_multiple_of(3) {
            let cp = log.checkpoint().unwrap();
            writeln!(
                out,
                "checkpoint {} {}",
                cp.checkpoint.size, cp.checkpoint.root
            )
            .unwrap();
            out.flush().unwrap();
        }
        round += 1;
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn killed_writers_lose_no_acknowledged_entry() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let signer = NoteSigner::generate("gov.example/crash-log").unwrap();
    let skey = signer.to_skey().unwrap();
    let key = signer.verifier();
    let mut rng = Lcg(0x5eed);
    let mut acknowledged = 0u64;
    let mut last_checkpoint: Option<(u64, Hash)> = None;
    let mut recoveries = 0;
    const TRIALS: usize = 40;

    for trial in 0..TRIALS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, &dir)
            .env(KEY_VAR, skey.as_str())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read the writer's output on another thread, so it never blocks on a full pipe and the
        // kill lands while it works: in a write, an fsync or a checkpoint.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let mut record = |line: String| {
            let mut words = line.split(' ');
            match words.next() {
                Some("ack") => {
                    acknowledged = words.next().unwrap().parse().unwrap();
                    true
                }
                Some("checkpoint") => {
                    let size = words.next().unwrap().parse().unwrap();
                    let root = Hash::from_base64(words.next().unwrap()).unwrap();
                    last_checkpoint = Some((size, root));
                    false
                }
                _ => false,
            }
        };
        let acks_before_kill = 1 + rng.next(40);
        let mut seen = 0;
        while seen < acks_before_kill {
            let line = rx.recv().expect("the writer stopped early");
            if record(line) {
                seen += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(rng.next(3000)));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Everything the writer printed before it died was acknowledged.
        for line in rx.try_iter() {
            record(line);
        }

        let store = FileStore::open(&dir).unwrap();
        if store.recovery().repaired() {
            recoveries += 1;
        }
        assert!(
            store.size() >= acknowledged,
            "trial {trial}: {} entries after recovery, {acknowledged} were acknowledged",
            store.size()
        );
        for i in 0..store.size() {
            assert_eq!(
                store.entry(i).unwrap(),
                entry(i),
                "trial {trial}: entry {i}"
            );
        }
        let root = store.verify_all().unwrap();
        // The log reopens: its stored checkpoint is signed and a prefix of the entries.
        let log = Log::open(store, NoteSigner::parse(&skey).unwrap()).unwrap();
        let stored = log.latest_checkpoint().cloned();
        if let Some((size, cp_root)) = last_checkpoint {
            let stored = stored.expect("a checkpoint was signed and acknowledged");
            assert!(stored.checkpoint.size >= size);
            assert_eq!(log.root_at(size).unwrap(), cp_root, "trial {trial}");
            let proof = log.store().consistency_proof(size, log.size()).unwrap();
            verify_consistency(size, log.size(), &proof, &cp_root, &root).unwrap();
            proofs::SignedCheckpoint::open(
                stored.note.as_bytes(),
                std::slice::from_ref(&key),
                None,
            )
            .unwrap();
        }
    }
    println!("{TRIALS} kills, {recoveries} recoveries repaired something, {acknowledged} entries");
    assert!(acknowledged > 0);
}
