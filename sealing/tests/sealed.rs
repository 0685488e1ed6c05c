//! Sealed models against tampering: every flipped bit, reordered, truncated or spliced chunk,
//! wrong key and header field is refused, and what is sealed opens to the same bytes.
#![expect(
    clippy::unwrap_used,
    clippy::as_conversions,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use aws_lc_rs::digest::{SHA384, digest as sha384};
use sealing::format::{MIN_CHUNK_SIZE, TAG_LEN};
use sealing::{DataKey, Expected, Header, Id, SealError};

const CHUNK: u32 = MIN_CHUNK_SIZE;

fn model(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Sealed {
    bytes: Vec<u8>,
    header: Header,
    header_len: usize,
}

fn seal_with(plaintext: &[u8], key: &DataKey, model_id: &str) -> Sealed {
    let (len, digest) = sealing::digest(&mut &plaintext[..], &mut |_| {}).unwrap();
    assert_eq!(len, plaintext.len() as u64);
    assert_eq!(&digest[..], sha384(&SHA384, plaintext).as_ref());
    let header = Header::new(
        Id::new(model_id).unwrap(),
        Id::new("kek-1/00").unwrap(),
        CHUNK,
        len,
        digest,
    )
    .unwrap();
    let mut bytes = Vec::new();
    sealing::seal(&mut &plaintext[..], &mut bytes, &header, key, &mut |_| {}).unwrap();
    assert_eq!(bytes.len() as u64, header.sealed_len());
    let header_len = header.encode().unwrap().len();
    Sealed {
        bytes,
        header,
        header_len,
    }
}

fn open(sealed: &[u8], key: &DataKey, header: &Header) -> Result<Vec<u8>, SealError> {
    let expected = Expected {
        model_id: &header.model_id,
        key_id: &header.key_id,
        plaintext_sha384: &header.plaintext_sha384,
        max_len: 1 << 30,
    };
    let whole = sealing::open_into_memory(&mut &sealed[..], key, &expected).map(|p| p.to_vec());
    // The enclave's opener, a chunk at a time into a sink: the same verdict on every input, and
    // on success the same bytes.
    let mut sink = Vec::new();
    let streamed = sealing::open_into(&mut &sealed[..], key, &expected, &mut sink);
    match (&whole, &streamed) {
        (Ok(bytes), Ok(())) => assert_eq!(bytes, &sink, "open_into wrote other bytes"),
        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "the two openers disagree"),
        _ => panic!("open_into_memory gave {whole:?}, open_into {streamed:?}"),
    }
    whole
}

/// Where chunk `i` (ciphertext and tag) sits in the file.
fn chunk_range(s: &Sealed, i: usize) -> std::ops::Range<usize> {
    let stride = CHUNK as usize + TAG_LEN;
    let start = s.header_len + i * stride;
    let len = s.header.chunk_len(i as u64) as usize + TAG_LEN;
    start..start + len
}

#[test]
fn models_of_every_boundary_size_round_trip() {
    let key = DataKey::generate().unwrap();
    let c = CHUNK as usize;
    for len in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 17] {
        let plaintext = model(len, 1);
        let s = seal_with(&plaintext, &key, "m");
        assert_eq!(open(&s.bytes, &key, &s.header).unwrap(), plaintext, "{len}");
        assert_eq!(s.header.chunk_count(), (len.div_ceil(c)).max(1) as u64);
    }
}

#[test]
fn the_ciphertext_reveals_no_plaintext_and_differs_per_seal() {
    let key = DataKey::generate().unwrap();
    let plaintext = vec![0x41u8; 3 * CHUNK as usize];
    let a = seal_with(&plaintext, &key, "m");
    let b = seal_with(&plaintext, &key, "m");
    // Sealing the same bytes twice under the same key uses another nonce prefix.
    assert_ne!(a.bytes[a.header_len..], b.bytes[b.header_len..]);
    assert!(!a.bytes.windows(64).any(|w| w == &plaintext[..64]));
}

