//! The enclave's side of a release, against responses a real broker key, log and national root
//! produce, and against every way the host or a rogue broker could alter them.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::collections::BTreeMap;

use attest::pki::{NewRoot, certify_service_key, init_root};
use attest::service::ServiceRole;
use attest::sim::{SimulatedPki, SimulatedRequest};
use attest::{PcrIndex, PcrValue, Region, ServiceTrust, Timestamp};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use proofs::entry::{Entry, KeyRelease, LogEntry, Outcome};
use proofs::{Log, MemoryStore, NoteSigner};
use sealing::release::{
    KeyRequest, MAX_LEASE_MS, Message, NONCE_LEN, OaepHash, RELEASE_VERSION, ReleaseClaims,
    ReleaseError, ReleaseTrust, RenewalClaims, ResponseSigner, accept_renewal, renewal_user_data,
    request_user_data, sha384,
};
use sealing::{DataKey, Id};

struct Broker {
    root: NewRoot,
    signer: ResponseSigner,
    log: Log<MemoryStore>,
    log_key: proofs::NoteVerifier,
    pki: SimulatedPki,
    now: Timestamp,
}

fn root(name: &str, now: Timestamp) -> NewRoot {
    init_root(
        name,
        "Test",
        "XX",
        Timestamp::from_unix_secs(now.unix_secs() - 3600),
        Timestamp::from_unix_secs(now.unix_secs() + 86_400),
    )
    .unwrap()
}

fn broker_signer(root: &NewRoot, now: Timestamp, role: ServiceRole) -> (Vec<u8>, Vec<u8>) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let spki = key.public_key().as_der().unwrap();
    let cert = certify_service_key(
        &root.certificate,
        &root.private_key_pem,
        spki.as_ref(),
        "broker.gov.example",
        role,
        Timestamp::from_unix_secs(now.unix_secs() - 60),
        Timestamp::from_unix_secs(now.unix_secs() + 3600),
    )
    .unwrap();
    (pkcs8.as_ref().to_vec(), cert.as_ref().to_vec())
}

fn trust_of(root: &NewRoot) -> ServiceTrust {
    let mut trust = ServiceTrust::new();
    trust.add_root(root.certificate.clone()).unwrap();
    trust
}

impl Broker {
    fn new() -> Self {
        let now = Timestamp::now();
        let root = root("National Root", now);
        let (pkcs8, cert) = broker_signer(&root, now, ServiceRole::KeyBroker);
        let signer = ResponseSigner::new(&pkcs8, cert, &trust_of(&root), now).unwrap();
        let note = NoteSigner::generate("gov.example/release-log").unwrap();
        let log_key = note.verifier();
        let log = Log::open(MemoryStore::new(), note).unwrap();
        let nitro = attest::sim::simulated_nitro_root(
            Timestamp::from_unix_secs(now.unix_secs() - 3600),
            Timestamp::from_unix_secs(now.unix_secs() + 86_400 * 30),
        )
        .unwrap();
        let pki = SimulatedPki::new(
            &nitro.certificate,
            &nitro.private_key_pem,
            Region::try_from("eu-west-1").unwrap(),
            now,
        )
        .unwrap();
        Self {
            root,
            signer,
            log,
            log_key,
            pki,
            now,
        }
    }

    fn trust(&self) -> ReleaseTrust {
        ReleaseTrust {
            broker_roots: trust_of(&self.root),
            log_keys: vec![self.log_key.clone()],
            log_origin: Some("gov.example/release-log".into()),
            witnesses: proofs::cosignature::WitnessPolicy::none(),
            oaep_hashes: vec![OaepHash::Sha256],
        }
    }

    /// The enclave's attestation document for `request` over `nonce`.
    fn document(&self, request: &KeyRequest, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let user_data = request_user_data(request.model_id(), nonce);
        let mut pcrs = BTreeMap::new();
        for i in 0..16u8 {
            pcrs.insert(PcrIndex::new(i).unwrap(), PcrValue::measure(&[i]));
        }
        self.pki
            .attest(
                &SimulatedRequest {
                    pcrs,
                    public_key: Some(request.public_key_der()),
                    user_data: Some(&user_data),
                    nonce: Some(nonce),
                },
                self.now,
            )
            .unwrap()
    }

