//! Why an image could not be read or built.

use crate::format::SectionKind;
use crate::signature::SignatureError;

/// An image that cannot be read or built. Each variant names what was wrong; [`ImageError::kind`]
/// gives a stable identifier for scripts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Reading an input or writing the output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The image ends before its header does.
    #[error("image is {len} bytes, shorter than the 548-byte EIF header")]
    TooShort {
        /// The image's length.
        len: u64,
    },
    /// The first four bytes are not `.eif`.
    #[error("not an EIF image: it does not start with the magic `.eif`")]
    BadMagic,
    /// A version other than 4.
    #[error("EIF version {version} is not supported (this reader reads version 4)")]
    UnsupportedVersion {
        /// The version in the header.
        version: u16,
    },
    /// The header breaks a rule of the format.
    #[error("malformed EIF header: {reason}")]
    MalformedHeader {
        /// Which rule.
        reason: String,
    },
    /// A section breaks a rule of the format: its type, flags, order, or agreement with the
    /// header.
    #[error("section {index}: {reason}")]
    MalformedSection {
        /// The section's position, from 0.
        index: usize,
        /// Which rule.
        reason: String,
    },
    /// Sections overlap, leave a gap, or extend past the end of the image.
    #[error("section {index} ({reason})")]
    Layout {
        /// The section's position, from 0.
        index: usize,
        /// What is wrong with where it lies.
        reason: String,
    },
    /// A section larger than its kind allows.
    #[error("section {index} ({kind}) is {size} bytes; the limit is {limit}")]
    SectionTooLarge {
        /// The section's position, from 0.
        index: usize,
        /// Its kind.
        kind: SectionKind,
        /// Its declared size.
        size: u64,
        /// The limit for its kind.
        limit: u64,
    },
    /// The image ends inside a section, or has bytes after its last section.
    #[error("image length does not match its header: {reason}")]
    Length {
        /// How.
        reason: String,
    },
    /// The CRC in the header does not match the image.
    #[error("CRC-32 mismatch: the header says {expected:08x}, the image's bytes give {actual:08x}")]
    CrcMismatch {
        /// The header's value.
        expected: u32,
        /// The value computed over the image.
        actual: u32,
    },
    /// The signature section is malformed or does not verify.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// More sections than the header has room for.
    #[error("{count} sections; an EIF header has room for 32")]
    TooManySections {
        /// How many were asked for.
        count: usize,
    },
    /// The parts given to the builder do not make an image.
    #[error("cannot build the image: {reason}")]
    InvalidInput {
        /// Why.
        reason: String,
    },
    /// An input changed between the builder's measuring pass and its writing pass.
    #[error("{part} changed while the image was being built")]
    InputChanged {
        /// Which part.
        part: String,
    },
}

impl ImageError {
    /// A stable identifier for scripts: `io`, `too_short`, `bad_magic`, `unsupported_version`,
    /// `malformed_header`, `malformed_section`, `layout`, `section_too_large`, `length`,
    /// `crc_mismatch`, `bad_signature`, `too_many_sections`, `invalid_input`, `input_changed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Io { .. } => "io",
            ImageError::TooShort { .. } => "too_short",
            ImageError::BadMagic => "bad_magic",
            ImageError::UnsupportedVersion { .. } => "unsupported_version",
            ImageError::MalformedHeader { .. } => "malformed_header",
            ImageError::MalformedSection { .. } => "malformed_section",
            ImageError::Layout { .. } => "layout",
            ImageError::SectionTooLarge { .. } => "section_too_large",
            ImageError::Length { .. } => "length",
            ImageError::CrcMismatch { .. } => "crc_mismatch",
            ImageError::Signature(_) => "bad_signature",
            ImageError::TooManySections { .. } => "too_many_sections",
            ImageError::InvalidInput { .. } => "invalid_input",
            ImageError::InputChanged { .. } => "input_changed",
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}
