//! `attest image enclave`: the runtime and its configuration as an image laid out the way
//! `nitro-cli build-enclave` lays it out, for either boot chain; reproducible; a dynamically
//! linked binary is refused.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary;

/// The smallest static ELF executable header: no program headers, so no interpreter.
fn static_elf(payload: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    elf.extend_from_slice(payload);
    elf
}

struct Inputs {
    dir: PathBuf,
}

impl Inputs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("enclave-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        let write = |path: &str, bytes: &[u8]| std::fs::write(dir.join(path), bytes).unwrap();
        write("enclave", &static_elf(b"the runtime"));
        write("enclave-init", &static_elf(b"our init"));
        write("enclave.toml", b"listen = \"vsock\"\n");
        write("national-root.pem", b"a root certificate");
        write("blobs/bzImage", b"a kernel");
        write(
            "blobs/cmdline",
            format!("{}\n", eif::AWS_CMDLINE).as_bytes(),
        );
        write("blobs/init", &static_elf(b"AWS's init"));
        write("blobs/nsm.ko", b"the NSM driver");
        for exe in ["enclave", "enclave-init", "blobs/init"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join(exe), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        Inputs { dir }
    }

    fn build(&self, boot: &str, out: &str, extra: &[&str]) -> std::process::Output {
        let d = &self.dir;
        let mut command = Command::new(binary("attest"));
        command
            .args(["image", "enclave", "--boot", boot, "--json"])
            .arg("--enclave")
            .arg(d.join("enclave"))
            .arg("--config")
            .arg(d.join("enclave.toml"))
            .arg("--include")
            .arg(d.join("national-root.pem"))
            .arg("--blobs")
            .arg(d.join("blobs"))
            .arg("--out")
            .arg(d.join(out))
            .args(extra)
            .env_remove("SOURCE_DATE_EPOCH");
        if boot == "ours" {
            command.arg("--init").arg(d.join("enclave-init"));
        }
        command.output().unwrap()
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pcrs(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["Measurements"].clone()
}

/// The ramdisk sections' bytes.
fn ramdisks(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let image = eif::read(&mut bytes.as_slice(), bytes.len() as u64).unwrap();
    image
        .sections
        .iter()
        .filter(|s| s.kind == eif::SectionKind::Ramdisk)
        .map(|s| {
            let start = usize::try_from(s.offset).unwrap() + eif::SECTION_HEADER_LEN;
            bytes[start..start + usize::try_from(s.size).unwrap()].to_vec()
        })
        .collect()
}

/// What GNU cpio lists in an archive (an independent reader), with modes.
fn cpio_list(archive: &[u8]) -> Vec<String> {
    use std::io::Write;
    let mut child = Command::new("cpio")
        .args(["-t", "-v", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("GNU cpio is needed (apt-get install cpio)");
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            format!("{} {}", fields[0], fields[fields.len() - 1])
        })
        .collect()
}

#[test]
fn both_chains_lay_out_the_image_as_nitro_cli_does() {
    let inputs = Inputs::new("layout");
    let ours = pcrs(&inputs.build("ours", "ours.eif", &[]));
    let aws = pcrs(&inputs.build("aws", "aws.eif", &[]));
    // The application ramdisk is the same for both chains; the boot ramdisks differ.
    assert_eq!(ours["PCR2"], aws["PCR2"]);
    assert_ne!(ours["PCR1"], aws["PCR1"]);

    let aws_ramdisks = ramdisks(&inputs.dir.join("aws.eif"));
    assert_eq!(aws_ramdisks.len(), 2);
    assert_eq!(
        cpio_list(&aws_ramdisks[0]),
        ["drwxr-xr-x dev", "-rwxr-xr-x init", "-rwxr-xr-x nsm.ko"]
    );
    // The NSM module goes with the kernel, whichever init boots it.
    let ours_ramdisks = ramdisks(&inputs.dir.join("ours.eif"));
    assert_eq!(
        cpio_list(&ours_ramdisks[0]),
        ["drwxr-xr-x dev", "-rwxr-xr-x init", "-rwxr-xr-x nsm.ko"]
    );
    assert_ne!(aws_ramdisks[0], ours_ramdisks[0]);
    std::fs::remove_file(inputs.dir.join("blobs/nsm.ko")).unwrap();
    pcrs(&inputs.build("ours", "ours-no-nsm.eif", &[]));
    assert_eq!(
        cpio_list(&ramdisks(&inputs.dir.join("ours-no-nsm.eif"))[0]),
        ["drwxr-xr-x dev", "-rwxr-xr-x init"]
    );
    assert_eq!(aws_ramdisks[1], ours_ramdisks[1]);
    assert_eq!(
        cpio_list(&ours_ramdisks[1]),
        [
            "-rw-r--r-- cmd",
            "-rw-r--r-- env",
            "drwxr-xr-x rootfs",
            "drwxr-xr-x rootfs/bin",
            "-rwxr-xr-x rootfs/bin/enclave",
            "drwxr-xr-x rootfs/dev",
            "drwxr-xr-x rootfs/etc",
            "drwxr-xr-x rootfs/etc/enclave",
            "-rw-r--r-- rootfs/etc/enclave/enclave.toml",
            "-rw-r--r-- rootfs/etc/enclave/national-root.pem",
            "drwxr-xr-x rootfs/proc",
            "drwxr-xr-x rootfs/run",
            "drwxr-xr-x rootfs/sys",
            "drwxr-xr-x rootfs/tmp",
            "drwxr-xr-x rootfs/var",
        ]
    );
    let app = String::from_utf8_lossy(&ours_ramdisks[1]).into_owned();
    assert!(app.contains("/bin/enclave\nrun\n--config\n/etc/enclave/enclave.toml\n"));
    assert!(app.contains("PATH=/bin\n"));

    // The image's own command line is AWS's.
    let bytes = std::fs::read(inputs.dir.join("ours.eif")).unwrap();
    let image = eif::read(&mut bytes.as_slice(), bytes.len() as u64).unwrap();
    assert_eq!(image.cmdline, eif::AWS_CMDLINE.as_bytes());
}

#[test]
fn the_same_inputs_give_the_same_image_anywhere() {
    let first = Inputs::new("repro-a");
    let second = Inputs::new("repro-b");
    pcrs(&first.build("ours", "x.eif", &[]));
    pcrs(&second.build("ours", "x.eif", &[]));
    assert_eq!(
        std::fs::read(first.dir.join("x.eif")).unwrap(),
        std::fs::read(second.dir.join("x.eif")).unwrap(),
        "two builds from equal inputs in different directories differ"
    );
    // The modes on this machine do not matter: the runtime is 0755 and the rest 0644 in both.
    use std::os::unix::fs::PermissionsExt;
    for (file, mode) in [
        ("enclave", 0o700),
        ("national-root.pem", 0o755),
        ("enclave.toml", 0o600),
    ] {
        std::fs::set_permissions(second.dir.join(file), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    pcrs(&second.build("ours", "modes.eif", &[]));
    assert_eq!(
        std::fs::read(first.dir.join("x.eif")).unwrap(),
        std::fs::read(second.dir.join("modes.eif")).unwrap(),
        "file modes on the build machine changed the image"
    );
    // One byte of the configuration changes PCR2 (and PCR0), not PCR1.
    std::fs::write(second.dir.join("enclave.toml"), b"listen = \"vsock\"\n#\n").unwrap();
    let a = pcrs(&first.build("ours", "y.eif", &[]));
    let b = pcrs(&second.build("ours", "y.eif", &[]));
    assert_eq!(a["PCR1"], b["PCR1"]);
    assert_ne!(a["PCR2"], b["PCR2"]);
    assert_ne!(a["PCR0"], b["PCR0"]);
}

#[test]
fn a_dynamically_linked_runtime_is_refused_and_nothing_is_written() {
    let inputs = Inputs::new("dynamic");
    // The attest binary itself: linked against glibc, with an interpreter.
    std::fs::copy(binary("attest"), inputs.dir.join("enclave")).unwrap();
    let output = inputs.build("ours", "x.eif", &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dynamically linked"), "{stderr}");
    assert!(!inputs.dir.join("x.eif").exists());

    // The same for the init, and for a file that is not ELF at all.
    let inputs = Inputs::new("dynamic-init");
    std::fs::copy(binary("attest"), inputs.dir.join("enclave-init")).unwrap();
    let output = inputs.build("ours", "x.eif", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the init"));
    std::fs::write(inputs.dir.join("enclave"), b"#!/bin/sh\n").unwrap();
    let output = inputs.build("aws", "x.eif", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a 64-bit"));
    // A static executable for another architecture, and an object file that is no executable.
    let mut arm = static_elf(b"the runtime");
    arm[0x12..0x14].copy_from_slice(&183u16.to_le_bytes());
    std::fs::write(inputs.dir.join("enclave"), &arm).unwrap();
    let output = inputs.build("aws", "x.eif", &[]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("not built for x86_64"));
    let output = inputs.build("aws", "x.eif", &["--arch", "aarch64"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut object = static_elf(b"the runtime");
    object[0x10..0x12].copy_from_slice(&1u16.to_le_bytes());
    std::fs::write(inputs.dir.join("enclave"), &object).unwrap();
    let output = inputs.build("aws", "x.eif", &["--force"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an executable"));
}

#[test]
fn bad_cmd_and_env_inputs_are_refused() {
    let inputs = Inputs::new("env");
    let twice = inputs.build("ours", "x.eif", &["--env", "A=1", "--env", "A=2"]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("given twice"));
    std::fs::create_dir_all(inputs.dir.join("other")).unwrap();
    std::fs::write(inputs.dir.join("other/national-root.pem"), b"another root").unwrap();
    let include = inputs.dir.join("other/national-root.pem");
    let twice = inputs.build("ours", "x.eif", &["--include", include.to_str().unwrap()]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("another file has that name"));
    assert!(!inputs.dir.join("x.eif").exists());
    for (env, says) in [
        ("NOEQUALS", "NAME=VALUE"),
        ("1X=y", "not a variable name"),
        ("PATH=/usr/bin", "PATH"),
    ] {
        let output = inputs.build("ours", "x.eif", &["--env", env]);
        assert_eq!(output.status.code(), Some(2), "{env}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{env}: {stderr}");
    }
    let output = inputs.build("ours", "x.eif", &["--env", "RUST_LOG=info"]);
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&ramdisks(&inputs.dir.join("x.eif"))[1])
            .contains("RUST_LOG=info\n")
    );
}
