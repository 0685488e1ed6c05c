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
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
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

    /// Generate a signing key pair labelled `label` of `kind` in the token, unless the token
    /// holds one already; returns whether it did.
    pub fn generate_signing_key(
        &self,
        label: &str,
        kind: SigningKeyKind,
    ) -> Result<bool, KeyStoreError> {
        self.with_session(|session| {
            if !find_labelled(session, ObjectClass::PRIVATE_KEY, label)?.is_empty() {
                return Ok(false);
            }
            let label = label.as_bytes().to_vec();
            // One random CKA_ID pairs the public key with the private one.
            let mut id = [0u8; 16];
            aws_lc_rs::rand::fill(&mut id)
                .map_err(|_| KeyStoreError::Device("no randomness for CKA_ID".into()))?;
            let (mechanism, params) = match kind {
                SigningKeyKind::P384 => (Mechanism::EccKeyPairGen, P384_PARAMS.to_vec()),
                SigningKeyKind::Ed25519 => {
                    (Mechanism::EccEdwardsKeyPairGen, ED25519_PARAMS.to_vec())
                }
            };
            session
                .generate_key_pair(
                    &mechanism,
                    &[
                        Attribute::Token(true),
                        Attribute::EcParams(params),
                        Attribute::Verify(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(id.to_vec()),
                    ],
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Label(label),
                        Attribute::Id(id.to_vec()),
                    ],
                )
                .map_err(device("generating a signing key pair"))?;
            Ok(true)
        })
    }

    /// The signing key pair labelled `label`, which must be of `kind`, private, sensitive and
    /// never extractable, used through a session of its own.
    pub fn signing_key(
        &self,
        label: &str,
        kind: SigningKeyKind,
    ) -> Result<TokenSigner, KeyStoreError> {
        let session = self
            ._pkcs11
            .open_rw_session(self.slot)
            .map_err(device("opening a session"))?;
        let problem = |problem: String| KeyStoreError::Kek {
            label: label.to_owned(),
            problem,
        };
        let [key] = find_labelled(&session, ObjectClass::PRIVATE_KEY, label)?[..] else {
            return Err(problem(format!(
                "expected exactly one private key with this label in token {:?} (`broker init` \
                 generates it)",
                self.config.token
            )));
        };
        let key_type = match kind {
            SigningKeyKind::P384 => KeyType::EC,
            SigningKeyKind::Ed25519 => KeyType::EC_EDWARDS,
        };
        // Generated in the token (CKA_LOCAL), never known outside it (always sensitive, never
        // extractable), usable only after login (private): an imported key, or one that was
        // ever exportable, is refused.
        for (attribute, wanted, what) in [
            (
                AttributeType::KeyType,
                Attribute::KeyType(key_type),
                "of the wrong key type",
            ),
            (
                AttributeType::Private,
                Attribute::Private(true),
                "usable without a login",
            ),
            (
                AttributeType::Sensitive,
                Attribute::Sensitive(true),
                "not sensitive",
            ),
            (
                AttributeType::AlwaysSensitive,
                Attribute::AlwaysSensitive(true),
                "not always sensitive",
            ),
            (
                AttributeType::Extractable,
                Attribute::Extractable(false),
                "extractable",
            ),
            (
                AttributeType::NeverExtractable,
                Attribute::NeverExtractable(true),
                "once extractable",
            ),
            (
                AttributeType::Local,
                Attribute::Local(true),
                "not generated in the token",
            ),
            (
                AttributeType::Sign,
                Attribute::Sign(true),
                "not allowed to sign",
            ),
        ] {
            let found = session
                .get_attributes(key, &[attribute])
                .map_err(device("reading the key's attributes"))?;
            if found.first() != Some(&wanted) {
                return Err(problem(format!("the private key is {what}")));
            }
        }
        let id = match session
            .get_attributes(key, &[AttributeType::Id])
            .map_err(device("reading the key's CKA_ID"))?
            .into_iter()
            .next()
        {
            Some(Attribute::Id(id)) if !id.is_empty() => id,
            _ => {
                return Err(problem(
                    "the private key has no CKA_ID to pair it with".into(),
                ));
            }
        };
        let publics = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id),
            ])
            .map_err(device("searching for the public key"))?;
        let [public] = publics[..] else {
            return Err(problem(
                "expected exactly one public key with this label and CKA_ID".into(),
            ));
        };
        let attributes = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(device("reading the public key"))?;
        let Some(Attribute::EcPoint(point)) = attributes.into_iter().next() else {
            return Err(problem("the token gave no public key".into()));
        };
        let public = match kind {
            SigningKeyKind::P384 => p384_spki(&point)?,
            // CKA_EC_POINT holds the 32 bytes, as a DER OCTET STRING or (some tokens) raw.
            SigningKeyKind::Ed25519 => match point.as_slice() {
                [0x04, 0x20, key @ ..] | key if key.len() == 32 => key.to_vec(),
                _ => return Err(problem("not an Ed25519 public key".into())),
            },
        };
        Ok(TokenSigner {
            session: Mutex::new(session),
            key,
            kind,
            label: label.to_owned(),
            public,
            _pkcs11: self._pkcs11.clone(),
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

/// A P-384 signing key in a PKCS#11 token, used by label: an approver's key, whose private half
/// is made inside the token (sensitive, never extractable) and never leaves it.
#[derive(Debug, Clone)]
pub struct TokenKey {
    /// The module.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The key pair's label.
    pub label: String,
}

/// What a signing key in the token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKeyKind {
    /// ECDSA P-384 (the response key): `CKM_ECDSA` over a SHA-384 digest.
    P384,
    /// Ed25519 (the log key): `CKM_EDDSA`.
    Ed25519,
}

/// A signing key pair in the token, used through a session of its own. The private key never
/// leaves the token.
pub struct TokenSigner {
    session: Mutex<Session>,
    key: ObjectHandle,
    kind: SigningKeyKind,
    label: String,
    /// P-384: the SubjectPublicKeyInfo (DER); Ed25519: the 32 key bytes.
    public: Vec<u8>,
    // Kept last so that the session closes before the library is finalized.
    _pkcs11: Pkcs11,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("label", &self.label)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// P-384: the SubjectPublicKeyInfo (DER); Ed25519: the 32 key bytes.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign_with(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let session = self
            .session
            .lock()
            .map_err(|_| "the token session's lock is poisoned".to_owned())?;
        let signed = match self.kind {
            SigningKeyKind::P384 => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, message);
                session.sign(&Mechanism::Ecdsa, self.key, digest.as_ref())
            }
            SigningKeyKind::Ed25519 => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                message,
            ),
        };
        signed.map_err(|e| {
            let message = format!("PKCS#11 signing with {:?}: {e}", self.label);
            tracing::error!("{message}");
            message
        })
    }
}

