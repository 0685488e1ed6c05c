//! A signing log: a store, the log's origin and its note key.
//!
//! The log never signs a checkpoint that is inconsistent with the one it signed before: on open
//! it checks that the stored checkpoint's tree is a prefix of the stored entries, and checkpoints
//! are only ever signed over the store's current tree.

use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::hash::Hash;
use crate::note::{NoteError, NoteSignature, NoteSigner, NoteVerifier};
use crate::proof_file::{ConsistencyProofFile, InclusionProofFile};
use crate::store::{LogStore, StoreError};

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The stored checkpoint is not signed by this log's key or is not a checkpoint.
    #[error("the stored checkpoint cannot be used: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The stored checkpoint covers more entries than the store holds: entries that were
    /// acknowledged are missing.
    #[error("the stored checkpoint covers {checkpoint} entries but the log holds {stored}")]
    CheckpointAhead {
        /// The checkpoint's size.
        checkpoint: u64,
        /// The entries in the store.
        stored: u64,
    },
    /// The stored entries do not hash to the stored checkpoint's root.
    #[error("the entries do not match the stored checkpoint at size {size}")]
    CheckpointMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// No checkpoint covers the entry asked about yet.
    #[error("entry {index} is not covered by a signed checkpoint yet")]
    NotCheckpointed {
        /// The entry.
        index: u64,
    },
}

/// An append-only log that signs checkpoints.
#[derive(Debug)]
pub struct Log<S> {
    store: S,
    signer: NoteSigner,
    latest: Option<SignedCheckpoint>,
}

impl<S: LogStore> Log<S> {
    /// Open a log over `store`, signing as `signer` (whose key name is the log's origin). A
    /// stored checkpoint must verify under the signer's key and match the stored entries.
    pub fn open(store: S, signer: NoteSigner) -> Result<Self, LogError> {
        let latest = match store.checkpoint()? {
            None => None,
            Some(note) => {
                let cp = SignedCheckpoint::open(&note, &[signer.verifier()], Some(signer.name()))?;
                let size = cp.checkpoint.size;
                if size > store.size() {
                    return Err(LogError::CheckpointAhead {
                        checkpoint: size,
                        stored: store.size(),
                    });
                }
                if store.root_at(size)? != cp.checkpoint.root {
                    return Err(LogError::CheckpointMismatch { size });
                }
                Some(cp)
            }
        };
        Ok(Self {
            store,
            signer,
            latest,
        })
    }

    /// The log's origin (its key name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.store.size()
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Append one entry durably; returns its index.
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, LogError> {
        Ok(self.store.append(&[entry])?)
    }

    /// Append entries durably with one set of syncs; returns the index of the first.
    pub fn append_batch(&mut self, entries: &[&[u8]]) -> Result<u64, LogError> {
        Ok(self.store.append(entries)?)
    }

    /// The latest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.latest.as_ref()
    }

    /// Sign and store a checkpoint over every entry appended so far (or return the latest one if
    /// nothing was appended since).
    pub fn checkpoint(&mut self) -> Result<SignedCheckpoint, LogError> {
        let signed = self.sign_checkpoint()?;
        if self.latest.as_ref() == Some(&signed) {
            return Ok(signed);
        }
        self.publish(signed, &[])
    }

    /// Sign a checkpoint over every entry appended so far without storing it (the latest one if
    /// nothing was appended since), for witnesses to cosign before [`Log::publish`].
    pub fn sign_checkpoint(&self) -> Result<SignedCheckpoint, LogError> {
        let size = self.store.size();
        if let Some(latest) = &self.latest
            && latest.checkpoint.size == size
        {
            return Ok(latest.clone());
        }
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size,
            root: self.store.root_at(size)?,
            extensions: Vec::new(),
        };
        let note = self.signer.sign(&checkpoint.to_text())?.to_text();
        Ok(SignedCheckpoint {
            checkpoint,
            note,
            signed_by: vec![self.signer.name().to_owned()],
        })
    }

    /// Store `signed` (from [`Log::sign_checkpoint`]) with `cosignatures` added, as the latest
    /// checkpoint: inclusion proofs from now on are in it. It must still be this log's current
    /// tree. The caller checks the cosignatures; the log only keeps them.
    pub fn publish(
        &mut self,
        mut signed: SignedCheckpoint,
        cosignatures: &[NoteSignature],
    ) -> Result<SignedCheckpoint, LogError> {
        let size = signed.checkpoint.size;
        if size != self.store.size() || self.store.root_at(size)? != signed.checkpoint.root {
            return Err(LogError::CheckpointMismatch { size });
        }
        if !cosignatures.is_empty() {
            signed.note = crate::cosignature::add_cosignatures(&signed.note, cosignatures)?;
        }
        self.store.set_checkpoint(signed.note.as_bytes())?;
        self.latest = Some(signed.clone());
        Ok(signed)
    }

    /// Add witnesses' `cosignatures` to the latest checkpoint's note and store it; inclusion
    /// proofs from now on carry them. The caller checks the cosignatures: the log only keeps them.
    pub fn add_cosignatures(
        &mut self,
        cosignatures: &[NoteSignature],
    ) -> Result<SignedCheckpoint, LogError> {
        let latest = self.latest.clone().ok_or(NoteError::Malformed(
            "there is no checkpoint to add cosignatures to",
        ))?;
        let note = crate::cosignature::add_cosignatures(&latest.note, cosignatures)?;
        self.store.set_checkpoint(note.as_bytes())?;
        let latest = SignedCheckpoint { note, ..latest };
        self.latest = Some(latest.clone());
        Ok(latest)
    }

    /// The entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, LogError> {
        Ok(self.store.entry(index)?)
    }

    /// The root of the tree of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        Ok(self.store.root_at(size)?)
    }

    /// A `c2sp.org/tlog-proof@v1` proof that entry `index` is in the latest checkpoint.
    pub fn prove_inclusion(&self, index: u64) -> Result<InclusionProofFile, LogError> {
        let latest = self
            .latest
            .as_ref()
            .filter(|cp| index < cp.checkpoint.size)
            .ok_or(LogError::NotCheckpointed { index })?;
        Ok(InclusionProofFile {
            extra: None,
            index,
            hashes: self.store.inclusion_proof(index, latest.checkpoint.size)?,
            checkpoint: latest.note.clone(),
        })
    }

    /// A proof that the tree of `new` entries extends the tree of `old` entries.
    pub fn prove_consistency(&self, old: u64, new: u64) -> Result<ConsistencyProofFile, LogError> {
        Ok(ConsistencyProofFile {
            old,
            new,
            hashes: self.store.consistency_proof(old, new)?,
        })
    }
}
