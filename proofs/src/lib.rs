//! Proofs: the transparency log and the inference receipts of the sovereign runtime.
//!
//! - [`merkle`]: the RFC 9162 Merkle tree, inclusion and consistency proofs and their
//!   verification.
//! - [`note`] and [`checkpoint`]: C2SP signed notes (Ed25519) and `tlog-checkpoint` tree heads,
//!   readable by existing witnesses and monitors.
//! - [`FileStore`]: durable embedded storage (fsync before acknowledgement, recovery on open);
//!   [`LogStore`] is the trait a server database would implement.
//! - [`Log`]: appends entries and signs checkpoints.
//! - [`durable`]: files replaced atomically (temporary file, fsync, rename).
//! - [`entry`]: the typed entries: image registrations and key-release decisions, in one
//!   canonical encoding.
//! - [`receipt`]: COSE_Sign1 receipts that bind an answer to a measured enclave.
//! - [`audit`]: offline verification of proof files, as `attest log` runs it.
//!
//! ```
//! use proofs::{Log, LogStore, MemoryStore, NoteSigner, audit};
//!
//! let signer = NoteSigner::generate("gov.example/attestation-log").unwrap();
//! let key = signer.verifier();
//! let mut log = Log::open(MemoryStore::new(), signer).unwrap();
//! let index = log.append(b"an entry").unwrap();
//! log.checkpoint().unwrap();
//!
//! let proof = log.prove_inclusion(index).unwrap().to_text();
//! let leaf = proofs::Hash::leaf(b"an entry");
//! let included = audit::verify_inclusion_file(proof.as_bytes(), &leaf, &[key], None).unwrap();
//! assert_eq!(included.index, 0);
//! ```

pub mod audit;
pub mod checkpoint;
pub mod cosignature;
pub mod durable;
pub mod entry;
mod file_store;
mod hash;
mod log;
pub mod merkle;
pub mod note;
pub mod proof_file;
pub mod receipt;
mod store;
pub mod tiles;

pub use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
pub use crate::file_store::{FileLogReader, FileStore, RECHECK, Recovery};
pub use crate::hash::{HASH_LEN, Hash};
pub use crate::log::{Log, LogError};
pub use crate::note::{Note, NoteError, NoteSigner, NoteVerifier};
pub use crate::store::{LogStore, MAX_ENTRY_LEN, MemoryStore, StoreError};
