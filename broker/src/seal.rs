//! `broker seal`: a new data key from the key store, the model encrypted under it in two
//! streaming passes (hash, then encrypt), the sealed file written atomically, then the model's
//! record, then its `model-sealed` log entry.
//!
//! A crash before the record is written leaves at most a sealed file whose key was never
//! recorded (useless, and harmless); the model's previous record, if any, stays in force until
//! the new one replaces it.

use std::fs::File;
use std::path::Path;

use attest::Timestamp;
use data_encoding::HEXLOWER;
use sealing::{Header, Id, SealError};

use crate::keystore::{KeyStore, KeyStoreError};
use crate::release::sealed_entry;
use crate::state::{Ledger, ModelRecord, StateDir, StateError};

/// Which pass a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Hashing the model.
    Hash,
    /// Encrypting it.
    Encrypt,
}

/// Why sealing failed. Nothing is left behind at the output path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealModelError {
    /// The model could not be read.
    #[error("reading the model {path}: {source}")]
    Input {
        /// The model's path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Sealing failed (the model changed while it was read, or writing failed).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The output exists and replacing it was not asked for.
    #[error("{0} already exists; refusing to overwrite it (--force replaces it)")]
    OutputExists(String),
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// The record or log failed (the sealed file was written).
    #[error(transparent)]
    State(#[from] StateError),
}

/// What was sealed.
#[derive(Debug)]
pub struct Sealed {
    /// The model's record.
    pub record: ModelRecord,
    /// The sealed file's length.
    pub sealed_len: u64,
}

/// What to seal, and where.
#[derive(Debug)]
pub struct SealRequest<'a> {
    /// The model file.
    pub input: &'a Path,
    /// Its id.
    pub model_id: Id,
    /// The sealed file to write.
    pub out: &'a Path,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// When it is sealed, as the record and the log say.
    pub at: Timestamp,
}

/// Seal `request.input`. With `ledger`, the sealing is logged now; without (another process
/// holds the log), the record is left unlogged for the running broker to log before release.
pub fn seal_model(
    request: &SealRequest<'_>,
    key_store: &dyn KeyStore,
    state: &StateDir,
    ledger: Option<&Ledger>,
    progress: &mut dyn FnMut(Pass, u64),
) -> Result<Sealed, SealModelError> {
    if !request.overwrite && request.out.exists() {
        return Err(SealModelError::OutputExists(
            request.out.display().to_string(),
        ));
    }
    let open = || {
        File::open(request.input)
            // Unbuffered: both passes read in large pieces into buffers that are wiped, and a
            // BufReader's own buffer of plaintext would not be.
            .map_err(|source| SealModelError::Input {
                path: request.input.display().to_string(),
                source,
            })
    };
    let (len, digest) = sealing::digest(&mut open()?, &mut |n| progress(Pass::Hash, n))?;
    let (key, wrapped_key) = key_store.new_data_key()?;
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| KeyStoreError::Device("random".into()))?;
    let key_id = Id::new(&format!(
        "{}/{}",
        key_store.kek_label(),
        HEXLOWER.encode(&suffix)
    ))?;
    let header = Header::new(
        request.model_id.clone(),
        key_id.clone(),
        request.chunk_size,
        len,
        digest,
    )?;
    let mut input = open()?;
    let replace = proofs::durable::Replace {
        private: false,
        overwrite: request.overwrite,
    };
    proofs::durable::write_atomically(request.out, replace, |out| {
        sealing::seal(&mut input, out, &header, &key, &mut |n| {
            progress(Pass::Encrypt, n)
        })
    })?;
    drop(key);

    let mut record = ModelRecord {
        model_id: request.model_id.clone(),
        key_id,
        wrapped_key,
        model_sha384: digest,
        model_len: len,
        sealed_at: request.at,
        log_index: None,
        tag: [0; crate::keystore::RECORD_TAG_LEN],
    };
    record.tag = key_store.record_tag(&record.authenticated_bytes())?;
    state.save_record(&record)?;
    if let Some(ledger) = ledger {
        record.log_index = Some(ledger.append(sealed_entry(&record))?);
        state.save_record(&record)?;
    }
    Ok(Sealed {
        sealed_len: header.sealed_len(),
        record,
    })
}
