//! Policy changes need k of n approvals, with real processes: `broker policy approver-key`
//! (a file key, and a key made inside SoftHSM2), `attest pki certify-approver-key`,
//! `broker policy approve`, `apply`, `attest policy verify-approvals`, and `broker serve`, whose
//! log names the approvers. Forged approvals: too few, over other bytes or another version, by
//! an approver certified under another root or for another role, by someone not named.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::broker::{Backend, Broker, MODEL_ID, SOFTHSM_MODULE, Setup, softhsm_token};
use common::{binary, enclave_pcr0, test_roots};
use proofs::entry::Entry;

const APPROVAL: &str = "[approval]\nrequired = 2\napprovers = [\"alice\", \"bob\", \"carol\"]\n";

struct Approvers {
    broker: Broker,
    /// SOFTHSM2_CONF of carol's token.
    hsm: PathBuf,
}

fn run(mut command: Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(mut command: Command, code: i32) -> String {
    let out = command.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{command:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn policy(version: u64, extra: &str) -> String {
    format!(
        "version = {version}\n{extra}\n[models.\"{MODEL_ID}\"]\n\
         [[models.\"{MODEL_ID}\".measurements]]\npcr0 = \"{}\"\n",
        enclave_pcr0()
    )
}

impl Approvers {
    fn setup(name: &str) -> Self {
        let root = test_roots("National Root");
        let broker = Broker::setup(
            name,
            Backend::Software,
            Setup {
                root: &root,
                signing_root: None,
                rules: "",
                pcr0s: &[enclave_pcr0()],
                config_extra: APPROVAL,
            },
        );
        let hsm = softhsm_token(&broker.dir.join("carol-hsm"));
        let approvers = Approvers { broker, hsm };
        // alice and bob hold file keys; carol's key is made inside SoftHSM2.
        for who in ["alice", "bob"] {
            run(approvers.broker_command(&[
                "policy",
                "approver-key",
                "--key-out",
                &format!("{who}.key"),
                "--public-key",
                &format!("{who}.pub.pem"),
            ]));
        }
        run(approvers.broker_command(&[
            "policy",
            "approver-key",
            "--pkcs11-module",
            SOFTHSM_MODULE,
            "--token",
            "broker",
            "--key-label",
            "carol",
            "--public-key",
            "carol.pub.pem",
        ]));
        for who in ["alice", "bob", "carol"] {
            approvers.certify(
                "certify-approver-key",
                "signing-root",
                &format!("{who}.pub.pem"),
                who,
                &format!("{who}.pem"),
            );
        }
        approvers
    }

    fn dir(&self) -> &Path {
        &self.broker.dir
    }

    fn broker_command(&self, args: &[&str]) -> Command {
        let mut command = self.broker.command(args);
        command
            .env("SOFTHSM2_CONF", &self.hsm)
            .env("APPROVER_PKCS11_PIN", "1234");
        command
    }

    fn certify(&self, how: &str, root: &str, public_key: &str, name: &str, out: &str) {
        let mut certify = Command::new(binary("attest"));
        certify.current_dir(self.dir()).args([
            "pki",
            how,
            "--issuer-cert",
            &format!("{root}.pem"),
            "--issuer-key",
            &format!("{root}.key"),
            "--public-key",
            public_key,
            "--name",
            name,
            "--out",
            out,
        ]);
        run(certify);
    }

    /// `who` approves `file` (relative to the broker's directory) into `out`, with the key and
    /// certificate given (carol's key is in the token).
    fn approve_with(&self, file: &str, key: &str, certificate: &str, out: &str) {
        let mut args = vec![
            "policy",
            "approve",
            file,
            "--certificate",
            certificate,
            "--out",
            out,
        ];
        if key == "carol" {
            args.extend([
                "--pkcs11-module",
                SOFTHSM_MODULE,
                "--token",
                "broker",
                "--key-label",
                "carol",
            ]);
        } else {
            args.extend(["--key", key]);
        }
        run(self.broker_command(&args));
    }

    fn approve(&self, file: &str, who: &str) -> String {
        let out = format!("{file}.{who}.approval");
        let key = if who == "carol" {
            "carol".to_owned()
        } else {
            format!("{who}.key")
        };
        self.approve_with(file, &key, &format!("{who}.pem"), &out);
        out
    }

    fn apply(&self, file: &str, approvals: &[&str]) -> Command {
        let mut args = vec![
            "policy",
            "apply",
            file,
            "--config",
            "broker.toml",
            "--approvals",
        ];
        args.extend_from_slice(approvals);
        self.broker_command(&args)
    }

    fn verify_offline(&self, file: &str, approvals: &[&str]) -> Command {
        let mut verify = Command::new(binary("attest"));
        verify.current_dir(self.dir()).args([
            "policy",
            "verify-approvals",
            file,
            "--root",
            "root.pem",
            "--required",
            "2",
            "--approver",
            "alice",
            "--approver",
            "bob",
            "--approver",
            "carol",
            "--json",
            "--approvals",
        ]);
        verify.args(approvals);
        verify
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir().join(name), text).unwrap();
    }

    fn policy_changes(&self) -> Vec<(u64, Vec<String>)> {
        self.broker
            .entries()
            .iter()
            .filter_map(|e| match e.entry() {
                Entry::PolicyChange(p) => Some((p.policy_version, p.approvers.clone())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_policy_takes_effect_only_with_k_of_n_valid_approvals() {
    let mut a = Approvers::setup("approvals");
    a.write("v1.toml", &policy(1, ""));

    // Without an approved policy the broker does not start, and says who is missing.
    let said = fails(a.broker.command(&["serve", "--config", "broker.toml"]), 2);
    assert!(
        said.contains("not approved") && said.contains("missing"),
        "{said}"
    );

    let alice = a.approve("v1.toml", "alice");
    let carol = a.approve("v1.toml", "carol");

    // k - 1 approvals: refused, naming who is missing; offline too.
    let said = fails(a.apply("v1.toml", &[&alice]), 1);
    assert!(
        said.contains("1 of 2") && said.contains("bob") && said.contains("carol"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fails(a.verify_offline("v1.toml", &[&alice]), 1)).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["missing"], serde_json::json!(["bob", "carol"]));

    // The same approver twice counts once.
    a.approve_with("v1.toml", "alice.key", "alice.pem", "alice-again.approval");
    fails(a.apply("v1.toml", &[&alice, "alice-again.approval"]), 1);

    // Approvals over other bytes, or another version, do not count.
    a.write("v1-edited.toml", &format!("{}# edited\n", policy(1, "")));
    let edited = a.approve("v1-edited.toml", "bob");
    a.write("v9.toml", &policy(9, ""));
    let other_version = a.approve("v9.toml", "bob");
    // An approval file renamed to stand for another policy: still over its own bytes.
    for forged in [&edited, &other_version] {
        let said = fails(a.apply("v1.toml", &[&alice, forged]), 1);
        assert!(
            said.contains("other policy bytes") || said.contains("approved version 9"),
            "{said}"
        );
    }

    // "bob" certified by another root, and alice's key certified for another role, do not count;
    // nor does a name the configuration does not list.
    let rogue = test_roots("Rogue Root");
    std::fs::write(
        a.dir().join("rogue.pem"),
        common::broker::pem("CERTIFICATE", &rogue.national.certificate),
    )
    .unwrap();
    std::fs::write(
        a.dir().join("rogue.key"),
        rogue.national.private_key_pem.as_bytes(),
    )
    .unwrap();
    a.certify(
        "certify-approver-key",
        "rogue",
        "bob.pub.pem",
        "bob",
        "bob-rogue.pem",
    );
    a.approve_with("v1.toml", "bob.key", "bob-rogue.pem", "bob-rogue.approval");
    a.certify(
        "certify-broker-key",
        "signing-root",
        "bob.pub.pem",
        "bob",
        "bob-broker.pem",
    );
    a.approve_with(
        "v1.toml",
        "bob.key",
        "bob-broker.pem",
        "bob-broker.approval",
    );
    a.certify(
        "certify-approver-key",
        "signing-root",
        "bob.pub.pem",
        "mallory",
        "mallory.pem",
    );
    a.approve_with("v1.toml", "bob.key", "mallory.pem", "mallory.approval");
    for (forged, why) in [
        ("bob-rogue.approval", "not trusted"),
        ("bob-broker.approval", "policy-approver"),
        ("mallory.approval", "not a configured approver"),
    ] {
        let said = fails(a.apply("v1.toml", &[&alice, forged]), 1);
        assert!(said.contains(why), "{forged}: {said}");
    }
    // A key that is not the certificate's cannot even make an approval.
    let mut wrong_key = a.broker_command(&[
        "policy",
        "approve",
        "v1.toml",
        "--certificate",
        "alice.pem",
        "--key",
        "bob.key",
        "--out",
        "wrong.approval",
    ]);
    wrong_key.stderr(std::process::Stdio::piped());
    assert!(!wrong_key.output().unwrap().status.success());
    assert!(!a.dir().join("wrong.approval").exists());

    // alice (file key) and carol (SoftHSM2 key): applied, verified offline, adopted at start.
    let json: serde_json::Value = serde_json::from_str(
        &String::from_utf8(run(a.verify_offline("v1.toml", &[&alice, &carol])).stdout).unwrap(),
    )
    .unwrap();
    assert_eq!(json["valid"], true);
    run(a.apply("v1.toml", &[&alice, &carol, "mallory.approval"]));
    a.broker.start();

    // A change applied while the broker serves is adopted within seconds; one with a notice
    // period only once it has passed.
    a.write("v2.toml", &policy(2, ""));
    let v2 = [a.approve("v2.toml", "bob"), a.approve("v2.toml", "carol")];
    run(a.apply("v2.toml", &[&v2[0], &v2[1]]));
    // (The first time is version 1, at start.)
    let adopted = |a: &Approvers| {
        a.broker
            .log()
            .matches("an approved release policy takes effect")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while adopted(&a) < 2 {
        assert!(Instant::now() < deadline, "{}", a.broker.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    a.write("v3.toml", &policy(3, "notice = \"6s\""));
    let v3 = [a.approve("v3.toml", "alice"), a.approve("v3.toml", "bob")];
    let applied = Instant::now();
    run(a.apply("v3.toml", &[&v3[0], &v3[1]]));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !a.broker.log().contains("version=3"),
        "adopted before its notice period: {}",
        a.broker.log()
    );
    let deadline = applied + Duration::from_secs(20);
    while adopted(&a) < 3 {
        assert!(Instant::now() < deadline, "{}", a.broker.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(applied.elapsed() >= Duration::from_secs(5));
    a.broker.stop();

    let changes = a.policy_changes();
    assert_eq!(
        changes,
        vec![
            (1, vec!["alice".to_owned(), "carol".to_owned()]),
            (2, vec!["bob".to_owned(), "carol".to_owned()]),
            (3, vec!["alice".to_owned(), "bob".to_owned()]),
        ],
        "{}",
        a.broker.log()
    );

    // An unapproved edit of the policy file does not take effect: the broker starts on the
    // policy adopted last, and says so.
    a.write("policy.toml", &policy(4, ""));
    a.broker.start();
    std::thread::sleep(Duration::from_secs(3));
    a.broker.stop();
    assert!(
        a.broker.log().contains("is not approved"),
        "{}",
        a.broker.log()
    );
    assert_eq!(a.policy_changes().len(), 3);
    // Forged state on the broker's host: policy.json and a kept copy naming an unapproved file
    // of the version in force. The log's last policy change decides, not the state directory.
    let evil = policy(3, "# the same version, other bytes");
    let sha = data_encoding::HEXLOWER.encode(&sealing::release::sha384(evil.as_bytes()));
    a.write("policy.toml", &evil);
    a.write(
        "state/policy.json",
        &format!("{{\"version\": 3, \"sha384\": \"{sha}\", \"log_index\": 0}}"),
    );
    a.write(&format!("state/policy-adopted-{sha}.toml"), &evil);
    a.broker.start();
    std::thread::sleep(Duration::from_secs(3));
    a.broker.stop();
    assert!(
        a.broker.log().contains("the policy in force stays"),
        "{}",
        a.broker.log()
    );
    assert_eq!(a.policy_changes().len(), 3);

    // A rollback: the approved version 1, its approvals still in the directory, and policy.json
    // gone. Its version is not above the logged one.
    a.write(
        "policy.toml",
        &std::fs::read_to_string(a.dir().join("v1.toml")).unwrap(),
    );
    std::fs::remove_file(a.dir().join("state/policy.json")).unwrap();
    a.broker.start();
    std::thread::sleep(Duration::from_secs(3));
    a.broker.stop();
    assert!(
        a.broker.log().contains("not above the logged version 3"),
        "{}",
        a.broker.log()
    );
    assert_eq!(a.policy_changes().len(), 3);

    // The policy in force is judged again at every start: under a rule whose approvers did not
    // approve it, the broker does not run it.
    let config = std::fs::read_to_string(a.dir().join("broker.toml")).unwrap();
    a.write(
        "broker.toml",
        &config.replace(
            "approvers = [\"alice\", \"bob\", \"carol\"]",
            "approvers = [\"dave\", \"erin\", \"frank\"]",
        ),
    );
    let said = fails(a.broker.command(&["serve", "--config", "broker.toml"]), 2);
    assert!(said.contains("without valid approvals"), "{said}");

    // Every policy change records its approvals and the rule, for anyone to check again.
    let entries = a.broker.entries();
    let Some(Entry::PolicyChange(last)) = entries
        .iter()
        .rev()
        .map(|e| e.entry())
        .find(|e| matches!(e, Entry::PolicyChange(_)))
    else {
        panic!("no policy change")
    };
    assert_eq!(last.required, Some(2));
    assert_eq!(last.eligible, vec!["alice", "bob", "carol"]);
    assert_eq!(last.approvals.len(), 2);
    for bytes in &last.approvals {
        assert!(attest::approval::Approval::from_bytes(bytes).is_ok());
    }
}

#[test]
fn a_configuration_without_approvers_must_say_it_is_dangerous() {
    let a = Approvers::setup("approvals-config");
    let config = std::fs::read_to_string(a.dir().join("broker.toml")).unwrap();
    std::fs::write(a.dir().join("bare.toml"), config.replace(APPROVAL, "")).unwrap();
    let said = fails(a.broker.command(&["check-config", "bare.toml"]), 1);
    assert!(said.contains("dangerous_single_administrator"), "{said}");
    // k above n, or no approvers: refused.
    for bad in [
        "[approval]\nrequired = 4\napprovers = [\"alice\", \"bob\", \"carol\"]\n",
        "[approval]\nrequired = 1\napprovers = []\n",
        "[approval]\nrequired = 1\napprovers = [\"alice\", \"alice\"]\n",
    ] {
        std::fs::write(a.dir().join("bad.toml"), config.replace(APPROVAL, bad)).unwrap();
        let said = fails(a.broker.command(&["check-config", "bad.toml"]), 1);
        assert!(said.contains("approval"), "{said}");
    }
}

/// An approval dated a day back does not shorten a notice period, and a proposal without one
/// still waits out the notice of the policy in force.
#[test]
fn the_notice_period_runs_from_when_the_broker_saw_the_approvals() {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
    use rustls_pki_types::pem::PemObject;
    let mut a = Approvers::setup("approvals-notice");
    a.write("policy.toml", &policy(1, ""));
    let v1 = [
        a.approve("policy.toml", "alice"),
        a.approve("policy.toml", "carol"),
    ];
    run(a.apply("policy.toml", &[&v1[0], &v1[1]]));
    a.broker.start();
    let adopted = |a: &Approvers| {
        a.broker
            .log()
            .matches("an approved release policy takes effect")
            .count()
    };
    assert_eq!(adopted(&a), 1);

    // Version 2 asks for 4 s of notice; both approvals claim to be a day old (signed long before
    // they were applied, or backdated).
    let text = policy(2, "notice = \"4s\"");
    a.write("v2.toml", &text);
    for who in ["alice", "bob"] {
        let key =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(a.dir().join(format!("{who}.key")))
                .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, key.secret_pkcs8_der())
                .unwrap();
        let certificate =
            rustls_pki_types::CertificateDer::from_pem_file(a.dir().join(format!("{who}.pem")))
                .unwrap();
        let claims = attest::approval::ApprovalClaims {
            policy_sha384: sealing::release::sha384(text.as_bytes()),
            policy_version: 2,
            approver: who.into(),
            time: attest::Timestamp::from_unix_secs(attest::Timestamp::now().unix_secs() - 86_400),
        };
        let backdated = attest::approval::Approval::sign(&claims, certificate.to_vec(), |data| {
            key.sign(&aws_lc_rs::rand::SystemRandom::new(), data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "sign".to_owned())
        })
        .unwrap();
        a.write(&format!("{who}-backdated.approval"), &backdated.to_text());
    }
    let applied = Instant::now();
    run(a.apply(
        "v2.toml",
        &["alice-backdated.approval", "bob-backdated.approval"],
    ));
    let wait_for = |a: &Approvers, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while adopted(a) < count {
            assert!(Instant::now() < deadline, "{}", a.broker.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        adopted(&a),
        1,
        "adopted within its notice: {}",
        a.broker.log()
    );
    wait_for(&a, 2);
    assert!(
        applied.elapsed() >= Duration::from_secs(4),
        "{:?}",
        applied.elapsed()
    );

    // Version 3 asks for no notice: the notice in force (4 s) still applies to it.
    a.write("v3.toml", &policy(3, ""));
    let v3 = [a.approve("v3.toml", "bob"), a.approve("v3.toml", "carol")];
    let applied = Instant::now();
    run(a.apply("v3.toml", &[&v3[0], &v3[1]]));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        adopted(&a),
        2,
        "adopted within the notice in force: {}",
        a.broker.log()
    );
    wait_for(&a, 3);
    assert!(
        applied.elapsed() >= Duration::from_secs(4),
        "{:?}",
        applied.elapsed()
    );
    a.broker.stop();
    assert_eq!(
        a.policy_changes()
            .iter()
            .map(|(v, _)| *v)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

/// A first policy with a notice period: the broker starts with no policy (every release
/// refused) and adopts it once the period has passed. Deleting the kept copy of the policy in
/// force does not shorten the notice a change must wait out: the longest is assumed.
#[test]
fn a_first_policy_with_a_notice_period_takes_effect_after_it() {
    let mut a = Approvers::setup("approvals-first-notice");
    a.write("policy.toml", &policy(1, "notice = \"3s\""));
    let v1 = [
        a.approve("policy.toml", "alice"),
        a.approve("policy.toml", "carol"),
    ];
    run(a.apply("policy.toml", &[&v1[0], &v1[1]]));
    let started = Instant::now();
    a.broker.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a
        .broker
        .log()
        .contains("an approved release policy takes effect")
    {
        assert!(Instant::now() < deadline, "{}", a.broker.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        a.broker.log().contains("no policy is in force"),
        "{}",
        a.broker.log()
    );
    a.broker.stop();
    assert_eq!(a.policy_changes().len(), 1);

    for entry in std::fs::read_dir(a.dir().join("state")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("policy-adopted-"))
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    a.write("v2.toml", &policy(2, ""));
    let v2 = [a.approve("v2.toml", "alice"), a.approve("v2.toml", "bob")];
    run(a.apply("v2.toml", &[&v2[0], &v2[1]]));
    a.broker.start();
    std::thread::sleep(Duration::from_secs(5));
    a.broker.stop();
    assert_eq!(a.policy_changes().len(), 1, "{}", a.broker.log());
}
