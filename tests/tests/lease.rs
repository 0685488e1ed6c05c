//! Key leases with real processes: the broker, the host and its enclave, and the verifying
//! client. A released key lasts one lease; the enclave renews it with a fresh document before it
//! ends, and withdraws its model (503 to every request, `revoked` or `lease_expired` in its
//! health) when the broker refuses, or when the lease ends without a renewal. Nothing the host
//! does can extend it.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest::{MeasurementSet, PcrIndex, PcrValue, Policy, Verifier};
use client::{ChatRequest, ClientError, Session, Timeouts, Trust};
use common::broker::{Broker, MODEL_ID, start_with_rules};
use common::{Stack, enclave_pcr0};
use proofs::entry::{Entry, Outcome, RevocationTarget};
use protocol::wire::ModelState;

/// The lease these tests run with: short, so that several fit in a test.
const LEASE: Duration = Duration::from_secs(3);

fn start(
    name: &str,
    lease: Duration,
    relay: impl FnOnce(&Broker) -> SocketAddr,
) -> (Broker, Stack) {
    let rules = format!("lease = \"{}s\"", lease.as_secs());
    start_with_rules(name, None, false, &rules, relay)
}

fn trust(broker: &Broker) -> Arc<Trust> {
    let pcrs = std::collections::BTreeMap::from([(PcrIndex::new(0).unwrap(), enclave_pcr0())]);
    let policy = Policy::new().allow_measurements(MeasurementSet::try_from(pcrs).unwrap());
    Arc::new(
        Trust::new(Verifier::new(broker.root.document_trust().unwrap()), policy)
            .unwrap()
            .model_digest(sealing::release::sha384(&broker.model))
            .log(
                vec![proofs::NoteVerifier::parse(&broker.log_vkey).unwrap()],
                Some("test.example/key-release-log".into()),
            ),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One short question on a fresh verified session.
fn ask(
    rt: &tokio::runtime::Runtime,
    stack: &Stack,
    trust: &Arc<Trust>,
) -> Result<String, ClientError> {
    rt.block_on(async {
        let mut session =
            Session::connect(&stack.api.to_string(), trust.clone(), Timeouts::default()).await?;
        let request = ChatRequest {
            messages: vec![("user".into(), "hello".into())],
            model: None,
            max_tokens: Some(3),
            temperature: Some(0.0),
            seed: Some(1),
            stream: false,
        };
        session.chat(&request, |_| {}).await.map(|a| a.text)
    })
}

/// Ask until the answer is an API error; returns its status and code, and when it came. Prints
/// when the last answer came, for the figures.
fn ask_until_refused(
    rt: &tokio::runtime::Runtime,
    stack: &Stack,
    trust: &Arc<Trust>,
    within: Duration,
) -> (u16, String, Instant) {
    let started = Instant::now();
    let deadline = started + within;
    let mut last_answer = None;
    loop {
        match ask(rt, stack, trust) {
            Ok(_) => last_answer = Some(started.elapsed()),
            Err(ClientError::Api { status, code, .. }) => {
                eprintln!(
                    "last answer {:?} after the change, first refusal {:?} after it",
                    last_answer,
                    started.elapsed()
                );
                return (status, code.unwrap_or_default(), Instant::now());
            }
            Err(e) => panic!("{e}\n{}", stack.log()),
        }
        assert!(
            Instant::now() < deadline,
            "the enclave still answers after {within:?}\n{}",
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lease-renewal decisions in the log: (outcome, reason).
fn renewals(broker: &Broker) -> Vec<(Outcome, String)> {
    broker
        .entries()
        .iter()
        .filter_map(|e| match e.entry() {
            Entry::LeaseRenewal(k) => Some((k.outcome, k.reason.clone())),
            _ => None,
        })
        .collect()
}

/// A TCP relay in front of the broker that can be switched to drop everything: once closed,
/// connections are accepted and held, and no byte passes either way.
struct Gate {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    fn new(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (is_open, holding) = (open.clone(), held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if !is_open.load(Ordering::SeqCst) {
                    holding.lock().unwrap().push(stream);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (stream.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, stream),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Gate {
            address,
            open,
            held,
        }
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// Under an unchanged policy the enclave renews its lease again and again, and a client asking
/// all the while never sees an interruption.
#[test]
fn renewals_keep_the_enclave_answering_without_interruption() {
    let (mut broker, stack) = start("lease-renewals", LEASE, |b| b.listen);
    let trust = trust(&broker);
    let rt = runtime();
    let started = Instant::now();
    let mut answers = 0;
    while started.elapsed() < LEASE * 4 {
        ask(&rt, &stack, &trust).unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
        answers += 1;
    }
    assert!(answers > 4, "{answers} answers");
    let status = common::model_status(&stack, Duration::from_secs(5));
    assert_eq!(status.state, ModelState::Ready, "{:?}", status.detail);
    stack.stop();
    broker.stop();
    let renewed = renewals(&broker);
    // Renewed once half the lease is left: at least six in four leases.
    assert!(renewed.len() >= 6, "{renewed:?}\n{}", broker.log());
    assert!(
        renewed
            .iter()
            .all(|(o, r)| *o == Outcome::Released && r == "ok"),
        "{renewed:?}"
    );
    // Each renewal records the lease it granted, from the policy.
    for entry in broker.entries() {
        if let Entry::LeaseRenewal(k) = entry.entry() {
            assert_eq!(k.lease_ms, Some(u64::try_from(LEASE.as_millis()).unwrap()));
            assert!(k.document_sha384.is_some() && k.module_id.is_some());
        }
    }
}

/// `broker revoke --model` makes the running enclave stop answering within one lease: 503
/// `model_revoked`, `revoked` in its health. The revocation and the refused renewal are logged.
#[test]
fn revoking_the_model_stops_the_running_enclave_within_one_lease() {
    let (mut broker, stack) = start("lease-revoke", LEASE, |b| b.listen);
    let trust = trust(&broker);
    let rt = runtime();
    ask(&rt, &stack, &trust).unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
    let out = broker
        .command(&[
            "revoke",
            "--model",
            MODEL_ID,
            "--reason",
            "withdrawn by order 7",
            "--config",
            "broker.toml",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = Instant::now();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["target"], "model");
    let (status, code, refused_at) = ask_until_refused(&rt, &stack, &trust, LEASE * 3);
    assert_eq!((status, code.as_str()), (503, "model_revoked"));
    let took = refused_at - revoked_at;
    assert!(took <= LEASE + Duration::from_millis(1500), "{took:?}");
    let health = common::model_status(&stack, Duration::from_secs(5));
    assert_eq!(health.state, ModelState::Revoked, "{:?}", health.detail);
    assert!(
        health
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("revoked"),
        "{:?}",
        health.detail
    );
    // It stays withdrawn.
    std::thread::sleep(LEASE);
    assert!(matches!(
        ask(&rt, &stack, &trust),
        Err(ClientError::Api { status: 503, .. })
    ));
    stack.stop();
    broker.stop();
    let entries = broker.entries();
    let revocation = entries
        .iter()
        .position(|e| {
            matches!(e.entry(), Entry::Revocation(r)
                if r.target == RevocationTarget::Model && r.value == MODEL_ID
                    && r.reason == "withdrawn by order 7")
        })
        .unwrap_or_else(|| panic!("no revocation entry\n{}", broker.log()));
    let refused = entries
        .iter()
        .position(|e| {
            matches!(e.entry(), Entry::LeaseRenewal(k)
                if k.outcome == Outcome::Denied && k.reason == "revoked")
        })
        .unwrap_or_else(|| panic!("no refused renewal\n{}", broker.log()));
    assert!(revocation < refused, "logged before it is acted on");
    // Listed as logged.
    let out = broker
        .command(&["revoke", "--list", "--config", "broker.toml", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed["revocations"][0]["log_index"],
        u64::try_from(revocation).unwrap()
    );
}

/// A host that drops the enclave's traffic to the broker cannot keep the model running: the
/// enclave stops at the lease's end, measured on its own clock.
#[test]
fn an_enclave_cut_off_from_its_broker_stops_when_the_lease_ends() {
    let gate = Mutex::new(None);
    let (mut broker, stack) = start("lease-cut-off", LEASE, |b| {
        let g = Gate::new(b.listen);
        let address = g.address;
        *gate.lock().unwrap() = Some(g);
        address
    });
    let gate = gate.into_inner().unwrap().unwrap();
    let trust = trust(&broker);
    let rt = runtime();
    ask(&rt, &stack, &trust).unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
    gate.close();
    let closed_at = Instant::now();
    let (status, code, refused_at) = ask_until_refused(&rt, &stack, &trust, LEASE * 3);
    assert_eq!((status, code.as_str()), (503, "lease_expired"));
    let took = refused_at - closed_at;
    // At most one lease after the last renewal, which came before the gate closed.
    assert!(took <= LEASE + Duration::from_millis(1000), "{took:?}");
    let health = common::model_status(&stack, Duration::from_secs(5));
    assert_eq!(
        health.state,
        ModelState::LeaseExpired,
        "{:?}",
        health.detail
    );
    assert!(
        !gate.held.lock().unwrap().is_empty(),
        "the enclave tried to renew through the closed gate"
    );
    stack.stop();
    broker.stop();
}

/// A policy change that no longer admits the running enclave's image takes effect at its next
/// renewal: refused with the policy's reason, logged, and the model withdrawn.
#[test]
fn a_renewal_refused_under_a_changed_policy_is_logged_with_its_reason() {
    let lease = Duration::from_secs(6);
    let (mut broker, stack) = start("lease-policy", lease, |b| b.listen);
    let trust = trust(&broker);
    let rt = runtime();
    ask(&rt, &stack, &trust).unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
    broker.stop();
    let other = PcrValue::measure(b"another image");
    let policy = format!(
        "version = 2\n[models.\"{MODEL_ID}\"]\nregions = [\"eu-west-3\"]\nlease = \"6s\"\n\
         [[models.\"{MODEL_ID}\".measurements]]\npcr0 = \"{}\"\n",
        data_encoding::HEXLOWER.encode(other.as_bytes())
    );
    std::fs::write(broker.dir.join("policy.toml"), policy).unwrap();
    broker.start();
    let (status, code, _) = ask_until_refused(&rt, &stack, &trust, lease * 3);
    assert_eq!((status, code.as_str()), (503, "model_revoked"));
    let health = common::model_status(&stack, Duration::from_secs(5));
    assert_eq!(health.state, ModelState::Revoked, "{:?}", health.detail);
    assert!(
        health
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("pcr_mismatch"),
        "{:?}",
        health.detail
    );
    stack.stop();
    broker.stop();
    let renewed = renewals(&broker);
    assert!(
        renewed
            .iter()
            .any(|(o, r)| *o == Outcome::Denied && r == "pcr_mismatch"),
        "{renewed:?}\n{}",
        broker.log()
    );
    // The refusal was made under the new policy's version.
    assert!(broker.entries().iter().any(|e| matches!(e.entry(),
        Entry::LeaseRenewal(k) if k.outcome == Outcome::Denied && k.policy_version == 2)));
}
