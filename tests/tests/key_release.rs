//! Key release end to end, over the host's relay, with real processes: the broker (with each key
//! store), the host, and the enclave. Every suite runs once per backend.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest::PcrValue;
use common::broker::{Backend, Broker, Document, MODEL_ID, Setup, client_pcr0, denied, exchange};
use common::{Options, Stack, enclave_pcr0, model_status, test_root, test_roots};
use proofs::entry::{Entry, Outcome};
use protocol::wire::ModelState;
use sealing::Id;
use sealing::release::{KeyRequest, Message};

fn stack_for(name: &str, broker: &Broker, with_model: bool) -> Stack {
    let enclave_extra = if with_model {
        broker.enclave_model_toml()
    } else {
        String::new()
    };
    Stack::start_with(
        name,
        Options {
            extra: &broker.host_toml(),
            enclave_extra: &enclave_extra,
            root: Some(&broker.root),
            ..Options::default()
        },
    )
}

/// A client release with a document that satisfies the policy; returns the nonce, the
/// document and the answer, and the unwrapped key when `accept` is set.
fn good_release(stack: &Stack, broker: &Broker) -> ([u8; 32], Vec<u8>, Message) {
    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    let doc = Document {
        root: &broker.root.nitro,
        region: "eu-west-3",
        pcr0: client_pcr0(),
    };
    let (nonce, document, answer) = exchange(&stack.socket, MODEL_ID, Duration::ZERO, |n| {
        Some((n, doc.make(&request, &n)))
    })
    .unwrap();
    let released = request
        .accept(
            &nonce,
            &document,
            &answer,
            &broker.trust(),
            attest::Timestamp::now(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    assert_eq!(released.claims.model_id.as_str(), MODEL_ID);
    (nonce, document, answer)
}

#[test]
fn a_measured_enclave_receives_its_key_and_decrypts_its_model() {
    for backend in Backend::ALL {
        let root = test_roots("National Root");
        let mut broker = Broker::setup(
            &format!("release-{backend:?}"),
            backend,
            Setup {
                root: &root,
                signing_root: None,
                rules: "regions = [\"eu-west-3\"]",
                pcr0s: &[enclave_pcr0()],
                config_extra: "",
            },
        );
        broker.start();
        let stack = stack_for(&format!("release-{backend:?}"), &broker, true);
        let status = model_status(&stack, Duration::from_secs(60));
        assert_eq!(
            status.state,
            ModelState::Ready,
            "{backend:?}: {:?}\n{}\n{}",
            status.detail,
            stack.log(),
            broker.log()
        );
        // The enclave checked the plaintext against the digest the broker signed; that digest is
        // the original model's.
        assert_eq!(
            status.sha384.unwrap().to_vec(),
            sealing::release::sha384(&broker.model).to_vec()
        );
        let enclave_log = stack.log();
        stack.stop();
        broker.stop();
        // Nothing about the key or the model's bytes in anyone's logs.
        for log in [&enclave_log, &broker.log()] {
            assert!(!log.contains(&data_encoding::HEXLOWER.encode(&broker.model[..16])));
        }
        if backend == Backend::SoftHsm {
            assert!(
                broker.log().contains("SHA-1"),
                "the SHA-1 OAEP choice is logged"
            );
        } else {
            assert!(
                broker
                    .log()
                    .contains("SOFTWARE KEY STORE: this is not an HSM")
            );
        }
        let kinds: Vec<String> = broker
            .entries()
            .iter()
            .map(|e| match e.entry() {
                Entry::ModelSealed(m) => format!("sealed {}", m.model_id),
                Entry::PolicyChange(p) => format!("policy {}", p.policy_version),
                Entry::KeyRelease(k) => format!("{} {}", k.outcome.as_str(), k.reason),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                format!("sealed {MODEL_ID}"),
                "policy 1".into(),
                "released ok".into()
            ],
            "{backend:?}"
        );
    }
}

#[test]
fn every_refusal_is_logged_with_its_reason() {
    for backend in Backend::ALL {
        let root = test_roots("National Root");
        let mut broker = Broker::setup(
            &format!("refusals-{backend:?}"),
            backend,
            Setup {
                root: &root,
                signing_root: None,
                rules: "regions = [\"eu-west-3\"]",
                pcr0s: &[client_pcr0()],
                config_extra: "nonce_lifetime = \"1s\"",
            },
        );
        broker.start();
        let stack = stack_for(&format!("refusals-{backend:?}"), &broker, false);
        let document = |root, region, pcr0| Document { root, region, pcr0 };
        let request = || KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
        let try_with = |doc: Document<'_>, delay: Duration, tamper: bool| -> Message {
            let r = request();
            let (_, _, answer) = exchange(&stack.socket, MODEL_ID, delay, |n| {
                let mut d = doc.make(&r, &n);
                if tamper {
                    // A byte of the signature, the last item of the COSE_Sign1.
                    let last = d.len() - 1;
                    d[last] ^= 1;
                }
                Some((n, d))
            })
            .unwrap();
            answer
        };

        // A good release first; its nonce and document are then replayed.
        let (nonce, doc, _) = good_release(&stack, &broker);
        let (_, _, replayed) = exchange(&stack.socket, MODEL_ID, Duration::ZERO, |_| {
            Some((nonce, doc))
        })
        .unwrap();
        assert_eq!(denied(&replayed), "nonce_replayed");

        let other_root = test_roots("Another Root");
        let cases = [
            (
                document(&root.nitro, "eu-west-3", PcrValue::measure(b"x")),
                false,
                "pcr_mismatch",
            ),
            (
                document(&root.nitro, "eu-west-3", PcrValue::ZERO),
                false,
                "debug_mode",
            ),
            (
                document(&other_root.nitro, "eu-west-3", client_pcr0()),
                false,
                "untrusted_root",
            ),
            (
                document(&root.nitro, "us-east-1", client_pcr0()),
                false,
                "region_not_allowed",
            ),
            (
                document(&root.nitro, "eu-west-3", client_pcr0()),
                true,
                "signature_invalid",
            ),
        ];
        let mut expected = vec!["nonce_replayed".to_owned()];
        for (doc, tamper, reason) in cases {
            let answer = try_with(doc, Duration::ZERO, tamper);
            assert_eq!(denied(&answer), reason, "{backend:?}");
            expected.push(reason.into());
        }
        let late = try_with(
            document(&root.nitro, "eu-west-3", client_pcr0()),
            Duration::from_millis(1300),
            false,
        );
        assert_eq!(denied(&late), "nonce_expired");
        expected.push("nonce_expired".into());
        let (_, _, unknown) =
            exchange(&stack.socket, "no-such-model", Duration::ZERO, |_| None).unwrap();
        assert_eq!(denied(&unknown), "unknown_model");
        expected.push("unknown_model".into());

        stack.stop();
        broker.stop();
        assert_eq!(broker.denials(), expected, "{backend:?}");
        // Denials of authentic documents record what the enclave measured.
        let pcr_denial = broker
            .entries()
            .into_iter()
            .find_map(|e| match e.entry() {
                Entry::KeyRelease(k) if k.reason == "pcr_mismatch" => Some(k.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(pcr_denial.outcome, Outcome::Denied);
        assert_eq!(
            pcr_denial.pcrs.get(&attest::PcrIndex::new(0).unwrap()),
            Some(&PcrValue::measure(b"x"))
        );
        assert_eq!(pcr_denial.region.as_deref(), Some("eu-west-3"));
    }
}

#[test]
fn the_enclave_refuses_a_broker_outside_its_national_root() {
    for backend in Backend::ALL {
        let root = test_roots("National Root");
        let rogue = test_root("Rogue Root");
        // A broker that trusts the enclave's documents and releases, but whose response key
        // is certified by another root.
        let mut broker = Broker::setup(
            &format!("rogue-{backend:?}"),
            backend,
            Setup {
                root: &root,
                signing_root: Some(&rogue),
                rules: "",
                pcr0s: &[enclave_pcr0()],
                config_extra: "",
            },
        );
        broker.start();
        let stack = stack_for(&format!("rogue-{backend:?}"), &broker, true);
        let status = model_status(&stack, Duration::from_secs(60));
        assert_eq!(status.state, ModelState::Failed, "{backend:?}");
        assert!(
            status
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains("untrusted_broker"),
            "{:?}",
            status.detail
        );
        assert!(status.sha384.is_none());
        stack.stop();
        broker.stop();
    }
}

/// The host serves the sealed file; an altered, cut or extended file is refused by the
/// enclave after a genuine key release, and no model is served.
#[test]
fn the_enclave_refuses_a_sealed_model_the_host_altered() {
    let root = test_roots("National Root");
    let mut broker = Broker::setup(
        "altered",
        Backend::Software,
        Setup {
            root: &root,
            signing_root: None,
            rules: "",
            pcr0s: &[enclave_pcr0()],
            config_extra: "",
        },
    );
    broker.start();
    let sealed_path = broker.dir.join("model.sealed");
    let sealed = std::fs::read(&sealed_path).unwrap();
    let middle = sealed.len() / 2;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "flipped",
            {
                let mut bytes = sealed.clone();
                bytes[middle] ^= 0x01;
                bytes
            },
            "chunk_authentication",
        ),
        ("cut", sealed[..sealed.len() - 100].to_vec(), "truncated"),
        ("extended", [&sealed[..], b"x"].concat(), "trailing_data"),
    ];
    for (name, bytes, kind) in cases {
        std::fs::write(&sealed_path, &bytes).unwrap();
        let stack = stack_for(&format!("altered-{name}"), &broker, true);
        let status = model_status(&stack, Duration::from_secs(60));
        assert_eq!(status.state, ModelState::Failed, "{name}: {status:?}");
        let detail = status.detail.clone().unwrap_or_default();
        assert!(detail.contains(kind), "{name}: {detail}\n{}", stack.log());
        assert!(status.sha384.is_none(), "{name}");
        stack.stop();
    }
    broker.stop();
    let released = broker
        .entries()
        .iter()
        .filter(|e| matches!(e.entry(), Entry::KeyRelease(k) if k.outcome == Outcome::Released))
        .count();
    assert_eq!(
        released, 3,
        "each enclave got the key, then refused the file"
    );
}

#[test]
fn a_broker_killed_mid_release_sent_nothing_it_had_not_logged() {
    for backend in Backend::ALL {
        let root = test_roots("National Root");
        let mut broker = Broker::setup(
            &format!("kill-{backend:?}"),
            backend,
            Setup {
                root: &root,
                signing_root: None,
                rules: "",
                pcr0s: &[client_pcr0()],
                config_extra: "workers = 4",
            },
        );
        broker.start();
        let stack = stack_for(&format!("kill-{backend:?}"), &broker, false);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let trust = Arc::new(broker.trust());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (received, stop, trust) = (received.clone(), stop.clone(), trust.clone());
                let (socket, root) = (stack.socket.clone(), broker.root.nitro.clone());
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
                        let doc = Document {
                            root: &root,
                            region: "eu-west-3",
                            pcr0: client_pcr0(),
                        };
                        let Ok((nonce, document, answer)) =
                            exchange(&socket, MODEL_ID, Duration::ZERO, |n| {
                                Some((n, doc.make(&request, &n)))
                            })
                        else {
                            continue;
                        };
                        if matches!(answer, Message::Release { .. }) {
                            let released = request
                                .accept(
                                    &nonce,
                                    &document,
                                    &answer,
                                    &trust,
                                    attest::Timestamp::now(),
                                )
                                .unwrap();
                            received.lock().unwrap().push(released);
                        }
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while received.lock().unwrap().len() < 8 {
                assert!(
                    Instant::now() < deadline,
                    "releases stalled\n{}",
                    broker.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            broker.kill();
            stop.store(true, Ordering::Relaxed);
        });
        // The log reopens (recovery, checkpoint consistency) and the broker serves again.
        broker.start();
        good_release(&stack, &broker);
        broker.stop();
        stack.stop();

        let store = broker.store();
        use proofs::LogStore;
        let received = received.lock().unwrap();
        assert!(received.len() >= 8);
        for released in received.iter() {
            let index = released.claims.log_index;
            // The entry the enclave was shown is the entry the log holds at that index ...
            assert_eq!(
                store.entry(index).unwrap(),
                released.claims.log_entry,
                "{backend:?}"
            );
            // ... and the checkpoint it was shown is a prefix of the log that survived.
            let cp = &released.checkpoint.checkpoint;
            assert_eq!(store.root_at(cp.size).unwrap(), cp.root, "{backend:?}");
        }
    }
}
