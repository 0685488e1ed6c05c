//! Starting and stopping the enclave. Development: a local `enclave` process on Unix sockets
//! (hybrid vsock) with the simulated NSM. Production: `nitro-cli run-enclave`, with
//! `nitro-cli describe-enclaves` to find its CID and notice when it stops.
//!
//! A host that crashed leaves its enclave running, holding its CPUs and memory. At start the
//! host ends what its previous run left: in production every enclave with its configured name,
//! in development the process its pid file names, if that process is still the `enclave`
//! binary serving the same socket.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::{Child, Command};
use transport::{Endpoint, HybridVsock, Vsock};

use crate::config::{Launch, NitroSettings};

/// How often a Nitro enclave's state is polled.
const NITRO_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a stopping enclave process has between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The most output read from one `nitro-cli` call.
const MAX_NITRO_CLI_OUTPUT: usize = 1024 * 1024;

/// A launched enclave.
#[derive(Debug)]
pub struct Running {
    /// How to reach it.
    pub endpoint: Endpoint,
    /// An identifier for logs and status: a process id, or a Nitro enclave id.
    pub id: String,
    handle: Handle,
    /// A development enclave's pid file, removed once it has stopped.
    pid_file: Option<std::path::PathBuf>,
}

#[derive(Debug)]
enum Handle {
    Process(Child),
    Nitro {
        cli: NitroSettings,
        enclave_id: String,
    },
    Emulator(crate::emulator::Emulated),
}

/// Why the enclave could not be launched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The development enclave's binary could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `nitro-cli` could not be run.
    #[error("running nitro-cli: {0}")]
    NitroCli(#[source] std::io::Error),
    /// `nitro-cli` failed.
    #[error("nitro-cli failed ({status}): {stderr}")]
    NitroCliFailed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The start of what it printed on standard error.
        stderr: String,
    },
    /// `nitro-cli` printed more than it ever does.
    #[error("nitro-cli printed more than {MAX_NITRO_CLI_OUTPUT} bytes")]
    NitroCliOutputTooLarge,
    /// `nitro-cli` printed something other than its JSON.
    #[error("reading nitro-cli output: {0}")]
    NitroCliOutput(#[from] serde_json::Error),
    /// The emulator could not start.
    #[error(transparent)]
    Emulator(#[from] crate::emulator::EmulatorError),
}

/// Start the enclave.
pub async fn launch(launch: &Launch) -> Result<Running, LaunchError> {
    match launch {
        Launch::Development {
            binary,
            config,
            socket,
        } => {
            let mut command = Command::new(binary);
            // Run where its configuration is, so that anything it wrote would be found there.
            if let Some(dir) = config.parent().filter(|d| d.is_dir()) {
                command.current_dir(dir);
            }
            let child = command
                .arg("run")
                .arg("--config")
                .arg(config)
                .arg("--listen")
                .arg(format!("unix:{}", socket.display()))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| LaunchError::Spawn {
                    binary: binary.clone(),
                    source,
                })?;
            let id = child
                .id()
                .map_or_else(|| "exited".into(), |pid| pid.to_string());
            // So that a host that crashes does not leave it behind unnoticed.
            if let Some(pid) = child.id()
                && let Err(e) = write_pid_file(&pid_file(socket), pid)
            {
                tracing::warn!(error = %e, "cannot record the enclave's pid");
            }
            Ok(Running {
                endpoint: Endpoint::Hybrid(HybridVsock::new(socket)),
                id,
                handle: Handle::Process(child),
                pid_file: Some(pid_file(socket)),
            })
        }
        Launch::Emulator(settings) => {
            let emulated = crate::emulator::launch(settings).await?;
            Ok(Running {
                endpoint: Endpoint::Hybrid(HybridVsock::new(&settings.socket)),
                id: emulated
                    .pid()
                    .map_or_else(|| "exited".into(), |pid| format!("qemu {pid}")),
                handle: Handle::Emulator(emulated),
                pid_file: None,
            })
        }
        Launch::Nitro(settings) => {
            let mut command = Command::new(&settings.nitro_cli);
            command.args(run_enclave_args(settings));
            let output = run_cli(command).await?;
            let (enclave_id, cid) = started_enclave(&output)?;
            Ok(Running {
                endpoint: Endpoint::Vsock(Vsock::new(cid)),
                id: enclave_id.clone(),
                handle: Handle::Nitro {
                    cli: settings.clone(),
                    enclave_id,
                },
                pid_file: None,
            })
        }
    }
}

