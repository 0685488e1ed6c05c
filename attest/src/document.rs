//! Parsing: the syntax of a Nitro attestation document, and nothing about trust.
//!
//! A document is a COSE_Sign1 (RFC 9052), tagged or untagged, whose protected header is exactly
//! `{alg: ES384}` and whose payload is a CBOR map with the fields of AWS's CDDL schema. Parsing
//! is strict: every required field with its type, no duplicate or unknown keys, no trailing bytes,
//! and every field within its bound.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use cbor::{ErrorKind, Profile, Reader, required};
use coset::{CborSerializable, CoseSign1, TaggedCborSerializable, iana};

use crate::error::ParseError;
use crate::time::Timestamp;
use crate::types::{MAX_USER_FIELD_LEN, PCR_LEN, PCR_SLOTS, PcrIndex, PcrValue, short_hex};

/// The largest document accepted, in bytes. Real documents are about 4.5 KiB; a document with
/// every field at its bound is under 20 KiB.
pub const MAX_DOCUMENT_LEN: usize = 32 * 1024;

/// The most certificates `cabundle` may hold (AWS chains have four: root, regional, zonal,
/// instance).
pub const MAX_CABUNDLE_LEN: usize = 8;

/// The largest certificate accepted, per AWS's schema.
pub const MAX_CERT_LEN: usize = 1024;

const MAX_MODULE_ID_LEN: usize = 256;
const ES384_SIGNATURE_LEN: usize = 96;
const COSE_SIGN1_TAG: u8 = 0xd2;

/// A syntactically valid attestation document. It has not been verified: it exposes nothing a
/// caller should act on. [`crate::Verifier::verify`] turns it into a [`crate::VerifiedDocument`].
/// Its `Debug` names it by hash, so that logging one never logs the document.
#[derive(Clone)]
pub struct ParsedDocument {
    pub(crate) cose: CoseSign1,
    pub(crate) payload: Payload,
    pub(crate) sha384: [u8; 48],
}

/// The decoded payload fields.
#[derive(Clone)]
pub(crate) struct Payload {
    pub(crate) module_id: String,
    pub(crate) timestamp: Timestamp,
    pub(crate) pcrs: BTreeMap<PcrIndex, PcrValue>,
    pub(crate) certificate: Vec<u8>,
    pub(crate) cabundle: Vec<Vec<u8>>,
    pub(crate) public_key: Option<Vec<u8>>,
    pub(crate) user_data: Option<Vec<u8>>,
    pub(crate) nonce: Option<Vec<u8>>,
}

impl Payload {
    /// Every field, for display, as unverified as the document that carried it.
    fn unverified(&self) -> Unverified<'_> {
        Unverified {
            module_id: &self.module_id,
            timestamp: self.timestamp,
            pcrs: &self.pcrs,
            certificate: &self.certificate,
            cabundle: &self.cabundle,
            public_key: self.public_key.as_deref(),
            user_data: self.user_data.as_deref(),
            nonce: self.nonce.as_deref(),
        }
    }
}

impl Payload {
    pub(crate) fn pcr0(&self) -> Option<&PcrValue> {
        self.pcrs
            .iter()
            .next()
            .filter(|(i, _)| i.get() == 0)
            .map(|(_, v)| v)
    }
}

/// Parse a document: syntax only. See the module documentation for what is checked.
pub fn parse(bytes: &[u8]) -> Result<ParsedDocument, ParseError> {
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(ParseError::TooLarge {
            len: bytes.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    let cose = decode_cose(bytes).map_err(|e| unsigned_or(bytes, e))?;
    check_protected_header(&cose).map_err(|e| unsigned_or(bytes, e))?;
    if cose.signature.len() != ES384_SIGNATURE_LEN {
        return Err(ParseError::SignatureLength {
            len: cose.signature.len(),
        });
    }
    let payload_bytes = cose.payload.as_deref().ok_or(ParseError::PayloadMissing)?;
    let payload = decode_payload(payload_bytes)?;
    let mut sha384 = [0; 48];
    sha384.copy_from_slice(digest::digest(&digest::SHA384, bytes).as_ref());
    Ok(ParsedDocument {
        cose,
        payload,
        sha384,
    })
}

impl ParsedDocument {
    /// When the document claims it was made. Unverified until [`crate::Verifier::verify`]
    /// succeeds, but safe to use as the time to verify at (`--at document`): a forged timestamp
    /// breaks the signature.
    pub fn timestamp(&self) -> Timestamp {
        self.payload.timestamp
    }

    /// SHA-384 of the document's bytes: an identifier for logs, never the document itself.
    pub fn sha384(&self) -> &[u8; 48] {
        &self.sha384
    }

    /// Every decoded field, for display. Nothing here has been verified.
    pub fn unverified(&self) -> Unverified<'_> {
        self.payload.unverified()
    }
}

impl core::fmt::Debug for ParsedDocument {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ParsedDocument")
            .field("sha384", &short_hex(&self.sha384))
            .field("module_id", &self.payload.module_id)
            .field("timestamp", &self.payload.timestamp)
            .finish_non_exhaustive()
    }
}

