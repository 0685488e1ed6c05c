//! The enclave's configuration: one TOML file, baked into the image in production. Its
//! canonical form is hashed and extended into [`CONFIG_PCR`] at boot, so a verifier can pin the
//! configuration like any other measurement (`enclave measure-config` prints the value).

use std::path::{Path, PathBuf};
use std::time::Duration;

use attest::{PcrIndex, PcrValue, Region, format_duration, parse_duration};
use aws_lc_rs::digest;
use data_encoding::HEXLOWER;
use serde::Deserialize;
use transport::Endpoint;

/// The PCR that holds the configuration's measurement: the first one an enclave may extend.
pub const CONFIG_PCR: PcrIndex = match PcrIndex::new(protocol::nsm::FIRST_USER_PCR) {
    Some(index) => index,
    None => unreachable!(),
};
/// The largest configuration file read.
pub(crate) const MAX_CONFIG_LEN: u64 = 64 * 1024;
/// The vsock port of the control protocol unless configured.
pub(crate) const DEFAULT_CONTROL_PORT: u32 = 5000;
/// The vsock port the host probes health on unless configured. It is never forwarded to
/// clients, so they cannot crowd the probe out.
pub(crate) const DEFAULT_HEALTH_PORT: u32 = 5001;
/// Health connections served at once on the health port: reserved for the host's probes.
pub(crate) const HEALTH_CONNECTIONS: usize = 4;

const DEFAULT_MAX_CONNECTIONS: usize = 64;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where to listen: `vsock` in an enclave, `unix:<path>` in development.
    pub listen: Endpoint,
    /// The control protocol's port.
    pub control_port: u32,
    /// The port that answers health requests only, for the host's probes: never forwarded.
    pub health_port: u32,
    /// Connections served at once on the control port; more are answered `busy` and closed.
    pub max_connections: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
    /// Which NSM to use.
    pub nsm: NsmConfig,
    /// The sealed model to acquire at boot, if any.
    pub model: Option<ModelConfig>,
}

/// The sealed model an enclave acquires at boot: its key from the key broker (through the
/// host's relay), its ciphertext from the host. Everything the enclave trusts the broker with is
/// here, so it is measured with the rest of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// The model's id.
    pub id: sealing::Id,
    /// The host port relayed to the key broker.
    pub broker_port: u32,
    /// The host port that serves the sealed model.
    pub source_port: u32,
    /// The largest model held in memory, in bytes.
    pub max_size: u64,
    /// The national root certificates the broker's certificate must chain to (file contents).
    pub broker_roots: Vec<Vec<u8>>,
    /// The transparency log's verifier keys (`<name>+<id>+<key>`).
    pub log_keys: Vec<String>,
    /// The witnesses whose cosignatures the log's checkpoint must carry (C2SP
    /// tlog-cosignature verifier keys), and how many of them must have cosigned.
    pub witnesses: Vec<String>,
    /// How many of `witnesses` must have cosigned (0 when none is named).
    pub witnesses_required: usize,
    /// Whether `witnesses_required` may be half the witnesses or fewer (asked for by name).
    pub dangerous_witness_minority: bool,
    /// The OAEP digests accepted for the wrapped key.
    pub oaep_hashes: Vec<sealing::release::OaepHash>,
    /// The vsock port of the inference API (TLS, OpenAI-compatible).
    pub api_port: u32,
    /// Let llama.cpp repack Q4_0 and Q4_K weights (faster, stock llama.cpp's exact kernels, a
    /// second copy of those tensors in memory); off unless asked for.
    pub repack: bool,
    /// The build of the CPU kernels to run.
    pub cpu: CpuSetting,
    /// A chat template (Jinja) used instead of the GGUF's own (a model without one needs it);
    /// measured as its SHA-384.
    pub chat_template: Option<String>,
    /// Generations that run at once; other requests wait.
    pub max_concurrent: usize,
    /// Connections served at once on the API port; more are closed at once.
    pub max_connections: usize,
}

/// Which build of the CPU kernels the engine runs (`[model] cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSetting {
    /// The best build this CPU runs, AVX-512 where it has it (`auto`).
    Auto,
    /// This build (`haswell`, the default: AVX2; `skylakex`, `icelake`: AVX-512).
    Build(inference::engine::Cpu),
}

