//! What the log records: image and policy registrations, sealed models, release-policy changes,
//! every key-release and lease-renewal decision, and revocations.
//!
//! An entry is a CBOR map in the core deterministic encoding of RFC 8949 section 4.2.1 (shortest
//! lengths, definite lengths, keys sorted by their encoded bytes, absent rather than null
//! optional fields). [`LogEntry::decode`] accepts only that encoding, so an entry has exactly one
//! byte string: the bytes that are hashed into the tree are the bytes stored, and decoding never
//! changes them.
//!
//! ```text
//! image-registration: { "v": 1, "type": "image-registration", "time": ms, "model_id": text,
//!     "model_digest": bytes(48), "policy_version": uint, "pcrs": { uint: bytes(48) },
//!     "approvers": [text] }
//! key-release: { "v": 1, "type": "key-release", "time": ms, "outcome": "released" | "denied",
//!     "reason": text, "model_id": text, "key_id": text, "policy_version": uint,
//!     ? "module_id": text, ? "pcrs": { uint: bytes(48) }, ? "region": text,
//!     ? "document_sha384": bytes(48), ? "nonce": bytes, ? "lease_ms": uint }
//! lease-renewal: the fields of key-release, with "type": "lease-renewal"; a renewal granted
//!     carries "lease_ms"
//! revocation: { "v": 1, "type": "revocation", "time": ms, "target": "model" | "image" |
//!     "module" | "instance", "value": text, "reason": text }
//! model-sealed: { "v": 1, "type": "model-sealed", "time": ms, "model_id": text,
//!     "key_id": text, "model_digest": bytes(48), "model_len": uint,
//!     ? "wrapped_key_sha384": bytes(48) }
//! denial-summary: { "v": 1, "type": "denial-summary", "time": ms, "since": ms,
//!     "reason": text, "count": uint }
//! policy-change: { "v": 1, "type": "policy-change", "time": ms, "policy_version": uint,
//!     "policy_sha384": bytes(48), "models": [text], ? "approvers": [text],
//!     ? "approvals": [bytes], ? "required": uint, ? "eligible": [text] }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use attest::{PcrIndex, PcrValue, Timestamp};
use cbor::{Fields, Map, Profile, Reader, Value};

use crate::hash::Hash;
use crate::store::MAX_STORED_ENTRY_LEN;

/// The entry format version.
pub const ENTRY_VERSION: u64 = 1;
/// The longest text field, in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// The most approvers a registration lists.
pub const MAX_APPROVERS: usize = 32;
/// The most models a policy change lists.
pub const MAX_POLICY_MODELS: usize = 256;
/// The longest nonce, in bytes (the NSM accepts up to 512).
pub const MAX_NONCE_LEN: usize = 512;

/// Why an entry was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The bytes are not an entry: not one map in the deterministic encoding, too large, or a
    /// field missing, unknown, repeated or of the wrong type (the error names it).
    #[error("not an entry: {0}")]
    Malformed(#[from] cbor::Error),
    /// A field is missing, unknown, of the wrong type or out of range.
    #[error("field {field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The entry is valid but not in the one canonical encoding.
    #[error("the entry is not in canonical CBOR encoding")]
    NotCanonical,
}

fn field(field: &'static str, problem: impl Into<String>) -> EntryError {
    EntryError::Field {
        field,
        problem: problem.into(),
    }
}

/// An approved enclave image and the policy it runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRegistration {
    /// When it was registered.
    pub time: Timestamp,
    /// The model the image serves.
    pub model_id: String,
    /// SHA-384 of the model's plaintext.
    pub model_digest: [u8; 48],
    /// The release-policy version this registration belongs to.
    pub policy_version: u64,
    /// The measurements an enclave must present.
    pub pcrs: BTreeMap<PcrIndex, PcrValue>,
    /// Who approved it.
    pub approvers: Vec<String>,
}

/// Whether a key was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key was wrapped to the enclave.
    Released,
    /// The request was refused.
    Denied,
}

