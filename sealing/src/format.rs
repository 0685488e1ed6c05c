//! The sealed-model header, the data key, and the rules every chunk follows.
//!
//! ```text
//! offset size
//!      0    8  magic "SOVSEAL\0"
//!      8    2  version (1), big-endian
//!     10    2  header length in bytes, big-endian (the whole header, this field included)
//!     12    4  chunk size in bytes, big-endian (MIN_CHUNK_SIZE ..= MAX_CHUNK_SIZE)
//!     16    8  plaintext length in bytes, big-endian
//!     24   48  SHA-384 of the plaintext
//!     72    7  nonce prefix (random per sealed file)
//!     79    1  model id length n, then n bytes of model id
//!   80+n    1  key id length m, then m bytes of key id
//! ```
//!
//! The body is `chunk_count` chunks, each the AES-256-GCM ciphertext of `chunk_size` plaintext
//! bytes (the last one: what remains, possibly nothing) followed by its 16-byte tag. Chunk `i`
//! is sealed with
//!
//! - nonce = nonce prefix ‖ `i` (4 bytes, big-endian) ‖ last (1 byte: 1 for the final chunk,
//!   else 0), and
//! - associated data = the header's bytes ‖ `i` (4 bytes, big-endian) ‖ last (1 byte),
//!
//! the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár. A chunk moved to another
//! position, a final chunk cut off or appended to, or a chunk taken from another sealed file
//! (another header) fails its tag. The file's length is fixed by the header, so bytes after the
//! final chunk are refused too.

use zeroize::Zeroizing;

use crate::error::SealError;

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"SOVSEAL\0";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// The smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// The largest chunk size (the memory a reader needs per chunk).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// The chunk size `broker seal` uses unless told otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
/// The longest model id or key id.
pub const MAX_ID_LEN: usize = 128;
/// The AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// The data key's length (AES-256).
pub const KEY_LEN: usize = 32;
/// The SHA-384 digest length.
pub const DIGEST_LEN: usize = 48;
/// The length of the random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// The fixed part of the header, before the identifiers.
pub const FIXED_HEADER_LEN: usize = 79;
/// The longest header.
pub const MAX_HEADER_LEN: usize = FIXED_HEADER_LEN + 2 + 2 * MAX_ID_LEN;

