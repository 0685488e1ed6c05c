//! Enclave images: what the builder writes, the reader reads back with the same measurements;
//! builds are reproducible; signatures verify and bind PCR0 and PCR8; every rule of the format is
//! enforced, and no input makes the reader panic.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use attest::PcrValue;
use eif::{
    Arch, FileSigner, ImageBuilder, ImageError, Measurements, Metadata, Part, SectionKind,
    SignatureError, pcr0_payload,
};
use proptest::prelude::*;

fn signer(alg: &'static rcgen::SignatureAlgorithm) -> (FileSigner, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Image Signing Key");
    let cert = params.self_signed(&key).unwrap();
    let signer = FileSigner::from_pem(key.serialize_pem().as_bytes(), cert.pem().as_bytes())
        .expect("a matching key and certificate");
    (signer, cert.der().to_vec())
}

fn builder() -> ImageBuilder<'static> {
    ImageBuilder::new(
        Part::bytes(b"bzImage bytes".to_vec()),
        "console=ttyS0 quiet",
    )
    .ramdisk(Part::bytes(b"boot ramdisk".to_vec()))
    .ramdisk(Part::bytes(b"application ramdisk".to_vec()))
}

fn build(builder: &ImageBuilder<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    builder.write(&mut out).unwrap();
    out
}

fn read(bytes: &[u8]) -> Result<eif::Image, ImageError> {
    eif::read(&mut &bytes[..], bytes.len() as u64)
}

/// Recompute the CRC after a deliberate change, so that the rule under test is the one hit.
fn fix_crc(bytes: &mut [u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..544]);
    crc.update(&bytes[548..]);
    let value = crc.finalize().to_be_bytes();
    bytes[544..548].copy_from_slice(&value);
}

fn section_offset(bytes: &[u8], index: usize) -> usize {
    u64::from_be_bytes(bytes[28 + 8 * index..36 + 8 * index].try_into().unwrap()) as usize
}

#[test]
fn an_image_reads_back_with_the_measurements_of_its_parts() {
    let bytes = build(&builder());
    let image = read(&bytes).unwrap();
    let expected = Measurements {
        pcr0: PcrValue::measure(b"bzImage bytesconsole=ttyS0 quietboot ramdiskapplication ramdisk"),
        pcr1: PcrValue::measure(b"bzImage bytesconsole=ttyS0 quietboot ramdisk"),
        pcr2: PcrValue::measure(b"application ramdisk"),
        pcr8: None,
    };
    assert_eq!(image.measurements, expected);
    assert_eq!(image.cmdline, b"console=ttyS0 quiet");
    assert_eq!(image.arch, Arch::X86_64);
    assert_eq!(image.default_memory, 1024 * 1024 * 1024);
    assert_eq!(image.default_cpus, 2);
    let kinds: Vec<_> = image.sections.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SectionKind::Kernel,
            SectionKind::Cmdline,
            SectionKind::Metadata,
            SectionKind::Ramdisk,
            SectionKind::Ramdisk
        ]
    );
    assert_eq!(image.sections[0].offset, 548);
    assert_eq!(image.len, bytes.len() as u64);
    let metadata: serde_json::Value =
        serde_json::from_slice(image.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(metadata["ImageName"], "enclave");
    assert_eq!(
        metadata["BuildMetadata"]["BuildTime"],
        "1970-01-01T00:00:00Z"
    );
    // The section's bytes are the command line, with no trailing NUL.
    let cmdline_at = image.sections[1].offset as usize + 12;
    assert_eq!(&bytes[cmdline_at..cmdline_at + 19], b"console=ttyS0 quiet");
    assert_eq!(bytes[cmdline_at + 19..cmdline_at + 21], [0, 5][..]);
}

#[test]
fn builds_are_reproducible_and_settings_are_recorded() {
    assert_eq!(build(&builder()), build(&builder()));
    let arm = build(
        &builder()
            .arch(Arch::Aarch64)
            .resources(512, 4)
            .metadata(Metadata {
                name: "model-server".into(),
                ..Metadata::default()
            }),
    );
    let image = read(&arm).unwrap();
    assert_eq!(image.arch, Arch::Aarch64);
    assert_eq!(image.default_memory, 512 << 20);
    assert_eq!(image.default_cpus, 4);
    // Neither the header's settings nor the metadata are measured.
    assert_eq!(
        image.measurements,
        read(&build(&builder())).unwrap().measurements
    );
}

