//! The inference path end to end, with real processes: the broker releases the model key to the
//! enclave over the host's relay, the enclave loads the model and serves the API over TLS that
//! terminates inside it, and the verifying client talks to it through the host's forward.
//!
//! What the host (or anyone on the path) could see is checked byte for byte: a recording proxy
//! sits between client and host. A proxy that terminates TLS itself and relays the enclave's own
//! attestation document is refused before the prompt leaves the client.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use attest::{MeasurementSet, PcrIndex, PcrValue, Policy, Verifier};
use client::{ChatRequest, ClientError, Session, Timeouts, Trust};
use common::broker::Broker;
use common::{Stack, binary, enclave_pcr0, test_roots};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A broker with its model sealed, and the host with its enclave, waiting until the model is
/// ready.
fn start(name: &str, model: Option<Vec<u8>>) -> (Broker, Stack) {
    common::broker::start_with_model(name, model, false)
}

/// What the client trusts: the broker's national root, the enclave's PCR0, the broker's log key.
fn trust(broker: &Broker, pcr0: PcrValue, model: &[u8]) -> Arc<Trust> {
    Arc::new(trust_without_log(broker, pcr0, model).log(
        vec![proofs::NoteVerifier::parse(&broker.log_vkey).unwrap()],
        Some("test.example/key-release-log".into()),
    ))
}

/// The same trust, with the receipts' log checkpoints not checked.
fn trust_without_log(broker: &Broker, pcr0: PcrValue, model: &[u8]) -> Trust {
    Trust::new(
        Verifier::new(broker.root.document_trust().unwrap()),
        pinned_pcr0(pcr0),
    )
    .unwrap()
    .model_digest(sealing::release::sha384(model))
    .policy_version(1)
}

fn pinned_pcr0(pcr0: PcrValue) -> Policy {
    let pcrs = std::collections::BTreeMap::from([(PcrIndex::new(0).unwrap(), pcr0)]);
    Policy::new().allow_measurements(MeasurementSet::try_from(pcrs).unwrap())
}

fn ask(prompt: &str, stream: bool) -> ChatRequest {
    ChatRequest {
        messages: vec![("user".into(), prompt.into())],
        model: None,
        max_tokens: Some(12),
        temperature: Some(0.0),
        seed: Some(1),
        stream,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP proxy that records every byte in both directions.
async fn recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = TcpStream::connect(target).await.unwrap();
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, record.clone()));
            tokio::spawn(pump(out_read, in_write, record.clone()));
        }
    });
    (address, seen)
}