#[test]
fn every_truncation_is_refused() {
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(2 * CHUNK as usize + 100, 2), &key, "m");
    // Every length short of the whole file, with extra attention to chunk boundaries.
    let mut cuts: Vec<usize> = (0..s.bytes.len()).step_by(97).collect();
    for i in 0..3 {
        let r = chunk_range(&s, i);
        cuts.extend([r.start, r.start + 1, r.end - 1]);
    }
    for cut in cuts {
        let err = open(&s.bytes[..cut], &key, &s.header).unwrap_err();
        assert!(
            matches!(err, SealError::Truncated | SealError::NotSealed),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn a_file_cut_at_a_chunk_boundary_with_a_rewritten_length_is_refused() {
    // The attacker shortens the header's length to end at a chunk boundary: the header is
    // authenticated by every chunk, and the new final chunk was sealed as "not last".
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(3 * CHUNK as usize, 3), &key, "m");
    let mut forged = s.header.clone();
    forged.plaintext_len = 2 * u64::from(CHUNK);
    let mut bytes = forged.encode().unwrap();
    bytes.extend_from_slice(&s.bytes[s.header_len..chunk_range(&s, 1).end]);
    let expected = Expected {
        model_id: &forged.model_id,
        key_id: &forged.key_id,
        plaintext_sha384: &forged.plaintext_sha384,
        max_len: 1 << 30,
    };
    let err = sealing::open_into_memory(&mut &bytes[..], &key, &expected).unwrap_err();
    assert!(
        matches!(err, SealError::ChunkAuthentication { index: 0 }),
        "{err:?}"
    );
}

#[test]
fn reordered_chunks_are_refused() {
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(3 * CHUNK as usize, 4), &key, "m");
    let (a, b) = (chunk_range(&s, 0), chunk_range(&s, 1));
    let mut swapped = s.bytes.clone();
    let first = s.bytes[a.clone()].to_vec();
    swapped[a.clone()].copy_from_slice(&s.bytes[b.clone()]);
    swapped[b].copy_from_slice(&first);
    let err = open(&swapped, &key, &s.header).unwrap_err();
    assert!(
        matches!(err, SealError::ChunkAuthentication { index: 0 }),
        "{err:?}"
    );
}

#[test]
fn chunks_spliced_from_another_sealed_file_are_refused() {
    // Same key and same model id: only the header binding (nonce prefix, digest) tells them
    // apart.
    let key = DataKey::generate().unwrap();
    let s1 = seal_with(&model(3 * CHUNK as usize, 5), &key, "m");
    let s2 = seal_with(&model(3 * CHUNK as usize, 6), &key, "m");
    let r = chunk_range(&s1, 1);
    let mut spliced = s1.bytes.clone();
    spliced[r.clone()].copy_from_slice(&s2.bytes[r]);
    let err = open(&spliced, &key, &s1.header).unwrap_err();
    assert!(
        matches!(err, SealError::ChunkAuthentication { index: 1 }),
        "{err:?}"
    );
    // The other file's header in front of this file's chunks.
    let mut reheaded = s2.bytes[..s2.header_len].to_vec();
    reheaded.extend_from_slice(&s1.bytes[s1.header_len..]);
    let err = open(&reheaded, &key, &s2.header).unwrap_err();
    assert!(matches!(err, SealError::ChunkAuthentication { index: 0 }));
}

#[test]
fn the_wrong_key_is_refused() {
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(100, 7), &key, "m");
    let other = DataKey::generate().unwrap();
    assert!(matches!(
        open(&s.bytes, &other, &s.header),
        Err(SealError::ChunkAuthentication { index: 0 })
    ));
}

#[test]
fn every_flipped_bit_is_refused() {
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(CHUNK as usize + 50, 8), &key, "m");
    for byte in 0..s.bytes.len() {
        // Every byte of the header and the tags; every 7th elsewhere, each bit position.
        let in_tag = (0..2).any(|i| {
            let r = chunk_range(&s, i);
            (r.end - TAG_LEN..r.end).contains(&byte)
        });
        if byte >= s.header_len && !in_tag && byte % 7 != 0 {
            continue;
        }
        let mut flipped = s.bytes.clone();
        flipped[byte] ^= 1 << (byte % 8);
        assert!(
            open(&flipped, &key, &s.header).is_err(),
            "a flip at byte {byte} was accepted"
        );
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(10, 9), &key, "m");
    let mut longer = s.bytes.clone();
    longer.push(0);
    assert!(matches!(
        open(&longer, &key, &s.header),
        Err(SealError::TrailingData)
    ));
}

