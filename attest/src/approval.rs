//! Approvals of release-policy changes: k of n named approvers each sign a statement over the
//! SHA-384 and the version of the exact policy bytes.
//!
//! An approver's key is an ECDSA P-384 key whose certificate the national root issued for the
//! `policy-approver` role (`OU=policy-approver`, `CN=<the approver's name>`). An approval is a
//! tagged COSE_Sign1 (ES384, content type [`APPROVAL_CONTENT_TYPE`]) over
//!
//! ```text
//! { "v": 1, "policy_sha384": bytes(48), "policy_version": uint, "approver": text, "time": ms }
//! ```
//!
//! (deterministic CBOR), carried with the approver's certificate as a text file:
//!
//! ```text
//! -----BEGIN POLICY APPROVAL-----
//! base64 of { "v": 1, "signed": bytes, "certificate": bytes }
//! -----END POLICY APPROVAL-----
//! ```
//!
//! [`check_approvals`] counts an approval only if its certificate is an approver certificate
//! under the trusted national roots now, its signature verifies with that certificate's key, it
//! names that certificate's approver, it is over these bytes and this version, it is not dated
//! in the future, and the approver is one of those the rule names. Each approver counts once.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{SHA384, digest};
use cbor::{Fields, Map, Profile, Reader};
use data_encoding::BASE64;

use crate::Timestamp;
use crate::cose::{CoseError, parse_es384, sign_es384_with, verify_es384};
use crate::service::{ServiceRole, ServiceTrust, verify_service_certificate};

/// The content type in an approval's protected header.
pub const APPROVAL_CONTENT_TYPE: &str = "application/policy-approval+cbor";
/// The statement's version.
pub const APPROVAL_VERSION: u64 = 1;
/// The largest approval file.
pub const MAX_APPROVAL_LEN: usize = 16 * 1024;
/// The most approvers a rule names.
pub const MAX_APPROVERS: usize = 32;
/// How far in the future an approval may be dated (clock skew between approvers and broker).
pub const MAX_SKEW_SECS: u64 = 300;

const BEGIN: &str = "-----BEGIN POLICY APPROVAL-----";
const END: &str = "-----END POLICY APPROVAL-----";

/// Why an approval could not be read or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// Not an approval file, or its contents malformed.
    #[error("not a policy approval: {0}")]
    Malformed(String),
    /// The signature could not be made or has the wrong shape.
    #[error("the approval's signature: {0}")]
    Cose(#[from] CoseError),
}

impl From<cbor::Error> for ApprovalError {
    fn from(e: cbor::Error) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// What an approver signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalClaims {
    /// SHA-384 of the policy file's bytes.
    pub policy_sha384: [u8; 48],
    /// The policy's version.
    pub policy_version: u64,
    /// The approver's name, as in their certificate.
    pub approver: String,
    /// When they approved.
    pub time: Timestamp,
}

impl ApprovalClaims {
    fn to_payload(&self) -> Vec<u8> {
        Map::new()
            .with("v", APPROVAL_VERSION)
            .with("policy_sha384", &self.policy_sha384)
            .with("policy_version", self.policy_version)
            .with("approver", self.approver.as_str())
            .with("time", self.time.unix_millis())
            .encode()
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, ApprovalError> {
        const FIELDS: [&str; 5] = ["v", "time", "approver", "policy_sha384", "policy_version"];
        Reader::read_all(bytes, MAX_APPROVAL_LEN, Profile::Deterministic, |r| {
            let mut f = Fields::read(r, &FIELDS, read_item)?;
            if uint(&mut f, "v")? != APPROVAL_VERSION {
                return Err(ApprovalError::Malformed(format!(
                    "only version {APPROVAL_VERSION} is known"
                )));
            }
            let claims = Self {
                policy_sha384: match f.need("policy_sha384")? {
                    Item::Bytes(b) => <[u8; 48]>::try_from(b.as_slice()).map_err(|_| {
                        ApprovalError::Malformed("policy_sha384 is not 48 bytes".into())
                    })?,
                    _ => return Err(ApprovalError::Malformed("policy_sha384: bytes".into())),
                },
                policy_version: uint(&mut f, "policy_version")?,
                approver: match f.need("approver")? {
                    Item::Text(t) if !t.is_empty() && t.len() <= 256 => t,
                    _ => return Err(ApprovalError::Malformed("approver: 1 to 256 bytes".into())),
                },
                time: Timestamp::from_unix_millis(uint(&mut f, "time")?),
            };
            f.finish()?;
            Ok(claims)
        })
    }
}

enum Item {
    Uint(u64),
    Text(String),
    Bytes(Vec<u8>),
}

fn read_item(key: &'static str, r: &mut Reader<'_>) -> Result<Item, ApprovalError> {
    Ok(match key {
        "v" | "time" | "policy_version" => Item::Uint(r.uint()?),
        "approver" => Item::Text(r.text()?.to_owned()),
        _ => Item::Bytes(r.bytes()?.to_vec()),
    })
}

fn uint(f: &mut Fields<Item>, key: &'static str) -> Result<u64, ApprovalError> {
    match f.need(key)? {
        Item::Uint(n) => Ok(n),
        _ => Err(ApprovalError::Malformed(format!(
            "{key}: an unsigned integer"
        ))),
    }
}

/// One approval as exchanged: the signed statement and the approver's certificate (DER).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The tagged COSE_Sign1.
    pub signed: Vec<u8>,
    /// The approver's certificate.
    pub certificate: Vec<u8>,
}

