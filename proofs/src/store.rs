//! Where a log keeps its entries, its tree and its latest checkpoint.
//!
//! [`LogStore`] is what a log needs from storage; [`crate::FileStore`] is the embedded default
//! (one directory, nothing to install) and [`MemoryStore`] holds everything in memory for tests.
//! A server database can implement the same trait.

use std::io;

use crate::hash::Hash;
use crate::merkle::{self, Frontier, Subtrees, is_inside, postorder_position};

/// The largest entry a log accepts, in bytes: what a C2SP tlog-tiles entry bundle's 16-bit
/// length prefix can carry. Entries are records of decisions, not documents.
pub const MAX_ENTRY_LEN: usize = 65_535;
/// The largest entry a stored log may hold: logs written before the limit above took 64 KiB,
/// and their entries stay readable (they cannot be served as tiles).
pub(crate) const MAX_STORED_ENTRY_LEN: usize = 64 * 1024;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused a read, write or sync.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The stored data contradicts itself beyond what crash recovery repairs.
    #[error("the log storage is corrupt: {0}")]
    Corrupt(String),
    /// Another process holds the log open for writing.
    #[error("the log at {0} is in use by another process")]
    Locked(String),
    /// A write failed earlier; the store refuses further writes until it is reopened, which
    /// runs recovery.
    #[error("an earlier write failed; reopen the log to recover")]
    Poisoned,
    /// An entry is larger than [`MAX_ENTRY_LEN`].
    #[error("entry of {len} bytes: entries must be at most {MAX_ENTRY_LEN} bytes")]
    EntrySize {
        /// The entry's length.
        len: usize,
    },
    /// An index or size beyond the tree.
    #[error("{what} {value} is beyond the tree of size {size}")]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The tree size.
        size: u64,
    },
}

impl From<merkle::NotANode> for StoreError {
    fn from(e: merkle::NotANode) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Storage for one append-only log.
///
/// `append` must make the entries durable before it returns: a log acknowledges an entry only
/// after that, and recovery must never lose an acknowledged entry. Proofs are generated from
/// [`Subtrees::perfect`], which must answer in O(1) reads.
pub trait LogStore: Subtrees<Error = StoreError> {
    /// The number of entries.
    fn size(&self) -> u64;

    /// Append `entries` durably, in order; return the index of the first one.
    fn append(&mut self, entries: &[&[u8]]) -> Result<u64, StoreError>;

    /// The entry at `index`, exactly as appended.
    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError>;

    /// The latest signed checkpoint, as stored.
    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replace the latest signed checkpoint durably.
    fn set_checkpoint(&mut self, note: &[u8]) -> Result<(), StoreError>;

    /// The hash of the leaf at `index`.
    fn leaf_hash(&self, index: u64) -> Result<Hash, StoreError> {
        check_below("leaf index", index, self.size())?;
        self.perfect(0, index)
    }

    /// The root of the tree of the first `size` entries.
    fn root_at(&self, size: u64) -> Result<Hash, StoreError> {
        check_at_most("tree size", size, self.size())?;
        merkle::root(self, size)
    }

    /// The inclusion proof of entry `index` in the tree of the first `size` entries.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        check_at_most("tree size", size, self.size())?;
        check_below("leaf index", index, size)?;
        merkle::inclusion_proof(self, index, size)
    }

    /// The proof that the tree of `new` entries extends the tree of `old` entries.
    fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        check_at_most("tree size", new, self.size())?;
        check_at_most("old tree size", old, new)?;
        merkle::consistency_proof(self, old, new)
    }
}

fn check_below(what: &'static str, value: u64, size: u64) -> Result<(), StoreError> {
    if value < size {
        Ok(())
    } else {
        Err(StoreError::OutOfRange { what, value, size })
    }
}

fn check_at_most(what: &'static str, value: u64, size: u64) -> Result<(), StoreError> {
    if value <= size {
        Ok(())
    } else {
        Err(StoreError::OutOfRange { what, value, size })
    }
}

pub(crate) fn check_entry(entry: &[u8]) -> Result<(), StoreError> {
    if entry.len() > MAX_ENTRY_LEN {
        return Err(StoreError::EntrySize { len: entry.len() });
    }
    Ok(())
}

/// A log held in memory: for tests and for computing what a file store must contain.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    entries: Vec<Vec<u8>>,
    /// Perfect-subtree hashes in post-order.
    nodes: Vec<Hash>,
    frontier: Frontier,
    checkpoint: Option<Vec<u8>>,
}

impl MemoryStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

impl Subtrees for MemoryStore {
    type Error = StoreError;

    fn perfect(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        if !is_inside(level, index, self.size()) {
            return Err(StoreError::OutOfRange {
                what: "subtree",
                value: index,
                size: self.size(),
            });
        }
        postorder_position(level, index)
            .and_then(|pos| usize::try_from(pos).ok())
            .and_then(|pos| self.nodes.get(pos))
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("no hash for subtree ({level}, {index})")))
    }
}

impl LogStore for MemoryStore {
    fn size(&self) -> u64 {
        self.frontier.size()
    }

    fn append(&mut self, entries: &[&[u8]]) -> Result<u64, StoreError> {
        entries.iter().try_for_each(|e| check_entry(e))?;
        let first = self.size();
        for entry in entries {
            self.frontier.push(Hash::leaf(entry), &mut self.nodes);
            self.entries.push(entry.to_vec());
        }
        Ok(first)
    }

    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        check_below("leaf index", index, self.size())?;
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("no entry {index}")))
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.checkpoint.clone())
    }

    fn set_checkpoint(&mut self, note: &[u8]) -> Result<(), StoreError> {
        self.checkpoint = Some(note.to_vec());
        Ok(())
    }
}
