//! The government-side key broker.
//!
//! It seals models under data keys that only its key store can unwrap ([`seal`]); keeps the
//! release policy ([`policy`]); answers enclaves' release requests ([`release`], [`server`]):
//! verifies their attestation against the national root and the model's policy, has the HSM
//! rewrap the data key to the enclave's ephemeral key ([`keystore`]), and logs every decision
//! in the transparency log before it answers ([`state`]).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = broker::Config::load(std::path::Path::new("broker.toml"))?;
//! // Refuses a policy change without a new version, a signing certificate enclaves would
//! // refuse, a log another broker holds.
//! let broker = broker::open(&config, Box::new(attest::Timestamp::now))?;
//! # let _ = broker;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod approval;
pub mod config;
pub mod keystore;
pub mod policy;
pub mod release;
pub mod revocation;
pub mod seal;
pub mod secrets;
pub mod server;
pub mod state;
pub mod witnesses;

use std::path::PathBuf;
use std::sync::Arc;

use attest::{Timestamp, Verifier};
use proofs::entry::{Entry, PolicyChange};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use sealing::release::{OaepHash, ResponseSigner};

use crate::config::ServiceKey;
pub use crate::config::{Config, KeyStoreConfig};
use crate::keystore::{KeyStore, Pkcs11Config, Pkcs11Store, SigningKeyKind, SoftwareStore};
use crate::policy::ReleasePolicy;
use crate::release::{Broker, Clock, Parts};
use crate::state::{Ledger, PolicyState, StateDir, StateError};

/// Why the broker, or one of its parts, could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration, or a file it names, was refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The key store could not be opened.
    #[error(transparent)]
    KeyStore(#[from] keystore::KeyStoreError),
    /// The state directory or the log could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// Another broker holds the log.
    #[error("{0}: is another broker running on this state directory?")]
    Locked(#[source] StateError),
    /// The release policy was refused.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The release policy changed without a higher version.
    #[error(
        "the release policy changed but its version did not increase ({adopted} was adopted with \
         version {version}): raise `version` so that the log can tell the policies apart"
    )]
    PolicyVersion {
        /// The start of the adopted policy's SHA-384.
        adopted: String,
        /// Its version.
        version: u64,
    },
    /// With approvals, no policy is approved, and none was adopted before.
    #[error(
        "no release policy is in force: the policy file's {0}; run `broker policy apply` with \
         enough approvals"
    )]
    NotApproved(String),
    /// A PKCS#11 key store with no PIN.
    #[error(
        "the PKCS#11 key store needs the token's user PIN: set key_store.pin_file or \
         $BROKER_PKCS11_PIN"
    )]
    NoPin,
    /// The PIN is not text.
    #[error("the PKCS#11 PIN is not text")]
    PinNotText,
    /// A service key (in the token, or its file) cannot be used.
    #[error("{0}")]
    TokenKey(String),
    /// PKCS#11 settings were asked of another key store.
    #[error("the key store is not pkcs11")]
    NotPkcs11,
    /// The response signing key is not a PKCS#8 PEM private key.
    #[error("{0} is not a PKCS#8 PEM private key")]
    SigningKey(PathBuf),
    /// The response signing certificate could not be read.
    #[error("{path}: {cause}")]
    SigningCertificate {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a source: the message says it once).
        cause: Box<attest::TrustError>,
    },
    /// The signing key and certificate cannot sign responses enclaves accept.
    #[error("the signing key and certificate ({key}, {certificate}): {cause}")]
    Signer {
        /// The key (its file or its label in the token).
        key: String,
        /// The certificate file.
        certificate: PathBuf,
        /// Why (in the message, not a source: the message says it once).
        cause: Box<sealing::release::ReleaseError>,
    },
}

/// Open the configured key store. The software store warns that it is not an HSM, every time.
pub fn open_key_store(config: &Config) -> Result<Arc<dyn KeyStore>, OpenError> {
    Ok(open_key_stores(config)?.0)
}

/// The key store, and the PKCS#11 store itself when it is one (where token keys are).
pub type KeyStores = (Arc<dyn KeyStore>, Option<Arc<Pkcs11Store>>);

