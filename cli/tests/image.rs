//! `attest measure`, `attest image build`, `attest image ramdisk` and `attest policy
//! from-image`, as a user runs them: exit codes, JSON shapes, atomic outputs, signing with a key
//! file and with a key in SoftHSM2 through PKCS#11.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use attest::{PcrValue, PolicyFile};
use serde_json::Value;

mod common;

use common::{attest, attest_env, code, json, tempdir};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A kernel, a boot ramdisk and an application ramdisk made with `attest image ramdisk`.
fn parts(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let kernel = dir.join("bzImage");
    std::fs::write(
        &kernel,
        (0..50_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let init = dir.join("init.cpio");
    std::fs::write(&init, b"boot ramdisk bytes").unwrap();
    let app_dir = dir.join("app");
    std::fs::create_dir_all(app_dir.join("etc")).unwrap();
    std::fs::write(app_dir.join("enclave"), b"binary").unwrap();
    std::fs::write(app_dir.join("etc/enclave.toml"), b"listen = \"vsock\"\n").unwrap();
    let app = dir.join("app.cpio");
    let out = attest(&["image", "ramdisk", s(&app_dir), "--out", s(&app), "--force"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    (kernel, init, app)
}

fn build(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (PathBuf, Output) {
    let (kernel, init, app) = parts(dir);
    let eif = dir.join("enclave.eif");
    let mut args = vec![
        "image",
        "build",
        "--kernel",
        s(&kernel),
        "--cmdline",
        "console=ttyS0",
        "--ramdisk",
        s(&init),
        "--ramdisk",
        s(&app),
        "--out",
        s(&eif),
    ];
    args.extend_from_slice(extra);
    let out = attest_env(&args, env);
    (eif, out)
}

#[test]
fn measure_prints_the_nitro_cli_shape_with_independently_computed_pcrs() {
    let dir = tempdir("measure");
    let (eif, out) = build(&dir, &["--json"], &[]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let built = json(&out);

    let measured = attest(&["measure", s(&eif), "--json"]);
    assert_eq!(code(&measured), 0);
    let measured = json(&measured);
    let kernel = std::fs::read(dir.join("bzImage")).unwrap();
    let init = std::fs::read(dir.join("init.cpio")).unwrap();
    let app = std::fs::read(dir.join("app.cpio")).unwrap();
    let expect = |parts: &[&[u8]]| PcrValue::measure(&parts.concat()).to_hex();
    let m = &measured["Measurements"];
    assert_eq!(m["HashAlgorithm"], "Sha384 { ... }");
    assert_eq!(m["PCR0"], expect(&[&kernel, b"console=ttyS0", &init, &app]));
    assert_eq!(m["PCR1"], expect(&[&kernel, b"console=ttyS0", &init]));
    assert_eq!(m["PCR2"], expect(&[&app]));
    assert!(m.get("PCR8").is_none());
    assert_eq!(built["Measurements"], *m, "build and measure agree");
    assert_eq!(measured["EifVersion"], 4);
    assert_eq!(measured["IsSigned"], false);
    assert_eq!(measured["CheckCRC"], true);
    assert_eq!(measured["Cmdline"], "console=ttyS0");
    assert_eq!(measured["ImageName"], "enclave");
    assert_eq!(measured["Sections"].as_array().unwrap().len(), 5);

    let text = attest(&["measure", s(&eif)]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(m["PCR0"].as_str().unwrap()), "{text}");
    assert!(text.contains("unsigned"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_image_is_refused_with_exit_1_and_a_named_reason() {
    let dir = tempdir("damaged");
    let (eif, out) = build(&dir, &[], &[]);
    assert_eq!(code(&out), 0);
    let mut bytes = std::fs::read(&eif).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&eif, &bytes).unwrap();
    let out = attest(&["measure", s(&eif), "--json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["error"]["kind"], "crc_mismatch");
    let out = attest(&["policy", "from-image", s(&eif)]);
    assert_eq!(code(&out), 1, "no policy is printed for a damaged image");
    assert!(String::from_utf8_lossy(&out.stdout).contains("CRC-32 mismatch"));
    let out = attest(&["measure", s(&dir.join("absent.eif"))]);
    assert_eq!(
        code(&out),
        2,
        "a missing file is an I/O error, not a verdict"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_policy_fragment_is_a_valid_policy_that_pins_the_image() {
    let dir = tempdir("fragment");
    let (eif, out) = build(&dir, &[], &[]);
    assert_eq!(code(&out), 0);
    let fragment = attest(&["policy", "from-image", s(&eif)]);
    assert_eq!(code(&fragment), 0);
    let text = String::from_utf8(fragment.stdout).unwrap();
    let policy = PolicyFile::parse(&text, &dir).unwrap();
    let image = eif::read_file(&eif).unwrap();
    assert_eq!(
        policy.policy.measurements(),
        [image.measurements.measurement_set()]
    );
    let only = attest(&["policy", "from-image", s(&eif), "--pcr", "2", "--json"]);
    assert_eq!(
        json(&only),
        serde_json::json!({"measurements": [{"pcr2": image.measurements.pcr2.to_hex()}]})
    );
    let unsigned_pcr8 = attest(&["policy", "from-image", s(&eif), "--pcr", "8"]);
    assert_eq!(code(&unsigned_pcr8), 2);
    let bad = attest(&["policy", "from-image", s(&eif), "--pcr", "3"]);
    assert_eq!(code(&bad), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outputs_are_atomic_and_never_silently_replaced() {
    let dir = tempdir("atomic");
    let (eif, out) = build(&dir, &[], &[]);
    assert_eq!(code(&out), 0);
    let first = std::fs::read(&eif).unwrap();
    let (_, again) = build(&dir, &[], &[]);
    assert_eq!(code(&again), 2);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let (_, forced) = build(&dir, &["--force"], &[]);
    assert_eq!(code(&forced), 0);
    assert_eq!(
        std::fs::read(&eif).unwrap(),
        first,
        "same inputs, same bytes"
    );

    // A build that fails part-way leaves nothing: no image, no temporary file.
    let failed = dir.join("failed.eif");
    let out = attest(&[
        "image",
        "build",
        "--kernel",
        s(&dir.join("bzImage")),
        "--cmdline",
        "x",
        "--ramdisk",
        s(&dir.join("no-such-ramdisk")),
        "--out",
        s(&failed),
    ]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-ramdisk"));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("failed") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ramdisks_and_images_are_reproducible_across_directories_and_times() {
    let a = tempdir("repro-a");
    let b = tempdir("repro-b-elsewhere");
    let (eif_a, out) = build(&a, &[], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_eq!(code(&out), 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (eif_b, out) = build(&b, &[], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        std::fs::read(a.join("app.cpio")).unwrap(),
        std::fs::read(b.join("app.cpio")).unwrap()
    );
    assert_eq!(
        std::fs::read(&eif_a).unwrap(),
        std::fs::read(&eif_b).unwrap()
    );
    let image = eif::read_file(&eif_a).unwrap();
    let metadata: Value = serde_json::from_slice(image.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(
        metadata["BuildMetadata"]["BuildTime"],
        "2023-11-14T22:13:20Z"
    );
    for dir in [a, b] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn signing_cert(dir: &Path, key: &rcgen::KeyPair) -> PathBuf {
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Enclave Image Signer");
    let cert = params.self_signed(key).unwrap();
    let path = dir.join("signer.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

#[test]
fn a_key_file_signs_and_pcr8_measures_the_certificate() {
    let dir = tempdir("sign-file");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = signing_cert(&dir, &key);
    let key_path = dir.join("signer.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (eif, out) = build(
        &dir,
        &["--sign-key", s(&key_path), "--sign-cert", s(&cert)],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let measured = json(&attest(&["measure", s(&eif), "--json"]));
    let der = attest::load_certificates(&std::fs::read(&cert).unwrap()).unwrap();
    assert_eq!(
        measured["Measurements"]["PCR8"],
        PcrValue::measure(der[0].as_ref()).to_hex()
    );
    assert_eq!(measured["IsSigned"], true);
    assert_eq!(measured["SignatureCheck"], true);
    assert_eq!(measured["SigningCertificate"]["Algorithm"], "ES384");

    // A key that is not the certificate's is refused before anything is written.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    std::fs::write(&key_path, other.serialize_pem()).unwrap();
    std::fs::remove_file(&eif).unwrap();
    let (eif, out) = build(
        &dir,
        &["--sign-key", s(&key_path), "--sign-cert", s(&cert)],
        &[],
    );
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not belong to the signing certificate")
    );
    assert!(!eif.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A SoftHSM2 token in `dir`, initialised with `softhsm2-util`, holding a P-384 key pair made
/// inside the token. Returns the SOFTHSM2_CONF path and the key's SubjectPublicKeyInfo.
fn softhsm_token(dir: &Path) -> (PathBuf, Vec<u8>) {
    use cryptoki::context::{CInitializeArgs, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "images",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output();
    let init = init.unwrap_or_else(|e| {
        panic!("this test needs SoftHSM2 (apt-get install softhsm2): softhsm2-util: {e}")
    });
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // The caller runs this in a process whose SOFTHSM2_CONF names `conf`; the module reads it
    // when it is initialised.
    let pkcs11 = Pkcs11::new(SOFTHSM_MODULE).unwrap();
    pkcs11.initialize(CInitializeArgs::OsThreads).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label().trim_end() == "images")
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new("1234".into())))
        .unwrap();
    // secp384r1's OID, DER-encoded, as CKA_EC_PARAMS.
    let p384 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let (public, _) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(p384),
                Attribute::Verify(true),
                Attribute::Label(b"eif-signing".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Label(b"eif-signing".to_vec()),
            ],
        )
        .unwrap();
    let attributes = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .unwrap();
    let Some(Attribute::EcPoint(point)) = attributes.into_iter().next() else {
        panic!("no EC point");
    };
    // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point (97 bytes on P-384).
    let point = &point[point.len() - 97..];
    let mut spki = vec![
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    spki.extend_from_slice(point);
    (conf, spki)
}

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn a_key_in_softhsm2_signs_through_pkcs11() {
    // Key generation needs SOFTHSM2_CONF in this process's environment, which a test cannot set
    // without `unsafe`; so this test re-runs itself as a child with the variable set.
    if std::env::var_os("ATTEST_TEST_SOFTHSM_CHILD").is_none() {
        let dir = tempdir("pkcs11");
        let conf = dir.join("softhsm2.conf");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_key_in_softhsm2_signs_through_pkcs11",
                "--nocapture",
            ])
            .env("ATTEST_TEST_SOFTHSM_CHILD", &dir)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child ran the test"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    let dir = PathBuf::from(std::env::var_os("ATTEST_TEST_SOFTHSM_CHILD").unwrap());
    let (conf, spki) = softhsm_token(&dir);

    // The signing certificate for the token's key, issued by a CA (as a government PKI would).
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Image Signing CA");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "HSM Image Signer");
    let public = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let cert = params.signed_by(&public, &issuer).unwrap();
    let cert_path = dir.join("hsm-signer.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();

    let conf_str = conf.to_str().unwrap().to_owned();
    let pkcs11 = [
        "--sign-cert",
        s(&cert_path),
        "--pkcs11-module",
        SOFTHSM_MODULE,
        "--pkcs11-token",
        "images",
        "--pkcs11-key",
        "eif-signing",
    ];
    let env = [
        ("SOFTHSM2_CONF", conf_str.as_str()),
        ("ATTEST_PKCS11_PIN", "1234"),
    ];
    let (eif, out) = build(&dir, &pkcs11, &env);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let measured = json(&attest(&["measure", s(&eif), "--json"]));
    assert_eq!(measured["SignatureCheck"], true);
    assert_eq!(
        measured["Measurements"]["PCR8"],
        PcrValue::measure(cert.der()).to_hex()
    );
    assert!(
        measured["SigningCertificate"]["Issuer"]
            .as_str()
            .unwrap()
            .contains("Image Signing CA")
    );

    // A wrong PIN, an unknown key label and a certificate for another key all fail clearly,
    // leaving no image.
    std::fs::remove_file(&eif).unwrap();
    let wrong_pin = [
        ("SOFTHSM2_CONF", conf_str.as_str()),
        ("ATTEST_PKCS11_PIN", "0000"),
    ];
    let (eif, out) = build(&dir, &pkcs11, &wrong_pin);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("logging in to token"));
    let mut unknown = pkcs11;
    unknown[7] = "no-such-key";
    let (_, out) = build(&dir, &unknown, &env);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-key"));
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    std::fs::copy(signing_cert(&dir, &other), &cert_path).unwrap();
    let (_, out) = build(&dir, &pkcs11, &env);
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!eif.exists());
}
