//! The embedded log store: one directory that needs nothing installed.
//!
//! ```text
//! <dir>/entries     "TLOGENT1", then records: u32 length (big-endian) ‖ entry ‖ SHA-256 leaf hash
//! <dir>/index       "TLOGIDX1", then one u64 (big-endian) record offset per entry
//! <dir>/nodes       "TLOGNOD1", then the 32-byte hash of every perfect subtree, in post-order
//! <dir>/checkpoint  the latest signed checkpoint (replaced atomically)
//! <dir>/lock        held exclusively by the one process that writes the log
//! ```
//!
//! Entry `i` is one index read and one record read; perfect subtree `(level, index)` is one read
//! at a position computed from its coordinates, so a proof is O(log n) reads.
//!
//! An append writes the three files and `fsync`s all of them before it returns; only then is an
//! entry acknowledged. A batch shares one set of `fsync`s. The entries file is the truth: the
//! index and the nodes are derived from it, and opening the store repairs them.
//!
//! Recovery on open:
//! 1. the last [`RECHECK`] indexed records are read back and their hashes checked; the index is
//!    cut at the first record that is torn, or whose offset does not follow its predecessor;
//! 2. complete, valid records after the last indexed one (written, but not yet indexed, when the
//!    writer died) are indexed; a torn final record is truncated away;
//! 3. the node hashes for the last [`RECHECK`] entries, and for any entry they are missing for,
//!    are recomputed and rewritten where they differ.
//!
//! Acknowledged entries were fully written and synced, so none of these steps can remove one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::hash::{HASH_LEN, Hash};

mod reader;

pub use self::reader::FileLogReader;
use crate::merkle::{Frontier, Subtrees, is_inside, postorder_count, postorder_position};
use crate::store::{LogStore, MAX_STORED_ENTRY_LEN, StoreError, check_entry};

/// How many of the newest entries recovery reads back and re-hashes on every open.
pub const RECHECK: u64 = 1024;

const HEADER: u64 = 8;
const ENTRIES_MAGIC: &[u8; 8] = b"TLOGENT1";
const INDEX_MAGIC: &[u8; 8] = b"TLOGIDX1";
const NODES_MAGIC: &[u8; 8] = b"TLOGNOD1";
/// Length prefix and trailing leaf hash around each entry.
const RECORD_OVERHEAD: u64 = 4 + 32;
const MAX_CHECKPOINT_LEN: u64 = 1024 * 1024;
const HASH_LEN_U64: u64 = 32;

/// What opening a store found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn final record cut from the entries file.
    pub truncated_entry_bytes: u64,
    /// Index slots dropped because they pointed at torn or misplaced records.
    pub dropped_index_slots: u64,
    /// Complete records that were found after the last indexed one and indexed.
    pub indexed_records: u64,
    /// Node hashes that were missing or wrong and have been rewritten.
    pub rewritten_nodes: u64,
}

impl Recovery {
    /// Whether anything was repaired.
    pub fn repaired(&self) -> bool {
        *self != Self::default()
    }
}

/// A log stored in one directory. See the module documentation for the layout and recovery.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    entries: File,
    index: File,
    nodes: File,
    /// Held for the store's lifetime; the lock goes with the descriptor.
    _lock: File,
    entries_len: u64,
    frontier: Frontier,
    recovery: Recovery,
    poisoned: bool,
}

