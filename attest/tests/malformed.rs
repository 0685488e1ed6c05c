//! Malformed documents: each rule of the format has a document that breaks only that rule, and
//! the parser names it. Documents are rebuilt from a real one with one thing changed.
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use attest::{ParseError, Policy, VerifyError};
use ciborium::Value;
use common::{assemble, dissect, encode};

type Map = Vec<(Value, Value)>;

/// The real document with its payload map changed by `edit`, and its original signature.
fn with_payload(edit: impl FnOnce(&mut Map)) -> Vec<u8> {
    let (protected, mut map, signature) = dissect(&common::fixture(common::PROD));
    edit(&mut map);
    assemble(&protected, &encode(&Value::Map(map)), &signature)
}

fn field<'a>(map: &'a mut Map, name: &str) -> &'a mut Value {
    &mut map
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(name))
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

fn parse_err(bytes: &[u8]) -> ParseError {
    attest::parse(bytes).expect_err("should not parse")
}

#[test]
fn the_unmodified_rebuild_parses_and_verifies() {
    let bytes = with_payload(|_| {});
    let doc = attest::parse(&bytes).unwrap();
    common::aws_verifier()
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap();
}

#[test]
fn a_tagged_cose_sign1_is_accepted_and_other_tags_are_not() {
    let bytes = common::fixture(common::PROD);
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&bytes);
    let doc = attest::parse(&tagged).unwrap();
    common::aws_verifier()
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap();
    let mut wrong = vec![0xd1];
    wrong.extend_from_slice(&bytes);
    assert_eq!(parse_err(&wrong), ParseError::UnexpectedTag { tag: 17 });
}

#[test]
fn duplicate_keys_are_refused() {
    let bytes = with_payload(|m| {
        let dup = m
            .iter()
            .find(|(k, _)| k.as_text() == Some("nonce"))
            .cloned();
        m.push(dup.unwrap_or((Value::Text("nonce".into()), Value::Null)));
    });
    assert_eq!(
        parse_err(&bytes),
        ParseError::DuplicateField {
            field: "nonce".into()
        }
    );
}

#[test]
fn trailing_bytes_after_the_payload_are_refused() {
    let (protected, map, signature) = dissect(&common::fixture(common::PROD));
    let mut payload = encode(&Value::Map(map));
    payload.push(0x00);
    let err = parse_err(&assemble(&protected, &payload, &signature));
    assert!(matches!(err, ParseError::PayloadCbor { .. }), "{err:?}");
}

