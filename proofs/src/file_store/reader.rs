//! The read-only view of a log directory, for monitors and tile servers.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    ENTRIES_MAGIC, HASH_LEN_U64, HEADER, INDEX_MAGIC, NODES_MAGIC, RECORD_OVERHEAD, file_len,
    read_checkpoint, read_index_slot, read_node, read_record,
};
use crate::hash::{HASH_LEN, Hash};
use crate::merkle::{Subtrees, is_inside, postorder_position};
use crate::store::{MAX_STORED_ENTRY_LEN, StoreError};

/// A read-only view of a log directory, for monitors and tile servers: no lock, no repair, and
/// nothing beyond the tree size it is opened at (the stored checkpoint's, which the writer
/// publishes only after the entries under it are synced), so it can run beside the broker that
/// writes the log.
#[derive(Debug)]
pub struct FileLogReader {
    dir: PathBuf,
    entries: File,
    index: File,
    nodes: File,
    size: u64,
    /// The entries file's length after the checkpoint was read: it holds every record the
    /// checkpoint covers.
    entries_len: u64,
    /// Index slots at that moment.
    indexed: u64,
}

impl FileLogReader {
    /// Open the log in `dir` at the size of its stored checkpoint (0 without one). The
    /// checkpoint's signature is the caller's to check; its size must be within the files.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Self, Option<Vec<u8>>), StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let open = |name: &str, magic: &[u8; 8]| -> Result<File, StoreError> {
            let path = dir.join(name);
            let file = File::open(&path)
                .map_err(StoreError::io(format!("cannot open {}", path.display())))?;
            let mut found = [0u8; 8];
            if file.read_exact_at(&mut found, 0).is_err() || &found != magic {
                return Err(StoreError::Corrupt(format!(
                    "{} is not a log {name} file",
                    path.display()
                )));
            }
            Ok(file)
        };
        let mut reader = Self {
            entries: open("entries", ENTRIES_MAGIC)?,
            index: open("index", INDEX_MAGIC)?,
            nodes: open("nodes", NODES_MAGIC)?,
            dir,
            size: 0,
            entries_len: 0,
            indexed: 0,
        };
        let note = read_checkpoint(&reader.dir)?;
        reader.entries_len = file_len(&reader.entries, "entries")?;
        reader.indexed = (file_len(&reader.index, "index")? - HEADER) / 8;
        if let Some(note) = &note {
            let size = crate::note::Note::parse(note)
                .ok()
                .and_then(|n| crate::Checkpoint::parse_text(&n.text).ok())
                .ok_or_else(|| StoreError::Corrupt("the stored checkpoint does not parse".into()))?
                .size;
            if size > reader.indexed {
                return Err(StoreError::Corrupt(format!(
                    "the stored checkpoint covers {size} entries, the index {}",
                    reader.indexed
                )));
            }
            reader.size = size;
        }
        Ok((reader, note))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tree size it serves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Entry `index`, its stored leaf hash checked.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        if index >= self.size {
            return Err(StoreError::OutOfRange {
                what: "leaf index",
                value: index,
                size: self.size,
            });
        }
        let offset = read_index_slot(&self.index, index)?;
        read_record(&self.entries, offset, self.entries_len)?
            .map(|(entry, _)| entry)
            .ok_or_else(|| StoreError::Corrupt(format!("entry {index} is damaged")))
    }
}

