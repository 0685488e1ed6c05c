//! The broker's configuration: one TOML file; relative paths are relative to its directory;
//! unknown keys are errors. `broker check-config FILE` prints what it means.
//!
//! ```toml
//! listen = "127.0.0.1:9443"        # where enclaves (through their host's relay) connect
//! state_dir = "state"              # sealed-model registry, transparency log, policy state
//! policy = "release-policy.toml"   # see `broker policy check`
//! nonce_lifetime = "30s"           # a challenge must be answered within this
//! max_pending = 10000              # challenges outstanding at once; more are refused (busy)
//! max_pending_per_peer = 64        # of which one source address may hold (used ones count for
//!                                  # two lifetimes); more are refused (busy)
//! workers = 4                      # releases decided at once (one HSM session each)
//! max_connections = 256
//! io_timeout = "10s"               # a peer silent this long is disconnected
//!
//! [trust]                          # whose attestation documents are accepted
//! roots = ["national-root.pem"]    # national roots: documents only through a cross-certificate;
//!                                  # also the roots the broker's own certificate must chain to
//! cross_certificates = ["aws-cross.pem"]  # the national root's certificate for the AWS root
//! # aws_root = true                # also trust AWS's root directly (default false): withdrawing
//!                                  # the cross-certificate then no longer stops documents
//!
//! [signing]                        # the response key, certified for the key-broker role
//! token_key = "response-key"       # a P-384 key pair in the key store's PKCS#11 token
//! # key = "broker.key"             # or a PKCS#8 PEM file (development; announced at start)
//! certificate = "broker.pem"       # issued by a national root
//!
//! [log]
//! origin = "gov.example/key-release-log"
//! token_key = "log-key"            # an Ed25519 key pair in the token (`broker init` makes it)
//! # key = "log.skey"               # or a C2SP signed-note key file (development)
//!
//! [key_store]
//! kind = "pkcs11"                  # or "software"
//! kek_label = "kek-1"
//! oaep_hash = "sha256"             # or "sha1" where the HSM has nothing else (SoftHSM2)
//! module = "/usr/lib/softhsm/libsofthsm2.so"   # pkcs11: the module, the token, how keys wrap
//! token = "broker"
//! kek_wrap = "aes-key-wrap"        # or "aes-key-wrap-pad", "vendor:0x…"
//! # pin_file = "pin"               # else $BROKER_PKCS11_PIN
//! # file = "state/keystore.json"   # software: the store, and its passphrase's file
//! # passphrase_file = "passphrase" # else $BROKER_PASSPHRASE
//!
//! [approval]                       # policy changes need k of n approvals (see docs/broker.md)
//! required = 2
//! approvers = ["alice@gov.example", "bob@gov.example", "carol@gov.example"]  # certificate CNs
//! approvals = "policy-approvals"   # the directory of *.approval files (default)
//! ```
//!
//! ```toml
//! [witnesses]                      # cosign every checkpoint before a release is answered
//! required = 1                     # of those named (default: all)
//! timeout = "5s"                   # per witness
//! [[witnesses.witness]]
//! key = "witness.example+8a2b3c4d+BL…"   # its C2SP cosignature/v1 verifier key
//! url = "http://witness.example:7380"   # it answers POST <url>/add-checkpoint
//! ```
//!
//! Without `[approval]` the broker refuses to start unless `dangerous_single_administrator =
//! true` is set (development: the policy file takes effect as written, announced at every
//! start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attest::{DocumentTrust, ServiceTrust, format_duration, load_certificates, parse_duration};
use sealing::release::OaepHash;
use serde::Deserialize;

use crate::keystore::KekWrapMechanism;

mod witnesses;

pub use self::witnesses::WitnessesConfig;

/// The largest configuration, key or certificate file read.
pub const MAX_SMALL_FILE: u64 = 64 * 1024;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn invalid(key: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid `{key}`: {reason}"))
}

/// Read a file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ConfigError> {
    scaffold::read_bounded(path, max).map_err(|e| ConfigError(e.to_string()))
}

