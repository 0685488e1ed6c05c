//! Witnesses against a broker that keeps two logs: a real `witness` process, and two real broker
//! processes with the same keys and the same log up to a point, from which each grows its own
//! history and shows it to a different party. With a witness required, the party shown the
//! fork refuses it: the witness cosigned the other history, and never cosigns two trees of one
//! size. Without one, the fork is accepted, which is why the witness is there.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Backend, Broker, Document, MODEL_ID, Setup, client_pcr0, exchange_direct};
use common::{Options, Stack, binary, enclave_pcr0, free_port, model_status, temp_dir, test_roots};
use proofs::cosignature::{CosignatureVerifier, Cosigner, WitnessError, WitnessPolicy};
use sealing::Id;
use sealing::release::{KeyRequest, Message, ReleaseError, ReleasedKey};

/// A `witness` process for one log.
struct Witness {
    dir: std::path::PathBuf,
    listen: SocketAddr,
    vkey: String,
    child: Option<Child>,
}

impl Witness {
    fn setup(name: &str, log_vkey: &str) -> Self {
        let dir = temp_dir(name);
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::write(
            dir.join("witness.toml"),
            format!(
                "listen = \"{listen}\"\nname = \"{name}.example\"\nkey = \"witness.key\"\n\
                 state_dir = \"state\"\n[[log]]\norigin = \"test.example/key-release-log\"\n\
                 keys = [\"{log_vkey}\"]\n"
            ),
        )
        .unwrap();
        let out = Command::new(binary("witness"))
            .current_dir(&dir)
            .args(["init", "--config", "witness.toml"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vkey = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("witness verifier key: "))
            .unwrap()
            .to_owned();
        Self {
            dir,
            listen,
            vkey,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("witness.log")).unwrap();
        let mut child = Command::new(binary("witness"))
            .current_dir(&self.dir)
            .args(["serve", "--config", "witness.toml"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.listen).is_err() {
            assert!(Instant::now() < deadline, "the witness never listened");
            assert!(child.try_wait().unwrap().is_none(), "the witness exited");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier::parse(&self.vkey).unwrap()
    }

    /// A broker's `[witnesses]` section naming this witness.
    fn section(&self) -> String {
        format!(
            "[witnesses]\nrequired = 1\ntimeout = \"2s\"\n[[witnesses.witness]]\nkey = \"{}\"\n\
             url = \"http://{}\"\n",
            self.vkey, self.listen
        )
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A release as a party (an enclave of the pinned image) would ask for it; the request, the
/// nonce and document it sent, and the answer.
fn ask(broker: &Broker) -> (KeyRequest, [u8; 32], Vec<u8>, Message) {
    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    let document = Document {
        root: &broker.root.nitro,
        region: "eu-west-3",
        pcr0: client_pcr0(),
    };
    let mut sent = ([0u8; 32], Vec::new());
    let answer = exchange_direct(broker, "127.0.0.1".parse().unwrap(), MODEL_ID, |nonce| {
        let bytes = document.make(&request, &nonce);
        sent = (nonce, bytes.clone());
        Some(bytes)
    });
    (request, sent.0, sent.1, answer)
}

/// Ask `broker` for a release and judge the answer as a party requiring `witnesses`.
fn release(broker: &Broker, witnesses: WitnessPolicy) -> Result<ReleasedKey, ReleaseError> {
    let (request, nonce, document, answer) = ask(broker);
    let mut trust = broker.trust();
    trust.witnesses = witnesses;
    request.accept(&nonce, &document, &answer, &trust, attest::Timestamp::now())
}

fn requiring(witness: &Witness) -> WitnessPolicy {
    WitnessPolicy::new(vec![witness.verifier()], 1).unwrap()
}

#[test]
fn a_broker_that_keeps_two_logs_cannot_have_the_second_one_witnessed() {
    let root = test_roots("National Root");
    let mut honest = Broker::setup(
        "witnessed",
        Backend::Software,
        Setup {
            root: &root,
            signing_root: None,
            rules: "regions = [\"eu-west-3\"]",
            pcr0s: &[client_pcr0()],
            config_extra: "",
        },
    );
    let mut witness = Witness::setup("witness-a", &honest.log_vkey);
    let with_witness = |broker: &Broker, section: &str| {
        let path = broker.dir.join("broker.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        let config = match config.find("[witnesses]") {
            Some(at) => config.get(..at).unwrap().to_owned(),
            None => config,
        };
        std::fs::write(path, format!("{config}{section}")).unwrap();
    };
    with_witness(&honest, &witness.section());
    // The fork: the same keys, configuration and log, until each appends its own releases.
    let mut fork = honest.fork("fork");
    witness.start();
    honest.start();
    fork.start();

    // Party 1 gets its key from the honest log, cosigned by the witness; twice, so the second
    // checkpoint reaches the witness with a consistency proof from the first.
    for _ in 0..2 {
        let released = release(&honest, requiring(&witness))
            .unwrap_or_else(|e| panic!("{e}\n{}", honest.log()));
        let cosigned = requiring(&witness)
            .check(&released.checkpoint.note)
            .unwrap();
        assert_eq!(cosigned.len(), 1);
    }

    // The forked log asks the same witness, which has cosigned another tree: it refuses, and
    // the broker sends nothing.
    let (_, _, _, answer) = ask(&fork);
    match &answer {
        Message::Denied { reason, .. } => assert_eq!(reason, "not_witnessed", "{}", fork.log()),
        other => panic!("expected a denial, got {}\n{}", other.op(), fork.log()),
    }
    assert!(
        fork.log().contains("forked"),
        "the broker names the fork: {}",
        fork.log()
    );

    // A broker that drops its witnesses shows party 2 the fork anyway: a party that requires
    // the witness refuses it; one that does not would have accepted it.
    fork.stop();
    with_witness(&fork, "");
    fork.start();
    let refused = release(&fork, requiring(&witness)).unwrap_err();
    assert!(
        matches!(
            refused,
            ReleaseError::Witnesses(WitnessError::TooFew {
                cosigned: 0,
                required: 1,
                ..
            })
        ),
        "{refused}"
    );
    assert_eq!(refused.kind(), "not_witnessed");
    let fooled = release(&fork, WitnessPolicy::none()).unwrap();
    assert!(
        fooled.checkpoint.signed_by.len() == 1,
        "signed by the log key alone"
    );

    // Cosignatures copied from the honest log's checkpoint onto the fork's do not verify
    // there: the witness signed the other tree's root.
    let honest_release = release(&honest, requiring(&witness)).unwrap();
    let copied = proofs::cosignature::add_cosignatures(
        &fooled.checkpoint.note,
        &proofs::Note::parse(honest_release.checkpoint.note.as_bytes())
            .unwrap()
            .signatures,
    );
    // The honest checkpoint's log signature is not over the fork's text either: only the
    // witness's line matters here, and it is refused as a bad signature by a named witness.
    let copied = copied.unwrap();
    assert!(matches!(
        requiring(&witness).check(&copied),
        Err(WitnessError::Note(proofs::NoteError::BadSignature { .. }))
    ));

    // The honest broker fails closed while its witness is down, and works again once it is
    // back, with the state it kept.
    witness.stop();
    let (_, _, _, answer) = ask(&honest);
    match &answer {
        Message::Denied { reason, .. } => assert_eq!(reason, "not_witnessed"),
        other => panic!("expected a denial, got {}", other.op()),
    }
    witness.start();
    release(&honest, requiring(&witness)).unwrap_or_else(|e| panic!("{e}\n{}", honest.log()));

    // A monitor reading both logs: the honest one audits with the witness required, and its
    // checkpoint, saved, exposes the fork.
    honest.stop();
    fork.stop();
    let saved = honest.dir.join("monitor.checkpoint");
    let audit = |broker: &Broker, extra: &[&str]| {
        let out = Command::new(binary("attest"))
            .args(["log", "audit"])
            .arg(broker.dir.join("state/log"))
            .args(["--log-key", &honest.log_vkey])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (status, out) = audit(
        &honest,
        &[
            "--witness",
            &witness.vkey,
            "--save",
            saved.to_str().unwrap(),
        ],
    );
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("cosigned by witness-a.example"), "{out}");
    let (status, out) = audit(&fork, &["--saved", saved.to_str().unwrap()]);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("fork"), "{out}");
}

#[test]
fn an_enclave_that_requires_the_witness_serves_answers_whose_receipts_carry_its_cosignature() {
    use attest::{MeasurementSet, PcrIndex, Policy, Verifier};
    use client::{ChatRequest, Session, Timeouts, Trust};
    use protocol::wire::ModelState;

    let root = test_roots("National Root");
    let mut broker = Broker::setup(
        "witnessed-enclave",
        Backend::Software,
        Setup {
            root: &root,
            signing_root: None,
            rules: "regions = [\"eu-west-3\"]",
            pcr0s: &[enclave_pcr0()],
            config_extra: "",
        },
    );
    let mut witness = Witness::setup("witness-e", &broker.log_vkey);
    let config = broker.dir.join("broker.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}{}", witness.section())).unwrap();
    witness.start();
    broker.start();

    // The enclave's measured configuration names the witness, and requires it.
    let enclave = |name: &str, witness_vkey: &str| {
        let model = format!(
            "{}witnesses = [\"{witness_vkey}\"]\nwitnesses_required = 1\n",
            broker.enclave_model_toml()
        );
        Stack::start_with(
            name,
            Options {
                extra: &broker.host_toml(),
                enclave_extra: &model,
                root: Some(&broker.root),
                ..Options::default()
            },
        )
    };
    let stack = enclave("witnessed-enclave", &witness.vkey);
    let status = model_status(&stack, Duration::from_secs(120));
    assert_eq!(
        status.state,
        ModelState::Ready,
        "{:?}\n{}\n{}",
        status.detail,
        stack.log(),
        broker.log()
    );

    // A client that requires the same witness gets an answer whose receipt's checkpoint the
    // witness cosigned.
    let pcrs = std::collections::BTreeMap::from([(PcrIndex::new(0).unwrap(), enclave_pcr0())]);
    let trust = Trust::new(
        Verifier::new(broker.root.document_trust().unwrap()),
        Policy::new().allow_measurements(MeasurementSet::try_from(pcrs).unwrap()),
    )
    .unwrap()
    .log(
        vec![proofs::NoteVerifier::parse(&broker.log_vkey).unwrap()],
        Some("test.example/key-release-log".into()),
    )
    .witnesses(requiring(&witness));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        let mut session = Session::connect(
            &stack.api.to_string(),
            std::sync::Arc::new(trust),
            Timeouts::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
        session
            .chat(
                &ChatRequest {
                    messages: vec![("user".into(), "Hello".into())],
                    model: None,
                    max_tokens: Some(4),
                    temperature: Some(0.0),
                    seed: Some(1),
                    stream: false,
                },
                |_| {},
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.log()))
    });
    let checkpoint = answer.verified.checkpoint.as_ref().unwrap();
    assert_eq!(
        requiring(&witness).check(&checkpoint.note).unwrap().len(),
        1
    );

    // An enclave that requires a witness this broker does not ask refuses the release.
    let other = Cosigner::generate("witness-z.example")
        .unwrap()
        .verifier()
        .to_vkey();
    let refusing = enclave("unwitnessed-enclave", &other);
    let status = model_status(&refusing, Duration::from_secs(120));
    assert_eq!(status.state, ModelState::Failed, "{:?}", status.detail);
    let detail = status.detail.unwrap_or_default();
    assert!(detail.contains("not_witnessed"), "{detail}");
}

#[test]
fn a_witness_that_holds_its_connections_open_delays_no_release_once_the_others_answer() {
    let root = test_roots("National Root");
    let mut broker = Broker::setup(
        "hanging-witness",
        Backend::Software,
        Setup {
            root: &root,
            signing_root: None,
            rules: "regions = [\"eu-west-3\"]",
            pcr0s: &[client_pcr0()],
            config_extra: "",
        },
    );
    let mut a = Witness::setup("witness-h1", &broker.log_vkey);
    let mut b = Witness::setup("witness-h2", &broker.log_vkey);
    // A "witness" that accepts connections, reads nothing and never answers.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_address = hanging.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for stream in hanging.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    let hanging_key = Cosigner::generate("witness-hang.example")
        .unwrap()
        .verifier()
        .to_vkey();
    let config = broker.dir.join("broker.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}[witnesses]\nrequired = 2\ntimeout = \"5s\"\n\
             [[witnesses.witness]]\nkey = \"{}\"\nurl = \"http://{}\"\n\
             [[witnesses.witness]]\nkey = \"{}\"\nurl = \"http://{}\"\n\
             [[witnesses.witness]]\nkey = \"{hanging_key}\"\nurl = \"http://{hanging_address}\"\n",
            a.vkey, a.listen, b.vkey, b.listen
        ),
    )
    .unwrap();
    a.start();
    b.start();
    broker.start();
    let both = WitnessPolicy::new(vec![a.verifier(), b.verifier()], 2).unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let released =
            release(&broker, both.clone()).unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
        assert_eq!(both.check(&released.checkpoint.note).unwrap().len(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a release waited {:?} for the hanging witness",
            started.elapsed()
        );
    }
    // One connection held open, not one per release: the hanging witness is not asked again
    // while its request is in flight.
    assert_eq!(held.lock().unwrap().len(), 1);
}
