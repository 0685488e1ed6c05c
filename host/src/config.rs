//! The host's configuration: one TOML file (`docs/host.md` describes every key), or the
//! embedded development defaults of `host run --dev`. Unknown keys are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attest::parse_duration;
use serde::Deserialize;

/// The largest configuration file read.
const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// How the enclave is launched and supervised.
    pub enclave: EnclaveSettings,
    /// Client-facing TCP listeners, each forwarded to one enclave port.
    pub forwards: Vec<Forward>,
    /// Host ports the enclave may connect to, each relayed to one allowlisted TCP address.
    pub relays: Vec<Relay>,
    /// The sealed model served to the enclave, if any.
    pub model: Option<crate::model_source::ModelSource>,
    /// Liveness, readiness, status and metrics over HTTP; none if unset.
    pub admin: Option<SocketAddr>,
    /// How long connections in flight may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// Launching and supervising the enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveSettings {
    /// Where the enclave runs.
    pub launch: Launch,
    /// The enclave's health port: the readiness and liveness probes use it, and no forward may
    /// reach it, so clients can never crowd the probes out.
    pub health_port: u32,
    /// How long a launched enclave has to answer a health request.
    pub ready_timeout: Duration,
    /// The first wait before a restart; it doubles after each failure up to the maximum.
    pub restart_backoff: Duration,
    /// The longest wait before a restart.
    pub restart_backoff_max: Duration,
}

/// Where and how the enclave is launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// A local `enclave` process reached over Unix sockets (hybrid vsock), with the simulated NSM.
    Development {
        /// The `enclave` executable.
        binary: PathBuf,
        /// Its configuration file.
        config: PathBuf,
        /// The hybrid vsock socket (`--listen unix:<socket>`).
        socket: PathBuf,
    },
    /// A Nitro enclave started with `nitro-cli run-enclave`, reached over vsock.
    Nitro(NitroSettings),
    /// The enclave image booted in QEMU's emulated Nitro enclave, reached over hybrid vsock
    /// (development: its NSM does not sign).
    Emulator(crate::emulator::EmulatorSettings),
}

/// `nitro-cli run-enclave` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NitroSettings {
    /// The `nitro-cli` executable.
    pub nitro_cli: PathBuf,
    /// The enclave image.
    pub eif: PathBuf,
    /// vCPUs for the enclave.
    pub cpu_count: u32,
    /// Memory for the enclave, MiB.
    pub memory_mib: u64,
    /// A fixed CID, or one chosen by `nitro-cli`.
    pub cid: Option<u32>,
    /// Debug mode: the console is readable and PCR0–2 are zero, so verifiers refuse it by
    /// default. Never in production.
    pub debug_mode: bool,
    /// The name the enclave runs under (`--enclave-name`): at start, the host terminates
    /// enclaves with this name that a previous run left behind.
    pub enclave_name: String,
}

/// A client-facing listener forwarded byte for byte to an enclave port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The enclave's vsock port.
    pub enclave_port: u32,
    /// Connections at once; more are closed on accept. The enclave's own limit for the port,
    /// which it reports in its health, caps it further.
    pub max_connections: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
}

/// The default connection limit of a forward: the enclave's default per port.
pub(crate) const DEFAULT_FORWARD_CONNECTIONS: usize = 64;
/// The enclave's health port unless configured.
pub(crate) const DEFAULT_HEALTH_PORT: u32 = 5001;

