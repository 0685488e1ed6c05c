//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, in the key formats of
//! `golang.org/x/mod/sumdb/note`, so that existing witnesses and monitors read what we sign.
//!
//! ```text
//! <text, ending in a newline>
//!
//! — <key name> base64(key ID (4 bytes, big-endian) ‖ Ed25519 signature)
//! ```
//!
//! A verifier key is written `<name>+<key ID, 8 hex digits>+base64(0x01 ‖ public key)` and a
//! signer key `PRIVATE+KEY+<name>+<key ID>+base64(0x01 ‖ seed)`. The key ID is the first four
//! bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).

use attest::service::{ServiceRole, verify_service_certificate};
use attest::{ServiceTrust, Timestamp};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use data_encoding::BASE64;
use zeroize::Zeroizing;

/// A DER SubjectPublicKeyInfo for Ed25519 (RFC 8410) up to the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The signature type byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// The largest note accepted, in bytes.
pub const MAX_NOTE_LEN: usize = 256 * 1024;
/// The most signature lines accepted on one note.
pub const MAX_SIGNATURES: usize = 100;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note or a key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is not in the signed-note format.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key string is not in the expected format.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// A key name is empty or holds a space or a plus sign.
    #[error("invalid key name {0:?}: names must be non-empty, without spaces or '+'")]
    KeyName(String),
    /// A signature from a trusted key does not verify.
    #[error("the signature by {name} (key ID {key_id:08x}) does not verify")]
    BadSignature {
        /// The key's name.
        name: String,
        /// The key's ID.
        key_id: u32,
    },
    /// No signature is from a trusted key.
    #[error("the note has no signature from a trusted key (signed by: {signers})")]
    Untrusted {
        /// The names of the keys that did sign.
        signers: String,
    },
    /// Two trusted keys share a name and an ID.
    #[error("two trusted keys are named {name} with key ID {key_id:08x}")]
    AmbiguousKey {
        /// The name.
        name: String,
        /// The ID.
        key_id: u32,
    },
    /// The log key's certificate is not from a trusted root, or not for a transparency log.
    #[error("the log key certificate is refused: {0}")]
    Certificate(String),
    /// Key generation or signing failed.
    #[error("the signing key cannot be used: {0}")]
    Key(&'static str),
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
    /// The signature bytes, without the key ID.
    pub signature: Vec<u8>,
}

