use ciborium::Value;

use super::*;

fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    [(0u8, 1u8), (1, 2), (2, 3), (16, 4)]
        .into_iter()
        .map(|(i, b)| (PcrIndex::new(i).unwrap(), PcrValue::measure(&[b])))
        .collect()
}

fn registration() -> Entry {
    Entry::ImageRegistration(ImageRegistration {
        time: Timestamp::from_unix_millis(1_700_000_000_000),
        model_id: "smollm2-135m".into(),
        model_digest: [7; 48],
        policy_version: 3,
        pcrs: pcrs(),
        approvers: vec!["alice@gov.example".into(), "bob@gov.example".into()],
    })
}

fn release() -> KeyRelease {
    KeyRelease {
        time: Timestamp::from_unix_millis(1_700_000_000_123),
        outcome: Outcome::Released,
        reason: "ok".into(),
        model_id: "smollm2-135m".into(),
        key_id: "kek-1/dek-9".into(),
        policy_version: 3,
        module_id: Some("i-0123-enc0456".into()),
        pcrs: pcrs(),
        region: Some("eu-west-1".into()),
        document_sha384: Some([9; 48]),
        nonce: Some(vec![1, 2, 3]),
        lease_ms: Some(900_000),
    }
}

fn renewal() -> Entry {
    let mut k = release();
    k.time = Timestamp::from_unix_millis(1_700_000_450_000);
    k.nonce = Some(vec![4, 5, 6]);
    Entry::LeaseRenewal(k)
}

fn revocation() -> Entry {
    Entry::Revocation(Revocation {
        time: Timestamp::from_unix_millis(1_700_000_500_000),
        target: RevocationTarget::Image,
        value: "ab".repeat(48),
        reason: "image withdrawn after review".into(),
    })
}

fn sealed() -> Entry {
    Entry::ModelSealed(ModelSealed {
        time: Timestamp::from_unix_millis(1_700_000_000_456),
        model_id: "smollm2-135m".into(),
        key_id: "kek-1/0a0b".into(),
        model_digest: [5; 48],
        model_len: 138_126_432,
        wrapped_key_sha384: Some([4; 48]),
    })
}

fn summary() -> Entry {
    Entry::DenialSummary(DenialSummary {
        time: Timestamp::from_unix_millis(1_700_000_060_000),
        since: Timestamp::from_unix_millis(1_700_000_000_000),
        reason: "unknown_model".into(),
        count: 170,
    })
}

fn policy_change() -> Entry {
    Entry::PolicyChange(PolicyChange {
        time: Timestamp::from_unix_millis(1_700_000_000_789),
        policy_version: 4,
        policy_sha384: [6; 48],
        models: vec!["smollm2-135m".into(), "other".into()],
        approvers: vec!["alice".into(), "bob".into()],
        approvals: vec![vec![1, 2, 3], vec![4, 5]],
        required: Some(2),
        eligible: vec!["alice".into(), "bob".into(), "carol".into()],
    })
}

#[test]
fn entries_round_trip_byte_for_byte() {
    for entry in [
        registration(),
        Entry::KeyRelease(release()),
        sealed(),
        policy_change(),
        summary(),
        renewal(),
        revocation(),
    ] {
        let encoded = LogEntry::new(entry.clone()).unwrap();
        let decoded = LogEntry::decode(encoded.bytes()).unwrap();
        assert_eq!(decoded.entry(), &entry);
        assert_eq!(decoded.bytes(), encoded.bytes());
        assert_eq!(decoded.leaf_hash(), Hash::leaf(encoded.bytes()));
    }
}

#[test]
fn keys_are_in_deterministic_order() {
    let bytes = registration().encode().unwrap();
    let Value::Map(pairs) = ciborium::from_reader::<Value, _>(bytes.as_slice()).unwrap() else {
        panic!("not a map")
    };
    let keys: Vec<String> = pairs
        .into_iter()
        .map(|(k, _)| k.into_text().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "v",
            "pcrs",
            "time",
            "type",
            "model_id",
            "approvers",
            "model_digest",
            "policy_version"
        ]
    );
}

#[test]
fn other_encodings_of_the_same_entry_are_refused() {
    let canonical = registration().encode().unwrap();
    // Same map, keys in insertion order instead of canonical order.
    let value: Value = ciborium::from_reader(canonical.as_slice()).unwrap();
    let Value::Map(mut pairs) = value else {
        panic!()
    };
    pairs.reverse();
    let mut reordered = Vec::new();
    ciborium::into_writer(&Value::Map(pairs), &mut reordered).unwrap();
    let refused = |bytes: &[u8]| match LogEntry::decode(bytes) {
        Err(EntryError::Malformed(e)) => e.kind().clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(&reordered), cbor::ErrorKind::KeyOrder);
    // "v": 1 written with a one-byte argument (0x18 0x01) instead of inline.
    let mut long_int = canonical.clone();
    let at = long_int.windows(2).position(|w| w == [0x61, b'v']).unwrap() + 2;
    long_int.splice(at..=at, [0x18, 0x01]);
    assert_eq!(refused(&long_int), cbor::ErrorKind::NotShortest);
    // Trailing bytes.
    let mut trailing = canonical;
    trailing.push(0);
    assert!(LogEntry::decode(&trailing).is_err());
}

