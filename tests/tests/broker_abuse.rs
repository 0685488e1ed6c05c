//! The broker against peers that do not play fair, as a real process on loopback: a peer that
//! floods hellos, one that breaks the protocol, an enclave whose authentic document binds the
//! wrong request, and whoever can write the broker's state directory.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::net::IpAddr;

use common::broker::{
    Backend, Broker, Document, MODEL_ID, Setup, client_pcr0, denied, exchange_direct, send_direct,
};
use common::test_roots;
use proofs::entry::{Entry, KeyRelease, Outcome};
use sealing::Id;
use sealing::release::{KeyRequest, Message, request_user_data};

/// How many denials without an authentic document a peer gets logged one by one per minute
/// (`broker::release::DENIALS_LOGGED_PER_PEER`, documented in docs/broker.md).
const LOGGED_PER_PEER: usize = 10;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn broker(name: &str, config_extra: &str) -> Broker {
    broker_with(name, Backend::Software, config_extra)
}

fn broker_with(name: &str, backend: Backend, config_extra: &str) -> Broker {
    let roots = test_roots("National Root");
    let mut broker = Broker::setup(
        name,
        backend,
        Setup {
            root: &roots,
            signing_root: None,
            rules: "regions = [\"eu-west-3\"]",
            pcr0s: &[client_pcr0()],
            config_extra,
        },
    );
    broker.start();
    broker
}

fn document(broker: &Broker) -> Document<'_> {
    Document {
        root: &broker.root.nitro,
        region: "eu-west-3",
        pcr0: client_pcr0(),
    }
}

fn denials(broker: &Broker) -> Vec<KeyRelease> {
    broker
        .entries()
        .into_iter()
        .filter_map(|e| match e.entry() {
            Entry::KeyRelease(k) if k.outcome == Outcome::Denied => Some(k.clone()),
            _ => None,
        })
        .collect()
}