impl Running {
    /// The process id of a development enclave.
    pub fn pid(&self) -> Option<u32> {
        match &self.handle {
            Handle::Process(child) => child.id(),
            Handle::Emulator(emulated) => emulated.pid(),
            Handle::Nitro { .. } => None,
        }
    }

    /// Wait until the enclave stops, and say how.
    pub async fn exited(&mut self) -> String {
        match &mut self.handle {
            Handle::Process(child) => match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            },
            Handle::Emulator(emulated) => emulated.exited().await,
            Handle::Nitro { cli, enclave_id } => loop {
                tokio::time::sleep(NITRO_POLL_INTERVAL).await;
                let mut command = Command::new(&cli.nitro_cli);
                command.arg("describe-enclaves");
                match run_cli(command).await {
                    Ok(output) => match enclave_state(&output, enclave_id) {
                        Ok(Some(state)) if state == "RUNNING" => {}
                        Ok(Some(state)) => return format!("state {state}"),
                        Ok(None) => return "no longer listed by nitro-cli".into(),
                        Err(e) => tracing::warn!(error = %e, "cannot read describe-enclaves"),
                    },
                    Err(e) => tracing::warn!(error = %e, "nitro-cli describe-enclaves failed"),
                }
            },
        }
    }

    /// Stop the enclave: SIGTERM then, after a bound, SIGKILL; or `nitro-cli terminate-enclave`.
    pub async fn stop(mut self) {
        match &mut self.handle {
            Handle::Emulator(emulated) => emulated.stop().await,
            Handle::Process(child) => {
                if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!("the enclave ignored SIGTERM; killing it");
                    let _ = child.kill().await;
                }
                if let Some(file) = &self.pid_file {
                    let _ = std::fs::remove_file(file);
                }
            }
            Handle::Nitro { cli, enclave_id } => {
                let mut command = Command::new(&cli.nitro_cli);
                command.args(["terminate-enclave", "--enclave-id", enclave_id.as_str()]);
                if let Err(e) = run_cli(command).await {
                    tracing::error!(error = %e, "nitro-cli terminate-enclave failed");
                }
            }
        }
    }
}

/// End whatever a previous run of the host left running: in production every enclave with the
/// configured name (`nitro-cli terminate-enclave`), in development the process the pid file
/// names, if it is still an `enclave` serving this socket. Returns what was ended.
pub async fn end_leftovers(launch: &Launch) -> Vec<String> {
    match launch {
        // The emulator's processes are the host's children, killed when it drops them; a host
        // killed outright leaves them (development only).
        Launch::Emulator(_) => Vec::new(),
        Launch::Development { binary, socket, .. } => {
            let file = pid_file(socket);
            let Ok(text) = std::fs::read_to_string(&file) else {
                return Vec::new();
            };
            let _ = std::fs::remove_file(&file);
            let Some(pid) = text.trim().parse::<i32>().ok().filter(|p| *p > 1) else {
                return Vec::new();
            };
            if !is_our_enclave(pid, binary, socket) {
                return Vec::new();
            }
            let process = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(process, nix::sys::signal::Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
            // Checked again before each signal: once it has exited, its pid may be reused.
            while is_our_enclave(pid, binary, socket) {
                if tokio::time::Instant::now() >= deadline {
                    let _ = nix::sys::signal::kill(process, nix::sys::signal::Signal::SIGKILL);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            vec![format!("process {pid}")]
        }
        Launch::Nitro(settings) => {
            let mut command = Command::new(&settings.nitro_cli);
            command.arg("describe-enclaves");
            let output = match run_cli(command).await {
                Ok(output) => output,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list enclaves left from a previous run");
                    return Vec::new();
                }
            };
            let ids = match enclaves_named(&output, &settings.enclave_name) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read describe-enclaves");
                    return Vec::new();
                }
            };
            let mut ended = Vec::new();
            for id in ids {
                let mut command = Command::new(&settings.nitro_cli);
                command.args(["terminate-enclave", "--enclave-id", id.as_str()]);
                match run_cli(command).await {
                    Ok(_) => ended.push(id),
                    Err(e) => {
                        tracing::error!(enclave = %id, error = %e, "cannot terminate an enclave left running")
                    }
                }
            }
            ended
        }
    }
}