/// A parsed note: its text and its signature lines, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, including its final newline.
    pub text: String,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parse a signed note. Nothing is verified: see [`Note::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(NoteError::Malformed("the note is too large"));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        if s.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed("control character"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, sigs) = (
            s.get(..=split).unwrap_or_default(),
            s.get(split + 2..).unwrap_or_default(),
        );
        check_text(text)?;
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature lines must follow the blank line, each ending in a newline",
            ));
        }
        let mut signatures = Vec::new();
        for line in sigs.strip_suffix('\n').unwrap_or(sigs).split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed(
                    "a signature line must start with '— '",
                ))?;
            let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "a signature line needs a name and a signature",
            ))?;
            check_name(name)?;
            let raw = decode_base64(b64)
                .ok_or(NoteError::Malformed("signature is not canonical base64"))?;
            let (id, signature) = raw
                .split_first_chunk::<4>()
                .ok_or(NoteError::Malformed("signature too short"))?;
            if signature.is_empty() {
                return Err(NoteError::Malformed("signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes(*id),
                signature: signature.to_vec(),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Check the signatures against `trusted` keys, as the spec requires: signatures from
    /// unknown keys are ignored, a bad signature from a trusted key rejects the note, and at
    /// least one trusted signature must verify. Returns the keys whose signatures verified.
    pub fn verify<'k>(
        &self,
        trusted: &'k [NoteVerifier],
    ) -> Result<Vec<&'k NoteVerifier>, NoteError> {
        let mut verified: Vec<&NoteVerifier> = Vec::new();
        for sig in &self.signatures {
            let mut matching = trusted
                .iter()
                .filter(|k| k.name == sig.name && k.key_id == sig.key_id);
            let Some(key) = matching.next() else { continue };
            if matching.next().is_some() {
                return Err(NoteError::AmbiguousKey {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !key.verify(self.text.as_bytes(), &sig.signature) {
                return Err(NoteError::BadSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !verified.iter().any(|v| std::ptr::eq(*v, key)) {
                verified.push(key);
            }
        }
        if verified.is_empty() {
            let signers: Vec<&str> = self.signatures.iter().map(|s| s.name.as_str()).collect();
            return Err(NoteError::Untrusted {
                signers: signers.join(", "),
            });
        }
        Ok(verified)
    }

    /// The note in its wire form.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for sig in &self.signatures {
            let mut raw = sig.key_id.to_be_bytes().to_vec();
            raw.extend_from_slice(&sig.signature);
            out.push_str(SIGNATURE_PREFIX);
            out.push_str(&sig.name);
            out.push(' ');
            out.push_str(&BASE64.encode(&raw));
            out.push('\n');
        }
        out
    }
}

/// A public key that may sign notes.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// A verifier for the Ed25519 `public_key` under `name`.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            public_key,
        })
    }

    /// Parse `<name>+<key ID>+<base64(0x01 ‖ key)>`. The key ID must match the key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        // The key is base64, which may itself contain '+'.
        let mut parts = vkey.trim_end_matches('\n').splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected <name>+<key ID>+<key>"));
        };
        let id = parse_key_id(id)?;
        let raw = decode_base64(key).ok_or(NoteError::MalformedKey("the key is not base64"))?;
        let public_key = match raw.split_first() {
            Some((&ALG_ED25519, key)) => <[u8; 32]>::try_from(key)
                .map_err(|_| NoteError::MalformedKey("an Ed25519 key is 32 bytes"))?,
            _ => return Err(NoteError::MalformedKey("not an Ed25519 key (type 0x01)")),
        };
        let verifier = Self::new(name, public_key)?;
        if verifier.key_id != id {
            return Err(NoteError::MalformedKey("the key ID does not match the key"));
        }
        Ok(verifier)
    }

    /// The key certified by `certificate` (DER): issued by one of `trust`'s roots for the
    /// transparency-log role, valid at `at`, for an Ed25519 key. The key name is the
    /// certificate's common name.
    pub fn from_certificate(
        certificate: &[u8],
        trust: &ServiceTrust,
        at: Timestamp,
    ) -> Result<Self, NoteError> {
        let key = verify_service_certificate(certificate, trust, ServiceRole::TransparencyLog, at)
            .map_err(|e| NoteError::Certificate(e.to_string()))?;
        let public_key = key
            .spki_der
            .strip_prefix(&ED25519_SPKI_PREFIX)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| NoteError::Certificate("the certified key is not Ed25519".into()))?;
        Self::new(&key.name, public_key)
    }

    /// The key as a DER SubjectPublicKeyInfo, for certification under a national root.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.public_key);
        der
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// `<name>+<key ID>+<base64(0x01 ‖ key)>`.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(&raw))
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message, signature)
            .is_ok()
    }
}

impl std::fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

/// A private key that signs notes.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

/// An Ed25519 key held outside this process (an HSM, through PKCS#11): it signs, and never
/// hands out its private half.
pub trait ExternalEd25519: Send + Sync {
    /// The Ed25519 signature (64 bytes) of `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

enum SigningKey {
    Memory(Ed25519KeyPair),
    External {
        public_key: [u8; 32],
        key: Box<dyn ExternalEd25519>,
    },
}

impl NoteSigner {
    /// A fresh random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = Ed25519KeyPair::generate().map_err(|_| NoteError::Key("generation failed"))?;
        Ok(Self::from_key(name, key))
    }

    /// Parse `PRIVATE+KEY+<name>+<key ID>+<base64(0x01 ‖ seed)>`.
    pub fn parse(skey: &str) -> Result<Self, NoteError> {
        let mut parts = skey.trim_end_matches('\n').splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(key)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NoteError::MalformedKey(
                "expected PRIVATE+KEY+<name>+<key ID>+<key>",
            ));
        };
        check_name(name)?;
        let id = parse_key_id(id)?;
        let raw = Zeroizing::new(
            decode_base64(key).ok_or(NoteError::MalformedKey("the key is not base64"))?,
        );
        let seed = match raw.split_first() {
            Some((&ALG_ED25519, seed)) if seed.len() == 32 => seed,
            _ => {
                return Err(NoteError::MalformedKey(
                    "not a 32-byte Ed25519 seed (type 0x01)",
                ));
            }
        };
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| NoteError::MalformedKey("not a usable Ed25519 seed"))?;
        let signer = Self::from_key(name, key);
        if signer.key_id != id {
            return Err(NoteError::MalformedKey("the key ID does not match the key"));
        }
        Ok(signer)
    }

    /// A signer for an Ed25519 key held elsewhere, whose public key is `public_key`. Every
    /// signature it returns is verified under `public_key` before it is used, so a token that
    /// signs with another key fails at once rather than in a verifier.
    pub fn external(
        name: &str,
        public_key: [u8; 32],
        key: Box<dyn ExternalEd25519>,
    ) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            key: SigningKey::External { public_key, key },
        })
    }

    /// Whether the private key is held outside this process.
    pub fn is_external(&self) -> bool {
        matches!(self.key, SigningKey::External { .. })
    }

    /// `PRIVATE+KEY+<name>+<key ID>+<base64(0x01 ‖ seed)>`, zeroized on drop. A key held
    /// outside this process cannot be exported.
    pub fn to_skey(&self) -> Result<Zeroizing<String>, NoteError> {
        let SigningKey::Memory(key) = &self.key else {
            return Err(NoteError::Key(
                "the key is held in a token and cannot be exported",
            ));
        };
        let seed = key
            .seed()
            .and_then(|s| s.as_be_bytes())
            .map_err(|_| NoteError::Key("the seed cannot be exported"))?;
        let mut raw = Zeroizing::new(vec![ALG_ED25519]);
        raw.extend_from_slice(seed.as_ref());
        Ok(Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(&raw)
        )))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> NoteVerifier {
        let public_key = match &self.key {
            SigningKey::Memory(key) => {
                let mut public_key = [0u8; 32];
                public_key.copy_from_slice(key.public_key().as_ref());
                public_key
            }
            SigningKey::External { public_key, .. } => *public_key,
        };
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key,
        }
    }

    /// Sign `text` (which must end in a newline and hold no blank-line-signature confusion)
    /// and return the signed note.
    pub fn sign(&self, text: &str) -> Result<Note, NoteError> {
        check_text(text)?;
        let signature = match &self.key {
            SigningKey::Memory(key) => key
                .try_sign(text.as_bytes())
                .map_err(|_| NoteError::Key("signing failed"))?
                .as_ref()
                .to_vec(),
            SigningKey::External { public_key, key } => {
                let signature = key.sign(text.as_bytes()).map_err(|e| {
                    tracing::error!(error = %e, "the token could not sign the note");
                    NoteError::Key("the token could not sign")
                })?;
                UnparsedPublicKey::new(&ED25519, public_key)
                    .verify(text.as_bytes(), &signature)
                    .map_err(|_| {
                        NoteError::Key("the token's signature does not verify under its key")
                    })?;
                signature
            }
        };
        Ok(Note {
            text: text.to_owned(),
            signatures: vec![NoteSignature {
                name: self.name.clone(),
                key_id: self.key_id,
                signature,
            }],
        })
    }

    fn from_key(name: &str, key: Ed25519KeyPair) -> Self {
        let key_id = key_id(name, key.public_key().as_ref());
        Self {
            name: name.to_owned(),
            key_id,
            key: SigningKey::Memory(key),
        }
    }
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