    /// What an honest broker answers, with `edit` applied to the claims before signing.
    fn respond(
        &mut self,
        public_key_der: &[u8],
        nonce: &[u8; NONCE_LEN],
        document: &[u8],
        key: &DataKey,
        edit: impl FnOnce(&mut ReleaseClaims),
    ) -> Message {
        let public =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(public_key_der).unwrap())
                .unwrap();
        let mut wrapped = vec![0u8; public.ciphertext_size()];
        let wrapped = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, key.expose(), &mut wrapped, None)
            .unwrap()
            .to_vec();
        let entry = LogEntry::new(Entry::KeyRelease(KeyRelease {
            time: self.now,
            outcome: Outcome::Released,
            reason: "ok".into(),
            model_id: "smollm2".into(),
            key_id: "kek-1/01".into(),
            policy_version: 3,
            module_id: Some("i-0-enc0".into()),
            pcrs: BTreeMap::from([(PcrIndex::new(0).unwrap(), PcrValue::measure(&[0]))]),
            region: Some("eu-west-1".into()),
            document_sha384: Some(sha384(document)),
            nonce: Some(nonce.to_vec()),
            lease_ms: Some(600_000),
        }))
        .unwrap();
        let index = self.log.append(entry.bytes()).unwrap();
        self.log.checkpoint().unwrap();
        let proof = self.log.prove_inclusion(index).unwrap().to_text();
        let mut claims = ReleaseClaims {
            nonce: *nonce,
            model_id: Id::new("smollm2").unwrap(),
            key_id: Id::new("kek-1/01").unwrap(),
            model_digest: [4; 48],
            model_len: 1234,
            policy_version: 3,
            document_sha384: sha384(document),
            wrapped_key: wrapped,
            oaep_hash: OaepHash::Sha256,
            log_index: index,
            log_entry: entry.bytes().to_vec(),
            inclusion_proof: proof.into_bytes(),
            lease_ms: 600_000,
        };
        edit(&mut claims);
        Message::Release {
            response: self.signer.sign(&claims).unwrap(),
            certificate: self.signer.certificate().to_vec(),
        }
    }
}

struct Round {
    request: KeyRequest,
    nonce: [u8; NONCE_LEN],
    document: Vec<u8>,
    key: DataKey,
}

fn round(broker: &Broker) -> Round {
    let request = KeyRequest::new(Id::new("smollm2").unwrap()).unwrap();
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).unwrap();
    let document = broker.document(&request, &nonce);
    Round {
        request,
        nonce,
        document,
        key: DataKey::generate().unwrap(),
    }
}

/// The honest broker's answer to `r`, with `edit` applied to the claims before signing.
fn honest_answer(broker: &mut Broker, r: &Round, edit: impl FnOnce(&mut ReleaseClaims)) -> Message {
    broker.respond(
        r.request.public_key_der(),
        &r.nonce,
        &r.document,
        &r.key,
        edit,
    )
}

fn accept(
    broker: &Broker,
    r: Round,
    answer: &Message,
) -> Result<sealing::release::ReleasedKey, ReleaseError> {
    r.request
        .accept(&r.nonce, &r.document, answer, &broker.trust(), broker.now)
}

#[test]
fn an_honest_release_unwraps_to_the_data_key() {
    let mut broker = Broker::new();
    let r = round(&broker);
    let answer = honest_answer(&mut broker, &r, |_| {});
    let expected = *r.key.expose();
    let released = accept(&broker, r, &answer).unwrap();
    assert_eq!(released.key.expose(), &expected);
    assert_eq!(released.claims.key_id.as_str(), "kek-1/01");
    assert_eq!(released.checkpoint.checkpoint.size, 1);
}

#[test]
fn a_response_from_a_broker_under_another_root_is_refused() {
    let mut broker = Broker::new();
    // A complete, self-consistent broker whose certificate comes from a rogue root.
    let rogue_root = root("Rogue Root", broker.now);
    let (pkcs8, cert) = broker_signer(&rogue_root, broker.now, ServiceRole::KeyBroker);
    broker.signer = ResponseSigner::new(&pkcs8, cert, &trust_of(&rogue_root), broker.now).unwrap();
    let r = round(&broker);
    let answer = honest_answer(&mut broker, &r, |_| {});
    assert!(matches!(
        accept(&broker, r, &answer),
        Err(ReleaseError::UntrustedBroker(_))
    ));
}