impl Outcome {
    /// `released` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Denied => "denied",
        }
    }
}

/// A key-release decision, recorded before the answer is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRelease {
    /// When it was decided.
    pub time: Timestamp,
    /// Released or denied.
    pub outcome: Outcome,
    /// A short machine-readable reason (`ok`, `pcr_mismatch`, …).
    pub reason: String,
    /// The model asked for.
    pub model_id: String,
    /// The key asked for.
    pub key_id: String,
    /// The policy version that decided.
    pub policy_version: u64,
    /// The enclave's module id, if the document could be read.
    pub module_id: Option<String>,
    /// The enclave's measurements, if the document could be read.
    pub pcrs: BTreeMap<PcrIndex, PcrValue>,
    /// The AWS region of the attesting instance, if known.
    pub region: Option<String>,
    /// SHA-384 of the attestation document, if one was presented.
    pub document_sha384: Option<[u8; 48]>,
    /// The challenge nonce, if one was presented.
    pub nonce: Option<Vec<u8>>,
    /// The lease granted, in milliseconds: a release or renewal granted with one. Absent in
    /// denials and in releases logged before leases existed.
    pub lease_ms: Option<u64>,
}

/// What a revocation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RevocationTarget {
    /// A model id: no enclave gets or keeps its key.
    Model,
    /// An image measurement (PCR0, 96 hex digits): no enclave of that image gets or keeps a key.
    Image,
    /// One enclave launch, by the module id its documents carry (`i-…-enc…`).
    Module,
    /// Every enclave of one parent instance, by its instance id (`i-…`, the module id's prefix).
    Instance,
}

impl RevocationTarget {
    /// `model`, `image` or `module`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Image => "image",
            Self::Module => "module",
            Self::Instance => "instance",
        }
    }

    /// The target a name names.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "model" => Some(Self::Model),
            "image" => Some(Self::Image),
            "module" => Some(Self::Module),
            "instance" => Some(Self::Instance),
            _ => None,
        }
    }
}

/// A revocation: from now on, no release or renewal for what it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When it was logged.
    pub time: Timestamp,
    /// What kind of thing it names.
    pub target: RevocationTarget,
    /// The model id, PCR0 (lowercase hex) or module id.
    pub value: String,
    /// Why, as the operator gave it.
    pub reason: String,
}

/// A model sealed under a new data key: what a later release of that key unlocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSealed {
    /// When it was sealed.
    pub time: Timestamp,
    /// The model.
    pub model_id: String,
    /// The data key it was sealed under.
    pub key_id: String,
    /// SHA-384 of the model's plaintext.
    pub model_digest: [u8; 48],
    /// The plaintext's length in bytes.
    pub model_len: u64,
    /// SHA-384 of the data key as wrapped under the KEK: binds the broker's stored record of
    /// this model to this entry, so a wrapped key moved to another model's record is refused.
    pub wrapped_key_sha384: Option<[u8; 48]>,
}

/// Denials that were counted rather than logged one by one: those a peer can cause without an
/// authentic attestation document, beyond the number logged individually for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenialSummary {
    /// The end of the period counted.
    pub time: Timestamp,
    /// The start of the period counted.
    pub since: Timestamp,
    /// The denials' reason (`unknown_model`, `busy`, …).
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// A new release policy taking effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    /// When it took effect.
    pub time: Timestamp,
    /// The policy's version.
    pub policy_version: u64,
    /// SHA-384 of the policy file's bytes.
    pub policy_sha384: [u8; 48],
    /// The models it covers.
    pub models: Vec<String>,
    /// Who approved it (empty when the broker runs without approvals).
    pub approvers: Vec<String>,
    /// The approvals counted, each as the approval's own bytes (its signed statement and its
    /// certificate), so that anyone can check them again against the national root.
    pub approvals: Vec<Vec<u8>>,
    /// The rule in force: how many approvals were required (absent without approvals).
    pub required: Option<u64>,
    /// The rule in force: the names whose approvals count.
    pub eligible: Vec<String>,
}

