//! Newtypes for values with security meaning. Each is built through `TryFrom`, which enforces its
//! bound, and its `Debug` shows a short hex prefix.

use core::fmt;

use aws_lc_rs::digest;
use data_encoding::HEXLOWER;
use subtle::ConstantTimeEq;

/// The number of PCR slots a Nitro Secure Module has.
pub const PCR_SLOTS: u8 = 32;

/// Length of a SHA-384 PCR value, the only digest Nitro documents use.
pub const PCR_LEN: usize = 48;

/// The largest `user_data`, `nonce` or `public_key` accepted. AWS's documentation says 512 bytes
/// in prose and 1024 in its CDDL schema; we accept the larger.
pub const MAX_USER_FIELD_LEN: usize = 1024;

/// A PCR index, `0..=31`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PcrIndex(u8);

impl PcrIndex {
    /// PCR0: the whole enclave image.
    pub const ZERO: Self = Self(0);
    /// PCR8: the certificate that signed the image.
    pub const SIGNER: Self = Self(8);

    /// The index `index`, if it is below [`PCR_SLOTS`]; usable in constants.
    pub const fn new(index: u8) -> Option<Self> {
        if index < PCR_SLOTS {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The index as a number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u64> for PcrIndex {
    type Error = OutOfRange;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        u8::try_from(value)
            .ok()
            .filter(|i| *i < PCR_SLOTS)
            .map(Self)
            .ok_or(OutOfRange {
                what: "PCR index",
                bound: "0..=31",
            })
    }
}

impl fmt::Display for PcrIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PCR{}", self.0)
    }
}

/// A SHA-384 PCR value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PcrValue([u8; PCR_LEN]);

impl PcrValue {
    /// The all-zero value: PCR0 holds it when an enclave runs in debug mode.
    pub const ZERO: Self = Self([0; PCR_LEN]);

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; PCR_LEN] {
        &self.0
    }

    /// Lowercase hex, as `nitro-cli` prints it.
    pub fn to_hex(&self) -> String {
        HEXLOWER.encode(&self.0)
    }

    /// The value after extending this one with `data`, as the NSM does:
    /// `SHA-384(current ‖ data)`.
    pub fn extend(&self, data: &[u8]) -> Self {
        let mut context = digest::Context::new(&digest::SHA384);
        context.update(&self.0);
        context.update(data);
        let mut out = [0u8; PCR_LEN];
        out.copy_from_slice(context.finish().as_ref());
        Self(out)
    }

    /// The value a zeroed PCR holds after one extension with the SHA-384 digest of `bytes`:
    /// `SHA-384(48 zero bytes ‖ SHA-384(bytes))`. This is how image measurements (PCR0, 1, 2,
    /// 8) and the enclave's configuration PCR are formed.
    pub fn measure(bytes: &[u8]) -> Self {
        Self::ZERO.extend(digest::digest(&digest::SHA384, bytes).as_ref())
    }

    /// Parse 96 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, OutOfRange> {
        let bytes = decode_hex(text).ok_or(OutOfRange {
            what: "PCR value",
            bound: "96 hex digits (48 bytes)",
        })?;
        Self::try_from(bytes.as_slice())
    }
}

impl TryFrom<&[u8]> for PcrValue {
    type Error = OutOfRange;

    fn try_from(value: &[u8]) -> Result<Self, Self::Error> {
        <[u8; PCR_LEN]>::try_from(value)
            .map(Self)
            .map_err(|_| OutOfRange {
                what: "PCR value",
                bound: "48 bytes",
            })
    }
}

impl fmt::Debug for PcrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcrValue({})", short_hex(&self.0))
    }
}

impl fmt::Display for PcrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A nonce a verifier expects to find in a document, at most 1024 bytes.
#[derive(Clone)]
pub struct Nonce(Vec<u8>);

impl Nonce {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parse hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, OutOfRange> {
        let bytes = decode_hex(text).ok_or(OutOfRange {
            what: "nonce",
            bound: "an even number of hex digits",
        })?;
        Self::try_from(bytes)
    }

    pub(crate) fn matches(&self, other: &[u8]) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_slice().ct_eq(other))
    }
}

impl TryFrom<Vec<u8>> for Nonce {
    type Error = OutOfRange;