impl Approval {
    /// Sign `claims` with `sign` (given the bytes to sign, it returns the ES384 signature, r ‖ s)
    /// for the holder of `certificate`.
    pub fn sign(
        claims: &ApprovalClaims,
        certificate: Vec<u8>,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<Self, ApprovalError> {
        let signed = sign_es384_with(APPROVAL_CONTENT_TYPE, claims.to_payload(), sign)?;
        Ok(Self {
            signed,
            certificate,
        })
    }

    /// The approval's bytes (deterministic CBOR `{v, signed, certificate}`): what an approval
    /// file carries in base64, and what the log records.
    pub fn to_bytes(&self) -> Vec<u8> {
        Map::new()
            .with("v", APPROVAL_VERSION)
            .with("signed", &self.signed)
            .with("certificate", &self.certificate)
            .encode()
    }

    /// The approval file's text.
    pub fn to_text(&self) -> String {
        let body = BASE64.encode(&self.to_bytes());
        let mut text = format!("{BEGIN}\n");
        for line in body.as_bytes().chunks(64) {
            text.push_str(&String::from_utf8_lossy(line));
            text.push('\n');
        }
        text.push_str(END);
        text.push('\n');
        text
    }

    /// Read an approval file.
    pub fn parse(text: &[u8]) -> Result<Self, ApprovalError> {
        if text.len() > MAX_APPROVAL_LEN * 2 {
            return Err(ApprovalError::Malformed("too large".into()));
        }
        let text = std::str::from_utf8(text)
            .map_err(|_| ApprovalError::Malformed("not text".into()))?
            .trim();
        let body = text
            .strip_prefix(BEGIN)
            .and_then(|t| t.strip_suffix(END))
            .ok_or_else(|| ApprovalError::Malformed(format!("expected {BEGIN} … {END}")))?;
        let body: String = body.split_whitespace().collect();
        let inner = BASE64
            .decode(body.as_bytes())
            .map_err(|_| ApprovalError::Malformed("the body is not base64".into()))?;
        Self::from_bytes(&inner)
    }

    /// Read an approval's bytes ([`Approval::to_bytes`]).
    pub fn from_bytes(inner: &[u8]) -> Result<Self, ApprovalError> {
        const FIELDS: [&str; 3] = ["v", "signed", "certificate"];
        Reader::read_all(inner, MAX_APPROVAL_LEN, Profile::Deterministic, |r| {
            let mut f = Fields::read(r, &FIELDS, |key, r| -> Result<Item, ApprovalError> {
                Ok(match key {
                    "v" => Item::Uint(r.uint()?),
                    _ => Item::Bytes(r.bytes()?.to_vec()),
                })
            })?;
            if uint(&mut f, "v")? != APPROVAL_VERSION {
                return Err(ApprovalError::Malformed(format!(
                    "only version {APPROVAL_VERSION} is known"
                )));
            }
            let bytes = |item| match item {
                Item::Bytes(b) => Ok(b),
                _ => Err(ApprovalError::Malformed("expected bytes".into())),
            };
            let approval = Self {
                signed: bytes(f.need("signed")?)?,
                certificate: bytes(f.need("certificate")?)?,
            };
            f.finish()?;
            Ok(approval)
        })
    }
}

/// Who must approve: `required` of `approvers` (names as in their certificates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRule {
    /// k.
    pub required: usize,
    /// The n names.
    pub approvers: Vec<String>,
}