/// A typed log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// An image and policy registration.
    ImageRegistration(ImageRegistration),
    /// A key-release decision.
    KeyRelease(KeyRelease),
    /// A lease-renewal decision: the fields of a release, for a key the enclave already holds.
    LeaseRenewal(KeyRelease),
    /// A revocation.
    Revocation(Revocation),
    /// A model sealed under a new data key.
    ModelSealed(ModelSealed),
    /// A release policy taking effect.
    PolicyChange(PolicyChange),
    /// Denials counted over a period rather than logged one by one.
    DenialSummary(DenialSummary),
}

impl Entry {
    /// The entry's `type`: `key-release`, `lease-renewal`, `revocation`, and so on.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ImageRegistration(_) => "image-registration",
            Self::KeyRelease(_) => "key-release",
            Self::LeaseRenewal(_) => "lease-renewal",
            Self::Revocation(_) => "revocation",
            Self::ModelSealed(_) => "model-sealed",
            Self::PolicyChange(_) => "policy-change",
            Self::DenialSummary(_) => "denial-summary",
        }
    }

    /// The canonical encoding. Fails if a field is out of range (an over-long text, a release
    /// without the evidence it was made on).
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        self.validate()?;
        let map = Map::new().with("v", ENTRY_VERSION);
        let map = match self {
            Self::ImageRegistration(r) => map
                .with("type", "image-registration")
                .with("time", millis(r.time))
                .with("model_id", &r.model_id)
                .with("model_digest", &r.model_digest)
                .with("policy_version", r.policy_version)
                .with("pcrs", pcr_map(&r.pcrs))
                .with("approvers", texts(&r.approvers)),
            Self::KeyRelease(k) | Self::LeaseRenewal(k) => {
                let kind = match self {
                    Self::LeaseRenewal(_) => "lease-renewal",
                    _ => "key-release",
                };
                let mut map = map
                    .with("type", kind)
                    .with("time", millis(k.time))
                    .with("outcome", k.outcome.as_str())
                    .with("reason", &k.reason)
                    .with("model_id", &k.model_id)
                    .with("key_id", &k.key_id)
                    .with("policy_version", k.policy_version);
                if let Some(m) = &k.module_id {
                    map.insert("module_id", m);
                }
                if !k.pcrs.is_empty() {
                    map.insert("pcrs", pcr_map(&k.pcrs));
                }
                if let Some(r) = &k.region {
                    map.insert("region", r);
                }
                if let Some(d) = &k.document_sha384 {
                    map.insert("document_sha384", d);
                }
                if let Some(n) = &k.nonce {
                    map.insert("nonce", n);
                }
                if let Some(l) = k.lease_ms {
                    map.insert("lease_ms", l);
                }
                map
            }
            Self::Revocation(r) => map
                .with("type", "revocation")
                .with("time", millis(r.time))
                .with("target", r.target.as_str())
                .with("value", &r.value)
                .with("reason", &r.reason),
            Self::ModelSealed(m) => {
                let mut map = map
                    .with("type", "model-sealed")
                    .with("time", millis(m.time))
                    .with("model_id", &m.model_id)
                    .with("key_id", &m.key_id)
                    .with("model_digest", &m.model_digest)
                    .with("model_len", m.model_len);
                if let Some(w) = &m.wrapped_key_sha384 {
                    map.insert("wrapped_key_sha384", w);
                }
                map
            }
            Self::DenialSummary(d) => map
                .with("type", "denial-summary")
                .with("time", millis(d.time))
                .with("since", millis(d.since))
                .with("reason", &d.reason)
                .with("count", d.count),
            Self::PolicyChange(p) => {
                let mut map = map
                    .with("type", "policy-change")
                    .with("time", millis(p.time))
                    .with("policy_version", p.policy_version)
                    .with("policy_sha384", &p.policy_sha384)
                    .with("models", texts(&p.models));
                if !p.approvers.is_empty() {
                    map.insert("approvers", texts(&p.approvers));
                }
                if !p.approvals.is_empty() {
                    map.insert(
                        "approvals",
                        Value::Array(
                            p.approvals
                                .iter()
                                .map(|a| Value::from(a.as_slice()))
                                .collect(),
                        ),
                    );
                }
                if let Some(required) = p.required {
                    map.insert("required", required);
                }
                if !p.eligible.is_empty() {
                    map.insert("eligible", texts(&p.eligible));
                }
                map
            }
        };
        Ok(map.encode())
    }

    fn validate(&self) -> Result<(), EntryError> {
        match self {
            Self::ImageRegistration(r) => {
                check_text("model_id", &r.model_id)?;
                if r.pcrs.is_empty() {
                    return Err(field("pcrs", "a registration names at least one PCR"));
                }
                if r.approvers.is_empty() || r.approvers.len() > MAX_APPROVERS {
                    return Err(field(
                        "approvers",
                        format!("1 to {MAX_APPROVERS} approvers"),
                    ));
                }
                let mut seen = BTreeSet::new();
                for a in &r.approvers {
                    check_text("approvers", a)?;
                    if !seen.insert(a) {
                        return Err(field("approvers", format!("{a:?} is listed twice")));
                    }
                }
            }
            Self::KeyRelease(k) | Self::LeaseRenewal(k) => {
                check_text("reason", &k.reason)?;
                check_text("model_id", &k.model_id)?;
                check_text("key_id", &k.key_id)?;
                if let Some(m) = &k.module_id {
                    check_text("module_id", m)?;
                }
                if let Some(r) = &k.region {
                    check_text("region", r)?;
                }
                if let Some(n) = &k.nonce
                    && (n.is_empty() || n.len() > MAX_NONCE_LEN)
                {
                    return Err(field("nonce", format!("1 to {MAX_NONCE_LEN} bytes")));
                }
                if k.outcome == Outcome::Released {
                    let missing = [
                        ("module_id", k.module_id.is_none()),
                        ("pcrs", k.pcrs.is_empty()),
                        ("document_sha384", k.document_sha384.is_none()),
                        ("nonce", k.nonce.is_none()),
                    ];
                    if let Some((name, _)) = missing.iter().find(|(_, m)| *m) {
                        return Err(field(name, "a release records the evidence it was made on"));
                    }
                }
                let renewal = matches!(self, Self::LeaseRenewal(_));
                match (k.outcome, k.lease_ms) {
                    (Outcome::Denied, Some(_)) => {
                        return Err(field("lease_ms", "a denial grants no lease"));
                    }
                    (Outcome::Released, None) if renewal => {
                        return Err(field("lease_ms", "a renewal granted records its lease"));
                    }
                    (_, Some(0)) => return Err(field("lease_ms", "a lease is longer than 0")),
                    _ => {}
                }
            }
            Self::Revocation(r) => {
                check_text("value", &r.value)?;
                check_text("reason", &r.reason)?;
            }
            Self::ModelSealed(m) => {
                check_text("model_id", &m.model_id)?;
                check_text("key_id", &m.key_id)?;
            }
            Self::DenialSummary(d) => {
                check_text("reason", &d.reason)?;
                if d.count == 0 {
                    return Err(field("count", "a summary counts at least one denial"));
                }
                if d.since > d.time {
                    return Err(field("since", "the period starts before it ends"));
                }
            }
            Self::PolicyChange(p) => {
                if p.models.len() > MAX_POLICY_MODELS {
                    return Err(field(
                        "models",
                        format!("at most {MAX_POLICY_MODELS} models"),
                    ));
                }
                let mut seen = BTreeSet::new();
                for m in &p.models {
                    check_text("models", m)?;
                    if !seen.insert(m) {
                        return Err(field("models", format!("{m:?} is listed twice")));
                    }
                }
                if p.approvers.len() > MAX_APPROVERS {
                    return Err(field("approvers", format!("at most {MAX_APPROVERS}")));
                }
                if p.approvals.len() > MAX_APPROVERS || p.approvals.iter().any(Vec::is_empty) {
                    return Err(field(
                        "approvals",
                        format!("at most {MAX_APPROVERS}, none empty"),
                    ));
                }
                if p.eligible.len() > MAX_APPROVERS
                    || p.eligible
                        .iter()
                        .any(|e| check_text("eligible", e).is_err())
                {
                    return Err(field("eligible", format!("at most {MAX_APPROVERS} names")));
                }
                let mut seen = BTreeSet::new();
                for a in &p.approvers {
                    check_text("approvers", a)?;
                    if !seen.insert(a) {
                        return Err(field("approvers", format!("{a:?} is listed twice")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An entry together with its one canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    bytes: Vec<u8>,
    entry: Entry,
}

impl LogEntry {
    /// Encode `entry`.
    pub fn new(entry: Entry) -> Result<Self, EntryError> {
        Ok(Self {
            bytes: entry.encode()?,
            entry,
        })
    }

    /// Decode stored bytes. Anything but the canonical encoding of a valid entry is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let entry = Reader::read_all(
            bytes,
            MAX_STORED_ENTRY_LEN,
            Profile::Deterministic,
            read_entry,
        )?;
        // The reader accepts only the deterministic encoding; encoding again also checks what
        // `encode` requires of the values (bounds, a release's evidence).
        if entry.encode()? != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            entry,
        })
    }

    /// The canonical bytes: what the log stores and hashes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The typed entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The RFC 9162 leaf hash of the bytes.
    pub fn leaf_hash(&self) -> Hash {
        Hash::leaf(&self.bytes)
    }
}

/// Every field of every entry type.
const FIELDS: [&str; 27] = [
    "v",
    "type",
    "time",
    "model_id",
    "model_digest",
    "policy_version",
    "pcrs",
    "approvers",
    "outcome",
    "reason",
    "key_id",
    "module_id",
    "region",
    "document_sha384",
    "nonce",
    "model_len",
    "wrapped_key_sha384",
    "since",
    "count",
    "policy_sha384",
    "models",
    "lease_ms",
    "target",
    "value",
    "approvals",
    "required",
    "eligible",
];

/// A field's value, read by the type its name gives it.
enum Item {
    BytesList(Vec<Vec<u8>>),
    Uint(u64),
    Text(String),
    Digest([u8; 48]),
    Bytes(Vec<u8>),
    Pcrs(BTreeMap<PcrIndex, PcrValue>),
    Texts(Vec<String>),
}

fn read_item(key: &'static str, r: &mut Reader<'_>) -> Result<Item, EntryError> {
    let start = r.offset();
    Ok(match key {
        // `v` sorts before every other key (all longer than one byte), so an entry of another
        // version is refused as such before any of its fields is judged by this version's schema.
        "v" => match r.uint()? {
            ENTRY_VERSION => Item::Uint(ENTRY_VERSION),
            _ => return Err(field("v", format!("only version {ENTRY_VERSION} is known"))),
        },
        "time" | "policy_version" | "model_len" | "since" | "count" | "lease_ms" | "required" => {
            Item::Uint(r.uint()?)
        }
        "model_digest" | "document_sha384" | "wrapped_key_sha384" | "policy_sha384" => {
            let bytes = r.bytes()?;
            Item::Digest(
                <[u8; 48]>::try_from(bytes)
                    .map_err(|_| r.invalid(start, "a SHA-384 digest is 48 bytes"))?,
            )
        }
        "nonce" => Item::Bytes(r.bytes()?.to_vec()),
        "pcrs" => Item::Pcrs(read_pcrs(r)?),
        "approvals" => {
            let count = r.array(u64::try_from(MAX_APPROVERS).unwrap_or(u64::MAX))?;
            let mut all = Vec::with_capacity(count);
            for _ in 0..count {
                all.push(r.bytes()?.to_vec());
            }
            Item::BytesList(all)
        }
        "approvers" | "models" | "eligible" => {
            let max = if key == "approvers" || key == "eligible" {
                MAX_APPROVERS
            } else {
                MAX_POLICY_MODELS
            };
            let count = r.array(u64::try_from(max).unwrap_or(u64::MAX))?;
            let mut texts = Vec::with_capacity(count);
            for _ in 0..count {
                texts.push(read_text(key, r)?);
            }
            Item::Texts(texts)
        }
        _ => Item::Text(read_text(key, r)?),
    })
}

fn read_text(key: &'static str, r: &mut Reader<'_>) -> Result<String, EntryError> {
    let text = r.text()?;
    check_text(key, text)?;
    Ok(text.to_owned())
}

fn read_pcrs(r: &mut Reader<'_>) -> Result<BTreeMap<PcrIndex, PcrValue>, EntryError> {
    let mut map = r.map()?;
    let mut pcrs = BTreeMap::new();
    while let Some(index) = map.uint_key()? {
        let index = PcrIndex::try_from(index)
            .map_err(|_| cbor::Error::invalid("pcrs", "a PCR index is 0 to 31"))?;
        let value = map.value();
        let start = value.offset();
        let pcr = PcrValue::try_from(value.bytes()?)
            .map_err(|_| value.invalid(start, "a PCR value is 48 bytes"))?;
        pcrs.insert(index, pcr);
    }
    Ok(pcrs)
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, EntryError> {
    let mut f = Fields::read(r, &FIELDS, read_item)?;
    if as_uint("v", f.need("v")?)? != ENTRY_VERSION {
        return Err(field("v", format!("only version {ENTRY_VERSION} is known")));
    }
    let kind = as_text("type", f.need("type")?)?;
    let entry = match kind.as_str() {
        "image-registration" => Entry::ImageRegistration(ImageRegistration {
            time: time(&mut f, "time")?,
            model_id: as_text("model_id", f.need("model_id")?)?,
            model_digest: as_digest("model_digest", f.need("model_digest")?)?,
            policy_version: as_uint("policy_version", f.need("policy_version")?)?,
            pcrs: as_pcrs(f.need("pcrs")?)?,
            approvers: as_texts("approvers", f.need("approvers")?)?,
        }),
        "key-release" | "lease-renewal" => {
            let k = KeyRelease {
                time: time(&mut f, "time")?,
                outcome: match as_text("outcome", f.need("outcome")?)?.as_str() {
                    "released" => Outcome::Released,
                    "denied" => Outcome::Denied,
                    other => return Err(field("outcome", format!("unknown outcome {other:?}"))),
                },
                reason: as_text("reason", f.need("reason")?)?,
                model_id: as_text("model_id", f.need("model_id")?)?,
                key_id: as_text("key_id", f.need("key_id")?)?,
                policy_version: as_uint("policy_version", f.need("policy_version")?)?,
                module_id: f
                    .take("module_id")
                    .map(|i| as_text("module_id", i))
                    .transpose()?,
                pcrs: f.take("pcrs").map(as_pcrs).transpose()?.unwrap_or_default(),
                region: f.take("region").map(|i| as_text("region", i)).transpose()?,
                document_sha384: f
                    .take("document_sha384")
                    .map(|i| as_digest("document_sha384", i))
                    .transpose()?,
                nonce: f.take("nonce").map(as_bytes).transpose()?,
                lease_ms: f
                    .take("lease_ms")
                    .map(|i| as_uint("lease_ms", i))
                    .transpose()?,
            };
            if kind == "lease-renewal" {
                Entry::LeaseRenewal(k)
            } else {
                Entry::KeyRelease(k)
            }
        }
        "revocation" => Entry::Revocation(Revocation {
            time: time(&mut f, "time")?,
            target: {
                let text = as_text("target", f.need("target")?)?;
                RevocationTarget::parse(&text)
                    .ok_or_else(|| field("target", format!("unknown target {text:?}")))?
            },
            value: as_text("value", f.need("value")?)?,
            reason: as_text("reason", f.need("reason")?)?,
        }),
        "model-sealed" => Entry::ModelSealed(ModelSealed {
            time: time(&mut f, "time")?,
            model_id: as_text("model_id", f.need("model_id")?)?,
            key_id: as_text("key_id", f.need("key_id")?)?,
            model_digest: as_digest("model_digest", f.need("model_digest")?)?,
            model_len: as_uint("model_len", f.need("model_len")?)?,
            wrapped_key_sha384: f
                .take("wrapped_key_sha384")
                .map(|i| as_digest("wrapped_key_sha384", i))
                .transpose()?,
        }),
        "denial-summary" => Entry::DenialSummary(DenialSummary {
            time: time(&mut f, "time")?,
            since: time(&mut f, "since")?,
            reason: as_text("reason", f.need("reason")?)?,
            count: as_uint("count", f.need("count")?)?,
        }),
        "policy-change" => Entry::PolicyChange(PolicyChange {
            time: time(&mut f, "time")?,
            policy_version: as_uint("policy_version", f.need("policy_version")?)?,
            policy_sha384: as_digest("policy_sha384", f.need("policy_sha384")?)?,
            models: as_texts("models", f.need("models")?)?,
            approvers: f
                .take("approvers")
                .map(|i| as_texts("approvers", i))
                .transpose()?
                .unwrap_or_default(),
            approvals: match f.take("approvals") {
                None => Vec::new(),
                Some(Item::BytesList(all)) => all,
                Some(_) => return Err(field("approvals", "expected an array of bytes")),
            },
            required: f
                .take("required")
                .map(|i| as_uint("required", i))
                .transpose()?,
            eligible: f
                .take("eligible")
                .map(|i| as_texts("eligible", i))
                .transpose()?
                .unwrap_or_default(),
        }),
        other => return Err(field("type", format!("unknown entry type {other:?}"))),
    };
    f.finish()?;
    Ok(entry)
}

// Each field's item type follows from its name (`read_item`); these unwrap it.

fn time(f: &mut Fields<Item>, key: &'static str) -> Result<Timestamp, EntryError> {
    as_uint(key, f.need(key)?).map(Timestamp::from_unix_millis)
}

fn as_uint(key: &'static str, item: Item) -> Result<u64, EntryError> {
    match item {
        Item::Uint(n) => Ok(n),
        _ => Err(field(key, "expected an unsigned integer")),
    }
}

fn as_text(key: &'static str, item: Item) -> Result<String, EntryError> {
    match item {
        Item::Text(t) => Ok(t),
        _ => Err(field(key, "expected text")),
    }
}

fn as_digest(key: &'static str, item: Item) -> Result<[u8; 48], EntryError> {
    match item {
        Item::Digest(d) => Ok(d),
        _ => Err(field(key, "expected a SHA-384 digest")),
    }
}

fn as_bytes(item: Item) -> Result<Vec<u8>, EntryError> {
    match item {
        Item::Bytes(b) => Ok(b),
        _ => Err(field("nonce", "expected bytes")),
    }
}

fn as_pcrs(item: Item) -> Result<BTreeMap<PcrIndex, PcrValue>, EntryError> {
    match item {
        Item::Pcrs(p) => Ok(p),
        _ => Err(field("pcrs", "expected a map of PCRs")),
    }
}

fn as_texts(key: &'static str, item: Item) -> Result<Vec<String>, EntryError> {
    match item {
        Item::Texts(t) => Ok(t),
        _ => Err(field(key, "expected an array of text")),
    }
}

fn millis(t: Timestamp) -> u64 {
    t.unix_millis()
}

fn pcr_map(pcrs: &BTreeMap<PcrIndex, PcrValue>) -> Map<'_> {
    pcrs.iter().fold(Map::new(), |map, (i, v)| {
        map.with(u64::from(i.get()), v.as_bytes())
    })
}

fn texts(items: &[String]) -> Value<'_> {
    Value::Array(items.iter().map(Value::from).collect())
}

fn check_text(name: &'static str, value: &str) -> Result<(), EntryError> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN {
        return Err(field(name, format!("1 to {MAX_TEXT_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(field(name, "control characters are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
