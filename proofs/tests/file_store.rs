//! The file store: the same tree as the in-memory reference, durable across reopening, and
//! repaired after every kind of interrupted append.
#![expect(
    clippy::unwrap_used,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proofs::{FileStore, Log, LogError, LogStore, MemoryStore, NoteSigner, StoreError, audit};

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn entry(i: u64) -> Vec<u8> {
    format!("entry number {i}").into_bytes()
}

fn fill(store: &mut impl LogStore, from: u64, to: u64) {
    let entries: Vec<Vec<u8>> = (from..to).map(entry).collect();
    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    store.append(&refs).unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn truncate(path: &Path, by: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len(path) - by).unwrap();
}

#[test]
fn file_and_memory_stores_agree() {
    let dir = temp_dir("agree");
    let mut file = FileStore::open(&dir).unwrap();
    let mut memory = MemoryStore::new();
    let mut size = 0u64;
    for batch in [1u64, 1, 2, 5, 13, 64, 1, 200, 3] {
        fill(&mut file, size, size + batch);
        fill(&mut memory, size, size + batch);
        size += batch;
        assert_eq!(file.size(), size);
        assert_eq!(file.root(), memory.root());
        for index in [0, size / 2, size - 1] {
            assert_eq!(file.entry(index).unwrap(), entry(index));
            assert_eq!(
                file.inclusion_proof(index, size).unwrap(),
                memory.inclusion_proof(index, size).unwrap()
            );
        }
        for old in [1, size / 3 + 1, size] {
            assert_eq!(
                file.consistency_proof(old, size).unwrap(),
                memory.consistency_proof(old, size).unwrap()
            );
        }
    }
    assert_eq!(file.verify_all().unwrap(), memory.root());
    drop(file);
    let reopened = FileStore::open(&dir).unwrap();
    assert!(!reopened.recovery().repaired(), "{:?}", reopened.recovery());
    assert_eq!(reopened.size(), size);
    assert_eq!(reopened.root(), memory.root());
    assert!(matches!(
        reopened.entry(size),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(reopened.inclusion_proof(0, size + 1).is_err());
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = temp_dir("lock");
    let _first = FileStore::open(&dir).unwrap();
    assert!(matches!(FileStore::open(&dir), Err(StoreError::Locked(_))));
}

#[test]
fn foreign_files_are_refused() {
    let dir = temp_dir("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("entries"), b"not a log at all").unwrap();
    assert!(matches!(FileStore::open(&dir), Err(StoreError::Corrupt(_))));
}

/// A fresh log of `size` entries in `dir`, closed.
fn log_of(dir: &Path, size: u64) -> proofs::Hash {
    let mut store = FileStore::open(dir).unwrap();
    fill(&mut store, 0, size);
    store.root()
}

fn reopen_and_check(dir: &Path, size: u64, root: proofs::Hash) -> proofs::Recovery {
    let store = FileStore::open(dir).unwrap();
    assert_eq!(store.size(), size);
    assert_eq!(store.root(), root);
    assert_eq!(store.verify_all().unwrap(), root);
    for i in 0..size {
        assert_eq!(store.entry(i).unwrap(), entry(i));
    }
    let recovery = store.recovery().clone();
    drop(store);
    // A second open finds nothing left to repair.
    assert!(!FileStore::open(dir).unwrap().recovery().repaired());
    recovery
}

#[test]
fn a_torn_final_record_is_truncated() {
    let dir = temp_dir("torn");
    let root = log_of(&dir, 100);
    // Half of a record: a length and some of its bytes.
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("entries"))
        .unwrap();
    f.write_all(&[0, 0, 0, 40, b'x', b'y']).unwrap();
    let recovery = reopen_and_check(&dir, 100, root);
    assert_eq!(recovery.truncated_entry_bytes, 6);
}

#[test]
fn a_complete_record_with_a_wrong_hash_is_dropped() {
    let dir = temp_dir("badhash");
    let root = log_of(&dir, 10);
    let mut record = vec![0, 0, 0, 3, b'a', b'b', b'c'];
    record.extend_from_slice(&[0u8; 32]);
    OpenOptions::new()
        .append(true)
        .open(dir.join("entries"))
        .unwrap()
        .write_all(&record)
        .unwrap();
    let recovery = reopen_and_check(&dir, 10, root);
    assert_eq!(recovery.truncated_entry_bytes, 39);
}

#[test]
fn records_written_but_not_indexed_are_kept() {
    let dir = temp_dir("unindexed");
    let mut memory = MemoryStore::new();
    fill(&mut memory, 0, 300);
    log_of(&dir, 300);
    // The writer died after writing the records, before the index and nodes of the last ones.
    truncate(&dir.join("index"), 8 * 7 + 3);
    truncate(&dir.join("nodes"), 32 * 20);
    let recovery = reopen_and_check(&dir, 300, memory.root());
    assert!(recovery.indexed_records >= 7, "{recovery:?}");
    assert!(recovery.rewritten_nodes >= 20, "{recovery:?}");
}

#[test]
fn damaged_node_hashes_in_the_tail_are_rewritten() {
    let dir = temp_dir("nodes");
    let root = log_of(&dir, 500);
    let nodes = OpenOptions::new()
        .write(true)
        .open(dir.join("nodes"))
        .unwrap();
    let at = len(&dir.join("nodes")) - 32 * 5;
    nodes.write_all_at(&[0u8; 32], at).unwrap();
    let recovery = reopen_and_check(&dir, 500, root);
    assert!(recovery.rewritten_nodes >= 1);
}

#[test]
fn a_lost_node_file_is_rebuilt_from_the_entries() {
    let dir = temp_dir("rebuild");
    let root = log_of(&dir, 3000);
    let nodes = OpenOptions::new()
        .write(true)
        .open(dir.join("nodes"))
        .unwrap();
    nodes.set_len(8).unwrap();
    let recovery = reopen_and_check(&dir, 3000, root);
    assert_eq!(
        recovery.rewritten_nodes,
        2 * 3000 - u64::from(3000u64.count_ones())
    );
}

#[test]
fn index_slots_pointing_at_garbage_are_dropped_and_rebuilt() {
    let dir = temp_dir("slots");
    let root = log_of(&dir, 50);
    let index = OpenOptions::new()
        .write(true)
        .open(dir.join("index"))
        .unwrap();
    // The last slot points into the middle of a record.
    let at = len(&dir.join("index")) - 8;
    index.write_all_at(&12345u64.to_be_bytes(), at).unwrap();
    let recovery = reopen_and_check(&dir, 50, root);
    assert_eq!(recovery.dropped_index_slots, 1);
    assert_eq!(recovery.indexed_records, 1);
}

#[test]
fn a_full_audit_finds_damage_older_than_recovery_looks() {
    let dir = temp_dir("audit");
    log_of(&dir, 2000);
    // Flip a byte inside entry 3's text, far older than the last RECHECK entries.
    let entries = OpenOptions::new()
        .write(true)
        .open(dir.join("entries"))
        .unwrap();
    let offset = 8 + 3 * (4 + 32 + entry(0).len() as u64) + 4 + 2;
    entries.write_all_at(b"X", offset).unwrap();
    let store = FileStore::open(&dir).unwrap();
    assert!(matches!(store.verify_all(), Err(StoreError::Corrupt(_))));
    assert!(matches!(store.entry(3), Err(StoreError::Corrupt(_))));
}

#[test]
fn the_log_refuses_a_checkpoint_its_entries_do_not_support() {
    let dir = temp_dir("checkpoint");
    let signer = NoteSigner::generate("gov.example/log").unwrap();
    let skey = signer.to_skey().unwrap();
    let key = signer.verifier();
    {
        let mut log = Log::open(FileStore::open(&dir).unwrap(), signer).unwrap();
        for i in 0..20 {
            log.append(&entry(i)).unwrap();
        }
        let cp = log.checkpoint().unwrap();
        assert_eq!(cp.checkpoint.size, 20);
        let proof = log.prove_inclusion(7).unwrap().to_text();
        let included = audit::verify_inclusion_file(
            proof.as_bytes(),
            &proofs::Hash::leaf(&entry(7)),
            std::slice::from_ref(&key),
            Some("gov.example/log"),
        )
        .unwrap();
        assert_eq!(included.checkpoint.checkpoint.size, 20);
    }
    // Reopened: the checkpoint is found and still matches.
    let log = Log::open(
        FileStore::open(&dir).unwrap(),
        NoteSigner::parse(&skey).unwrap(),
    )
    .unwrap();
    assert_eq!(log.latest_checkpoint().unwrap().checkpoint.size, 20);
    drop(log);

    // Entries lost behind the log's back: the checkpoint is ahead of the store.
    let record = 4 + 32 + entry(19).len() as u64;
    truncate(&dir.join("entries"), record);
    let err = Log::open(
        FileStore::open(&dir).unwrap(),
        NoteSigner::parse(&skey).unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::CheckpointAhead {
                checkpoint: 20,
                stored: 19
            }
        ),
        "{err}"
    );

    // Another log's key cannot vouch for this checkpoint.
    let stranger = NoteSigner::generate("gov.example/log").unwrap();
    assert!(matches!(
        Log::open(FileStore::open(&dir).unwrap(), stranger),
        Err(LogError::Checkpoint(_))
    ));
}

/// An interrupted batch leaves each of the three files with any prefix of what the batch wrote
/// (the kernel may have written some pages and not others). Every such state recovers to a log
/// that holds all entries acknowledged before the batch and, possibly, some of the batch.
#[test]
fn every_prefix_of_an_interrupted_batch_recovers() {
    let dir = temp_dir("prefixes");
    let before = 37u64;
    let after = 45u64;
    let mut memory = MemoryStore::new();
    fill(&mut memory, 0, after);
    log_of(&dir, before);
    let files = ["entries", "index", "nodes"];
    let old: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    {
        let mut store = FileStore::open(&dir).unwrap();
        fill(&mut store, before, after);
    }
    let new: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let mut seed = 7u64;
    let mut next = |bound: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 33) as usize % bound
    };
    for trial in 0..300 {
        for (i, file) in files.iter().enumerate() {
            let keep = old[i].len() + next(new[i].len() - old[i].len() + 1);
            std::fs::write(dir.join(file), &new[i][..keep]).unwrap();
        }
        let store = FileStore::open(&dir).unwrap();
        let size = store.size();
        assert!(
            (before..=after).contains(&size),
            "trial {trial}: size {size}"
        );
        assert_eq!(store.root(), memory.root_at(size).unwrap(), "trial {trial}");
        assert_eq!(store.verify_all().unwrap(), memory.root_at(size).unwrap());
        for i in 0..size {
            assert_eq!(store.entry(i).unwrap(), entry(i));
        }
    }
}

