//! The layout of an enclave image's two ramdisks, exactly as `nitro-cli build-enclave` lays them
//! out, so that either init boots the image (AWS's, from the blobs `nitro-cli` installs, or the
//! workspace's `enclave-init`):
//!
//! - the boot ramdisk (measured into PCR1 with the kernel and command line): `dev/`, `init`, and
//!   `nsm.ko` when the kernel needs the NSM driver as a module;
//! - the application ramdisk (PCR2): `cmd` (the command, one argument per line), `env` (one
//!   `NAME=value` per line), and `rootfs/`, the file system the command runs in, with the mount
//!   points the init fills (`dev`, `proc`, `run`, `sys`, `tmp`, `var`).
//!
//! Both are [`RamdiskTree`]s, so they inherit its normalisation: the same inputs give the same
//! bytes on any machine.

use std::path::Path;

use crate::ramdisk::{RamdiskError, RamdiskTree};

/// AWS's enclave kernel command line (`nitro-cli`'s `blobs/x86_64/cmdline`).
pub const AWS_CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux \
                               i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";

/// The mount points `rootfs/` holds for the init.
const ROOTFS_DIRS: [&str; 6] = ["dev", "proc", "run", "sys", "tmp", "var"];

/// An application that cannot be laid out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A file could not be added.
    #[error(transparent)]
    Ramdisk(#[from] RamdiskError),
    /// A path inside the root file system that is not absolute, or has `.`, `..` or empty
    /// components.
    #[error("`{0}`: a path in the enclave's file system must be absolute, without `.` or `..`")]
    Path(String),
    /// An argument or environment value with a newline or NUL, which `cmd` and `env` (one item
    /// per line) cannot carry.
    #[error("`{0}`: a newline or NUL cannot be carried in cmd or env")]
    Line(String),
    /// An environment variable whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("`{0}`: not a variable name")]
    Name(String),
    /// Two files at one path, or a variable set twice.
    #[error("`{0}` is given twice")]
    Duplicate(String),
    /// An argument that is empty (the init skips empty lines, so it would vanish).
    #[error("an empty argument cannot be carried in cmd")]
    EmptyArgument,
}

/// The boot ramdisk: `dev/`, `init`, and `nsm.ko` if given (both 0755, as `nitro-cli` writes
/// them).
pub fn boot_ramdisk(init: &Path, nsm: Option<&Path>) -> Result<RamdiskTree, RamdiskError> {
    let tree = RamdiskTree::new().dir("dev").file("init", init, true)?;
    match nsm {
        Some(nsm) => tree.file("nsm.ko", nsm, true),
        None => Ok(tree),
    }
}

/// What the application ramdisk holds.
#[derive(Clone, Debug, Default)]
pub struct Application<'a> {
    /// Files of the root file system: where (an absolute path inside it) and from where.
    pub files: Vec<(String, &'a Path)>,
    /// The command: program (a path inside the root file system) and arguments.
    pub cmd: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
}

fn rootfs_path(path: &str) -> Result<String, LayoutError> {
    let invalid = || LayoutError::Path(path.to_owned());
    let rest = path.strip_prefix('/').ok_or_else(invalid)?;
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        || rest.contains(['\n', '\0'])
    {
        return Err(invalid());
    }
    Ok(format!("rootfs/{rest}"))
}

fn line(text: &str) -> Result<&str, LayoutError> {
    if text.contains(['\n', '\0']) {
        return Err(LayoutError::Line(text.to_owned()));
    }
    Ok(text)
}

fn variable_name(name: &str) -> Result<&str, LayoutError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(LayoutError::Name(name.to_owned()));
    }
    Ok(name)
}

/// The application ramdisk: `cmd`, `env` and `rootfs/` with the application's files.
pub fn application_ramdisk(app: &Application<'_>) -> Result<RamdiskTree, LayoutError> {
    let mut tree = RamdiskTree::new().dir("rootfs");
    for dir in ROOTFS_DIRS {
        tree = tree.dir(&format!("rootfs/{dir}"));
    }
    let (program, _) = app
        .cmd
        .split_first()
        .ok_or(LayoutError::Path(String::new()))?;
    rootfs_path(program)?;
    let mut seen = std::collections::BTreeSet::new();
    for (path, source) in &app.files {
        let inside = rootfs_path(path)?;
        if !seen.insert(inside.clone()) {
            return Err(LayoutError::Duplicate(path.clone()));
        }
        // The program is executable and nothing else is, whatever the modes on this machine.
        tree = tree.file(&inside, source, path == program)?;
    }
    let mut cmd = String::new();
    for arg in &app.cmd {
        if arg.is_empty() {
            return Err(LayoutError::EmptyArgument);
        }
        cmd.push_str(line(arg)?);
        cmd.push('\n');
    }
    let mut env = String::new();
    let mut names = std::collections::BTreeSet::new();
    for (name, value) in &app.env {
        if !names.insert(name.as_str()) {
            return Err(LayoutError::Duplicate(name.clone()));
        }
        env.push_str(variable_name(name)?);
        env.push('=');
        env.push_str(line(value)?);
        env.push('\n');
    }
    Ok(tree.bytes("cmd", cmd, false).bytes("env", env, false))
}

/// Check that `bytes` start a 64-bit little-endian ELF executable (`ET_EXEC`, or `ET_DYN` for a
/// static PIE) for `arch`, with no dynamic loader: what an enclave image can run. The error says
/// what is wrong.
pub fn check_static_executable(bytes: &[u8], arch: crate::Arch) -> Result<(), String> {
    let loader = elf_interpreter(bytes)?;
    let field = |at: usize| {
        bytes
            .get(at..at.saturating_add(2))
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_le_bytes)
    };
    match field(0x10) {
        Some(2 | 3) => {}
        _ => return Err("not an executable (ELF type is not EXEC or DYN)".to_owned()),
    }
    let (machine, name) = match arch {
        crate::Arch::X86_64 => (62, "x86_64"),
        crate::Arch::Aarch64 => (183, "aarch64"),
    };
    if field(0x12) != Some(machine) {
        return Err(format!("not built for {name}"));
    }
    match loader {
        None => Ok(()),
        Some(loader) => Err(format!("dynamically linked (it asks for {loader})")),
    }
}