#[test]
fn a_national_certificate_for_another_role_is_refused() {
    let broker = Broker::new();
    let (pkcs8, cert) = broker_signer(&broker.root, broker.now, ServiceRole::TransparencyLog);
    assert!(ResponseSigner::new(&pkcs8, cert, &trust_of(&broker.root), broker.now).is_err());
}

#[test]
fn a_response_for_another_nonce_model_or_document_is_refused() {
    type Edit = fn(&mut ReleaseClaims);
    let cases: [(&str, Edit); 3] = [
        ("nonce", |c| c.nonce[0] ^= 1),
        ("model_id", |c| c.model_id = Id::new("other-model").unwrap()),
        ("document_sha384", |c| c.document_sha384[0] ^= 1),
    ];
    for (field, edit) in cases {
        let mut broker = Broker::new();
        let r = round(&broker);
        let answer = honest_answer(&mut broker, &r, edit);
        match accept(&broker, r, &answer) {
            Err(ReleaseError::Mismatch { field: f }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn a_swapped_or_altered_response_is_refused() {
    let mut broker = Broker::new();
    // Another enclave's release, signed by the genuine broker: its wrapped key and nonce belong to
    // another request.
    let other = round(&broker);
    let theirs = honest_answer(&mut broker, &other, |_| {});
    let r = round(&broker);
    let ours = honest_answer(&mut broker, &r, |_| {});
    let (
        Message::Release {
            response: their_response,
            ..
        },
        Message::Release {
            response,
            certificate,
        },
    ) = (&theirs, &ours)
    else {
        panic!()
    };
    // Their whole response in place of ours: bound to their nonce.
    let swapped = Message::Release {
        response: their_response.clone(),
        certificate: certificate.clone(),
    };
    assert!(matches!(
        accept(&broker, round_with(&broker, &r), &swapped),
        Err(ReleaseError::Mismatch { field: "nonce" })
    ));
    // Their wrapped key spliced into our signed response: the signature breaks.
    let theirs_claims = sealing::release::verify_response(their_response, &spki(&broker)).unwrap();
    let ours_claims = sealing::release::verify_response(response, &spki(&broker)).unwrap();
    let mut spliced = response.clone();
    let at = find(&spliced, &ours_claims.wrapped_key);
    spliced[at..at + ours_claims.wrapped_key.len()].copy_from_slice(&theirs_claims.wrapped_key);
    let answer = Message::Release {
        response: spliced,
        certificate: certificate.clone(),
    };
    assert!(matches!(
        accept(&broker, r, &answer),
        Err(ReleaseError::Signature)
    ));
}

/// Another request (a fresh key pair and document) over `r`'s nonce: for checks that fail before
/// anything is unwrapped.
fn round_with(broker: &Broker, r: &Round) -> Round {
    let request = KeyRequest::new(Id::new("smollm2").unwrap()).unwrap();
    let document = broker.document(&request, &r.nonce);
    Round {
        request,
        nonce: r.nonce,
        document,
        key: DataKey::generate().unwrap(),
    }
}

fn spki(broker: &Broker) -> Vec<u8> {
    attest::service::verify_service_certificate(
        broker.signer.certificate(),
        &trust_of(&broker.root),
        ServiceRole::KeyBroker,
        broker.now,
    )
    .unwrap()
    .spki_der
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn every_flipped_bit_of_a_response_is_refused() {
    let mut broker = Broker::new();
    let r = round(&broker);
    let answer = honest_answer(&mut broker, &r, |_| {});
    let Message::Release {
        response,
        certificate,
    } = answer
    else {
        panic!()
    };
    // Each accept call consumes a key pair, so the response's bits are checked at the signature
    // layer (what accept runs right after the certificate), the certificate's through accept.
    let key = spki(&broker);
    for byte in (0..response.len()).step_by(3) {
        let mut flipped = response.clone();
        flipped[byte] ^= 1 << (byte % 8);
        assert!(
            sealing::release::verify_response(&flipped, &key).is_err(),
            "a flip at byte {byte} verified"
        );
    }
    let trust = trust_of(&broker.root);
    for byte in 0..certificate.len() {
        let mut flipped = certificate.clone();
        flipped[byte] ^= 1 << (byte % 8);
        // Either the certificate is refused, or (a flip in an unsigned, unused byte is
        // impossible in DER, but) it certifies no key that verifies this response.
        let refused = match attest::service::verify_service_certificate(
            &flipped,
            &trust,
            ServiceRole::KeyBroker,
            broker.now,
        ) {
            Err(_) => true,
            Ok(key) => sealing::release::verify_response(&response, &key.spki_der).is_err(),
        };
        assert!(refused, "certificate flip at {byte} accepted");
    }
    // And once through accept.
    let mut flipped = certificate.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let r = round(&broker);
    let answer = Message::Release {
        response,
        certificate: flipped,
    };
    assert!(matches!(
        accept(&broker, r, &answer),
        Err(ReleaseError::UntrustedBroker(_))
    ));
}

#[test]
fn a_release_missing_from_the_log_is_refused() {
    // A log entry that records another decision.
    let mut broker = Broker::new();
    let r = round(&broker);
    let answer = honest_answer(&mut broker, &r, |c| {
        c.policy_version = 4;
    });
    assert!(matches!(
        accept(&broker, r, &answer),
        Err(ReleaseError::Log(_))
    ));
    // A proof under another log's key.
    let mut broker = Broker::new();
    let r = round(&broker);
    let answer = honest_answer(&mut broker, &r, |_| {});
    let mut trust = broker.trust();
    trust.log_keys = vec![
        NoteSigner::generate("gov.example/release-log")
            .unwrap()
            .verifier(),
    ];
    assert!(matches!(
        r.request
            .accept(&r.nonce, &r.document, &answer, &trust, broker.now),
        Err(ReleaseError::Inclusion(_))
    ));
    // The claimed index is not the proven one.
    let mut broker = Broker::new();
    let r = round(&broker);
    let answer = honest_answer(&mut broker, &r, |c| {
        c.log_index += 1;
    });
    assert!(matches!(
        accept(&broker, r, &answer),
        Err(ReleaseError::Log(_) | ReleaseError::Mismatch { field: "log_index" })
    ));
}

#[test]
fn an_oaep_digest_not_allowed_is_refused_and_sha1_works_when_allowed() {
    let mut broker = Broker::new();
    let r = round(&broker);
    let public = OaepPublicEncryptingKey::new(
        PublicEncryptingKey::from_der(r.request.public_key_der()).unwrap(),
    )
    .unwrap();
    let mut out = vec![0u8; public.ciphertext_size()];
    let sha1_wrapped = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, r.key.expose(), &mut out, None)
        .unwrap()
        .to_vec();
    let answer = honest_answer(&mut broker, &r, |c| {
        c.oaep_hash = OaepHash::Sha1;
        c.wrapped_key = sha1_wrapped;
    });
    let expected = *r.key.expose();
    let trust = broker.trust();
    assert!(matches!(
        r.request
            .accept(&r.nonce, &r.document, &answer, &trust, broker.now),
        Err(ReleaseError::OaepNotAllowed("sha1"))
    ));
    // Again, with SHA-1 allowed (the SoftHSM2 profile).
    let r = round(&broker);
    let public = OaepPublicEncryptingKey::new(
        PublicEncryptingKey::from_der(r.request.public_key_der()).unwrap(),
    )
    .unwrap();
    let mut out = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, &expected, &mut out, None)
        .unwrap()
        .to_vec();
    let answer = honest_answer(&mut broker, &r, |c| {
        c.oaep_hash = OaepHash::Sha1;
        c.wrapped_key = wrapped;
    });
    let mut trust = broker.trust();
    trust.oaep_hashes.push(OaepHash::Sha1);
    let released = r
        .request
        .accept(&r.nonce, &r.document, &answer, &trust, broker.now)
        .unwrap();
    assert_eq!(released.key.expose(), &expected);
}

#[test]
fn a_wrapped_key_for_another_enclave_does_not_unwrap() {
    // A genuine broker that wrapped to the wrong public key (or a replayed wrap) fails at unwrap.
    let mut broker = Broker::new();
    let other = KeyRequest::new(Id::new("smollm2").unwrap()).unwrap();
    let r = round(&broker);
    let answer = broker.respond(
        other.public_key_der(),
        &r.nonce,
        &r.document,
        &r.key,
        |_| {},
    );
    assert!(matches!(
        accept(&broker, r, &answer),
        Err(ReleaseError::Unwrap)
    ));
}

#[test]
fn denials_and_unexpected_messages_are_errors() {
    let broker = Broker::new();
    let r = round(&broker);
    let denied = Message::Denied {
        reason: "pcr_mismatch".into(),
        message: "PCR0 differs".into(),
    };
    match accept(&broker, r, &denied) {
        Err(ReleaseError::Denied { reason, .. }) => assert_eq!(reason, "pcr_mismatch"),
        other => panic!("{other:?}"),
    }
    let r = round(&broker);
    let challenge = Message::Challenge {
        nonce: [0; 32],
        expires_in_ms: 1,
    };
    assert!(matches!(
        accept(&broker, r, &challenge),
        Err(ReleaseError::Unexpected {
            expected: "release",
            got: "challenge"
        })
    ));
}

#[test]
fn messages_round_trip_and_strangers_are_refused() {
    let messages = [
        Message::Hello {
            model_id: Id::new("m").unwrap(),
        },
        Message::Challenge {
            nonce: [7; 32],
            expires_in_ms: 30_000,
        },
        Message::Attest {
            nonce: [7; 32],
            document: vec![1, 2, 3],
        },
        Message::Release {
            response: vec![4],
            certificate: vec![5],
        },
        Message::Denied {
            reason: "r".into(),
            message: "m".into(),
        },
    ];
    for m in messages {
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }
    // Written by another encoder, keys in the deterministic order, so that each case is refused
    // for what it is about.
    let value = |mut pairs: Vec<(&str, ciborium::Value)>| {
        pairs.sort_by(|(a, _), (b, _)| (a.len(), *a).cmp(&(b.len(), *b)));
        let map = ciborium::Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (ciborium::Value::Text(k.into()), v))
                .collect(),
        );
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out).unwrap();
        out
    };
    let t = |s: &str| ciborium::Value::Text(s.into());
    let one = ciborium::Value::Integer(1.into());
    let current = ciborium::Value::Integer(RELEASE_VERSION.into());
    let cases = [
        (
            value(vec![("v", current.clone()), ("op", t("hello"))]),
            "required key \"model_id\" is missing",
        ),
        (
            value(vec![
                ("v", current.clone()),
                ("op", t("hello")),
                ("model_id", t("m")),
                ("x", one.clone()),
            ]),
            "unknown key \"x\"",
        ),
        (
            value(vec![
                ("v", ciborium::Value::Integer(1.into())),
                ("op", t("hello")),
                ("model_id", t("m")),
            ]),
            "unsupported key-release protocol version 1",
        ),
        (
            value(vec![
                ("v", current.clone()),
                ("op", t("hello")),
                ("model_id", t("a b")),
            ]),
            "field \"model_id\"",
        ),
        (
            value(vec![
                ("v", current.clone()),
                ("op", t("challenge")),
                ("nonce", ciborium::Value::Bytes(vec![0; 31])),
                ("expires_in_ms", one.clone()),
            ]),
            "field \"nonce\"",
        ),
        (
            value(vec![
                ("v", current.clone()),
                ("op", t("hello")),
                ("model_id", t("m")),
                ("nonce", ciborium::Value::Bytes(vec![0; 32])),
            ]),
            "unknown key \"nonce\"",
        ),
        (
            value(vec![
                ("v", ciborium::Value::Integer(3.into())),
                ("op", t("hello")),
                ("a_future_field", one.clone()),
            ]),
            "unsupported key-release protocol version 3",
        ),
        (
            value(vec![("v", current.clone()), ("op", t("launch"))]),
            "unknown operation \"launch\"",
        ),
        (b"\xff".to_vec(), "a break is not accepted"),
        (Vec::new(), "the input ends inside an item"),
    ];
    for (bad, expected) in cases {
        let error = Message::decode(&bad).unwrap_err().to_string();
        assert!(error.contains(expected), "{bad:02x?}: {error}");
    }
}