/// A host port the enclave connects to, relayed to one TCP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    /// The vsock port on the host.
    pub port: u32,
    /// The only address this port reaches (`host:port`), resolved at each connection.
    pub target: String,
    /// Connections at once.
    pub max_connections: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] scaffold::ReadError),
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("invalid configuration: {0}")]
    Syntax(String),
    /// A value is out of range or inconsistent.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The key.
        field: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    enclave: RawEnclave,
    #[serde(default)]
    forward: Vec<RawForward>,
    #[serde(default)]
    relay: Vec<RawRelay>,
    model: Option<RawModel>,
    admin: Option<RawAdmin>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnclave {
    mode: String,
    health_port: Option<u32>,
    ready_timeout: Option<String>,
    restart_backoff: Option<String>,
    restart_backoff_max: Option<String>,
    development: Option<RawDevelopment>,
    nitro: Option<RawNitro>,
    emulator: Option<RawEmulator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmulator {
    qemu: PathBuf,
    firmware: PathBuf,
    vhost_device_vsock: PathBuf,
    eif: PathBuf,
    socket: PathBuf,
    cpu_count: Option<u32>,
    memory_mib: Option<u64>,
    console: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevelopment {
    binary: Option<PathBuf>,
    config: PathBuf,
    socket: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNitro {
    nitro_cli: Option<PathBuf>,
    eif: PathBuf,
    cpu_count: u32,
    memory_mib: u64,
    cid: Option<u32>,
    #[serde(default)]
    debug_mode: bool,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    listen: String,
    enclave_port: u32,
    max_connections: Option<usize>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: PathBuf,
    port: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    port: u32,
    target: String,
    max_connections: Option<usize>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let value = match text {
        Some(text) => parse_duration(text).map_err(|e| invalid(field, e))?,
        None => default,
    };
    if value.is_zero() || value > Duration::from_secs(24 * 3600) {
        return Err(invalid(field, "must be more than 0 and at most 24h"));
    }
    Ok(value)
}

fn limit(field: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    let value = value.unwrap_or(default);
    if !(1..=65_536).contains(&value) {
        return Err(invalid(field, "must be 1 to 65536"));
    }
    Ok(value)
}

fn port(field: &str, value: u32) -> Result<u32, ConfigError> {
    if value == u32::MAX {
        return Err(invalid(field, "4294967295 is vsock's \"any port\""));
    }
    Ok(value)
}

/// A port on the host side the enclave connects to: not 9000, where the enclave's boot
/// heartbeat arrives (`nitro-cli` listens there in production, the emulator launcher in
/// development).
fn host_port(field: &str, value: u32) -> Result<u32, ConfigError> {
    if value == crate::emulator::HEARTBEAT_PORT {
        return Err(invalid(
            field,
            "9000 is the enclave's boot heartbeat port (nitro-cli listens there)",
        ));
    }
    port(field, value)
}

impl HostConfig {
    /// Read and check a configuration file; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = scaffold::read_bounded(path, MAX_CONFIG_LEN)?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotText {
            path: path.to_owned(),
        })?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Check a configuration given as TOML; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.message().to_owned()))?;
        let enclave = enclave_settings(raw.enclave, base)?;
        let mut forwards = Vec::with_capacity(raw.forward.len());
        for (i, f) in raw.forward.into_iter().enumerate() {
            let field = |name: &str| format!("forward[{i}].{name}");
            let enclave_port = port(&field("enclave_port"), f.enclave_port)?;
            if forwards
                .iter()
                .any(|f: &Forward| f.enclave_port == enclave_port)
            {
                return Err(invalid(
                    field("enclave_port"),
                    "another forward reaches this enclave port: one forward per port, so that \
                     its connection limit is the port's",
                ));
            }
            if enclave_port == enclave.health_port {
                return Err(invalid(
                    field("enclave_port"),
                    "this is the enclave's health port, reserved for the host's probes: \
                     clients must never be able to crowd them out",
                ));
            }
            forwards.push(Forward {
                listen: f.listen.parse().map_err(|_| {
                    invalid(field("listen"), "expected an address like 0.0.0.0:8443")
                })?,
                enclave_port,
                max_connections: limit(
                    &field("max_connections"),
                    f.max_connections,
                    DEFAULT_FORWARD_CONNECTIONS,
                )?,
                idle_timeout: duration(
                    &field("idle_timeout"),
                    f.idle_timeout.as_deref(),
                    Duration::from_secs(60),
                )?,
            });
        }
        let mut relays: Vec<Relay> = Vec::with_capacity(raw.relay.len());
        for (i, r) in raw.relay.into_iter().enumerate() {
            let field = |name: &str| format!("relay[{i}].{name}");
            let port = host_port(&field("port"), r.port)?;
            if relays.iter().any(|other| other.port == port) {
                return Err(invalid(
                    field("port"),
                    "each port relays to exactly one address",
                ));
            }
            check_target(&r.target).map_err(|e| invalid(field("target"), e))?;
            relays.push(Relay {
                port,
                target: r.target,
                max_connections: limit(&field("max_connections"), r.max_connections, 64)?,
                idle_timeout: duration(
                    &field("idle_timeout"),
                    r.idle_timeout.as_deref(),
                    Duration::from_secs(300),
                )?,
            });
        }
        let model = match raw.model {
            None => None,
            Some(m) => {
                let port = host_port("model.port", m.port)?;
                if relays.iter().any(|r| r.port == port) {
                    return Err(invalid("model.port", "a relay already uses this port"));
                }
                Some(crate::model_source::ModelSource {
                    path: base.join(m.path),
                    port,
                })
            }
        };
        let admin = raw
            .admin
            .map(|a| a.listen.parse())
            .transpose()
            .map_err(|_| invalid("admin.listen", "expected an address like 127.0.0.1:9100"))?;
        Ok(HostConfig {
            enclave,
            forwards,
            relays,
            model,
            admin,
            shutdown_grace: duration(
                "shutdown_grace",
                raw.shutdown_grace.as_deref(),
                Duration::from_secs(10),
            )?,
        })
    }
}