impl FileStore {
    /// Open the log in `dir`, creating an empty one if the directory holds none, and recover
    /// from an interrupted append. Fails if another process has the log open.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(StoreError::io(format!("cannot create {}", dir.display())))?;
        let lock = open_rw(&dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.display().to_string()));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::io(format!("cannot lock {}", dir.display()))(e));
            }
        }
        let fresh = !dir.join("entries").exists();
        let entries = open_file(&dir, "entries", ENTRIES_MAGIC)?;
        let index = open_file(&dir, "index", INDEX_MAGIC)?;
        let nodes = open_file(&dir, "nodes", NODES_MAGIC)?;
        if fresh {
            sync_dir(&dir)?;
        }
        let mut store = Self {
            dir,
            entries,
            index,
            nodes,
            _lock: lock,
            entries_len: HEADER,
            frontier: Frontier::default(),
            recovery: Recovery::default(),
            poisoned: false,
        };
        store.recover()?;
        if store.recovery.repaired() {
            tracing::warn!(
                dir = %store.dir.display(),
                size = store.size(),
                truncated_entry_bytes = store.recovery.truncated_entry_bytes,
                dropped_index_slots = store.recovery.dropped_index_slots,
                indexed_records = store.recovery.indexed_records,
                rewritten_nodes = store.recovery.rewritten_nodes,
                "log recovered from an interrupted append"
            );
        }
        Ok(store)
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening the store repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Read every record, re-hash every entry, and recompute every node: a full audit of the
    /// stored log. O(n); recovery on open checks only the newest entries.
    pub fn verify_all(&self) -> Result<Hash, StoreError> {
        let size = self.size();
        let mut frontier = Frontier::default();
        let mut expected = Vec::new();
        let mut reader = self.records_from(HEADER)?;
        let mut offset = HEADER;
        for i in 0..size {
            let indexed = self.index_slot(i)?;
            if indexed != offset {
                return Err(StoreError::Corrupt(format!(
                    "index slot {i} says offset {indexed}, the record is at {offset}"
                )));
            }
            let (entry, stored) = reader.next_record()?.ok_or_else(|| {
                StoreError::Corrupt(format!("record {i} at offset {offset} is damaged"))
            })?;
            let leaf = Hash::leaf(&entry);
            if leaf != stored {
                return Err(StoreError::Corrupt(format!(
                    "record {i} does not match its hash"
                )));
            }
            offset += record_len(entry.len());
            expected.clear();
            frontier.push(leaf, &mut expected);
            for (k, hash) in expected.iter().enumerate() {
                let pos = postorder_count(i).unwrap_or(u64::MAX) + u64::try_from(k).unwrap_or(0);
                if self.read_node(pos)? != *hash {
                    return Err(StoreError::Corrupt(format!(
                        "node {pos} (written by entry {i}) is wrong"
                    )));
                }
            }
        }
        Ok(frontier.root())
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        let index_len = file_len(&self.index, "index")?;
        let slots = (index_len - HEADER) / 8;
        let entries_len = file_len(&self.entries, "entries")?;

        // 1. Re-read the newest indexed records; cut the index at the first bad one.
        let check_from = slots.saturating_sub(RECHECK);
        let mut size = check_from;
        let mut end = if size == 0 {
            HEADER
        } else {
            let offset = self.index_slot(size - 1)?;
            self.record_at(offset, entries_len)?
                .map(|(entry, _)| offset + record_len(entry.len()))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "entry {} at offset {offset}, older than the last {RECHECK}, is damaged",
                        size - 1
                    ))
                })?
        };
        while size < slots {
            let offset = self.index_slot(size)?;
            if offset != end {
                break;
            }
            match self.record_at(offset, entries_len)? {
                Some((entry, _)) => {
                    end = offset + record_len(entry.len());
                    size += 1;
                }
                None => break,
            }
        }
        self.recovery.dropped_index_slots = slots - size;

        // 2. Index complete records written after the last indexed one; drop a torn tail.
        let mut found = Vec::new();
        while let Some((entry, _)) = self.record_at(end, entries_len)? {
            found.push(end);
            end += record_len(entry.len());
        }
        self.recovery.indexed_records = u64::try_from(found.len()).unwrap_or(u64::MAX);
        self.recovery.truncated_entry_bytes = entries_len - end;
        if end != entries_len {
            self.entries
                .set_len(end)
                .map_err(StoreError::io("cannot truncate the entries file"))?;
        }
        if size != slots || !found.is_empty() || index_len != HEADER + slots * 8 {
            self.index
                .set_len(HEADER + size * 8)
                .map_err(StoreError::io("cannot truncate the index"))?;
            let bytes: Vec<u8> = found.iter().flat_map(|o| o.to_be_bytes()).collect();
            write_at(&self.index, &bytes, HEADER + size * 8, "index")?;
            size += u64::try_from(found.len()).unwrap_or(u64::MAX);
        }
        self.entries_len = end;

        // 3. Recompute the nodes of the newest entries and of any that have none.
        let nodes_len = file_len(&self.nodes, "nodes")?;
        let have = (nodes_len - HEADER) / HASH_LEN_U64;
        let covered = largest_size_covered(have, size);
        let start = covered.saturating_sub(RECHECK);
        let frontier = Frontier::load(&RawNodes(self), start)?;
        let (frontier, rewritten) = self.replay_nodes(frontier, size, have)?;
        self.recovery.rewritten_nodes = rewritten;
        let want = postorder_count(size).unwrap_or(u64::MAX);
        if have > want {
            self.nodes
                .set_len(HEADER + want * HASH_LEN_U64)
                .map_err(StoreError::io("cannot truncate the nodes file"))?;
        }
        self.frontier = frontier;

        if self.recovery.repaired() || have > want {
            for (file, name) in [
                (&self.entries, "entries"),
                (&self.index, "index"),
                (&self.nodes, "nodes"),
            ] {
                file.sync_all()
                    .map_err(StoreError::io(format!("cannot sync the {name} file")))?;
            }
        }
        Ok(())
    }

    /// Push leaves `frontier.size()..size` through `frontier`, compare the hashes they produce
    /// with the stored ones and rewrite from the first difference. Returns the new frontier and
    /// the number of hashes rewritten.
    fn replay_nodes(
        &self,
        mut frontier: Frontier,
        size: u64,
        have: u64,
    ) -> Result<(Frontier, u64), StoreError> {
        let first_pos = postorder_count(frontier.size()).unwrap_or(u64::MAX);
        let want = postorder_count(size).unwrap_or(u64::MAX);
        let mut computed = Vec::new();
        if frontier.size() < size {
            let offset = self.index_slot(frontier.size())?;
            let mut reader = self.records_from(offset)?;
            for i in frontier.size()..size {
                let (_, leaf) = reader.next_record()?.ok_or_else(|| {
                    StoreError::Corrupt(format!("record {i} vanished during recovery"))
                })?;
                frontier.push(leaf, &mut computed);
            }
        }
        let stored_count = have.min(want).saturating_sub(first_pos);
        let mut stored = vec![0u8; usize::try_from(stored_count * HASH_LEN_U64).unwrap_or(0)];
        self.nodes
            .read_exact_at(&mut stored, HEADER + first_pos * HASH_LEN_U64)
            .map_err(StoreError::io("cannot read the nodes file"))?;
        let agree = computed
            .iter()
            .zip(stored.chunks_exact(HASH_LEN))
            .take_while(|(c, s)| c.0.as_slice() == *s)
            .count();
        let rewrite = computed.get(agree..).unwrap_or_default();
        if !rewrite.is_empty() {
            let at = first_pos + u64::try_from(agree).unwrap_or(u64::MAX);
            let bytes: Vec<u8> = rewrite.iter().flat_map(|h| h.0).collect();
            write_at(&self.nodes, &bytes, HEADER + at * HASH_LEN_U64, "nodes")?;
        }
        Ok((frontier, u64::try_from(rewrite.len()).unwrap_or(u64::MAX)))
    }

    fn index_slot(&self, i: u64) -> Result<u64, StoreError> {
        read_index_slot(&self.index, i)
    }

    fn read_node(&self, pos: u64) -> Result<Hash, StoreError> {
        read_node(&self.nodes, pos)
    }

    /// The record at `offset` if it is complete and its hash matches; `None` if it is torn or
    /// damaged.
    fn record_at(&self, offset: u64, file_len: u64) -> Result<Option<(Vec<u8>, Hash)>, StoreError> {
        read_record(&self.entries, offset, file_len)
    }

    fn records_from(&self, offset: u64) -> Result<RecordReader<'_>, StoreError> {
        let mut file = &self.entries;
        file.seek(SeekFrom::Start(offset))
            .map_err(StoreError::io("cannot seek in the entries file"))?;
        Ok(RecordReader {
            inner: BufReader::with_capacity(1 << 20, file),
        })
    }

    fn write_batch(&mut self, entries: &[&[u8]]) -> Result<(), StoreError> {
        let mut frontier = self.frontier.clone();
        let mut records = Vec::new();
        let mut slots = Vec::with_capacity(entries.len() * 8);
        let mut nodes = Vec::new();
        let mut offset = self.entries_len;
        for entry in entries {
            let leaf = Hash::leaf(entry);
            let len = u32::try_from(entry.len())
                .map_err(|_| StoreError::EntrySize { len: entry.len() })?;
            records.extend_from_slice(&len.to_be_bytes());
            records.extend_from_slice(entry);
            records.extend_from_slice(&leaf.0);
            slots.extend_from_slice(&offset.to_be_bytes());
            offset += record_len(entry.len());
            frontier.push(leaf, &mut nodes);
        }
        let size = self.size();
        let node_bytes: Vec<u8> = nodes.iter().flat_map(|h| h.0).collect();
        let node_at = postorder_count(size).unwrap_or(u64::MAX);
        write_at(&self.entries, &records, self.entries_len, "entries")?;
        write_at(
            &self.nodes,
            &node_bytes,
            HEADER + node_at * HASH_LEN_U64,
            "nodes",
        )?;
        write_at(&self.index, &slots, HEADER + size * 8, "index")?;
        for (file, name) in [
            (&self.entries, "entries"),
            (&self.nodes, "nodes"),
            (&self.index, "index"),
        ] {
            file.sync_data()
                .map_err(StoreError::io(format!("cannot sync the {name} file")))?;
        }
        self.entries_len = offset;
        self.frontier = frontier;
        Ok(())
    }
}

