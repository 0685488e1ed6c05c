//! Reproducible ramdisks: an uncompressed `newc` cpio archive of a directory, the format the
//! Linux kernel unpacks into its initial root file system.
//!
//! Only the directory's contents and the files' executable bits decide the bytes:
//!
//! - entries are sorted by path (bytes), parents before their contents, without a `.` entry;
//! - owners are 0:0, every mtime is the same fixed value (default 0), inode numbers count from 1;
//! - permissions are normalised: directories 0755, files 0755 if any execute bit is set and 0644
//!   otherwise, symbolic links 0777 (the link itself is stored, never followed);
//! - hard links are stored as separate files.
//!
//! Devices, FIFOs and sockets are refused: an enclave image has no use for them, and their
//! presence usually means the wrong directory was given.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &[u8] = b"TRAILER!!!";
const HEADER_LEN: usize = 110;
const MODE_DIR: u32 = 0o040_000;
const MODE_FILE: u32 = 0o100_000;
const MODE_SYMLINK: u32 = 0o120_000;

/// Settings for [`write_ramdisk`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamdiskOptions {
    /// The mtime recorded for every entry (seconds since the Unix epoch).
    pub mtime: u32,
}

/// A directory that cannot be archived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RamdiskError {
    /// Reading the directory or writing the archive failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved (the output is named `<output>`).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A device, FIFO or socket.
    #[error("{path}: {kind} cannot be put in a ramdisk")]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A file of 4 GiB or more: `newc` records sizes in 32 bits.
    #[error("{path}: {size} bytes; a newc archive holds files under 4 GiB")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A file changed size while it was being archived.
    #[error("{path} changed while it was being archived")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The directory holds more entries than a newc archive can number.
    #[error("more than 2^32 - 1 entries")]
    TooManyEntries,
}

/// What [`write_ramdisk`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamdiskSummary {
    /// Entries, not counting the trailer.
    pub entries: u32,
    /// Bytes written.
    pub len: u64,
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    /// A file read from `Entry::path` when the archive is written.
    File {
        executable: bool,
        size: u64,
    },
    /// A file whose bytes are given.
    Bytes {
        executable: bool,
        bytes: Vec<u8>,
    },
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Entry {
    name: Vec<u8>,
    path: PathBuf,
    kind: Kind,
}

/// A ramdisk assembled entry by entry rather than from one directory: the layouts of an enclave
/// image (`init` and `nsm.ko` in the boot ramdisk; `cmd`, `env` and `rootfs/` in the
/// application ramdisk). The same normalisation as [`write_ramdisk`] applies: owners 0:0, one
/// mtime, directories 0755, files 0755 or 0644, entries sorted, parents listed before their
/// contents (added as directories where not added explicitly).
#[derive(Clone, Debug, Default)]
pub struct RamdiskTree {
    entries: std::collections::BTreeMap<Vec<u8>, Entry>,
}

