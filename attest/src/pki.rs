//! A development national root of trust: create a root CA, and cross-certify another root (the
//! AWS Nitro root) under it, so that the national-root flow can be tried without an HSM.
//!
//! Keys are ECDSA P-384, so that every signature on a Nitro chain stays ES384. A production root
//! lives in an HSM and is operated with the nation's own tooling; this module is for development,
//! tests and demonstrations.

use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate, X509Name};
use zeroize::Zeroizing;

use crate::time::Timestamp;

/// A new root CA: its certificate and its private key (PKCS#8 PEM).
#[derive(Clone, Debug)]
pub struct NewRoot {
    /// The self-signed certificate, DER.
    pub certificate: CertificateDer<'static>,
    /// The private key, PKCS#8 PEM. Zeroized on drop.
    pub private_key_pem: Zeroizing<String>,
}

/// Why a certificate could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// notBefore is not before notAfter, or a time is out of range.
    #[error("invalid validity: {0}")]
    Validity(String),
    /// A certificate given as input could not be read.
    #[error("cannot read certificate: {0}")]
    Certificate(String),
    /// The private key could not be read or used.
    #[error("cannot use private key: {0}")]
    Key(String),
    /// The issuer's key does not belong to the issuer's certificate.
    #[error("the private key does not match the issuer certificate")]
    KeyMismatch,
    /// The subject could not be reproduced byte for byte.
    #[error("cannot reproduce the target's subject exactly: {0}")]
    Subject(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// Create a self-signed P-384 root CA named `CN=<common_name>, O=<organization>, C=<country>`.
pub fn init_root(
    common_name: &str,
    organization: &str,
    country: &str,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<NewRoot, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(|e| PkiError::Key(e.to_string()))?;
    let mut params = ca_params(not_before, not_after)?;
    let mut name = DistinguishedName::new();
    let country =
        PrintableString::try_from(country).map_err(|e| PkiError::Subject(e.to_string()))?;
    name.push(DnType::CountryName, DnValue::PrintableString(country));
    name.push(DnType::OrganizationName, organization);
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.key_identifier_method = KeyIdMethod::Sha256;
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    Ok(NewRoot {
        certificate: cert.der().clone(),
        private_key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// Issue, under `issuer` (certificate DER and private key PEM), a CA certificate with `target`'s
/// exact subject, public key and key identifier: a cross-certificate. Paths that end at `target`
/// then also end at `issuer`, for as long as the cross-certificate is valid.
pub fn cross_certify(
    issuer_certificate: &CertificateDer<'_>,
    issuer_key_pem: &str,
    target: &CertificateDer<'_>,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateDer<'static>, PkiError> {
    let issuer = load_issuer(issuer_certificate, issuer_key_pem)?;

    let target_x509 = parse(target)?;
    let target_key = SubjectPublicKeyInfo::from_der(target_x509.public_key().raw)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let mut params = ca_params(not_before, not_after)?;
    params.distinguished_name = same_name(target_x509.subject())?;
    params.use_authority_key_identifier_extension = true;
    if let Some(ski) = target_x509
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
    {
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
    }
    let cert = params
        .signed_by(&target_key, &issuer)
        .map_err(|e| PkiError::Generate(e.to_string()))?;

    let made = parse(cert.der())?;
    if made.subject().as_raw() != target_x509.subject().as_raw() {
        return Err(PkiError::Subject(format!(
            "made {:?}, target is {:?}",
            made.subject().to_string(),
            target_x509.subject().to_string()
        )));
    }
    Ok(cert.der().clone())
}

/// An issuer from its certificate and private key, checking that the two belong together.
fn load_issuer<'a>(
    certificate: &'a CertificateDer<'_>,
    key_pem: &str,
) -> Result<Issuer<'a, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Key(e.to_string()))?;
    let x509 = parse(certificate)?;
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::KeyMismatch);
    }
    Issuer::from_ca_cert_der(certificate, key).map_err(|e| PkiError::Certificate(e.to_string()))
}

pub(crate) fn ca_params(
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateParams, PkiError> {
    if not_before >= not_after {
        return Err(PkiError::Validity(format!(
            "notBefore {not_before} must be before notAfter {not_after}"
        )));
    }
    let to_time = |t: Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(
            i64::try_from(t.unix_secs()).map_err(|e| PkiError::Validity(e.to_string()))?,
        )
        .map_err(|e| PkiError::Validity(e.to_string()))
    };
    let mut params = CertificateParams::default();
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

/// A positive 128-bit serial number from the system's CSPRNG.
pub(crate) fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| PkiError::Generate("no randomness".into()))?;
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
        *first |= 0x01;
    }
    Ok(SerialNumber::from_slice(&serial))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Certificate(e.to_string()))
}