impl CpuSetting {
    /// The setting as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuSetting::Auto => "auto",
            CpuSetting::Build(cpu) => cpu.as_str(),
        }
    }

    /// The build to run on this CPU (`auto` resolved; haswell, to be refused by name, on a CPU
    /// that runs none).
    pub fn resolve(self) -> inference::engine::Cpu {
        match self {
            CpuSetting::Auto => {
                inference::engine::Cpu::best().unwrap_or(inference::engine::Cpu::Haswell)
            }
            CpuSetting::Build(cpu) => cpu,
        }
    }
}

/// The NSM the configuration asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NsmConfig {
    /// The real device, `/dev/nsm`.
    Nitro,
    /// The software NSM (development builds only).
    Simulated(Box<SimulatedNsmConfig>),
    /// The NSM of QEMU's emulated Nitro enclave, its unsigned documents signed again under a
    /// simulated Nitro root (development builds only). The PCRs are the device's: `boot_pcrs`
    /// and `pcr8` are never set.
    Emulator(Box<SimulatedNsmConfig>),
}

impl NsmConfig {
    /// Whether this NSM exists only in development builds (the `simulated-nsm` feature).
    pub fn is_development(&self) -> bool {
        !matches!(self, NsmConfig::Nitro)
    }

    /// Its name in the configuration (`nsm.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            NsmConfig::Nitro => "nitro",
            NsmConfig::Simulated(_) => "simulated",
            NsmConfig::Emulator(_) => "emulator",
        }
    }
}

/// Settings of the software NSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedNsmConfig {
    /// The development root certificate's file.
    pub root_certificate: PathBuf,
    /// Its contents (PEM or DER), read when the configuration is loaded.
    pub root_certificate_bytes: Vec<u8>,
    /// The development root's private key (PKCS#8 PEM), read when the NSM starts.
    pub root_key: PathBuf,
    /// The region the simulated CAs name.
    pub region: Region,
    /// PCR0, PCR1, PCR2 as if measured from an image; by default measured from this executable.
    pub boot_pcrs: Option<[PcrValue; 3]>,
    /// PCR8, when the image the measurements come from is signed.
    pub pcr8: Option<PcrValue>,
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
    /// A value is out of range.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The key.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    control_port: Option<u32>,
    health_port: Option<u32>,
    max_connections: Option<usize>,
    idle_timeout: Option<String>,
    nsm: Option<RawNsm>,
    model: Option<RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    broker_port: u32,
    source_port: u32,
    max_size: Option<u64>,
    broker_roots: Vec<PathBuf>,
    log_keys: Vec<String>,
    witnesses: Option<Vec<String>>,
    witnesses_required: Option<usize>,
    dangerous_witness_minority: Option<bool>,
    oaep_hashes: Option<Vec<String>>,
    api_port: Option<u32>,
    precision: Option<String>,
    repack: Option<bool>,
    cpu: Option<String>,
    chat_template: Option<String>,
    max_concurrent: Option<usize>,
    max_connections: Option<usize>,
}

/// The inference API's vsock port unless configured.
pub(crate) const DEFAULT_API_PORT: u32 = 8000;

/// The largest model an enclave holds unless configured: 16 GiB.
const DEFAULT_MAX_MODEL_SIZE: u64 = 16 * 1024 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNsm {
    kind: String,
    root_certificate: Option<PathBuf>,
    root_key: Option<PathBuf>,
    region: Option<String>,
    pcr0: Option<String>,
    pcr1: Option<String>,
    pcr2: Option<String>,
    image: Option<PathBuf>,
}

