//! Files written so that a crash leaves either the old file or the whole new one: a temporary
//! file beside the target, fsynced, put into place, and the directory fsynced. A file that must
//! not replace another is put into place with `link(2)`, which fails if the name exists, so a
//! file created by someone else meanwhile is never replaced (these paths write keys).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::Path;

/// How [`write_atomically`] treats the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replace {
    /// Create the file with mode 0600.
    pub private: bool,
    /// Replace an existing file (otherwise an existing file is an error).
    pub overwrite: bool,
}

/// Write `path` through `fill`, into a temporary file beside it that is fsynced and renamed into
/// place only when `fill` succeeds: readers see the old file or the whole new one, never part,
/// and a failure leaves nothing behind. An existing file is replaced only with
/// [`Replace::overwrite`].
pub fn write_atomically<T, E: From<io::Error>>(
    path: &Path,
    replace: Replace,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<T, E> {
    let exists = || {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ),
        )
    };
    if !replace.overwrite && path.exists() {
        return Err(exists().into());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    // Unpredictable, so that no one can block the write by creating the name first.
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| io::Error::other("no randomness"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        u64::from_le_bytes(random)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if replace.private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let file = options.open(&tmp)?;
        let mut writer = BufWriter::with_capacity(1024 * 1024, file);
        let value = fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if replace.overwrite {
            std::fs::rename(&tmp, path)?;
        } else {
            // Atomic and exclusive: fails with AlreadyExists if anything has the name, even a
            // file created after the check above.
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    exists()
                } else {
                    e
                }
            })?;
            // The file is in place; a temporary name left behind is only clutter.
            let _ = std::fs::remove_file(&tmp);
        }
        File::open(dir)?.sync_all()?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_nothing_on_failure() {
        let dir = std::env::temp_dir().join(format!("durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let _ = std::fs::remove_file(&path);
        write_atomically::<_, io::Error>(&path, Replace::default(), |w| w.write_all(b"one"))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        // No overwrite without asking.
        let err =
            write_atomically::<_, io::Error>(&path, Replace::default(), |w| w.write_all(b"x"))
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // A failing fill leaves the old file and no temporary file.
        let replace = Replace {
            private: true,
            overwrite: true,
        };
        let err = write_atomically::<(), io::Error>(&path, replace, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        write_atomically::<_, io::Error>(&path, replace, |w| w.write_all(b"two")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that appears under the name while the new one is being written (a race, or an
    /// attacker's file) is never replaced, and nothing is left behind.
    #[test]
    fn a_file_created_meanwhile_is_not_replaced() {
        let dir = std::env::temp_dir().join(format!("durable-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let err = write_atomically::<_, io::Error>(&path, Replace::default(), |w| {
            std::fs::write(&path, b"theirs")?;
            w.write_all(b"ours")
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // A symbolic link planted under the name is not followed or replaced either.
        let link = dir.join("planted");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
        let err =
            write_atomically::<_, io::Error>(&link, Replace::default(), |w| w.write_all(b"ours"))
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.join("elsewhere").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