/// [`open_key_store`], and the PKCS#11 store itself when it is one (where token keys are).
pub fn open_key_stores(config: &Config) -> Result<KeyStores, OpenError> {
    if config.oaep_hash == OaepHash::Sha1 {
        tracing::warn!(
            "RSA-OAEP with SHA-1 is selected (key_store.oaep_hash = \"sha1\"): use it only with \
             an HSM that offers nothing else, such as SoftHSM2 2.6"
        );
    }
    match &config.key_store {
        KeyStoreConfig::Software {
            file,
            passphrase_file,
        } => {
            tracing::warn!(
                file = %file.display(),
                "SOFTWARE KEY STORE: this is not an HSM. The key-encryption key and, during each \
                 release, the model's data key are in this process's memory. Use a PKCS#11 HSM \
                 in production"
            );
            let passphrase = keystore::software_passphrase(passphrase_file.as_ref())?;
            Ok((Arc::new(SoftwareStore::open(file, &passphrase)?), None))
        }
        KeyStoreConfig::Pkcs11 { .. } => {
            let (pkcs11, pin) = pkcs11_settings(config)?;
            let store = Arc::new(Pkcs11Store::open(pkcs11, &pin)?);
            Ok((store.clone(), Some(store)))
        }
    }
}

/// The PKCS#11 settings and PIN of a `pkcs11` configuration.
pub fn pkcs11_settings(
    config: &Config,
) -> Result<(Pkcs11Config, zeroize::Zeroizing<String>), OpenError> {
    let KeyStoreConfig::Pkcs11 {
        module,
        token,
        kek_wrap,
        pin_file,
    } = &config.key_store
    else {
        return Err(OpenError::NotPkcs11);
    };
    let bytes = match pin_file {
        Some(path) => zeroize::Zeroizing::new(config::read_bounded(path, 1024)?),
        None => secrets::get("BROKER_PKCS11_PIN").ok_or(OpenError::NoPin)?,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| OpenError::PinNotText)?;
    let pin = zeroize::Zeroizing::new(text.trim_end().to_owned());
    Ok((
        Pkcs11Config {
            module: module.clone(),
            token: token.clone(),
            kek_label: config.kek_label.clone(),
            kek_wrap: *kek_wrap,
            sessions: config.workers,
        },
        pin,
    ))
}

/// The response signer: the configured key and certificate, checked against the configured
/// trust (a certificate enclaves would refuse stops the broker from starting).
pub fn open_signer(
    config: &Config,
    trust: &attest::ServiceTrust,
    now: Timestamp,
    token: Option<&Pkcs11Store>,
) -> Result<ResponseSigner, OpenError> {
    let certificate_error = |cause| OpenError::SigningCertificate {
        path: config.signing_certificate.clone(),
        cause: Box::new(cause),
    };
    let certificate = attest::load_certificates(&config::read_bounded(
        &config.signing_certificate,
        config::MAX_SMALL_FILE,
    )?)
    .map_err(certificate_error)?
    .into_iter()
    .next()
    .ok_or_else(|| certificate_error(attest::TrustError::NoCertificate))?;
    let signer_error = |cause| OpenError::Signer {
        key: config.signing_key.describe(),
        certificate: config.signing_certificate.clone(),
        cause: Box::new(cause),
    };
    match &config.signing_key {
        ServiceKey::File(path) => {
            let key_pem =
                zeroize::Zeroizing::new(config::read_bounded(path, config::MAX_SMALL_FILE)?);
            // The decoded key is wiped when dropped, like the PEM it came from.
            let key = zeroize::Zeroizing::new(
                PrivatePkcs8KeyDer::from_pem_slice(&key_pem)
                    .map_err(|_| OpenError::SigningKey(path.clone()))?,
            );
            ResponseSigner::new(key.secret_pkcs8_der(), certificate.to_vec(), trust, now)
                .map_err(signer_error)
        }
        ServiceKey::Token(label) => {
            let token = token.ok_or(OpenError::NotPkcs11)?;
            let key = token
                .signing_key(label, SigningKeyKind::P384)
                .map_err(|e| OpenError::TokenKey(format!("signing.token_key: {e}")))?;
            ResponseSigner::external(Box::new(key), certificate.to_vec(), trust, now)
                .map_err(signer_error)
        }
    }
}

