//! The review's forgery, end to end: whoever reads the broker's response key (`broker.key`, a
//! PEM file) signs an attestation document with the policy's PCRs, its own RSA key and the
//! broker's nonce, under a `cabundle` holding only the national root. The broker, `attest
//! verify` and the verifying client each refuse it; the broker logs the denial.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use attest::pki::certify_service_key;
use attest::service::ServiceRole;
use attest::sim::{DevelopmentRoots, Signer, SimulatedRequest, sign_document};
use attest::{MeasurementSet, PcrIndex, PcrValue, Policy, Timestamp, Verifier};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use client::{ClientError, Session, Timeouts, Trust};
use common::broker::{Backend, Broker, MODEL_ID, Setup, client_pcr0, denied, exchange};
use common::nsm::SigningOnly;
use common::{Options, Stack, binary, test_roots};
use proofs::entry::{Entry, Outcome};
use protocol::nsm::AttestationRequest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sealing::Id;
use sealing::release::{KeyRequest, request_user_data};

/// PCR0-2 as the policy pins them.
fn pcrs() -> BTreeMap<PcrIndex, PcrValue> {
    (0..16u8)
        .map(|i| {
            let value = if i <= 2 {
                client_pcr0()
            } else {
                PcrValue::ZERO
            };
            (PcrIndex::new(i).unwrap(), value)
        })
        .collect()
}

fn forge(
    key: &EcdsaKeyPair,
    certificate: &[u8],
    roots: &DevelopmentRoots,
    request: &SimulatedRequest<'_>,
) -> Vec<u8> {
    sign_document(
        &Signer {
            certificate,
            key,
            cabundle: &[roots.national.certificate.as_ref()],
            module_id: "i-0123456789abcdef0-enc0123456789abcdef",
        },
        request,
        Timestamp::now(),
    )
    .unwrap()
}

/// The broker's own response key signs the document; the broker refuses it for its chain shape
/// and logs a denial, and `attest verify` with the same trust refuses it too.
#[test]
fn the_broker_and_attest_verify_refuse_a_document_signed_with_the_broker_key() {
    let roots = test_roots("National Root");
    let mut broker = Broker::setup(
        "forged",
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
    let stack = Stack::start_with(
        "forged",
        Options {
            extra: &broker.host_toml(),
            root: Some(&broker.root),
            ..Options::default()
        },
    );

    // What an insider copies out of the broker's configuration directory.
    let key_pem = std::fs::read(broker.dir.join("broker.key")).unwrap();
    let key_der = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, key_der.secret_pkcs8_der())
            .unwrap();
    let certificate =
        CertificateDer::from_pem_slice(&std::fs::read(broker.dir.join("broker.pem")).unwrap())
            .unwrap();

    let request = KeyRequest::new(Id::new(MODEL_ID).unwrap()).unwrap();
    let (nonce, document, answer) = exchange(&stack.socket, MODEL_ID, Duration::ZERO, |n| {
        let user_data = request_user_data(request.model_id(), &n);
        let forged = forge(
            &key,
            &certificate,
            &roots,
            &SimulatedRequest {
                pcrs: pcrs(),
                public_key: Some(request.public_key_der()),
                user_data: Some(&user_data),
                nonce: Some(&n),
            },
        );
        Some((n, forged))
    })
    .unwrap();
    assert_eq!(denied(&answer), "chain_shape");
    assert!(nonce.iter().any(|b| *b != 0));

    // `attest verify` with the broker's own trust: refused, exit 1, naming the shape.
    let forged_path = broker.dir.join("forged.cbor");
    std::fs::write(&forged_path, &document).unwrap();
    let out = Command::new(binary("attest"))
        .current_dir(&broker.dir)
        .args(["verify", "forged.cbor", "--no-aws-root"])
        .args(["--root", "root.pem", "--cross-cert", "cross.pem", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["error"]["kind"], "chain_shape", "{verdict}");
    assert_eq!(verdict["error"]["found"], 1, "{verdict}");

    stack.stop();
    broker.stop();
    // The log shows a denial with its reason, and no release.
    let releases: Vec<_> = broker
        .entries()
        .into_iter()
        .filter_map(|e| match e.entry() {
            Entry::KeyRelease(k) => Some((k.outcome, k.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(releases, vec![(Outcome::Denied, "chain_shape".to_owned())]);
}

/// An enclave impostor whose documents are signed by a service key the national root
/// certified: the verifying client refuses it before any prompt is sent.
#[test]
fn the_client_refuses_an_enclave_whose_document_a_service_key_signed() {
    let roots = test_roots("National Root");
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let now = Timestamp::now();
    let certificate = certify_service_key(
        &roots.national.certificate,
        &roots.national.private_key_pem,
        key.public_key().as_der().unwrap().as_ref(),
        "key-broker",
        ServiceRole::KeyBroker,
        Timestamp::from_unix_secs(now.unix_secs() - 60),
        Timestamp::from_unix_secs(now.unix_secs() + 3600),
    )
    .unwrap();

    let api = Arc::new(
        inference::Api::new(
            "test-model",
            Arc::new(SigningOnly({
                let roots = roots.clone();
                move |request: &AttestationRequest<'_>| {
                    Ok(forge(
                        &key,
                        &certificate,
                        &roots,
                        &SimulatedRequest {
                            pcrs: pcrs(),
                            public_key: request.public_key,
                            user_data: request.user_data,
                            nonce: request.nonce,
                        },
                    ))
                }
            })),
            inference::Limits::default(),
        )
        .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let error = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(api.clone().serve_connection(stream));
            }
        });
        let pcr0 = BTreeMap::from([(PcrIndex::ZERO, client_pcr0())]);
        let trust = Trust::new(
            Verifier::new(roots.document_trust().unwrap()),
            Policy::new().allow_measurements(MeasurementSet::try_from(pcr0).unwrap()),
        )
        .unwrap();
        Session::connect(&address.to_string(), Arc::new(trust), Timeouts::default())
            .await
            .unwrap_err()
    });
    assert!(matches!(error, ClientError::Attestation(_)), "{error}");
    assert!(error.to_string().contains("cabundle holds 1"), "{error}");
}
