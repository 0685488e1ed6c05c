//! What went wrong, where: every error names its byte offset and, inside a map, the field.

use core::fmt;

/// Why the bytes were refused. [`Error::field`] names the map field being read, when there is
/// one, and [`Error::offset`] the byte where the offending item starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    field: Option<&'static str>,
    offset: Option<usize>,
}

/// What was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is longer than its bound; nothing was read.
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The input ends inside an item.
    Truncated,
    /// Bytes follow the one item the input must be.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// An indefinite-length string, array or map: only definite lengths are read.
    Indefinite,
    /// A reserved additional-information value (28 to 30): not well-formed CBOR.
    Reserved,
    /// An item this reader never accepts: a float, `undefined`, or another simple value.
    Unsupported {
        /// What it was.
        what: &'static str,
    },
    /// An integer or length not in its shortest form, which the deterministic profile
    /// requires.
    NotShortest,
    /// An item of another type than the one expected.
    Type {
        /// What was expected.
        expected: &'static str,
        /// What came.
        found: &'static str,
    },
    /// An array with more elements than allowed.
    TooMany {
        /// How many it announces.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A text string that is not UTF-8.
    InvalidUtf8,
    /// A map key of another type than the map's keys are.
    KeyType {
        /// What the keys must be.
        expected: &'static str,
        /// What came.
        found: &'static str,
    },
    /// Map keys out of the deterministic order (bytewise order of their encodings).
    KeyOrder,
    /// A key that appears twice.
    DuplicateKey {
        /// The key (cut to 64 characters).
        key: String,
    },
    /// A key the format does not define.
    UnknownKey {
        /// The key (cut to 64 characters).
        key: String,
    },
    /// A required key that is absent.
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A well-formed value the format does not allow.
    Invalid {
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, field: Option<&'static str>, offset: Option<usize>) -> Self {
        Self {
            kind,
            field,
            offset,
        }
    }

    /// What was wrong.
    #[must_use]
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The map field being read, if any.
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// Where the offending item starts, in bytes from the start of the input; `None` for what
    /// concerns the whole input or map (a missing key), or a check made after reading.
    #[must_use]
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }

    /// A well-formed value of `field` that the format does not allow, found after reading (a
    /// name that is not one of the format's, a length out of bounds).
    #[must_use]
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Invalid {
                reason: reason.into(),
            },
            Some(field),
            None,
        )
    }

    /// A required `key` is absent from a map.
    #[must_use]
    pub fn missing(key: &'static str) -> Self {
        Self::new(ErrorKind::MissingKey { key }, None, None)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = self.field {
            write!(f, "field {field:?}: ")?;
        }
        match &self.kind {
            ErrorKind::TooLarge { len, max } => write!(f, "{len} bytes; the limit is {max}")?,
            ErrorKind::Truncated => f.write_str("the input ends inside an item")?,
            ErrorKind::TrailingBytes { count } => write!(f, "{count} bytes after the item")?,
            ErrorKind::Indefinite => f.write_str("indefinite lengths are not accepted")?,
            ErrorKind::Reserved => f.write_str("reserved additional information (not CBOR)")?,
            ErrorKind::Unsupported { what } => write!(f, "{what} is not accepted")?,
            ErrorKind::NotShortest => {
                f.write_str("an integer or length not in its shortest encoding")?;
            }
            ErrorKind::Type { expected, found } => write!(f, "expected {expected}, found {found}")?,
            ErrorKind::TooMany { len, max } => {
                write!(f, "{len} elements; at most {max} are allowed")?;
            }
            ErrorKind::InvalidUtf8 => f.write_str("a text string that is not UTF-8")?,
            ErrorKind::KeyType { expected, found } => {
                write!(f, "map keys must be {expected}, found {found}")?;
            }
            ErrorKind::KeyOrder => f.write_str("map keys out of deterministic order")?,
            ErrorKind::DuplicateKey { key } => write!(f, "key {key:?} appears twice")?,
            ErrorKind::UnknownKey { key } => write!(f, "unknown key {key:?}")?,
            ErrorKind::MissingKey { key } => write!(f, "required key {key:?} is missing")?,
            ErrorKind::Invalid { reason } => f.write_str(reason)?,
        }
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset})")?;
        }
        Ok(())
    }
}

/// A key for an error message: at most 64 characters.
pub(crate) fn shown(key: &str) -> String {
    key.chars().take(64).collect()
}
