//! Why sealing or opening failed.

/// Why a model could not be sealed or opened. Opening fails closed: no plaintext is returned
/// with any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The bytes do not start with the sealed-model magic.
    #[error("not a sealed model (wrong magic)")]
    NotSealed,
    /// A format version this build does not read.
    #[error("sealed-model version {0} is not supported; this build reads version 1")]
    UnsupportedVersion(u16),
    /// A header field is out of range or inconsistent.
    #[error("malformed sealed-model header: {0}")]
    Malformed(String),
    /// A model or key id breaks the identifier rules.
    #[error("invalid id {0}")]
    InvalidId(String),
    /// The file ends before the header says it does: a truncated file.
    #[error("the sealed model is truncated")]
    Truncated,
    /// Bytes follow the final chunk.
    #[error("the sealed model has bytes after its final chunk")]
    TrailingData,
    /// A chunk's tag does not verify: a flipped bit, a reordered, truncated or spliced chunk,
    /// or the wrong key.
    #[error("chunk {index} does not authenticate (tampered, reordered, spliced, or the wrong key)")]
    ChunkAuthentication {
        /// The chunk.
        index: u64,
    },
    /// The header names another model, key or digest than the caller expected.
    #[error("the sealed model's {field} is {found}, expected {expected}")]
    Unexpected {
        /// The field.
        field: &'static str,
        /// What the header says.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// The plaintext is larger than the caller allows.
    #[error("the sealed model holds {len} bytes; at most {max} are allowed")]
    TooLarge {
        /// The plaintext length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The plaintext's SHA-384 differs from the header's.
    #[error("the plaintext's SHA-384 does not match the header")]
    DigestMismatch,
    /// The input changed between the pass that hashed it and the pass that sealed it.
    #[error("the model changed while it was being sealed; nothing was written")]
    InputChanged,
    /// A key of the wrong length.
    #[error("a data key is 32 bytes, not {0}")]
    WrongKeyLength(usize),
    /// The crypto library failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for SealError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl SealError {
    /// A stable short name for logs, metrics and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotSealed => "not_sealed",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::Malformed(_) => "malformed",
            Self::InvalidId(_) => "invalid_id",
            Self::Truncated => "truncated",
            Self::TrailingData => "trailing_data",
            Self::ChunkAuthentication { .. } => "chunk_authentication",
            Self::Unexpected { .. } => "unexpected_header",
            Self::TooLarge { .. } => "too_large",
            Self::DigestMismatch => "digest_mismatch",
            Self::InputChanged => "input_changed",
            Self::WrongKeyLength(_) => "wrong_key_length",
            Self::Crypto(_) => "crypto",
            Self::Io(_) => "io",
        }
    }
}
