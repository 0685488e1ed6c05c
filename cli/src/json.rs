//! The `--json` shapes. They are a stable interface documented in docs/cli.md: add fields, never
//! rename or remove them.

use attest::{
    Encoding, ParseError, PcrIndex, PcrValue, PolicyViolation, Unverified, VerifiedDocument,
    VerifyError,
};
use data_encoding::HEXLOWER;
use serde_json::{Map, Value, json};

/// Version of every JSON shape `attest` prints.
pub(crate) const SCHEMA_VERSION: u64 = 1;

pub(crate) fn hex_or_null(bytes: Option<&[u8]>) -> Value {
    bytes.map_or(Value::Null, |b| Value::String(HEXLOWER.encode(b)))
}

pub(crate) fn pcrs<'a>(pcrs: impl IntoIterator<Item = (&'a PcrIndex, &'a PcrValue)>) -> Value {
    let map: Map<String, Value> = pcrs
        .into_iter()
        .map(|(i, v)| (i.get().to_string(), Value::String(v.to_hex())))
        .collect();
    Value::Object(map)
}

pub(crate) fn encoding(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Raw => "cbor",
        Encoding::Hex => "hex",
        Encoding::Base64 => "base64",
    }
}

pub(crate) fn verified_document(doc: &VerifiedDocument) -> Value {
    json!({
        "sha384": HEXLOWER.encode(doc.sha384()),
        "module_id": doc.module_id(),
        "timestamp": doc.timestamp().to_string(),
        "timestamp_ms": doc.timestamp().unix_millis(),
        "digest": "SHA384",
        "pcrs": pcrs(doc.pcrs()),
        "public_key": hex_or_null(doc.public_key()),
        "user_data": hex_or_null(doc.user_data()),
        "nonce": hex_or_null(doc.nonce()),
    })
}

/// What can be said of a document that was parsed but not (or not successfully) verified.
pub(crate) fn unverified_summary(sha384: &[u8], fields: &Unverified<'_>) -> Value {
    json!({
        "sha384": HEXLOWER.encode(sha384),
        "module_id": fields.module_id,
        "timestamp": fields.timestamp.to_string(),
        "timestamp_ms": fields.timestamp.unix_millis(),
    })
}

pub(crate) fn parse_error(error: &ParseError) -> Value {
    json!({ "kind": error.kind(), "message": error.to_string() })
}

pub(crate) fn verify_error(error: &VerifyError) -> Value {
    let mut out = json!({ "kind": error.kind(), "message": error.to_string() });
    let details = match error {
        VerifyError::CertificateExpired {
            position,
            subject,
            not_after,
            at,
        } => json!({
            "certificate": position.to_string(), "subject": subject,
            "not_after": not_after.to_string(), "at": at.to_string(),
        }),
        VerifyError::CertificateNotYetValid {
            position,
            subject,
            not_before,
            at,
        } => json!({
            "certificate": position.to_string(), "subject": subject,
            "not_before": not_before.to_string(), "at": at.to_string(),
        }),
        VerifyError::BasicConstraints {
            position, subject, ..
        }
        | VerifyError::KeyUsage {
            position, subject, ..
        }
        | VerifyError::ChainOrder {
            position, subject, ..
        } => json!({
            "certificate": position.to_string(), "subject": subject,
        }),
        VerifyError::UntrustedRoot { root, .. } => json!({ "root": root }),
        VerifyError::ChainShape { found } => json!({ "found": found }),
        VerifyError::Policy(violation) => policy_details(violation),
        _ => Value::Null,
    };
    if let (Value::Object(out), Value::Object(details)) = (&mut out, details) {
        out.extend(details);
    }
    out
}

fn policy_details(violation: &PolicyViolation) -> Value {
    let difference = |d: &attest::PcrDifference| {
        json!({
            "set": d.set, "pcr": d.index.get(), "expected": d.expected.to_hex(),
            "actual": d.actual.map(|a| a.to_hex()),
        })
    };
    match violation {
        PolicyViolation::PcrMismatch(d) => json!({ "differences": [difference(d)] }),
        PolicyViolation::NoMeasurementSetMatched(all) => {
            json!({ "differences": all.iter().map(difference).collect::<Vec<_>>() })
        }
        PolicyViolation::Stale {
            timestamp,
            at,
            age,
            max_age,
        } => json!({
            "timestamp": timestamp.to_string(), "at": at.to_string(),
            "age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            "max_age_ms": u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
        }),
        PolicyViolation::FromTheFuture { timestamp, at } => json!({
            "timestamp": timestamp.to_string(), "at": at.to_string(),
        }),
        PolicyViolation::NonceMismatch { expected, actual } => json!({
            "expected": expected, "actual": actual,
        }),
        PolicyViolation::NonceMissing { expected } => json!({ "expected": expected }),
        PolicyViolation::RegionNotAllowed { region, allowed } => json!({
            "region": region.as_str(),
            "allowed": allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        }),
        _ => Value::Null,
    }
}