impl Subtrees for FileStore {
    type Error = StoreError;

    fn perfect(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        if !is_inside(level, index, self.size()) {
            return Err(StoreError::OutOfRange {
                what: "subtree",
                value: index,
                size: self.size(),
            });
        }
        let pos = postorder_position(level, index)
            .ok_or_else(|| StoreError::Corrupt(format!("subtree ({level}, {index})")))?;
        self.read_node(pos)
    }
}

impl LogStore for FileStore {
    fn size(&self) -> u64 {
        self.frontier.size()
    }

    fn append(&mut self, entries: &[&[u8]]) -> Result<u64, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        entries.iter().try_for_each(|e| check_entry(e))?;
        let first = self.size();
        if entries.is_empty() {
            return Ok(first);
        }
        // After a failed write or sync the kernel's view of the files is unknown (a failed
        // fsync may have dropped dirty pages), so nothing more is written until recovery runs.
        self.write_batch(entries)
            .inspect_err(|_| self.poisoned = true)?;
        Ok(first)
    }

    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        if index >= self.size() {
            return Err(StoreError::OutOfRange {
                what: "leaf index",
                value: index,
                size: self.size(),
            });
        }
        let offset = self.index_slot(index)?;
        self.record_at(offset, self.entries_len)?
            .map(|(entry, _)| entry)
            .ok_or_else(|| StoreError::Corrupt(format!("entry {index} is damaged")))
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        read_checkpoint(&self.dir)
    }

    fn set_checkpoint(&mut self, note: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join("checkpoint.tmp");
        let mut file =
            File::create(&tmp).map_err(StoreError::io("cannot create checkpoint.tmp"))?;
        file.write_all(note)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io("cannot write checkpoint.tmp"))?;
        std::fs::rename(&tmp, self.dir.join("checkpoint"))
            .map_err(StoreError::io("cannot replace the checkpoint"))?;
        sync_dir(&self.dir)
    }
}