impl ApprovalRule {
    /// A rule of `required` of `approvers`: 1 ≤ k ≤ n ≤ [`MAX_APPROVERS`], names distinct.
    pub fn new(required: usize, approvers: Vec<String>) -> Result<Self, String> {
        if approvers.is_empty() || approvers.len() > MAX_APPROVERS {
            return Err(format!("name 1 to {MAX_APPROVERS} approvers"));
        }
        if required == 0 || required > approvers.len() {
            return Err(format!(
                "required must be 1 to the number of approvers ({}), not {required}",
                approvers.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &approvers {
            if a.is_empty() || !seen.insert(a) {
                return Err(format!("approver {a:?} is empty or named twice"));
            }
        }
        Ok(Self {
            required,
            approvers,
        })
    }
}

/// What [`check_approvals`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalReport {
    /// The approvers whose approval counts, with its time.
    pub approved: BTreeMap<String, Timestamp>,
    /// The positions of the approvals that count, one per approver.
    pub counted: Vec<usize>,
    /// The approvals refused: (the file's position, why).
    pub refused: Vec<(usize, String)>,
    /// The named approvers with no valid approval.
    pub missing: Vec<String>,
    /// How many are required.
    pub required: usize,
}

impl ApprovalReport {
    /// Whether enough approvers approved.
    pub fn is_enough(&self) -> bool {
        self.approved.len() >= self.required
    }

    /// The time of the last approval that counts.
    pub fn last_approval(&self) -> Option<Timestamp> {
        self.approved.values().copied().max()
    }

    /// One line for people: who approved, who is missing, what was refused.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} of {} required approvals",
            self.approved.len(),
            self.required
        );
        if !self.approved.is_empty() {
            let names: Vec<_> = self.approved.keys().map(String::as_str).collect();
            text.push_str(&format!(" (by {})", names.join(", ")));
        }
        if !self.is_enough() && !self.missing.is_empty() {
            text.push_str(&format!("; missing: {}", self.missing.join(", ")));
        }
        for (i, why) in &self.refused {
            text.push_str(&format!("; approval {} refused: {why}", i + 1));
        }
        text
    }
}

/// SHA-384 of a policy's bytes.
pub fn policy_sha384(policy: &[u8]) -> [u8; 48] {
    <[u8; 48]>::try_from(digest(&SHA384, policy).as_ref()).unwrap_or([0; 48])
}

/// Check `approvals` of the policy `policy` (its exact bytes) at `version`, against `rule` and the
/// national roots in `trust`, at `now`.
pub fn check_approvals(
    policy: &[u8],
    version: u64,
    approvals: &[Approval],
    rule: &ApprovalRule,
    trust: &ServiceTrust,
    now: Timestamp,
) -> ApprovalReport {
    let sha384 = policy_sha384(policy);
    let mut approved = BTreeMap::new();
    let mut counted = Vec::new();
    let mut refused = Vec::new();
    for (i, approval) in approvals.iter().enumerate() {
        match check_one(approval, &sha384, version, rule, trust, now) {
            Ok((name, time)) => {
                if let std::collections::btree_map::Entry::Vacant(slot) = approved.entry(name) {
                    slot.insert(time);
                    counted.push(i);
                }
            }
            Err(why) => refused.push((i, why)),
        }
    }
    let missing = rule
        .approvers
        .iter()
        .filter(|a| !approved.contains_key(*a))
        .cloned()
        .collect();
    ApprovalReport {
        approved,
        counted,
        refused,
        missing,
        required: rule.required,
    }
}