/// Whether an ELF executable asks for a dynamic loader, and which: an image's root file system
/// has no loader or shared libraries, so its program must be static. `None` for a static
/// executable; an error for bytes that are not a 64-bit little-endian ELF file.
pub fn elf_interpreter(bytes: &[u8]) -> Result<Option<String>, &'static str> {
    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            b.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    fn u64_at(b: &[u8], at: usize) -> Option<usize> {
        let v = u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?);
        usize::try_from(v).ok()
    }
    const PT_INTERP: u32 = 3;
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let truncated = "a truncated ELF file";
    let phoff = u64_at(bytes, 0x20).ok_or(truncated)?;
    let phentsize = usize::from(u16_at(bytes, 0x36).ok_or(truncated)?);
    let phnum = usize::from(u16_at(bytes, 0x38).ok_or(truncated)?);
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(truncated)?;
        if u32_at(bytes, at).ok_or(truncated)? != PT_INTERP {
            continue;
        }
        let offset = u64_at(bytes, at.checked_add(8).ok_or(truncated)?).ok_or(truncated)?;
        let size = u64_at(bytes, at.checked_add(32).ok_or(truncated)?).ok_or(truncated)?;
        let name = bytes
            .get(offset..offset.checked_add(size).ok_or(truncated)?)
            .ok_or(truncated)?;
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        return Ok(Some(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramdisk::RamdiskOptions;

    fn write(tree: &RamdiskTree) -> Vec<u8> {
        let mut out = Vec::new();
        tree.write(&RamdiskOptions::default(), &mut out).unwrap();
        out
    }

    #[test]
    fn the_boot_ramdisk_is_nitro_clis() {
        let dir = std::env::temp_dir().join(format!("eif-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let init = dir.join("init-binary");
        std::fs::write(&init, b"\x7fELF init").unwrap();
        let tree = boot_ramdisk(&init, None).unwrap();
        assert_eq!(tree.paths().collect::<Vec<_>>(), ["dev", "init"]);
        let tree = boot_ramdisk(&init, Some(&init)).unwrap();
        assert_eq!(tree.paths().collect::<Vec<_>>(), ["dev", "init", "nsm.ko"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_application_ramdisk_is_cmd_env_rootfs() {
        let dir = std::env::temp_dir().join(format!("eif-app-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("program");
        std::fs::write(&program, b"program").unwrap();
        let app = Application {
            files: vec![
                ("/bin/enclave".into(), &program),
                ("/etc/e/c.toml".into(), &program),
            ],
            cmd: vec![
                "/bin/enclave".into(),
                "run".into(),
                "--config".into(),
                "/etc/e/c.toml".into(),
            ],
            env: vec![("PATH".into(), "/bin".into())],
        };
        let tree = application_ramdisk(&app).unwrap();
        assert_eq!(
            tree.paths().collect::<Vec<_>>(),
            [
                "cmd",
                "env",
                "rootfs",
                "rootfs/bin",
                "rootfs/bin/enclave",
                "rootfs/dev",
                "rootfs/etc",
                "rootfs/etc/e",
                "rootfs/etc/e/c.toml",
                "rootfs/proc",
                "rootfs/run",
                "rootfs/sys",
                "rootfs/tmp",
                "rootfs/var"
            ]
        );
        let bytes = write(&tree);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("cmd\0"));
        assert!(text.contains("/bin/enclave\nrun\n--config\n/etc/e/c.toml\n"));
        assert!(text.contains("PATH=/bin\n"));
        // The same inputs, the same bytes.
        assert_eq!(bytes, write(&application_ramdisk(&app).unwrap()));

        for (path, cmd, env) in [
            ("bin/enclave", "/bin/enclave", "PATH"),
            ("/bin/../x", "/bin/enclave", "PATH"),
            ("/bin//x", "/bin/enclave", "PATH"),
            ("/bin/enclave", "/bin/enc\nlave", "PATH"),
            ("/bin/enclave", "/bin/enclave", "1PATH"),
            ("/bin/enclave", "/bin/enclave", "PA-TH"),
        ] {
            let bad = Application {
                files: vec![(path.into(), &program)],
                cmd: vec![cmd.into()],
                env: vec![(env.into(), "x".into())],
            };
            assert!(application_ramdisk(&bad).is_err(), "{path} {cmd:?} {env}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn elf_interpreter_tells_static_from_dynamic() {
        let this = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries here are dynamically linked against glibc.
        let interp = elf_interpreter(&this).unwrap().unwrap();
        assert!(interp.contains("ld-linux"), "{interp}");
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(this.get(..0x30).unwrap()).is_err());
        // The same file with its PT_INTERP entry turned into PT_NULL reads as static.
        let mut patched = this.clone();
        let phoff =
            usize::try_from(u64::from_le_bytes(this[0x20..0x28].try_into().unwrap())).unwrap();
        let phentsize = usize::from(u16::from_le_bytes(this[0x36..0x38].try_into().unwrap()));
        let phnum = usize::from(u16::from_le_bytes(this[0x38..0x3a].try_into().unwrap()));
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            if this[at..at + 4] == 3u32.to_le_bytes() {
                patched[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        assert_eq!(elf_interpreter(&patched).unwrap(), None);
    }
}
