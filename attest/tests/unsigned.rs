//! Documents from an NSM that does not sign (QEMU's emulated Nitro enclave: COSE algorithm -1, a
//! zero signature, no certificate, no CA bundle) are refused by the parser as unsigned, naming
//! that, and can be read for display only; anything else that looks like one keeps its own
//! error.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use ciborium::value::Value;

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

struct Shape {
    algorithm: Option<i64>,
    signature: Vec<u8>,
    certificate: Vec<u8>,
    cabundle: Vec<Vec<u8>>,
    tagged: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            algorithm: Some(-1),
            signature: vec![0; 64],
            certificate: Vec::new(),
            cabundle: Vec::new(),
            tagged: false,
        }
    }
}

fn document(shape: &Shape) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.to_owned());
    let pcrs = (0..16u8)
        .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![i; 48])))
        .collect();
    let payload = Value::Map(vec![
        (text("module_id"), text("i-emulated-enc0123456789abcdef")),
        (text("digest"), text("SHA384")),
        (
            text("timestamp"),
            Value::Integer(1_765_000_000_000u64.into()),
        ),
        (text("pcrs"), Value::Map(pcrs)),
        (text("certificate"), Value::Bytes(shape.certificate.clone())),
        (
            text("cabundle"),
            Value::Array(shape.cabundle.iter().cloned().map(Value::Bytes).collect()),
        ),
        (text("public_key"), Value::Null),
        (text("user_data"), Value::Null),
        (text("nonce"), Value::Bytes(vec![0x5e, 0xed])),
    ]);
    let protected = match shape.algorithm {
        Some(alg) => cbor(&Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Integer(alg.into()),
        )])),
        None => cbor(&Value::Map(Vec::new())),
    };
    let envelope = Value::Array(vec![
        Value::Bytes(protected),
        Value::Map(Vec::new()),
        Value::Bytes(cbor(&payload)),
        Value::Bytes(shape.signature.clone()),
    ]);
    let envelope = if shape.tagged {
        Value::Tag(18, Box::new(envelope))
    } else {
        envelope
    };
    cbor(&envelope)
}

#[test]
fn an_emulated_nsms_document_is_refused_as_unsigned_and_readable_for_display() {
    for tagged in [false, true] {
        let bytes = document(&Shape {
            tagged,
            ..Shape::default()
        });
        let error = attest::parse(&bytes).unwrap_err();
        assert_eq!(error.kind(), "unsigned_document");
        let message = error.to_string();
        assert!(message.contains("not signed"), "{message}");
        assert!(message.contains("algorithm -1"), "{message}");

        let unsigned = attest::parse_unsigned(&bytes).unwrap();
        assert_eq!(unsigned.algorithm, Some(-1));
        assert_eq!(unsigned.signature_len, 64);
        let fields = unsigned.unverified();
        assert_eq!(fields.module_id, "i-emulated-enc0123456789abcdef");
        assert_eq!(fields.pcrs.len(), 16);
        let pcr0 = fields.pcrs.values().next().unwrap();
        assert_eq!(pcr0.as_bytes(), &[0u8; 48]);
        assert_eq!(fields.nonce, Some(&[0x5e, 0xed][..]));
        assert!(fields.certificate.is_empty() && fields.cabundle.is_empty());
    }
    // No algorithm at all is unsigned too.
    let bytes = document(&Shape {
        algorithm: None,
        ..Shape::default()
    });
    assert_eq!(
        attest::parse(&bytes).unwrap_err().kind(),
        "unsigned_document"
    );
}

#[test]
fn what_only_looks_unsigned_keeps_its_own_error() {
    // A signature that is not all zero: a wrong algorithm, not an unsigned document.
    let mut signature = vec![0; 64];
    signature[7] = 1;
    let bytes = document(&Shape {
        signature,
        ..Shape::default()
    });
    assert_eq!(
        attest::parse(&bytes).unwrap_err().kind(),
        "malformed_document"
    );
    assert!(attest::parse_unsigned(&bytes).is_err());

    // QEMU's own shape: a certificate and one CA bundle entry of 64 zero bytes each.
    let bytes = document(&Shape {
        certificate: vec![0; 64],
        cabundle: vec![vec![0; 64]],
        ..Shape::default()
    });
    assert_eq!(
        attest::parse(&bytes).unwrap_err().kind(),
        "unsigned_document"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(attest::parse_unsigned(&trailing).is_err());

    // A zero signature but a real certificate: not the emulator's shape.
    let bytes = document(&Shape {
        certificate: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        cabundle: vec![vec![0x30, 0x00]],
        ..Shape::default()
    });
    assert_eq!(
        attest::parse(&bytes).unwrap_err().kind(),
        "malformed_document"
    );
    assert!(attest::parse_unsigned(&bytes).is_err());

    // ES384 with a zero signature parses (its signature fails later, in verification): the
    // unsigned reading never applies to an ES384 document.
    let bytes = document(&Shape {
        algorithm: Some(-35),
        signature: vec![0; 96],
        certificate: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        cabundle: vec![vec![0x30, 0x00]],
        ..Shape::default()
    });
    assert!(attest::parse(&bytes).is_ok());
    assert!(attest::parse_unsigned(&bytes).is_err());

    // Garbage is never "unsigned".
    assert!(attest::parse_unsigned(b"\x84\x40\xa0\x40").is_err());
    assert!(attest::parse_unsigned(&[0xff; 10]).is_err());
}

/// A real document from QEMU 10.0.2's `nitro-enclave` machine (its emulated NSM), fetched from
/// our runtime booted there by `tests/tests/emulator.rs`, with the nonce 5eed.
#[test]
fn qemus_real_document_is_unsigned() {
    let bytes = include_bytes!("data/qemu-nitro-enclave-10.0.2.cbor");
    let unsigned = attest::parse_unsigned(bytes).unwrap();
    assert_eq!(unsigned.algorithm, Some(-1));
    assert_eq!(unsigned.signature_len, 64);
    assert_eq!(unsigned.unverified().nonce, Some(&[0x5e, 0xed][..]));
    assert_eq!(
        attest::parse(bytes).unwrap_err().kind(),
        "unsigned_document"
    );
}