impl sealing::release::ExternalP384 for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.sign_with(message)
    }
}

impl proofs::note::ExternalEd25519 for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.sign_with(message)
    }
}

fn find_labelled(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Vec<ObjectHandle>, KeyStoreError> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(device("searching for a key"))
}

/// A P-384 SubjectPublicKeyInfo from a CKA_EC_POINT (a DER OCTET STRING around the 97-byte
/// uncompressed point).
fn p384_spki(point: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    let point = point
        .len()
        .checked_sub(97)
        .and_then(|start| point.get(start..))
        .filter(|p| p.first() == Some(&4))
        .ok_or_else(|| KeyStoreError::Device("not a P-384 point".into()))?;
    let mut spki = P384_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);
    Ok(spki)
}

/// Ed25519's OID (1.3.101.112), DER-encoded (CKA_EC_PARAMS).
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// secp384r1's OID, DER-encoded (CKA_EC_PARAMS).
const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// The DER prefix of a P-384 SubjectPublicKeyInfo, before the 97-byte uncompressed point.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

impl TokenKey {
    fn session(&self, pin: &str) -> Result<(Pkcs11, Session), KeyStoreError> {
        let config = Pkcs11Config {
            module: self.module.clone(),
            token: self.token.clone(),
            kek_label: String::new(),
            kek_wrap: KekWrapMechanism::AesKeyWrap,
            sessions: 1,
        };
        let (pkcs11, _, session) = connect(&config, pin)?;
        Ok((pkcs11, session))
    }

    fn find(
        &self,
        session: &Session,
        class: ObjectClass,
    ) -> Result<Vec<ObjectHandle>, KeyStoreError> {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(self.label.as_bytes().to_vec()),
            ])
            .map_err(device("searching for the key"))
    }

    /// Make the key pair inside the token; refused if a key with the label exists. Returns its
    /// SubjectPublicKeyInfo (DER).
    pub fn generate(&self, pin: &str) -> Result<Vec<u8>, KeyStoreError> {
        let (_pkcs11, session) = self.session(pin)?;
        if !self.find(&session, ObjectClass::PRIVATE_KEY)?.is_empty() {
            return Err(KeyStoreError::Config(format!(
                "token {:?} already holds a key labelled {:?}",
                self.token, self.label
            )));
        }
        let label = self.label.as_bytes().to_vec();
        let (public, _) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::EcParams(P384_PARAMS.to_vec()),
                    Attribute::Verify(true),
                    Attribute::Label(label.clone()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(label),
                ],
            )
            .map_err(device("generating a P-384 key pair"))?;
        self.spki_of(&session, public)
    }

    fn spki_of(&self, session: &Session, public: ObjectHandle) -> Result<Vec<u8>, KeyStoreError> {
        let attributes = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(device("reading the public key"))?;
        let Some(Attribute::EcPoint(point)) = attributes.into_iter().next() else {
            return Err(KeyStoreError::Device("the token gave no EC point".into()));
        };
        p384_spki(&point)
    }

    /// Sign `message` with the token's private key: SHA-384 here, `CKM_ECDSA` in the token.
    /// Returns r ‖ s (96 bytes).
    pub fn sign(&self, pin: &str, message: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        let (_pkcs11, session) = self.session(pin)?;
        let keys = self.find(&session, ObjectClass::PRIVATE_KEY)?;
        let [key] = keys.as_slice() else {
            return Err(KeyStoreError::Config(format!(
                "token {:?} holds {} private keys labelled {:?}; expected exactly one",
                self.token,
                keys.len(),
                self.label
            )));
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, message);
        session
            .sign(&Mechanism::Ecdsa, *key, digest.as_ref())
            .map_err(device("signing"))
    }
}
