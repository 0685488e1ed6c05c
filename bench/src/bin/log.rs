//! The transparency log's figures: durable appends per second (one fsync set per append, and
//! batched), and inclusion and consistency proofs generated and verified per second at a
//! million entries, with the file store on this machine's disk.
//!
//!     cargo run --release --manifest-path bench/Cargo.toml --bin log [-- ENTRIES [DIR]]
//!
//! ENTRIES defaults to 1000000; DIR to a fresh directory under the system's temporary directory
//! (put it on the disk you care about: fsync cost is the disk's).
//!
//! At the end, the log is served as C2SP tlog-tiles by `attest log serve` (build it first:
//! `cargo build --release -p attest-cli`): random full hash tiles and entry bundles fetched by
//! 1, 4 and 16 keep-alive clients, beside the same reads in-process, and a monitor's
//! `attest log audit` of the whole log from its tiles.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use attest::{PcrIndex, PcrValue, Timestamp};
use proofs::entry::{Entry, KeyRelease, LogEntry, Outcome};
use proofs::merkle::{verify_consistency, verify_inclusion};
use proofs::tiles::{read_entries, read_tile};
use proofs::{Checkpoint, FileLogReader, FileStore, Hash, LogStore, NoteSigner};

/// A key-release decision of realistic size (every field filled).
fn entry(i: u64) -> Vec<u8> {
    let pcrs: BTreeMap<PcrIndex, PcrValue> = [0u8, 1, 2, 16]
        .into_iter()
        .filter_map(|p| Some((PcrIndex::new(p)?, PcrValue::measure(&[p]))))
        .collect();
    let e = Entry::KeyRelease(KeyRelease {
        time: Timestamp::from_unix_millis(1_780_000_000_000 + i),
        outcome: Outcome::Released,
        reason: "ok".into(),
        model_id: "smollm2-135m-instruct".into(),
        key_id: format!("kek-1/dek-{i}"),
        policy_version: 4,
        module_id: Some(format!("i-0123456789abcdef0-enc{i:016x}")),
        pcrs,
        region: Some("eu-west-1".into()),
        document_sha384: Some([7; 48]),
        nonce: Some(i.to_be_bytes().repeat(4)),
        lease_ms: Some(900_000),
    });
    LogEntry::new(e)
        .map(|e| e.bytes().to_vec())
        .unwrap_or_default()
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) % bound.max(1)
    }
}

