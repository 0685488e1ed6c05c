use proptest::prelude::*;

use super::*;

fn det<'a, T>(
    bytes: &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, Error>,
) -> Result<T, Error> {
    Reader::read_all(bytes, 1 << 16, Profile::Deterministic, read)
}

fn doc<'a, T>(
    bytes: &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, Error>,
) -> Result<T, Error> {
    Reader::read_all(bytes, 1 << 16, Profile::Document, read)
}

fn kind<T: core::fmt::Debug>(result: Result<T, Error>) -> ErrorKind {
    result.unwrap_err().kind().clone()
}

/// `{"a": 1, "b": 2}`, keys read from `["a", "b"]`.
fn read_ab(r: &mut Reader<'_>) -> Result<(u64, u64), Error> {
    let (mut a, mut b) = (None, None);
    let mut map = r.map()?;
    while let Some(key) = map.key(&["a", "b"])? {
        let slot = if key == "a" { &mut a } else { &mut b };
        *slot = Some(map.value().uint()?);
    }
    Ok((required(a, "a")?, required(b, "b")?))
}

#[test]
fn integers_in_every_width_round_trip_in_their_shortest_form() {
    for n in [
        0,
        23,
        24,
        255,
        256,
        65535,
        65536,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        let bytes = encode(&Value::Uint(n));
        let mut reference = Vec::new();
        ciborium::into_writer(&n, &mut reference).unwrap();
        assert_eq!(bytes, reference, "{n}");
        assert_eq!(det(&bytes, |r| r.uint()), Ok(n));
    }
}

#[test]
fn the_deterministic_profile_refuses_longer_forms_and_the_document_profile_reads_them() {
    for long in [
        &[0x18, 0x17][..],
        &[0x19, 0x00, 0xff],
        &[0x1a, 0x00, 0x00, 0xff, 0xff],
        &[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert_eq!(
            kind(det(long, |r| r.uint())),
            ErrorKind::NotShortest,
            "{long:02x?}"
        );
        assert!(doc(long, |r| r.uint()).is_ok(), "{long:02x?}");
    }
    // A length, too: b"a" with a one-byte length.
    assert_eq!(
        kind(det(&[0x58, 0x01, 0x61], |r| r.bytes())),
        ErrorKind::NotShortest
    );
    assert_eq!(doc(&[0x58, 0x01, 0x61], |r| r.bytes()), Ok(&b"a"[..]));
}

#[test]
fn maps_are_written_in_key_order_and_read_back() {
    let bytes = Map::new().with("b", 2u64).with("a", 1u64).encode();
    assert_eq!(bytes, [0xa2, 0x61, b'a', 0x01, 0x61, b'b', 0x02]);
    assert_eq!(det(&bytes, read_ab), Ok((1, 2)));
    // Shorter keys first, as their encodings sort.
    let bytes = Map::new().with("bb", 1u64).with("c", 2u64).encode();
    assert_eq!(bytes, [0xa2, 0x61, b'c', 0x02, 0x62, b'b', b'b', 0x01]);
}

#[test]
fn keys_out_of_order_are_refused_deterministically_and_read_as_documents() {
    let swapped = [0xa2, 0x61, b'b', 0x02, 0x61, b'a', 0x01];
    let error = det(&swapped, read_ab).unwrap_err();
    assert_eq!(error.kind(), &ErrorKind::KeyOrder);
    assert_eq!(error.offset(), Some(4));
    assert_eq!(doc(&swapped, read_ab), Ok((1, 2)));
}

#[test]
fn duplicate_keys_are_refused_even_in_another_width() {
    let twice = [0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02];
    for result in [det(&twice, read_ab), doc(&twice, read_ab)] {
        assert_eq!(kind(result), ErrorKind::DuplicateKey { key: "a".into() });
    }
    // "a" then "a" with a one-byte length: the same key to a document reader.
    let wide = [0xa2, 0x61, b'a', 0x01, 0x78, 0x01, b'a', 0x02];
    assert_eq!(
        kind(doc(&wide, read_ab)),
        ErrorKind::DuplicateKey { key: "a".into() }
    );
    // Integer keys likewise.
    let ints = [0xa2, 0x01, 0x40, 0x18, 0x01, 0x40];
    let read = |r: &mut Reader<'_>| {
        let mut map = r.map()?;
        while map.uint_key()?.is_some() {
            map.value().bytes()?;
        }
        Ok(())
    };
    assert_eq!(
        kind(doc(&ints, read)),
        ErrorKind::DuplicateKey { key: "1".into() }
    );
}

#[test]
fn unknown_and_missing_keys_are_named() {
    let extra = Map::new()
        .with("a", 1u64)
        .with("b", 2u64)
        .with("zz", 3u64)
        .encode();
    assert_eq!(
        kind(det(&extra, read_ab)),
        ErrorKind::UnknownKey { key: "zz".into() }
    );
    let short = Map::new().with("a", 1u64).encode();
    let error = det(&short, read_ab).unwrap_err();
    assert_eq!(error.kind(), &ErrorKind::MissingKey { key: "b" });
    assert_eq!(error.to_string(), "required key \"b\" is missing");
}

#[test]
fn a_value_of_the_wrong_type_names_its_field() {
    let bytes = Map::new().with("a", 1u64).with("b", "two").encode();
    let error = det(&bytes, read_ab).unwrap_err();
    assert_eq!(error.field(), Some("b"));
    assert_eq!(
        error.kind(),
        &ErrorKind::Type {
            expected: "an unsigned integer",
            found: "a text string"
        }
    );
    assert_eq!(
        error.to_string(),
        "field \"b\": expected an unsigned integer, found a text string (at byte 6)"
    );
}

