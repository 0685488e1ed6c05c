//! Witness cosignatures: C2SP `tlog-cosignature` v1 (Ed25519, signature type 0x04).
//!
//! A witness that has checked a checkpoint is consistent with the largest one it saw for the
//! same log signs
//!
//! ```text
//! cosignature/v1
//! time <seconds since the epoch>
//! <the checkpoint's text: origin, size, root hash, any extension lines>
//! ```
//!
//! and adds the signature to the checkpoint's note as `— <name> base64(key ID ‖ time (8 bytes,
//! big-endian) ‖ Ed25519 signature)`. The key ID is SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[..4], so
//! a cosigner's key can never be taken for a log's (0x01), and the reverse.

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use data_encoding::BASE64;
use zeroize::Zeroizing;

use crate::note::{
    Note, NoteError, NoteSignature, check_name, check_text, decode_base64, parse_key_id,
    typed_key_id,
};

/// The signature type of a cosignature/v1 key.
pub const COSIGNATURE_TYPE: u8 = 0x04;
/// The largest timestamp a cosignature may carry (2^63 − 1).
pub const MAX_TIME: u64 = i64::MAX.unsigned_abs();
/// A cosignature's length after the key ID: time (8) and Ed25519 signature (64).
const COSIGNATURE_LEN: usize = 72;

/// The message a cosigner signs for `checkpoint` (its text, ending in a newline) at `time`.
pub fn message(checkpoint: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{checkpoint}")
}

/// A witness's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl std::fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl CosignatureVerifier {
    /// The cosigner `name` with Ed25519 key `public_key`.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: typed_key_id(name, COSIGNATURE_TYPE, &public_key),
            public_key,
        })
    }

    /// Parse `<name>+<key ID>+<base64(0x04 ‖ key)>`; the key ID must match.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.trim_end_matches('\n').splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected <name>+<key ID>+<key>"));
        };
        let id = parse_key_id(id)?;
        let raw = decode_base64(key).ok_or(NoteError::MalformedKey("the key is not base64"))?;
        let public_key = match raw.split_first() {
            Some((&COSIGNATURE_TYPE, key)) => <[u8; 32]>::try_from(key)
                .map_err(|_| NoteError::MalformedKey("an Ed25519 key is 32 bytes"))?,
            _ => {
                return Err(NoteError::MalformedKey(
                    "not a cosignature/v1 key (type 0x04)",
                ));
            }
        };
        let verifier = Self::new(name, public_key)?;
        if verifier.key_id != id {
            return Err(NoteError::MalformedKey("the key ID does not match the key"));
        }
        Ok(verifier)
    }

    /// `<name>+<key ID>+<base64(0x04 ‖ key)>`.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![COSIGNATURE_TYPE];
        raw.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(&raw))
    }

    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Whether `signature` is this cosigner's over `checkpoint`; its time if so.
    pub fn verify(&self, checkpoint: &str, signature: &NoteSignature) -> Option<u64> {
        if signature.name != self.name || signature.key_id != self.key_id {
            return None;
        }
        let (time, sig) = signature.signature.split_at_checked(8)?;
        if sig.len() != 64 {
            return None;
        }
        let time = u64::from_be_bytes(<[u8; 8]>::try_from(time).ok()?);
        if time > MAX_TIME {
            return None;
        }
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message(checkpoint, time).as_bytes(), sig)
            .ok()
            .map(|()| time)
    }
}

/// The cosignatures on `note` by `witnesses`: each witness's name and time, once. A signature
/// that claims a witness's name and key ID but does not verify is an error (as signed-note
/// requires of a known key); signatures by others are ignored.
pub fn cosignatures(
    note: &Note,
    witnesses: &[CosignatureVerifier],
) -> Result<Vec<(String, u64)>, NoteError> {
    let mut found: Vec<(String, u64)> = Vec::new();
    for sig in &note.signatures {
        let Some(witness) = witnesses
            .iter()
            .find(|w| w.name == sig.name && w.key_id == sig.key_id)
        else {
            continue;
        };
        let Some(time) = witness.verify(&note.text, sig) else {
            return Err(NoteError::BadSignature {
                name: sig.name.clone(),
                key_id: sig.key_id,
            });
        };
        if !found.iter().any(|(n, _)| n == &witness.name) {
            found.push((witness.name.clone(), time));
        }
    }
    Ok(found)
}