fn enclave_settings(raw: RawEnclave, base: &Path) -> Result<EnclaveSettings, ConfigError> {
    if !["development", "nitro", "emulator"].contains(&raw.mode.as_str()) {
        return Err(invalid(
            "enclave.mode",
            format!(
                "`{}`: expected \"development\", \"nitro\" or \"emulator\"",
                raw.mode
            ),
        ));
    }
    let sections = [
        ("development", raw.development.is_some()),
        ("nitro", raw.nitro.is_some()),
        ("emulator", raw.emulator.is_some()),
    ];
    for (section, set) in sections {
        if set && section != raw.mode {
            return Err(invalid(
                format!("enclave.{section}"),
                format!("set only with mode = \"{section}\""),
            ));
        }
    }
    let launch = match raw.mode.as_str() {
        "emulator" => {
            let emulator = raw
                .emulator
                .ok_or_else(|| invalid("enclave.emulator", "required with mode = \"emulator\""))?;
            let cpu_count = emulator.cpu_count.unwrap_or(2);
            if cpu_count == 0 {
                return Err(invalid("enclave.emulator.cpu_count", "must be at least 1"));
            }
            let memory_mib = emulator.memory_mib.unwrap_or(1024);
            if memory_mib < 64 {
                return Err(invalid(
                    "enclave.emulator.memory_mib",
                    "must be at least 64",
                ));
            }
            // These paths go into QEMU's and vhost-device-vsock's option strings, where a comma
            // separates options.
            for (name, path) in [
                ("firmware", &emulator.firmware),
                ("eif", &emulator.eif),
                ("socket", &emulator.socket),
            ] {
                let text = base.join(path);
                if text.to_str().is_none_or(|t| t.contains(',')) {
                    return Err(invalid(
                        format!("enclave.emulator.{name}"),
                        "must be UTF-8 without commas (it goes into QEMU's options)",
                    ));
                }
            }
            Launch::Emulator(crate::emulator::EmulatorSettings {
                qemu: base.join(emulator.qemu),
                firmware: base.join(emulator.firmware),
                vhost_device_vsock: base.join(emulator.vhost_device_vsock),
                eif: base.join(emulator.eif),
                socket: base.join(emulator.socket),
                cpu_count,
                memory_mib,
                console: emulator.console.map(|c| base.join(c)),
            })
        }
        "development" => {
            if raw.nitro.is_some() {
                return Err(invalid("enclave.nitro", "set only with mode = \"nitro\""));
            }
            let dev = raw.development.ok_or_else(|| {
                invalid(
                    "enclave.development",
                    "required with mode = \"development\"",
                )
            })?;
            Launch::Development {
                binary: match dev.binary {
                    Some(binary) => base.join(binary),
                    None => sibling_executable("enclave"),
                },
                config: base.join(dev.config),
                socket: base.join(dev.socket),
            }
        }
        "nitro" => {
            if raw.development.is_some() {
                return Err(invalid(
                    "enclave.development",
                    "set only with mode = \"development\"",
                ));
            }
            let nitro = raw
                .nitro
                .ok_or_else(|| invalid("enclave.nitro", "required with mode = \"nitro\""))?;
            if nitro.cpu_count == 0 {
                return Err(invalid("enclave.nitro.cpu_count", "must be at least 1"));
            }
            if nitro.memory_mib < 64 {
                return Err(invalid("enclave.nitro.memory_mib", "must be at least 64"));
            }
            if matches!(nitro.cid, Some(cid) if cid <= 3) {
                return Err(invalid("enclave.nitro.cid", "CIDs 0-3 are reserved"));
            }
            Launch::Nitro(NitroSettings {
                nitro_cli: nitro
                    .nitro_cli
                    .unwrap_or_else(|| PathBuf::from("nitro-cli")),
                eif: base.join(nitro.eif),
                cpu_count: nitro.cpu_count,
                memory_mib: nitro.memory_mib,
                cid: nitro.cid,
                debug_mode: nitro.debug_mode,
                enclave_name: match nitro.name {
                    None => "sovereign-enclave".to_owned(),
                    Some(name)
                        if !name.is_empty()
                            && name.len() <= 64
                            && name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
                    {
                        name
                    }
                    Some(_) => {
                        return Err(invalid(
                            "enclave.nitro.name",
                            "1 to 64 letters, digits, '-', '_' or '.'",
                        ));
                    }
                },
            })
        }
        other => {
            return Err(invalid(
                "enclave.mode",
                format!("`{other}`: expected \"development\", \"nitro\" or \"emulator\""),
            ));
        }
    };
    let restart_backoff = duration(
        "enclave.restart_backoff",
        raw.restart_backoff.as_deref(),
        Duration::from_secs(1),
    )?;
    let restart_backoff_max = duration(
        "enclave.restart_backoff_max",
        raw.restart_backoff_max.as_deref(),
        Duration::from_secs(60),
    )?;
    if restart_backoff_max < restart_backoff {
        return Err(invalid(
            "enclave.restart_backoff_max",
            "must not be less than restart_backoff",
        ));
    }
    Ok(EnclaveSettings {
        launch,
        health_port: port(
            "enclave.health_port",
            raw.health_port.unwrap_or(DEFAULT_HEALTH_PORT),
        )?,
        ready_timeout: duration(
            "enclave.ready_timeout",
            raw.ready_timeout.as_deref(),
            Duration::from_secs(30),
        )?,
        restart_backoff,
        restart_backoff_max,
    })
}

/// A relay target is `host:port` with a non-zero port; it is resolved when connections are made.
fn check_target(target: &str) -> Result<(), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or("expected host:port, for example broker.example:9443")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.len() > 253 {
        return Err("the host name is empty or too long".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be 1 to 65535".into()),
        Ok(_) => Ok(()),
    }
}

/// An executable next to this one (where cargo and packages put sibling binaries).
pub fn sibling_executable(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests;