impl FileLogReader {
    /// Entries `first .. first + count` (at most 256), read at once: one read of their index
    /// slots and one of their records, which lie back to back; each record's stored leaf hash is
    /// checked.
    pub fn entries(&self, first: u64, count: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = first.saturating_add(count);
        if count == 0 || count > 256 || end > self.size {
            return Err(StoreError::OutOfRange {
                what: "entry range end",
                value: end,
                size: self.size,
            });
        }
        let mut slots = vec![0u8; usize::try_from(count * 8).unwrap_or(0)];
        self.index
            .read_exact_at(&mut slots, HEADER + first * 8)
            .map_err(StoreError::io("cannot read the index"))?;
        let offsets: Vec<u64> = slots
            .chunks_exact(8)
            .filter_map(|c| <[u8; 8]>::try_from(c).ok().map(u64::from_be_bytes))
            .collect();
        let start = offsets.first().copied().unwrap_or(HEADER);
        // The span ends with the last record, whose length its own header gives (what follows
        // it may be a batch still being written).
        let last = offsets.last().copied().unwrap_or(HEADER);
        let mut len = [0u8; 4];
        if last.saturating_add(RECORD_OVERHEAD) <= self.entries_len {
            self.entries
                .read_exact_at(&mut len, last)
                .map_err(StoreError::io("cannot read the entries file"))?;
        }
        let stop = u64::from(u32::from_be_bytes(len))
            .checked_add(RECORD_OVERHEAD)
            .and_then(|n| n.checked_add(last))
            .unwrap_or(u64::MAX);
        let most = count * (RECORD_OVERHEAD + u64::from(u16::MAX) + 1);
        if start < HEADER || stop < start || stop - start > most || stop > self.entries_len {
            return Err(StoreError::Corrupt(format!(
                "entries {first}..{end}: the index points outside the entries"
            )));
        }
        let mut span = vec![0u8; usize::try_from(stop - start).unwrap_or(0)];
        self.entries
            .read_exact_at(&mut span, start)
            .map_err(StoreError::io("cannot read the entries file"))?;
        let mut entries = Vec::with_capacity(offsets.len());
        for (i, offset) in (first..).zip(&offsets) {
            let damaged = || StoreError::Corrupt(format!("entry {i} is damaged"));
            let at = offset
                .checked_sub(start)
                .and_then(|at| usize::try_from(at).ok())
                .ok_or_else(damaged)?;
            let record = span.get(at..).ok_or_else(damaged)?;
            let (len, rest) = record.split_first_chunk::<4>().ok_or_else(damaged)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| damaged())?;
            let body = rest.get(..len).ok_or_else(damaged)?;
            let stored = rest.get(len..len + HASH_LEN).and_then(Hash::from_slice);
            if len > MAX_STORED_ENTRY_LEN || stored != Some(Hash::leaf(body)) {
                return Err(damaged());
            }
            entries.push(body.to_vec());
        }
        Ok(entries)
    }
}

impl Subtrees for FileLogReader {
    type Error = StoreError;

    fn perfect(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        if !is_inside(level, index, self.size) {
            return Err(StoreError::OutOfRange {
                what: "subtree",
                value: index,
                size: self.size,
            });
        }
        let pos = postorder_position(level, index)
            .ok_or_else(|| StoreError::Corrupt(format!("subtree ({level}, {index})")))?;
        read_node(&self.nodes, pos)
    }

    /// Leaf hashes (a level-0 tile) in one read: leaves `i .. j` and the nodes between them lie
    /// back to back in post-order (at most 511 hashes for 256 leaves).
    fn perfect_run(&self, level: u32, index: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        let last = index.saturating_add(count).saturating_sub(1);
        if level != 0 || count == 0 || count > 256 || !is_inside(0, last, self.size) {
            return (index..index.saturating_add(count))
                .map(|i| self.perfect(level, i))
                .collect();
        }
        let position = |i: u64| {
            postorder_position(0, i).ok_or_else(|| StoreError::Corrupt(format!("leaf {i}")))
        };
        let (first, stop) = (position(index)?, position(last)?);
        let mut span = vec![0u8; usize::try_from((stop - first + 1) * HASH_LEN_U64).unwrap_or(0)];
        self.nodes
            .read_exact_at(&mut span, HEADER + first * HASH_LEN_U64)
            .map_err(StoreError::io("cannot read the nodes file"))?;
        (index..=last)
            .map(|i| {
                let at = usize::try_from((position(i)? - first) * HASH_LEN_U64)
                    .map_err(|_| StoreError::Corrupt(format!("leaf {i}")))?;
                span.get(at..at + HASH_LEN)
                    .and_then(Hash::from_slice)
                    .ok_or_else(|| StoreError::Corrupt(format!("leaf {i}")))
            })
            .collect()
    }
}