fn invalid(field: &'static str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

impl Config {
    /// The embedded defaults: vsock, port 5000, the real NSM.
    pub fn embedded_default() -> Self {
        Config {
            listen: Endpoint::Vsock(transport::Vsock::inside_enclave()),
            control_port: DEFAULT_CONTROL_PORT,
            health_port: DEFAULT_HEALTH_PORT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            nsm: NsmConfig::Nitro,
            model: None,
        }
    }

    /// Read and check a configuration file. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_bounded(path)?;
        let text = String::from_utf8(text).map_err(|_| ConfigError::NotText {
            path: path.to_owned(),
        })?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Check a configuration given as TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.message().to_owned()))?;
        let defaults = Self::embedded_default();
        let listen = match raw.listen {
            Some(text) => text.parse().map_err(|e| invalid("listen", e))?,
            None => defaults.listen,
        };
        let control_port = raw.control_port.unwrap_or(defaults.control_port);
        let health_port = raw.health_port.unwrap_or(defaults.health_port);
        for (field, port) in [("control_port", control_port), ("health_port", health_port)] {
            if port == u32::MAX {
                return Err(invalid(field, "4294967295 is vsock's \"any port\""));
            }
        }
        if health_port == control_port {
            return Err(invalid(
                "health_port",
                "must differ from control_port: the host's probes have a port of their own",
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(defaults.max_connections);
        if !(1..=4096).contains(&max_connections) {
            return Err(invalid("max_connections", "must be 1 to 4096"));
        }
        let idle_timeout = match raw.idle_timeout {
            Some(text) => parse_duration(&text).map_err(|e| invalid("idle_timeout", e))?,
            None => defaults.idle_timeout,
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&idle_timeout) {
            return Err(invalid("idle_timeout", "must be 1s to 1h"));
        }
        let nsm = match raw.nsm {
            None => NsmConfig::Nitro,
            Some(nsm) => nsm_config(nsm, base)?,
        };
        let model = raw.model.map(|m| model_config(m, base)).transpose()?;
        if let Some(model) = &model
            && [control_port, health_port].contains(&model.api_port)
        {
            return Err(invalid(
                "model.api_port",
                "must differ from control_port and health_port",
            ));
        }
        Ok(Config {
            listen,
            control_port,
            health_port,
            max_connections,
            idle_timeout,
            nsm,
            model,
        })
    }

    /// The canonical text that is measured: every setting, one per line, in a fixed order, with
    /// referenced files by digest rather than by path.
    pub fn canonical(&self) -> String {
        let mut lines = vec![
            "sovereign-enclave-config v1".to_owned(),
            format!("listen = {}", self.listen),
            format!("control_port = {}", self.control_port),
            format!("health_port = {}", self.health_port),
            format!("max_connections = {}", self.max_connections),
            format!("idle_timeout = {}", format_duration(self.idle_timeout)),
        ];
        match &self.nsm {
            NsmConfig::Nitro => lines.push("nsm.kind = nitro".into()),
            NsmConfig::Simulated(sim) | NsmConfig::Emulator(sim) => {
                lines.push(format!("nsm.kind = {}", self.nsm.kind()));
                lines.push(format!(
                    "nsm.root_certificate.sha384 = {}",
                    HEXLOWER.encode(
                        digest::digest(&digest::SHA384, &sim.root_certificate_bytes).as_ref()
                    )
                ));
                lines.push(format!("nsm.region = {}", sim.region));
                if let Some(pcrs) = &sim.boot_pcrs {
                    for (i, pcr) in pcrs.iter().enumerate() {
                        lines.push(format!("nsm.pcr{i} = {pcr}"));
                    }
                }
                if let Some(pcr8) = &sim.pcr8 {
                    lines.push(format!("nsm.pcr8 = {pcr8}"));
                }
            }
        }
        if let Some(model) = &self.model {
            lines.push(format!("model.id = {}", model.id));
            lines.push(format!("model.broker_port = {}", model.broker_port));
            lines.push(format!("model.source_port = {}", model.source_port));
            lines.push(format!("model.max_size = {}", model.max_size));
            for root in &model.broker_roots {
                lines.push(format!(
                    "model.broker_root.sha384 = {}",
                    HEXLOWER.encode(digest::digest(&digest::SHA384, root).as_ref())
                ));
            }
            for key in &model.log_keys {
                lines.push(format!("model.log_key = {key}"));
            }
            // Written only when witnesses are named, so that configurations without any keep
            // their measurement.
            for witness in &model.witnesses {
                lines.push(format!("model.witness = {witness}"));
            }
            if !model.witnesses.is_empty() {
                lines.push(format!(
                    "model.witnesses_required = {}",
                    model.witnesses_required
                ));
            }
            if model.dangerous_witness_minority {
                lines.push("model.dangerous_witness_minority = true".to_owned());
            }
            for hash in &model.oaep_hashes {
                lines.push(format!("model.oaep_hash = {}", hash.as_str()));
            }
            lines.push(format!("model.api_port = {}", model.api_port));
            lines.push(format!("model.repack = {}", model.repack));
            lines.push(format!("model.cpu = {}", model.cpu.as_str()));
            if let Some(template) = &model.chat_template {
                lines.push(format!(
                    "model.chat_template = sha384:{}",
                    HEXLOWER.encode(digest::digest(&digest::SHA384, template.as_bytes()).as_ref())
                ));
            }
            lines.push(format!("model.max_concurrent = {}", model.max_concurrent));
            lines.push(format!("model.max_connections = {}", model.max_connections));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    /// SHA-384 of [`Config::canonical`]: what the enclave extends into [`CONFIG_PCR`].
    pub fn digest(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(digest::digest(&digest::SHA384, self.canonical().as_bytes()).as_ref());
        out
    }

    /// The value [`CONFIG_PCR`] holds once the enclave has booted with this configuration.
    pub fn expected_pcr(&self) -> PcrValue {
        PcrValue::ZERO.extend(&self.digest())
    }
}

fn nsm_config(nsm: RawNsm, base: &Path) -> Result<NsmConfig, ConfigError> {
    let kind = nsm.kind.as_str();
    let measurements = [
        ("pcr0", nsm.pcr0.is_some()),
        ("pcr1", nsm.pcr1.is_some()),
        ("pcr2", nsm.pcr2.is_some()),
        ("image", nsm.image.is_some()),
    ];
    match kind {
        "nitro" => {
            let root = [
                ("root_certificate", nsm.root_certificate.is_some()),
                ("root_key", nsm.root_key.is_some()),
                ("region", nsm.region.is_some()),
            ];
            if let Some((name, _)) = root.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    "nsm",
                    format!("`{name}` applies only to kind = \"simulated\" or \"emulator\""),
                ));
            }
            if let Some((name, _)) = measurements.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    "nsm",
                    format!("`{name}` applies only to kind = \"simulated\""),
                ));
            }
            Ok(NsmConfig::Nitro)
        }
        "emulator" => {
            // The emulator measures the image it boots; nothing here may say otherwise.
            if let Some((name, _)) = measurements.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    "nsm",
                    format!(
                        "`{name}` applies only to kind = \"simulated\": the emulator's NSM \
                         reports what QEMU measured"
                    ),
                ));
            }
            Ok(NsmConfig::Emulator(Box::new(simulated_config(nsm, base)?)))
        }
        "simulated" => Ok(NsmConfig::Simulated(Box::new(simulated_config(nsm, base)?))),
        other => Err(invalid(
            "nsm.kind",
            format!("`{other}`: expected \"nitro\", \"simulated\" or \"emulator\""),
        )),
    }
}