/// A model or key identifier: 1 to [`MAX_ID_LEN`] bytes of ASCII letters, digits and `._:/-`,
/// so that it is safe in file names, log lines and policy keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    /// Check `value` against the identifier rules.
    pub fn new(value: &str) -> Result<Self, SealError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._:/-".contains(&b);
        if value.is_empty() || value.len() > MAX_ID_LEN || !value.bytes().all(allowed) {
            return Err(SealError::InvalidId(format!(
                "{value:?}: an id is 1 to {MAX_ID_LEN} ASCII letters, digits or `._:/-`"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Id {
    type Err = SealError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A model's data key (AES-256). Zeroized when dropped; never printed.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// Take a key's bytes. Fails unless there are exactly [`KEY_LEN`] of them.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(SealError::WrongKeyLength(bytes.len()));
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(key.as_mut_slice()).map_err(|_| SealError::Crypto("random"))?;
        Ok(Self(key))
    }

    /// The key's bytes.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// What a sealed file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sealed model.
    pub model_id: Id,
    /// The data key that sealed it.
    pub key_id: Id,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The plaintext's length.
    pub plaintext_len: u64,
    /// SHA-384 of the plaintext.
    pub plaintext_sha384: [u8; DIGEST_LEN],
    /// The per-file nonce prefix.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    /// The header's bytes. Fails if a field is out of range.
    pub fn encode(&self) -> Result<Vec<u8>, SealError> {
        self.check()?;
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.plaintext_len.to_be_bytes());
        out.extend_from_slice(&self.plaintext_sha384);
        out.extend_from_slice(&self.nonce_prefix);
        for id in [&self.model_id, &self.key_id] {
            out.push(u8::try_from(id.as_str().len()).unwrap_or(u8::MAX));
            out.extend_from_slice(id.as_str().as_bytes());
        }
        Ok(out)
    }

    /// Parse a header from the start of `bytes`; returns it and its length. Nothing here is
    /// authenticated yet: the first chunk's tag authenticates the header.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), SealError> {
        let mut r = Cursor { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(SealError::NotSealed);
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        let header_len = usize::from(u16::from_be_bytes(r.array()?));
        let chunk_size = u32::from_be_bytes(r.array()?);
        let plaintext_len = u64::from_be_bytes(r.array()?);
        let plaintext_sha384 = r.array()?;
        let nonce_prefix = r.array()?;
        let mut id = || -> Result<Id, SealError> {
            let len = usize::from(r.take(1)?.first().copied().unwrap_or(0));
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| SealError::InvalidId("not UTF-8".into()))?;
            Id::new(text)
        };
        let model_id = id()?;
        let key_id = id()?;
        let header = Self {
            model_id,
            key_id,
            chunk_size,
            plaintext_len,
            plaintext_sha384,
            nonce_prefix,
        };
        header.check()?;
        if header_len != r.at {
            return Err(SealError::Malformed(format!(
                "the header says it is {header_len} bytes but its fields take {}",
                r.at
            )));
        }
        Ok((header, r.at))
    }

    /// How many chunks the body holds (at least one: an empty model has one empty final chunk).
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_len
            .div_ceil(u64::from(self.chunk_size))
            .max(1)
    }

    /// The plaintext length of chunk `index`.
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index.saturating_mul(u64::from(self.chunk_size));
        self.plaintext_len
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }

    /// The sealed file's exact length.
    pub fn sealed_len(&self) -> u64 {
        let tags = self
            .chunk_count()
            .saturating_mul(u64::try_from(TAG_LEN).unwrap_or(u64::MAX));
        u64::try_from(self.encoded_len())
            .unwrap_or(u64::MAX)
            .saturating_add(self.plaintext_len)
            .saturating_add(tags)
    }

    fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + 2 + self.model_id.as_str().len() + self.key_id.as_str().len()
    }

    fn check(&self) -> Result<(), SealError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(SealError::Malformed(format!(
                "chunk size {} is outside {MIN_CHUNK_SIZE} ..= {MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        // Chunk indices are 32 bits in the nonce.
        if self.chunk_count() > u64::from(u32::MAX) {
            return Err(SealError::Malformed(format!(
                "{} bytes in chunks of {} need more than 2^32 chunks",
                self.plaintext_len, self.chunk_size
            )));
        }
        Ok(())
    }
}

/// The nonce of chunk `index`.
pub(crate) fn chunk_nonce(header: &Header, index: u32, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    let (prefix, rest) = nonce.split_at_mut(NONCE_PREFIX_LEN);
    prefix.copy_from_slice(&header.nonce_prefix);
    let (counter, flag) = rest.split_at_mut(4);
    counter.copy_from_slice(&index.to_be_bytes());
    if let Some(f) = flag.first_mut() {
        *f = u8::from(last);
    }
    nonce
}

/// The associated data of chunk `index`: the header's bytes, the index and the last flag.
pub(crate) fn chunk_aad(header_bytes: &[u8], index: u32, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header_bytes.len() + 5);
    aad.extend_from_slice(header_bytes);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SealError> {
        let end = self.at.checked_add(n).ok_or(SealError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(SealError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SealError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| SealError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            model_id: Id::new("smollm2-135m").unwrap(),
            key_id: Id::new("kek-1/0123456789abcdef").unwrap(),
            chunk_size: MIN_CHUNK_SIZE,
            plaintext_len: 10_000,
            plaintext_sha384: [7; DIGEST_LEN],
            nonce_prefix: [1, 2, 3, 4, 5, 6, 7],
        }
    }

    #[test]
    fn a_header_round_trips_and_has_the_documented_layout() {
        let h = header();
        let bytes = h.encode().unwrap();
        assert_eq!(bytes.len(), FIXED_HEADER_LEN + 2 + 12 + 22);
        assert_eq!(&bytes[..8], b"SOVSEAL\0");
        assert_eq!(&bytes[8..10], &[0, 1]);
        assert_eq!(
            usize::from(u16::from_be_bytes([bytes[10], bytes[11]])),
            bytes.len()
        );
        assert_eq!(&bytes[16..24], &10_000u64.to_be_bytes());
        assert_eq!(Header::decode(&bytes).unwrap(), (h.clone(), bytes.len()));
        assert_eq!(h.chunk_count(), 3);
        assert_eq!(
            [h.chunk_len(0), h.chunk_len(1), h.chunk_len(2)],
            [4096, 4096, 1808]
        );
        assert_eq!(
            h.sealed_len(),
            u64::try_from(bytes.len()).unwrap() + 10_000 + 48
        );
    }

    #[test]
    fn an_empty_model_has_one_empty_chunk() {
        let h = Header {
            plaintext_len: 0,
            ..header()
        };
        assert_eq!(h.chunk_count(), 1);
        assert_eq!(h.chunk_len(0), 0);
    }

    #[test]
    fn every_prefix_of_a_header_is_refused_and_fields_are_checked() {
        let bytes = header().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Header::decode(&bytes[..n]).is_err(), "{n}");
        }
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(matches!(Header::decode(&bad), Err(SealError::NotSealed)));
        let mut bad = bytes.clone();
        bad[9] = 2;
        assert!(matches!(
            Header::decode(&bad),
            Err(SealError::UnsupportedVersion(2))
        ));
        let mut bad = bytes.clone();
        bad[11] += 1;
        assert!(matches!(Header::decode(&bad), Err(SealError::Malformed(_))));
        let mut bad = bytes.clone();
        bad[12..16].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(Header::decode(&bad), Err(SealError::Malformed(_))));
        let mut bad = bytes;
        bad[80] = b' ';
        assert!(matches!(Header::decode(&bad), Err(SealError::InvalidId(_))));
    }

    #[test]
    fn ids_are_restricted() {
        for good in ["a", "smollm2-135m", "kek-1/00ff", "gov.example:model_v2"] {
            assert!(Id::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "ü", "x\n", &"a".repeat(MAX_ID_LEN + 1)] {
            assert!(Id::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nonces_differ_by_index_and_flag() {
        let h = header();
        let a = chunk_nonce(&h, 1, false);
        assert_eq!(&a[..7], &h.nonce_prefix);
        assert_eq!(&a[7..11], &1u32.to_be_bytes());
        assert_eq!(a[11], 0);
        assert_ne!(a, chunk_nonce(&h, 1, true));
        assert_ne!(a, chunk_nonce(&h, 2, false));
    }
}