/// Record `pid` in `path`, replacing what was there without following a symbolic link planted
/// under the name.
fn write_pid_file(path: &std::path::Path, pid: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(pid.to_string().as_bytes())
}

/// Where a development enclave's pid is recorded: beside its socket.
fn pid_file(socket: &std::path::Path) -> std::path::PathBuf {
    crate::emulator::with_suffix(socket, ".pid")
}

/// `pid` is a running `binary` whose command line names `socket`: the enclave this host
/// started, not a process that reused the pid.
fn is_our_enclave(pid: i32, binary: &std::path::Path, socket: &std::path::Path) -> bool {
    // A zombie has no executable: it has exited, only its parent has not reaped it.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let ours = binary.canonicalize().ok();
    let same_binary = matches!((&exe, &ours), (Some(exe), Some(ours)) if exe == ours);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let listen = format!("unix:{}", socket.display());
    let serves_socket = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == listen.as_bytes());
    same_binary && serves_socket
}

/// The ids of the enclaves named `name` in `describe-enclaves` output.
pub fn enclaves_named(output: &[u8], name: &str) -> Result<Vec<String>, serde_json::Error> {
    let enclaves: Vec<DescribedEnclave> = serde_json::from_slice(output)?;
    Ok(enclaves
        .into_iter()
        .filter(|e| e.enclave_name.as_deref() == Some(name))
        .map(|e| e.enclave_id)
        .collect())
}

/// The `nitro-cli run-enclave` arguments for these settings.
pub fn run_enclave_args(settings: &NitroSettings) -> Vec<String> {
    let mut args = vec![
        "run-enclave".to_owned(),
        "--eif-path".to_owned(),
        settings.eif.display().to_string(),
        "--cpu-count".to_owned(),
        settings.cpu_count.to_string(),
        "--memory".to_owned(),
        settings.memory_mib.to_string(),
        "--enclave-name".to_owned(),
        settings.enclave_name.clone(),
    ];
    if let Some(cid) = settings.cid {
        args.extend(["--enclave-cid".to_owned(), cid.to_string()]);
    }
    if settings.debug_mode {
        args.push("--debug-mode".to_owned());
    }
    args
}

/// What `nitro-cli run-enclave` prints (the fields used here).
#[derive(Debug, Deserialize)]
struct RunEnclaveOutput {
    #[serde(rename = "EnclaveID")]
    enclave_id: String,
    #[serde(rename = "EnclaveCID")]
    enclave_cid: u32,
}

/// One entry of `nitro-cli describe-enclaves` (the fields used here).
#[derive(Debug, Deserialize)]
struct DescribedEnclave {
    #[serde(rename = "EnclaveID")]
    enclave_id: String,
    #[serde(rename = "EnclaveName", default)]
    enclave_name: Option<String>,
    #[serde(rename = "State")]
    state: String,
}