/// The development root, region and (for the simulated NSM) boot measurements.
fn simulated_config(nsm: RawNsm, base: &Path) -> Result<SimulatedNsmConfig, ConfigError> {
    let root_certificate = base.join(
        nsm.root_certificate
            .ok_or_else(|| invalid("nsm.root_certificate", "required for this NSM"))?,
    );
    let root_key = base.join(
        nsm.root_key
            .ok_or_else(|| invalid("nsm.root_key", "required for this NSM"))?,
    );
    let root_certificate_bytes = read_bounded(&root_certificate)?;
    attest::load_certificates(&root_certificate_bytes)
        .map_err(|e| invalid("nsm.root_certificate", e))?;
    let region = Region::try_from(nsm.region.as_deref().unwrap_or("eu-central-1"))
        .map_err(|e| invalid("nsm.region", e))?;
    let pcr = |field: &'static str, value: Option<String>| {
        value
            .map(|hex| PcrValue::from_hex(&hex).map_err(|e| invalid(field, e)))
            .transpose()
    };
    let mut boot_pcrs = match (
        pcr("nsm.pcr0", nsm.pcr0)?,
        pcr("nsm.pcr1", nsm.pcr1)?,
        pcr("nsm.pcr2", nsm.pcr2)?,
    ) {
        (Some(a), Some(b), Some(c)) => Some([a, b, c]),
        (None, None, None) => None,
        _ => return Err(invalid("nsm", "set all of pcr0, pcr1, pcr2, or none")),
    };
    let mut pcr8 = None;
    if let Some(image) = nsm.image {
        if boot_pcrs.is_some() {
            return Err(invalid("nsm.image", "set an image or pcr0..pcr2, not both"));
        }
        // As the Nitro hypervisor does: the PCRs are measured from the image booted.
        let image = eif::read_file(&base.join(image)).map_err(|e| invalid("nsm.image", e))?;
        let m = image.measurements;
        boot_pcrs = Some([m.pcr0, m.pcr1, m.pcr2]);
        pcr8 = m.pcr8;
    }
    Ok(SimulatedNsmConfig {
        root_certificate,
        root_certificate_bytes,
        root_key,
        region,
        boot_pcrs,
        pcr8,
    })
}

