//! The enclave's first process (PID 1), as a library of the parts that can be tested off the
//! enclave: the boot contract it reads and the heartbeat it sends.
//!
//! The contract is AWS's (`nitro-cli build-enclave` and its init), so an image built for one init
//! boots with the other:
//!
//! - the boot ramdisk holds the init (and, for kernels that need it, `nsm.ko`);
//! - the application ramdisk holds `cmd` (the command, one argument per line), `env` (the
//!   environment, one `NAME=value` per line) and `rootfs/`, the file system the command runs in;
//! - once its devices are up, the init connects to the parent instance (vsock CID 3, port 9000),
//!   sends one byte 0xB7 and waits for the same byte back: `nitro-cli run-enclave` reports the
//!   enclave started when it receives it.
//!
//! The program (`src/main.rs`) does the system calls: mounts, module loading, the heartbeat,
//! `chroot`, running the command, reaping, and ending the enclave when the command exits.

use std::ffi::CString;
use std::io::{Read, Write};

/// The parent instance's vsock CID, as the enclave sees it.
pub const PARENT_CID: u32 = 3;
/// The port the parent listens on for the boot heartbeat.
pub const HEARTBEAT_PORT: u32 = 9000;
/// The heartbeat byte, sent and expected back.
pub const HEARTBEAT: u8 = 0xB7;
/// The largest `cmd` or `env` file read.
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// A `cmd` or `env` file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `cmd` names no program.
    #[error("no command: the file is empty")]
    NoCommand,
    /// A line holds a NUL byte, which no argument or variable can carry.
    #[error("line {line} holds a NUL byte")]
    Nul {
        /// The line, counted from 1.
        line: usize,
    },
    /// An `env` line is not `NAME=value` with a non-empty name.
    #[error("line {line} is not NAME=value")]
    NotAVariable {
        /// The line, counted from 1.
        line: usize,
    },
    /// A variable set twice: which value the program sees would depend on the init.
    #[error("line {line} sets a variable an earlier line set")]
    Duplicate {
        /// The line, counted from 1.
        line: usize,
    },
    /// The file is larger than [`MAX_CONFIG_LEN`].
    #[error("more than {MAX_CONFIG_LEN} bytes")]
    TooLarge,
}

/// Split a file into its lines, as `nitro-cli` writes them: separated by `\n`, the last one
/// optionally terminated. Empty lines are skipped, as AWS's init skips them.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i.saturating_add(1), line))
        .filter(|(_, line)| !line.is_empty())
}

fn c_string(line: usize, bytes: &[u8]) -> Result<CString, ConfigError> {
    CString::new(bytes).map_err(|_| ConfigError::Nul { line })
}

/// The command: program and arguments, one per line.
pub fn parse_cmd(bytes: &[u8]) -> Result<Vec<CString>, ConfigError> {
    let argv = lines(bytes)
        .map(|(line, arg)| c_string(line, arg))
        .collect::<Result<Vec<_>, _>>()?;
    if argv.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    Ok(argv)
}

/// The environment: `NAME=value`, one per line; an empty file is an empty environment.
pub fn parse_env(bytes: &[u8]) -> Result<Vec<CString>, ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    lines(bytes)
        .map(|(line, var)| match var.iter().position(|&b| b == b'=') {
            Some(0) | None => Err(ConfigError::NotAVariable { line }),
            Some(eq) => {
                if !names.insert(var.get(..eq).unwrap_or_default()) {
                    return Err(ConfigError::Duplicate { line });
                }
                c_string(line, var)
            }
        })
        .collect()
}

/// Read a `cmd` or `env` file, at most [`MAX_CONFIG_LEN`] bytes.
pub fn read_config(reader: impl Read) -> Result<Vec<u8>, std::io::Error> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_CONFIG_LEN.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_CONFIG_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            ConfigError::TooLarge,
        ));
    }
    Ok(bytes)
}

