use cbor::ErrorKind;
use ciborium::Value;

use super::*;

/// A malformed-message error of this kind.
fn malformed(error: &WireError, kind: fn(&ErrorKind) -> bool) -> bool {
    matches!(error, WireError::Malformed(e) if kind(e.kind()))
}

fn nonce(bytes: &[u8]) -> Nonce {
    Nonce::try_from(bytes).unwrap()
}

fn cbor(value: Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(&value, &mut out).unwrap();
    out
}

/// A map with its keys in the deterministic order (shorter first, then bytewise), written by
/// another encoder than ours.
fn map(fields: &[(&str, Value)]) -> Value {
    let mut fields = fields.to_vec();
    fields.sort_by(|(a, _), (b, _)| (a.len(), *a).cmp(&(b.len(), *b)));
    unsorted_map(&fields)
}

fn unsorted_map(fields: &[(&str, Value)]) -> Value {
    Value::Map(
        fields
            .iter()
            .map(|(k, v)| (Value::Text((*k).into()), v.clone()))
            .collect(),
    )
}

fn attestation_request(extra: &[(&str, Value)]) -> Vec<u8> {
    let mut fields = vec![
        ("v", Value::Integer(1.into())),
        ("id", Value::Integer(5.into())),
        ("op", Value::Text("attestation".into())),
        ("nonce", Value::Bytes(vec![1; 16])),
    ];
    fields.extend_from_slice(extra);
    cbor(map(&fields))
}

#[test]
fn every_message_round_trips() {
    let requests = [
        Request {
            id: 0,
            body: RequestBody::Health,
        },
        Request {
            id: u64::MAX,
            body: RequestBody::Attestation {
                nonce: nonce(&[0xab; MAX_USER_FIELD_LEN]),
            },
        },
    ];
    for request in requests {
        assert_eq!(Request::decode(&request.encode()).unwrap(), request);
    }
    let responses = [
        Response {
            id: 1,
            body: ResponseBody::Health(Health {
                version: "0.1.0".into(),
                nsm: NsmKind::Simulated,
                config_digest: [7; CONFIG_DIGEST_LEN],
                model: None,
                port_limits: Vec::new(),
            }),
        },
        Response {
            id: 4,
            body: ResponseBody::Health(Health {
                version: "0.1.0".into(),
                nsm: NsmKind::Nitro,
                config_digest: [7; CONFIG_DIGEST_LEN],
                model: Some(ModelStatus {
                    id: "smollm2".into(),
                    state: ModelState::Ready,
                    sha384: Some([9; 48]),
                    detail: None,
                }),
                port_limits: vec![(5000, 64), (8000, 64), (u32::MAX - 1, u32::MAX)],
            }),
        },
        Response {
            id: 5,
            body: ResponseBody::Health(Health {
                version: "0.1.0".into(),
                nsm: NsmKind::Emulator,
                config_digest: [7; CONFIG_DIGEST_LEN],
                model: Some(ModelStatus {
                    id: "smollm2".into(),
                    state: ModelState::Failed,
                    sha384: None,
                    detail: Some("denied: pcr_mismatch".into()),
                }),
                port_limits: vec![(5000, 1)],
            }),
        },
        Response {
            id: 2,
            body: ResponseBody::Attestation {
                document: vec![0x84; MAX_DOCUMENT_LEN],
            },
        },
        Response::error(3, ErrorCode::Busy, "at the connection limit"),
    ];
    for response in responses {
        let encoded = response.encode();
        assert!(encoded.len() <= MAX_FRAME_LEN);
        assert_eq!(Response::decode(&encoded).unwrap(), response);
    }
}

#[test]
fn error_codes_round_trip_by_name() {
    for (code, name) in ERROR_CODES {
        assert_eq!(code.as_str(), name);
        let decoded = Response::decode(&Response::error(9, code, "x").encode()).unwrap();
        assert!(matches!(decoded.body, ResponseBody::Error { code: c, .. } if c == code));
    }
}

#[test]
fn error_messages_are_cut_at_a_character_boundary() {
    let long = "é".repeat(MAX_TEXT_LEN);
    let ResponseBody::Error { message, .. } = Response::error(0, ErrorCode::Malformed, &long).body
    else {
        panic!("not an error")
    };
    assert!(message.len() <= MAX_TEXT_LEN);
    assert!(message.len() >= MAX_TEXT_LEN - 1);
    assert!(message.chars().all(|c| c == 'é'));
}

