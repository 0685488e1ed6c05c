//! The keys the broker keeps in a PKCS#11 token, checked against SoftHSM2: `broker init`'s keys
//! open; a KEK with any protection missing (one the token reports, or one it does not report at
//! all) is refused, naming it; and records are tagged by the token.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use broker::keystore::{KekWrapMechanism, KeyStore, KeyStoreError, Pkcs11Config, Pkcs11Store};
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

/// A fresh SoftHSM2 token labelled `label`, in the token directory of `$SOFTHSM2_CONF`.
fn token(label: &str) -> Pkcs11Config {
    let mut init = Command::new("softhsm2-util");
    init.args(["--init-token", "--free", "--label", label])
        .args(["--pin", PIN, "--so-pin", "5678"]);
    let out = init.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    Pkcs11Config {
        module: MODULE.into(),
        token: label.into(),
        kek_label: "kek-1".into(),
        kek_wrap: KekWrapMechanism::AesKeyWrap,
        sessions: 1,
    }
}

/// A SoftHSM2 configuration with an empty token directory of its own.
fn new_configuration() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("broker-pkcs11-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    conf
}

/// Make `label` in the token with `attributes`, generated or (with `value`) imported.
fn make_key(config: &Pkcs11Config, label: &str, attributes: &[Attribute], value: Option<&[u8]>) {
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    pkcs11.initialize(CInitializeArgs::OsThreads).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == config.token)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    template.extend_from_slice(attributes);
    match value {
        None => {
            template.push(Attribute::ValueLen(32.into()));
            session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .unwrap();
        }
        Some(value) => {
            template.push(Attribute::Value(value.to_vec()));
            session.create_object(&template).unwrap();
        }
    }
}

/// A case: its name (and token label), the KEK's attributes, its value if imported rather than
/// generated, and what the refusal must say.
type Weakness<'a> = (&'a str, Vec<Attribute>, Option<&'a [u8]>, &'a str);

/// A KEK as `broker init` makes it, but with `change` applied to its template.
fn good_kek(change: &[Attribute]) -> Vec<Attribute> {
    let mut attributes = vec![
        Attribute::KeyType(KeyType::AES),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    for c in change {
        attributes.retain(|a| a.attribute_type() != c.attribute_type());
        attributes.push(c.clone());
    }
    attributes
}

#[test]
fn pkcs11_keys_are_checked_attribute_by_attribute() {
    assert!(
        Path::new(MODULE).exists(),
        "this test needs SoftHSM2 (apt-get install softhsm2): {MODULE} is missing"
    );
    // SoftHSM2 reads its configuration from the environment when the module is initialised, and
    // a test cannot safely change its own environment: the test runs again in a child process
    // that has its own configuration, and passes only if the child does.
    const CHILD: &str = "BROKER_PKCS11_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["pkcs11_keys_are_checked_attribute_by_attribute", "--exact"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("SOFTHSM2_CONF", new_configuration())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }

    // What `broker init` makes opens, and tags records in the token: the same record gives the
    // same tag, another record another.
    let config = token("good");
    let created = Pkcs11Store::create_missing(&config, PIN).unwrap();
    assert_eq!(created, ["kek-1", "kek-1.records"]);
    assert!(
        Pkcs11Store::create_missing(&config, PIN)
            .unwrap()
            .is_empty()
    );
    let store = Pkcs11Store::open(config, PIN).unwrap();
    let tag = store.record_tag(b"model a").unwrap();
    assert_eq!(tag, store.record_tag(b"model a").unwrap());
    assert_ne!(tag, store.record_tag(b"model b").unwrap());
    // A data key made and wrapped in the token is released to an enclave's RSA key, and
    // unwraps there to the same key.
    let (key, wrapped) = store.new_data_key().unwrap();
    let enclave =
        aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
    let spki = aws_lc_rs::encoding::AsDer::as_der(&enclave.public_key()).unwrap();
    let released = store
        .rewrap(&wrapped, spki.as_ref(), sealing::release::OaepHash::Sha1)
        .unwrap();
    let enclave = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(enclave).unwrap();
    let mut out = vec![0u8; enclave.min_output_size()];
    let plain = enclave
        .decrypt(
            &aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1,
            &released,
            &mut out,
            None,
        )
        .unwrap();
    assert_eq!(plain, key.expose());
    // One PKCS#11 context at a time in a process.
    drop(store);

    let weak: Vec<Weakness<'_>> = vec![
        (
            "decrypt",
            good_kek(&[Attribute::Decrypt(true)]),
            None,
            "may decrypt",
        ),
        (
            "encrypt",
            good_kek(&[Attribute::Encrypt(true)]),
            None,
            "may encrypt",
        ),
        (
            "modifiable",
            good_kek(&[Attribute::Modifiable(true)]),
            None,
            "is modifiable",
        ),
        (
            "extractable",
            good_kek(&[Attribute::Extractable(true)]),
            None,
            "is extractable",
        ),
        (
            "derive",
            good_kek(&[Attribute::Derive(true)]),
            None,
            "may derive",
        ),
        (
            "imported",
            good_kek(&[]),
            Some(&[7u8; 32][..]),
            "was not always sensitive",
        ),
    ];
    for (name, attributes, value, problem) in weak {
        let config = token(name);
        make_key(&config, "kek-1", &attributes, value);
        // The record key is made right, so the KEK alone is at fault.
        Pkcs11Store::create_missing(&config, PIN).unwrap();
        match Pkcs11Store::open(config, PIN) {
            Err(KeyStoreError::Kek { label, problem: p }) => {
                assert_eq!(label, "kek-1", "{name}");
                assert!(p.contains(problem), "{name}: {p}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
