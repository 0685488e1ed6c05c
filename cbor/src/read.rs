//! The reader: one pass over borrowed bytes, driven by the caller's schema. It never skips an
//! item it was not asked for (an unknown key is an error at once), so the structure of untrusted
//! input never drives recursion, and every length is checked against the bytes left before
//! anything is done with it.

use std::collections::BTreeSet;

use crate::error::{Error, ErrorKind, shown};

/// How strict a reader is about the encoding. Both refuse indefinite lengths, floats,
/// `undefined` and other simple values, unexpected tags, duplicate keys and trailing bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// The one deterministic encoding (RFC 8949 section 4.2.1): every integer and length in its
    /// shortest form, map keys in increasing bytewise order of their encodings. Our own
    /// messages, log entries and receipt payloads are read this way, so each has exactly one
    /// encoding.
    Deterministic,
    /// An attestation document's payload, as the NSM writes it: its keys follow AWS's schema
    /// order rather than the deterministic one, so keys may come in any order (still each at
    /// most once) and integers in any width. The document's signature covers its bytes, so
    /// other encodings of the same values cannot be substituted for a signed one.
    Document,
}

const UINT: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;

const FALSE: u64 = 20;
const TRUE: u64 = 21;

fn major_name(major: u8) -> &'static str {
    match major {
        UINT => "an unsigned integer",
        NEGATIVE => "a negative integer",
        BYTES => "a byte string",
        TEXT => "a text string",
        ARRAY => "an array",
        MAP => "a map",
        TAG => "a tag",
        _ => "a simple value or float",
    }
}

/// An item's initial byte and argument.
#[derive(Clone, Copy, Debug)]
struct Head {
    major: u8,
    arg: u64,
    /// Where the item starts.
    start: usize,
}

/// Reads one input, item by item, as the caller's schema asks.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    offset: usize,
    profile: Profile,
    field: Option<&'static str>,
}

