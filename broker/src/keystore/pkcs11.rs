//! The KEK in a PKCS#11 token, through `cryptoki`. Tested against SoftHSM2.
//!
//! - The KEK is an AES-256 token object generated in the HSM, private, sensitive, never
//!   extractable, not modifiable, usable only to wrap and unwrap. [`Pkcs11Store::open`] reads
//!   every attribute that says so and refuses a KEK for which any is wrong, or which the token
//!   does not report (cryptoki leaves out attributes a token calls unavailable: a missing one
//!   fails, it never passes).
//! - Records: a second token object, `<kek label>.records`, a 256-bit generic secret with the
//!   same protections that can only sign and verify (HMAC-SHA256), tags each sealed model's
//!   record so that the state directory alone cannot move a wrapped key between models.
//! - Sealing: the HSM generates the data key as a session object, which is wrapped under the KEK
//!   (`C_WrapKey`), read once for the sealer (the one time it leaves the HSM), and destroyed.
//! - Release: `C_UnwrapKey` under the KEK makes the data key a session object that is sensitive
//!   (never readable), usable for nothing but being wrapped; the enclave's RSA
//!   public key is imported as a session object; `C_WrapKey` with `CKM_RSA_PKCS_OAEP` wraps the
//!   one with the other. Both session objects are destroyed whatever happens. The data key
//!   never exists in the broker's memory. (The KEK carries no `CKA_UNWRAP_TEMPLATE`: cryptoki
//!   cannot set array attributes, so another holder of the PIN could still unwrap a data key
//!   with a template of its own. The PIN is what guards that; see docs/broker.md.)
//! - Concurrency: a pool of sessions, one per worker, so releases run in parallel.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sealing::DataKey;
use sealing::release::OaepHash;
use zeroize::Zeroizing;

use super::{KeyStore, KeyStoreError, RECORD_TAG_LEN, rsa_components};

mod signing;

pub use self::signing::{SigningKeyKind, TokenKey, TokenSigner};

/// How the HSM wraps data keys under the KEK. Vendors differ: SoftHSM2 and most HSMs implement
/// `CKM_AES_KEY_WRAP` (RFC 3394); some expose key wrap only under a vendor mechanism number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KekWrapMechanism {
    /// `CKM_AES_KEY_WRAP` (RFC 3394).
    AesKeyWrap,
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649).
    AesKeyWrapPad,
    /// A vendor-defined mechanism number (at least `CKM_VENDOR_DEFINED`), without parameters.
    Vendor(u64),
}

impl KekWrapMechanism {
    /// Parse `aes-key-wrap`, `aes-key-wrap-pad` or `vendor:0x…`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "aes-key-wrap" => Some(Self::AesKeyWrap),
            "aes-key-wrap-pad" => Some(Self::AesKeyWrapPad),
            other => {
                let hex = other.strip_prefix("vendor:0x")?;
                u64::from_str_radix(hex, 16).ok().map(Self::Vendor)
            }
        }
    }

    fn mechanism(self) -> Result<Mechanism<'static>, KeyStoreError> {
        Ok(match self {
            Self::AesKeyWrap => Mechanism::AesKeyWrap,
            Self::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
            Self::Vendor(n) => {
                let kind = MechanismType::new_vendor_defined(n).map_err(|_| {
                    KeyStoreError::Config(format!("0x{n:x} is not a vendor-defined mechanism"))
                })?;
                Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
            }
        })
    }
}

impl std::fmt::Display for KekWrapMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AesKeyWrap => f.write_str("aes-key-wrap"),
            Self::AesKeyWrapPad => f.write_str("aes-key-wrap-pad"),
            Self::Vendor(n) => write!(f, "vendor:0x{n:x}"),
        }
    }
}

/// Where the token is and how to use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The KEK's label.
    pub kek_label: String,
    /// How data keys are wrapped under the KEK.
    pub kek_wrap: KekWrapMechanism,
    /// Sessions in the pool: releases that can run at once.
    pub sessions: usize,
}

/// The PKCS#11 key store, logged in.
pub struct Pkcs11Store {
    config: Pkcs11Config,
    kek: ObjectHandle,
    records: ObjectHandle,
    sessions: Mutex<Vec<Session>>,
    returned: Condvar,
    slot: Slot,
    // Kept last so that sessions close before the library is finalized.
    _pkcs11: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn device(what: &str) -> impl Fn(cryptoki::error::Error) -> KeyStoreError + '_ {
    move |e| KeyStoreError::Device(format!("PKCS#11 {what}: {e}"))
}