/// Every message has one encoding: the same fields with trailing bytes, keys out of canonical
/// order, a non-minimal integer or an indefinite-length string are refused, as the attestation
/// document's parser refuses them.
#[test]
fn only_the_canonical_encoding_of_a_message_is_accepted() {
    let hello = Message::Hello {
        model_id: Id::new("model-1").unwrap(),
    };
    let canonical = hello.encode();
    assert_eq!(Message::decode(&canonical).unwrap(), hello);

    let mut trailing = canonical.clone();
    trailing.push(0x00);
    let mut reordered = Vec::new();
    let ciborium::Value::Map(mut pairs) =
        ciborium::from_reader::<ciborium::Value, _>(canonical.as_slice()).unwrap()
    else {
        panic!("not a map")
    };
    pairs.reverse();
    ciborium::into_writer(&ciborium::Value::Map(pairs), &mut reordered).unwrap();
    // "v": 1 with a one-byte argument (0x18 0x01) instead of inline.
    let mut long_int = canonical.clone();
    let at = long_int.windows(2).position(|w| w == [0x61, b'v']).unwrap() + 2;
    long_int.splice(at..=at, [0x18, 0x01]);
    // "model_id" as an indefinite-length text string of one chunk.
    let mut indefinite = canonical.clone();
    let value_at = indefinite
        .windows(8)
        .position(|w| w == b"model_id")
        .unwrap()
        + 8;
    let head = indefinite[value_at];
    assert_eq!(head, 0x60 | 7, "a 7-byte text string");
    indefinite.splice(value_at..=value_at, [0x7f, head]);
    let end = value_at + 2 + 7;
    indefinite.insert(end, 0xff);
    for (name, bad, expected) in [
        (
            "trailing",
            trailing,
            cbor::ErrorKind::TrailingBytes { count: 1 },
        ),
        ("reordered", reordered, cbor::ErrorKind::KeyOrder),
        ("long integer", long_int, cbor::ErrorKind::NotShortest),
        ("indefinite", indefinite, cbor::ErrorKind::Indefinite),
    ] {
        assert_ne!(bad, canonical, "{name}");
        match Message::decode(&bad) {
            Err(ReleaseError::Malformed(e)) => assert_eq!(e.kind(), &expected, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A renewal round: the enclave holds `kek-1/01` of `smollm2` and attests over a fresh nonce.
struct Renewal {
    model: Id,
    key_id: Id,
    nonce: [u8; NONCE_LEN],
    document: Vec<u8>,
}

impl Broker {
    fn renewal_document(&self, model: &Id, key_id: &Id, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let user_data = renewal_user_data(model, key_id, nonce);
        let mut pcrs = BTreeMap::new();
        for i in 0..16u8 {
            pcrs.insert(PcrIndex::new(i).unwrap(), PcrValue::measure(&[i]));
        }
        self.pki
            .attest(
                &SimulatedRequest {
                    pcrs,
                    public_key: None,
                    user_data: Some(&user_data),
                    nonce: Some(nonce),
                },
                self.now,
            )
            .unwrap()
    }

    /// What an honest broker answers a renewal, with `entry` applied to the logged decision and
    /// `edit` to the claims before signing.
    fn renew(
        &mut self,
        r: &Renewal,
        entry: impl FnOnce(&mut KeyRelease) -> Entry,
        edit: impl FnOnce(&mut RenewalClaims),
    ) -> Message {
        let mut decision = KeyRelease {
            time: self.now,
            outcome: Outcome::Released,
            reason: "ok".into(),
            model_id: r.model.to_string(),
            key_id: r.key_id.to_string(),
            policy_version: 3,
            module_id: Some("i-0-enc0".into()),
            pcrs: BTreeMap::from([(PcrIndex::new(0).unwrap(), PcrValue::measure(&[0]))]),
            region: Some("eu-west-1".into()),
            document_sha384: Some(sha384(&r.document)),
            nonce: Some(r.nonce.to_vec()),
            lease_ms: Some(600_000),
        };
        let entry = LogEntry::new(entry(&mut decision)).unwrap();
        let index = self.log.append(entry.bytes()).unwrap();
        self.log.checkpoint().unwrap();
        let proof = self.log.prove_inclusion(index).unwrap().to_text();
        let mut claims = RenewalClaims {
            nonce: r.nonce,
            model_id: r.model.clone(),
            key_id: r.key_id.clone(),
            policy_version: 3,
            document_sha384: sha384(&r.document),
            lease_ms: 600_000,
            log_index: index,
            log_entry: entry.bytes().to_vec(),
            inclusion_proof: proof.into_bytes(),
        };
        edit(&mut claims);
        Message::Renewed {
            response: self.signer.sign_renewal(&claims).unwrap(),
            certificate: self.signer.certificate().to_vec(),
        }
    }
}

fn renewal(broker: &Broker) -> Renewal {
    let model = Id::new("smollm2").unwrap();
    let key_id = Id::new("kek-1/01").unwrap();
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).unwrap();
    let document = broker.renewal_document(&model, &key_id, &nonce);
    Renewal {
        model,
        key_id,
        nonce,
        document,
    }
}

fn check_renewal(broker: &Broker, r: &Renewal, answer: &Message) -> Result<u64, ReleaseError> {
    accept_renewal(
        &r.model,
        &r.key_id,
        &r.nonce,
        &r.document,
        answer,
        &broker.trust(),
        broker.now,
    )
    .map(|(claims, _)| claims.lease_ms)
}

fn as_renewal(k: &mut KeyRelease) -> Entry {
    Entry::LeaseRenewal(k.clone())
}

#[test]
fn an_honest_renewal_grants_its_signed_lease() {
    let mut broker = Broker::new();
    let r = renewal(&broker);
    let answer = broker.renew(&r, as_renewal, |_| {});
    assert_eq!(check_renewal(&broker, &r, &answer).unwrap(), 600_000);
    // The wire form round-trips.
    assert_eq!(Message::decode(&answer.encode()).unwrap(), answer);
    let renew = Message::Renew {
        nonce: r.nonce,
        key_id: r.key_id.clone(),
        document: r.document.clone(),
    };
    assert_eq!(Message::decode(&renew.encode()).unwrap(), renew);
}

#[test]
fn a_renewal_for_another_key_nonce_model_or_document_is_refused() {
    type Edit = fn(&mut RenewalClaims);
    let cases: [(&str, Edit); 4] = [
        ("nonce", |c| c.nonce[0] ^= 1),
        ("model_id", |c| c.model_id = Id::new("other-model").unwrap()),
        ("key_id", |c| c.key_id = Id::new("kek-1/02").unwrap()),
        ("document_sha384", |c| c.document_sha384[0] ^= 1),
    ];
    for (field, edit) in cases {
        let mut broker = Broker::new();
        let r = renewal(&broker);
        let answer = broker.renew(&r, as_renewal, edit);
        match check_renewal(&broker, &r, &answer) {
            Err(ReleaseError::Mismatch { field: f }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn a_renewal_must_be_logged_as_the_renewal_it_grants() {
    // The entry is a key release, not a renewal.
    let mut broker = Broker::new();
    let r = renewal(&broker);
    let answer = broker.renew(&r, |k| Entry::KeyRelease(k.clone()), |_| {});
    assert!(matches!(
        check_renewal(&broker, &r, &answer),
        Err(ReleaseError::Log(_))
    ));
    // The log records a shorter lease than the response grants.
    let mut broker = Broker::new();
    let r = renewal(&broker);
    let answer = broker.renew(
        &r,
        |k| {
            k.lease_ms = Some(60_000);
            Entry::LeaseRenewal(k.clone())
        },
        |_| {},
    );
    assert!(matches!(
        check_renewal(&broker, &r, &answer),
        Err(ReleaseError::Log(_))
    ));
    // The log records a denial.
    let mut broker = Broker::new();
    let r = renewal(&broker);
    let answer = broker.renew(
        &r,
        |k| {
            k.outcome = Outcome::Denied;
            k.reason = "revoked".into();
            k.lease_ms = None;
            Entry::LeaseRenewal(k.clone())
        },
        |_| {},
    );
    assert!(matches!(
        check_renewal(&broker, &r, &answer),
        Err(ReleaseError::Log(_))
    ));
}

#[test]
fn a_lease_outside_its_bounds_is_refused() {
    for lease in [0, 999, MAX_LEASE_MS + 1, u64::MAX] {
        let mut broker = Broker::new();
        let r = renewal(&broker);
        let answer = broker.renew(
            &r,
            |k| {
                k.lease_ms = Some(lease.max(1));
                Entry::LeaseRenewal(k.clone())
            },
            |c| c.lease_ms = lease.max(1),
        );
        assert!(
            matches!(
                check_renewal(&broker, &r, &answer),
                Err(ReleaseError::Lease(_))
            ),
            "{lease}"
        );
        let mut broker = Broker::new();
        let round = round(&broker);
        let answer = honest_answer(&mut broker, &round, |c| c.lease_ms = lease);
        assert!(
            matches!(
                accept(&broker, round, &answer),
                Err(ReleaseError::Lease(_)) | Err(ReleaseError::Log(_))
            ),
            "{lease}"
        );
    }
}

#[test]
fn a_release_and_a_renewal_cannot_stand_in_for_each_other() {
    let mut broker = Broker::new();
    // A release response, genuine and signed, offered as a renewal.
    let round_ = round(&broker);
    let release = honest_answer(&mut broker, &round_, |_| {});
    let Message::Release {
        response,
        certificate,
    } = release
    else {
        panic!()
    };
    let r = renewal(&broker);
    let disguised = Message::Renewed {
        response: response.clone(),
        certificate: certificate.clone(),
    };
    assert!(matches!(
        check_renewal(&broker, &r, &disguised),
        Err(ReleaseError::Response(_))
    ));
    // A renewal response offered as a release.
    let renewed = broker.renew(&r, as_renewal, |_| {});
    let Message::Renewed {
        response,
        certificate,
    } = renewed
    else {
        panic!()
    };
    let disguised = Message::Release {
        response,
        certificate,
    };
    assert!(matches!(
        accept(&broker, round_, &disguised),
        Err(ReleaseError::Response(_))
    ));
    // A release's document does not bind a renewal: the user data differ.
    let model = Id::new("smollm2").unwrap();
    let key_id = Id::new("kek-1/01").unwrap();
    let nonce = [7; NONCE_LEN];
    assert_ne!(
        request_user_data(&model, &nonce),
        renewal_user_data(&model, &key_id, &nonce)
    );
}

#[test]
fn a_renewal_from_a_broker_under_another_root_or_a_denial_is_refused() {
    let mut broker = Broker::new();
    let rogue_root = root("Rogue Root", broker.now);
    let (pkcs8, cert) = broker_signer(&rogue_root, broker.now, ServiceRole::KeyBroker);
    broker.signer = ResponseSigner::new(&pkcs8, cert, &trust_of(&rogue_root), broker.now).unwrap();
    let r = renewal(&broker);
    let answer = broker.renew(&r, as_renewal, |_| {});
    assert!(matches!(
        check_renewal(&broker, &r, &answer),
        Err(ReleaseError::UntrustedBroker(_))
    ));
    let denied = Message::Denied {
        reason: "revoked".into(),
        message: "model revoked".into(),
    };
    match check_renewal(&broker, &r, &denied) {
        Err(ReleaseError::Denied { reason, .. }) => assert_eq!(reason, "revoked"),
        other => panic!("{other:?}"),
    }
}

/// The fuzz target's message seeds are messages of this protocol version, so that fuzzing
/// starts from inputs that decode.
#[test]
fn the_fuzz_seeds_are_current_messages() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/sealed");
    for (name, op) in [
        ("hello", "hello"),
        ("challenge", "challenge"),
        ("renew", "renew"),
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let message = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.op(), op);
        assert_eq!(
            message.encode(),
            bytes,
            "{name} is in the canonical encoding"
        );
    }
}