impl<'a> Reader<'a> {
    /// Read `input`, which must be exactly one item read by `read`, and at most `max` bytes.
    /// `read` may fail with the caller's own error type, into which the reader's errors
    /// convert.
    ///
    /// ```
    /// use cbor::{Profile, Reader};
    ///
    /// let two = [0x02];
    /// assert_eq!(Reader::read_all(&two, 64, Profile::Deterministic, |r| r.uint()), Ok(2));
    /// // 2 written in two bytes is not the deterministic encoding:
    /// let long_two = [0x18, 0x02];
    /// assert!(Reader::read_all(&long_two, 64, Profile::Deterministic, |r| r.uint()).is_err());
    /// ```
    pub fn read_all<T, E: From<Error>>(
        input: &'a [u8],
        max: usize,
        profile: Profile,
        read: impl FnOnce(&mut Reader<'a>) -> Result<T, E>,
    ) -> Result<T, E> {
        if input.len() > max {
            return Err(E::from(Error::new(
                ErrorKind::TooLarge {
                    len: input.len(),
                    max,
                },
                None,
                None,
            )));
        }
        let mut reader = Reader {
            input,
            offset: 0,
            profile,
            field: None,
        };
        let value = read(&mut reader)?;
        let count = input.len().saturating_sub(reader.offset);
        if count > 0 {
            return Err(E::from(Error::new(
                ErrorKind::TrailingBytes { count },
                None,
                Some(reader.offset),
            )));
        }
        Ok(value)
    }

    /// An error of `kind` at the current position, naming the current field.
    fn error_at(&self, kind: ErrorKind, offset: usize) -> Error {
        Error::new(kind, self.field, Some(offset))
    }

    /// A well-formed value the format does not allow, in the current field, the item starting
    /// at `offset` (take it with [`Reader::offset`] before reading the item): for callers'
    /// checks of meaning (a PCR index out of range, a digest of the wrong length).
    #[must_use]
    pub fn invalid(&self, offset: usize, reason: impl Into<String>) -> Error {
        self.error_at(
            ErrorKind::Invalid {
                reason: reason.into(),
            },
            offset,
        )
    }

    /// Where the next item starts, in bytes from the start of the input.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The field being read, as errors name it.
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.input.len())
            .ok_or_else(|| self.error_at(ErrorKind::Truncated, self.offset))?;
        let bytes = self
            .input
            .get(self.offset..end)
            .ok_or_else(|| self.error_at(ErrorKind::Truncated, self.offset))?;
        self.offset = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let start = self.offset;
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| self.error_at(ErrorKind::Truncated, start))
    }

    fn head(&mut self) -> Result<Head, Error> {
        let start = self.offset;
        let [initial] = self.take_array::<1>()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(u8::from_be_bytes(self.take_array()?)),
            25 => u64::from(u16::from_be_bytes(self.take_array()?)),
            26 => u64::from(u32::from_be_bytes(self.take_array()?)),
            27 => u64::from_be_bytes(self.take_array()?),
            31 if major == SIMPLE => {
                return Err(self.error_at(ErrorKind::Unsupported { what: "a break" }, start));
            }
            31 => return Err(self.error_at(ErrorKind::Indefinite, start)),
            _ => return Err(self.error_at(ErrorKind::Reserved, start)),
        };
        if major == SIMPLE {
            let what = match (info, arg) {
                (20..=22, _) => None,
                (23, _) => Some("undefined"),
                (25..=27, _) => Some("a float"),
                _ => Some("a simple value other than false, true and null"),
            };
            if let Some(what) = what {
                return Err(self.error_at(ErrorKind::Unsupported { what }, start));
            }
        } else if self.profile == Profile::Deterministic {
            let shortest = match info {
                24 => arg >= 24,
                25 => arg > 0xff,
                26 => arg > 0xffff,
                27 => arg > 0xffff_ffff,
                _ => true,
            };
            if !shortest {
                return Err(self.error_at(ErrorKind::NotShortest, start));
            }
        }
        Ok(Head { major, arg, start })
    }

    fn expect(&mut self, major: u8, expected: &'static str) -> Result<Head, Error> {
        let head = self.head()?;
        if head.major != major {
            return Err(self.error_at(
                ErrorKind::Type {
                    expected,
                    found: major_name(head.major),
                },
                head.start,
            ));
        }
        Ok(head)
    }

    /// A length that the rest of the input can hold (each element at least `per_element`
    /// bytes), as a `usize`.
    fn length(&self, head: Head, per_element: u64) -> Result<usize, Error> {
        let remaining =
            u64::try_from(self.input.len().saturating_sub(self.offset)).unwrap_or(u64::MAX);
        if head.arg.saturating_mul(per_element) > remaining {
            return Err(self.error_at(ErrorKind::Truncated, head.start));
        }
        usize::try_from(head.arg).map_err(|_| self.error_at(ErrorKind::Truncated, head.start))
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, Error> {
        Ok(self.expect(UINT, "an unsigned integer")?.arg)
    }

    /// A byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let head = self.expect(BYTES, "a byte string")?;
        let len = self.length(head, 1)?;
        self.take(len)
    }

    /// A text string, borrowed from the input; it must be UTF-8.
    pub fn text(&mut self) -> Result<&'a str, Error> {
        let head = self.expect(TEXT, "a text string")?;
        let len = self.length(head, 1)?;
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes).map_err(|_| self.error_at(ErrorKind::InvalidUtf8, head.start))
    }

    /// `false` or `true`.
    pub fn bool(&mut self) -> Result<bool, Error> {
        let head = self.head()?;
        match (head.major, head.arg) {
            (SIMPLE, FALSE) => Ok(false),
            (SIMPLE, TRUE) => Ok(true),
            (major, _) => Err(self.error_at(
                ErrorKind::Type {
                    expected: "false or true",
                    found: major_name(major),
                },
                head.start,
            )),
        }
    }

    /// Whether the next item is `null` (0xf6, its only well-formed encoding).
    #[must_use]
    pub fn at_null(&self) -> bool {
        self.input.get(self.offset) == Some(&0xf6)
    }

    /// `null` as `None`, else the item `read` reads.
    pub fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.at_null() {
            self.offset = self.offset.saturating_add(1);
            return Ok(None);
        }
        read(self).map(Some)
    }

    /// The start of an array of at most `max` elements: its length. Read the elements next.
    pub fn array(&mut self, max: u64) -> Result<usize, Error> {
        let head = self.expect(ARRAY, "an array")?;
        if head.arg > max {
            return Err(self.error_at(ErrorKind::TooMany { len: head.arg, max }, head.start));
        }
        self.length(head, 1)
    }

    /// A tag's number. Read the tagged item next.
    pub fn tag(&mut self) -> Result<u64, Error> {
        Ok(self.expect(TAG, "a tag")?.arg)
    }

    /// The number of the tag `input` starts with, if it starts with one; nothing else is read.
    #[must_use]
    pub fn leading_tag(input: &[u8]) -> Option<u64> {
        let mut reader = Reader {
            input,
            offset: 0,
            profile: Profile::Document,
            field: None,
        };
        reader.tag().ok()
    }

    /// Whether the next item is a tag.
    #[must_use]
    pub fn at_tag(&self) -> bool {
        self.input.get(self.offset).is_some_and(|b| b >> 5 == TAG)
    }

    /// A map whose entries are read next, key then value, through [`Entries`].
    pub fn map(&mut self) -> Result<Entries<'_, 'a>, Error> {
        let head = self.expect(MAP, "a map")?;
        let remaining = self.length(head, 2)?;
        Ok(Entries {
            remaining,
            previous: None,
            seen: BTreeSet::new(),
            value_due: false,
            field: self.field,
            reader: self,
        })
    }

    fn key_bytes(&self, start: usize) -> &'a [u8] {
        self.input.get(start..self.offset).unwrap_or_default()
    }
}