#[test]
fn invalid_entries_are_refused() {
    let mut k = release();
    k.nonce = None;
    assert!(Entry::KeyRelease(k).encode().is_err());
    let mut k = release();
    k.outcome = Outcome::Denied;
    k.reason = "pcr_mismatch".into();
    k.module_id = None;
    k.pcrs.clear();
    k.document_sha384 = None;
    k.nonce = None;
    k.region = None;
    k.lease_ms = None;
    let denied = LogEntry::new(Entry::KeyRelease(k)).unwrap();
    assert!(LogEntry::decode(denied.bytes()).is_ok());
    let mut k = release();
    k.reason = "a\nb".into();
    assert!(Entry::KeyRelease(k).encode().is_err());
    let Entry::ImageRegistration(mut r) = registration() else {
        panic!()
    };
    r.approvers.push("alice@gov.example".into());
    assert!(Entry::ImageRegistration(r).encode().is_err());
    let Entry::PolicyChange(mut p) = policy_change() else {
        panic!()
    };
    p.models.push("other".into());
    assert!(Entry::PolicyChange(p).encode().is_err());
    let Entry::ModelSealed(mut m) = sealed() else {
        panic!()
    };
    m.key_id = String::new();
    assert!(Entry::ModelSealed(m).encode().is_err());
    let Entry::DenialSummary(d) = summary() else {
        panic!()
    };
    for bad in [
        DenialSummary {
            count: 0,
            ..d.clone()
        },
        DenialSummary {
            since: Timestamp::from_unix_millis(1_800_000_000_000),
            ..d.clone()
        },
        DenialSummary {
            reason: "a\nb".into(),
            ..d
        },
    ] {
        assert!(Entry::DenialSummary(bad).encode().is_err());
    }
    for bad in [&b""[..], b"\xa0", b"\x01", b"\xa1\x61v\x02"] {
        assert!(LogEntry::decode(bad).is_err());
    }
    // A later version's entry, with a field this version does not know, is refused for its
    // version, not for the field.
    let later = cbor::Map::new()
        .with("v", 2u64)
        .with("zz_future", 1u64)
        .encode();
    assert!(matches!(
        LogEntry::decode(&later),
        Err(EntryError::Field { field: "v", .. })
    ));
}

#[test]
fn a_release_logged_before_leases_still_decodes() {
    let mut k = release();
    k.lease_ms = None;
    let old = LogEntry::new(Entry::KeyRelease(k.clone())).unwrap();
    assert_eq!(
        LogEntry::decode(old.bytes()).unwrap().entry(),
        &Entry::KeyRelease(k)
    );
}

#[test]
fn leases_are_recorded_only_where_granted() {
    // A renewal granted without its lease.
    let Entry::LeaseRenewal(mut k) = renewal() else {
        panic!()
    };
    k.lease_ms = None;
    assert!(Entry::LeaseRenewal(k).encode().is_err());
    // A denial with a lease.
    let Entry::LeaseRenewal(mut k) = renewal() else {
        panic!()
    };
    k.outcome = Outcome::Denied;
    k.reason = "revoked".into();
    assert!(Entry::LeaseRenewal(k.clone()).encode().is_err());
    k.lease_ms = None;
    assert!(Entry::LeaseRenewal(k).encode().is_ok());
    // A lease of nothing.
    let mut k = release();
    k.lease_ms = Some(0);
    assert!(Entry::KeyRelease(k).encode().is_err());
    // A renewal and a release of the same fields are different entries.
    let Entry::LeaseRenewal(k) = renewal() else {
        panic!()
    };
    assert_ne!(
        Entry::LeaseRenewal(k.clone()).encode().unwrap(),
        Entry::KeyRelease(k).encode().unwrap()
    );
}

#[test]
fn a_revocation_names_a_known_target() {
    let encoded = LogEntry::new(revocation()).unwrap();
    let mut value: Value = ciborium::from_reader(encoded.bytes()).unwrap();
    if let Value::Map(fields) = &mut value {
        for (k, v) in fields.iter_mut() {
            if k.as_text() == Some("target") {
                *v = Value::Text("region".into());
            }
        }
    }
    let mut bytes = Vec::new();
    ciborium::into_writer(&value, &mut bytes).unwrap();
    let error = LogEntry::decode(&bytes).unwrap_err();
    assert!(error.to_string().contains("unknown target"), "{error}");
    let Entry::Revocation(mut r) = revocation() else {
        panic!()
    };
    r.reason = String::new();
    assert!(Entry::Revocation(r).encode().is_err());
}