/// The fields of a document that has only been parsed. The name is the warning: none of this
/// may be trusted, it is for `attest inspect` and for diagnostics.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Unverified<'a> {
    /// The enclave's module id (unverified).
    pub module_id: &'a str,
    /// When the document says it was made.
    pub timestamp: Timestamp,
    /// The PCRs (unverified).
    pub pcrs: &'a BTreeMap<PcrIndex, PcrValue>,
    /// The leaf certificate (unverified).
    pub certificate: &'a [u8],
    /// The CA certificates, root first (unverified).
    pub cabundle: &'a [Vec<u8>],
    /// The public key (unverified).
    pub public_key: Option<&'a [u8]>,
    /// The user data (unverified).
    pub user_data: Option<&'a [u8]>,
    /// The nonce (unverified).
    pub nonce: Option<&'a [u8]>,
}

fn decode_cose(bytes: &[u8]) -> Result<CoseSign1, ParseError> {
    let cose_error = |e: coset::CoseError| ParseError::Cose {
        reason: e.to_string(),
    };
    match bytes.first() {
        Some(&COSE_SIGN1_TAG) => CoseSign1::from_tagged_slice(bytes).map_err(cose_error),
        // Major type 6 is a tag; any tag other than 18 is the wrong structure.
        Some(b) if b >> 5 == 6 => match Reader::leading_tag(bytes) {
            Some(tag) => Err(ParseError::UnexpectedTag { tag }),
            None => Err(ParseError::Cose {
                reason: "a tag cut short".to_owned(),
            }),
        },
        _ => CoseSign1::from_slice(bytes).map_err(cose_error),
    }
}

fn check_protected_header(cose: &CoseSign1) -> Result<(), ParseError> {
    let expected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .build();
    if cose.protected.header == expected {
        return Ok(());
    }
    let found = match &cose.protected.header.alg {
        Some(alg) if cose.protected.header.alg == expected.alg => {
            format!("{alg:?} with other parameters")
        }
        Some(alg) => format!("{alg:?}"),
        None => "no algorithm".to_owned(),
    };
    Err(ParseError::Algorithm { found })
}

/// The payload's fields, in AWS's schema.
const FIELDS: [&str; 9] = [
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
];

fn decode_payload(bytes: &[u8]) -> Result<Payload, ParseError> {
    Reader::read_all(bytes, MAX_DOCUMENT_LEN, Profile::Document, |r| {
        read_payload(r, Signed::Yes)
    })
}

/// Whether the payload belongs to a signed document (which names its certificate and CA
/// bundle) or to an emulated NSM's unsigned one (which leaves both empty).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signed {
    Yes,
    No,
}

/// A document from an NSM that does not sign, as QEMU's emulated Nitro enclave makes them: a
/// COSE_Sign1 whose algorithm is not ES384 (QEMU writes -1), whose signature is all zero bytes
/// and whose certificate and CA bundle entries are all zero bytes too (QEMU writes 64 each) or
/// empty. Its fields can be shown (`attest inspect`), never
/// trusted: [`parse`] refuses it with [`ParseError::Unsigned`], so no verifier accepts it.
pub struct UnsignedDocument {
    /// The COSE algorithm the protected header names, if any.
    pub algorithm: Option<i128>,
    /// The signature's length (all of it zero bytes).
    pub signature_len: usize,
    payload: Payload,
}

impl core::fmt::Debug for UnsignedDocument {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UnsignedDocument")
            .field("algorithm", &self.algorithm)
            .field("module_id", &self.payload.module_id)
            .finish_non_exhaustive()
    }
}

impl UnsignedDocument {
    /// Every decoded field, for display. None of it is signed.
    pub fn unverified(&self) -> Unverified<'_> {
        self.payload.unverified()
    }
}