/// One peer holds at most its share of the nonce table, so another peer is still served; and a
/// peer that sends denial after denial without an authentic document gets ten logged one by
/// one per minute, the rest counted into a summary entry, with nothing lost from the count.
#[test]
fn a_flooding_peer_neither_holds_the_nonce_table_nor_grows_the_log_without_bound() {
    let mut broker = broker("flood", "max_pending_per_peer = 5");
    let flooder = ip("127.0.0.1");
    for _ in 0..5 {
        let answer = exchange_direct(&broker, flooder, MODEL_ID, |_| None);
        assert!(matches!(answer, Message::Challenge { .. }), "{answer:?}");
    }
    let answer = exchange_direct(&broker, flooder, MODEL_ID, |_| None);
    assert_eq!(denied(&answer), "busy");
    // Another peer still gets a challenge and its release.
    let honest = ip("127.0.0.2");
    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    let released = exchange_direct(&broker, honest, MODEL_ID, |n| {
        Some(document(&broker).make(&request, &n))
    });
    assert!(matches!(released, Message::Release { .. }), "{released:?}");

    const UNKNOWN: usize = 200;
    for _ in 0..UNKNOWN {
        let answer = exchange_direct(&broker, flooder, "no-such-model", |_| None);
        assert_eq!(denied(&answer), "unknown_model");
    }
    // Breaking the protocol is a denial too: an attest before any hello.
    let early = Message::Attest {
        nonce: [0; 32],
        document: vec![1],
    };
    let answer = send_direct(&broker, ip("127.0.0.3"), &[early.encode()]);
    assert_eq!(denied(&answer), "protocol");
    let answer = send_direct(&broker, ip("127.0.0.3"), &[b"\xa0".to_vec()]);
    assert_eq!(denied(&answer), "protocol");
    broker.stop();

    let logged = denials(&broker);
    let busy = logged.iter().filter(|k| k.reason == "busy").count();
    let unknown = logged
        .iter()
        .filter(|k| k.reason == "unknown_model")
        .count();
    assert_eq!(busy, 1, "the busy denial is logged");
    assert_eq!(
        busy + unknown,
        LOGGED_PER_PEER,
        "the flooder's individually logged denials"
    );
    assert_eq!(logged.iter().filter(|k| k.reason == "protocol").count(), 2);
    let summaries: Vec<_> = broker
        .entries()
        .into_iter()
        .filter_map(|e| match e.entry() {
            Entry::DenialSummary(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].reason, "unknown_model");
    assert_eq!(
        unknown + usize::try_from(summaries[0].count).unwrap(),
        UNKNOWN,
        "every denial is either logged or counted"
    );
    let size = broker.entries().len();
    assert!(
        size < 20,
        "the log holds {size} entries after {UNKNOWN} hellos"
    );
}

/// Any client can have an enclave of the pinned image attest over the broker's nonce (through
/// the enclave's own API): such a genuine document that binds another request is denied, and
/// within the peer's budget like any denial that needs no authentic request. Only decisions on a
/// document that binds this very request escape the budget.
#[test]
fn genuine_documents_for_another_request_do_not_escape_the_budget() {
    let mut broker = broker("genuine-flood", "max_pending_per_peer = 100");
    let peer = ip("127.0.0.1");
    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    const SENT: usize = 30;
    for _ in 0..SENT {
        let answer = exchange_direct(&broker, peer, MODEL_ID, |n| {
            Some(document(&broker).make_with(
                &n,
                Some(b"attest-tls-v1:the enclave's TLS certificate"),
                Some(request.public_key_der()),
            ))
        });
        assert_eq!(denied(&answer), "user_data_mismatch");
    }
    broker.stop();
    let logged = denials(&broker)
        .iter()
        .filter(|k| k.reason == "user_data_mismatch")
        .count();
    assert_eq!(logged, LOGGED_PER_PEER);
    let counted: u64 = broker
        .entries()
        .into_iter()
        .filter_map(|e| match e.entry() {
            Entry::DenialSummary(d) if d.reason == "user_data_mismatch" => Some(d.count),
            _ => None,
        })
        .sum();
    assert_eq!(logged + usize::try_from(counted).unwrap(), SENT);
}

/// A document that verifies but binds another request (its user_data), or no key, is refused,
/// and the denial is logged with what the document attested: module id and PCRs.
#[test]
fn denials_after_an_authentic_document_carry_its_evidence() {
    let mut broker = broker("evidence", "");
    let peer = ip("127.0.0.1");
    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    let wrong_user_data = exchange_direct(&broker, peer, MODEL_ID, |n| {
        Some(document(&broker).make_with(
            &n,
            Some(b"some other request"),
            Some(request.public_key_der()),
        ))
    });
    assert_eq!(denied(&wrong_user_data), "user_data_mismatch");
    let no_key = exchange_direct(&broker, peer, MODEL_ID, |n| {
        let user_data = request_user_data(request.model_id(), &n);
        Some(document(&broker).make_with(&n, Some(&user_data), None))
    });
    assert_eq!(denied(&no_key), "public_key_missing");
    broker.stop();
    let logged = denials(&broker);
    for reason in ["user_data_mismatch", "public_key_missing"] {
        let entry = logged.iter().find(|k| k.reason == reason).unwrap();
        assert!(entry.module_id.is_some(), "{reason}: {entry:?}");
        assert_eq!(
            entry.pcrs.get(&attest::PcrIndex::ZERO),
            Some(&client_pcr0()),
            "{reason}"
        );
        assert!(entry.document_sha384.is_some() && entry.nonce.is_some());
    }
}

/// Whoever can write the state directory moves another model's wrapped key into this model's
/// record, so that its key would be released under this model's policy: the record's tag (made
/// by the key store) and the log's `model-sealed` entry both give it away, also when the other
/// model's record is not logged yet (sealed while the broker ran), with either key store.
#[test]
fn a_wrapped_key_moved_between_model_records_is_refused() {
    for backend in Backend::ALL {
        moved_wrapped_key_is_refused(backend);
    }
}

fn moved_wrapped_key_is_refused(backend: Backend) {
    let mut broker = broker_with(&format!("records-{backend:?}"), backend, "");
    // A second model, sealed under its own data key; it has no release policy.
    std::fs::write(broker.dir.join("other.bin"), vec![9u8; 5000]).unwrap();
    let out = broker
        .command(&[
            "seal",
            "other.bin",
            "--model-id",
            "other-model",
            "--out",
            "other.sealed",
            "--config",
            "broker.toml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let models = broker.dir.join("state/models");
    let path = |id: &str| {
        models.join(format!(
            "{}.json",
            data_encoding::HEXLOWER.encode(id.as_bytes())
        ))
    };
    let ours = std::fs::read_to_string(path(MODEL_ID)).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("other-model")).unwrap()).unwrap();
    let release = |broker: &Broker| {
        let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
        exchange_direct(broker, ip("127.0.0.1"), MODEL_ID, |n| {
            Some(document(broker).make(&request, &n))
        })
    };
    assert!(matches!(release(&broker), Message::Release { .. }));

    let mut forged: serde_json::Value = serde_json::from_str(&ours).unwrap();
    forged["wrapped_key"] = theirs["wrapped_key"].clone();
    let everything_but_the_name = {
        let mut f = theirs.clone();
        f["model_id"] = MODEL_ID.into();
        f
    };
    for forged in [forged, everything_but_the_name] {
        std::fs::write(path(MODEL_ID), forged.to_string()).unwrap();
        assert_eq!(denied(&release(&broker)), "record_mismatch", "{forged}");
    }
    std::fs::write(path(MODEL_ID), &ours).unwrap();
    assert!(matches!(release(&broker), Message::Release { .. }));

    // The model sealed again (while the broker runs): the new sealing is released and logged;
    // the old record, restored, is refused: it would release the old key and model.
    broker.seal(vec![3u8; 9000], 4096);
    assert!(matches!(release(&broker), Message::Release { .. }));
    std::fs::write(path(MODEL_ID), &ours).unwrap();
    assert_eq!(denied(&release(&broker)), "record_mismatch");
    broker.stop();
    assert_eq!(
        denials(&broker)
            .iter()
            .filter(|k| k.reason == "record_mismatch")
            .count(),
        3
    );
}

/// Trusting AWS's root directly, next to the national root, must be asked for by name, and a
/// broker that does it says so at every start: withdrawing the cross-certificate would then not
/// stop releases.
#[test]
fn trusting_the_aws_root_directly_is_announced_at_every_start() {
    let roots = test_roots("National Root");
    let mut broker = Broker::setup(
        "aws-root",
        Backend::Software,
        Setup {
            root: &roots,
            signing_root: None,
            rules: "",
            pcr0s: &[client_pcr0()],
            config_extra: "",
        },
    );
    broker.start();
    broker.stop();
    let warning = "trust.aws_root is set";
    assert!(!broker.log().contains(warning), "{}", broker.log());
    let config = std::fs::read_to_string(broker.dir.join("broker.toml")).unwrap();
    std::fs::write(
        broker.dir.join("broker.toml"),
        config.replace("[trust]\n", "[trust]\naws_root = true\n"),
    )
    .unwrap();
    for _ in 0..2 {
        broker.start();
        broker.stop();
    }
    assert_eq!(broker.log().matches(warning).count(), 2, "{}", broker.log());
}