/// Standard padded base64, in its one canonical spelling only (no padding mid-string, no
/// non-zero trailing bits), so that what parses re-serialises to the same bytes.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(text.as_bytes()).ok()?;
    (BASE64.encode(&bytes) == text).then_some(bytes)
}

fn key_id(name: &str, public_key: &[u8]) -> u32 {
    typed_key_id(name, ALG_ED25519, public_key)
}

/// A key ID as signed-note defines it: the first four bytes of SHA-256(name ‖ "\n" ‖ type ‖ key).
pub(crate) fn typed_key_id(name: &str, key_type: u8, public_key: &[u8]) -> u32 {
    let mut input = name.as_bytes().to_vec();
    input.push(b'\n');
    input.push(key_type);
    input.extend_from_slice(public_key);
    let hash = digest(&SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(hash.as_ref().get(..4).unwrap_or(&[0; 4]));
    u32::from_be_bytes(id)
}

pub(crate) fn parse_key_id(text: &str) -> Result<u32, NoteError> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("the key ID must be 8 hex digits"));
    }
    u32::from_str_radix(text, 16).map_err(|_| NoteError::MalformedKey("bad key ID"))
}

pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::KeyName(name.chars().take(64).collect()));
    }
    Ok(())
}

pub(crate) fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text must end in a newline"));
    }
    if text.len() > MAX_NOTE_LEN || text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed(
            "the text is too large or has control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from golang.org/x/mod/sumdb/note's tests.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn signing_reproduces_the_published_signature() {
        let signer = NoteSigner::parse(PETER_SKEY).unwrap();
        assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);
        assert_eq!(signer.to_skey().unwrap().as_str(), PETER_SKEY);
        let note = signer.sign(TEXT).unwrap();
        assert_eq!(note.to_text(), format!("{TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn published_notes_verify_with_their_keys_only() {
        let peter = NoteVerifier::parse(PETER_VKEY).unwrap();
        let enoch = NoteVerifier::parse(ENOCH_VKEY).unwrap();
        let note = Note::parse(format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}").as_bytes()).unwrap();
        assert_eq!(note.text, TEXT);
        assert_eq!(note.signatures.len(), 2);
        let both = [peter.clone(), enoch.clone()];
        assert_eq!(note.verify(&both).unwrap().len(), 2);
        // Enoch's signature is ignored when only Peter is trusted, and the other way round.
        assert_eq!(
            note.verify(std::slice::from_ref(&peter)).unwrap(),
            vec![&peter]
        );
        assert_eq!(
            note.verify(std::slice::from_ref(&enoch)).unwrap(),
            vec![&enoch]
        );
        assert!(matches!(note.verify(&[]), Err(NoteError::Untrusted { .. })));
    }

    #[test]
    fn a_bad_trusted_signature_rejects_the_note() {
        let peter = NoteVerifier::parse(PETER_VKEY).unwrap();
        let mut bad = PETER_SIG.to_owned();
        bad.replace_range(60..64, "ABCD");
        let note = Note::parse(format!("{TEXT}\n{bad}").as_bytes()).unwrap();
        assert!(matches!(
            note.verify(std::slice::from_ref(&peter)),
            Err(NoteError::BadSignature { .. })
        ));
        let altered = TEXT.replace("problem", "problems");
        let note = Note::parse(format!("{altered}\n{PETER_SIG}").as_bytes()).unwrap();
        assert!(note.verify(&[peter]).is_err());
    }

    #[test]
    fn malformed_notes_are_refused() {
        for bad in [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", PETER_SIG.trim_end()),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!(
                "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
            ),
            format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
        ] {
            assert!(Note::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(Note::parse(b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n").is_err());
        // Found by the fuzzer: two padded base64 blocks back to back decode, but are not the
        // one spelling of those bytes.
        assert!(
            Note::parse(
                "a\n\n\u{2014} k Ykwasmoonv04oTefmaf1grrVFYoqbXjoWIHbSQk=bXjoWIHbSQk=\n".as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn mangled_keys_are_refused() {
        assert!(NoteVerifier::parse(PETER_VKEY).is_ok());
        let bytes = PETER_VKEY.as_bytes();
        for i in 0..bytes.len() {
            let mut mangled = bytes.to_vec();
            mangled[i] = mangled[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&mangled) {
                assert!(NoteVerifier::parse(s).is_err(), "{s}");
            }
        }
        assert!(NoteVerifier::parse(&PETER_VKEY[..PETER_VKEY.len() - 1]).is_err());
        assert!(NoteSigner::parse(&PETER_SKEY.replace("c74f20a3", "c74f20a4")).is_err());
        assert!(NoteSigner::generate("has space").is_err());
        assert!(NoteSigner::generate("has+plus").is_err());
    }

    #[test]
    fn generated_keys_round_trip() {
        let signer = NoteSigner::generate("example.com/log").unwrap();
        let again = NoteSigner::parse(&signer.to_skey().unwrap()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        let note = signer.sign("hello\n").unwrap();
        let parsed = Note::parse(note.to_text().as_bytes()).unwrap();
        assert_eq!(parsed, note);
        assert_eq!(parsed.verify(&[again.verifier()]).unwrap().len(), 1);
    }
}