/// The state `describe-enclaves` output gives for `enclave_id`, or `None` if it is not listed.
pub fn enclave_state(output: &[u8], enclave_id: &str) -> Result<Option<String>, serde_json::Error> {
    let enclaves: Vec<DescribedEnclave> = serde_json::from_slice(output)?;
    Ok(enclaves
        .into_iter()
        .find(|e| e.enclave_id == enclave_id)
        .map(|e| e.state))
}

/// The CID and id in `run-enclave` output.
pub fn started_enclave(output: &[u8]) -> Result<(String, u32), serde_json::Error> {
    let started: RunEnclaveOutput = serde_json::from_slice(output)?;
    Ok((started.enclave_id, started.enclave_cid))
}

async fn run_cli(mut command: Command) -> Result<Vec<u8>, LaunchError> {
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(LaunchError::NitroCli)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(LaunchError::NitroCliFailed {
            status: output.status,
            stderr: stderr.chars().take(512).collect(),
        });
    }
    if output.stdout.len() > MAX_NITRO_CLI_OUTPUT {
        return Err(LaunchError::NitroCliOutputTooLarge);
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    // Shapes as `nitro-cli` 1.x prints them (AWS Nitro Enclaves user guide, "nitro-cli
    // run-enclave" and "nitro-cli describe-enclaves").
    const RUN_OUTPUT: &str = r#"{
  "EnclaveName": "sovereign",
  "EnclaveID": "i-05f6ed443aEXAMPLE-enc173dfe3eEXAMPLE",
  "ProcessID": 7077,
  "EnclaveCID": 16,
  "NumberOfCPUs": 2,
  "CPUIDs": [1, 3],
  "MemoryMiB": 4096
}"#;

    const DESCRIBE_OUTPUT: &str = r#"[
  {
    "EnclaveName": "sovereign",
    "EnclaveID": "i-05f6ed443aEXAMPLE-enc173dfe3eEXAMPLE",
    "ProcessID": 7077,
    "EnclaveCID": 16,
    "NumberOfCPUs": 2,
    "CPUIDs": [1, 3],
    "MemoryMiB": 4096,
    "State": "RUNNING",
    "Flags": "NONE",
    "Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "00", "PCR1": "00", "PCR2": "00"}
  }
]"#;

    #[test]
    fn run_enclave_arguments_follow_the_settings() {
        let mut settings = NitroSettings {
            nitro_cli: PathBuf::from("nitro-cli"),
            eif: PathBuf::from("/opt/enclave.eif"),
            cpu_count: 2,
            memory_mib: 4096,
            cid: None,
            debug_mode: false,
            enclave_name: "sovereign".into(),
        };
        assert_eq!(
            run_enclave_args(&settings).join(" "),
            "run-enclave --eif-path /opt/enclave.eif --cpu-count 2 --memory 4096 \
             --enclave-name sovereign"
        );
        settings.cid = Some(16);
        settings.debug_mode = true;
        assert!(
            run_enclave_args(&settings)
                .join(" ")
                .ends_with("--enclave-cid 16 --debug-mode")
        );
    }

    #[test]
    fn nitro_cli_output_is_read() {
        let (id, cid) = started_enclave(RUN_OUTPUT.as_bytes()).unwrap();
        assert_eq!(cid, 16);
        assert_eq!(
            enclave_state(DESCRIBE_OUTPUT.as_bytes(), &id).unwrap(),
            Some("RUNNING".to_owned())
        );
        assert_eq!(
            enclave_state(DESCRIBE_OUTPUT.as_bytes(), "i-other").unwrap(),
            None
        );
        assert_eq!(enclave_state(b"[]", &id).unwrap(), None);
        assert!(enclave_state(b"{", &id).is_err());
        assert_eq!(
            enclaves_named(DESCRIBE_OUTPUT.as_bytes(), "sovereign").unwrap(),
            vec![id.clone()]
        );
        assert!(
            enclaves_named(DESCRIBE_OUTPUT.as_bytes(), "another")
                .unwrap()
                .is_empty()
        );
        assert!(started_enclave(b"{\"EnclaveID\": \"x\"}").is_err());
    }
}
