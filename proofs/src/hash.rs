//! RFC 9162 hashing: SHA-256 with one-byte domain separation between leaves and interior nodes,
//! so that no leaf can be passed off as a node (section 2.1.1).

use core::fmt;

use aws_lc_rs::digest::{Context, SHA256};
use data_encoding::{BASE64, HEXLOWER};

/// The length of every hash in the tree.
pub const HASH_LEN: usize = 32;

/// A SHA-256 value in the tree: a leaf hash, an interior node or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The root of the empty tree: SHA-256 of no bytes.
    pub fn empty() -> Self {
        Self::from_digest(Context::new(&SHA256))
    }

    /// The hash of a leaf: SHA-256(0x00 || entry).
    pub fn leaf(entry: &[u8]) -> Self {
        let mut ctx = Context::new(&SHA256);
        ctx.update(&[0x00]);
        ctx.update(entry);
        Self::from_digest(ctx)
    }

    /// The hash of an interior node: SHA-256(0x01 || left || right).
    pub fn node(left: &Self, right: &Self) -> Self {
        let mut ctx = Context::new(&SHA256);
        ctx.update(&[0x01]);
        ctx.update(&left.0);
        ctx.update(&right.0);
        Self::from_digest(ctx)
    }

    /// A hash from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; HASH_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// A hash from its standard base64 (RFC 4648 section 4, padded), as C2SP formats write it.
    /// Only the canonical encoding is accepted, so one hash has one spelling.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = BASE64.decode(text.as_bytes()).ok()?;
        let hash = Self::from_slice(&bytes)?;
        (hash.to_base64() == text).then_some(hash)
    }

    /// A hash from 64 lowercase or uppercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = HEXLOWER.decode(text.to_ascii_lowercase().as_bytes()).ok()?;
        Self::from_slice(&bytes)
    }

    /// Standard padded base64.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        HEXLOWER.encode(&self.0)
    }

    fn from_digest(ctx: Context) -> Self {
        let digest = ctx.finish();
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            Hash::empty().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn leaves_and_nodes_are_domain_separated() {
        // RFC 6962 test vector: the leaf hash of the empty entry.
        assert_eq!(
            Hash::leaf(b"").to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let a = Hash::leaf(b"a");
        let b = Hash::leaf(b"b");
        let mut concatenated = a.0.to_vec();
        concatenated.extend_from_slice(&b.0);
        assert_ne!(Hash::node(&a, &b), Hash::leaf(&concatenated));
        assert_ne!(Hash::node(&a, &b), Hash::node(&b, &a));
    }

    #[test]
    fn base64_is_canonical_only() {
        let h = Hash::leaf(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64()), Some(h));
        assert_eq!(Hash::from_base64(&h.to_base64().replace('=', "")), None);
        assert_eq!(Hash::from_base64("AAAA"), None);
        assert_eq!(Hash::from_hex(&h.to_hex().to_uppercase()), Some(h));
    }
}
