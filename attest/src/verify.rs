//! Verification: trust, signature, then policy. Only a [`VerifiedDocument`] hands out the fields
//! a caller acts on.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};

use crate::cache::ChainCache;
use crate::chain::verify_chain;
use crate::document::{ParsedDocument, Payload};
use crate::error::VerifyError;
use crate::policy::Policy;
use crate::time::Timestamp;
use crate::trust::DocumentTrust;
use crate::types::{PcrIndex, PcrValue, Region, short_hex};

/// Verifies documents against a fixed trust configuration, remembering verified chains.
///
/// One verifier can be shared between threads; its chain cache is behind a lock held only for a
/// map lookup or insert.
#[derive(Debug)]
pub struct Verifier {
    trust: DocumentTrust,
    cache: ChainCache,
}

impl Verifier {
    /// A verifier that trusts `trust`.
    pub fn new(trust: DocumentTrust) -> Self {
        Self {
            trust,
            cache: ChainCache::default(),
        }
    }

    /// Verify `document` at time `at` and check it against `policy`:
    ///
    /// 1. the chain from the document's certificate through `cabundle` to a trust anchor, every
    ///    certificate valid at `at`, CA constraints and key usage;
    /// 2. the ES384 signature over the COSE Sig_structure with the leaf key;
    /// 3. the policy (debug, measurements, age, nonce, region).
    ///
    /// This is [`authenticate`](Self::authenticate) then [`AuthenticDocument::accept`].
    pub fn verify(
        &self,
        document: &ParsedDocument,
        policy: &Policy,
        at: Timestamp,
    ) -> Result<VerifiedDocument, VerifyError> {
        let result = self
            .authenticate(document, at)
            .and_then(|authentic| authentic.accept(policy));
        let id = short_hex(document.sha384());
        match &result {
            Ok(v) => {
                tracing::debug!(document = %id, module_id = v.module_id(), %at, "document verified")
            }
            Err(e) => {
                tracing::debug!(document = %id, kind = e.kind(), error = %e, %at, "document refused")
            }
        }
        result
    }

    /// Steps 1 and 2 of [`verify`](Self::verify): the document is genuine (its chain reaches a
    /// trust anchor at `at` and its signature holds), but no policy has accepted it. What it
    /// attests can be logged as evidence of a refusal; nothing in it can be acted on until
    /// [`AuthenticDocument::accept`].
    pub fn authenticate(
        &self,
        document: &ParsedDocument,
        at: Timestamp,
    ) -> Result<AuthenticDocument, VerifyError> {
        let payload = &document.payload;
        let chain = verify_chain(&self.trust, &self.cache, payload, at)?;
        let to_be_signed = document.cose.tbs_data(&[]);
        verify_es384(&chain.leaf_point, &to_be_signed, &document.cose.signature)?;
        Ok(AuthenticDocument {
            payload: payload.clone(),
            region: chain.region,
            trust_path: TrustPath {
                anchor_subject: chain.anchor_subject,
                anchor_is_aws_root: chain.anchor_is_aws_root,
                via_cross_certificate: chain.via_cross_certificate,
            },
            sha384: document.sha384,
            authenticated_at: at,
        })
    }

    /// How many verified chains are cached.
    pub fn cached_chains(&self) -> usize {
        self.cache.len()
    }
}

/// An ES384 signature: ECDSA P-384 with SHA-384, r ‖ s (IEEE P1363, as COSE encodes it), under an
/// uncompressed EC point.
fn verify_es384(point: &[u8], message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
        .verify(message, signature)
        .map_err(|_| VerifyError::SignatureInvalid)
}

/// How the document's chain reached a trust anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustPath {
    /// The anchor's subject.
    pub anchor_subject: String,
    /// The anchor is the built-in AWS Nitro root.
    pub anchor_is_aws_root: bool,
    /// The path went through a configured cross-certificate (a nation's root of trust).
    pub via_cross_certificate: bool,
}

/// A genuine document that no policy has accepted yet: its chain reached a trust anchor at the
/// time asked and its signature verifies with the chain's leaf key. It has no public
/// constructor ([`Verifier::authenticate`] makes one). It says what the Nitro hypervisor attested
/// (module id, PCRs, region, time), for logs and diagnostics of a refusal; it does not hand out
/// `user_data`, `public_key` or `nonce`: only [`AuthenticDocument::accept`] under the caller's
/// policy does.
#[derive(Clone)]
pub struct AuthenticDocument {
    payload: Payload,
    region: Option<Region>,
    trust_path: TrustPath,
    sha384: [u8; 48],
    authenticated_at: Timestamp,
}

impl core::fmt::Debug for AuthenticDocument {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AuthenticDocument")
            .field("sha384", &short_hex(&self.sha384))
            .field("module_id", &self.payload.module_id)
            .field("timestamp", &self.payload.timestamp)
            .field("region", &self.region)
            .field("trust_path", &self.trust_path)
            .finish_non_exhaustive()
    }
}