/// Copy `from` to `to`, recording the bytes.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_attested_chat_is_answered_with_a_receipt_and_the_path_sees_only_ciphertext() {
    let (mut broker, stack) = start("chat", None);
    let trust = trust(&broker, enclave_pcr0(), &broker.model);
    let prompt = "Zanzibar-7731 is my secret account number; repeat it back";
    let rt = runtime();
    let (proxy, seen) = rt.block_on(recording_proxy(stack.api));

    let (plain, streamed) = rt.block_on(async {
        let mut session = Session::connect(&proxy.to_string(), trust.clone(), Timeouts::default())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
        assert_eq!(session.models()[0].id, common::broker::MODEL_ID);
        let mut pieces = Vec::new();
        let plain = session
            .chat(&ask(prompt, false), |t| pieces.push(t.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
        assert_eq!(pieces, vec![plain.text.clone()]);
        let mut streamed_pieces = String::new();
        let streamed = session
            .chat(&ask(prompt, true), |t| streamed_pieces.push_str(t))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
        assert_eq!(streamed_pieces, streamed.text);
        (plain, streamed)
    });

    // Greedy decoding: the same answer both ways, each with its own receipt over its own bytes.
    assert!(!plain.text.is_empty());
    assert_eq!(plain.text, streamed.text);
    assert_eq!(plain.finish_reason, "length");
    for answer in [&plain, &streamed] {
        let claims = &answer.verified.claims;
        assert_eq!(claims.model_digest, sealing::release::sha384(&broker.model));
        assert_eq!(claims.policy_version, 1);
        assert!(answer.verified.checkpoint.is_some(), "the log was checked");
        assert!(contains(&answer.request_body, prompt.as_bytes()));
    }
    assert!(streamed.verified.claims.sequence > plain.verified.claims.sequence);
    assert!(contains(&streamed.response_body, b"chat.completion.chunk"));

    // Neither the prompt, nor the answer, nor the JSON around them crossed the path in clear.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 2000, "the proxy saw {} bytes", seen.len());
    for secret in [
        prompt.as_bytes(),
        b"Zanzibar-7731",
        plain.text.as_bytes(),
        b"chat.completion",
        b"/v1/chat/completions",
    ] {
        assert!(
            !contains(&seen, secret),
            "{:?} crossed the path in clear",
            String::from_utf8_lossy(secret)
        );
    }
    // Nor did any process log them.
    let host_log = stack.log();
    stack.stop();
    broker.stop();
    for log in [&host_log, &broker.log()] {
        assert!(!log.contains("Zanzibar"), "a log holds the prompt:\n{log}");
        assert!(!log.contains(&plain.text), "a log holds the answer:\n{log}");
    }
    assert!(
        host_log.contains("chat completion"),
        "the enclave logs its generations:\n{host_log}"
    );
}

#[test]
fn an_enclave_outside_the_policy_is_refused_before_the_prompt_is_sent() {
    let (mut broker, stack) = start("chat-policy", None);
    let rt = runtime();
    // Another PCR0 pinned: the enclave's document is authentic but not the image allowed.
    let wrong = trust(&broker, PcrValue::measure(b"another image"), &broker.model);
    let error = rt
        .block_on(Session::connect(
            &stack.api.to_string(),
            wrong,
            Timeouts::default(),
        ))
        .unwrap_err();
    assert!(matches!(error, ClientError::Attestation(_)), "{error}");
    assert!(error.is_refusal());
    // Another national root: no path to a trust anchor.
    let other = test_roots("Another Root");
    let foreign = Arc::new(
        Trust::new(
            Verifier::new(other.document_trust().unwrap()),
            pinned_pcr0(enclave_pcr0()),
        )
        .unwrap(),
    );
    let error = rt
        .block_on(Session::connect(
            &stack.api.to_string(),
            foreign,
            Timeouts::default(),
        ))
        .unwrap_err();
    assert_eq!(error.kind(), "attestation_refused", "{error}");

    // The right enclave, but another model pinned: the answer's receipt is refused.
    let pinned = Arc::new(trust_without_log(&broker, enclave_pcr0(), b"another model"));
    let error = rt.block_on(async {
        let mut session = Session::connect(&stack.api.to_string(), pinned, Timeouts::default())
            .await
            .unwrap();
        session
            .chat(&ask("hello", false), |_| {})
            .await
            .unwrap_err()
    });
    assert!(
        matches!(
            error,
            ClientError::Receipt(proofs::receipt::ReceiptError::Mismatch {
                field: "model_digest",
                ..
            })
        ),
        "{error}"
    );
    stack.stop();
    broker.stop();
}

/// A man in the middle that terminates TLS with its own certificate, opens its own TLS
/// connection to the enclave, and relays everything, the enclave's attestation document
/// included. The document is authentic and carries the client's nonce; it binds the enclave's
/// certificate, not the one the client's handshake was signed with.
#[test]
fn a_tls_terminating_relay_is_refused_although_it_relays_a_genuine_document() {
    let (mut broker, stack) = start("chat-mitm", None);
    let rt = runtime();
    let trust = trust(&broker, enclave_pcr0(), &broker.model);
    let (mitm, relayed) = rt.block_on(mitm::start(stack.api));
    let error = rt
        .block_on(Session::connect(
            &mitm.to_string(),
            trust,
            Timeouts::default(),
        ))
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Binding(protocol::channel::BindingError::OtherCertificate)
        ),
        "{error}"
    );
    // The relay did see the attestation request in clear (it terminated TLS), and nothing else.
    let relayed = relayed.lock().unwrap().clone();
    assert!(contains(&relayed, b"GET /attestation?nonce="));
    assert!(
        !contains(&relayed, b"/v1/"),
        "something after the attestation was sent"
    );
    stack.stop();
    broker.stop();
}

/// The reference model, end to end: sealed, released, loaded inside the enclave, and asked.
#[test]
fn the_reference_model_answers_through_the_enclave() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `bash scripts/fetch-model` first (it downloads the reference model)",
            path.display()
        )
    });
    let (mut broker, stack) = start("chat-reference", Some(model));
    let trust = trust(&broker, enclave_pcr0(), &broker.model);
    let rt = runtime();
    let answer = rt.block_on(async {
        let mut session = Session::connect(&stack.api.to_string(), trust, Timeouts::default())
            .await
            .unwrap();
        let mut request = ask("Which city is the capital of France?", false);
        request.max_tokens = Some(24);
        session.chat(&request, |_| {}).await
    });
    let answer = answer.unwrap_or_else(|e| panic!("{e}\n{}", stack.log()));
    assert!(answer.text.contains("Paris"), "{:?}", answer.text);
    stack.stop();
    broker.stop();
}

mod mitm {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::net::{TcpListener, TcpStream};

    /// Listen; terminate TLS with a fresh certificate; relay plaintext to the enclave over a TLS
    /// connection of its own, recording what the client sent.
    pub(crate) async fn start(enclave: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["enclave.attested".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = super::common::tls::insecure_connector();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(inbound) = acceptor.accept(tcp).await else {
                    continue;
                };
                let upstream = TcpStream::connect(enclave).await.unwrap();
                let name = ServerName::try_from("enclave.attested").unwrap();
                let outbound = connector.connect(name, upstream).await.unwrap();
                let (in_read, in_write) = tokio::io::split(inbound);
                let (out_read, out_write) = tokio::io::split(outbound);
                tokio::spawn(super::pump(in_read, out_write, record.clone()));
                tokio::spawn(super::pump(out_read, in_write, Arc::default()));
            }
        });
        (address, seen)
    }
}

