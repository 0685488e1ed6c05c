//! The transparency log's figures: durable appends per second (one fsync set per append, and
//! batched), and inclusion and consistency proofs generated and verified per second at a
//! million entries, with the file store on this machine's disk.
//!
//!     cargo run --release --manifest-path bench/Cargo.toml --bin log [-- ENTRIES [DIR]]
//!
//! ENTRIES defaults to 1000000; DIR to a fresh directory under the system's temporary directory
//! (put it on the disk you care about: fsync cost is the disk's).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use attest::{PcrIndex, PcrValue, Timestamp};
use proofs::entry::{Entry, KeyRelease, LogEntry, Outcome};
use proofs::merkle::{verify_consistency, verify_inclusion};
use proofs::{FileStore, Hash, LogStore};

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
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
