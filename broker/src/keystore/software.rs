//! The embedded software key store: the KEK in a file, encrypted under a key derived from a
//! passphrase. For the quick start and for machines without an HSM. It is not an HSM: the KEK
//! and, during a release, the data key are in the broker's memory, so the broker says so at
//! every start.
//!
//! ```text
//! { "format": "sovereign-broker-software-keystore", "version": 1, "kek_label": text,
//!   "kdf": "pbkdf2-hmac-sha256", "iterations": uint, "salt": base64(16),
//!   "nonce": base64(12), "sealed_kek": base64(32 + 16) }
//! ```
//!
//! The KEK is sealed with AES-256-GCM under PBKDF2-HMAC-SHA256(passphrase, salt, iterations),
//! with the label as associated data. Data keys are wrapped under the KEK with AES key wrap
//! (RFC 3394), as an HSM's `CKM_AES_KEY_WRAP` would.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use aws_lc_rs::pbkdf2;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};
use data_encoding::BASE64;
use sealing::DataKey;
use sealing::release::OaepHash;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KeyStore, KeyStoreError, RECORD_TAG_LEN, rsa_components};

/// The fewest PBKDF2 iterations a store may be created with.
pub const MIN_ITERATIONS: u32 = 100_000;
/// The iterations a new store uses by default (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
const FORMAT: &str = "sovereign-broker-software-keystore";
const KDF: &str = "pbkdf2-hmac-sha256";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    kek_label: String,
    kdf: String,
    iterations: u32,
    salt: String,
    nonce: String,
    sealed_kek: String,
}

/// The software key store, opened.
pub struct SoftwareStore {
    label: String,
    kek: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SoftwareStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareStore")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Result<LessSafeKey, KeyStoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    let rounds = NonZeroU32::new(iterations)
        .ok_or_else(|| KeyStoreError::Config("zero PBKDF2 iterations".into()))?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        passphrase,
        key.as_mut_slice(),
    );
    UnboundKey::new(&AES_256_GCM, key.as_slice())
        .map(LessSafeKey::new)
        .map_err(|_| KeyStoreError::Device("AES-256-GCM key".into()))
}

fn random<const N: usize>() -> Result<[u8; N], KeyStoreError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| KeyStoreError::Device("random".into()))?;
    Ok(out)
}

impl SoftwareStore {
    /// Create a store at `path` with a new random KEK labelled `label`. Refuses to replace an
    /// existing file.
    pub fn create(
        path: &Path,
        label: &str,
        passphrase: &[u8],
        iterations: u32,
    ) -> Result<(), KeyStoreError> {
        if iterations < MIN_ITERATIONS {
            return Err(KeyStoreError::Config(format!(
                "at least {MIN_ITERATIONS} PBKDF2 iterations"
            )));
        }
        if passphrase.len() < 12 {
            return Err(KeyStoreError::Config(
                "the passphrase must be at least 12 bytes".into(),
            ));
        }
        let kek = Zeroizing::new(random::<32>()?);
        let salt = random::<16>()?;
        let nonce = random::<12>()?;
        let mut sealed = kek.to_vec();
        derive(passphrase, &salt, iterations)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| KeyStoreError::Device("sealing the KEK".into()))?;
        let file = File {
            format: FORMAT.into(),
            version: 1,
            kek_label: label.into(),
            kdf: KDF.into(),
            iterations,
            salt: BASE64.encode(&salt),
            nonce: BASE64.encode(&nonce),
            sealed_kek: BASE64.encode(&sealed),
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| KeyStoreError::Config(e.to_string()))?;
        let replace = proofs::durable::Replace {
            private: true,
            overwrite: false,
        };
        proofs::durable::write_atomically(path, replace, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
        .map_err(|e| KeyStoreError::Config(format!("writing {}: {e}", path.display())))
    }

    /// Open the store at `path` with `passphrase`.
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Self, KeyStoreError> {
        let shown = || path.display().to_string();
        let text = read_small(path)?;
        let file: File = serde_json::from_slice(&text)
            .map_err(|e| KeyStoreError::Config(format!("{}: {e}", shown())))?;
        if file.format != FORMAT || file.version != 1 || file.kdf != KDF {
            return Err(KeyStoreError::Config(format!(
                "{} is not a version 1 software key store",
                shown()
            )));
        }
        if file.iterations < MIN_ITERATIONS {
            return Err(KeyStoreError::Config(format!(
                "{}: {} PBKDF2 iterations is below the minimum {MIN_ITERATIONS}",
                shown(),
                file.iterations
            )));
        }
        let decode = |field: &str, value: &str| {
            BASE64
                .decode(value.as_bytes())
                .map_err(|_| KeyStoreError::Config(format!("{}: {field} is not base64", shown())))
        };
        let salt = decode("salt", &file.salt)?;
        let nonce =
            <[u8; 12]>::try_from(decode("nonce", &file.nonce)?.as_slice()).map_err(|_| {
                KeyStoreError::Config(format!("{}: the nonce is not 12 bytes", shown()))
            })?;
        let mut sealed = Zeroizing::new(decode("sealed_kek", &file.sealed_kek)?);
        let kek = derive(passphrase, &salt, file.iterations)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(file.kek_label.as_bytes()),
                sealed.as_mut_slice(),
            )
            .map_err(|_| KeyStoreError::WrongPassphrase(shown()))?;
        let kek = <[u8; 32]>::try_from(&*kek)
            .map_err(|_| KeyStoreError::Config(format!("{}: the KEK is not 32 bytes", shown())))?;
        Ok(Self {
            label: file.kek_label,
            kek: Zeroizing::new(kek),
        })
    }

    fn kek(&self) -> Result<AesKek, KeyStoreError> {
        AesKek::new(&AES_256, self.kek.as_slice())
            .map_err(|_| KeyStoreError::Device("AES key-wrap key".into()))
    }
}