#[test]
fn every_required_field_is_required() {
    for name in [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
    ] {
        let bytes = with_payload(|m| m.retain(|(k, _)| k.as_text() != Some(name)));
        match parse_err(&bytes) {
            ParseError::MissingField { field } => assert_eq!(field, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn every_field_must_have_its_type() {
    for (name, wrong) in [
        ("module_id", Value::Bytes(b"i-0".to_vec())),
        ("digest", Value::Integer(384.into())),
        ("timestamp", Value::Text("2024-02-26".into())),
        ("timestamp", Value::Integer((-1).into())),
        ("timestamp", Value::Integer(0.into())),
        ("pcrs", Value::Array(vec![])),
        ("certificate", Value::Text("cert".into())),
        ("cabundle", Value::Bytes(vec![1])),
        ("public_key", Value::Text("key".into())),
        ("user_data", Value::Integer(1.into())),
        ("nonce", Value::Bool(true)),
    ] {
        let bytes = with_payload(|m| *field(m, name) = wrong.clone());
        match parse_err(&bytes) {
            ParseError::FieldType { field, .. } => assert_eq!(field, name, "{wrong:?}"),
            other => panic!("{name} = {wrong:?}: {other:?}"),
        }
    }
}

#[test]
fn oversize_fields_are_refused() {
    for (name, len) in [
        ("user_data", 1025),
        ("nonce", 1025),
        ("public_key", 1025),
        ("public_key", 0),
        ("certificate", 1025),
        ("certificate", 0),
        ("module_id", 0),
        ("module_id", 257),
    ] {
        let value = if name == "module_id" {
            Value::Text("i".repeat(len))
        } else {
            Value::Bytes(vec![0x30; len])
        };
        let bytes = with_payload(|m| *field(m, name) = value.clone());
        match parse_err(&bytes) {
            ParseError::FieldSize {
                field, len: found, ..
            } => {
                assert_eq!((field, found), (name, len));
            }
            other => panic!("{name} of {len}: {other:?}"),
        }
    }
    // The largest allowed values parse.
    let bytes = with_payload(|m| {
        *field(m, "user_data") = Value::Bytes(vec![7; 1024]);
        *field(m, "nonce") = Value::Bytes(vec![]);
    });
    attest::parse(&bytes).unwrap();
}

#[test]
fn unknown_fields_and_non_text_keys_are_refused() {
    let bytes = with_payload(|m| m.push((Value::Text("extra".into()), Value::Null)));
    assert_eq!(
        parse_err(&bytes),
        ParseError::UnknownField {
            field: "extra".into()
        }
    );
    let bytes = with_payload(|m| m.push((Value::Integer(1.into()), Value::Null)));
    assert_eq!(parse_err(&bytes), ParseError::NonTextKey);
}

#[test]
fn the_digest_must_be_sha384() {
    let bytes = with_payload(|m| *field(m, "digest") = Value::Text("SHA256".into()));
    assert!(matches!(
        parse_err(&bytes),
        ParseError::FieldValue {
            field: "digest",
            ..
        }
    ));
}

#[test]
fn pcr_maps_are_bounded() {
    let pcr = |i: u64, len: usize| (Value::Integer(i.into()), Value::Bytes(vec![0; len]));
    let cases: Vec<(Vec<(Value, Value)>, &str)> = vec![
        (vec![], "0 PCRs"),
        ((0..33).map(|i| pcr(i % 32, 48)).collect(), "33 PCRs"),
        (vec![pcr(32, 48)], "index 32"),
        (vec![pcr(0, 32)], "32-byte PCR"),
        (vec![pcr(0, 48), pcr(0, 48)], "duplicate index"),
        (
            vec![(Value::Text("0".into()), Value::Bytes(vec![0; 48]))],
            "text index",
        ),
    ];
    for (pcrs, what) in cases {
        let bytes = with_payload(|m| *field(m, "pcrs") = Value::Map(pcrs.clone()));
        match parse_err(&bytes) {
            ParseError::FieldSize { field: "pcrs", .. }
            | ParseError::FieldValue { field: "pcrs", .. }
            | ParseError::FieldType { field: "pcrs", .. } => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn cabundle_must_be_non_empty_and_bounded() {
    let bytes = with_payload(|m| *field(m, "cabundle") = Value::Array(vec![]));
    assert!(matches!(
        parse_err(&bytes),
        ParseError::FieldSize {
            field: "cabundle",
            len: 0,
            ..
        }
    ));
    let bytes = with_payload(|m| {
        *field(m, "cabundle") = Value::Array(vec![Value::Bytes(vec![0x30; 10]); 9]);
    });
    assert!(matches!(
        parse_err(&bytes),
        ParseError::FieldSize {
            field: "cabundle",
            len: 9,
            ..
        }
    ));
}

#[test]
fn cabundle_in_the_wrong_order_is_refused() {
    let verifier = common::aws_verifier();
    for edit in [
        (|v: &mut Vec<Value>| v.reverse()) as fn(&mut Vec<Value>),
        |v| v.swap(1, 2),
        |v| v.swap(0, 3),
    ] {
        let bytes = with_payload(|m| {
            let Value::Array(bundle) = field(m, "cabundle") else {
                panic!()
            };
            edit(bundle);
        });
        let doc = attest::parse(&bytes).unwrap();
        let err = verifier
            .verify(
                &doc,
                &Policy::new().dangerous_any_measurements(),
                doc.timestamp(),
            )
            .unwrap_err();
        assert!(matches!(err, VerifyError::ChainOrder { .. }), "{err:?}");
    }
}

/// A bundle missing a level, or with one more, is not the Nitro shape: refused before any path
/// is searched, naming how many certificates it holds.
#[test]
fn cabundle_of_another_length_is_refused() {
    let verifier = common::aws_verifier();
    for (edit, len) in [
        (
            (|v: &mut Vec<Value>| {
                v.remove(0);
            }) as fn(&mut Vec<Value>),
            3,
        ),
        (
            |v| {
                v.remove(2);
            },
            3,
        ),
        (|v| v.truncate(1), 1),
        (|v| v.clear(), 0),
        (
            |v| {
                let last = v.last().cloned().unwrap();
                v.push(last);
            },
            5,
        ),
    ] {
        let bytes = with_payload(|m| {
            let Value::Array(bundle) = field(m, "cabundle") else {
                panic!()
            };
            edit(bundle);
        });
        let Ok(doc) = attest::parse(&bytes) else {
            // An empty cabundle is already a parse error.
            assert_eq!(len, 0);
            continue;
        };
        let err = verifier
            .verify(
                &doc,
                &Policy::new().dangerous_any_measurements(),
                doc.timestamp(),
            )
            .unwrap_err();
        assert_eq!(err, VerifyError::ChainShape { found: len });
    }
}

#[test]
fn the_algorithm_must_be_exactly_es384() {
    let (_, map, signature) = dissect(&common::fixture(common::PROD));
    let payload = encode(&Value::Map(map));
    let header = |pairs: Vec<(Value, Value)>| encode(&Value::Map(pairs));
    let alg = |a: i64| (Value::Integer(1.into()), Value::Integer(a.into()));
    for protected in [
        header(vec![alg(-7)]),  // ES256
        header(vec![alg(-36)]), // ES512
        header(vec![]),
        header(vec![
            alg(-35),
            (Value::Integer(4.into()), Value::Bytes(b"kid".to_vec())),
        ]),
        Vec::new(),
    ] {
        let err = parse_err(&assemble(&protected, &payload, &signature));
        assert!(matches!(err, ParseError::Algorithm { .. }), "{err:?}");
    }
}

#[test]
fn signatures_must_be_96_bytes() {
    let (protected, map, signature) = dissect(&common::fixture(common::PROD));
    let payload = encode(&Value::Map(map));
    for len in [0, 95, 97, 104] {
        let mut sig = signature.clone();
        sig.resize(len, 0);
        assert_eq!(
            parse_err(&assemble(&protected, &payload, &sig)),
            ParseError::SignatureLength { len }
        );
    }
}

#[test]
fn the_payload_must_be_a_map_and_present() {
    let (protected, _, signature) = dissect(&common::fixture(common::PROD));
    let err = parse_err(&assemble(
        &protected,
        &encode(&Value::Array(vec![])),
        &signature,
    ));
    assert_eq!(err, ParseError::PayloadNotMap);
    let detached = encode(&Value::Array(vec![
        Value::Bytes(protected),
        Value::Map(vec![]),
        Value::Null,
        Value::Bytes(signature),
    ]));
    assert_eq!(parse_err(&detached), ParseError::PayloadMissing);
}

#[test]
fn oversize_documents_are_refused_before_parsing() {
    let err = parse_err(&vec![0x84; attest::MAX_DOCUMENT_LEN + 1]);
    assert!(matches!(err, ParseError::TooLarge { .. }));
}

#[test]
fn a_leaf_that_is_a_ca_or_a_swapped_leaf_is_refused() {
    let bytes = with_payload(|m| {
        let Value::Array(bundle) = field(m, "cabundle").clone() else {
            panic!()
        };
        let instance_ca = bundle.last().unwrap().clone();
        bundle.len();
        *field(m, "certificate") = instance_ca;
    });
    let doc = attest::parse(&bytes).unwrap();
    let err = common::aws_verifier()
        .verify(
            &doc,
            &Policy::new().dangerous_any_measurements(),
            doc.timestamp(),
        )
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::BasicConstraints { .. }),
        "{err:?}"
    );

    // Another real document's leaf: a valid certificate, but not the one that signed this.
    let other = common::parsed("marlin-20240403-b723381a.cbor");
    let other_leaf = other.unverified().certificate.to_vec();
    let bytes = with_payload(|m| *field(m, "certificate") = Value::Bytes(other_leaf));
    let doc = attest::parse(&bytes).unwrap();
    assert!(
        common::aws_verifier()
            .verify(
                &doc,
                &Policy::new().dangerous_any_measurements(),
                doc.timestamp()
            )
            .is_err()
    );
}
