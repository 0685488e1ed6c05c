//! What the log records: image and policy registrations, sealed models, release-policy changes,
//! and every key-release decision.
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
//!     ? "document_sha384": bytes(48), ? "nonce": bytes }
//! model-sealed: { "v": 1, "type": "model-sealed", "time": ms, "model_id": text,
//!     "key_id": text, "model_digest": bytes(48), "model_len": uint,
//!     ? "wrapped_key_sha384": bytes(48) }
//! denial-summary: { "v": 1, "type": "denial-summary", "time": ms, "since": ms,
//!     "reason": text, "count": uint }
//! policy-change: { "v": 1, "type": "policy-change", "time": ms, "policy_version": uint,
//!     "policy_sha384": bytes(48), "models": [text] }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use attest::{PcrIndex, PcrValue, Timestamp};
use ciborium::Value;

use crate::cbor::{encode_map, uint};
use crate::hash::Hash;
use crate::store::MAX_ENTRY_LEN;

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
    /// The bytes are not CBOR, or too large.
    #[error("not a CBOR entry: {0}")]
    Cbor(String),
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
}

/// A typed log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// An image and policy registration.
    ImageRegistration(ImageRegistration),
    /// A key-release decision.
    KeyRelease(KeyRelease),
    /// A model sealed under a new data key.
    ModelSealed(ModelSealed),
    /// A release policy taking effect.
    PolicyChange(PolicyChange),
    /// Denials counted over a period rather than logged one by one.
    DenialSummary(DenialSummary),
}