/// `attest chat`: exit 0 with the answer and evidence that `attest receipt verify` accepts
/// offline; exit 1 when the enclave is not the one the policy pins; exit 2 when nothing answers.
#[test]
fn attest_chat_exit_codes_and_its_evidence_verify_offline() {
    let (mut broker, stack) = start("chat-cli", None);
    let policy = |pcr0: PcrValue, name: &str| {
        let path = broker.dir.join(name);
        std::fs::write(
            &path,
            format!(
                "aws_root = false\nroots = [\"root.pem\"]\ncross_certificates = [\"cross.pem\"]\n\
                 [[measurements]]\npcr0 = \"{pcr0}\"\n"
            ),
        )
        .unwrap();
        path
    };
    let good = policy(enclave_pcr0(), "client-policy.toml");
    let evidence = broker.dir.join("evidence");
    let chat = |endpoint: String, policy: &PathBuf, extra: &[&str]| {
        let mut command = std::process::Command::new(binary("attest"));
        command
            .args(["chat", "--endpoint", &endpoint, "--policy"])
            .arg(policy)
            .args(["--log-key", &broker.log_vkey, "--max-tokens", "8"])
            .args(extra)
            .arg("a question for the enclave");
        command.output().unwrap()
    };
    let ok = chat(
        stack.api.to_string(),
        &good,
        &["--json", "--evidence", evidence.to_str().unwrap()],
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(out["verified"], true);
    assert_eq!(out["log_checked"], true);
    let digest = out["receipt"]["model_digest"].as_str().unwrap().to_owned();
    assert_eq!(
        digest,
        data_encoding::HEXLOWER.encode(&sealing::release::sha384(&broker.model))
    );

    // The evidence verifies offline; with one byte of the response changed, it does not.
    let verify = |response: &str| {
        std::process::Command::new(binary("attest"))
            .current_dir(&evidence)
            .args([
                "receipt",
                "verify",
                "receipt.cbor",
                "--document",
                "attestation.cbor",
            ])
            .args(["--request", "request.json", "--response", response])
            .args([
                "--model-digest",
                &digest,
                "--log-key",
                &broker.log_vkey,
                "--policy",
            ])
            .arg(&good)
            .output()
            .unwrap()
    };
    let offline = verify("response");
    assert_eq!(
        offline.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&offline.stdout)
    );
    let mut altered = std::fs::read(evidence.join("response")).unwrap();
    let last = altered.len() - 3;
    altered[last] ^= 1;
    std::fs::write(evidence.join("altered"), altered).unwrap();
    assert_eq!(verify("altered").status.code(), Some(1));

    // The same directory again: refused before connecting, nothing overwritten.
    let again = chat(
        stack.api.to_string(),
        &good,
        &["--evidence", evidence.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let wrong = policy(PcrValue::measure(b"another image"), "wrong-policy.toml");
    let refused = chat(stack.api.to_string(), &wrong, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        stdout.starts_with("refused: the attestation document is refused"),
        "{stdout}"
    );

    let nothing = chat(format!("127.0.0.1:{}", common::free_port()), &good, &[]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("cannot connect"));

    // A policy that pins no image: no prompt is sent (the recording relay sees no connection),
    // unless the caller asks for it by name. PCR3 alone is the parent's choice, not an image.
    let open = broker.dir.join("open-policy.toml");
    std::fs::write(
        &open,
        "aws_root = false\nroots = [\"root.pem\"]\ncross_certificates = [\"cross.pem\"]\n",
    )
    .unwrap();
    let parent_only = broker.dir.join("pcr3-policy.toml");
    std::fs::write(
        &parent_only,
        format!(
            "aws_root = false\nroots = [\"root.pem\"]\ncross_certificates = [\"cross.pem\"]\n\
             [[measurements]]\npcr3 = \"{}\"\n",
            PcrValue::ZERO
        ),
    )
    .unwrap();
    let rt = runtime();
    let (relay, seen) = rt.block_on(recording_proxy(stack.api));
    for policy in [&open, &parent_only] {
        let unpinned = chat(relay.to_string(), policy, &[]);
        assert_eq!(unpinned.status.code(), Some(2), "{}", policy.display());
        let stderr = String::from_utf8_lossy(&unpinned.stderr);
        assert!(stderr.contains("must pin the enclave image"), "{stderr}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing may reach the enclave before the policy is checked"
    );
    let dangerous = chat(stack.api.to_string(), &open, &["--dangerous-any-image"]);
    assert_eq!(
        dangerous.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dangerous.stderr)
    );
    assert!(String::from_utf8_lossy(&dangerous.stderr).contains("--dangerous-any-image"));
    stack.stop();
    broker.stop();
}