impl RamdiskTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, name: &[u8]) {
        let mut end = 0;
        while let Some(slash) = name
            .get(end..)
            .and_then(|rest| rest.iter().position(|&b| b == b'/'))
        {
            end = end.saturating_add(slash);
            if let Some(parent) = name.get(..end) {
                self.insert(parent.to_vec(), Kind::Dir);
            }
            end = end.saturating_add(1);
        }
    }

    fn insert(&mut self, name: Vec<u8>, kind: Kind) {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
        self.entries
            .insert(name.clone(), Entry { name, path, kind });
    }

    fn name(path: &str) -> Vec<u8> {
        path.trim_matches('/').as_bytes().to_vec()
    }

    /// Add a directory (and its parents).
    #[must_use]
    pub fn dir(mut self, path: &str) -> Self {
        let name = Self::name(path);
        self.parents(&name);
        self.insert(name, Kind::Dir);
        self
    }

    /// Add a file with these bytes (and its parents).
    #[must_use]
    pub fn bytes(mut self, path: &str, bytes: impl Into<Vec<u8>>, executable: bool) -> Self {
        let name = Self::name(path);
        self.parents(&name);
        self.insert(
            name,
            Kind::Bytes {
                executable,
                bytes: bytes.into(),
            },
        );
        self
    }

    /// Add a file copied from `source` when the archive is written (and its parents), mode 0755
    /// if `executable`, else 0644, whatever its mode on this machine.
    pub fn file(
        mut self,
        path: &str,
        source: &Path,
        executable: bool,
    ) -> Result<Self, RamdiskError> {
        let meta = std::fs::metadata(source).map_err(io(source))?;
        if !meta.is_file() {
            return Err(RamdiskError::Unsupported {
                path: source.to_owned(),
                kind: "not a regular file",
            });
        }
        if meta.len() > u64::from(u32::MAX) {
            return Err(RamdiskError::TooLarge {
                path: source.to_owned(),
                size: meta.len(),
            });
        }
        let name = Self::name(path);
        self.parents(&name);
        self.entries.insert(
            name.clone(),
            Entry {
                name,
                path: source.to_owned(),
                kind: Kind::File {
                    executable,
                    size: meta.len(),
                },
            },
        );
        Ok(self)
    }

    /// The paths in the tree, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.entries
            .keys()
            .map(|name| String::from_utf8_lossy(name).into_owned())
    }

    /// Write the archive.
    pub fn write(
        &self,
        options: &RamdiskOptions,
        out: &mut dyn Write,
    ) -> Result<RamdiskSummary, RamdiskError> {
        let entries: Vec<Entry> = self.entries.values().cloned().collect();
        write_entries(&entries, options, out)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RamdiskError + '_ {
    move |source| RamdiskError::Io {
        path: path.to_owned(),
        source,
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<(), RamdiskError> {
    for item in std::fs::read_dir(dir).map_err(io(dir))? {
        let item = item.map_err(io(dir))?;
        let path = item.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let name = relative.as_os_str().as_bytes().to_vec();
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            if meta.len() > u64::from(u32::MAX) {
                return Err(RamdiskError::TooLarge {
                    path,
                    size: meta.len(),
                });
            }
            Kind::File {
                executable: meta.permissions().mode() & 0o111 != 0,
                size: meta.len(),
            }
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if file_type.is_fifo() {
                "a FIFO"
            } else if file_type.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(RamdiskError::Unsupported { path, kind });
        };
        let is_dir = matches!(kind, Kind::Dir);
        out.push(Entry {
            name,
            path: path.clone(),
            kind,
        });
        if is_dir {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

fn pad(len: u64) -> usize {
    usize::try_from((4 - len % 4) % 4).unwrap_or(0)
}

struct Writer<'w> {
    out: &'w mut dyn Write,
    written: u64,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), RamdiskError> {
        self.out
            .write_all(bytes)
            .map_err(io(Path::new("<output>")))?;
        self.written = self
            .written
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    fn align(&mut self) -> Result<(), RamdiskError> {
        let zeros = [0u8; 3];
        self.put(zeros.get(..pad(self.written)).unwrap_or_default())
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        name: &[u8],
    ) -> Result<(), RamdiskError> {
        let namesize = u32::try_from(name.len() + 1).map_err(|_| RamdiskError::TooManyEntries)?;
        let fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, namesize, 0];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        header.extend_from_slice(name);
        header.push(0);
        self.put(&header)?;
        self.align()
    }
}

/// Write a `newc` cpio archive of `dir`'s contents to `out`.
pub fn write_ramdisk(
    dir: &Path,
    options: &RamdiskOptions,
    out: &mut dyn Write,
) -> Result<RamdiskSummary, RamdiskError> {
    let mut entries = Vec::new();
    collect(dir, dir, &mut entries)?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    write_entries(&entries, options, out)
}

fn write_entries(
    entries: &[Entry],
    options: &RamdiskOptions,
    out: &mut dyn Write,
) -> Result<RamdiskSummary, RamdiskError> {
    let mut writer = Writer { out, written: 0 };
    let mut ino = 0u32;
    for entry in entries {
        ino = ino.checked_add(1).ok_or(RamdiskError::TooManyEntries)?;
        match &entry.kind {
            Kind::Dir => writer.header(ino, MODE_DIR | 0o755, 2, options.mtime, 0, &entry.name)?,
            Kind::Symlink(target) => {
                let size = u32::try_from(target.len()).map_err(|_| RamdiskError::TooLarge {
                    path: entry.path.clone(),
                    size: u64::try_from(target.len()).unwrap_or(u64::MAX),
                })?;
                writer.header(
                    ino,
                    MODE_SYMLINK | 0o777,
                    1,
                    options.mtime,
                    size,
                    &entry.name,
                )?;
                writer.put(target)?;
                writer.align()?;
            }
            Kind::File { executable, size } => {
                let perms = if *executable { 0o755 } else { 0o644 };
                let size32 = u32::try_from(*size).map_err(|_| RamdiskError::TooLarge {
                    path: entry.path.clone(),
                    size: *size,
                })?;
                writer.header(
                    ino,
                    MODE_FILE | perms,
                    1,
                    options.mtime,
                    size32,
                    &entry.name,
                )?;
                copy_exactly(&entry.path, *size, &mut writer)?;
                writer.align()?;
            }
            Kind::Bytes { executable, bytes } => {
                let perms = if *executable { 0o755 } else { 0o644 };
                let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                let size32 = u32::try_from(size).map_err(|_| RamdiskError::TooLarge {
                    path: entry.path.clone(),
                    size,
                })?;
                writer.header(
                    ino,
                    MODE_FILE | perms,
                    1,
                    options.mtime,
                    size32,
                    &entry.name,
                )?;
                writer.put(bytes)?;
                writer.align()?;
            }
        }
    }
    writer.header(0, 0, 1, 0, 0, TRAILER)?;
    writer.out.flush().map_err(io(Path::new("<output>")))?;
    Ok(RamdiskSummary {
        entries: ino,
        len: writer.written,
    })
}

/// Copy exactly `size` bytes of the file, refusing one that has grown or shrunk since it was
/// listed.
fn copy_exactly(path: &Path, size: u64, writer: &mut Writer<'_>) -> Result<(), RamdiskError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left.min(256 * 1024)).unwrap_or(256 * 1024);
        let chunk = buffer.get_mut(..want).unwrap_or_default();
        file.read_exact(chunk).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                RamdiskError::Changed {
                    path: path.to_owned(),
                }
            } else {
                io(path)(e)
            }
        })?;
        writer.put(chunk)?;
        left -= u64::try_from(want).unwrap_or(0);
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(io(path))? != 0 {
        return Err(RamdiskError::Changed {
            path: path.to_owned(),
        });
    }
    Ok(())
}