    fn try_from(value: Vec<u8>) -> Result<Self, Self::Error> {
        if value.is_empty() || value.len() > MAX_USER_FIELD_LEN {
            return Err(OutOfRange {
                what: "nonce",
                bound: "1..=1024 bytes",
            });
        }
        Ok(Self(value))
    }
}

impl TryFrom<&[u8]> for Nonce {
    type Error = OutOfRange;

    fn try_from(value: &[u8]) -> Result<Self, Self::Error> {
        Self::try_from(value.to_vec())
    }
}

/// Constant time in the contents: a nonce is compared against attacker-chosen bytes.
impl PartialEq for Nonce {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Nonce {}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", short_hex(&self.0))
    }
}

/// An AWS region name such as `eu-central-1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region(String);

impl Region {
    /// The region name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Region {
    type Error = OutOfRange;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let well_formed = !value.is_empty()
            && value.len() <= 32
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !value.starts_with('-')
            && !value.ends_with('-');
        if !well_formed {
            return Err(OutOfRange {
                what: "region",
                bound: "lowercase letters, digits and dashes, such as eu-central-1",
            });
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value outside the bound its type enforces.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {bound}")]
pub struct OutOfRange {
    what: &'static str,
    bound: &'static str,
}

impl OutOfRange {
    pub(crate) const fn new(what: &'static str, bound: &'static str) -> Self {
        Self { what, bound }
    }
}

/// Decode hex, either case; `None` if it is not an even number of hex digits.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .ok()
}

/// The first eight bytes as hex, with an ellipsis when there is more.
pub(crate) fn short_hex(bytes: &[u8]) -> String {
    let shown = bytes.get(..8).unwrap_or(bytes);
    let ellipsis = if bytes.len() > shown.len() { "…" } else { "" };
    format!("{}{ellipsis}", HEXLOWER.encode(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_and_measure_match_an_independent_sha384() {
        // Computed with Python's hashlib: sha384(bytes(48) + sha384(b"abc").digest()).
        assert_eq!(
            PcrValue::measure(b"abc").to_hex(),
            "93732e3733514a841c982cfa75ea76ab55fe011acb9cd980ef4523913c65be1b\
             0998e04d77f8c174f81a82151619ca40"
        );
        // sha384(bytes(48) + b"\x01" * 48)
        assert_eq!(
            PcrValue::ZERO.extend(&[1; 48]).to_hex(),
            "b2cdfa15c3fdc5772b099d6e1a5acb8a2eb8b94adb63393a7ae3068c8b4bd8cd\
             ad83d6eb649d8178d0fe7a8135d0a003"
        );
    }

    #[test]
    fn pcr_index_bounds() {
        assert!(PcrIndex::try_from(0).is_ok());
        assert!(PcrIndex::try_from(31).is_ok());
        assert!(PcrIndex::try_from(32).is_err());
        assert!(PcrIndex::try_from(u64::MAX).is_err());
    }

    #[test]
    fn pcr_value_hex_and_debug() {
        let hex = "ab".repeat(48);
        let v = PcrValue::from_hex(&hex).unwrap();
        assert_eq!(v.to_hex(), hex);
        assert_eq!(format!("{v:?}"), "PcrValue(abababababababab…)");
        assert!(PcrValue::from_hex(&"ab".repeat(47)).is_err());
        assert!(PcrValue::from_hex("zz").is_err());
    }

    #[test]
    fn nonce_bounds_and_comparison() {
        assert!(Nonce::try_from(Vec::new()).is_err());
        assert_eq!(
            Nonce::try_from(vec![1]).unwrap(),
            Nonce::try_from(vec![1]).unwrap()
        );
        assert_ne!(
            Nonce::try_from(vec![1]).unwrap(),
            Nonce::try_from(vec![1, 0]).unwrap()
        );
        assert!(Nonce::try_from(vec![0; 1025]).is_err());
        let n = Nonce::try_from(vec![1, 2, 3]).unwrap();
        assert!(n.matches(&[1, 2, 3]));
        assert!(!n.matches(&[1, 2]));
        assert!(!n.matches(&[1, 2, 4]));
    }

    #[test]
    fn region_shape() {
        assert!(Region::try_from("ap-south-1").is_ok());
        for bad in ["", "EU-1", "eu central", "-eu", "eu.west"] {
            assert!(Region::try_from(bad).is_err(), "{bad:?}");
        }
    }
}