fn find_slot(pkcs11: &Pkcs11, config: &Pkcs11Config) -> Result<Slot, KeyStoreError> {
    for slot in pkcs11
        .get_slots_with_token()
        .map_err(device("listing tokens"))?
    {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(device("reading token info"))?;
        if info.label().trim_end() == config.token {
            return Ok(slot);
        }
    }
    Err(KeyStoreError::Config(format!(
        "no PKCS#11 token labelled {:?} in {}",
        config.token,
        config.module.display()
    )))
}

fn connect(config: &Pkcs11Config, pin: &str) -> Result<(Pkcs11, Slot, Session), KeyStoreError> {
    let pkcs11 = Pkcs11::new(&config.module).map_err(|e| {
        KeyStoreError::Config(format!(
            "loading the PKCS#11 module {}: {e}",
            config.module.display()
        ))
    })?;
    pkcs11
        .initialize(CInitializeArgs::OsThreads)
        .map_err(device("initialising the module"))?;
    let slot = find_slot(&pkcs11, config)?;
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(device("opening a session"))?;
    session
        .login(UserType::User, Some(&AuthPin::new(pin.into())))
        .map_err(|e| {
            KeyStoreError::Config(format!("logging in to token {:?}: {e}", config.token))
        })?;
    Ok((pkcs11, slot, session))
}

/// The label of the record-tagging key that goes with the KEK labelled `kek_label`.
fn record_key_label(kek_label: &str) -> String {
    format!("{kek_label}.records")
}

fn find_kek(session: &Session, label: &str) -> Result<Option<ObjectHandle>, KeyStoreError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(device("searching for a key"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(KeyStoreError::Kek {
            label: label.into(),
            problem: format!("{} keys carry this label; expected one", more.len()),
        }),
    }
}

/// What a key kept in the token must be. Each attribute is read on its own, and one the token
/// does not report is a failure.
fn expected(kek: bool) -> Vec<(AttributeType, Attribute, &'static str)> {
    let mut expected = vec![
        (
            AttributeType::Class,
            Attribute::Class(ObjectClass::SECRET_KEY),
            "is not a secret key",
        ),
        (
            AttributeType::ValueLen,
            Attribute::ValueLen(32.into()),
            "is not 256 bits",
        ),
        (
            AttributeType::Token,
            Attribute::Token(true),
            "is not a token object",
        ),
        (
            AttributeType::Private,
            Attribute::Private(true),
            "is not private",
        ),
        (
            AttributeType::Sensitive,
            Attribute::Sensitive(true),
            "is not sensitive",
        ),
        (
            AttributeType::Extractable,
            Attribute::Extractable(false),
            "is extractable",
        ),
        (
            AttributeType::AlwaysSensitive,
            Attribute::AlwaysSensitive(true),
            "was not always sensitive",
        ),
        (
            AttributeType::NeverExtractable,
            Attribute::NeverExtractable(true),
            "was once extractable",
        ),
        (
            AttributeType::Local,
            Attribute::Local(true),
            "was not generated in the token (CKA_LOCAL is false)",
        ),
        (
            AttributeType::Modifiable,
            Attribute::Modifiable(false),
            "is modifiable (its uses could be widened later)",
        ),
        (
            AttributeType::Copyable,
            Attribute::Copyable(false),
            "is copyable (a copy could carry other uses)",
        ),
        (
            AttributeType::Encrypt,
            Attribute::Encrypt(false),
            "may encrypt",
        ),
        (
            AttributeType::Decrypt,
            Attribute::Decrypt(false),
            "may decrypt (wrapped keys could be read)",
        ),
        (
            AttributeType::Derive,
            Attribute::Derive(false),
            "may derive keys",
        ),
    ];
    if kek {
        expected.extend([
            (
                AttributeType::KeyType,
                Attribute::KeyType(KeyType::AES),
                "is not an AES key",
            ),
            (AttributeType::Wrap, Attribute::Wrap(true), "may not wrap"),
            (
                AttributeType::Unwrap,
                Attribute::Unwrap(true),
                "may not unwrap",
            ),
            (AttributeType::Sign, Attribute::Sign(false), "may sign"),
            (
                AttributeType::Verify,
                Attribute::Verify(false),
                "may verify",
            ),
        ]);
    } else {
        expected.extend([
            (
                AttributeType::KeyType,
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                "is not a generic secret",
            ),
            (AttributeType::Wrap, Attribute::Wrap(false), "may wrap"),
            (
                AttributeType::Unwrap,
                Attribute::Unwrap(false),
                "may unwrap",
            ),
            (AttributeType::Sign, Attribute::Sign(true), "may not sign"),
        ]);
    }
    expected
}