/// Which key store, and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyStoreConfig {
    /// A PKCS#11 token.
    Pkcs11 {
        /// The module.
        module: PathBuf,
        /// The token's label.
        token: String,
        /// How data keys wrap under the KEK.
        kek_wrap: KekWrapMechanism,
        /// A file holding the user PIN; else `$BROKER_PKCS11_PIN`.
        pin_file: Option<PathBuf>,
    },
    /// The embedded software store.
    Software {
        /// The store's file.
        file: PathBuf,
        /// A file holding the passphrase; else `$BROKER_PASSPHRASE`.
        passphrase_file: Option<PathBuf>,
    },
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The release policy file.
    pub policy: PathBuf,
    /// How long a challenge nonce is accepted.
    pub nonce_lifetime: Duration,
    /// Challenges outstanding at once.
    pub max_pending: usize,
    /// Of which one source address may hold, counting used ones for two lifetimes.
    pub max_pending_per_peer: usize,
    /// Releases decided at once.
    pub workers: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Per-message I/O timeout.
    pub io_timeout: Duration,
    /// Trust the AWS root directly, not only through a national root's cross-certificate.
    pub aws_root: bool,
    /// National roots: for documents only through a cross-certificate, and the roots of the
    /// broker's own certificate.
    pub roots: Vec<PathBuf>,
    /// Cross-certificates.
    pub cross_certificates: Vec<PathBuf>,
    /// The response key (P-384).
    pub signing_key: ServiceKey,
    /// Its certificate.
    pub signing_certificate: PathBuf,
    /// The log's origin.
    pub log_origin: String,
    /// The log's signing key (Ed25519).
    pub log_key: ServiceKey,
    /// The KEK's label.
    pub kek_label: String,
    /// The OAEP digest for wrapping to enclaves.
    pub oaep_hash: OaepHash,
    /// The key store.
    pub key_store: KeyStoreConfig,
    /// Who must approve policy changes; `None` only with `dangerous_single_administrator`.
    pub approval: Option<crate::approval::ApprovalConfig>,
    /// The witnesses that cosign checkpoints before a release is answered, if any.
    pub witnesses: Option<WitnessesConfig>,
}

/// Where a service key (the response key, the log key) is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKey {
    /// A file on the broker's host (development: whoever reads it can sign as the broker).
    File(PathBuf),
    /// A key pair in the key store's PKCS#11 token, by label: it signs there and never leaves.
    Token(String),
}