/// Rebuild a name attribute by attribute, keeping each value's string type, so that the DER
/// matches the original byte for byte (path building compares names as bytes).
fn same_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
    let mut out = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| PkiError::Subject("attribute type is not a short OID".into()))?
            .collect();
        let value = attr
            .as_str()
            .map_err(|e| PkiError::Subject(e.to_string()))?
            .to_owned();
        let value = match attr.attr_value().tag() {
            Tag::PrintableString => DnValue::PrintableString(
                PrintableString::try_from(value).map_err(|e| PkiError::Subject(e.to_string()))?,
            ),
            Tag::Utf8String => DnValue::Utf8String(value),
            other => {
                return Err(PkiError::Subject(format!(
                    "unsupported string type {other} in the subject"
                )));
            }
        };
        out.push(DnType::from_oid(&oid), value);
    }
    Ok(out)
}

/// Issue, under the national root `issuer`, an end-entity certificate for one of the
/// government's own service keys (`subject_spki_der`, any algorithm): `CN=<name>,
/// OU=<role>`, digitalSignature only. A verifier learns the key from the certificate with
/// [`crate::service::verify_service_certificate`], so the root is the only thing to distribute.
pub fn certify_service_key(
    issuer_certificate: &CertificateDer<'_>,
    issuer_key_pem: &str,
    subject_spki_der: &[u8],
    name: &str,
    role: crate::service::ServiceRole,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateDer<'static>, PkiError> {
    let issuer = load_issuer(issuer_certificate, issuer_key_pem)?;
    let subject_key = SubjectPublicKeyInfo::from_der(subject_spki_der)
        .map_err(|e| PkiError::Key(format!("the service key: {e}")))?;
    let mut params = ca_params(not_before, not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let cert = params
        .signed_by(&subject_key, &issuer)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    Ok(cert.der().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::aws_nitro_root_g1;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap_or(Timestamp::from_unix_secs(0))
    }

    #[test]
    fn cross_certificate_reproduces_the_aws_root_subject_and_key() {
        let root = init_root(
            "Test National Root",
            "Test Government",
            "GB",
            t("2020-01-01T00:00:00Z"),
            t("2040-01-01T00:00:00Z"),
        )
        .unwrap();
        let aws = aws_nitro_root_g1();
        let cross = cross_certify(
            &root.certificate,
            &root.private_key_pem,
            &aws,
            t("2021-01-01T00:00:00Z"),
            t("2025-01-01T00:00:00Z"),
        )
        .unwrap();
        let (_, cross) = X509Certificate::from_der(&cross).unwrap();
        let (_, aws) = X509Certificate::from_der(&aws).unwrap();
        let (_, national) = X509Certificate::from_der(&root.certificate).unwrap();
        assert_eq!(cross.subject().as_raw(), aws.subject().as_raw());
        assert_eq!(cross.public_key().raw, aws.public_key().raw);
        assert_eq!(cross.issuer().as_raw(), national.subject().as_raw());
        assert!(cross.is_ca());
    }

    #[test]
    fn refuses_a_key_that_is_not_the_issuers() {
        let a = init_root(
            "A",
            "O",
            "GB",
            t("2020-01-01T00:00:00Z"),
            t("2030-01-01T00:00:00Z"),
        );
        let b = init_root(
            "B",
            "O",
            "GB",
            t("2020-01-01T00:00:00Z"),
            t("2030-01-01T00:00:00Z"),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let err = cross_certify(
            &a.certificate,
            &b.private_key_pem,
            &aws_nitro_root_g1(),
            t("2021-01-01T00:00:00Z"),
            t("2022-01-01T00:00:00Z"),
        );
        assert_eq!(err.unwrap_err(), PkiError::KeyMismatch);
    }

    #[test]
    fn refuses_inverted_validity() {
        let err = init_root(
            "A",
            "O",
            "GB",
            t("2030-01-01T00:00:00Z"),
            t("2020-01-01T00:00:00Z"),
        );
        assert!(matches!(err, Err(PkiError::Validity(_))));
    }
}