/// Read a document that [`parse`] refused as [`ParseError::Unsigned`], for display only.
pub fn parse_unsigned(bytes: &[u8]) -> Result<UnsignedDocument, ParseError> {
    use coset::cbor::value::Value;
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(ParseError::TooLarge {
            len: bytes.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    let not_cose = |reason: &str| ParseError::Cose {
        reason: reason.to_owned(),
    };
    let mut input = bytes;
    let value: Value = coset::cbor::de::from_reader(&mut input)
        .map_err(|e| not_cose(&format!("not one CBOR item: {e}")))?;
    if !input.is_empty() {
        return Err(not_cose("bytes after the COSE_Sign1 structure"));
    }
    let items = match value {
        Value::Tag(18, inner) => match *inner {
            Value::Array(items) => items,
            _ => return Err(not_cose("tag 18 on something other than an array")),
        },
        Value::Array(items) => items,
        _ => return Err(not_cose("not an array")),
    };
    let [
        Value::Bytes(protected),
        Value::Map(_),
        Value::Bytes(payload),
        Value::Bytes(signature),
    ] = items.as_slice()
    else {
        return Err(not_cose("not [protected, unprotected, payload, signature]"));
    };
    let header: Value = coset::cbor::de::from_reader(protected.as_slice())
        .map_err(|_| not_cose("the protected header is not CBOR"))?;
    let algorithm = match header {
        Value::Map(entries) => entries.iter().find_map(|(k, v)| match (k, v) {
            (Value::Integer(k), Value::Integer(v)) if i128::from(*k) == 1 => Some(i128::from(*v)),
            _ => None,
        }),
        _ => return Err(not_cose("the protected header is not a map")),
    };
    // COSE algorithm ES384 (RFC 9053).
    let es384: i128 = -35;
    if algorithm == Some(es384) || signature.iter().any(|&b| b != 0) {
        return Err(not_cose(
            "signed: an ES384 algorithm or a non-zero signature",
        ));
    }
    let payload = Reader::read_all(payload, MAX_DOCUMENT_LEN, Profile::Document, |r| {
        read_payload(r, Signed::No)
    })?;
    // QEMU writes a certificate and one CA bundle entry of 64 zero bytes each; empty ones are
    // unsigned too. A real certificate is never all zero.
    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    if !zero(&payload.certificate) || !payload.cabundle.iter().all(|c| zero(c)) {
        return Err(not_cose("unsigned, yet it names a certificate"));
    }
    Ok(UnsignedDocument {
        algorithm,
        signature_len: signature.len(),
        payload,
    })
}

/// The error for a document that failed the strict reading: [`ParseError::Unsigned`] when it is
/// an unsigned document, else the error itself.
fn unsigned_or(bytes: &[u8], error: ParseError) -> ParseError {
    match parse_unsigned(bytes) {
        Ok(unsigned) => ParseError::Unsigned {
            algorithm: unsigned
                .algorithm
                .map_or_else(|| "none".to_owned(), |a| a.to_string()),
            signature_len: unsigned.signature_len,
        },
        Err(_) => error,
    }
}

fn read_payload(r: &mut Reader<'_>, signed: Signed) -> Result<Payload, ParseError> {
    let mut module_id = None;
    let mut digest = None;
    let mut timestamp = None;
    let mut pcrs = None;
    let mut certificate = None;
    let mut cabundle = None;
    let (mut public_key, mut user_data, mut nonce) = (None, None, None);
    let mut map = r.map()?;
    while let Some(key) = map.key(&FIELDS)? {
        let value = map.value();
        match key {
            "module_id" => module_id = Some(value.text()?),
            "digest" => digest = Some(value.text()?),
            "timestamp" => timestamp = Some(read_timestamp(value)?),
            "pcrs" => pcrs = Some(read_pcrs(value)?),
            "certificate" => certificate = Some(value.bytes()?),
            "cabundle" => cabundle = Some(read_cabundle(value, signed)?),
            "public_key" => public_key = optional_bytes(value, "public_key", 1)?,
            "user_data" => user_data = optional_bytes(value, "user_data", 0)?,
            _ => nonce = optional_bytes(value, "nonce", 0)?,
        }
    }

    let digest = required(digest, "digest")?;
    if digest != "SHA384" {
        return Err(ParseError::FieldValue {
            field: "digest",
            reason: format!("{:?} is not \"SHA384\"", truncate(digest)),
        });
    }
    let module_id = required(module_id, "module_id")?;
    check_len(
        "module_id",
        module_id.len(),
        1,
        MAX_MODULE_ID_LEN,
        "1..=256 bytes",
    )?;
    // An instance and enclave id: printable. A control character would corrupt every log line
    // and log entry that names the enclave.
    if module_id.chars().any(char::is_control) {
        return Err(ParseError::FieldValue {
            field: "module_id",
            reason: "contains a control character".to_owned(),
        });
    }
    let certificate = required(certificate, "certificate")?;
    if signed == Signed::Yes {
        check_len(
            "certificate",
            certificate.len(),
            1,
            MAX_CERT_LEN,
            "1..=1024 bytes",
        )?;
    }
    Ok(Payload {
        module_id: module_id.to_owned(),
        timestamp: Timestamp::from_unix_millis(required(timestamp, "timestamp")?),
        pcrs: required(pcrs, "pcrs")?,
        certificate: certificate.to_vec(),
        cabundle: required(cabundle, "cabundle")?,
        public_key,
        user_data,
        nonce,
    })
}

fn read_timestamp(r: &mut Reader<'_>) -> Result<u64, ParseError> {
    let wrong = || ParseError::FieldType {
        field: "timestamp",
        expected: "a positive integer (milliseconds since the Unix epoch)",
    };
    match r.uint() {
        Ok(0) => Err(wrong()),
        Ok(millis) => Ok(millis),
        Err(e) if matches!(e.kind(), ErrorKind::Type { .. }) => Err(wrong()),
        Err(e) => Err(e.into()),
    }
}

fn read_pcrs(r: &mut Reader<'_>) -> Result<BTreeMap<PcrIndex, PcrValue>, ParseError> {
    let mut map = r.map()?;
    let key_type = |e: cbor::Error| match e.kind() {
        ErrorKind::KeyType { .. } => ParseError::FieldType {
            field: "pcrs",
            expected: "a map with unsigned integer keys",
        },
        _ => ParseError::from(e),
    };
    check_len(
        "pcrs",
        map.remaining(),
        1,
        usize::from(PCR_SLOTS),
        "1..=32 entries",
    )?;
    let mut pcrs = BTreeMap::new();
    while let Some(index) = map.uint_key().map_err(key_type)? {
        let index = PcrIndex::try_from(index).map_err(|_| ParseError::FieldValue {
            field: "pcrs",
            reason: format!("index {index} is outside 0..=31"),
        })?;
        let bytes = map.value().bytes()?;
        let pcr = PcrValue::try_from(bytes).map_err(|_| ParseError::FieldValue {
            field: "pcrs",
            reason: format!(
                "{index} is {} bytes; SHA384 PCRs are {PCR_LEN}",
                bytes.len()
            ),
        })?;
        pcrs.insert(index, pcr);
    }
    Ok(pcrs)
}

fn read_cabundle(r: &mut Reader<'_>, signed: Signed) -> Result<Vec<Vec<u8>>, ParseError> {
    let count = match r.array(u64::try_from(MAX_CABUNDLE_LEN).unwrap_or(u64::MAX)) {
        Err(e) => match e.kind() {
            ErrorKind::TooMany { len, .. } => {
                return Err(ParseError::FieldSize {
                    field: "cabundle",
                    len: usize::try_from(*len).unwrap_or(usize::MAX),
                    bound: "1..=8 certificates",
                });
            }
            _ => return Err(e.into()),
        },
        Ok(count) => count,
    };
    if signed == Signed::Yes || count > 0 {
        check_len("cabundle", count, 1, MAX_CABUNDLE_LEN, "1..=8 certificates")?;
    }
    (0..count)
        .map(|_| {
            let cert = r.bytes()?;
            check_len(
                "cabundle",
                cert.len(),
                1,
                MAX_CERT_LEN,
                "1..=1024 bytes per certificate",
            )?;
            Ok(cert.to_vec())
        })
        .collect()
}

/// An optional field may be absent or null (the NSM writes null for a field it was not given).
fn optional_bytes(
    r: &mut Reader<'_>,
    field: &'static str,
    min: usize,
) -> Result<Option<Vec<u8>>, ParseError> {
    let Some(bytes) = r.nullable(|r| r.bytes()).map_err(|e| match e.kind() {
        ErrorKind::Type { .. } => ParseError::FieldType {
            field,
            expected: "a byte string or null",
        },
        _ => ParseError::from(e),
    })?
    else {
        return Ok(None);
    };
    let bound = if min == 0 {
        "0..=1024 bytes"
    } else {
        "1..=1024 bytes"
    };
    check_len(field, bytes.len(), min, MAX_USER_FIELD_LEN, bound)?;
    Ok(Some(bytes.to_vec()))
}

fn check_len(
    field: &'static str,
    len: usize,
    min: usize,
    max: usize,
    bound: &'static str,
) -> Result<(), ParseError> {
    if (min..=max).contains(&len) {
        Ok(())
    } else {
        Err(ParseError::FieldSize { field, len, bound })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}