impl KeyStore for SoftwareStore {
    fn kind(&self) -> &'static str {
        "software"
    }

    fn kek_label(&self) -> &str {
        &self.label
    }

    fn new_data_key(&self) -> Result<(DataKey, Vec<u8>), KeyStoreError> {
        let key = DataKey::generate().map_err(|e| KeyStoreError::Device(e.to_string()))?;
        let mut out = vec![0u8; 40];
        let wrapped = self
            .kek()?
            .wrap(key.expose(), &mut out)
            .map_err(|_| KeyStoreError::Device("AES key wrap".into()))?
            .to_vec();
        Ok((key, wrapped))
    }

    fn rewrap(
        &self,
        wrapped: &[u8],
        recipient: &[u8],
        oaep: OaepHash,
    ) -> Result<Vec<u8>, KeyStoreError> {
        rsa_components(recipient)?;
        let unusable = || KeyStoreError::Recipient("not a usable RSA key".into());
        let public = PublicEncryptingKey::from_der(recipient).map_err(|_| unusable())?;
        let public = OaepPublicEncryptingKey::new(public).map_err(|_| unusable())?;
        let mut dek = Zeroizing::new(vec![0u8; 40]);
        let dek_len = self
            .kek()?
            .unwrap(wrapped, dek.as_mut_slice())
            .map_err(|_| KeyStoreError::Unwrap)?
            .len();
        let dek = dek.get(..dek_len).ok_or(KeyStoreError::Unwrap)?;
        let mut out = vec![0u8; public.ciphertext_size()];
        let len = public
            .encrypt(oaep.algorithm(), dek, &mut out, None)
            .map_err(|_| KeyStoreError::Device("RSA-OAEP encryption".into()))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn record_tag(&self, record: &[u8]) -> Result<[u8; RECORD_TAG_LEN], KeyStoreError> {
        // A key of its own for records, derived from the KEK: the KEK itself only wraps.
        let kek = hmac::Key::new(hmac::HMAC_SHA256, self.kek.as_slice());
        let derived = hmac::sign(&kek, b"sovereign-broker record authentication v1");
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        <[u8; RECORD_TAG_LEN]>::try_from(hmac::sign(&key, record).as_ref())
            .map_err(|_| KeyStoreError::Device("HMAC-SHA256".into()))
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, KeyStoreError> {
    scaffold::read_bounded(path, 64 * 1024).map_err(|e| KeyStoreError::Config(e.to_string()))
}

/// Where the passphrase comes from: a file, else `$BROKER_PASSPHRASE`.
pub fn passphrase(file: Option<&PathBuf>) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    if let Some(path) = file {
        let mut bytes = Zeroizing::new(read_small(path)?);
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return Ok(bytes);
    }
    match crate::secrets::get("BROKER_PASSPHRASE") {
        Some(p) => Ok(p),
        None => Err(KeyStoreError::Config(
            "the software key store needs a passphrase: set key_store.passphrase_file or \
             $BROKER_PASSPHRASE"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_opens_only_with_its_passphrase_and_refuses_weak_settings() {
        let dir = std::env::temp_dir().join(format!("swstore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keystore.json");
        let _ = std::fs::remove_file(&path);
        SoftwareStore::create(&path, "kek-1", b"correct horse battery", MIN_ITERATIONS).unwrap();
        assert!(
            SoftwareStore::create(&path, "kek-1", b"correct horse battery", MIN_ITERATIONS)
                .is_err()
        );
        let store = SoftwareStore::open(&path, b"correct horse battery").unwrap();
        assert_eq!(store.kek_label(), "kek-1");
        assert!(matches!(
            SoftwareStore::open(&path, b"wrong horse battery"),
            Err(KeyStoreError::WrongPassphrase(_))
        ));
        // The label is bound: renaming the KEK in the file breaks it.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("kek-1", "kek-2");
        std::fs::write(&path, text).unwrap();
        assert!(SoftwareStore::open(&path, b"correct horse battery").is_err());
        assert!(
            SoftwareStore::create(&dir.join("b"), "k", b"correct horse battery", 1000).is_err()
        );
        assert!(SoftwareStore::create(&dir.join("c"), "k", b"short", MIN_ITERATIONS).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