/// Node reads without the size check, for rebuilding the frontier during recovery.
struct RawNodes<'a>(&'a FileStore);

impl Subtrees for RawNodes<'_> {
    type Error = StoreError;

    fn perfect(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        let pos = postorder_position(level, index)
            .ok_or_else(|| StoreError::Corrupt(format!("subtree ({level}, {index})")))?;
        self.0.read_node(pos)
    }
}

/// Sequential reads of records, for recovery and audits.
struct RecordReader<'a> {
    inner: BufReader<&'a File>,
}

impl RecordReader<'_> {
    /// The next record's entry and stored leaf hash; `None` at a torn or implausible record.
    fn next_record(&mut self) -> Result<Option<(Vec<u8>, Hash)>, StoreError> {
        let mut len = [0u8; 4];
        match self.inner.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(StoreError::io("cannot read the entries file")(e)),
        }
        let Ok(len) = usize::try_from(u32::from_be_bytes(len)) else {
            return Ok(None);
        };
        if len > MAX_STORED_ENTRY_LEN {
            return Ok(None);
        }
        let mut body = vec![0u8; len + HASH_LEN];
        match self.inner.read_exact(&mut body) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(StoreError::io("cannot read the entries file")(e)),
        }
        let stored = Hash::from_slice(body.split_off(len).as_slice());
        Ok(stored.map(|stored| (body, stored)))
    }
}