/// A witness's private key.
pub struct Cosigner {
    name: String,
    key_id: u32,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Cosigner {
    /// A fresh random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = Ed25519KeyPair::generate().map_err(|_| NoteError::Key("generation failed"))?;
        Ok(Self::from_key(name, key))
    }

    /// A key from its 32-byte seed.
    pub fn from_seed(name: &str, seed: &[u8]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| NoteError::MalformedKey("not a usable Ed25519 seed"))?;
        Ok(Self::from_key(name, key))
    }

    /// Parse `PRIVATE+KEY+<name>+<key ID>+<base64(0x04 ‖ seed)>`.
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
        let id = parse_key_id(id)?;
        let raw = Zeroizing::new(
            decode_base64(key).ok_or(NoteError::MalformedKey("the key is not base64"))?,
        );
        let seed = match raw.split_first() {
            Some((&COSIGNATURE_TYPE, seed)) if seed.len() == 32 => seed,
            _ => {
                return Err(NoteError::MalformedKey(
                    "not a 32-byte cosignature/v1 seed (type 0x04)",
                ));
            }
        };
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id != id {
            return Err(NoteError::MalformedKey("the key ID does not match the key"));
        }
        Ok(signer)
    }

    /// `PRIVATE+KEY+<name>+<key ID>+<base64(0x04 ‖ seed)>`, zeroized on drop.
    pub fn to_skey(&self) -> Result<Zeroizing<String>, NoteError> {
        let seed = self
            .key
            .seed()
            .and_then(|s| s.as_be_bytes())
            .map_err(|_| NoteError::Key("the seed cannot be exported"))?;
        let mut raw = Zeroizing::new(vec![COSIGNATURE_TYPE]);
        raw.extend_from_slice(seed.as_ref());
        Ok(Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(&raw)
        )))
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(self.key.public_key().as_ref());
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key,
        }
    }

    /// Cosign `checkpoint` (its text, ending in a newline) at `time`.
    pub fn cosign(&self, checkpoint: &str, time: u64) -> Result<NoteSignature, NoteError> {
        check_text(checkpoint)?;
        if time == 0 || time > MAX_TIME {
            return Err(NoteError::Key("a cosignature's time is 1 to 2^63-1"));
        }
        let sig = self
            .key
            .try_sign(message(checkpoint, time).as_bytes())
            .map_err(|_| NoteError::Key("signing failed"))?;
        let mut signature = time.to_be_bytes().to_vec();
        signature.extend_from_slice(sig.as_ref());
        debug_assert_eq!(signature.len(), COSIGNATURE_LEN);
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature,
        })
    }

    fn from_key(name: &str, key: Ed25519KeyPair) -> Self {
        let key_id = typed_key_id(name, COSIGNATURE_TYPE, key.public_key().as_ref());
        Self {
            name: name.to_owned(),
            key_id,
            key,
        }
    }
}

/// The most witnesses a policy names.
pub const MAX_WITNESSES: usize = 32;

/// How many of which witnesses must have cosigned a checkpoint before it is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessPolicy {
    witnesses: Vec<CosignatureVerifier>,
    required: usize,
}

/// Why a checkpoint's cosignatures were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The policy itself is unusable.
    #[error("witness policy: {0}")]
    Policy(String),
    /// The note does not parse, or a named witness's signature does not verify.
    #[error("the checkpoint's cosignatures: {0}")]
    Note(#[from] NoteError),
    /// Too few of the named witnesses cosigned.
    #[error(
        "the checkpoint is cosigned by {cosigned} of the {required} witnesses required \
         (cosigned by: {names}; named: {named})"
    )]
    TooFew {
        /// How many cosigned.
        cosigned: usize,
        /// How many must.
        required: usize,
        /// Who did.
        names: String,
        /// Who may.
        named: String,
    },
}

impl WitnessPolicy {
    /// No witness required: the log's own signature is believed alone.
    pub fn none() -> Self {
        Self::default()
    }

