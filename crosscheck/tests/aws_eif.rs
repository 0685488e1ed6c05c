//! `eif` against `aws-nitro-enclaves-image-format` (the library `nitro-cli` builds and
//! describes images with), both ways, over several kernels, command lines and ramdisk sets,
//! signed and unsigned:
//!
//! - images built by `attest` are read by AWS's reader with a good CRC, the same PCRs and, when
//!   signed, a signature it accepts;
//! - images built by AWS's builder are read by `attest` with the PCRs AWS's builder reported;
//! - unsigned, the two builders write the same bytes.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::{EifBuilder, SignKeyData};
use eif::{FileSigner, ImageBuilder, Metadata, Part};
use sha2::Digest;

struct Case {
    name: &'static str,
    kernel: Vec<u8>,
    cmdline: &'static str,
    ramdisks: Vec<Vec<u8>>,
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "minimal",
            kernel: b"k".to_vec(),
            cmdline: "",
            ramdisks: vec![b"r".to_vec()],
        },
        Case {
            name: "typical",
            kernel: pseudo_random(700_000, 1),
            cmdline: "reboot=k panic=30 pci=off nomodule console=ttyS0 i8042.noaux \
                      i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on",
            ramdisks: vec![pseudo_random(300_000, 2), pseudo_random(2_000_000, 3)],
        },
        Case {
            name: "many-ramdisks",
            kernel: pseudo_random(4096, 4),
            cmdline: "console=ttyS0",
            ramdisks: (0..6)
                .map(|i| pseudo_random(1000 * i + 1, 10 + i as u32))
                .collect(),
        },
        Case {
            // Over the size at which `attest` hashes PCR2 on a second thread.
            name: "large-application",
            kernel: pseudo_random(1_500_000, 5),
            cmdline: "init=/init",
            ramdisks: vec![
                pseudo_random(10_000, 6),
                pseudo_random(9 * 1024 * 1024 + 3, 7),
            ],
        },
    ]
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eif-crosscheck-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The case's parts as files, since AWS's builder reads files.
fn write_parts(dir: &Path, case: &Case) -> (PathBuf, Vec<PathBuf>) {
    let kernel = dir.join("kernel");
    std::fs::write(&kernel, &case.kernel).unwrap();
    let ramdisks = case
        .ramdisks
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.join(format!("ramdisk{i}"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    (kernel, ramdisks)
}

/// The metadata `attest` writes by default, as AWS's type.
fn identity() -> EifIdentityInfo {
    let ours = Metadata::default();
    EifIdentityInfo {
        img_name: ours.name,
        img_version: ours.version,
        build_info: EifBuildInfo {
            build_time: ours.build_time.to_string(),
            build_tool: "attest".into(),
            build_tool_version: env!("CARGO_PKG_VERSION").into(),
            img_os: "Linux".into(),
            img_kernel: ours.kernel_version,
        },
        docker_info: serde_json::Value::Null,
        custom_info: serde_json::Value::Null,
    }
}

/// A P-384 signing key and self-signed certificate, as PEM files.
fn signing_files(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Cross-check signer");
    let cert = params.self_signed(&key).unwrap();
    let key_path = dir.join("key.pem");
    let cert_path = dir.join("cert.pem");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    (key_path, cert_path)
}

fn ours_as_map(m: &eif::Measurements) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("PCR0".to_owned(), m.pcr0.to_hex());
    out.insert("PCR1".to_owned(), m.pcr1.to_hex());
    out.insert("PCR2".to_owned(), m.pcr2.to_hex());
    if let Some(pcr8) = m.pcr8 {
        out.insert("PCR8".to_owned(), pcr8.to_hex());
    }
    out
}

/// AWS's library prints its hasher's `Debug` form, which depends on its `sha2` version
/// ("Sha384 { ... }" in released `nitro-cli`, "Sha512_48 { .. }" with sha2 0.10); `attest` prints
/// the former. The PCRs are what is compared.
fn without_algorithm(mut m: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let algorithm = m.remove("HashAlgorithm").unwrap();
    assert!(algorithm.starts_with("Sha"), "{algorithm}");
    m
}

fn build_ours(dir: &Path, case: &Case, sign: Option<&FileSigner>) -> (PathBuf, eif::Built) {
    let (kernel, ramdisks) = write_parts(dir, case);
    let mut builder = ImageBuilder::new(Part::file(kernel), case.cmdline);
    for ramdisk in ramdisks {
        builder = builder.ramdisk(Part::file(ramdisk));
    }
    if let Some(signer) = sign {
        builder = builder.sign_with(signer);
    }
    let path = dir.join("ours.eif");
    let mut file = std::fs::File::create(&path).unwrap();
    let built = builder.write(&mut file).unwrap();
    (path, built)
}

fn build_theirs(
    dir: &Path,
    case: &Case,
    sign: Option<(&Path, &Path)>,
) -> (PathBuf, BTreeMap<String, String>) {
    let (kernel, ramdisks) = write_parts(dir, case);
    let sign_info = sign.map(|(key, cert)| SignKeyData::new(key.to_str().unwrap(), cert).unwrap());
    let mut builder = EifBuilder::new(
        &kernel,
        case.cmdline.to_owned(),
        sign_info,
        sha2::Sha384::new(),
        0,
        identity(),
    );
    for ramdisk in &ramdisks {
        builder.add_ramdisk(ramdisk);
    }
    let path = dir.join("theirs.eif");
    let mut file = std::fs::File::create(&path).unwrap();
    let measurements = builder.write_to(&mut file);
    (path, without_algorithm(measurements))
}

fn aws_reads(path: &Path) -> (BTreeMap<String, String>, EifReader) {
    let mut reader = EifReader::from_eif(path.to_str().unwrap().to_owned()).unwrap();
    assert!(reader.check_crc(), "AWS's reader accepts the CRC");
    let measurements = without_algorithm(reader.get_measurements().unwrap());
    (measurements, reader)
}

#[test]
fn unsigned_images_agree_both_ways_and_byte_for_byte() {
    for case in cases() {
        let dir = dir(case.name);
        let (ours, built) = build_ours(&dir, &case, None);
        let (theirs, their_pcrs) = build_theirs(&dir, &case, None);

        let (aws_view, reader) = aws_reads(&ours);
        assert_eq!(aws_view, ours_as_map(&built.measurements), "{}", case.name);
        assert_eq!(
            reader.get_header().num_sections as usize,
            3 + case.ramdisks.len()
        );

        let read_back = eif::read_file(&theirs).unwrap();
        assert_eq!(
            ours_as_map(&read_back.measurements),
            their_pcrs,
            "{}",
            case.name
        );
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
            "{}: the same bytes as AWS's builder",
            case.name
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn signed_images_agree_both_ways() {
    for case in cases() {
        let dir = dir(&format!("{}-signed", case.name));
        let (key, cert) = signing_files(&dir);
        let signer = FileSigner::from_pem(
            &std::fs::read(&key).unwrap(),
            &std::fs::read(&cert).unwrap(),
        )
        .unwrap();

        // Ours, read by AWS: same PCRs including PCR8, and AWS's signature check passes.
        let (ours, built) = build_ours(&dir, &case, Some(&signer));
        let (aws_view, mut reader) = aws_reads(&ours);
        let ours_map = ours_as_map(&built.measurements);
        assert!(ours_map.contains_key("PCR8"));
        assert_eq!(aws_view, ours_map, "{}", case.name);
        let mut with_algorithm = aws_view.clone();
        with_algorithm.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
        reader.get_certificate_info(with_algorithm).unwrap();
        assert_eq!(
            reader.sign_check,
            Some(true),
            "{}: AWS verifies our signature",
            case.name
        );

        // Theirs, read by us: same PCRs, and our signature check passes.
        let (theirs, their_pcrs) = build_theirs(&dir, &case, Some((&key, &cert)));
        let read_back = eif::read_file(&theirs).unwrap();
        assert_eq!(
            ours_as_map(&read_back.measurements),
            their_pcrs,
            "{}",
            case.name
        );
        assert!(read_back.signature.is_some());
        assert_eq!(ours_map, their_pcrs, "same parts, same signer: same PCRs");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
