//! Signing keys in the token: the broker's response key (P-384) and log key (Ed25519), and an
//! approver's key (P-384). Each is generated inside the token and signs there; its private half
//! never leaves it.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{KekWrapMechanism, Pkcs11Config, Pkcs11Store, connect, device};
use crate::keystore::KeyStoreError;

impl Pkcs11Store {
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