#[test]
fn frame_lengths_are_checked_before_allocation() {
    assert!(matches!(
        frame_body_len(u32::MAX.to_be_bytes()),
        Err(WireError::FrameTooLarge { len, .. }) if len == u64::from(u32::MAX)
    ));
    let over = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
    assert!(matches!(
        frame_body_len(over),
        Err(WireError::FrameTooLarge { .. })
    ));
    let max = u32::try_from(MAX_FRAME_LEN).unwrap().to_be_bytes();
    assert_eq!(frame_body_len(max).unwrap(), MAX_FRAME_LEN);
    assert!(matches!(frame_body_len([0; 4]), Err(WireError::EmptyFrame)));
    assert!(frame_header(MAX_FRAME_LEN + 1).is_err());
    assert!(frame_header(0).is_err());
}

#[test]
fn reading_frames_tells_closed_from_truncated() {
    assert!(matches!(read_frame(&mut &[][..]), Err(WireError::Closed)));
    assert!(matches!(
        read_frame(&mut &[0, 0][..]),
        Err(WireError::TruncatedFrame { missing: 0 })
    ));
    let mut cut = 10u32.to_be_bytes().to_vec();
    cut.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(
        read_frame(&mut cut.as_slice()),
        Err(WireError::TruncatedFrame { missing: 7 })
    ));
    let mut two = Vec::new();
    write_frame(&mut two, b"first").unwrap();
    write_frame(&mut two, b"second").unwrap();
    let mut reader = two.as_slice();
    assert_eq!(read_frame(&mut reader).unwrap(), b"first");
    assert_eq!(read_frame(&mut reader).unwrap(), b"second");
    assert!(matches!(read_frame(&mut reader), Err(WireError::Closed)));
}

/// Bytes, and a check on the error they must give.
type Case = (Vec<u8>, fn(&WireError) -> bool);

#[test]
fn decoding_is_strict() {
    assert!(Request::decode(&attestation_request(&[])).is_ok());
    let cases: Vec<Case> = vec![
        (attestation_request(&[("extra", Value::Null)]), |e| {
            malformed(
                e,
                |k| matches!(k, ErrorKind::UnknownKey { key } if key == "extra"),
            )
        }),
        (
            attestation_request(&[("nonce", Value::Bytes(vec![2]))]),
            |e| {
                malformed(
                    e,
                    |k| matches!(k, ErrorKind::DuplicateKey { key } if key == "nonce"),
                )
            },
        ),
        (
            {
                let mut b = attestation_request(&[]);
                b.push(0);
                b
            },
            |e| malformed(e, |k| matches!(k, ErrorKind::TrailingBytes { count: 1 })),
        ),
        (
            cbor(unsorted_map(&[
                ("id", Value::Integer(1.into())),
                ("v", Value::Integer(1.into())),
                ("op", Value::Text("health".into())),
            ])),
            |e| malformed(e, |k| matches!(k, ErrorKind::KeyOrder)),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
                ("op", Value::Text("health".into())),
                ("nonce", Value::Bytes(vec![1])),
            ])),
            |e| matches!(e, WireError::UnknownField("nonce")),
        ),
        (cbor(Value::Array(vec![])), |e| {
            malformed(e, |k| {
                matches!(
                    k,
                    ErrorKind::Type {
                        expected: "a map",
                        ..
                    }
                )
            })
        }),
        (
            cbor(Value::Map(vec![(Value::Integer(1.into()), Value::Null)])),
            |e| malformed(e, |k| matches!(k, ErrorKind::KeyType { .. })),
        ),
        (cbor(map(&[("v", Value::Integer(2.into()))])), |e| {
            matches!(e, WireError::UnsupportedVersion { got: 2 })
        }),
        (
            cbor(map(&[
                ("id", Value::Integer(7.into())),
                ("op", Value::Text("health".into())),
            ])),
            |e| matches!(e, WireError::MissingField("v")),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("op", Value::Text("health".into())),
            ])),
            |e| matches!(e, WireError::MissingField("id")),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
            ])),
            |e| matches!(e, WireError::MissingField("op")),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer((-1).into())),
                ("op", Value::Text("health".into())),
            ])),
            |e| matches!(e, WireError::Malformed(c) if c.field() == Some("id")),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
                ("op", Value::Text("shell".into())),
            ])),
            |e| matches!(e, WireError::UnknownOperation(op) if op == "shell"),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
                ("op", Value::Text("attestation".into())),
            ])),
            |e| matches!(e, WireError::MissingField("nonce")),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
                ("op", Value::Text("attestation".into())),
                ("nonce", Value::Bytes(vec![])),
            ])),
            |e| matches!(e, WireError::InvalidField { field: "nonce", .. }),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
                ("op", Value::Text("attestation".into())),
                ("nonce", Value::Bytes(vec![0; MAX_USER_FIELD_LEN + 1])),
            ])),
            |e| matches!(e, WireError::InvalidField { field: "nonce", .. }),
        ),
        (
            cbor(map(&[
                ("v", Value::Integer(1.into())),
                ("id", Value::Integer(1.into())),
                ("op", Value::Text("attestation".into())),
                ("nonce", Value::Text("abc".into())),
            ])),
            |e| matches!(e, WireError::Malformed(c) if c.field() == Some("nonce")),
        ),
    ];
    for (i, (bytes, expected)) in cases.iter().enumerate() {
        let error = Request::decode(bytes).unwrap_err();
        assert!(expected(&error), "case {i}: unexpected {error:?}");
    }
}

