//! The emulated Nitro enclave, a development launcher beside `nitro-cli` and the local process:
//! QEMU's `nitro-enclave` machine boots the enclave image (it measures the image itself and
//! provides the NSM as a virtio device) and `vhost-device-vsock` carries its vsock.
//!
//! vhost-device-vsock's Unix-socket side is the hybrid vsock addressing the host already speaks
//! (`CONNECT <port>` on the socket to reach an enclave port; the enclave's connections to the
//! parent arrive at `<socket>_<port>`), so forwards, relays and the model source work unchanged.
//! `scripts/emulator/build-vsock` builds it with the parent's CID (3) routed to those sockets.
//!
//! In production `nitro-cli` answers the enclave's boot heartbeat; here the launcher does:
//! it listens at `<socket>_9000`, reads 0xB7, answers 0xB7, and logs it.
//!
//! What the emulator does not prove: the NSM's documents are unsigned (no AWS chain), and there
//! is no isolation from the host (QEMU, without KVM here, runs in the host's own processes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};

/// The guest CID the emulated enclave gets (3 is the parent's, as on Nitro).
pub const GUEST_CID: u32 = 4;
/// The heartbeat's port and byte (Nitro's).
pub const HEARTBEAT_PORT: u32 = 9000;
const HEARTBEAT: u8 = 0xB7;
/// How long vhost-device-vsock has to create its socket.
const VHOST_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the emulated enclave (`[enclave.emulator]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulatorSettings {
    /// `qemu-system-x86_64` with the `nitro-enclave` machine.
    pub qemu: PathBuf,
    /// The directory of the firmware it boots with (`qboot.rom`, `bios-microvm.bin`, …).
    pub firmware: PathBuf,
    /// `vhost-device-vsock`, built by `scripts/emulator/build-vsock`.
    pub vhost_device_vsock: PathBuf,
    /// The enclave image.
    pub eif: PathBuf,
    /// The hybrid vsock socket (as in development mode).
    pub socket: PathBuf,
    /// vCPUs.
    pub cpu_count: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Where the enclave's serial console is written; the host's standard error if unset.
    pub console: Option<PathBuf>,
}

/// A running emulated enclave.
#[derive(Debug)]
pub struct Emulated {
    qemu: Child,
    vhost: Child,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// A program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// vhost-device-vsock did not create its socket in time.
    #[error("vhost-device-vsock did not create {0} within 10 s")]
    VhostSocket(PathBuf),
    /// The heartbeat socket could not be bound.
    #[error("listening for the heartbeat on {path}: {source}")]
    Heartbeat {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Start vhost-device-vsock, the heartbeat listener and QEMU.
pub async fn launch(settings: &EmulatorSettings) -> Result<Emulated, EmulatorError> {
    let vhost_socket = with_suffix(&settings.socket, ".vhost-user");
    for stale in [&settings.socket, &vhost_socket] {
        let _ = std::fs::remove_file(stale);
    }
    let heartbeat_path = with_suffix(&settings.socket, &format!("_{HEARTBEAT_PORT}"));
    let _ = std::fs::remove_file(&heartbeat_path);
    let listener =
        UnixListener::bind(&heartbeat_path).map_err(|source| EmulatorError::Heartbeat {
            path: heartbeat_path.clone(),
            source,
        })?;
    let heartbeat = tokio::spawn(answer_heartbeats(listener));

    let vhost = Command::new(&settings.vhost_device_vsock)
        .arg("--vm")
        .arg(format!(
            "guest-cid={GUEST_CID},uds-path={},socket={}",
            settings.socket.display(),
            vhost_socket.display()
        ))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| EmulatorError::Spawn {
            program: settings.vhost_device_vsock.clone(),
            source,
        })?;
    let deadline = tokio::time::Instant::now() + VHOST_START_TIMEOUT;
    while !vhost_socket.exists() {
        if tokio::time::Instant::now() >= deadline {
            return Err(EmulatorError::VhostSocket(vhost_socket));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut qemu = Command::new(&settings.qemu);
    qemu.arg("-M")
        .arg("nitro-enclave,vsock=vsock0,id=sovereign-enclave")
        .arg("-kernel")
        .arg(&settings.eif)
        // Every CPU feature QEMU can emulate: the runtime is built for x86-64-v3 (AVX2, FMA),
        // which QEMU's default CPU model lacks.
        .args(["-cpu", "max"])
        .arg("-m")
        .arg(format!("{}M", settings.memory_mib))
        .arg("-smp")
        .arg(settings.cpu_count.to_string())
        .arg("-L")
        .arg(&settings.firmware)
        .arg("-chardev")
        .arg(format!("socket,id=vsock0,path={}", vhost_socket.display()))
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match &settings.console {
        Some(path) => qemu.arg("-serial").arg(format!("file:{}", path.display())),
        None => qemu.args(["-serial", "stdio"]).stdout(std::io::stderr()),
    };
    let qemu = qemu.spawn().map_err(|source| EmulatorError::Spawn {
        program: settings.qemu.clone(),
        source,
    })?;
    Ok(Emulated {
        qemu,
        vhost,
        heartbeat,
    })
}

/// Answer every heartbeat: read 0xB7, write 0xB7.
async fn answer_heartbeats(listener: UnixListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let mut byte = [0_u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte)).await;
        match read {
            Ok(Ok(_)) if byte == [HEARTBEAT] => {
                let _ = stream.write_all(&[HEARTBEAT]).await;
                tracing::info!("heartbeat received from the enclave, answered");
            }
            Ok(Ok(_)) => tracing::warn!(byte = byte[0], "a heartbeat with the wrong byte"),
            _ => tracing::warn!("a heartbeat connection sent nothing"),
        }
    }
}

impl Emulated {
    /// QEMU's process id.
    pub fn pid(&self) -> Option<u32> {
        self.qemu.id()
    }

    /// Wait until QEMU exits (the enclave ended), and say how.
    pub async fn exited(&mut self) -> String {
        match self.qemu.wait().await {
            Ok(status) => format!("the emulator exited ({status})"),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    /// Stop QEMU, vhost-device-vsock and the heartbeat listener.
    pub async fn stop(&mut self) {
        let _ = self.qemu.kill().await;
        let _ = self.vhost.kill().await;
        self.heartbeat.abort();
    }
}