    /// `required` of `witnesses`: each named once and with a key of its own, at most
    /// [`MAX_WITNESSES`], `required` at least 1 when witnesses are named and at most their
    /// number, and more than half of them (see [`WitnessPolicy::allowing_minority`]).
    pub fn new(witnesses: Vec<CosignatureVerifier>, required: usize) -> Result<Self, WitnessError> {
        let policy = Self::allowing_minority(witnesses, required)?;
        if policy.required > 0 && policy.required * 2 <= policy.witnesses.len() {
            return Err(WitnessError::Policy(format!(
                "{} of {} witnesses is not a majority: a log could have one history cosigned by \
                 some of them and another by the others; require at least {}, or allow a \
                 minority by name",
                policy.required,
                policy.witnesses.len(),
                policy.witnesses.len() / 2 + 1
            )));
        }
        Ok(policy)
    }

    /// Like [`WitnessPolicy::new`], but `required` may be half the witnesses or fewer. Two
    /// disjoint sets of `required` witnesses can then each cosign a different history of one
    /// log, so a broker that picks whom to ask can show two parties two logs: only for
    /// witnesses trusted to gossip, or for the broker's own availability setting.
    pub fn allowing_minority(
        witnesses: Vec<CosignatureVerifier>,
        required: usize,
    ) -> Result<Self, WitnessError> {
        if witnesses.len() > MAX_WITNESSES {
            return Err(WitnessError::Policy(format!(
                "{} witnesses named: at most {MAX_WITNESSES}",
                witnesses.len()
            )));
        }
        for (i, w) in witnesses.iter().enumerate() {
            if let Some(other) = witnesses
                .iter()
                .take(i)
                .find(|o| o.name == w.name || o.public_key == w.public_key)
            {
                return Err(WitnessError::Policy(format!(
                    "the witnesses {} and {} are one (the same name or the same key): each \
                     counts once",
                    other.name, w.name
                )));
            }
        }
        if required > witnesses.len() {
            return Err(WitnessError::Policy(format!(
                "{required} witnesses required, but only {} named",
                witnesses.len()
            )));
        }
        if required == 0 && !witnesses.is_empty() {
            return Err(WitnessError::Policy(
                "witnesses are named but none is required: require at least 1".into(),
            ));
        }
        Ok(Self {
            witnesses,
            required,
        })
    }

    /// The policy of verifier keys (`<name>+<key ID>+<base64(0x04 ‖ key)>`): `required` of them
    /// (all when `None`), a minority only if `allow_minority`.
    pub fn from_vkeys(
        vkeys: &[String],
        required: Option<usize>,
        allow_minority: bool,
    ) -> Result<Self, WitnessError> {
        let witnesses = vkeys
            .iter()
            .map(|v| {
                CosignatureVerifier::parse(v.trim())
                    .map_err(|e| WitnessError::Policy(format!("witness key {v:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let required = required.unwrap_or(witnesses.len());
        if allow_minority {
            Self::allowing_minority(witnesses, required)
        } else {
            Self::new(witnesses, required)
        }
    }

    /// The witnesses named.
    pub fn witnesses(&self) -> &[CosignatureVerifier] {
        &self.witnesses
    }

    /// How many must cosign.
    pub fn required(&self) -> usize {
        self.required
    }

    /// Whether any cosignature is required.
    pub fn is_required(&self) -> bool {
        self.required > 0
    }

    /// Check the signed checkpoint `note`: at least `required` of the named witnesses cosigned
    /// its text, and no cosignature claiming a named witness fails to verify. Returns each
    /// cosigning witness's name and cosignature time.
    pub fn check(&self, note: &str) -> Result<Vec<(String, u64)>, WitnessError> {
        if !self.is_required() {
            return Ok(Vec::new());
        }
        let note = Note::parse(note.as_bytes())?;
        let found = cosignatures(&note, &self.witnesses)?;
        if found.len() < self.required {
            let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
            let named: Vec<&str> = self.witnesses.iter().map(|w| w.name()).collect();
            return Err(WitnessError::TooFew {
                cosigned: found.len(),
                required: self.required,
                names: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
                named: named.join(", "),
            });
        }
        Ok(found)
    }
}

/// `note` with `cosignatures` added after its own signatures (a signature already on it is not
/// added twice).
pub fn add_cosignatures(note: &str, cosignatures: &[NoteSignature]) -> Result<String, NoteError> {
    let mut parsed = Note::parse(note.as_bytes())?;
    for sig in cosignatures {
        if !parsed.signatures.contains(sig) {
            if parsed.signatures.len() == crate::note::MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            parsed.signatures.push(sig.clone());
        }
    }
    Ok(parsed.to_text())
}