#[test]
fn parts_from_files_give_the_same_image_as_parts_in_memory() {
    let dir = std::env::temp_dir().join(format!("image-parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kernel"), b"bzImage bytes").unwrap();
    std::fs::write(dir.join("r1"), b"boot ramdisk").unwrap();
    std::fs::write(dir.join("r2"), b"application ramdisk").unwrap();
    let from_files = build(
        &ImageBuilder::new(Part::file(dir.join("kernel")), "console=ttyS0 quiet")
            .ramdisk(Part::file(dir.join("r1")))
            .ramdisk(Part::file(dir.join("r2"))),
    );
    assert_eq!(from_files, build(&builder()));
    let missing = ImageBuilder::new(Part::file(dir.join("nope")), "x")
        .ramdisk(Part::file(dir.join("r1")))
        .write(&mut Vec::new())
        .unwrap_err();
    assert!(
        missing.to_string().contains("nope"),
        "the error names the file: {missing}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn large_application_ramdisks_measure_the_same_on_the_threaded_path() {
    let app: Vec<u8> = (0..9 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let bytes = build(
        &ImageBuilder::new(Part::bytes(b"k".to_vec()), "c")
            .ramdisk(Part::bytes(b"boot".to_vec()))
            .ramdisk(Part::bytes(app.clone()))
            .ramdisk(Part::bytes(b"more".to_vec())),
    );
    let image = read(&bytes).unwrap();
    assert_eq!(
        image.measurements.pcr2,
        PcrValue::measure(&[app.as_slice(), b"more"].concat())
    );
    assert_eq!(
        image.measurements.pcr0,
        PcrValue::measure(&[b"kcboot".as_slice(), &app, b"more"].concat())
    );
}

#[test]
fn builder_refuses_what_is_not_an_image() {
    let no_ramdisk = ImageBuilder::new(Part::bytes(b"k".to_vec()), "c").write(&mut Vec::new());
    assert!(matches!(no_ramdisk, Err(ImageError::InvalidInput { .. })));
    let nul = ImageBuilder::new(Part::bytes(b"k".to_vec()), "a\0b")
        .ramdisk(Part::bytes(b"r".to_vec()))
        .write(&mut Vec::new());
    assert!(matches!(nul, Err(ImageError::InvalidInput { .. })));
    let mut many = ImageBuilder::new(Part::bytes(b"k".to_vec()), "c");
    for _ in 0..30 {
        many = many.ramdisk(Part::bytes(b"r".to_vec()));
    }
    assert!(matches!(
        many.write(&mut Vec::new()),
        Err(ImageError::TooManySections { count: 33 })
    ));
}

#[test]
fn signed_images_verify_and_measure_the_certificate_into_pcr8() {
    for alg in [
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    ] {
        let (signer, cert_der) = signer(alg);
        let signed = builder().sign_with(&signer);
        let mut out = Vec::new();
        let built = signed.write(&mut out).unwrap();
        let image = read(&out).unwrap();
        assert_eq!(image.measurements, built.measurements);
        assert_eq!(image.measurements.pcr8, Some(PcrValue::measure(&cert_der)));
        let unsigned = read(&build(&builder())).unwrap().measurements;
        assert_eq!(
            (
                image.measurements.pcr0,
                image.measurements.pcr1,
                image.measurements.pcr2
            ),
            (unsigned.pcr0, unsigned.pcr1, unsigned.pcr2),
            "signing measures nothing but PCR8"
        );
        let signature = image.signature.unwrap();
        assert_eq!(signature.certificate.as_ref(), cert_der.as_slice());
        assert!(signature.subject.contains("Image Signing Key"));
        assert_eq!(image.sections.last().unwrap().kind, SectionKind::Signature);
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let (_, cert_der) = signer(&rcgen::PKCS_ECDSA_P384_SHA384);
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let error = FileSigner::from_pem(other.serialize_pem().as_bytes(), &cert_der).unwrap_err();
    assert!(matches!(error, SignatureError::Key(_)), "{error}");
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let error = FileSigner::from_pem(p256.serialize_pem().as_bytes(), &cert_der).unwrap_err();
    assert!(matches!(error, SignatureError::Key(_)), "{error}");
}

/// The signature section of a signed image, and where it starts.
/// A signed image whose certificate's PEM ends in a partial base64 group (the certificate's
/// length is not a multiple of 3), so that the last base64 character has unused bits: the key is
/// random, so is the length, and the case must not depend on the draw.
fn signed_image() -> (Vec<u8>, usize) {
    let signer = loop {
        let (signer, der) = signer(&rcgen::PKCS_ECDSA_P384_SHA384);
        if der.len() % 3 != 0 {
            break signer;
        }
    };
    let bytes = build(&builder().sign_with(&signer));
    let at = section_offset(&bytes, 5) + 12;
    (bytes, at)
}

#[test]
fn a_signature_over_another_image_is_refused() {
    let (signer, _) = signer(&rcgen::PKCS_ECDSA_P384_SHA384);
    let other = build(
        &ImageBuilder::new(Part::bytes(b"another kernel".to_vec()), "c")
            .ramdisk(Part::bytes(b"r".to_vec()))
            .sign_with(&signer),
    );
    // Replace the signature section (the last) with the other image's, size and all.
    let other_section = &other[section_offset(&other, 4)..];
    let (mut bytes, at) = signed_image();
    bytes.truncate(at - 12);
    bytes.extend_from_slice(other_section);
    let size = (other_section.len() - 12) as u64;
    bytes[284 + 8 * 5..292 + 8 * 5].copy_from_slice(&size.to_be_bytes());
    fix_crc(&mut bytes);
    let error = read(&bytes).unwrap_err();
    assert!(
        matches!(
            error,
            ImageError::Signature(SignatureError::WrongPcr0 { .. })
        ),
        "{error}"
    );
    assert_eq!(error.kind(), "bad_signature");
}

/// The signature section is not itself signed: what protects it is that the COSE signature must
/// verify under the certificate's key and cover this image's PCR0, and that PCR8 measures the
/// certificate. So every change is either refused or yields a different PCR8, which no policy
/// pinning the genuine PCR8 accepts (or is PEM whitespace, which changes no certificate byte).
#[test]
fn every_bit_of_the_signature_section_is_refused_or_changes_pcr8() {
    let (bytes, at) = signed_image();
    let genuine = read(&bytes).unwrap().measurements;
    let mut refused = 0;
    for offset in at..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut changed = bytes.clone();
            changed[offset] ^= bit;
            // Without the CRC fix every change is a CRC mismatch; with it, the signature's own
            // checks must catch it.
            assert!(matches!(
                read(&changed),
                Err(ImageError::CrcMismatch { .. })
            ));
            fix_crc(&mut changed);
            match read(&changed) {
                Err(_) => refused += 1,
                Ok(image) => {
                    let m = image.measurements;
                    // PEM parsers skip whitespace, so a newline turned into another whitespace
                    // character leaves the certificate, and PCR8, as they were.
                    assert!(
                        m.pcr8 != genuine.pcr8 || bytes[offset].is_ascii_whitespace(),
                        "byte {} bit {bit:#x} accepted with the same PCR8",
                        offset - at
                    );
                    assert_eq!(
                        (m.pcr0, m.pcr1, m.pcr2),
                        (genuine.pcr0, genuine.pcr1, genuine.pcr2)
                    );
                }
            }
        }
    }
    // Every change outside the certificate's body (the COSE structure, the signature, the
    // payload, the CBOR framing) is refused outright: well over half of all changes.
    assert!(refused > (bytes.len() - at), "only {refused} refused");
}

#[test]
fn the_signed_payload_is_the_nitro_cli_encoding_of_pcr0() {
    let (bytes, _) = signed_image();
    let pcr0 = read(&bytes).unwrap().measurements.pcr0;
    let payload = pcr0_payload(&pcr0);
    // The payload appears in the section as an array of byte values, one CBOR integer each.
    let as_values: Vec<u8> = payload
        .iter()
        .flat_map(|b| if *b < 24 { vec![*b] } else { vec![0x18, *b] })
        .collect();
    assert!(
        bytes
            .windows(as_values.len())
            .any(|w| w == as_values.as_slice()),
        "the COSE payload (PcrInfo for PCR0) is inside the signature section"
    );
}

/// A small unsigned image with the section table: kernel, cmdline, metadata, ramdisk, ramdisk.
fn small() -> Vec<u8> {
    build(&builder())
}

fn expect(bytes: &[u8], kind: &str) {
    match read(bytes) {
        Err(e) => assert_eq!(e.kind(), kind, "{e}"),
        Ok(_) => panic!("accepted; expected {kind}"),
    }
}

#[test]
fn every_rule_of_the_format_is_enforced_with_its_own_error() {
    let good = small();
    let changed = |f: &dyn Fn(&mut Vec<u8>), crc: bool| {
        let mut bytes = good.clone();
        f(&mut bytes);
        if crc {
            fix_crc(&mut bytes);
        }
        bytes
    };
    expect(&good[..100], "too_short");
    expect(&changed(&|b| b[0] = b'E', true), "bad_magic");
    expect(&changed(&|b| b[5] = 3, true), "unsupported_version");
    expect(&changed(&|b| b[7] = 0x02, true), "malformed_header");
    // A gap: the second section starts one byte late.
    expect(&changed(&|b| b[28 + 8 + 7] += 1, true), "layout");
    // Overlap: the second section starts one byte early.
    expect(&changed(&|b| b[28 + 8 + 7] -= 1, true), "layout");
    // The last section claims more bytes than the file has.
    expect(&changed(&|b| b[284 + 8 * 4 + 7] += 1, true), "layout");
    expect(&changed(&|b| b.push(0), true), "length");
    expect(&changed(&|b| b[561] ^= 1, false), "crc_mismatch");
    let last = good.len() - 1;
    expect(&changed(&|b| b[last] ^= 1, false), "crc_mismatch");
    // The kernel's section header says type 6.
    expect(&changed(&|b| b[549] = 6, true), "malformed_section");
    // ...or has flags.
    expect(&changed(&|b| b[551] = 1, true), "malformed_section");
    // ...or disagrees with the header about its size.
    expect(&changed(&|b| b[559] ^= 1, true), "malformed_section");
    // Sections out of order: the kernel's type set to cmdline.
    expect(&changed(&|b| b[549] = 2, true), "malformed_section");
    // A ramdisk marked as a signature before the last ramdisk.
    let ramdisk = section_offset(&good, 3);
    expect(&changed(&|b| b[ramdisk + 1] = 4, true), "malformed_section");
    // Metadata that is not JSON.
    let metadata = section_offset(&good, 2) + 12;
    expect(&changed(&|b| b[metadata] = b'x', true), "malformed_section");
}

#[test]
fn an_oversize_command_line_is_refused_before_it_is_read() {
    // A command line within the file but over the 64 KiB limit: refused by its size alone.
    let kernel = b"k";
    let cmdline = vec![b'a'; 70 * 1024];
    let mut image = vec![0u8; 548];
    image[..6].copy_from_slice(b".eif\x00\x04");
    image[27] = 3;
    let mut offset = 548u64;
    let parts: [(u16, &[u8]); 3] = [(1, kernel), (2, &cmdline), (3, b"r")];
    for (slot, (_, body)) in parts.iter().enumerate() {
        image[28 + 8 * slot..36 + 8 * slot].copy_from_slice(&offset.to_be_bytes());
        image[284 + 8 * slot..292 + 8 * slot].copy_from_slice(&(body.len() as u64).to_be_bytes());
        offset += 12 + body.len() as u64;
    }
    for (kind, body) in parts {
        image.extend_from_slice(&kind.to_be_bytes());
        image.extend_from_slice(&[0, 0]);
        image.extend_from_slice(&(body.len() as u64).to_be_bytes());
        image.extend_from_slice(body);
    }
    fix_crc(&mut image);
    match read(&image) {
        Err(ImageError::SectionTooLarge { kind, limit, .. }) => {
            assert_eq!(kind, SectionKind::Cmdline);
            assert_eq!(limit, 64 * 1024);
        }
        other => panic!("expected section_too_large, got {other:?}"),
    }
}

#[test]
fn every_truncation_is_refused() {
    let (bytes, _) = signed_image();
    for len in 0..bytes.len() {
        let error = read(&bytes[..len]).unwrap_err();
        assert!(
            ["too_short", "layout", "length"].contains(&error.kind()),
            "truncated to {len}: {error}"
        );
    }
    // A reader given the true length but a stream that ends early says so too.
    let error = eif::read(&mut &bytes[..600], bytes.len() as u64).unwrap_err();
    assert_eq!(error.kind(), "length", "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read(&bytes);
        let mut with_magic = b".eif\x00\x04".to_vec();
        with_magic.extend_from_slice(&bytes);
        prop_assert!(read(&with_magic).is_err());
    }

    #[test]
    fn any_changed_byte_is_refused(offset in 0usize..4096, value in 1u8..=255) {
        let good = small();
        let mut bytes = good.clone();
        let at = offset % bytes.len();
        bytes[at] ^= value;
        prop_assert!(read(&bytes).is_err(), "changed byte {} accepted", at);
    }
}