/// Check every attribute [`expected`] names, one by one, failing closed.
fn check_key(
    session: &Session,
    key: ObjectHandle,
    label: &str,
    kek: bool,
) -> Result<(), KeyStoreError> {
    for (kind, wanted, problem) in expected(kek) {
        let found = session
            .get_attributes(key, &[kind])
            .map_err(device("reading a key's attributes"))?;
        let problem = match found.as_slice() {
            [value] if *value == wanted => continue,
            [] => format!("the token does not report {kind:?}; refusing a key it cannot vouch for"),
            _ => problem.to_owned(),
        };
        return Err(KeyStoreError::Kek {
            label: label.to_owned(),
            problem,
        });
    }
    Ok(())
}

/// The attributes every key the broker keeps shares: in the token, private, sensitive, never
/// extractable, not modifiable, no encryption, decryption or derivation.
fn kept(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Pkcs11Store {
    /// Generate in the token whichever of the broker's keys is missing, and name them: the KEK
    /// (AES-256, only wraps and unwraps) and the record key (a 256-bit generic secret, only
    /// signs and verifies HMAC-SHA256). Both private, sensitive, never extractable, not
    /// modifiable.
    pub fn create_missing(config: &Pkcs11Config, pin: &str) -> Result<Vec<String>, KeyStoreError> {
        let (_pkcs11, _slot, session) = connect(config, pin)?;
        let mut created = Vec::new();
        if find_kek(&session, &config.kek_label)?.is_none() {
            let mut template = kept(&config.kek_label);
            template.extend([
                Attribute::KeyType(KeyType::AES),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Sign(false),
                Attribute::Verify(false),
            ]);
            session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(device("generating the KEK"))?;
            created.push(config.kek_label.clone());
        }
        let records = record_key_label(&config.kek_label);
        if find_kek(&session, &records)?.is_none() {
            let mut template = kept(&records);
            template.extend([
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ]);
            session
                .generate_key(&Mechanism::GenericSecretKeyGen, &template)
                .map_err(device("generating the record key"))?;
            created.push(records);
        }
        Ok(created)
    }

    /// Log in, find the KEK and the record key and check every attribute of both, and open the
    /// session pool.
    pub fn open(config: Pkcs11Config, pin: &str) -> Result<Self, KeyStoreError> {
        let (pkcs11, slot, first) = connect(&config, pin)?;
        let kek = find_kek(&first, &config.kek_label)?.ok_or_else(|| KeyStoreError::Kek {
            label: config.kek_label.clone(),
            problem: "not found in the token (create it with `broker init`)".into(),
        })?;
        check_key(&first, kek, &config.kek_label, true)?;
        let records_label = record_key_label(&config.kek_label);
        let records = find_kek(&first, &records_label)?.ok_or_else(|| KeyStoreError::Kek {
            label: records_label.clone(),
            problem: "not found in the token (`broker init` creates it)".into(),
        })?;
        check_key(&first, records, &records_label, false)?;
        let mut sessions = vec![first];
        while sessions.len() < config.sessions.max(1) {
            // Sessions of one application share its login.
            sessions.push(
                pkcs11
                    .open_rw_session(slot)
                    .map_err(device("opening a session"))?,
            );
        }
        Ok(Self {
            config,
            kek,
            records,
            sessions: Mutex::new(sessions),
            returned: Condvar::new(),
            slot,
            _pkcs11: pkcs11,
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Pkcs11Config {
        &self.config
    }

    /// Run `work` on a session of the pool, waiting for one if all are busy.
    fn with_session<T>(
        &self,
        work: impl FnOnce(&Session) -> Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        let session = {
            let mut pool = self
                .sessions
                .lock()
                .map_err(|_| KeyStoreError::Device("session pool poisoned".into()))?;
            loop {
                if let Some(s) = pool.pop() {
                    break s;
                }
                pool = self
                    .returned
                    .wait(pool)
                    .map_err(|_| KeyStoreError::Device("session pool poisoned".into()))?;
            }
        };
        let result = work(&session);
        if let Ok(mut pool) = self.sessions.lock() {
            pool.push(session);
        }
        self.returned.notify_one();
        result
    }
}

/// Destroys a session object when dropped.
struct Temporary<'s> {
    session: &'s Session,
    handle: ObjectHandle,
}

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.session.destroy_object(self.handle) {
            tracing::error!(error = %e, "could not destroy a temporary HSM object");
        }
    }
}

impl KeyStore for Pkcs11Store {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn kek_label(&self) -> &str {
        &self.config.kek_label
    }

    fn new_data_key(&self) -> Result<(DataKey, Vec<u8>), KeyStoreError> {
        let wrap = self.config.kek_wrap.mechanism()?;
        self.with_session(|session| {
            let dek = Temporary {
                session,
                handle: session
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::ValueLen(32.into()),
                            Attribute::Token(false),
                            Attribute::Sensitive(false),
                            Attribute::Extractable(true),
                        ],
                    )
                    .map_err(device("generating a data key"))?,
            };
            let wrapped = session
                .wrap_key(&wrap, self.kek, dek.handle)
                .map_err(device("wrapping the data key under the KEK"))?;
            let value = session
                .get_attributes(dek.handle, &[AttributeType::Value])
                .map_err(device("reading the new data key"))?;
            let key = value
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(Zeroizing::new(v)),
                    _ => None,
                })
                .ok_or_else(|| KeyStoreError::Device("the HSM returned no key value".into()))?;
            let key =
                DataKey::from_slice(&key).map_err(|e| KeyStoreError::Device(e.to_string()))?;
            Ok((key, wrapped))
        })
    }

    fn rewrap(
        &self,
        wrapped: &[u8],
        recipient: &[u8],
        oaep: OaepHash,
    ) -> Result<Vec<u8>, KeyStoreError> {
        let (modulus, exponent) = rsa_components(recipient)?;
        let unwrap = self.config.kek_wrap.mechanism()?;
        let (hash, mgf) = match oaep {
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        };
        let params = PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty());
        let oaep = Mechanism::RsaPkcsOaep(params);
        self.with_session(|session| {
            let enclave = Temporary {
                session,
                handle: session
                    .create_object(&[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Token(false),
                        Attribute::Wrap(true),
                        Attribute::Encrypt(false),
                        Attribute::Verify(false),
                        Attribute::Modulus(modulus),
                        Attribute::PublicExponent(exponent),
                    ])
                    .map_err(device("importing the enclave's public key"))?,
            };
            let dek = Temporary {
                session,
                handle: session
                    .unwrap_key(
                        &unwrap,
                        self.kek,
                        wrapped,
                        // Never readable, never kept, good for nothing but
                        // being wrapped to the enclave.
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::Token(false),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(true),
                            Attribute::Encrypt(false),
                            Attribute::Decrypt(false),
                            Attribute::Sign(false),
                            Attribute::Verify(false),
                            Attribute::Wrap(false),
                            Attribute::Unwrap(false),
                            Attribute::Derive(false),
                        ],
                    )
                    .map_err(|e| match e {
                        cryptoki::error::Error::Pkcs11(
                            RvError::WrappedKeyInvalid
                            | RvError::WrappedKeyLenRange
                            | RvError::EncryptedDataInvalid
                            | RvError::EncryptedDataLenRange,
                            _,
                        ) => KeyStoreError::Unwrap,
                        other => KeyStoreError::Device(format!(
                            "PKCS#11 unwrapping the data key: {other}"
                        )),
                    })?,
            };
            session
                .wrap_key(&oaep, enclave.handle, dek.handle)
                .map_err(device("wrapping the data key to the enclave"))
        })
    }

    fn record_tag(&self, record: &[u8]) -> Result<[u8; RECORD_TAG_LEN], KeyStoreError> {
        self.with_session(|session| {
            let tag = session
                .sign(&Mechanism::Sha256Hmac, self.records, record)
                .map_err(device("tagging a record"))?;
            <[u8; RECORD_TAG_LEN]>::try_from(tag.as_slice())
                .map_err(|_| KeyStoreError::Device("the HSM's HMAC is not 32 bytes".into()))
        })
    }
}