impl Entry {
    /// The canonical encoding. Fails if a field is out of range (an over-long text, a release
    /// without the evidence it was made on).
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        self.validate()?;
        let mut map: Vec<(&'static str, Value)> = vec![("v", uint(ENTRY_VERSION))];
        match self {
            Self::ImageRegistration(r) => {
                map.push(("type", text("image-registration")));
                map.push(("time", uint(millis(r.time))));
                map.push(("model_id", text(&r.model_id)));
                map.push(("model_digest", Value::Bytes(r.model_digest.to_vec())));
                map.push(("policy_version", uint(r.policy_version)));
                map.push(("pcrs", pcr_map(&r.pcrs)));
                map.push((
                    "approvers",
                    Value::Array(r.approvers.iter().map(|a| text(a)).collect()),
                ));
            }
            Self::KeyRelease(k) => {
                map.push(("type", text("key-release")));
                map.push(("time", uint(millis(k.time))));
                map.push(("outcome", text(k.outcome.as_str())));
                map.push(("reason", text(&k.reason)));
                map.push(("model_id", text(&k.model_id)));
                map.push(("key_id", text(&k.key_id)));
                map.push(("policy_version", uint(k.policy_version)));
                if let Some(m) = &k.module_id {
                    map.push(("module_id", text(m)));
                }
                if !k.pcrs.is_empty() {
                    map.push(("pcrs", pcr_map(&k.pcrs)));
                }
                if let Some(r) = &k.region {
                    map.push(("region", text(r)));
                }
                if let Some(d) = &k.document_sha384 {
                    map.push(("document_sha384", Value::Bytes(d.to_vec())));
                }
                if let Some(n) = &k.nonce {
                    map.push(("nonce", Value::Bytes(n.clone())));
                }
            }
            Self::ModelSealed(m) => {
                map.push(("type", text("model-sealed")));
                map.push(("time", uint(millis(m.time))));
                map.push(("model_id", text(&m.model_id)));
                map.push(("key_id", text(&m.key_id)));
                map.push(("model_digest", Value::Bytes(m.model_digest.to_vec())));
                map.push(("model_len", uint(m.model_len)));
                if let Some(w) = &m.wrapped_key_sha384 {
                    map.push(("wrapped_key_sha384", Value::Bytes(w.to_vec())));
                }
            }
            Self::DenialSummary(d) => {
                map.push(("type", text("denial-summary")));
                map.push(("time", uint(millis(d.time))));
                map.push(("since", uint(millis(d.since))));
                map.push(("reason", text(&d.reason)));
                map.push(("count", uint(d.count)));
            }
            Self::PolicyChange(p) => {
                map.push(("type", text("policy-change")));
                map.push(("time", uint(millis(p.time))));
                map.push(("policy_version", uint(p.policy_version)));
                map.push(("policy_sha384", Value::Bytes(p.policy_sha384.to_vec())));
                map.push((
                    "models",
                    Value::Array(p.models.iter().map(|m| text(m)).collect()),
                ));
            }
        }
        encode_map(map).map_err(EntryError::Cbor)
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
            Self::KeyRelease(k) => {
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
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(EntryError::Cbor("larger than an entry may be".into()));
        }
        let value: Value =
            ciborium::from_reader(bytes).map_err(|e| EntryError::Cbor(e.to_string()))?;
        let entry = Fields::new(value)?.into_entry()?;
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

/// The fields of an entry map, taken one by one so that unknown ones can be refused.
struct Fields(BTreeMap<String, Value>);

impl Fields {
    fn new(value: Value) -> Result<Self, EntryError> {
        let Value::Map(pairs) = value else {
            return Err(EntryError::Cbor("an entry is a map".into()));
        };
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let Value::Text(k) = k else {
                return Err(EntryError::Cbor("entry keys are text".into()));
            };
            if map.insert(k.clone(), v).is_some() {
                return Err(EntryError::Cbor(format!("key {k:?} appears twice")));
            }
        }
        Ok(Self(map))
    }

    fn take(&mut self, name: &'static str) -> Option<Value> {
        self.0.remove(name)
    }

    fn need(&mut self, name: &'static str) -> Result<Value, EntryError> {
        self.take(name).ok_or_else(|| field(name, "missing"))
    }

    fn into_entry(mut self) -> Result<Entry, EntryError> {
        if as_uint("v", self.need("v")?)? != ENTRY_VERSION {
            return Err(field("v", format!("only version {ENTRY_VERSION} is known")));
        }
        let kind = as_text("type", self.need("type")?)?;
        let entry = match kind.as_str() {
            "image-registration" => Entry::ImageRegistration(ImageRegistration {
                time: Timestamp::from_unix_millis(as_uint("time", self.need("time")?)?),
                model_id: as_text("model_id", self.need("model_id")?)?,
                model_digest: as_digest("model_digest", self.need("model_digest")?)?,
                policy_version: as_uint("policy_version", self.need("policy_version")?)?,
                pcrs: as_pcrs(self.need("pcrs")?)?,
                approvers: as_text_array("approvers", self.need("approvers")?)?,
            }),
            "key-release" => Entry::KeyRelease(KeyRelease {
                time: Timestamp::from_unix_millis(as_uint("time", self.need("time")?)?),
                outcome: match as_text("outcome", self.need("outcome")?)?.as_str() {
                    "released" => Outcome::Released,
                    "denied" => Outcome::Denied,
                    other => return Err(field("outcome", format!("unknown outcome {other:?}"))),
                },
                reason: as_text("reason", self.need("reason")?)?,
                model_id: as_text("model_id", self.need("model_id")?)?,
                key_id: as_text("key_id", self.need("key_id")?)?,
                policy_version: as_uint("policy_version", self.need("policy_version")?)?,
                module_id: self
                    .take("module_id")
                    .map(|v| as_text("module_id", v))
                    .transpose()?,
                pcrs: self
                    .take("pcrs")
                    .map(as_pcrs)
                    .transpose()?
                    .unwrap_or_default(),
                region: self
                    .take("region")
                    .map(|v| as_text("region", v))
                    .transpose()?,
                document_sha384: self
                    .take("document_sha384")
                    .map(|v| as_digest("document_sha384", v))
                    .transpose()?,
                nonce: self
                    .take("nonce")
                    .map(|v| match v {
                        Value::Bytes(b) => Ok(b),
                        _ => Err(field("nonce", "expected bytes")),
                    })
                    .transpose()?,
            }),
            "model-sealed" => Entry::ModelSealed(ModelSealed {
                time: Timestamp::from_unix_millis(as_uint("time", self.need("time")?)?),
                model_id: as_text("model_id", self.need("model_id")?)?,
                key_id: as_text("key_id", self.need("key_id")?)?,
                model_digest: as_digest("model_digest", self.need("model_digest")?)?,
                model_len: as_uint("model_len", self.need("model_len")?)?,
                wrapped_key_sha384: self
                    .take("wrapped_key_sha384")
                    .map(|v| as_digest("wrapped_key_sha384", v))
                    .transpose()?,
            }),
            "denial-summary" => Entry::DenialSummary(DenialSummary {
                time: Timestamp::from_unix_millis(as_uint("time", self.need("time")?)?),
                since: Timestamp::from_unix_millis(as_uint("since", self.need("since")?)?),
                reason: as_text("reason", self.need("reason")?)?,
                count: as_uint("count", self.need("count")?)?,
            }),
            "policy-change" => Entry::PolicyChange(PolicyChange {
                time: Timestamp::from_unix_millis(as_uint("time", self.need("time")?)?),
                policy_version: as_uint("policy_version", self.need("policy_version")?)?,
                policy_sha384: as_digest("policy_sha384", self.need("policy_sha384")?)?,
                models: as_text_array("models", self.need("models")?)?,
            }),
            other => return Err(field("type", format!("unknown entry type {other:?}"))),
        };
        if let Some(unknown) = self.0.keys().next() {
            return Err(EntryError::Cbor(format!("unknown key {unknown:?}")));
        }
        Ok(entry)
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn millis(t: Timestamp) -> u64 {
    t.unix_millis()
}

fn pcr_map(pcrs: &BTreeMap<PcrIndex, PcrValue>) -> Value {
    Value::Map(
        pcrs.iter()
            .map(|(i, v)| {
                (
                    uint(u64::from(i.get())),
                    Value::Bytes(v.as_bytes().to_vec()),
                )
            })
            .collect(),
    )
}

fn as_uint(name: &'static str, value: Value) -> Result<u64, EntryError> {
    match value {
        Value::Integer(i) => u64::try_from(i).map_err(|_| field(name, "out of range")),
        _ => Err(field(name, "expected an unsigned integer")),
    }
}

fn as_text(name: &'static str, value: Value) -> Result<String, EntryError> {
    match value {
        Value::Text(t) => {
            check_text(name, &t)?;
            Ok(t)
        }
        _ => Err(field(name, "expected text")),
    }
}

fn as_text_array(name: &'static str, value: Value) -> Result<Vec<String>, EntryError> {
    match value {
        Value::Array(items) => items.into_iter().map(|v| as_text(name, v)).collect(),
        _ => Err(field(name, "expected an array")),
    }
}

fn as_digest(name: &'static str, value: Value) -> Result<[u8; 48], EntryError> {
    match value {
        Value::Bytes(b) => <[u8; 48]>::try_from(b.as_slice())
            .map_err(|_| field(name, "a SHA-384 digest is 48 bytes")),
        _ => Err(field(name, "expected bytes")),
    }
}

fn as_pcrs(value: Value) -> Result<BTreeMap<PcrIndex, PcrValue>, EntryError> {
    let Value::Map(pairs) = value else {
        return Err(field("pcrs", "expected a map"));
    };
    let mut pcrs = BTreeMap::new();
    for (k, v) in pairs {
        let index = PcrIndex::try_from(as_uint("pcrs", k)?)
            .map_err(|_| field("pcrs", "a PCR index is 0 to 31"))?;
        let Value::Bytes(bytes) = v else {
            return Err(field("pcrs", "a PCR value is bytes"));
        };
        let value = PcrValue::try_from(bytes.as_slice())
            .map_err(|_| field("pcrs", "a PCR value is 48 bytes"))?;
        if pcrs.insert(index, value).is_some() {
            return Err(field("pcrs", format!("PCR{index} appears twice")));
        }
    }
    Ok(pcrs)
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
mod tests {
    use super::*;

    fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
        [(0u8, 1u8), (1, 2), (2, 3), (16, 4)]
            .into_iter()
            .map(|(i, b)| (PcrIndex::new(i).unwrap(), PcrValue::measure(&[b])))
            .collect()
    }

    fn registration() -> Entry {
        Entry::ImageRegistration(ImageRegistration {
            time: Timestamp::from_unix_millis(1_700_000_000_000),
            model_id: "smollm2-135m".into(),
            model_digest: [7; 48],
            policy_version: 3,
            pcrs: pcrs(),
            approvers: vec!["alice@gov.example".into(), "bob@gov.example".into()],
        })
    }

    fn release() -> KeyRelease {
        KeyRelease {
            time: Timestamp::from_unix_millis(1_700_000_000_123),
            outcome: Outcome::Released,
            reason: "ok".into(),
            model_id: "smollm2-135m".into(),
            key_id: "kek-1/dek-9".into(),
            policy_version: 3,
            module_id: Some("i-0123-enc0456".into()),
            pcrs: pcrs(),
            region: Some("eu-west-1".into()),
            document_sha384: Some([9; 48]),
            nonce: Some(vec![1, 2, 3]),
        }
    }

    fn sealed() -> Entry {
        Entry::ModelSealed(ModelSealed {
            time: Timestamp::from_unix_millis(1_700_000_000_456),
            model_id: "smollm2-135m".into(),
            key_id: "kek-1/0a0b".into(),
            model_digest: [5; 48],
            model_len: 138_126_432,
            wrapped_key_sha384: Some([4; 48]),
        })
    }

    fn summary() -> Entry {
        Entry::DenialSummary(DenialSummary {
            time: Timestamp::from_unix_millis(1_700_000_060_000),
            since: Timestamp::from_unix_millis(1_700_000_000_000),
            reason: "unknown_model".into(),
            count: 170,
        })
    }

    fn policy_change() -> Entry {
        Entry::PolicyChange(PolicyChange {
            time: Timestamp::from_unix_millis(1_700_000_000_789),
            policy_version: 4,
            policy_sha384: [6; 48],
            models: vec!["smollm2-135m".into(), "other".into()],
        })
    }

    #[test]
    fn entries_round_trip_byte_for_byte() {
        for entry in [
            registration(),
            Entry::KeyRelease(release()),
            sealed(),
            policy_change(),
            summary(),
        ] {
            let encoded = LogEntry::new(entry.clone()).unwrap();
            let decoded = LogEntry::decode(encoded.bytes()).unwrap();
            assert_eq!(decoded.entry(), &entry);
            assert_eq!(decoded.bytes(), encoded.bytes());
            assert_eq!(decoded.leaf_hash(), Hash::leaf(encoded.bytes()));
        }
    }

    #[test]
    fn keys_are_in_deterministic_order() {
        let bytes = registration().encode().unwrap();
        let Value::Map(pairs) = ciborium::from_reader::<Value, _>(bytes.as_slice()).unwrap() else {
            panic!("not a map")
        };
        let keys: Vec<String> = pairs
            .into_iter()
            .map(|(k, _)| k.into_text().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "v",
                "pcrs",
                "time",
                "type",
                "model_id",
                "approvers",
                "model_digest",
                "policy_version"
            ]
        );
    }

    #[test]
    fn other_encodings_of_the_same_entry_are_refused() {
        let canonical = registration().encode().unwrap();
        // Same map, keys in insertion order instead of canonical order.
        let value: Value = ciborium::from_reader(canonical.as_slice()).unwrap();
        let Value::Map(mut pairs) = value else {
            panic!()
        };
        pairs.reverse();
        let mut reordered = Vec::new();
        ciborium::into_writer(&Value::Map(pairs), &mut reordered).unwrap();
        assert_eq!(LogEntry::decode(&reordered), Err(EntryError::NotCanonical));
        // "v": 1 written with a one-byte argument (0x18 0x01) instead of inline.
        let mut long_int = canonical.clone();
        let at = long_int.windows(2).position(|w| w == [0x61, b'v']).unwrap() + 2;
        long_int.splice(at..=at, [0x18, 0x01]);
        assert_eq!(LogEntry::decode(&long_int), Err(EntryError::NotCanonical));
        // Trailing bytes.
        let mut trailing = canonical;
        trailing.push(0);
        assert!(LogEntry::decode(&trailing).is_err());
    }

    #[test]
    fn invalid_entries_are_refused() {
        let mut k = release();
        k.nonce = None;
        assert!(Entry::KeyRelease(k).encode().is_err());
        let mut k = release();
        k.outcome = Outcome::Denied;
        k.reason = "pcr_mismatch".into();
        k.module_id = None;
        k.pcrs.clear();
        k.document_sha384 = None;
        k.nonce = None;
        k.region = None;
        let denied = LogEntry::new(Entry::KeyRelease(k)).unwrap();
        assert!(LogEntry::decode(denied.bytes()).is_ok());
        let mut k = release();
        k.reason = "a\nb".into();
        assert!(Entry::KeyRelease(k).encode().is_err());
        let Entry::ImageRegistration(mut r) = registration() else {
            panic!()
        };
        r.approvers.push("alice@gov.example".into());
        assert!(Entry::ImageRegistration(r).encode().is_err());
        let Entry::PolicyChange(mut p) = policy_change() else {
            panic!()
        };
        p.models.push("other".into());
        assert!(Entry::PolicyChange(p).encode().is_err());
        let Entry::ModelSealed(mut m) = sealed() else {
            panic!()
        };
        m.key_id = String::new();
        assert!(Entry::ModelSealed(m).encode().is_err());
        let Entry::DenialSummary(d) = summary() else {
            panic!()
        };
        for bad in [
            DenialSummary {
                count: 0,
                ..d.clone()
            },
            DenialSummary {
                since: Timestamp::from_unix_millis(1_800_000_000_000),
                ..d.clone()
            },
            DenialSummary {
                reason: "a\nb".into(),
                ..d
            },
        ] {
            assert!(Entry::DenialSummary(bad).encode().is_err());
        }
        for bad in [&b""[..], b"\xa0", b"\x01", b"\xa1\x61v\x02"] {
            assert!(LogEntry::decode(bad).is_err());
        }
    }
}
