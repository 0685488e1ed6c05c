//! The little of GGUF the engine reads and writes itself: the metadata's scalar and string
//! values and the tensors' types, read before llama.cpp maps the file (the chat template, the
//! special tokens, the KV cache's size), and a writer for the tiny test model.
//!
//! Arrays (the vocabulary, its scores and merges) are skipped, never held: llama.cpp reads them
//! itself, and a second copy would be memory the enclave does not need. The reader is bounded by
//! the file: every length is checked against what is left of it before anything is allocated,
//! and a malformed file is an error naming what was wrong, never a panic.
//!
//! The format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> (version 2 and 3;
//! little-endian only).

use std::collections::HashMap;
use std::io::{self, Read};

/// "GGUF", little-endian.
const MAGIC: u32 = 0x4655_4747;
/// The most metadata pairs read (models carry a few dozen).
const MAX_PAIRS: u64 = 65_536;
/// The longest key, and the longest string value kept (chat templates run to tens of
/// kilobytes); a longer value is skipped and kept as its length only.
const MAX_KEY: u64 = 65_536;
const MAX_KEPT_STRING: u64 = 1 << 20;
/// The default alignment of the tensor data, when `general.alignment` does not set one.
pub const ALIGNMENT: usize = 32;

/// Why a GGUF's header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading the file failed, or it ended early.
    #[error("reading the GGUF: {0}")]
    Io(#[from] io::Error),
    /// The file does not follow the format.
    #[error("not a valid GGUF: {0}")]
    Format(String),
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn format(message: impl Into<String>) -> GgufError {
    GgufError::Format(message.into())
}

/// A metadata value. Arrays keep only their element type and length.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    Unsigned(u64),
    /// Any signed integer type.
    Signed(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string (invalid UTF-8 replaced, trailing NULs trimmed, as llama.cpp's tools read it).
    String(String),
    /// A string longer than is kept: its length.
    LongString(u64),
    /// An array, skipped: its element type (GGUF's code) and length.
    Array {
        /// GGUF's code for the elements' type.
        element: u32,
        /// How many elements.
        len: u64,
    },
}

impl Value {
    /// The value as a `u32`, if it is a non-negative integer that fits.
    pub fn as_u32(&self) -> Option<u32> {
        match *self {
            Value::Unsigned(v) => u32::try_from(v).ok(),
            Value::Signed(v) => u32::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A GGUF's header: its metadata (arrays skipped) and how many tensors of each type it holds.
#[derive(Debug, Default)]
pub struct Header {
    /// The metadata, by key.
    pub metadata: HashMap<String, Value>,
    /// How many tensors.
    pub tensors: usize,
    /// Tensors by type (llama.cpp's name, such as `q4_1` or `q6_k`), most first, then by name.
    pub types: Vec<(String, usize)>,
}

impl Header {
    /// Read the header of the GGUF in `reader`, which holds `len` bytes in all.
    pub fn read(reader: impl Read, len: u64) -> Result<Self, GgufError> {
        let mut r = Reader {
            inner: reader,
            left: len,
        };
        if r.u32()? != MAGIC {
            return Err(format("it does not start with \"GGUF\""));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format(format!(
                "version {version} (versions 2 and 3 are read)"
            )));
        }
        let tensors = r.u64()?;
        let pairs = r.u64()?;
        if pairs > MAX_PAIRS {
            return Err(format(format!(
                "{pairs} metadata pairs (at most {MAX_PAIRS} are read)"
            )));
        }
        let mut metadata = HashMap::new();
        for _ in 0..pairs {
            let key = match r.string(MAX_KEY)? {
                Value::String(key) => key,
                _ => return Err(format("a key longer than 64 KiB")),
            };
            let kind = r.u32()?;
            let value = r.value(kind, false)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(format(format!("the key {key} appears twice")));
            }
        }
        let mut counts: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
        for _ in 0..tensors {
            r.skip_string()?; // the name
            let dims = r.u32()?;
            if dims > 8 {
                return Err(format(format!("a tensor with {dims} dimensions")));
            }
            for _ in 0..dims {
                r.u64()?;
            }
            let count = counts.entry(r.u32()?).or_default();
            *count = count.saturating_add(1);
            r.u64()?; // offset
        }
        let mut types: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(code, n)| (type_name(code), n))
            .collect();
        types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(Header {
            metadata,
            tensors: usize::try_from(tensors).map_err(|_| format("too many tensors"))?,
            types,
        })
    }

    /// A value as a `u32`.
    pub fn u32(&self, key: &str) -> Option<u32> {
        self.metadata.get(key).and_then(Value::as_u32)
    }

    /// A value as a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }
}

/// llama.cpp's name for a GGML type code (`type_N` for codes it does not name here).
fn type_name(code: u32) -> String {
    let name = match code {
        0 => "f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        6 => "q5_0",
        7 => "q5_1",
        8 => "q8_0",
        9 => "q8_1",
        10 => "q2_k",
        11 => "q3_k",
        12 => "q4_k",
        13 => "q5_k",
        14 => "q6_k",
        15 => "q8_k",
        16 => "iq2_xxs",
        17 => "iq2_xs",
        18 => "iq3_xxs",
        19 => "iq1_s",
        20 => "iq4_nl",
        21 => "iq3_s",
        22 => "iq2_s",
        23 => "iq4_xs",
        24 => "i8",
        25 => "i16",
        26 => "i32",
        27 => "i64",
        28 => "f64",
        29 => "iq1_m",
        30 => "bf16",
        34 => "tq1_0",
        35 => "tq2_0",
        39 => "mxfp4",
        other => return format!("type_{other}"),
    };
    name.to_owned()
}

/// A reader that never reads past the file's length and checks lengths against it first.
struct Reader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Reader<R> {
    fn take(&mut self, n: u64) -> Result<(), GgufError> {
        if n > self.left {
            return Err(format(format!(
                "a length of {n} bytes runs past the end of the file"
            )));
        }
        self.left -= n;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        self.take(len64(N))?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.take(n)?;
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(GgufError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// A string of at most `keep` bytes, or its length when it is longer (skipped).
    fn string(&mut self, keep: u64) -> Result<Value, GgufError> {
        let len = self.u64()?;
        if len > keep {
            self.skip(len)?;
            return Ok(Value::LongString(len));
        }
        self.take(len)?;
        let len = usize::try_from(len).map_err(|_| format("a string too long"))?;
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        Ok(Value::String(text.trim_end_matches('\0').to_owned()))
    }

    fn skip_string(&mut self) -> Result<(), GgufError> {
        let len = self.u64()?;
        self.skip(len)
    }

    /// The size of a scalar of type `kind`, if it is one.
    fn scalar_size(kind: u32) -> Option<u64> {
        match kind {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    /// A value of type `kind`; `in_array` for an array's elements (arrays of arrays are
    /// refused, as ggml refuses them).
    fn value(&mut self, kind: u32, in_array: bool) -> Result<Value, GgufError> {
        Ok(match kind {
            0 => Value::Unsigned(u64::from(self.bytes::<1>()?[0])),
            1 => Value::Signed(i64::from(i8::from_le_bytes(self.bytes()?))),
            2 => Value::Unsigned(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::Signed(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::Unsigned(u64::from(self.u32()?)),
            5 => Value::Signed(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            // Any byte but 0 is true, as ggml reads it.
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => self.string(MAX_KEPT_STRING)?,
            9 => {
                if in_array {
                    return Err(format("an array of arrays"));
                }
                let element = self.u32()?;
                let len = self.u64()?;
                if let Some(size) = Self::scalar_size(element) {
                    let bytes = len
                        .checked_mul(size)
                        .ok_or_else(|| format("an array too long"))?;
                    self.skip(bytes)?;
                } else if element == 8 {
                    for _ in 0..len {
                        self.skip_string()?;
                    }
                } else if element == 9 {
                    if len > 0 {
                        self.value(9, true)?;
                    }
                } else {
                    return Err(format(format!("an array of unknown type {element}")));
                }
                Value::Array { element, len }
            }
            10 => Value::Unsigned(self.u64()?),
            11 => Value::Signed(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(format(format!("a value of unknown type {other}"))),
        })
    }
}

/// A metadata value to write.
#[derive(Clone, Debug)]
pub enum Write {
    /// `u32`.
    U32(u32),
    /// `f32`.
    F32(f32),
    /// A string.
    String(String),
    /// An array of `i32`.
    I32s(Vec<i32>),
    /// An array of strings.
    Strings(Vec<String>),
}

/// A tensor to write: its name, its dimensions (innermost first, as GGUF orders them), GGML's
/// type code and its data in that type.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// The tensor's name.
    pub name: String,
    /// Its dimensions, innermost first.
    pub dims: Vec<u64>,
    /// GGML's type code.
    pub kind: u32,
    /// The data.
    pub data: Vec<u8>,
}

/// A GGUF (version 3) with `metadata` and `tensors`, each tensor's data aligned to
/// [`ALIGNMENT`].
pub fn write(metadata: &[(&str, Write)], tensors: &[Tensor]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&len64(s.len()).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let pad = |n: usize| n.div_ceil(ALIGNMENT) * ALIGNMENT;
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&len64(tensors.len()).to_le_bytes());
    out.extend_from_slice(&len64(metadata.len()).to_le_bytes());
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            Write::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Write::F32(v) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Write::String(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                string(&mut out, s);
            }
            Write::I32s(values) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&len64(values.len()).to_le_bytes());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Write::Strings(values) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&len64(values.len()).to_le_bytes());
                for s in values {
                    string(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0usize;
    for tensor in tensors {
        string(&mut out, &tensor.name);
        out.extend_from_slice(
            &u32::try_from(tensor.dims.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for d in &tensor.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&tensor.kind.to_le_bytes());
        out.extend_from_slice(&len64(offset).to_le_bytes());
        offset = pad(offset + tensor.data.len());
    }
    out.resize(pad(out.len()), 0);
    for tensor in tensors {
        out.extend_from_slice(&tensor.data);
        out.resize(pad(out.len()), 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        write(
            &[
                ("general.architecture", Write::String("llama".into())),
                ("llama.block_count", Write::U32(2)),
                ("eps", Write::F32(0.5)),
                ("tokens", Write::Strings(vec!["a".into(), "bc".into()])),
                ("types", Write::I32s(vec![1, 3])),
            ],
            &[
                Tensor {
                    name: "a".into(),
                    dims: vec![4],
                    kind: 0,
                    data: vec![0; 16],
                },
                Tensor {
                    name: "b".into(),
                    dims: vec![32, 2],
                    kind: 8,
                    data: vec![0; 68],
                },
                Tensor {
                    name: "c".into(),
                    dims: vec![2],
                    kind: 0,
                    data: vec![0; 8],
                },
            ],
        )
    }

    #[test]
    fn what_is_written_reads_back_with_arrays_skipped() {
        let bytes = sample();
        let header = Header::read(&bytes[..], len64(bytes.len())).unwrap();
        assert_eq!(header.str("general.architecture"), Some("llama"));
        assert_eq!(header.u32("llama.block_count"), Some(2));
        assert_eq!(header.metadata["eps"], Value::Float(0.5));
        assert_eq!(
            header.metadata["tokens"],
            Value::Array { element: 8, len: 2 }
        );
        assert_eq!(
            header.metadata["types"],
            Value::Array { element: 5, len: 2 }
        );
        assert_eq!(header.tensors, 3);
        assert_eq!(
            header.types,
            [("f32".to_owned(), 2), ("q8_0".to_owned(), 1)]
        );
    }

    #[test]
    fn every_truncation_and_a_length_past_the_end_are_errors_not_panics() {
        let bytes = sample();
        // The header is read whole or refused: the shortest prefix that reads is the whole
        // header (it ends within the last 32 bytes before the tensors' 160 bytes of data), and
        // every shorter one is refused.
        let whole = (0..=bytes.len())
            .find(|&cut| Header::read(&bytes[..cut], len64(cut)).is_ok())
            .unwrap();
        assert!(whole > bytes.len() - 160 - 32, "a header of {whole} bytes");
        for cut in 0..whole {
            assert!(Header::read(&bytes[..cut], len64(cut)).is_err());
        }
        // Claiming more bytes than the reader has is an error too.
        assert!(Header::read(&bytes[..whole - 1], len64(bytes.len())).is_err());
        // A string that claims more than the file holds is refused before it is allocated.
        let mut long = bytes.clone();
        long[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = Header::read(&long[..], len64(long.len())).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    #[test]
    fn bad_magic_version_types_and_duplicate_keys_are_named() {
        let bytes = sample();
        let refuse = |edit: &dyn Fn(&mut Vec<u8>), what: &str| {
            let mut b = bytes.clone();
            edit(&mut b);
            let err = Header::read(&b[..], len64(b.len()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{err} (expected {what})");
        };
        refuse(&|b| b[0] = b'X', "GGUF");
        refuse(&|b| b[4] = 1, "version 1");
        // The first key's value type (after magic, version, counts, the key's length and its
        // 20 bytes).
        refuse(&|b| b[52] = 99, "unknown type 99");
        // The first pair (45 bytes) written twice.
        refuse(
            &|b| {
                let first = b[24..24 + 8 + 20 + 4 + 8 + 5].to_vec();
                b.splice(24..24, first);
                let pairs = u64::from_le_bytes(b[16..24].try_into().unwrap()) + 1;
                b[16..24].copy_from_slice(&pairs.to_le_bytes());
            },
            "appears twice",
        );
    }

    #[test]
    fn long_strings_are_kept_as_their_length_and_text_is_read_leniently() {
        let template = "x".repeat(usize::try_from(MAX_KEPT_STRING).unwrap() + 1);
        let bytes = write(
            &[
                ("long", Write::String(template)),
                ("bad", Write::String("ok\0\0".into())),
            ],
            &[],
        );
        let mut bytes = bytes;
        // Make "ok" invalid UTF-8: its first byte becomes 0xff.
        let at = bytes.windows(4).position(|w| w == b"ok\0\0").unwrap();
        bytes[at] = 0xff;
        let header = Header::read(&bytes[..], len64(bytes.len())).unwrap();
        assert_eq!(
            header.metadata["long"],
            Value::LongString(MAX_KEPT_STRING + 1)
        );
        assert_eq!(header.str("bad"), Some("\u{fffd}k"));
    }

    #[test]
    fn too_many_pairs_are_refused_before_reading_them() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(MAX_PAIRS + 1).to_le_bytes());
        let err = Header::read(&b[..], len64(b.len()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata pairs"), "{err}");
    }

    #[test]
    fn nested_arrays_are_refused() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&9u32.to_le_bytes());
        for _ in 0..10 {
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        let err = Header::read(&b[..], len64(b.len()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("an array of arrays"), "{err}");
    }
}