impl ServiceKey {
    /// For messages and JSON.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("file {}", path.display()),
            Self::Token(label) => format!("token key {label:?}"),
        }
    }

    fn from_raw(
        section: &str,
        file: Option<PathBuf>,
        token_key: Option<String>,
        at: impl Fn(PathBuf) -> PathBuf,
    ) -> Result<Self, ConfigError> {
        match (file, token_key) {
            (Some(file), None) => Ok(Self::File(at(file))),
            (None, Some(label)) => {
                sealing::Id::new(&label)
                    .map_err(|e| invalid(&format!("{section}.token_key"), e))?;
                Ok(Self::Token(label))
            }
            (Some(_), Some(_)) => Err(invalid(
                section,
                "give `key` (a file) or `token_key` (a label in the key store's token), not both",
            )),
            (None, None) => Err(invalid(
                section,
                "give `token_key` (a label in the key store's PKCS#11 token), or `key` (a file, \
                 for development)",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    state_dir: PathBuf,
    policy: PathBuf,
    nonce_lifetime: Option<String>,
    max_pending: Option<usize>,
    max_pending_per_peer: Option<usize>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    io_timeout: Option<String>,
    trust: RawTrust,
    signing: RawSigning,
    log: RawLog,
    key_store: RawKeyStore,
    approval: Option<RawApproval>,
    #[serde(default)]
    dangerous_single_administrator: bool,
    witnesses: Option<witnesses::RawWitnesses>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    required: usize,
    approvers: Vec<String>,
    approvals: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default)]
    aws_root: bool,
    #[serde(default)]
    roots: Vec<PathBuf>,
    #[serde(default)]
    cross_certificates: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    key: Option<PathBuf>,
    token_key: Option<String>,
    certificate: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    origin: String,
    key: Option<PathBuf>,
    token_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyStore {
    kind: String,
    kek_label: String,
    oaep_hash: Option<String>,
    module: Option<PathBuf>,
    token: Option<String>,
    kek_wrap: Option<String>,
    pin_file: Option<PathBuf>,
    file: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
}

fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = parse_duration(&text).map_err(|e| invalid(key, e))?;
    if d.is_zero() || d > Duration::from_secs(86_400) {
        return Err(invalid(key, "more than zero and at most a day"));
    }
    Ok(d)
}

fn limit(
    key: &str,
    value: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let n = value.unwrap_or(default);
    if n == 0 || n > max {
        return Err(invalid(key, format!("1 to {max}")));
    }
    Ok(n)
}

impl Config {
    /// Read and check the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = read_bounded(path, MAX_SMALL_FILE)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ConfigError(format!("{} is not UTF-8", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(text, base)
    }

    /// Check a configuration's text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: Raw =
            toml::from_str(text).map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        let at = |p: PathBuf| base.join(p);
        let listen = raw
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{e}: expected ADDRESS:PORT")))?;
        let origin = raw.log.origin;
        if origin.is_empty() || origin.len() > 128 || origin.contains(char::is_whitespace) {
            return Err(invalid("log.origin", "1 to 128 characters, no spaces"));
        }
        let ks = raw.key_store;
        sealing::Id::new(&ks.kek_label).map_err(|e| invalid("key_store.kek_label", e))?;
        let oaep_hash = match ks.oaep_hash.as_deref() {
            None => OaepHash::Sha256,
            Some(text) => OaepHash::parse(text)
                .ok_or_else(|| invalid("key_store.oaep_hash", "\"sha256\" or \"sha1\""))?,
        };
        let only = |kind: &str, present: &[(&str, bool)]| -> Result<(), ConfigError> {
            match present.iter().find(|(_, p)| *p) {
                Some((key, _)) => Err(invalid(
                    &format!("key_store.{key}"),
                    format!("not a setting of a {kind} key store"),
                )),
                None => Ok(()),
            }
        };
        let key_store = match ks.kind.as_str() {
            "pkcs11" => {
                only(
                    "pkcs11",
                    &[
                        ("file", ks.file.is_some()),
                        ("passphrase_file", ks.passphrase_file.is_some()),
                    ],
                )?;
                let kek_wrap = match ks.kek_wrap.as_deref() {
                    None => KekWrapMechanism::AesKeyWrap,
                    Some(text) => KekWrapMechanism::parse(text).ok_or_else(|| {
                        invalid(
                            "key_store.kek_wrap",
                            "\"aes-key-wrap\", \"aes-key-wrap-pad\" or \"vendor:0x…\"",
                        )
                    })?,
                };
                KeyStoreConfig::Pkcs11 {
                    module: ks
                        .module
                        .ok_or_else(|| invalid("key_store.module", "required for pkcs11"))?,
                    token: ks
                        .token
                        .ok_or_else(|| invalid("key_store.token", "required for pkcs11"))?,
                    kek_wrap,
                    pin_file: ks.pin_file.map(at),
                }
            }
            "software" => {
                only(
                    "software",
                    &[
                        ("module", ks.module.is_some()),
                        ("token", ks.token.is_some()),
                        ("kek_wrap", ks.kek_wrap.is_some()),
                        ("pin_file", ks.pin_file.is_some()),
                    ],
                )?;
                KeyStoreConfig::Software {
                    file: at(ks
                        .file
                        .ok_or_else(|| invalid("key_store.file", "required for software"))?),
                    passphrase_file: ks.passphrase_file.map(at),
                }
            }
            other => {
                return Err(invalid(
                    "key_store.kind",
                    format!("{other:?}: expected \"pkcs11\" or \"software\""),
                ));
            }
        };
        let approval = match (raw.approval, raw.dangerous_single_administrator) {
            (Some(_), true) => {
                return Err(invalid(
                    "dangerous_single_administrator",
                    "set together with [approval]: choose one",
                ));
            }
            (None, false) => {
                return Err(ConfigError(
                    "no [approval] section: name the approvers whose k-of-n approval a policy \
                     change needs (`required`, `approvers`), or, for development only, set \
                     `dangerous_single_administrator = true`"
                        .into(),
                ));
            }
            (None, true) => None,
            (Some(a), false) => Some(crate::approval::ApprovalConfig {
                rule: attest::approval::ApprovalRule::new(a.required, a.approvers)
                    .map_err(|e| invalid("approval", e))?,
                dir: at(a
                    .approvals
                    .unwrap_or_else(|| PathBuf::from("policy-approvals"))),
            }),
        };
        let witnesses = raw.witnesses.map(witnesses::parse).transpose()?;
        let signing_key =
            ServiceKey::from_raw("signing", raw.signing.key, raw.signing.token_key, at)?;
        let log_key = ServiceKey::from_raw("log", raw.log.key, raw.log.token_key, at)?;
        let in_token = |key: &ServiceKey| matches!(key, ServiceKey::Token(_));
        if (in_token(&signing_key) || in_token(&log_key))
            && !matches!(key_store, KeyStoreConfig::Pkcs11 { .. })
        {
            return Err(invalid(
                "token_key",
                "keys in a token need a PKCS#11 key store (key_store.kind = \"pkcs11\")",
            ));
        }
        Ok(Self {
            approval,
            witnesses,
            listen,
            state_dir: at(raw.state_dir),
            policy: at(raw.policy),
            nonce_lifetime: duration(
                "nonce_lifetime",
                raw.nonce_lifetime,
                Duration::from_secs(30),
            )?,
            max_pending: limit("max_pending", raw.max_pending, 10_000, 1_000_000)?,
            max_pending_per_peer: limit(
                "max_pending_per_peer",
                raw.max_pending_per_peer,
                64,
                1_000_000,
            )?,
            workers: limit("workers", raw.workers, 4, 256)?,
            max_connections: limit("max_connections", raw.max_connections, 256, 65_536)?,
            io_timeout: duration("io_timeout", raw.io_timeout, Duration::from_secs(10))?,
            aws_root: raw.trust.aws_root,
            roots: raw.trust.roots.into_iter().map(at).collect(),
            cross_certificates: raw.trust.cross_certificates.into_iter().map(at).collect(),
            signing_key,
            signing_certificate: at(raw.signing.certificate),
            log_origin: origin,
            log_key,
            kek_label: ks.kek_label,
            oaep_hash,
            key_store,
        })
    }

    /// The trust documents are verified against: the national roots through their
    /// cross-certificates, and the AWS root directly only when `trust.aws_root` asks for it.
    pub fn document_trust(&self) -> Result<DocumentTrust, ConfigError> {
        let mut trust = DocumentTrust::empty();
        if self.aws_root {
            trust
                .add_aws_root()
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        for cert in self.certificates(&self.roots)? {
            trust
                .add_national_root(cert.1)
                .map_err(|e| ConfigError(format!("trust.roots: {}: {e}", cert.0.display())))?;
        }
        for cert in self.certificates(&self.cross_certificates)? {
            trust.add_cross_certificate(cert.1).map_err(|e| {
                ConfigError(format!(
                    "trust.cross_certificates: {}: {e}",
                    cert.0.display()
                ))
            })?;
        }
        if trust.is_empty() {
            return Err(ConfigError(
                "no document can verify: give trust.roots with trust.cross_certificates (a \
                 national root reaches documents only through a cross-certificate), or set \
                 trust.aws_root = true"
                    .into(),
            ));
        }
        Ok(trust)
    }

    /// The trust the broker's own certificate is checked against: the national roots, which
    /// certify service keys directly. Never used for documents.
    pub fn service_trust(&self) -> Result<ServiceTrust, ConfigError> {
        let mut trust = ServiceTrust::new();
        for cert in self.certificates(&self.roots)? {
            trust
                .add_root(cert.1)
                .map_err(|e| ConfigError(format!("trust.roots: {}: {e}", cert.0.display())))?;
        }
        if trust.is_empty() {
            return Err(ConfigError(
                "no national root (trust.roots): the broker's certificate must chain to one, as \
                 enclaves check it"
                    .into(),
            ));
        }
        Ok(trust)
    }

    fn certificates<'a>(
        &self,
        paths: &'a [PathBuf],
    ) -> Result<Vec<(&'a Path, rustls_pki_types::CertificateDer<'static>)>, ConfigError> {
        let mut out = Vec::new();
        for path in paths {
            let certs = load_certificates(&read_bounded(path, MAX_SMALL_FILE)?)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            out.extend(certs.into_iter().map(|c| (path.as_path(), c)));
        }
        Ok(out)
    }

    /// What the configuration means, for `broker check-config --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let key_store = match &self.key_store {
            KeyStoreConfig::Pkcs11 {
                module,
                token,
                kek_wrap,
                pin_file,
            } => serde_json::json!({
                "kind": "pkcs11", "module": module, "token": token,
                "kek_wrap": kek_wrap.to_string(), "pin_file": pin_file,
            }),
            KeyStoreConfig::Software {
                file,
                passphrase_file,
            } => serde_json::json!({
                "kind": "software", "file": file, "passphrase_file": passphrase_file,
            }),
        };
        serde_json::json!({
            "listen": self.listen.to_string(),
            "state_dir": self.state_dir,
            "policy": self.policy,
            "nonce_lifetime": format_duration(self.nonce_lifetime),
            "max_pending": self.max_pending,
            "max_pending_per_peer": self.max_pending_per_peer,
            "workers": self.workers,
            "max_connections": self.max_connections,
            "io_timeout": format_duration(self.io_timeout),
            "trust": {
                "aws_root": self.aws_root,
                "roots": self.roots,
                "cross_certificates": self.cross_certificates,
            },
            "signing": {
                "key": self.signing_key.describe(),
                "in_token": matches!(self.signing_key, ServiceKey::Token(_)),
                "certificate": self.signing_certificate,
            },
            "log": {
                "origin": self.log_origin,
                "key": self.log_key.describe(),
                "in_token": matches!(self.log_key, ServiceKey::Token(_)),
            },
            "key_store": key_store,
            "kek_label": self.kek_label,
            "oaep_hash": self.oaep_hash.as_str(),
            "approval": self.approval.as_ref().map(|a| serde_json::json!({
                "required": a.rule.required,
                "approvers": a.rule.approvers,
                "approvals": a.dir,
            })),
            "dangerous_single_administrator": self.approval.is_none(),
            "witnesses": self.witnesses.as_ref().map(|w| serde_json::json!({
                "required": w.required,
                "timeout": format_duration(w.timeout),
                "witness": w.witnesses.iter().map(|w| serde_json::json!({
                    "key": w.key.to_vkey(), "url": w.url.to_string(),
                })).collect::<Vec<_>>(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen = \"127.0.0.1:9443\"\nstate_dir = \"s\"\npolicy = \"p.toml\"\n\
        dangerous_single_administrator = true\n[trust]\nroots = [\"r.pem\"]\n[signing]\nkey = \"b.key\"\ncertificate = \"b.pem\"\n\
        [log]\norigin = \"gov.example/log\"\nkey = \"log.skey\"\n";

    #[test]
    fn a_full_configuration_resolves_paths_and_defaults() {
        let text = format!(
            "{BASE}[key_store]\nkind = \"pkcs11\"\nkek_label = \"kek-1\"\noaep_hash = \"sha1\"\n\
             module = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"broker\"\n"
        );
        let c = Config::parse(&text, Path::new("/etc/broker")).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/broker/s"));
        assert_eq!(c.roots, vec![PathBuf::from("/etc/broker/r.pem")]);
        assert!(
            !c.aws_root,
            "AWS's root is trusted directly only when asked for"
        );
        assert_eq!(c.oaep_hash, OaepHash::Sha1);
        assert_eq!(c.nonce_lifetime, Duration::from_secs(30));
        assert!(matches!(
            c.key_store,
            KeyStoreConfig::Pkcs11 {
                kek_wrap: KekWrapMechanism::AesKeyWrap,
                ..
            }
        ));
        assert_eq!(c.to_json()["key_store"]["kind"], "pkcs11");
    }

    #[test]
    fn mistakes_are_named() {
        for (tail, needle) in [
            (
                "[key_store]\nkind = \"hsm\"\nkek_label = \"k\"\n",
                "key_store.kind",
            ),
            (
                "[key_store]\nkind = \"software\"\nkek_label = \"k\"\nfile = \"f\"\ntoken = \"t\"\n",
                "key_store.token",
            ),
            (
                "[key_store]\nkind = \"pkcs11\"\nkek_label = \"k\"\n",
                "key_store.module",
            ),
            (
                "[key_store]\nkind = \"software\"\nkek_label = \"k\"\nfile = \"f\"\noaep_hash = \"md5\"\n",
                "oaep_hash",
            ),
            (
                "[key_store]\nkind = \"software\"\nkek_label = \"k k\"\nfile = \"f\"\n",
                "kek_label",
            ),
            (
                "[key_store]\nkind = \"software\"\nkek_label = \"k\"\nfile = \"f\"\nsurprise = 1\n",
                "unknown field",
            ),
        ] {
            let err = Config::parse(&format!("{BASE}{tail}"), Path::new(".")).unwrap_err();
            assert!(err.to_string().contains(needle), "{tail}: {err}");
        }
        let bad_timeout = BASE.replace("policy", "io_timeout = \"0s\"\npolicy")
            + "[key_store]\nkind = \"software\"\nkek_label = \"k\"\nfile = \"f\"\n";
        assert!(Config::parse(&bad_timeout, Path::new(".")).is_err());
    }

    #[test]
    fn witnesses_are_checked_like_an_enclave_checks_them() {
        let store = "[key_store]\nkind = \"software\"\nkek_label = \"k\"\nfile = \"f\"\n";
        let key = |name: &str| {
            proofs::cosignature::Cosigner::generate(name)
                .unwrap()
                .verifier()
                .to_vkey()
        };
        let (a, b) = (key("a.example"), key("b.example"));
        let witness =
            |k: &str, url: &str| format!("[[witnesses.witness]]\nkey = \"{k}\"\nurl = \"{url}\"\n");
        let two = format!(
            "{}{}",
            witness(&a, "http://127.0.0.1:7380"),
            witness(&b, "http://127.0.0.1:7381/w")
        );
        let c = Config::parse(&format!("{BASE}{store}[witnesses]\n{two}"), Path::new(".")).unwrap();
        let w = c.witnesses.as_ref().unwrap();
        assert_eq!((w.required, w.witnesses.len()), (2, 2), "all, unless told");
        assert_eq!(
            c.to_json()["witnesses"]["witness"][1]["url"],
            "http://127.0.0.1:7381/w"
        );
        let log_key = proofs::NoteSigner::generate("l.example")
            .unwrap()
            .verifier()
            .to_vkey();
        for (section, needle) in [
            (
                format!("[witnesses]\nrequired = 3\n{two}"),
                "witnesses.required",
            ),
            (
                format!("[witnesses]\nrequired = 0\n{two}"),
                "witnesses.required",
            ),
            (
                "[witnesses]\nwitness = []\n".to_owned(),
                "witnesses.witness",
            ),
            (
                format!(
                    "[witnesses]\n{}{}",
                    witness(&a, "http://x:1"),
                    witness(&a, "http://y:1")
                ),
                "are one",
            ),
            (
                format!("[witnesses]\n{}", witness(&log_key, "http://x:1")),
                "witnesses.witness.key",
            ),
            (
                format!("[witnesses]\n{}", witness(&a, "https://x:1")),
                "witnesses.witness.url",
            ),
            (
                format!(
                    "[witnesses]\ntimeout = \"0s\"\n{}",
                    witness(&a, "http://x:1")
                ),
                "witnesses.timeout",
            ),
        ] {
            let err =
                Config::parse(&format!("{BASE}{store}{section}"), Path::new(".")).unwrap_err();
            assert!(err.to_string().contains(needle), "{section}: {err}");
        }
    }
}
