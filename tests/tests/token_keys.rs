//! The broker's response key (ECDSA P-384) and log key (Ed25519) inside the HSM, through
//! PKCS#11, with SoftHSM2: `broker init` generates them there (non-extractable), the broker
//! signs releases and checkpoints with them, file keys are announced at every start, and a
//! token key that is not the certificate's stops the broker at start.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::process::{Command, Output};

use aws_lc_rs::encoding::AsDer;

use common::broker::{Backend, Broker, Document, MODEL_ID, Setup, client_pcr0, exchange_direct};
use common::{binary, test_roots};
use sealing::Id;
use sealing::release::KeyRequest;

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn certify(broker: &Broker) {
    run(Command::new(binary("attest"))
        .current_dir(&broker.dir)
        .args([
            "pki",
            "certify-broker-key",
            "--issuer-cert",
            "signing-root.pem",
            "--issuer-key",
            "signing-root.key",
            "--public-key",
            "broker.pub.pem",
            "--out",
            "broker.pem",
        ]));
}

/// Release a key to a simulated enclave of the pinned image and check it as an enclave would.
fn release(broker: &Broker) -> sealing::release::ReleasedKey {
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
    request
        .accept(
            &sent.0,
            &sent.1,
            &answer,
            &broker.trust(),
            attest::Timestamp::now(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()))
}

#[test]
fn the_response_and_log_keys_live_in_the_hsm() {
    let root = test_roots("National Root");
    let mut broker = Broker::setup(
        "token-keys",
        Backend::SoftHsm,
        Setup {
            root: &root,
            signing_root: None,
            rules: "regions = [\"eu-west-3\"]",
            pcr0s: &[client_pcr0()],
            config_extra: "",
        },
    );
    // The fixture starts with file keys; the broker says so at every start.
    broker.start();
    broker.stop();
    assert!(
        broker.log().contains("FILE on this host"),
        "file keys are announced: {}",
        broker.log()
    );
    let file_log_vkey = broker.log_vkey.clone();

    // Move both keys into the token: the configuration names labels, `broker init` generates
    // the key pairs inside the token and writes only the public halves.
    let config_path = broker.dir.join("broker.toml");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("key = \"broker.key\"", "token_key = \"response-key\"")
        .replace("key = \"log.skey\"", "token_key = \"log-key\"");
    std::fs::write(&config_path, config).unwrap();
    for stale in ["broker.pem", "broker.pub.pem", "broker.key", "log.skey"] {
        std::fs::remove_file(broker.dir.join(stale)).unwrap();
    }
    // The log so far holds only entries (no checkpoint yet), so it can change keys here.
    let out = run(&mut broker.command(&["init", "--config", "broker.toml"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("generated the log key \"log-key\" (Ed25519) in the token"),
        "{stdout}"
    );
    assert!(
        stdout.contains("generated the response key \"response-key\" (P-384) in the token"),
        "{stdout}"
    );
    broker.log_vkey = stdout
        .lines()
        .find_map(|l| l.strip_prefix("log verifier key: "))
        .unwrap()
        .to_owned();
    assert_ne!(broker.log_vkey, file_log_vkey);
    assert!(!broker.dir.join("broker.key").exists() && !broker.dir.join("log.skey").exists());
    // A second init keeps the keys it made.
    let again = run(&mut broker.command(&["init", "--config", "broker.toml"]));
    assert!(!String::from_utf8_lossy(&again.stdout).contains("generated the"));
    certify(&broker);

    std::fs::write(broker.dir.join("broker.log"), "").unwrap();
    broker.start();
    let released = release(&broker);
    assert_eq!(released.claims.model_id.as_str(), MODEL_ID);
    assert_eq!(
        released.checkpoint.signed_by,
        vec!["test.example/key-release-log".to_owned()]
    );
    broker.stop();
    assert!(
        !broker.log().contains("FILE on this host"),
        "no file key to announce: {}",
        broker.log()
    );

    // The token's response key must be the certificate's: a certificate for another key stops
    // the broker at start, before it answers anyone.
    let good_certificate = std::fs::read(broker.dir.join("broker.pem")).unwrap();
    let other = broker.dir.join("other.pub.pem");
    let rogue = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
    )
    .unwrap();
    let spki = aws_lc_rs::signature::KeyPair::public_key(&rogue)
        .as_der()
        .unwrap();
    std::fs::write(&other, common::broker::pem("PUBLIC KEY", spki.as_ref())).unwrap();
    run(Command::new(binary("attest"))
        .current_dir(&broker.dir)
        .args([
            "pki",
            "certify-broker-key",
            "--issuer-cert",
            "signing-root.pem",
            "--issuer-key",
            "signing-root.key",
            "--public-key",
            "other.pub.pem",
            "--out",
            "other.pem",
        ]));
    std::fs::rename(broker.dir.join("other.pem"), broker.dir.join("broker.pem")).unwrap();
    let out = broker
        .command(&["serve", "--config", "broker.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not the key its certificate certifies"),
        "{stderr}"
    );

    // A key pair under the label that `broker init` did not make (here one made for an approver,
    // with no CKA_ID pairing its halves) is refused at start.
    run(broker
        .command(&[
            "policy",
            "approver-key",
            "--pkcs11-module",
            common::broker::SOFTHSM_MODULE,
            "--token",
            "broker",
            "--key-label",
            "foreign-key",
            "--public-key",
            "foreign.pub.pem",
        ])
        .env("APPROVER_PKCS11_PIN", "1234"));
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        "token_key = \"response-key\"",
        "token_key = \"foreign-key\"",
    );
    std::fs::write(&config_path, &config).unwrap();
    let out = broker
        .command(&["serve", "--config", "broker.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("foreign-key") && stderr.contains("CKA_ID"),
        "{stderr}"
    );
    std::fs::write(
        &config_path,
        config.replace(
            "token_key = \"foreign-key\"",
            "token_key = \"response-key\"",
        ),
    )
    .unwrap();

    // A label the token does not hold is named.
    std::fs::write(broker.dir.join("broker.pem"), good_certificate).unwrap();
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("token_key = \"log-key\"", "token_key = \"no-such-key\"");
    std::fs::write(&config_path, config).unwrap();
    let out = broker
        .command(&["serve", "--config", "broker.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-key"), "{stderr}");
}