#[test]
fn a_reader_beside_the_writer_sees_only_what_the_checkpoint_covers() {
    use proofs::merkle::Subtrees;
    let dir = temp_dir("reader");
    let signer = NoteSigner::generate("example.com/log").unwrap();
    let mut log = Log::open(FileStore::open(&dir).unwrap(), signer).unwrap();
    // No checkpoint yet: nothing to read.
    let (reader, note) = proofs::FileLogReader::open(&dir).unwrap();
    assert_eq!((reader.size(), note), (0, None));
    for i in 0..700 {
        log.append(&entry(i)).unwrap();
    }
    log.checkpoint().unwrap();
    for i in 700..750 {
        log.append(&entry(i)).unwrap();
    }
    // The writer still holds its lock; the reader takes none and stops at the checkpoint.
    let (reader, note) = proofs::FileLogReader::open(&dir).unwrap();
    assert_eq!(reader.size(), 700);
    assert_eq!(
        note.unwrap(),
        log.latest_checkpoint().unwrap().note.as_bytes()
    );
    let memory = {
        let mut m = MemoryStore::new();
        fill(&mut m, 0, 700);
        m
    };
    // One-read runs of leaf hashes and entries agree with the reference, at every edge.
    for (first, count) in [(0, 256), (256, 256), (512, 188), (699, 1), (3, 7)] {
        let run = reader.perfect_run(0, first, count).unwrap();
        let expected: Vec<_> = (first..first + count)
            .map(|i| memory.perfect(0, i).unwrap())
            .collect();
        assert_eq!(run, expected, "{first}+{count}");
        let entries = reader.entries(first, count).unwrap();
        assert_eq!(
            entries,
            (first..first + count).map(entry).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        reader.perfect_run(8, 0, 2).unwrap(),
        vec![memory.perfect(8, 0).unwrap(), memory.perfect(8, 1).unwrap()]
    );
    for (first, count) in [(512, 189), (700, 1), (0, 0), (0, 257)] {
        assert!(reader.entries(first, count).is_err(), "{first}+{count}");
    }
    assert!(reader.perfect_run(0, 690, 11).is_err());
    assert!(reader.entry(700).is_err());

    // A damaged record is found by the reader, not served.
    drop(log);
    let entries = OpenOptions::new()
        .write(true)
        .open(dir.join("entries"))
        .unwrap();
    entries.write_all_at(b"X", 8 + 4 + 2).unwrap();
    let (reader, _) = proofs::FileLogReader::open(&dir).unwrap();
    assert!(matches!(
        reader.entries(0, 256),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(reader.entry(0), Err(StoreError::Corrupt(_))));
    assert_eq!(reader.entries(256, 1).unwrap(), vec![entry(256)]);
}
