//! A simulated Nitro PKI for development and tests: it issues attestation documents in exactly
//! the format real Nitro hardware produces (untagged COSE_Sign1, ES384, the payload's fields in
//! the NSM's order, a root-first `cabundle`, a leaf valid for three hours), under a simulated
//! Nitro root instead of AWS's.
//!
//! A verifier accepts these documents only when it trusts that simulated root, as a Nitro root
//! or through a national root's cross-certificate for it ([`DevelopmentRoots`]); with the AWS
//! root alone they are refused. The CA subjects say `O=Simulated Nitro PKI` and name their
//! region the way AWS's do, so region policies can be exercised.

use std::collections::BTreeMap;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use ciborium::Value;
use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, iana};
use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, DistinguishedName, DnType, DnValue, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::pki::{PkiError, ca_params};
use crate::time::Timestamp;
use crate::types::{MAX_USER_FIELD_LEN, PcrIndex, PcrValue, Region};

const HOUR_SECS: u64 = 3600;
const LEAF_LIFETIME_SECS: u64 = 3 * HOUR_SECS;

/// A chain of simulated Nitro CAs (regional, zonal, instance) under a simulated Nitro root.
pub struct SimulatedPki {
    root: CertificateDer<'static>,
    regional: CertificateDer<'static>,
    zonal: CertificateDer<'static>,
    instance: CertificateDer<'static>,
    instance_issuer: Issuer<'static, KeyPair>,
    region: Region,
    instance_id: String,
    not_after: Timestamp,
}

impl core::fmt::Debug for SimulatedPki {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimulatedPki")
            .field("region", &self.region)
            .field("instance_id", &self.instance_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What the enclave asks the (simulated) NSM to attest.
#[derive(Clone, Debug, Default)]
pub struct SimulatedRequest<'a> {
    /// The PCRs to report. Real documents carry PCR0–PCR15.
    pub pcrs: BTreeMap<PcrIndex, PcrValue>,
    /// The enclave's public key, if any (1..=1024 bytes).
    pub public_key: Option<&'a [u8]>,
    /// User data, if any (0..=1024 bytes).
    pub user_data: Option<&'a [u8]>,
    /// The verifier's nonce, if any (0..=1024 bytes).
    pub nonce: Option<&'a [u8]>,
}

impl SimulatedPki {
    /// Issue a regional, zonal and instance CA under the simulated Nitro root (`root` and its key),
    /// valid from an hour before `now` for a day, like AWS's instance CAs.
    pub fn new(
        root: &CertificateDer<'_>,
        root_key_pem: &str,
        region: Region,
        now: Timestamp,
    ) -> Result<Self, PkiError> {
        let root_key = KeyPair::from_pem(root_key_pem).map_err(|e| PkiError::Key(e.to_string()))?;
        let root_issuer = Issuer::from_ca_cert_der(root, root_key)
            .map_err(|e| PkiError::Certificate(e.to_string()))?;
        let start = Timestamp::from_unix_secs(now.unix_secs().saturating_sub(HOUR_SECS));
        let days = |n: u64| Timestamp::from_unix_secs(start.unix_secs() + n * 24 * HOUR_SECS);
        let instance_id = format!("i-{}", hex_id(9)?.get(..17).unwrap_or_default());

        let (regional, regional_issuer) = issue_ca(
            &root_issuer,
            &format!("{}.{region}.aws.nitro-enclaves", hex_id(8)?),
            2,
            (start, days(30)),
        )?;
        let (zonal, zonal_issuer) = issue_ca(
            &regional_issuer,
            &format!("{}.zonal.{region}.aws.nitro-enclaves", hex_id(8)?),
            1,
            (start, days(7)),
        )?;
        let (instance, instance_issuer) = issue_ca(
            &zonal_issuer,
            &format!("{instance_id}.{region}.aws.nitro-enclaves"),
            0,
            (start, days(1)),
        )?;
        Ok(Self {
            root: root.clone().into_owned(),
            regional,
            zonal,
            instance,
            instance_issuer,
            region,
            instance_id,
            not_after: days(1),
        })
    }

    /// When the instance CA expires: documents must be made before this minus three hours.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }

