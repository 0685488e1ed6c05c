//! Where the key-encryption key (KEK) lives, behind one trait: a PKCS#11 HSM ([`Pkcs11Store`]),
//! or the embedded software store ([`SoftwareStore`]) for the quick start and machines without
//! an HSM.
//!
//! A data key (DEK) is stored only wrapped under the KEK. Releasing it means unwrapping it under
//! the KEK and wrapping it to an enclave's ephemeral RSA key with OAEP: in an HSM both steps run
//! inside the HSM, and the DEK never exists in the broker's memory.

mod pkcs11;
mod software;

pub use self::pkcs11::{
    KekWrapMechanism, Pkcs11Config, Pkcs11Store, SigningKeyKind, TokenKey, TokenSigner,
};
pub use self::software::{
    DEFAULT_ITERATIONS, MIN_ITERATIONS, SoftwareStore, passphrase as software_passphrase,
};

use sealing::DataKey;
use sealing::release::OaepHash;

/// The smallest enclave RSA key the broker wraps to.
pub const MIN_RECIPIENT_BITS: usize = 3072;
/// The largest enclave RSA key the broker wraps to.
pub const MAX_RECIPIENT_BITS: usize = 4096;

/// Why a key-store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The store's configuration or files cannot be used.
    #[error("key store: {0}")]
    Config(String),
    /// The passphrase does not open the software store.
    #[error("the passphrase does not open the software key store {0}")]
    WrongPassphrase(String),
    /// The KEK is missing or does not have the attributes it must have.
    #[error("key-encryption key {label:?}: {problem}")]
    Kek {
        /// The KEK's label.
        label: String,
        /// What is wrong.
        problem: String,
    },
    /// The enclave's public key is not an acceptable RSA key.
    #[error("the enclave's public key: {0}")]
    Recipient(String),
    /// The wrapped data key does not unwrap under the KEK.
    #[error("the wrapped data key does not unwrap under the key-encryption key")]
    Unwrap,
    /// The HSM or the crypto library failed.
    #[error("{0}")]
    Device(String),
}

/// A store holding one KEK.
pub trait KeyStore: Send + Sync {
    /// `pkcs11` or `software`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// The KEK's label: the first part of every key id it wraps.
    fn kek_label(&self) -> &str;

    /// A new random data key for sealing: the key itself (which the sealer needs once) and the
    /// key wrapped under the KEK (which is all that is kept).
    fn new_data_key(&self) -> Result<(DataKey, Vec<u8>), KeyStoreError>;

    /// Unwrap `wrapped` under the KEK and wrap the result to `recipient` (a DER
    /// SubjectPublicKeyInfo of an RSA key) with RSA-OAEP over `oaep`.
    fn rewrap(
        &self,
        wrapped: &[u8],
        recipient: &[u8],
        oaep: OaepHash,
    ) -> Result<Vec<u8>, KeyStoreError>;

    /// An HMAC-SHA256 tag over a sealed model's record, under a key that lives with the KEK
    /// (in the HSM, or derived from the KEK in the software store): a record whose wrapped key
    /// was moved from another model's, or edited, no longer carries a valid tag, and whoever can
    /// write the state directory without the key store cannot make one.
    fn record_tag(&self, record: &[u8]) -> Result<[u8; RECORD_TAG_LEN], KeyStoreError>;
}

/// The length of a record's tag (HMAC-SHA256).
pub const RECORD_TAG_LEN: usize = 32;

impl std::fmt::Debug for dyn KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyStore({})", self.kind())
    }
}

/// The modulus and public exponent of an RSA SubjectPublicKeyInfo whose size is within
/// [`MIN_RECIPIENT_BITS`] ..= [`MAX_RECIPIENT_BITS`].
pub(crate) fn rsa_components(spki: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyStoreError> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;

    let recipient = |m: &str| KeyStoreError::Recipient(m.to_owned());
    let (rest, info) =
        SubjectPublicKeyInfo::from_der(spki).map_err(|_| recipient("not a DER public key"))?;
    if !rest.is_empty() {
        return Err(recipient("trailing bytes after the public key"));
    }
    let Ok(PublicKey::RSA(rsa)) = info.parsed() else {
        return Err(recipient("not an RSA key"));
    };
    let modulus = strip_zeros(rsa.modulus);
    let bits = modulus.len().saturating_mul(8);
    if !(MIN_RECIPIENT_BITS..=MAX_RECIPIENT_BITS).contains(&bits) {
        return Err(KeyStoreError::Recipient(format!(
            "an RSA key of {bits} bits; {MIN_RECIPIENT_BITS} to {MAX_RECIPIENT_BITS} are accepted"
        )));
    }
    Ok((modulus.to_vec(), strip_zeros(rsa.exponent).to_vec()))
}

fn strip_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}