/// Run `f` repeatedly for about `budget`; return calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("log-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    println!("log benchmark: {total} entries in {}", dir.display());
    println!(
        "entry size: {} bytes (a key-release decision)",
        entry(0).len()
    );

    // Durable appends, one at a time: every append fsyncs the three files before returning.
    let mut store = FileStore::open(&dir)?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let e = entry(store.size());
        let t = Instant::now();
        store.append(&[&e])?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let n = latencies.len();
    println!(
        "single appends:  {:>9.0} entries/s  (p50 {:?}, p99 {:?}, {n} appends)",
        n as f64 / start.elapsed().as_secs_f64(),
        latencies[n / 2],
        latencies[n * 99 / 100],
    );

    // Batched: one set of fsyncs acknowledges a whole batch (group commit).
    for batch in [16u64, 128, 1024] {
        let start = Instant::now();
        let mut appended = 0u64;
        while start.elapsed() < Duration::from_secs(3) {
            let size = store.size();
            let entries: Vec<Vec<u8>> = (size..size + batch).map(entry).collect();
            let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
            store.append(&refs)?;
            appended += batch;
        }
        println!(
            "batches of {batch:>4}: {:>9.0} entries/s",
            appended as f64 / start.elapsed().as_secs_f64()
        );
    }

    // Fill to `total` in batches of 4096.
    let start = Instant::now();
    let before = store.size();
    while store.size() < total {
        let size = store.size();
        let end = (size + 4096).min(total);
        let entries: Vec<Vec<u8>> = (size..end).map(entry).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        store.append(&refs)?;
    }
    let filled = store.size() - before;
    println!(
        "filled {filled} entries in {:.1?} ({:.0} entries/s in batches of 4096)",
        start.elapsed(),
        filled as f64 / start.elapsed().as_secs_f64()
    );
    let size = store.size();
    drop(store);
    let bytes: u64 = ["entries", "index", "nodes"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "on disk: {:.1} MiB for {size} entries",
        bytes as f64 / (1024.0 * 1024.0)
    );

    let start = Instant::now();
    let store = FileStore::open(&dir)?;
    println!(
        "reopen (recovery check of the newest entries): {:.1?}",
        start.elapsed()
    );
    let root = store.root();

    let budget = Duration::from_secs(3);
    let mut rng = Rng(1);
    let inclusion_gen = rate(budget, || {
        let i = rng.below(size);
        let _ = store.inclusion_proof(i, size);
    });
    let mut rng = Rng(2);
    let consistency_gen = rate(budget, || {
        let old = 1 + rng.below(size);
        let _ = store.consistency_proof(old, size);
    });
    let samples: Vec<(u64, Hash, Vec<Hash>)> = (0..1000)
        .map(|k| {
            let i = (k * 7919) % size;
            let leaf = store.leaf_hash(i).unwrap_or_else(|_| Hash::empty());
            (i, leaf, store.inclusion_proof(i, size).unwrap_or_default())
        })
        .collect();
    let mut k = 0usize;
    let inclusion_ver = rate(budget, || {
        let (i, leaf, proof) = &samples[k % samples.len()];
        assert!(verify_inclusion(leaf, *i, size, proof, &root).is_ok());
        k += 1;
    });
    let olds: Vec<(u64, Hash, Vec<Hash>)> = (0..200)
        .map(|k| {
            let old = 1 + (k * 104729) % size;
            let old_root = store.root_at(old).unwrap_or_else(|_| Hash::empty());
            (
                old,
                old_root,
                store.consistency_proof(old, size).unwrap_or_default(),
            )
        })
        .collect();
    let mut k = 0usize;
    let consistency_ver = rate(budget, || {
        let (old, old_root, proof) = &olds[k % olds.len()];
        assert!(verify_consistency(*old, size, proof, old_root, &root).is_ok());
        k += 1;
    });
    println!("at {size} entries (file store, warm page cache):");
    println!("  inclusion proofs generated:   {inclusion_gen:>9.0} /s");
    println!("  consistency proofs generated: {consistency_gen:>9.0} /s");
    println!("  inclusion proofs verified:    {inclusion_ver:>9.0} /s");
    println!("  consistency proofs verified:  {consistency_ver:>9.0} /s");

    let start = Instant::now();
    store.verify_all()?;
    println!(
        "full audit (re-hash every entry and node): {:.1?}",
        start.elapsed()
    );
    tile_serving(&dir, store, size)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The tiles a request of `kind` asks for: a random full level-0 hash tile or entry bundle.
#[derive(Clone, Copy, Debug)]
enum Kind {
    HashTile,
    EntryBundle,
}