fn record_len(entry_len: usize) -> u64 {
    u64::try_from(entry_len).unwrap_or(u64::MAX) + RECORD_OVERHEAD
}

/// The largest tree size at most `size` whose nodes all fit in `have` stored hashes.
fn largest_size_covered(have: u64, size: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if postorder_count(mid).is_some_and(|c| c <= have) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn read_index_slot(index: &File, i: u64) -> Result<u64, StoreError> {
    let mut buf = [0u8; 8];
    index
        .read_exact_at(&mut buf, HEADER + i * 8)
        .map_err(StoreError::io(format!("cannot read index slot {i}")))?;
    Ok(u64::from_be_bytes(buf))
}

fn read_node(nodes: &File, pos: u64) -> Result<Hash, StoreError> {
    let mut buf = [0u8; HASH_LEN];
    nodes
        .read_exact_at(&mut buf, HEADER + pos * HASH_LEN_U64)
        .map_err(StoreError::io(format!("cannot read node {pos}")))?;
    Ok(Hash(buf))
}

/// The record at `offset` if it is complete and its hash matches; `None` if it is torn or
/// damaged.
fn read_record(
    entries: &File,
    offset: u64,
    file_len: u64,
) -> Result<Option<(Vec<u8>, Hash)>, StoreError> {
    if offset < HEADER || offset.saturating_add(RECORD_OVERHEAD) > file_len {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    entries
        .read_exact_at(&mut len, offset)
        .map_err(StoreError::io("cannot read the entries file"))?;
    let len = u32::from_be_bytes(len);
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    if len > MAX_STORED_ENTRY_LEN || offset + record_len(len) > file_len {
        return Ok(None);
    }
    let mut body = vec![0u8; len + HASH_LEN];
    entries
        .read_exact_at(&mut body, offset + 4)
        .map_err(StoreError::io("cannot read the entries file"))?;
    let stored = Hash::from_slice(body.split_off(len).as_slice());
    match stored {
        Some(stored) if stored == Hash::leaf(&body) => Ok(Some((body, stored))),
        _ => Ok(None),
    }
}

/// The stored checkpoint in `dir`, if any.
fn read_checkpoint(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join("checkpoint");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("cannot open the checkpoint")(e)),
    };
    let mut note = Vec::new();
    file.take(MAX_CHECKPOINT_LEN + 1)
        .read_to_end(&mut note)
        .map_err(StoreError::io("cannot read the checkpoint"))?;
    if u64::try_from(note.len()).unwrap_or(u64::MAX) > MAX_CHECKPOINT_LEN {
        return Err(StoreError::Corrupt(
            "the checkpoint file is too large".into(),
        ));
    }
    Ok(Some(note))
}

fn open_rw(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(StoreError::io(format!("cannot open {}", path.display())))
}

fn open_file(dir: &Path, name: &str, magic: &[u8; 8]) -> Result<File, StoreError> {
    let path = dir.join(name);
    let file = open_rw(&path)?;
    let len = file
        .metadata()
        .map_err(StoreError::io(format!("cannot stat {}", path.display())))?
        .len();
    if len == 0 {
        write_at(&file, magic, 0, name)?;
        file.sync_all()
            .map_err(StoreError::io(format!("cannot sync {}", path.display())))?;
        return Ok(file);
    }
    let mut found = [0u8; 8];
    if len < HEADER || file.read_exact_at(&mut found, 0).is_err() || &found != magic {
        return Err(StoreError::Corrupt(format!(
            "{} is not a log {name} file",
            path.display()
        )));
    }
    Ok(file)
}

fn file_len(file: &File, name: &str) -> Result<u64, StoreError> {
    let len = file
        .metadata()
        .map_err(StoreError::io(format!("cannot stat the {name} file")))?
        .len();
    if len < HEADER {
        return Err(StoreError::Corrupt(format!(
            "the {name} file has no header"
        )));
    }
    Ok(len)
}

fn write_at(file: &File, bytes: &[u8], offset: u64, name: &str) -> Result<(), StoreError> {
    file.write_all_at(bytes, offset)
        .map_err(StoreError::io(format!("cannot write the {name} file")))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!("cannot sync {}", dir.display())))
}