    /// Mint a document dated `now`, signed by a fresh leaf key valid for three hours.
    pub fn attest(
        &self,
        request: &SimulatedRequest<'_>,
        now: Timestamp,
    ) -> Result<Vec<u8>, PkiError> {
        check_field("public_key", request.public_key, 1)?;
        check_field("user_data", request.user_data, 0)?;
        check_field("nonce", request.nonce, 0)?;
        if request.pcrs.is_empty() {
            return Err(PkiError::Generate(
                "a document needs at least one PCR".into(),
            ));
        }

        let rng = SystemRandom::new();
        let leaf_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .map_err(|_| PkiError::Generate("leaf key generation failed".into()))?;
        let leaf_signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, leaf_pkcs8.as_ref())
                .map_err(|_| PkiError::Generate("leaf key unusable".into()))?;
        let leaf_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(leaf_pkcs8.as_ref()),
            &PKCS_ECDSA_P384_SHA384,
        )
        .map_err(|e| PkiError::Key(e.to_string()))?;

        let module_id = format!("{}-enc{}", self.instance_id, hex_id(8)?);
        let start = Timestamp::from_unix_secs(now.unix_secs());
        let end = Timestamp::from_unix_secs(now.unix_secs() + LEAF_LIFETIME_SECS);
        let mut params = ca_params(start, end)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.distinguished_name = nitro_name(&format!("{module_id}.{}.aws", self.region))?;
        let leaf = params
            .signed_by(&leaf_key, &self.instance_issuer)
            .map_err(|e| PkiError::Generate(e.to_string()))?;

        let cabundle =
            [&self.root, &self.regional, &self.zonal, &self.instance].map(|c| c.as_ref());
        sign_document(
            &Signer {
                certificate: leaf.der(),
                key: &leaf_signer,
                cabundle: &cabundle,
                module_id: &module_id,
            },
            request,
            now,
        )
    }
}

/// Who signs a document, and the chain it carries.
#[derive(Debug)]
pub struct Signer<'a> {
    /// The signing certificate (DER): the document's `certificate`.
    pub certificate: &'a [u8],
    /// Its P-384 key.
    pub key: &'a EcdsaKeyPair,
    /// The document's `cabundle`, root first (DER each).
    pub cabundle: &'a [&'a [u8]],
    /// The document's `module_id`.
    pub module_id: &'a str,
}

/// Sign a document in the real Nitro format with any key and chain. [`SimulatedPki::attest`]
/// uses it with a proper Nitro chain; tests use it to forge documents (a service key as the
/// signer, a leaf straight under a root) that a verifier must refuse.
pub fn sign_document(
    signer: &Signer<'_>,
    request: &SimulatedRequest<'_>,
    now: Timestamp,
) -> Result<Vec<u8>, PkiError> {
    let rng = SystemRandom::new();
    let optional = |field: Option<&[u8]>| field.map_or(Value::Null, |b| Value::Bytes(b.to_vec()));
    let text = |s: &str| Value::Text(s.to_owned());
    // The NSM's field order.
    let payload = Value::Map(vec![
        (text("module_id"), text(signer.module_id)),
        (text("digest"), text("SHA384")),
        (text("timestamp"), Value::Integer(now.unix_millis().into())),
        (
            text("pcrs"),
            Value::Map(
                request
                    .pcrs
                    .iter()
                    .map(|(i, v)| {
                        (
                            Value::Integer(i.get().into()),
                            Value::Bytes(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
        ),
        (
            text("certificate"),
            Value::Bytes(signer.certificate.to_vec()),
        ),
        (
            text("cabundle"),
            Value::Array(
                signer
                    .cabundle
                    .iter()
                    .map(|c| Value::Bytes(c.to_vec()))
                    .collect(),
            ),
        ),
        (text("public_key"), optional(request.public_key)),
        (text("user_data"), optional(request.user_data)),
        (text("nonce"), optional(request.nonce)),
    ]);
    let mut payload_bytes = Vec::new();
    ciborium::ser::into_writer(&payload, &mut payload_bytes)
        .map_err(|e| PkiError::Generate(e.to_string()))?;

    let mut signing_error = None;
    let document = CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .build(),
        )
        .payload(payload_bytes)
        .create_signature(&[], |to_be_signed| {
            match signer.key.sign(&rng, to_be_signed) {
                Ok(signature) => signature.as_ref().to_vec(),
                Err(_) => {
                    signing_error = Some(PkiError::Generate("signing failed".into()));
                    Vec::new()
                }
            }
        })
        .build();
    if let Some(e) = signing_error {
        return Err(e);
    }
    document
        .to_vec()
        .map_err(|e| PkiError::Generate(e.to_string()))
}

fn issue_ca(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    path_len: u8,
    (not_before, not_after): (Timestamp, Timestamp),
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), PkiError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| PkiError::Key(e.to_string()))?;
    let mut params = ca_params(not_before, not_after)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.distinguished_name = nitro_name(common_name)?;
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    let der = cert.der().clone();
    let next =
        Issuer::from_ca_cert_der(&der, key).map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok((der, next))
}

fn nitro_name(common_name: &str) -> Result<DistinguishedName, PkiError> {
    let mut name = DistinguishedName::new();
    let country = PrintableString::try_from("XX").map_err(|e| PkiError::Subject(e.to_string()))?;
    name.push(DnType::CountryName, DnValue::PrintableString(country));
    name.push(DnType::OrganizationName, "Simulated Nitro PKI");
    name.push(DnType::OrganizationalUnitName, "development");
    name.push(DnType::CommonName, common_name);
    Ok(name)
}

fn check_field(name: &'static str, field: Option<&[u8]>, min: usize) -> Result<(), PkiError> {
    match field {
        Some(b) if b.len() < min || b.len() > MAX_USER_FIELD_LEN => Err(PkiError::Generate(
            format!("{name} is {} bytes; it must be {min}..=1024", b.len()),
        )),
        _ => Ok(()),
    }
}

/// `bytes` random bytes as lowercase hex.
fn hex_id(bytes: usize) -> Result<String, PkiError> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| PkiError::Generate("no randomness".into()))?;
    Ok(data_encoding::HEXLOWER.encode(&buf))
}