fn check_one(
    approval: &Approval,
    sha384: &[u8; 48],
    version: u64,
    rule: &ApprovalRule,
    trust: &ServiceTrust,
    now: Timestamp,
) -> Result<(String, Timestamp), String> {
    let key = verify_service_certificate(&approval.certificate, trust, ServiceRole::Approver, now)
        .map_err(|e| format!("its certificate: {e}"))?;
    let sign1 = parse_es384(&approval.signed, MAX_APPROVAL_LEN, APPROVAL_CONTENT_TYPE)
        .map_err(|e| format!("not a signed approval: {e}"))?;
    verify_es384(&sign1, &key.spki_der)
        .map_err(|_| format!("the signature does not verify with {}'s key", key.name))?;
    let claims = ApprovalClaims::from_payload(sign1.payload.as_deref().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    if claims.approver != key.name {
        return Err(format!(
            "it names {:?} but is signed by {:?}",
            claims.approver, key.name
        ));
    }
    if &claims.policy_sha384 != sha384 {
        return Err(format!("{} approved other policy bytes", key.name));
    }
    if claims.policy_version != version {
        return Err(format!(
            "{} approved version {}, not {version}",
            key.name, claims.policy_version
        ));
    }
    if claims.time.unix_secs() > now.unix_secs().saturating_add(MAX_SKEW_SECS) {
        return Err(format!("{}'s approval is dated in the future", key.name));
    }
    if !rule.approvers.contains(&key.name) {
        return Err(format!("{} is not a configured approver", key.name));
    }
    Ok((key.name, claims.time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};

    fn approval() -> Approval {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "keygen")
                .and_then(|k| {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, k.as_ref())
                        .map_err(|_| "key")
                });
        let Ok(key) = pkcs8 else {
            return Approval {
                signed: Vec::new(),
                certificate: Vec::new(),
            };
        };
        let claims = ApprovalClaims {
            policy_sha384: policy_sha384(b"version = 1\n"),
            policy_version: 1,
            approver: "alice".into(),
            time: Timestamp::from_unix_secs(1_800_000_000),
        };
        Approval::sign(&claims, vec![0x30, 0x03, 1, 2, 3], |data| {
            key.sign(&SystemRandom::new(), data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "sign".to_owned())
        })
        .unwrap_or_else(|_| Approval {
            signed: Vec::new(),
            certificate: Vec::new(),
        })
    }

    #[test]
    fn an_approval_file_round_trips_and_garbage_is_an_error() {
        let a = approval();
        assert!(!a.signed.is_empty());
        let text = a.to_text();
        assert!(matches!(Approval::parse(text.as_bytes()), Ok(b) if b == a));
        let mut bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"-----BEGIN POLICY APPROVAL-----\n-----END POLICY APPROVAL-----\n".to_vec(),
            b"-----BEGIN POLICY APPROVAL-----\n!!!!\n-----END POLICY APPROVAL-----\n".to_vec(),
            text.replace("POLICY APPROVAL", "CERTIFICATE").into_bytes(),
            vec![0xff; 100],
            vec![b'a'; MAX_APPROVAL_LEN * 3],
        ];
        // Every truncation of the file.
        for cut in (0..text.len()).step_by(7) {
            bad.push(text.as_bytes().get(..cut).unwrap_or_default().to_vec());
        }
        for b in bad {
            assert!(
                Approval::parse(&b).is_err(),
                "{:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn a_signer_that_fails_or_returns_the_wrong_length_makes_no_approval() {
        let claims = ApprovalClaims {
            policy_sha384: [1; 48],
            policy_version: 2,
            approver: "bob".into(),
            time: Timestamp::from_unix_secs(1_800_000_000),
        };
        assert!(Approval::sign(&claims, Vec::new(), |_| Err("token gone".into())).is_err());
        assert!(Approval::sign(&claims, Vec::new(), |_| Ok(vec![0; 95])).is_err());
    }

    #[test]
    fn a_rule_names_one_to_n_distinct_approvers() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(ApprovalRule::new(2, names(&["a", "b", "c"])).is_ok());
        assert!(ApprovalRule::new(0, names(&["a"])).is_err());
        assert!(ApprovalRule::new(2, names(&["a"])).is_err());
        assert!(ApprovalRule::new(1, names(&[])).is_err());
        assert!(ApprovalRule::new(1, names(&["a", "a"])).is_err());
        assert!(ApprovalRule::new(1, names(&[""])).is_err());
    }
}