/// A key already read, for finding duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    Text(&'a str),
    Uint(u64),
}

/// The entries of a map, read in the order they come: each key through [`Entries::key`] (text
/// keys from a schema) or [`Entries::uint_key`], then its value through [`Entries::value`].
/// Keys are checked for order (deterministic profile) and duplicates (both).
#[derive(Debug)]
pub struct Entries<'r, 'a> {
    reader: &'r mut Reader<'a>,
    remaining: usize,
    previous: Option<&'a [u8]>,
    seen: BTreeSet<Key<'a>>,
    value_due: bool,
    /// The field the map itself is the value of.
    field: Option<&'static str>,
}

impl<'a> Entries<'_, 'a> {
    /// How many entries are left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next key, a text string that must be one of `fields` (which it returns); `None` when
    /// the map is done. Errors while its value is read name it.
    pub fn key(&mut self, fields: &[&'static str]) -> Result<Option<&'static str>, Error> {
        if !self.next_entry()? {
            return Ok(None);
        }
        self.reader.field = self.field;
        let start = self.reader.offset;
        let key = match self.reader.text() {
            Ok(key) => key,
            Err(e) => return Err(self.key_type(e, "text strings")),
        };
        self.check_key(start, Key::Text(key))?;
        let Some(name) = fields.iter().copied().find(|name| *name == key) else {
            return Err(self
                .reader
                .error_at(ErrorKind::UnknownKey { key: shown(key) }, start));
        };
        self.reader.field = Some(name);
        Ok(Some(name))
    }

    /// The next key, an unsigned integer; `None` when the map is done. Errors while its value is
    /// read name the field the map belongs to.
    pub fn uint_key(&mut self) -> Result<Option<u64>, Error> {
        if !self.next_entry()? {
            return Ok(None);
        }
        self.reader.field = self.field;
        let start = self.reader.offset;
        let key = match self.reader.uint() {
            Ok(key) => key,
            Err(e) => return Err(self.key_type(e, "unsigned integers")),
        };
        self.check_key(start, Key::Uint(key))?;
        Ok(Some(key))
    }

    /// The reader, for the value of the key just read.
    pub fn value(&mut self) -> &mut Reader<'a> {
        self.value_due = false;
        self.reader
    }

    fn next_entry(&mut self) -> Result<bool, Error> {
        if self.value_due {
            let offset = self.reader.offset;
            return Err(self
                .reader
                .invalid(offset, "a key was read without its value"));
        }
        if self.remaining == 0 {
            self.reader.field = self.field;
            return Ok(false);
        }
        self.remaining = self.remaining.saturating_sub(1);
        self.value_due = true;
        Ok(true)
    }

    fn key_type(&self, error: Error, expected: &'static str) -> Error {
        match error.kind() {
            ErrorKind::Type { found, .. } => self.reader.error_at(
                ErrorKind::KeyType { expected, found },
                error.offset().unwrap_or(self.reader.offset),
            ),
            _ => error,
        }
    }

    /// Keys are compared by their encodings in the deterministic profile, where each value has
    /// one; by their values otherwise, so that one key written in two widths is still a
    /// duplicate.
    fn check_key(&mut self, start: usize, key: Key<'a>) -> Result<(), Error> {
        let encoded = self.reader.key_bytes(start);
        let duplicate = || ErrorKind::DuplicateKey {
            key: match key {
                Key::Text(text) => shown(text),
                Key::Uint(n) => n.to_string(),
            },
        };
        match self.reader.profile {
            Profile::Deterministic => {
                if let Some(previous) = self.previous {
                    match previous.cmp(encoded) {
                        core::cmp::Ordering::Less => {}
                        core::cmp::Ordering::Equal => {
                            return Err(self.reader.error_at(duplicate(), start));
                        }
                        core::cmp::Ordering::Greater => {
                            return Err(self.reader.error_at(ErrorKind::KeyOrder, start));
                        }
                    }
                }
                self.previous = Some(encoded);
            }
            Profile::Document => {
                if !self.seen.insert(key) {
                    return Err(self.reader.error_at(duplicate(), start));
                }
            }
        }
        Ok(())
    }
}

/// `value`, or the error that `key` is missing.
pub fn required<T>(value: Option<T>, key: &'static str) -> Result<T, Error> {
    value.ok_or_else(|| Error::missing(key))
}