/// The log's signer: its key from the file, or from the token (`token`, the key store's).
pub fn open_log_signer(
    config: &Config,
    token: Option<&Pkcs11Store>,
) -> Result<proofs::NoteSigner, OpenError> {
    let signer = match &config.log_key {
        ServiceKey::File(path) => state::read_log_key(path)?,
        ServiceKey::Token(label) => {
            let token = token.ok_or(OpenError::NotPkcs11)?;
            let key = token
                .signing_key(label, SigningKeyKind::Ed25519)
                .map_err(|e| OpenError::TokenKey(format!("log.token_key: {e}")))?;
            let public: [u8; 32] = key
                .public_key()
                .try_into()
                .map_err(|_| OpenError::TokenKey("log.token_key: not an Ed25519 key".into()))?;
            let signer = proofs::NoteSigner::external(&config.log_origin, public, Box::new(key))
                .map_err(|e| OpenError::TokenKey(format!("log.token_key: {e}")))?;
            // A probe: the token signs with the key its public half names (every signature is
            // verified under it), before any checkpoint depends on it.
            signer
                .sign("key probe\n")
                .map_err(|e| OpenError::TokenKey(format!("log.token_key: {e}")))?;
            signer
        }
    };
    if signer.name() != config.log_origin {
        return Err(OpenError::TokenKey(format!(
            "{} is the key of log {:?}, but log.origin is {:?}",
            config.log_key.describe(),
            signer.name(),
            config.log_origin
        )));
    }
    Ok(signer)
}

/// Announce, at every start, the service keys that are files on this host.
pub fn announce_file_keys(config: &Config) {
    for (what, key) in [("response", &config.signing_key), ("log", &config.log_key)] {
        if let ServiceKey::File(path) = key {
            tracing::warn!(
                file = %path.display(),
                "the {what} signing key is a FILE on this host: whoever reads it can sign as \
                 the broker. Keep it in the HSM (`token_key`) in production"
            );
        }
    }
}

/// Adopt `policy` at `now`: if it differs from the one last adopted, its version must be higher,
/// and a `policy-change` entry is logged before it takes effect.
pub fn adopt_policy(
    policy: &ReleasePolicy,
    state: &StateDir,
    ledger: &Ledger,
    now: Timestamp,
    approvers: &[String],
) -> Result<Option<u64>, OpenError> {
    let approved = Approved {
        approvers: approvers.to_vec(),
        approvals: Vec::new(),
        rule: None,
    };
    let sha384 = data_encoding::HEXLOWER.encode(&policy.sha384);
    let previous = state.policy_state()?;
    if let Some(previous) = &previous {
        if previous.sha384 == sha384 {
            return Ok(None);
        }
        if policy.version <= previous.version {
            return Err(OpenError::PolicyVersion {
                adopted: previous.sha384.get(..16).unwrap_or_default().to_owned(),
                version: previous.version,
            });
        }
    }
    log_policy_change(policy, state, ledger, now, approved).map(Some)
}

/// Who approved a policy change, with the approvals that count and the rule they met.
#[derive(Debug, Default)]
pub struct Approved {
    /// The approvers' names.
    pub approvers: Vec<String>,
    /// The approvals, as their bytes.
    pub approvals: Vec<Vec<u8>>,
    /// The rule in force.
    pub rule: Option<attest::approval::ApprovalRule>,
}

/// Log a `policy-change` entry for `policy` (with its approvals and the rule), then keep its
/// bytes and record it in the state directory. Always appends: whether a change happened is the
/// caller's judgement, made against the log.
pub fn log_policy_change(
    policy: &ReleasePolicy,
    state: &StateDir,
    ledger: &Ledger,
    now: Timestamp,
    approved: Approved,
) -> Result<u64, OpenError> {
    // The bytes first: the log never names a policy whose bytes were not kept.
    state.keep_policy_bytes(&policy.bytes)?;
    // The approvals that made it: `required` of them (the entry stays within its bound).
    let required = approved.rule.as_ref().map_or(0, |r| r.required);
    let mut approvals = approved.approvals;
    approvals.truncate(required.max(1));
    let index = ledger.append(Entry::PolicyChange(PolicyChange {
        time: now,
        policy_version: policy.version,
        policy_sha384: policy.sha384,
        models: policy.models.keys().map(ToString::to_string).collect(),
        approvers: approved.approvers,
        approvals,
        required: approved
            .rule
            .as_ref()
            .map(|r| u64::try_from(r.required).unwrap_or(u64::MAX)),
        eligible: approved.rule.map(|r| r.approvers).unwrap_or_default(),
    }))?;
    // From here the change has happened: the log says so. The record below is for the
    // commands' information.
    if let Err(e) = state.save_policy_state(&PolicyState {
        version: policy.version,
        sha384: data_encoding::HEXLOWER.encode(&policy.sha384),
        log_index: index,
    }) {
        tracing::error!(error = %e, "the adopted policy is logged but policy.json was not updated");
    }
    tracing::info!(
        version = policy.version,
        log_index = index,
        "release policy adopted and logged"
    );
    Ok(index)
}