/// The development stand-ins for a nation's trust: a national root, and a simulated Nitro root
/// it cross-certifies, as a nation cross-certifies AWS's. Documents minted under `nitro` verify
/// with [`DevelopmentRoots::document_trust`] (the national root, through the cross-certificate);
/// service keys are certified by `national` and verify with [`DevelopmentRoots::service_trust`].
#[derive(Clone, Debug)]
pub struct DevelopmentRoots {
    /// The national root: certifies service keys, and cross-certifies `nitro`.
    pub national: crate::pki::NewRoot,
    /// The simulated Nitro root: issues the regional, zonal and instance CAs.
    pub nitro: crate::pki::NewRoot,
    /// The national root's certificate for `nitro`.
    pub cross_certificate: CertificateDer<'static>,
}

impl DevelopmentRoots {
    /// New roots valid from `not_before` to `not_after`; the cross-certificate for as long.
    pub fn new(
        national_name: &str,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Result<Self, PkiError> {
        let national = crate::pki::init_root(
            national_name,
            "Development Government",
            "XX",
            not_before,
            not_after,
        )?;
        let nitro = simulated_nitro_root(not_before, not_after)?;
        let cross_certificate = crate::pki::cross_certify(
            &national.certificate,
            &national.private_key_pem,
            &nitro.certificate,
            not_before,
            not_after,
        )?;
        Ok(Self {
            national,
            nitro,
            cross_certificate,
        })
    }

    /// Trust for documents: the national root, reaching the simulated Nitro root only through
    /// the cross-certificate.
    pub fn document_trust(&self) -> Result<crate::DocumentTrust, crate::TrustError> {
        let mut trust = crate::DocumentTrust::empty();
        trust.add_national_root(self.national.certificate.clone())?;
        trust.add_cross_certificate(self.cross_certificate.clone())?;
        Ok(trust)
    }

    /// Trust for service certificates: the national root.
    pub fn service_trust(&self) -> Result<crate::ServiceTrust, crate::TrustError> {
        let mut trust = crate::ServiceTrust::new();
        trust.add_root(self.national.certificate.clone())?;
        Ok(trust)
    }
}

/// A simulated Nitro root (`CN=Simulated Nitro Root, O=Simulated Nitro PKI`): the development
/// stand-in for AWS's root G1, under which [`SimulatedPki`] issues its CAs.
pub fn simulated_nitro_root(
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<crate::pki::NewRoot, PkiError> {
    crate::pki::init_root(
        "Simulated Nitro Root",
        "Simulated Nitro PKI",
        "XX",
        not_before,
        not_after,
    )
}