#[test]
fn responses_bound_every_field() {
    let health = |digest: Vec<u8>, version: String| {
        cbor(map(&[
            ("v", Value::Integer(1.into())),
            ("id", Value::Integer(1.into())),
            ("op", Value::Text("health".into())),
            ("version", Value::Text(version)),
            ("nsm", Value::Text("nitro".into())),
            ("config_digest", Value::Bytes(digest)),
        ]))
    };
    assert!(Response::decode(&health(vec![0; 48], "1".into())).is_ok());
    assert!(Response::decode(&health(vec![0; 47], "1".into())).is_err());
    assert!(Response::decode(&health(vec![0; 48], "x".repeat(MAX_TEXT_LEN + 1))).is_err());
    let limits = |entries: Vec<(Value, Value)>| {
        cbor(map(&[
            ("v", Value::Integer(1.into())),
            ("id", Value::Integer(1.into())),
            ("op", Value::Text("health".into())),
            ("version", Value::Text("1".into())),
            ("nsm", Value::Text("nitro".into())),
            ("config_digest", Value::Bytes(vec![0; 48])),
            ("port_limits", Value::Map(entries)),
        ]))
    };
    let n = |v: u64| Value::Integer(v.into());
    assert!(Response::decode(&limits(vec![(n(5000), n(64)), (n(8000), n(64))])).is_ok());
    for bad in [
        vec![(n(8000), n(64)), (n(5000), n(64))],
        vec![(n(5000), n(64)), (n(5000), n(1))],
        vec![(n(1 << 32), n(64))],
        vec![(n(5000), Value::Text("64".into()))],
        (0..=u64::try_from(MAX_PORT_LIMITS).unwrap())
            .map(|p| (n(p), n(1)))
            .collect(),
    ] {
        let error = Response::decode(&limits(bad.clone())).unwrap_err();
        let named = match &error {
            WireError::InvalidField { field, .. } => Some(*field),
            WireError::Malformed(e) => e.field(),
            _ => None,
        };
        assert_eq!(named, Some("port_limits"), "{bad:?}: {error:?}");
    }
    let document = |len: usize| {
        cbor(map(&[
            ("v", Value::Integer(1.into())),
            ("id", Value::Integer(1.into())),
            ("op", Value::Text("attestation".into())),
            ("document", Value::Bytes(vec![0; len])),
        ]))
    };
    assert!(Response::decode(&document(MAX_DOCUMENT_LEN)).is_ok());
    assert!(matches!(
        Response::decode(&document(MAX_DOCUMENT_LEN + 1)),
        Err(WireError::InvalidField {
            field: "document",
            ..
        })
    ));
    let unknown_code = cbor(map(&[
        ("v", Value::Integer(1.into())),
        ("id", Value::Integer(1.into())),
        ("op", Value::Text("error".into())),
        ("code", Value::Text("teapot".into())),
        ("message", Value::Text(String::new())),
    ]));
    assert!(matches!(
        Response::decode(&unknown_code),
        Err(WireError::InvalidField { field: "code", .. })
    ));
}

#[test]
fn wire_errors_map_to_the_codes_the_enclave_sends() {
    assert_eq!(
        WireError::FrameTooLarge { len: 1, max: 0 }.code(),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        WireError::TruncatedFrame { missing: 1 }.code(),
        ErrorCode::TruncatedFrame
    );
    assert_eq!(WireError::MissingField("op").code(), ErrorCode::Malformed);
    assert_eq!(
        WireError::UnsupportedVersion { got: 9 }.code(),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        WireError::UnknownOperation("x".into()).code(),
        ErrorCode::UnknownOperation
    );
}

/// The example in docs/protocol.md, byte for byte.
#[test]
fn the_documented_example_decodes() {
    let frame = data_encoding::HEXLOWER
        .decode(b"00000022a461760162696408626f706b6174746573746174696f6e656e6f6e6365440badc0de")
        .unwrap();
    let body = read_frame(&mut frame.as_slice()).unwrap();
    let request = Request::decode(&body).unwrap();
    assert_eq!(
        request,
        Request {
            id: 8,
            body: RequestBody::Attestation {
                nonce: nonce(&[0x0b, 0xad, 0xc0, 0xde])
            }
        }
    );
    assert_eq!(request.encode(), body, "encoding is canonical");
}