/// What the log says about control: its last `policy-change` entry (index and entry) and every
/// revocation. The log, not the state directory, is what the broker's control decisions start
/// from: an edited state file cannot roll a policy back or forget a revocation.
#[derive(Debug, Default)]
pub struct Control {
    /// The last policy change.
    pub last_policy: Option<(u64, PolicyChange)>,
    /// Every revocation logged.
    pub revocations: Vec<revocation::Revoked>,
}

/// Read [`Control`] from the log (one pass over its entries).
pub fn read_control(ledger: &Ledger) -> Result<Control, StateError> {
    let mut control = Control::default();
    for index in 0..ledger.size()? {
        // An entry that does not decode could be a policy change or a revocation: stop rather
        // than decide without it.
        let entry = proofs::entry::LogEntry::decode(&ledger.entry(index)?)
            .map_err(|e| StateError::File(format!("log entry {index} does not decode: {e}")))?;
        match entry.entry() {
            Entry::PolicyChange(p) => control.last_policy = Some((index, p.clone())),
            Entry::Revocation(r) => control.revocations.push(revocation::Revoked {
                target: r.target,
                value: r.value.clone(),
                reason: r.reason.clone(),
                time: r.time,
                log_index: Some(index),
            }),
            _ => {}
        }
    }
    Ok(control)
}

/// With approvals, the policy in force, judged from the log's last `policy-change` entry:
/// - the policy file, if it is that entry's policy and the entry's approvals are valid under the
///   configured rule and roots (at the entry's time);
/// - else the policy file, if it is approved now, due, and of a higher version than the entry's
///   (it is then logged with its approvals);
/// - else the logged policy's bytes kept in the state directory, checked the same way;
/// - else, when the file is approved but its notice period is still running, no policy at all
///   (every release refused) until the serving broker adopts it;
/// - else an error naming what is missing. A policy whose logged approvals do not hold (one
///   adopted without approvals, or under a rule since changed) is never run.
fn policy_in_force(
    file: Result<ReleasePolicy, policy::PolicyError>,
    source: &approval::PolicySource,
    state: &StateDir,
    ledger: &Ledger,
    now: Timestamp,
    logged: Option<&(u64, PolicyChange)>,
) -> Result<ReleasePolicy, OpenError> {
    let check_logged = |policy: &ReleasePolicy, (index, entry): &(u64, PolicyChange)| {
        approval::check_logged(policy, &entry.approvals, source, entry.time).map_err(|why| {
            OpenError::NotApproved(format!(
                "in force per log entry {index} (version {}) without valid approvals under the \
                 configured rule: {why}",
                entry.policy_version
            ))
        })
    };
    if let (Some(last), Ok(file)) = (logged, &file)
        && last.1.policy_sha384 == file.sha384
    {
        check_logged(file, last)?;
        // Kept again if a crash lost the copy: the log names these bytes.
        if state.adopted_bytes(&file.sha384)?.is_none() {
            state.keep_policy_bytes(&file.bytes)?;
        }
        return Ok(file.clone());
    }
    // The notice of the policy in force applies to any change. Its kept bytes hold it; without
    // them, the longest notice is assumed (deleting them must not shorten it).
    let current_notice = match logged {
        Some((_, entry)) => state
            .adopted_bytes(&entry.policy_sha384)
            .ok()
            .flatten()
            .and_then(|b| ReleasePolicy::parse(&b).ok())
            .map_or(policy::MAX_NOTICE, |p| p.notice),
        None => std::time::Duration::ZERO,
    };
    let first_seen = approval::FirstSeen::default();
    let mut waiting_for_notice = false;
    let waiting = match file {
        Err(e) => format!("cannot be read: {e}"),
        Ok(file) => {
            let version = file.version;
            let judged = match logged {
                Some((_, entry)) if version <= entry.policy_version => {
                    Ok(approval::Verdict::NotApproved(format!(
                        "it is not above the logged version {}",
                        entry.policy_version
                    )))
                }
                _ => approval::judge(file, source, now, &first_seen, current_notice),
            };
            match judged {
                Ok(approval::Verdict::Adopt {
                    policy,
                    approvers,
                    approvals,
                }) => {
                    tracing::warn!(
                        version = policy.version,
                        approvers = %approvers.join(", "),
                        "an approved release policy takes effect"
                    );
                    let approved = Approved {
                        approvers,
                        approvals,
                        rule: Some(source.approval.rule.clone()),
                    };
                    log_policy_change(&policy, state, ledger, now, approved)?;
                    return Ok(policy);
                }
                Ok(approval::Verdict::Wait { until, .. }) => {
                    waiting_for_notice = true;
                    format!("version {version} is approved and may take effect at {until}")
                }
                Ok(approval::Verdict::NotApproved(summary)) => {
                    format!("version {version} is not approved: {summary}")
                }
                Err(e) => format!("version {version} cannot be judged: {e}"),
            }
        }
    };
    let kept = match logged {
        Some(last) => state
            .adopted_bytes(&last.1.policy_sha384)?
            .map(|b| (last, b)),
        None => None,
    };
    match kept {
        Some((last, bytes)) => {
            let policy = ReleasePolicy::parse(&bytes)?;
            check_logged(&policy, last)?;
            tracing::warn!(
                version_in_force = policy.version,
                "the policy file {}: {waiting}; the policy in force stays",
                source.path.display()
            );
            Ok(policy)
        }
        None if waiting_for_notice => {
            tracing::warn!(
                "the policy file {}: {waiting}; until then no policy is in force and every \
                 release is refused",
                source.path.display()
            );
            let floor = logged.map_or(0, |(_, entry)| entry.policy_version);
            Ok(ReleasePolicy::none(floor, current_notice))
        }
        None => Err(OpenError::NotApproved(match logged {
            Some((index, _)) => format!(
                "{waiting}; and the bytes of the policy in force (log entry {index}) are not in \
                 the state directory"
            ),
            None => waiting,
        })),
    }
}