#[test]
fn a_header_other_than_expected_is_refused_before_decrypting() {
    let key = DataKey::generate().unwrap();
    let s = seal_with(&model(10, 10), &key, "m");
    let other_model = Id::new("other").unwrap();
    let other_key = Id::new("kek-1/ff").unwrap();
    let cases: [(Expected<'_>, &str); 4] = [
        (
            Expected {
                model_id: &other_model,
                key_id: &s.header.key_id,
                plaintext_sha384: &s.header.plaintext_sha384,
                max_len: 1 << 20,
            },
            "model id",
        ),
        (
            Expected {
                model_id: &s.header.model_id,
                key_id: &other_key,
                plaintext_sha384: &s.header.plaintext_sha384,
                max_len: 1 << 20,
            },
            "key id",
        ),
        (
            Expected {
                model_id: &s.header.model_id,
                key_id: &s.header.key_id,
                plaintext_sha384: &[0; 48],
                max_len: 1 << 20,
            },
            "plaintext SHA-384",
        ),
        (
            Expected {
                model_id: &s.header.model_id,
                key_id: &s.header.key_id,
                plaintext_sha384: &s.header.plaintext_sha384,
                max_len: 9,
            },
            "",
        ),
    ];
    for (expected, field) in cases {
        match sealing::open_into_memory(&mut &s.bytes[..], &key, &expected).unwrap_err() {
            SealError::Unexpected { field: f, .. } => assert_eq!(f, field),
            SealError::TooLarge { len: 10, max: 9 } => assert_eq!(field, ""),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_forged_digest_in_an_authentic_structure_is_refused() {
    // A sealer that lies about the digest (or a bug) is caught at the end.
    let key = DataKey::generate().unwrap();
    let plaintext = model(5000, 11);
    let header = Header::new(
        Id::new("m").unwrap(),
        Id::new("k").unwrap(),
        CHUNK,
        5000,
        [0; 48],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let err = sealing::seal(&mut &plaintext[..], &mut bytes, &header, &key, &mut |_| {});
    assert!(matches!(err, Err(SealError::InputChanged)));
    // Opening what was written (all chunks authentic under that header) fails on the digest.
    let err = open(&bytes, &key, &header).unwrap_err();
    assert!(matches!(err, SealError::DigestMismatch), "{err:?}");
}

#[test]
fn input_that_changes_between_the_passes_is_refused() {
    let key = DataKey::generate().unwrap();
    let plaintext = model(3 * CHUNK as usize, 12);
    let (len, digest) = sealing::digest(&mut &plaintext[..], &mut |_| {}).unwrap();
    let header = Header::new(
        Id::new("m").unwrap(),
        Id::new("k").unwrap(),
        CHUNK,
        len,
        digest,
    )
    .unwrap();
    let mut changed = plaintext.clone();
    changed[CHUNK as usize + 3] ^= 1;
    let mut out = Vec::new();
    assert!(matches!(
        sealing::seal(&mut &changed[..], &mut out, &header, &key, &mut |_| {}),
        Err(SealError::InputChanged)
    ));
    let mut longer = plaintext.clone();
    longer.push(1);
    assert!(matches!(
        sealing::seal(
            &mut &longer[..],
            &mut Vec::new(),
            &header,
            &key,
            &mut |_| {}
        ),
        Err(SealError::InputChanged)
    ));
    assert!(matches!(
        sealing::seal(
            &mut &plaintext[..100],
            &mut Vec::new(),
            &header,
            &key,
            &mut |_| {}
        ),
        Err(SealError::InputChanged)
    ));
}

#[test]
fn progress_reaches_the_length() {
    let key = DataKey::generate().unwrap();
    let plaintext = model(3 * CHUNK as usize + 1, 13);
    let mut seen = Vec::new();
    let (len, digest) = sealing::digest(&mut &plaintext[..], &mut |n| seen.push(n)).unwrap();
    assert_eq!(seen.last(), Some(&len));
    let header = Header::new(
        Id::new("m").unwrap(),
        Id::new("k").unwrap(),
        CHUNK,
        len,
        digest,
    )
    .unwrap();
    let mut sealed_progress = Vec::new();
    sealing::seal(
        &mut &plaintext[..],
        &mut Vec::new(),
        &header,
        &key,
        &mut |n| sealed_progress.push(n),
    )
    .unwrap();
    assert_eq!(sealed_progress.len(), 4);
    assert_eq!(sealed_progress.last(), Some(&len));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let key = DataKey::generate().unwrap();
        let id = Id::new("m").unwrap();
        let expected = Expected { model_id: &id, key_id: &id, plaintext_sha384: &[0; 48], max_len: 1 << 20 };
        proptest::prop_assert!(sealing::open_into_memory(&mut &bytes[..], &key, &expected).is_err());
        let mut with_magic = b"SOVSEAL\0\0\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        proptest::prop_assert!(sealing::open_into_memory(&mut &with_magic[..], &key, &expected).is_err());
    }
}