#[test]
fn keys_of_another_type_are_refused() {
    let bytes = Map::new().with(1u64, 1u64).encode();
    assert!(matches!(
        kind(det(&bytes, read_ab)),
        ErrorKind::KeyType {
            expected: "text strings",
            ..
        }
    ));
}

#[test]
fn trailing_bytes_and_truncation_are_refused() {
    assert_eq!(
        kind(det(&[0x01, 0x02], |r| r.uint())),
        ErrorKind::TrailingBytes { count: 1 }
    );
    assert_eq!(kind(det(&[0x19, 0x01], |r| r.uint())), ErrorKind::Truncated);
    assert_eq!(
        kind(det(&[0x43, 0x01], |r| r.bytes())),
        ErrorKind::Truncated
    );
    assert_eq!(kind(det(&[], |r| r.uint())), ErrorKind::Truncated);
}

#[test]
fn lengths_beyond_the_input_are_refused_before_anything_is_allocated() {
    // A byte string, an array and a map each claiming 2^64 - 1 elements.
    let huge = |major: u8| {
        let mut bytes = vec![(major << 5) | 27];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes
    };
    assert_eq!(kind(doc(&huge(2), |r| r.bytes())), ErrorKind::Truncated);
    assert_eq!(
        kind(doc(&huge(4), |r| r.array(u64::MAX))),
        ErrorKind::Truncated
    );
    assert_eq!(
        kind(doc(&huge(5), |r| r.map().map(|_| ()))),
        ErrorKind::Truncated
    );
    assert_eq!(
        kind(doc(&huge(4), |r| r.array(8))),
        ErrorKind::TooMany {
            len: u64::MAX,
            max: 8
        }
    );
}

#[test]
fn what_is_never_accepted() {
    let cases: [(&[u8], ErrorKind); 7] = [
        (&[0x5f, 0x41, 0x00, 0xff], ErrorKind::Indefinite),
        (&[0x1c], ErrorKind::Reserved),
        (
            &[0xf9, 0x3c, 0x00],
            ErrorKind::Unsupported { what: "a float" },
        ),
        (&[0xf7], ErrorKind::Unsupported { what: "undefined" }),
        (
            &[0xf0],
            ErrorKind::Unsupported {
                what: "a simple value other than false, true and null",
            },
        ),
        (
            &[0xf8, 0x16],
            ErrorKind::Unsupported {
                what: "a simple value other than false, true and null",
            },
        ),
        (&[0xff], ErrorKind::Unsupported { what: "a break" }),
    ];
    for (bytes, expected) in cases {
        for result in [det(bytes, |r| r.bytes()), doc(bytes, |r| r.bytes())] {
            assert_eq!(kind(result), expected, "{bytes:02x?}");
        }
    }
}

#[test]
fn text_must_be_utf8() {
    assert_eq!(
        kind(det(&[0x61, 0xff], |r| r.text())),
        ErrorKind::InvalidUtf8
    );
}

#[test]
fn the_input_is_bounded_before_it_is_read() {
    assert_eq!(
        kind(Reader::read_all(&[0; 10], 9, Profile::Document, |r| r.uint())),
        ErrorKind::TooLarge { len: 10, max: 9 }
    );
}

#[test]
fn null_booleans_tags_and_arrays() {
    let bytes = encode(&Value::Array(vec![
        Value::Null,
        Value::Bytes(b"x"),
        Value::Bool(true),
    ]));
    let read = det(&bytes, |r| {
        let n = r.array(3)?;
        assert_eq!(n, 3);
        let first = r.nullable(|r| r.bytes())?;
        let second = r.nullable(|r| r.bytes())?;
        Ok((first, second, r.bool()?))
    });
    assert_eq!(read, Ok((None, Some(&b"x"[..]), true)));
    assert_eq!(
        det(&[0xd2, 0x01], |r| Ok((r.tag()?, r.uint()?))),
        Ok((18, 1))
    );
}

#[test]
fn a_key_without_its_value_is_a_caller_error_not_a_misread() {
    let bytes = Map::new().with("a", 1u64).with("b", 2u64).encode();
    let result = det(&bytes, |r| {
        let mut map = r.map()?;
        map.key(&["a", "b"])?;
        map.key(&["a", "b"])
    });
    assert!(matches!(kind(result), ErrorKind::Invalid { .. }));
}

proptest! {
    /// Any bytes: a value or an error, never a panic, in either profile.
    #[test]
    fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = det(&bytes, read_ab);
        let _ = doc(&bytes, read_ab);
        let _ = doc(&bytes, |r| {
            let n = r.array(16)?;
            for _ in 0..n {
                r.nullable(|r| r.bytes())?;
            }
            Ok(())
        });
    }

    /// What the writer writes, the deterministic reader reads back, whatever the insertion
    /// order.
    #[test]
    fn written_maps_read_back(a in any::<u64>(), b in any::<u64>(), swap in any::<bool>()) {
        let map = if swap {
            Map::new().with("b", b).with("a", a)
        } else {
            Map::new().with("a", a).with("b", b)
        };
        prop_assert_eq!(det(&map.encode(), read_ab), Ok((a, b)));
    }
}
