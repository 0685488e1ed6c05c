//! Reproducible ramdisks: the same directory contents give the same bytes wherever and whenever
//! they are archived, and GNU cpio (an independent implementation of `newc`) extracts exactly
//! those contents.
#![expect(
    clippy::unwrap_used,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use eif::{RamdiskError, RamdiskOptions, write_ramdisk};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ramdisk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An application tree: a binary, its configuration, a national root, a symlink, a nested
/// directory, an empty file. `variant` changes what must not matter: creation order, mtimes and
/// non-executable permission bits.
fn populate(dir: &Path, variant: bool) {
    let files: Vec<(&str, &[u8])> = vec![
        ("bin/enclave", b"\x7fELF pretend binary"),
        ("etc/enclave.toml", b"listen = \"vsock\"\n"),
        ("etc/national-root.pem", b"-----BEGIN CERTIFICATE-----\n"),
        ("etc/empty", b""),
        ("a-b", b"sorts before a/ by bytes"),
    ];
    let order: Vec<_> = if variant {
        files.iter().rev().collect()
    } else {
        files.iter().collect()
    };
    for (name, contents) in order {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        let when =
            SystemTime::UNIX_EPOCH + Duration::from_secs(if variant { 2_000_000_000 } else { 1 });
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    set_mode(
        &dir.join("bin/enclave"),
        if variant { 0o700 } else { 0o755 },
    );
    set_mode(
        &dir.join("etc/enclave.toml"),
        if variant { 0o600 } else { 0o644 },
    );
    std::os::unix::fs::symlink("enclave.toml", dir.join("etc/config")).unwrap();
}

/// The entries `populate` makes, in archive order: by path bytes, so `a-b` before `bin`.
const ENTRIES: [&str; 8] = [
    "a-b",
    "bin",
    "bin/enclave",
    "etc",
    "etc/config",
    "etc/empty",
    "etc/enclave.toml",
    "etc/national-root.pem",
];

fn archive(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    write_ramdisk(dir, &RamdiskOptions::default(), &mut out).unwrap();
    out
}

#[test]
fn the_same_contents_give_the_same_bytes_in_different_places_and_times() {
    let a = temp("a");
    let b = temp("elsewhere-b");
    populate(&a, false);
    std::thread::sleep(Duration::from_millis(20));
    populate(&b, true);
    let first = archive(&a);
    assert_eq!(first, archive(&b));
    assert_eq!(first, archive(&a), "and again");
    assert_eq!(first.len() % 4, 0, "newc records are 4-byte aligned");

    // Content does matter.
    std::fs::write(b.join("etc/enclave.toml"), b"listen = \"vsock\"\n#").unwrap();
    assert_ne!(first, archive(&b));
    // And so does an execute bit.
    std::fs::write(b.join("etc/enclave.toml"), b"listen = \"vsock\"\n").unwrap();
    set_mode(&b.join("etc/enclave.toml"), 0o744);
    assert_ne!(first, archive(&b));
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn entries_are_sorted_owned_by_root_and_timeless() {
    let dir = temp("fields");
    populate(&dir, true);
    let bytes = archive(&dir);
    let field = |at: usize, i: usize| {
        u32::from_str_radix(
            std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(),
            16,
        )
        .unwrap()
    };
    let mut names = Vec::new();
    let mut at = 0;
    loop {
        assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
        let (ino, mode, uid, gid, mtime) = (
            field(at, 0),
            field(at, 1),
            field(at, 2),
            field(at, 3),
            field(at, 5),
        );
        let size = field(at, 6) as usize;
        let namesize = field(at, 11) as usize;
        let name = String::from_utf8(bytes[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
        assert_eq!(bytes[at + 110 + namesize - 1], 0, "names end in NUL");
        let data_at = (at + 110 + namesize).next_multiple_of(4);
        at = (data_at + size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            assert_eq!(at, bytes.len(), "nothing after the trailer");
            break;
        }
        assert_eq!((uid, gid, mtime), (0, 0, 0), "{name}");
        assert_eq!(ino as usize, names.len() + 1, "inodes count from 1");
        let expected_mode = match name.as_str() {
            "bin" | "etc" => 0o040755,
            "bin/enclave" => 0o100755,
            "etc/config" => 0o120777,
            _ => 0o100644,
        };
        assert_eq!(mode, expected_mode, "{name}");
        names.push(name);
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names, ENTRIES);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gnu_cpio_extracts_exactly_the_directory() {
    let cpio = Command::new("cpio").arg("--version").output();
    assert!(
        cpio.is_ok_and(|o| o.status.success()),
        "this test needs GNU cpio as an independent newc reader: apt-get install cpio"
    );
    let source = temp("cpio-source");
    populate(&source, false);
    let archive_path = temp("cpio-archive").join("ramdisk.cpio");
    std::fs::write(&archive_path, archive(&source)).unwrap();
    let out = temp("cpio-out");
    let status = Command::new("cpio")
        .args([
            "-i",
            "--make-directories",
            "--quiet",
            "--no-absolute-filenames",
            "-F",
        ])
        .arg(&archive_path)
        .current_dir(&out)
        .status()
        .unwrap();
    assert!(status.success());
    for name in [
        "a-b",
        "bin/enclave",
        "etc/enclave.toml",
        "etc/national-root.pem",
        "etc/empty",
    ] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(source.join(name)).unwrap(),
            "{name}"
        );
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out.join("bin/enclave")) & 0o111, 0o111, "executable");
    assert_eq!(
        mode(&out.join("etc/enclave.toml")) & 0o111,
        0,
        "not executable"
    );
    assert_eq!(
        std::fs::read_link(out.join("etc/config")).unwrap(),
        Path::new("enclave.toml")
    );
    // GNU cpio's own listing agrees on the entries, in our order.
    let listing = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&archive_path)
        .output()
        .unwrap();
    let listed = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), ENTRIES);
    for dir in [source, out, archive_path.parent().unwrap().to_owned()] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn special_files_are_refused_by_name() {
    let dir = temp("fifo");
    std::fs::write(dir.join("ok"), b"x").unwrap();
    let status = Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let error = write_ramdisk(&dir, &RamdiskOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(error, RamdiskError::Unsupported { kind: "a FIFO", .. }),
        "{error}"
    );
    assert!(error.to_string().contains("pipe"), "{error}");
    let missing = write_ramdisk(
        &dir.join("absent"),
        &RamdiskOptions::default(),
        &mut Vec::new(),
    );
    assert!(matches!(missing, Err(RamdiskError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_chosen_mtime_is_recorded_for_every_entry() {
    let dir = temp("mtime");
    populate(&dir, false);
    let mut out = Vec::new();
    write_ramdisk(
        &dir,
        &RamdiskOptions {
            mtime: 1_700_000_000,
        },
        &mut out,
    )
    .unwrap();
    let stamp = format!("{:08X}", 1_700_000_000u32);
    // The trailer has mtime 0; every other entry the chosen one.
    let entries = String::from_utf8_lossy(&out).matches(&stamp).count();
    assert_eq!(entries, 8);
    std::fs::remove_dir_all(&dir).unwrap();
}