impl AuthenticDocument {
    /// Check `policy` (debug, measurements, age, nonce, region) at the time the document was
    /// authenticated: the step that makes its fields usable. Freshness is judged at that time,
    /// so accept right after [`Verifier::authenticate`]; an authentic document kept for later
    /// is evidence, not a credential.
    pub fn accept(&self, policy: &Policy) -> Result<VerifiedDocument, VerifyError> {
        let payload = &self.payload;
        policy.check(payload, self.region.as_ref(), self.authenticated_at)?;
        Ok(VerifiedDocument {
            module_id: payload.module_id.clone(),
            timestamp: payload.timestamp,
            pcrs: payload.pcrs.clone(),
            public_key: payload.public_key.clone(),
            user_data: payload.user_data.clone(),
            nonce: payload.nonce.clone(),
            region: self.region.clone(),
            debug: payload.pcr0() == Some(&PcrValue::ZERO),
            trust_path: self.trust_path.clone(),
            sha384: self.sha384,
            verified_at: self.authenticated_at,
        })
    }

    /// The enclave's module id (instance and enclave id).
    #[must_use]
    pub fn module_id(&self) -> &str {
        &self.payload.module_id
    }

    /// When the Nitro hypervisor made the document.
    #[must_use]
    pub fn timestamp(&self) -> Timestamp {
        self.payload.timestamp
    }

    /// Every PCR the document reports.
    #[must_use]
    pub fn pcrs(&self) -> &BTreeMap<PcrIndex, PcrValue> {
        &self.payload.pcrs
    }

    /// The AWS region the regional CA names, when it names one.
    #[must_use]
    pub fn region(&self) -> Option<&Region> {
        self.region.as_ref()
    }

    /// PCR0 is all zeros: the enclave runs in debug mode.
    #[must_use]
    pub fn is_debug(&self) -> bool {
        self.payload.pcr0() == Some(&PcrValue::ZERO)
    }

    /// How the chain reached a trust anchor.
    #[must_use]
    pub fn trust_path(&self) -> &TrustPath {
        &self.trust_path
    }

    /// SHA-384 of the document's bytes.
    #[must_use]
    pub fn sha384(&self) -> &[u8; 48] {
        &self.sha384
    }
}

/// A document whose chain, signature and policy have all been checked. It has no public
/// constructor: holding one is proof that [`Verifier::verify`] (or
/// [`AuthenticDocument::accept`]) accepted it. Its `Debug` shows
/// hashes and sizes, not the contents of `user_data`, `public_key` or `nonce`.
#[derive(Clone)]
pub struct VerifiedDocument {
    module_id: String,
    timestamp: Timestamp,
    pcrs: BTreeMap<PcrIndex, PcrValue>,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    region: Option<Region>,
    debug: bool,
    trust_path: TrustPath,
    sha384: [u8; 48],
    verified_at: Timestamp,
}

impl core::fmt::Debug for VerifiedDocument {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let len = |field: &Option<Vec<u8>>| field.as_ref().map(Vec::len);
        f.debug_struct("VerifiedDocument")
            .field("sha384", &short_hex(&self.sha384))
            .field("module_id", &self.module_id)
            .field("timestamp", &self.timestamp)
            .field("region", &self.region)
            .field("debug", &self.debug)
            .field("trust_path", &self.trust_path)
            .field("public_key_len", &len(&self.public_key))
            .field("user_data_len", &len(&self.user_data))
            .field("nonce_len", &len(&self.nonce))
            .finish_non_exhaustive()
    }
}

impl VerifiedDocument {
    /// The enclave's module id (instance and enclave id).
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// When the Nitro hypervisor made the document.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// Every PCR the document reports.
    pub fn pcrs(&self) -> &BTreeMap<PcrIndex, PcrValue> {
        &self.pcrs
    }

    /// The public key the enclave put in the document, if any.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }

    /// The user data the enclave put in the document, if any.
    pub fn user_data(&self) -> Option<&[u8]> {
        self.user_data.as_deref()
    }

    /// The nonce in the document, if any.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.nonce.as_deref()
    }

    /// The AWS region the regional CA names, when it names one.
    pub fn region(&self) -> Option<&Region> {
        self.region.as_ref()
    }

    /// PCR0 is all zeros: the enclave runs in debug mode (accepted only if the policy allowed it).
    pub fn is_debug(&self) -> bool {
        self.debug
    }

    /// How the chain reached a trust anchor.
    pub fn trust_path(&self) -> &TrustPath {
        &self.trust_path
    }

    /// SHA-384 of the document's bytes.
    pub fn sha384(&self) -> &[u8; 48] {
        &self.sha384
    }

    /// The time the document was verified at.
    pub fn verified_at(&self) -> Timestamp {
        self.verified_at
    }
}

#[cfg(test)]
mod tests {
    use super::verify_es384;

    /// Every Wycheproof ECDSA P-384/SHA-384 P1363 vector through the document-signature check.
    #[test]
    fn wycheproof_es384_vectors() {
        let text = include_str!("../tests/data/wycheproof/ecdsa_secp384r1_sha384_p1363_test.json");
        let suite: serde_json::Value = serde_json::from_str(text).unwrap();
        let hex = |v: &serde_json::Value| {
            data_encoding::HEXLOWER
                .decode(v.as_str().unwrap().as_bytes())
                .unwrap()
        };
        let mut counted = 0;
        for group in suite["testGroups"].as_array().unwrap() {
            let point = hex(&group["publicKey"]["uncompressed"]);
            for test in group["tests"].as_array().unwrap() {
                let result = verify_es384(&point, &hex(&test["msg"]), &hex(&test["sig"]));
                let expected_valid = test["result"] == "valid";
                assert_eq!(
                    result.is_ok(),
                    expected_valid,
                    "tcId {}: {}",
                    test["tcId"],
                    test["comment"]
                );
                counted += 1;
            }
        }
        assert_eq!(counted, suite["numberOfTests"].as_u64().unwrap());
    }
}