fn model_config(raw: RawModel, base: &Path) -> Result<ModelConfig, ConfigError> {
    let id = sealing::Id::new(&raw.id).map_err(|e| invalid("model.id", e))?;
    let api_port = raw.api_port.unwrap_or(DEFAULT_API_PORT);
    for (field, port) in [
        ("model.broker_port", raw.broker_port),
        ("model.source_port", raw.source_port),
        ("model.api_port", api_port),
    ] {
        if port == 0 || port == u32::MAX {
            return Err(invalid(field, "1 to 4294967294"));
        }
    }
    if raw.broker_roots.is_empty() {
        return Err(invalid(
            "model.broker_roots",
            "name the national root(s) the key broker's certificate chains to",
        ));
    }
    let mut broker_roots = Vec::new();
    for path in raw.broker_roots {
        let bytes = read_bounded(&base.join(&path))?;
        attest::load_certificates(&bytes).map_err(|e| invalid("model.broker_roots", e))?;
        broker_roots.push(bytes);
    }
    if raw.log_keys.is_empty() {
        return Err(invalid(
            "model.log_keys",
            "name the transparency log's verifier key: releases must be logged",
        ));
    }
    for key in &raw.log_keys {
        proofs::NoteVerifier::parse(key).map_err(|e| invalid("model.log_keys", e))?;
    }
    let witnesses = raw.witnesses.unwrap_or_default();
    let witnesses_required = raw.witnesses_required.unwrap_or(witnesses.len());
    let dangerous_witness_minority = raw.dangerous_witness_minority.unwrap_or(false);
    witness_policy(&witnesses, witnesses_required, dangerous_witness_minority)?;
    let oaep_hashes = raw
        .oaep_hashes
        .unwrap_or_else(|| vec!["sha256".into()])
        .iter()
        .map(|h| {
            sealing::release::OaepHash::parse(h).ok_or_else(|| {
                invalid(
                    "model.oaep_hashes",
                    format!("{h:?}: \"sha256\" or \"sha1\""),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if raw.precision.is_some() {
        return Err(invalid(
            "model.precision",
            "no longer a setting: the weights run in the GGUF's own quantization, as shipped \
             (to change it, requantize the model before sealing it)",
        ));
    }
    let max_concurrent = raw.max_concurrent.unwrap_or(1);
    if !(1..=64).contains(&max_concurrent) {
        return Err(invalid("model.max_concurrent", "1 to 64"));
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=4096).contains(&max_connections) {
        return Err(invalid("model.max_connections", "1 to 4096"));
    }
    Ok(ModelConfig {
        id,
        api_port,
        repack: raw.repack.unwrap_or(false),
        cpu: match raw.cpu.as_deref() {
            None => CpuSetting::Build(inference::engine::Cpu::Haswell),
            Some("auto") => CpuSetting::Auto,
            Some(name) => CpuSetting::Build(
                inference::engine::Cpu::from_name(name)
                    .ok_or_else(|| invalid("model.cpu", "haswell, skylakex, icelake or auto"))?,
            ),
        },
        chat_template: match raw.chat_template {
            Some(t) if t.trim().is_empty() => {
                return Err(invalid("model.chat_template", "empty"));
            }
            Some(t) if t.len() > 64 * 1024 => {
                return Err(invalid("model.chat_template", "over 64 KiB"));
            }
            other => other,
        },
        max_concurrent,
        max_connections,
        broker_port: raw.broker_port,
        source_port: raw.source_port,
        max_size: raw.max_size.unwrap_or(DEFAULT_MAX_MODEL_SIZE),
        broker_roots,
        log_keys: raw.log_keys,
        witnesses,
        witnesses_required,
        dangerous_witness_minority,
        oaep_hashes,
    })
}

/// The witness policy `witnesses` (verifier keys) and `required` make: a majority of them
/// unless `allow_minority`.
pub(crate) fn witness_policy(
    witnesses: &[String],
    required: usize,
    allow_minority: bool,
) -> Result<proofs::cosignature::WitnessPolicy, ConfigError> {
    let keys = witnesses
        .iter()
        .map(|w| {
            proofs::cosignature::CosignatureVerifier::parse(w)
                .map_err(|e| invalid("model.witnesses", format!("{w:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = if allow_minority {
        proofs::cosignature::WitnessPolicy::allowing_minority(keys, required)
    } else {
        proofs::cosignature::WitnessPolicy::new(keys, required)
    };
    policy.map_err(|e| invalid("model.witnesses_required", e))
}

/// Read a small file, refusing anything over [`MAX_CONFIG_LEN`].
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    Ok(scaffold::read_bounded(path, MAX_CONFIG_LEN)?)
}

#[cfg(test)]
mod tests;
