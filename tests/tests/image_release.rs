//! An image's measurements, put in a release policy with `attest policy from-image`, admit the
//! simulated enclave booted from that image, behind the host; a one-byte change in any ramdisk
//! makes the same policy refuse it. The simulated NSM measures the image it is given as the
//! Nitro hypervisor does, so this is the check the key broker applies before a release.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use attest::{PolicyFile, PolicyViolation, Timestamp, VerifyError};
use common::{Stack, attestation_request, binary, exchange, nonce, temp_dir};
use eif::{ImageBuilder, Part, RamdiskOptions};
use protocol::wire::ResponseBody;

/// The parts of a sample image: a kernel, a boot ramdisk, and an application ramdisk holding the
/// `enclave` binary and its configuration, made reproducibly.
fn parts(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, b"a kernel, for the simulated NSM to measure").unwrap();
    let boot = dir.join("init.cpio");
    std::fs::write(&boot, b"the boot ramdisk: init and the NSM driver").unwrap();
    let app_dir = dir.join("app");
    std::fs::create_dir_all(app_dir.join("etc")).unwrap();
    std::fs::copy(binary("enclave"), app_dir.join("enclave")).unwrap();
    std::fs::write(app_dir.join("etc/enclave.toml"), b"listen = \"vsock\"\n").unwrap();
    let app = dir.join("app.cpio");
    let mut out = std::fs::File::create(&app).unwrap();
    eif::write_ramdisk(&app_dir, &RamdiskOptions::default(), &mut out).unwrap();
    (kernel, boot, app)
}

fn build_image(dir: &Path, kernel: &Path, boot: &Path, app: &Path, name: &str) -> PathBuf {
    let eif = dir.join(name);
    let mut out = std::fs::File::create(&eif).unwrap();
    ImageBuilder::new(Part::file(kernel), "console=ttyS0")
        .ramdisk(Part::file(boot))
        .ramdisk(Part::file(app))
        .write(&mut out)
        .unwrap();
    eif
}

/// Boot the simulated enclave from `eif` behind a host, fetch a document with a fresh nonce and
/// verify it under `policy`.
fn release_check(name: &str, eif: &Path, policy: &PolicyFile) -> Result<(), VerifyError> {
    let nsm = format!("image = \"{}\"", eif.display());
    let stack = Stack::start_with(
        name,
        common::Options {
            nsm_extra: &nsm,
            ..Default::default()
        },
    );
    let n = nonce();
    let response = exchange(stack.forward, &attestation_request(1, &n)).unwrap();
    let ResponseBody::Attestation { document } = response.body else {
        panic!("no document: {response:?}")
    };
    let document = attest::parse(&document).unwrap();
    let result = stack
        .verifier()
        .verify(
            &document,
            &policy.policy.clone().expect_nonce(n),
            Timestamp::now(),
        )
        .map(|_| ());
    stack.stop();
    result
}

fn flip_one_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn the_images_policy_admits_its_enclave_and_refuses_a_changed_ramdisk() {
    let dir = temp_dir("image-release");
    let (kernel, boot, app) = parts(&dir);
    let eif = build_image(&dir, &kernel, &boot, &app, "enclave.eif");

    // The policy a release operator writes: the fragment `attest policy from-image` prints.
    let fragment = Command::new(binary("attest"))
        .args(["policy", "from-image"])
        .arg(&eif)
        .output()
        .unwrap();
    assert!(fragment.status.success());
    let text = format!(
        "aws_root = false\n{}",
        String::from_utf8(fragment.stdout).unwrap()
    );
    let policy = PolicyFile::parse(&text, &dir).unwrap();
    assert_eq!(policy.policy.measurements().len(), 1);

    release_check("image-genuine", &eif, &policy).expect("the measured image is admitted");

    // One byte changed in the application ramdisk, then in the boot ramdisk: refused, each
    // for the PCR that measures it.
    let app_len = std::fs::metadata(&app).unwrap().len() as usize;
    flip_one_byte(&app, app_len / 2);
    let changed_app = build_image(&dir, &kernel, &boot, &app, "changed-app.eif");
    let error = release_check("image-app", &changed_app, &policy).unwrap_err();
    assert_refused(&error);
    assert_eq!(
        changed_pcrs(&eif, &changed_app),
        [true, false, true],
        "PCR0 and PCR2"
    );
    flip_one_byte(&app, app_len / 2);

    flip_one_byte(&boot, 0);
    let changed_boot = build_image(&dir, &kernel, &boot, &app, "changed-boot.eif");
    let error = release_check("image-boot", &changed_boot, &policy).unwrap_err();
    assert_refused(&error);
    assert_eq!(
        changed_pcrs(&eif, &changed_boot),
        [true, true, false],
        "PCR0 and PCR1"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Refused on measurements: PCR0, which covers every ramdisk, is the first pinned PCR to differ.
fn assert_refused(error: &VerifyError) {
    match error {
        VerifyError::Policy(PolicyViolation::PcrMismatch(difference)) => {
            assert_eq!(difference.index.get(), 0, "{error}");
        }
        other => panic!("expected a measurement refusal, got {other}"),
    }
}

/// Which of PCR0, PCR1, PCR2 differ between two images.
fn changed_pcrs(a: &Path, b: &Path) -> [bool; 3] {
    let a = eif::read_file(a).unwrap().measurements;
    let b = eif::read_file(b).unwrap().measurements;
    [a.pcr0 != b.pcr0, a.pcr1 != b.pcr1, a.pcr2 != b.pcr2]
}