/// The heartbeat failed after the connection was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// Sending or receiving failed (a timeout included).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The parent closed the connection without answering.
    #[error("the parent closed the connection without answering")]
    Closed,
    /// The parent answered with another byte.
    #[error("the parent answered {0:#04x}, not {HEARTBEAT:#04x}")]
    Wrong(u8),
}

/// Send the heartbeat on a connected stream and wait for it back.
pub fn heartbeat(mut stream: impl Read + Write) -> Result<(), HeartbeatError> {
    stream.write_all(&[HEARTBEAT])?;
    stream.flush()?;
    let mut answer = [0_u8; 1];
    match stream.read(&mut answer)? {
        0 => Err(HeartbeatError::Closed),
        _ if answer == [HEARTBEAT] => Ok(()),
        _ => Err(HeartbeatError::Wrong(answer[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn strings(v: &[CString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().unwrap_or("?")).collect()
    }

    #[test]
    fn cmd_is_one_argument_per_line() {
        let argv = parse_cmd(b"/bin/enclave\nrun\n--config\n/etc/enclave.toml\n").unwrap();
        assert_eq!(
            strings(&argv),
            ["/bin/enclave", "run", "--config", "/etc/enclave.toml"]
        );
        // Arguments keep their spaces; the last line needs no newline.
        let argv = parse_cmd(b"/bin/sh\n-c\necho a b").unwrap();
        assert_eq!(strings(&argv), ["/bin/sh", "-c", "echo a b"]);
    }

    #[test]
    fn cmd_refuses_nothing_and_nul() {
        assert_eq!(parse_cmd(b""), Err(ConfigError::NoCommand));
        assert_eq!(parse_cmd(b"\n\n"), Err(ConfigError::NoCommand));
        assert_eq!(
            parse_cmd(b"/bin/enclave\nr\0un\n"),
            Err(ConfigError::Nul { line: 2 })
        );
    }

    #[test]
    fn env_is_name_equals_value() {
        let env = parse_env(b"PATH=/bin\nRUST_LOG=info\nEMPTY=\n").unwrap();
        assert_eq!(strings(&env), ["PATH=/bin", "RUST_LOG=info", "EMPTY="]);
        assert_eq!(parse_env(b"").unwrap(), Vec::<CString>::new());
        assert_eq!(
            parse_env(b"PATH=/bin\nnovalue\n"),
            Err(ConfigError::NotAVariable { line: 2 })
        );
        assert_eq!(
            parse_env(b"=value\n"),
            Err(ConfigError::NotAVariable { line: 1 })
        );
        assert_eq!(
            parse_env(b"A=1\nB=2\nA=3\n"),
            Err(ConfigError::Duplicate { line: 3 })
        );
    }

    #[test]
    fn config_files_are_bounded() {
        let big = vec![b'a'; 64 * 1024 + 1];
        let error = read_config(&big[..]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(read_config(&big[1..]).unwrap().len(), 64 * 1024);
    }

    #[test]
    fn heartbeat_sends_b7_and_expects_it_back() {
        for (answer, ok) in [(Some(HEARTBEAT), true), (Some(0xB6), false), (None, false)] {
            let (ours, mut parent) = UnixStream::pair().unwrap();
            let peer = std::thread::spawn(move || {
                let mut got = [0_u8; 1];
                parent.read_exact(&mut got).unwrap();
                if let Some(byte) = answer {
                    parent.write_all(&[byte]).unwrap();
                }
                got[0]
            });
            let result = heartbeat(&ours);
            drop(ours);
            assert_eq!(peer.join().unwrap(), HEARTBEAT);
            assert_eq!(result.is_ok(), ok, "{answer:?}: {result:?}");
        }
    }

    #[test]
    fn heartbeat_times_out_on_a_silent_parent() {
        let (ours, _parent) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(matches!(heartbeat(&ours), Err(HeartbeatError::Io(_))));
    }
}