/// Tile serving: `attest log serve` (the main workspace's release build) over this log, with
/// keep-alive clients on loopback, against the same tiles read in-process (no HTTP); then a
/// monitor's `attest log audit` of the whole log from its tiles.
fn tile_serving(dir: &Path, mut store: FileStore, size: u64) -> Result<(), Box<dyn Error>> {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/attest");
    if !binary.exists() {
        println!("tile serving skipped: build attest first (cargo build --release -p attest-cli)");
        return Ok(());
    }
    let signer = NoteSigner::generate("bench.example/log")?;
    let checkpoint = Checkpoint {
        origin: "bench.example/log".into(),
        size,
        root: store.root(),
        extensions: Vec::new(),
    };
    store.set_checkpoint(signer.sign(&checkpoint.to_text())?.to_text().as_bytes())?;
    drop(store);
    let full = size / 256;
    let budget = Duration::from_secs(3);
    let (reader, _) = FileLogReader::open(dir)?;
    let mut rng = Rng(3);
    let tiles_direct = rate(budget, || {
        let _ = read_tile(&reader, size, 0, rng.below(full), 256);
    });
    let bundles_direct = rate(budget, || {
        let _ = read_entries(size, rng.below(full), 256, |first, n| {
            reader.entries(first, n)
        });
    });
    let bundle_len =
        read_entries(size, 0, 256, |first, n| reader.entries(first, n))?.map_or(0, |b| b.len());

    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut server = Command::new(&binary)
        .args(["log", "serve"])
        .arg(dir)
        .args(["--listen", &listen.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            return Err("attest log serve never listened".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "tile serving at {size} entries (attest log serve, keep-alive loopback clients, {} s each):",
        budget.as_secs()
    );
    println!(
        "  in-process reads (no HTTP):   hash tiles {tiles_direct:>7.0} /s ({:.0} MB/s), entry bundles {bundles_direct:>6.0} /s ({:.0} MB/s)",
        tiles_direct * 8192.0 / 1e6,
        bundles_direct * bundle_len as f64 / 1e6
    );
    for kind in [Kind::HashTile, Kind::EntryBundle] {
        for clients in [1usize, 4, 16] {
            let results: Vec<(u64, u64, Vec<Duration>)> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..clients)
                    .map(|c| {
                        scope.spawn(move || fetch_loop(listen, kind, full, budget, 100 + c as u64))
                    })
                    .collect();
                workers.into_iter().filter_map(|w| w.join().ok()).collect()
            });
            let requests: u64 = results.iter().map(|r| r.0).sum();
            let bytes: u64 = results.iter().map(|r| r.1).sum();
            let mut latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.2).collect();
            latencies.sort();
            let n = latencies.len().max(1);
            let secs = budget.as_secs_f64();
            println!(
                "  {:<12} {clients:>2} clients: {:>7.0} /s ({:>4.0} MB/s), p50 {:?}, p99 {:?}",
                format!("{kind:?}"),
                requests as f64 / secs,
                bytes as f64 / secs / 1e6,
                latencies.get(n / 2).copied().unwrap_or_default(),
                latencies.get(n * 99 / 100).copied().unwrap_or_default(),
            );
        }
    }
    let start = Instant::now();
    let audit = Command::new(&binary)
        .args(["log", "audit", &format!("http://{listen}"), "--log-key"])
        .arg(signer.verifier().to_vkey())
        .output()?;
    println!(
        "monitor audit from tiles (attest log audit: every entry decoded and hashed, every hash \
         tile compared): {:.1?}, {}",
        start.elapsed(),
        if audit.status.success() {
            "passed"
        } else {
            "FAILED"
        }
    );
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}

/// One keep-alive client fetching random full tiles of `kind` for `budget`: requests, body
/// bytes and latencies.
fn fetch_loop(
    server: std::net::SocketAddr,
    kind: Kind,
    full: u64,
    budget: Duration,
    seed: u64,
) -> (u64, u64, Vec<Duration>) {
    let mut rng = Rng(seed);
    let Ok(stream) = TcpStream::connect(server) else {
        return (0, 0, Vec::new());
    };
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return (0, 0, Vec::new()),
    };
    let mut reader = BufReader::new(stream);
    let (mut requests, mut bytes, mut latencies) = (0u64, 0u64, Vec::new());
    let start = Instant::now();
    while start.elapsed() < budget {
        let index = proofs::tiles::encode_index(rng.below(full));
        let path = match kind {
            Kind::HashTile => format!("/tile/0/{index}"),
            Kind::EntryBundle => format!("/tile/entries/{index}"),
        };
        let t = Instant::now();
        // One write per request: `write!` would send the pieces separately, and Nagle's
        // algorithm would hold the rest until the server's delayed acknowledgement.
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        if writer.write_all(request.as_bytes()).is_err() {
            break;
        }
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return (requests, bytes, latencies);
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            break;
        }
        latencies.push(t.elapsed());
        requests += 1;
        bytes += length as u64;
    }
    (requests, bytes, latencies)
}