/// Everything `broker serve` needs, opened and checked: key store, trust, signer, log, policy.
/// `clock` is where the broker reads the time ([`Timestamp::now`] in service).
pub fn open(config: &Config, clock: Clock) -> Result<Broker, OpenError> {
    let trust = config.document_trust()?;
    if trust.trusts_aws_root_directly() {
        tracing::warn!(
            "trust.aws_root is set: documents under AWS's Nitro root are accepted directly, so \
             withdrawing or letting expire the national root's cross-certificate does not stop \
             key releases"
        );
    }
    announce_file_keys(config);
    let (key_store, token) = open_key_stores(config)?;
    let signer = open_signer(config, &config.service_trust()?, clock(), token.as_deref())?;
    let log_signer = open_log_signer(config, token.as_deref())?;
    let state = StateDir::open(&config.state_dir)?;
    let ledger = Ledger::open(&state, log_signer).map_err(|e| {
        if Ledger::is_locked(&e) {
            OpenError::Locked(e)
        } else {
            OpenError::State(e)
        }
    })?;
    let ledger = match &config.witnesses {
        Some(witnesses) => {
            tracing::info!(
                required = witnesses.required,
                witnesses = ?witnesses.open().names(),
                "every release and renewal waits for the witnesses' cosignatures"
            );
            ledger.with_witnesses(Some(witnesses.open()))
        }
        None => {
            tracing::warn!(
                "no [witnesses]: checkpoints are signed by the log key alone, so whoever holds \
                 it can show one party a fork of the log; enclaves that require witnesses refuse \
                 these releases"
            );
            ledger
        }
    };
    let file = ReleasePolicy::load(&config.policy);
    let control = read_control(&ledger)?;
    let policy_source = match &config.approval {
        None => {
            tracing::warn!(
                "DANGEROUS: dangerous_single_administrator is set: the release policy takes \
                 effect as its file says, with no approval; whoever edits the file decides which \
                 enclaves get keys. Configure [approval] (k of n approvers) in production"
            );
            adopt_policy(
                file.as_ref().map_err(Clone::clone)?,
                &state,
                &ledger,
                clock(),
                &[],
            )?;
            None
        }
        Some(approval) => Some(approval::PolicySource {
            path: config.policy.clone(),
            approval: approval.clone(),
            trust: config.service_trust()?,
        }),
    };
    let policy = match &policy_source {
        None => file?,
        Some(source) => policy_in_force(
            file,
            source,
            &state,
            &ledger,
            clock(),
            control.last_policy.as_ref(),
        )?,
    };
    Ok(Broker::new(Parts {
        key_store,
        verifier: Verifier::new(trust),
        policy,
        policy_source,
        logged_revocations: control.revocations,
        state,
        ledger,
        signer,
        nonce_lifetime: config.nonce_lifetime,
        max_pending: config.max_pending,
        max_pending_per_peer: config.max_pending_per_peer,
        oaep: config.oaep_hash,
        clock,
    }))
}
