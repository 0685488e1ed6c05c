//! Offline checks of what a log hands out: an inclusion proof file against a trusted log key,
//! and a consistency proof between two signed checkpoints.

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::hash::Hash;
use crate::merkle::{ProofError, verify_consistency, verify_inclusion};
use crate::note::NoteVerifier;
use crate::proof_file::{ConsistencyProofFile, InclusionProofFile, ProofFileError};

/// Why a proof was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The proof file is malformed.
    #[error(transparent)]
    ProofFile(#[from] ProofFileError),
    /// A checkpoint is malformed, from another log, or not signed by a trusted key.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The Merkle proof does not hold.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The proof file names other tree sizes than the checkpoints.
    #[error("the proof is for sizes {proof_old} → {proof_new}, the checkpoints are {old} → {new}")]
    Sizes {
        /// The proof's old size.
        proof_old: u64,
        /// The proof's new size.
        proof_new: u64,
        /// The old checkpoint's size.
        old: u64,
        /// The new checkpoint's size.
        new: u64,
    },
    /// The checkpoint lacks the witnesses' cosignatures required, or one is forged.
    #[error(transparent)]
    Witnesses(#[from] crate::cosignature::WitnessError),
    /// The two checkpoints come from different logs.
    #[error("the checkpoints come from different logs: {old:?} and {new:?}")]
    Origins {
        /// The old checkpoint's origin.
        old: String,
        /// The new checkpoint's origin.
        new: String,
    },
}

/// What an inclusion proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Included {
    /// The entry's index.
    pub index: u64,
    /// The entry's leaf hash.
    pub leaf: Hash,
    /// The signed checkpoint the entry is included in.
    pub checkpoint: SignedCheckpoint,
}

/// Verify a `c2sp.org/tlog-proof@v1` file: its checkpoint is signed by one of `keys` (and comes
/// from `origin`, if given), and the entry with leaf hash `leaf` is at the proof's index in the
/// checkpoint's tree.
pub fn verify_inclusion_file(
    proof: &[u8],
    leaf: &Hash,
    keys: &[NoteVerifier],
    origin: Option<&str>,
) -> Result<Included, AuditError> {
    let file = InclusionProofFile::parse(proof)?;
    let checkpoint = SignedCheckpoint::open(file.checkpoint.as_bytes(), keys, origin)?;
    verify_inclusion(
        leaf,
        file.index,
        checkpoint.checkpoint.size,
        &file.hashes,
        &checkpoint.checkpoint.root,
    )?;
    Ok(Included {
        index: file.index,
        leaf: *leaf,
        checkpoint,
    })
}

/// Verify that the `new` checkpoint's tree extends the `old` one's: both are signed by one of
/// `keys`, come from the same log (`origin`, if given), and `proof` links their roots.
pub fn verify_consistency_files(
    old: &[u8],
    new: &[u8],
    proof: &[u8],
    keys: &[NoteVerifier],
    origin: Option<&str>,
) -> Result<(SignedCheckpoint, SignedCheckpoint), AuditError> {
    let old = SignedCheckpoint::open(old, keys, origin)?;
    let new = SignedCheckpoint::open(new, keys, origin)?;
    if old.checkpoint.origin != new.checkpoint.origin {
        return Err(AuditError::Origins {
            old: old.checkpoint.origin,
            new: new.checkpoint.origin,
        });
    }
    let file = ConsistencyProofFile::parse(proof)?;
    if (file.old, file.new) != (old.checkpoint.size, new.checkpoint.size) {
        return Err(AuditError::Sizes {
            proof_old: file.old,
            proof_new: file.new,
            old: old.checkpoint.size,
            new: new.checkpoint.size,
        });
    }
    verify_consistency(
        file.old,
        file.new,
        &file.hashes,
        &old.checkpoint.root,
        &new.checkpoint.root,
    )?;
    Ok((old, new))
}
