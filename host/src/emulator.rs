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

/// A running emulated enclave. Dropping it kills QEMU and vhost-device-vsock and stops the
/// heartbeat listener.
#[derive(Debug)]
pub struct Emulated {
    qemu: Child,
    vhost: Child,
    heartbeat: AbortOnDrop,
}

/// A task aborted when its handle is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    /// vhost-device-vsock exited before it created its socket.
    #[error("vhost-device-vsock exited at start ({0})")]
    VhostExited(std::process::ExitStatus),
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

/// Remove a stale socket (only a socket: never a file that happens to sit at the path).
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// `path` with `suffix` appended to its last component.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Start vhost-device-vsock, the heartbeat listener and QEMU.
pub async fn launch(settings: &EmulatorSettings) -> Result<Emulated, EmulatorError> {
    let vhost_socket = with_suffix(&settings.socket, ".vhost-user");
    let heartbeat_path = with_suffix(&settings.socket, &format!("_{HEARTBEAT_PORT}"));
    for stale in [&settings.socket, &vhost_socket, &heartbeat_path] {
        remove_stale_socket(stale);
    }
    let bind = || -> std::io::Result<UnixListener> {
        let listener = UnixListener::bind(&heartbeat_path)?;
        // Only the host's own user may connect (vhost-device-vsock runs as it).
        std::fs::set_permissions(
            &heartbeat_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        Ok(listener)
    };
    let listener = bind().map_err(|source| EmulatorError::Heartbeat {
        path: heartbeat_path.clone(),
        source,
    })?;
    // Aborted when this function fails below, or when the emulator is dropped.
    let heartbeat = AbortOnDrop(tokio::spawn(answer_heartbeats(listener)));

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
    let mut vhost = vhost;
    let deadline = tokio::time::Instant::now() + VHOST_START_TIMEOUT;
    while !vhost_socket.exists() {
        if let Ok(Some(status)) = vhost.try_wait() {
            return Err(EmulatorError::VhostExited(status));
        }
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
        // A keyboard controller: AWS's command line says `reboot=k`, so the kernel ends the
        // enclave through it (on Nitro too). QEMU's nitro-enclave machine has none, and without
        // one the kernel falls back to a real-mode restart that reboots the guest in place;
        // with it, the reset reaches QEMU, which `-no-reboot` makes exit.
        .args(["-device", "i8042"])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match &settings.console {
        // Appended to, so a restart keeps the console of the run before it.
        Some(path) => qemu
            .arg("-chardev")
            .arg(format!("file,id=console,path={},append=on", path.display()))
            .args(["-serial", "chardev:console"]),
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

/// Answer every heartbeat: read 0xB7, write 0xB7; each connection on its own, so one that sends
/// nothing delays no other.
async fn answer_heartbeats(listener: UnixListener) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a heartbeat connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let mut byte = [0_u8; 1];
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte)).await;
            match read {
                Ok(Ok(_)) if byte == [HEARTBEAT] => {
                    let _ = stream.write_all(&[HEARTBEAT]).await;
                    tracing::info!("heartbeat received from the enclave, answered");
                }
                Ok(Ok(_)) => tracing::warn!(byte = byte[0], "a heartbeat with the wrong byte"),
                _ => tracing::warn!("a heartbeat connection sent nothing"),
            }
        });
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
        self.heartbeat.0.abort();
    }
}
