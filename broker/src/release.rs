//! Deciding a key release: the nonce, the model's record and policy, the attestation document,
//! the HSM, the log, and the signed response, in that order. Every decision, release or denial,
//! is in the log (synced) before its answer exists.
//!
//! A release grants the lease the model's policy sets. A renewal is decided like a release, on a
//! fresh document, against the policy in force and the revocations recorded now, for the key the
//! enclave already holds: no key leaves the key store, and the log records a `lease-renewal`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest::{
    AuthenticDocument, Nonce, Policy, Timestamp, VerifiedDocument, Verifier, VerifyError,
};
use proofs::entry::{DenialSummary, Entry, KeyRelease, LogEntry, ModelSealed, Outcome};
use sealing::Id;
use sealing::release::{
    Message, NONCE_LEN, OaepHash, ReleaseClaims, RenewalClaims, ResponseSigner, renewal_user_data,
    request_user_data, sha384,
};
use subtle::ConstantTimeEq;

use crate::keystore::{KeyStore, KeyStoreError};
use crate::policy::ReleasePolicy;
use crate::revocation::Revoked;
use crate::state::{Ledger, ModelRecord, StateDir, StateError};

/// Where the time of a release went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Verifying the attestation document.
    pub verify: Duration,
    /// The key store's unwrap and wrap.
    pub key_store: Duration,
    /// Appending to the log, signing a checkpoint, proving inclusion.
    pub log: Duration,
    /// Signing the response.
    pub sign: Duration,
}

/// Outstanding challenge nonces: random, single use, expiring; bounded in all and per peer.
#[derive(Debug)]
struct Nonces {
    pending: Mutex<HashMap<[u8; NONCE_LEN], Pending>>,
    lifetime: Duration,
    max: usize,
    max_per_peer: usize,
}

#[derive(Debug)]
struct Pending {
    model: Id,
    peer: IpAddr,
    issued: Instant,
    used: bool,
}

/// Who a peer is for the per-peer bounds: its IPv4 address, or the /64 of its IPv6 address (one
/// host is given a whole /64 and could otherwise spray addresses across it).
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                for byte in octets.iter_mut().skip(8) {
                    *byte = 0;
                }
                IpAddr::V6(std::net::Ipv6Addr::from(octets))
            }
        },
    }
}

/// Why no nonce was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Busy {
    /// This peer holds its share of the table.
    Peer,
    /// The table is full.
    Table,
}

impl Nonces {
    /// A fresh nonce for `model`, asked for by `peer`; refused when the peer holds
    /// `max_per_peer` nonces, used or not, from the last two lifetimes, or the table is full.
    /// One peer can therefore hold at most its share, whatever rate it asks at.
    fn issue(&self, model: &Id, peer: IpAddr) -> Result<[u8; NONCE_LEN], Busy> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Busy::Table)?;
        let mut pending = self.pending.lock().map_err(|_| Busy::Table)?;
        // Used and expired nonces are kept for a second lifetime so that a late or replayed
        // answer is refused with its precise reason; after that, as unknown.
        let keep = self.lifetime.saturating_mul(2);
        pending.retain(|_, p| p.issued.elapsed() < keep);
        let peer = peer_key(peer);
        if pending.values().filter(|p| p.peer == peer).count() >= self.max_per_peer {
            return Err(Busy::Peer);
        }
        if pending.len() >= self.max {
            return Err(Busy::Table);
        }
        pending.insert(
            nonce,
            Pending {
                model: model.clone(),
                peer,
                issued: Instant::now(),
                used: false,
            },
        );
        Ok(nonce)
    }

    /// Spend `nonce` for `model`: it is used from now on, whatever the outcome.
    fn take(&self, nonce: &[u8; NONCE_LEN], model: &Id) -> Result<(), Denial> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| Denial::new("internal", "the nonce table is poisoned"))?;
        let Some(p) = pending.get_mut(nonce) else {
            return Err(Denial::new(
                "nonce_unknown",
                "this broker did not issue the nonce, or it expired long ago",
            ));
        };
        if p.used {
            return Err(Denial::new("nonce_replayed", "the nonce was already used"));
        }
        p.used = true;
        if p.issued.elapsed() > self.lifetime {
            return Err(Denial::new(
                "nonce_expired",
                format!(
                    "the nonce expired: challenges must be answered within {}",
                    attest::format_duration(self.lifetime)
                ),
            ));
        }
        if &p.model != model {
            return Err(Denial::new(
                "nonce_model_mismatch",
                "the nonce was issued for another model",
            ));
        }
        Ok(())
    }
}

/// A refusal: a stable reason and an explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// `pcr_mismatch`, `nonce_replayed`, …
    pub reason: String,
    /// For people.
    pub message: String,
}

/// The denial for a decision the log could not prove: not witnessed, or not logged.
fn unproven(error: &StateError, what: &str) -> Denial {
    if let StateError::NotWitnessed(e) = error {
        tracing::error!(error = %e, "the log's witnesses did not cosign the {what}; nothing is sent");
        return Denial::new(
            "not_witnessed",
            format!(
                "the {what} is logged, but too few witnesses cosigned the checkpoint ({} of {})",
                e.cosigned, e.required
            ),
        );
    }
    tracing::error!(error = %error, "the log refused a {what}; nothing is sent");
    Denial::new("log_unavailable", format!("the {what} could not be logged"))
}

impl Denial {
    fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// How many denials that need no authentic document a peer may have logged one by one per
/// [`DENIAL_WINDOW`]; beyond that they are counted, and the counts logged as summaries.
pub const DENIALS_LOGGED_PER_PEER: u32 = 10;
/// The window [`DENIALS_LOGGED_PER_PEER`] applies to, and how often counts are flushed.
pub const DENIAL_WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered for the budget; beyond this, new peers' denials are counted at once.
const MAX_PEERS_TRACKED: usize = 4096;

/// Bounds what an unauthenticated peer can add to the log: each peer's denials (those that come
/// without an authentic document) are logged one by one up to a budget per window, then counted
/// by reason; the counts become `denial-summary` entries when flushed.
#[derive(Debug, Default)]
struct DenialBudget {
    peers: HashMap<IpAddr, (Instant, u32)>,
    counted: BTreeMap<String, u64>,
    since: Option<Timestamp>,
}

impl DenialBudget {
    /// Whether `peer` may have one more denial logged individually now.
    fn allow(&mut self, peer: IpAddr) -> bool {
        let peer = peer_key(peer);
        let now = Instant::now();
        if self.peers.len() >= MAX_PEERS_TRACKED {
            self.peers
                .retain(|_, (start, _)| now.duration_since(*start) < DENIAL_WINDOW);
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS_TRACKED {
            return false;
        }
        let (start, used) = self.peers.entry(peer).or_insert((now, 0));
        if now.duration_since(*start) >= DENIAL_WINDOW {
            *start = now;
            *used = 0;
        }
        if *used >= DENIALS_LOGGED_PER_PEER {
            return false;
        }
        *used += 1;
        true
    }

    fn count(&mut self, reason: &str, now: Timestamp) {
        self.since.get_or_insert(now);
        *self.counted.entry(reason.to_owned()).or_insert(0) += 1;
    }

    /// The summaries to log, and the budget emptied of them.
    fn take(&mut self, time: Timestamp) -> Vec<Entry> {
        let Some(since) = self.since.take() else {
            return Vec::new();
        };
        std::mem::take(&mut self.counted)
            .into_iter()
            .map(|(reason, count)| {
                Entry::DenialSummary(DenialSummary {
                    time,
                    since,
                    reason,
                    count,
                })
            })
            .collect()
    }
}

/// What the broker knows about a request when it decides: recorded in the log entry.
#[derive(Default)]
struct Evidence {
    key_id: Option<Id>,
    document_sha384: Option<[u8; 48]>,
    nonce: Option<Vec<u8>>,
    /// What a genuine document attested, whether or not the policy accepted it.
    attested: Option<AuthenticDocument>,
    /// The document passed the model's policy with this broker's nonce and binds this very
    /// request (its `user_data`): an enclave of the pinned image asked for this key. Only such
    /// decisions are logged whatever the peer's budget; a genuine document alone proves little,
    /// since any client can have an enclave attest over a nonce of its choosing.
    bound: bool,
    /// A renewal's decision (logged as `lease-renewal`), not a release's.
    renewal: bool,
}

/// Everything a release needs, shared by the workers.
pub struct Broker {
    key_store: Arc<dyn KeyStore>,
    verifier: Verifier,
    /// The policy in force: replaced when an approved change takes effect.
    policy: std::sync::RwLock<Arc<ReleasePolicy>>,
    /// Where approved changes come from, when the broker runs with approvals.
    policy_source: Option<crate::approval::PolicySource>,
    /// The last verdict on a pending policy file, so that it is reported once.
    policy_verdict: Mutex<Option<String>>,
    /// When a pending policy was first seen fully approved (its notice runs from then).
    policy_first_seen: crate::approval::FirstSeen,
    /// The revocations the log holds: they apply whatever the revocations file says.
    logged_revocations: Mutex<Vec<Revoked>>,
    /// Whether the loss of logged revocations from the file was reported.
    revocations_lost_reported: std::sync::atomic::AtomicBool,
    state: StateDir,
    ledger: Ledger,
    signer: ResponseSigner,
    nonces: Nonces,
    clock: Clock,
    oaep: OaepHash,
    sealing_logged: Mutex<()>,
    denials: Mutex<DenialBudget>,
    /// Per model id, its latest `model-sealed` entry (index, time); read from the log once.
    sealings: Mutex<Option<HashMap<String, (u64, Timestamp)>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("key_store", &self.key_store.kind())
            .field("policy_version", &self.policy().version)
            .finish_non_exhaustive()
    }
}

/// The parts a broker is made of.
pub struct Parts {
    /// The KEK's store.
    pub key_store: Arc<dyn KeyStore>,
    /// Verifies documents against the configured roots.
    pub verifier: Verifier,
    /// The release policy, already adopted (logged).
    pub policy: ReleasePolicy,
    /// Where approved policy changes come from (`None`: the policy changes only at a restart).
    pub policy_source: Option<crate::approval::PolicySource>,
    /// The revocations already in the log ([`crate::read_control`]).
    pub logged_revocations: Vec<Revoked>,
    /// The state directory.
    pub state: StateDir,
    /// The log.
    pub ledger: Ledger,
    /// The response key.
    pub signer: ResponseSigner,
    /// How long a nonce lives.
    pub nonce_lifetime: Duration,
    /// How many nonces may be outstanding.
    pub max_pending: usize,
    /// How many of them one peer (source address) may hold.
    pub max_pending_per_peer: usize,
    /// The OAEP digest wrapped keys use.
    pub oaep: OaepHash,
    /// The time at which documents are verified and decisions logged: [`Timestamp::now`] in
    /// service, a fixed or moving time in tests. (Nonce lifetimes and denial windows are
    /// measured on the monotonic clock, which no wall-clock change can stretch.)
    pub clock: Clock,
}

/// Where the broker reads the time.
pub type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("key_store", &self.key_store.kind())
            .field("policy_version", &self.policy.version)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("max_pending", &self.max_pending)
            .field("max_pending_per_peer", &self.max_pending_per_peer)
            .field("oaep", &self.oaep)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Assemble a broker.
    pub fn new(parts: Parts) -> Self {
        Self {
            key_store: parts.key_store,
            verifier: parts.verifier,
            policy: std::sync::RwLock::new(Arc::new(parts.policy)),
            policy_source: parts.policy_source,
            policy_verdict: Mutex::new(None),
            policy_first_seen: crate::approval::FirstSeen::default(),
            logged_revocations: Mutex::new(parts.logged_revocations),
            revocations_lost_reported: std::sync::atomic::AtomicBool::new(false),
            state: parts.state,
            ledger: parts.ledger,
            signer: parts.signer,
            nonces: Nonces {
                pending: Mutex::new(HashMap::new()),
                lifetime: parts.nonce_lifetime,
                max: parts.max_pending,
                max_per_peer: parts.max_pending_per_peer,
            },
            oaep: parts.oaep,
            clock: parts.clock,
            sealing_logged: Mutex::new(()),
            denials: Mutex::new(DenialBudget::default()),
            sealings: Mutex::new(None),
        }
    }

    /// The release policy in force now.
    pub fn policy(&self) -> Arc<ReleasePolicy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adopt an approved policy change whose time has come: the server calls this every
    /// [`crate::revocation::POLL`]. A change that is not approved, or not yet due, is reported
    /// once and the policy in force stays.
    pub fn refresh_policy(&self) {
        let Some(source) = &self.policy_source else {
            return;
        };
        let current = self.policy();
        let verdict = match source.judge_file(&current, (self.clock)(), &self.policy_first_seen) {
            Ok(None) => return,
            Ok(Some(crate::approval::Verdict::Adopt {
                policy,
                approvers,
                approvals,
            })) => {
                let approved = crate::Approved {
                    approvers: approvers.clone(),
                    approvals,
                    rule: Some(source.approval.rule.clone()),
                };
                match crate::log_policy_change(
                    &policy,
                    &self.state,
                    &self.ledger,
                    (self.clock)(),
                    approved,
                ) {
                    Ok(_) => {
                        tracing::warn!(
                            version = policy.version,
                            approvers = %approvers.join(", "),
                            "an approved release policy takes effect"
                        );
                        *self
                            .policy
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
                        return;
                    }
                    Err(e) => format!("the approved policy could not be adopted: {e}"),
                }
            }
            Ok(Some(crate::approval::Verdict::Wait { until, .. })) => {
                format!("the approved policy takes effect at {until} (its notice period)")
            }
            Ok(Some(crate::approval::Verdict::NotApproved(summary))) => {
                format!("the policy file changed but is not approved: {summary}")
            }
            Err(e) => format!("the policy file cannot be judged: {e}"),
        };
        let mut last = self
            .policy_verdict
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() != Some(verdict.as_str()) {
            tracing::warn!(version_in_force = current.version, "{verdict}");
            *last = Some(verdict);
        }
    }

    /// The key store's kind.
    pub fn key_store_kind(&self) -> &'static str {
        self.key_store.kind()
    }

    /// Answer a hello from `peer`: a challenge for a model this broker can release, else a
    /// logged denial.
    pub fn hello(&self, model: &Id, peer: IpAddr) -> Message {
        let known = self.policy().models.contains_key(model)
            && matches!(self.state.record(model), Ok(Some(_)));
        if !known {
            let denial = Denial::new(
                "unknown_model",
                format!("no sealed model {model} with a release policy"),
            );
            return self.deny(model, peer, Evidence::default(), denial);
        }
        match self.nonces.issue(model, peer) {
            Ok(nonce) => Message::Challenge {
                nonce,
                expires_in_ms: u64::try_from(self.nonces.lifetime.as_millis()).unwrap_or(u64::MAX),
            },
            Err(busy) => {
                let message = match busy {
                    Busy::Peer => format!(
                        "this peer holds {} challenges from the last {}; retry later",
                        self.nonces.max_per_peer,
                        attest::format_duration(self.nonces.lifetime.saturating_mul(2))
                    ),
                    Busy::Table => "too many challenges outstanding; retry later".to_owned(),
                };
                self.deny(
                    model,
                    peer,
                    Evidence::default(),
                    Denial::new("busy", message),
                )
            }
        }
    }

    /// Refuse a connection that broke the protocol (`expected` was not what came), logged like
    /// every denial. `model` is the hello's, if one came.
    pub fn deny_protocol(&self, model: Option<&Id>, peer: IpAddr, message: String) -> Message {
        let unknown = Id::new("-");
        match model.cloned().or_else(|| unknown.ok()) {
            Some(model) => self.deny(
                &model,
                peer,
                Evidence::default(),
                Denial::new("protocol", message),
            ),
            None => Message::Denied {
                reason: "protocol".into(),
                message,
            },
        }
    }

    /// Log the denials counted since the last flush as `denial-summary` entries (one per
    /// reason). The server calls this every [`DENIAL_WINDOW`] and when it stops.
    pub fn flush_denials(&self) {
        let entries = match self.denials.lock() {
            Ok(mut budget) => budget.take((self.clock)()),
            Err(_) => return,
        };
        for entry in entries {
            if let Entry::DenialSummary(d) = &entry {
                tracing::warn!(reason = %d.reason, count = d.count, "denials counted, not logged one by one");
            }
            if let Err(e) = self.ledger.append(entry) {
                tracing::error!(error = %e, "could not log a denial summary");
            }
        }
    }

    /// Decide an attest message from `peer` for `model` (the model of the connection's hello).
    pub fn attest(
        &self,
        model: &Id,
        nonce: &[u8; NONCE_LEN],
        document: &[u8],
        peer: IpAddr,
    ) -> (Message, Timings) {
        let mut timings = Timings::default();
        let mut evidence = Evidence {
            nonce: Some(nonce.to_vec()),
            document_sha384: Some(sha384(document)),
            ..Evidence::default()
        };
        match self.decide(model, nonce, document, &mut evidence, &mut timings) {
            Ok(message) => (message, timings),
            Err(denial) => {
                let started = Instant::now();
                let message = self.deny(model, peer, evidence, denial);
                timings.log += started.elapsed();
                (message, timings)
            }
        }
    }

    fn decide(
        &self,
        model: &Id,
        nonce: &[u8; NONCE_LEN],
        document: &[u8],
        evidence: &mut Evidence,
        timings: &mut Timings,
    ) -> Result<Message, Denial> {
        self.nonces.take(nonce, model)?;
        let unknown = || Denial::new("unknown_model", format!("no sealed model {model}"));
        let record = self
            .state
            .record(model)
            .map_err(|e| Denial::new("internal", e.to_string()))?
            .ok_or_else(unknown)?;
        evidence.key_id = Some(record.key_id.clone());
        let in_force = self.policy();
        let policy = in_force.models.get(model).ok_or_else(unknown)?;
        let revocations = self.revocations()?;
        check_revoked(&revocations, model, None)?;

        let started = Instant::now();
        let verified = self.verify(policy, nonce, document, evidence);
        timings.verify = started.elapsed();
        let verified = verified?;
        check_revoked(&revocations, model, evidence.attested.as_ref())?;
        // From here every denial is logged with what the document attested.
        let expected = request_user_data(model, nonce);
        let user_data_ok = verified
            .user_data()
            .is_some_and(|u| bool::from(u.ct_eq(&expected[..])));
        let public_key = verified.public_key().map(<[u8]>::to_vec);
        if !user_data_ok {
            return Err(Denial::new(
                "user_data_mismatch",
                "the document's user_data does not bind this request",
            ));
        }
        evidence.bound = true;
        let public_key = public_key
            .ok_or_else(|| Denial::new("public_key_missing", "the document binds no public key"))?;

        // The key store's work (the record's tag) only for a request a pinned enclave made.
        self.check_record_tag(&record)?;
        self.check_sealing_logged(&record)?;
        let started = Instant::now();
        let wrapped = self
            .key_store
            .rewrap(&record.wrapped_key, &public_key, self.oaep)
            .map_err(|e| match e {
                KeyStoreError::Recipient(m) => Denial::new("public_key_unacceptable", m),
                other => {
                    tracing::error!(error = %other, "the key store failed");
                    Denial::new("key_store_error", "the key store could not release the key")
                }
            });
        timings.key_store = started.elapsed();
        let wrapped = wrapped?;

        let lease_ms = lease_ms(in_force.lease(model));
        let started = Instant::now();
        let entry = release_entry(
            (self.clock)(),
            (Outcome::Released, "ok", Some(lease_ms)),
            model,
            &record.key_id,
            in_force.version,
            evidence,
        );
        let proven = self.ledger.append_proven(entry);
        timings.log = started.elapsed();
        let proven = proven.map_err(|e| unproven(&e, "release"))?;

        let started = Instant::now();
        let claims = ReleaseClaims {
            nonce: *nonce,
            model_id: model.clone(),
            key_id: record.key_id.clone(),
            model_digest: record.model_sha384,
            model_len: record.model_len,
            policy_version: in_force.version,
            document_sha384: sha384(document),
            wrapped_key: wrapped,
            oaep_hash: self.oaep,
            log_index: proven.index,
            log_entry: proven.entry,
            inclusion_proof: proven.proof,
            lease_ms,
        };
        let response = self.signer.sign(&claims);
        timings.sign = started.elapsed();
        let response = response.map_err(|e| Denial::new("internal", e.to_string()))?;
        tracing::info!(
            model = %model,
            key_id = %record.key_id,
            log_index = proven.index,
            lease_ms,
            module_id = evidence.attested.as_ref().map(|v| v.module_id()),
            "key released"
        );
        Ok(Message::Release {
            response,
            certificate: self.signer.certificate().to_vec(),
        })
    }

    /// Decide a renewal from `peer` of the lease on `key_id` of `model` (the model of the
    /// connection's hello): logged as a `lease-renewal`, granted or denied.
    pub fn renew(
        &self,
        model: &Id,
        nonce: &[u8; NONCE_LEN],
        key_id: &Id,
        document: &[u8],
        peer: IpAddr,
    ) -> (Message, Timings) {
        let mut timings = Timings::default();
        let mut evidence = Evidence {
            nonce: Some(nonce.to_vec()),
            document_sha384: Some(sha384(document)),
            key_id: Some(key_id.clone()),
            renewal: true,
            ..Evidence::default()
        };
        match self.decide_renewal(model, nonce, key_id, document, &mut evidence, &mut timings) {
            Ok(message) => (message, timings),
            Err(denial) => {
                let started = Instant::now();
                let message = self.deny(model, peer, evidence, denial);
                timings.log += started.elapsed();
                (message, timings)
            }
        }
    }

    fn decide_renewal(
        &self,
        model: &Id,
        nonce: &[u8; NONCE_LEN],
        key_id: &Id,
        document: &[u8],
        evidence: &mut Evidence,
        timings: &mut Timings,
    ) -> Result<Message, Denial> {
        self.nonces.take(nonce, model)?;
        let unknown = || Denial::new("unknown_model", format!("no sealed model {model}"));
        let record = self
            .state
            .record(model)
            .map_err(|e| Denial::new("internal", e.to_string()))?
            .ok_or_else(unknown)?;
        let in_force = self.policy();
        let policy = in_force.models.get(model).ok_or_else(unknown)?;
        let revocations = self.revocations()?;
        check_revoked(&revocations, model, None)?;

        let started = Instant::now();
        let verified = self.verify(policy, nonce, document, evidence);
        timings.verify = started.elapsed();
        let verified = verified?;
        check_revoked(&revocations, model, evidence.attested.as_ref())?;
        let expected = renewal_user_data(model, key_id, nonce);
        let user_data_ok = verified
            .user_data()
            .is_some_and(|u| bool::from(u.ct_eq(&expected[..])));
        if !user_data_ok {
            return Err(Denial::new(
                "user_data_mismatch",
                "the document's user_data does not bind this renewal",
            ));
        }
        evidence.bound = true;
        if &record.key_id != key_id {
            return Err(Denial::new(
                "key_superseded",
                format!(
                    "the model was sealed again, under {}: the key {key_id} is no longer renewed",
                    record.key_id
                ),
            ));
        }

        let lease_ms = lease_ms(in_force.lease(model));
        let started = Instant::now();
        let entry = release_entry(
            (self.clock)(),
            (Outcome::Released, "ok", Some(lease_ms)),
            model,
            key_id,
            in_force.version,
            evidence,
        );
        let proven = self.ledger.append_proven(entry);
        timings.log = started.elapsed();
        let proven = proven.map_err(|e| unproven(&e, "renewal"))?;
        let started = Instant::now();
        let claims = RenewalClaims {
            nonce: *nonce,
            model_id: model.clone(),
            key_id: key_id.clone(),
            policy_version: in_force.version,
            document_sha384: sha384(document),
            lease_ms,
            log_index: proven.index,
            log_entry: proven.entry,
            inclusion_proof: proven.proof,
        };
        let response = self.signer.sign_renewal(&claims);
        timings.sign = started.elapsed();
        let response = response.map_err(|e| Denial::new("internal", e.to_string()))?;
        tracing::info!(
            model = %model,
            key_id = %key_id,
            log_index = proven.index,
            lease_ms,
            module_id = evidence.attested.as_ref().map(|v| v.module_id()),
            "lease renewed"
        );
        Ok(Message::Renewed {
            response,
            certificate: self.signer.certificate().to_vec(),
        })
    }

    /// Every revocation recorded, each logged: those `broker revoke` recorded since are logged
    /// first. If they cannot be read or logged, nothing is released or renewed.
    fn revocations(&self) -> Result<Vec<Revoked>, Denial> {
        let mut list = self.state.revocations().map_err(|e| {
            tracing::error!(error = %e, "the revocations cannot be read; refusing every decision");
            Denial::new("internal", "the broker cannot read its revocations")
        })?;
        if !list.iter().all(|r| r.log_index.is_some()) {
            list = self.log_pending_revocations().map_err(|e| {
                tracing::error!(error = %e, "a revocation cannot be logged; refusing every decision");
                Denial::new("log_unavailable", "a revocation could not be logged")
            })?;
        }
        // What the log holds applies even if the file lost it (edited, deleted).
        let logged = self
            .logged_revocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_file: std::collections::HashSet<(proofs::entry::RevocationTarget, &str)> =
            list.iter().map(|r| (r.target, r.value.as_str())).collect();
        let missing: Vec<Revoked> = logged
            .iter()
            .filter(|r| !in_file.contains(&(r.target, r.value.as_str())))
            .cloned()
            .collect();
        drop(in_file);
        if !missing.is_empty()
            && !self
                .revocations_lost_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                missing = missing.len(),
                "logged revocations are missing from the revocations file; they still apply"
            );
        }
        list.extend(missing);
        Ok(list)
    }

    /// Log the revocations `broker revoke` recorded and this broker has not logged yet. The
    /// server calls this every [`crate::revocation::POLL`].
    pub fn log_revocations(&self) {
        match self.state.revocations() {
            Ok(list) if list.iter().all(|r| r.log_index.is_some()) => {}
            _ => {
                if let Err(e) = self.log_pending_revocations() {
                    tracing::error!(error = %e, "revocations cannot be read or logged");
                }
            }
        }
    }

    fn log_pending_revocations(&self) -> Result<Vec<Revoked>, StateError> {
        self.state.update_revocations(|list| {
            let mut changed = false;
            for r in list.iter_mut().filter(|r| r.log_index.is_none()) {
                // A crash between the append and the file's update logs it again at the next
                // look: a revocation is logged at least once.
                let index = self.ledger.append(r.entry())?;
                r.log_index = Some(index);
                changed = true;
                self.logged_revocations
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(r.clone());
                tracing::warn!(
                    target = r.target.as_str(),
                    value = %r.value,
                    reason = %r.reason,
                    log_index = index,
                    "revocation logged: no release or renewal for it from now on"
                );
            }
            Ok((changed, list.clone()))
        })
    }

    /// Verify the document under the model's policy and the nonce, in two steps: authentic
    /// (chain and signature), then accepted (the policy). What an authentic document attests is
    /// kept as evidence, so that the log records what it measured even when the policy refuses
    /// it.
    fn verify(
        &self,
        policy: &Policy,
        nonce: &[u8; NONCE_LEN],
        document: &[u8],
        evidence: &mut Evidence,
    ) -> Result<VerifiedDocument, Denial> {
        let refused = |e: VerifyError| Denial::new(e.kind(), e.to_string());
        let parsed = attest::parse(document).map_err(|e| match e {
            // An emulated NSM's document: named as such in the log, never accepted.
            attest::ParseError::Unsigned { .. } => Denial::new("document_unsigned", e.to_string()),
            _ => Denial::new("document_malformed", e.to_string()),
        })?;
        let nonce =
            Nonce::try_from(&nonce[..]).map_err(|e| Denial::new("internal", e.to_string()))?;
        let authentic = self
            .verifier
            .authenticate(&parsed, (self.clock)())
            .map_err(refused)?;
        let accepted = authentic.accept(&policy.clone().expect_nonce(nonce));
        evidence.attested = Some(authentic);
        accepted.map_err(refused)
    }

    /// The record must carry the key store's tag: only a holder of the key store makes one.
    fn check_record_tag(&self, record: &ModelRecord) -> Result<(), Denial> {
        let expected = self
            .key_store
            .record_tag(&record.authenticated_bytes())
            .map_err(|e| {
                tracing::error!(error = %e, "the key store could not tag a record");
                Denial::new(
                    "key_store_error",
                    "the key store could not check the model's record",
                )
            })?;
        if bool::from(expected.ct_eq(&record.tag)) {
            return Ok(());
        }
        tracing::error!(model = %record.model_id, "a model record's tag does not verify");
        Err(Denial::new(
            "record_mismatch",
            "the broker's record of this model is not the one its key store sealed",
        ))
    }

    /// The record must be the one the log's `model-sealed` entry describes, wrapped key
    /// included: a record whose wrapped key was moved from another model, or edited, is refused.
    /// A record sealed while another process held the log is logged first, exactly as it was
    /// read for this decision.
    fn check_sealing_logged(&self, record: &ModelRecord) -> Result<(), Denial> {
        let failed = |e: StateError| {
            tracing::error!(error = %e, "could not check or log a sealed model");
            Denial::new(
                "log_unavailable",
                "the model's sealing could not be checked",
            )
        };
        let tampered = |why: &str| {
            tracing::error!(model = %record.model_id, why, "a model record does not match the log");
            Denial::new(
                "record_mismatch",
                "the broker's record of this model does not match its sealing in the log",
            )
        };
        let latest = self.latest_sealing(&record.model_id).map_err(failed)?;
        if let Some(index) = record.log_index {
            // Only the model's latest sealing: an older record of the same model, restored,
            // would release an older key and model.
            if latest.map(|(i, _)| i) != Some(index) {
                return Err(tampered("not the model's latest sealing in the log"));
            }
            let bytes = self.ledger.entry(index).map_err(failed)?;
            let entry = LogEntry::decode(&bytes).map_err(|_| tampered("not an entry"))?;
            return match entry.entry() {
                Entry::ModelSealed(logged) if *logged == sealed(record) => Ok(()),
                Entry::ModelSealed(_) => Err(tampered("the logged sealing differs")),
                _ => Err(tampered("the index is not a model-sealed entry")),
            };
        }
        // Not logged yet: it must be newer than every sealing of the model the log holds.
        if latest.is_some_and(|(_, time)| record.sealed_at <= time) {
            return Err(tampered("older than the model's latest sealing in the log"));
        }
        let _one_at_a_time = self.sealing_logged.lock();
        // Another worker may have logged it meanwhile, from the same file: it must still be the
        // record this decision read.
        let mut current = match self.state.record(&record.model_id).map_err(failed)? {
            Some(current) => current,
            None => return Err(tampered("the record disappeared")),
        };
        let logged_meanwhile = current.log_index.take();
        if current != *record {
            return Err(tampered("the record changed while it was being decided"));
        }
        if let Some(index) = logged_meanwhile {
            current.log_index = Some(index);
            return self.check_sealing_logged(&current);
        }
        let index = self.ledger.append(sealed_entry(record)).map_err(failed)?;
        if let Ok(mut sealings) = self.sealings.lock()
            && let Some(map) = sealings.as_mut()
        {
            map.insert(record.model_id.to_string(), (index, record.sealed_at));
        }
        current.log_index = Some(index);
        self.state.save_record(&current).map_err(failed)?;
        Ok(())
    }

    /// The index and time of the latest `model-sealed` entry for `model`, from one scan of the
    /// log (on first use), kept up to date with the sealings this broker logs.
    fn latest_sealing(&self, model: &Id) -> Result<Option<(u64, Timestamp)>, StateError> {
        let mut sealings = self
            .sealings
            .lock()
            .map_err(|_| StateError::File("the sealing index's lock is poisoned".into()))?;
        if sealings.is_none() {
            let mut map = HashMap::new();
            for index in 0..self.ledger.size()? {
                if let Ok(entry) = LogEntry::decode(&self.ledger.entry(index)?)
                    && let Entry::ModelSealed(m) = entry.entry()
                {
                    map.insert(m.model_id.clone(), (index, m.time));
                }
            }
            *sealings = Some(map);
        }
        Ok(sealings
            .as_ref()
            .and_then(|map| map.get(model.as_str()).copied()))
    }

    /// Log a denial, then answer it. If the log fails the answer says so and nothing else.
    /// A denial made on a document that binds this request ([`Evidence::bound`]) is always
    /// logged on its own; any other is logged on its own within the peer's budget (with
    /// whatever evidence it had), and counted otherwise (see [`DenialBudget`]).
    fn deny(&self, model: &Id, peer: IpAddr, evidence: Evidence, denial: Denial) -> Message {
        if !evidence.bound {
            let logged_alone = match self.denials.lock() {
                Ok(mut budget) => {
                    let allowed = budget.allow(peer);
                    if !allowed {
                        budget.count(&denial.reason, (self.clock)());
                    }
                    allowed
                }
                Err(_) => true,
            };
            if !logged_alone {
                tracing::debug!(model = %model, reason = %denial.reason, "key release denied (counted)");
                return Message::Denied {
                    reason: denial.reason,
                    message: denial.message,
                };
            }
        }
        let key_id = evidence
            .key_id
            .clone()
            .unwrap_or_else(|| Id::new("-").unwrap_or_else(|_| model.clone()));
        let entry = release_entry(
            (self.clock)(),
            (Outcome::Denied, &denial.reason, None),
            model,
            &key_id,
            self.policy().version,
            &evidence,
        );
        match self.ledger.append(entry) {
            Ok(index) => {
                tracing::warn!(
                    model = %model,
                    reason = %denial.reason,
                    log_index = index,
                    detail = %denial.message,
                    renewal = evidence.renewal,
                    "key release or renewal denied"
                );
                Message::Denied {
                    reason: denial.reason,
                    message: denial.message,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, reason = %denial.reason, "could not log a denial");
                Message::Denied {
                    reason: "log_unavailable".into(),
                    message: "the decision could not be logged".into(),
                }
            }
        }
    }
}

/// The `model-sealed` entry for a record.
pub fn sealed_entry(record: &ModelRecord) -> Entry {
    Entry::ModelSealed(sealed(record))
}

fn sealed(record: &ModelRecord) -> ModelSealed {
    ModelSealed {
        time: record.sealed_at,
        model_id: record.model_id.to_string(),
        key_id: record.key_id.to_string(),
        model_digest: record.model_sha384,
        model_len: record.model_len,
        wrapped_key_sha384: Some(sha384(&record.wrapped_key)),
    }
}

/// The lease as the protocol carries it.
fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)
}

/// The parent instance's id in a Nitro module id (`i-0123…-enc0456…` → `i-0123…`).
fn instance_of(module_id: &str) -> Option<&str> {
    module_id
        .rsplit_once("-enc")
        .map(|(instance, _)| instance)
        .filter(|i| i.starts_with("i-"))
}

/// A denial if a revocation names `model`, or the image (PCR0) or enclave (module id) that
/// `attested` shows.
fn check_revoked(
    revocations: &[Revoked],
    model: &Id,
    attested: Option<&AuthenticDocument>,
) -> Result<(), Denial> {
    use proofs::entry::RevocationTarget;
    let pcr0 = attested
        .and_then(|a| a.pcrs().iter().find(|(i, _)| i.get() == 0))
        .map(|(_, v)| data_encoding::HEXLOWER.encode(v.as_bytes()));
    let hit = revocations.iter().find(|r| match r.target {
        RevocationTarget::Model => r.value == model.as_str(),
        RevocationTarget::Image => pcr0.as_deref() == Some(r.value.as_str()),
        RevocationTarget::Module => attested.is_some_and(|a| a.module_id() == r.value),
        RevocationTarget::Instance => {
            attested.is_some_and(|a| instance_of(a.module_id()) == Some(r.value.as_str()))
        }
    });
    match hit {
        None => Ok(()),
        Some(r) => Err(Denial::new(
            "revoked",
            format!(
                "the {} {} was revoked at {}{}: {}",
                r.target.as_str(),
                r.value,
                r.time,
                r.log_index
                    .map(|i| format!(" (log entry {i})"))
                    .unwrap_or_default(),
                r.reason
            ),
        )),
    }
}

fn release_entry(
    time: Timestamp,
    (outcome, reason, lease_ms): (Outcome, &str, Option<u64>),
    model: &Id,
    key_id: &Id,
    policy_version: u64,
    evidence: &Evidence,
) -> Entry {
    let attested = evidence.attested.as_ref();
    let decision = KeyRelease {
        time,
        outcome,
        reason: reason.to_owned(),
        model_id: model.to_string(),
        key_id: key_id.to_string(),
        policy_version,
        module_id: attested.map(|v| v.module_id().to_owned()),
        pcrs: attested.map(|v| v.pcrs().clone()).unwrap_or_default(),
        region: attested
            .and_then(|v| v.region())
            .map(|r| r.as_str().to_owned()),
        document_sha384: evidence.document_sha384,
        nonce: evidence.nonce.clone(),
        lease_ms,
    };
    if evidence.renewal {
        Entry::LeaseRenewal(decision)
    } else {
        Entry::KeyRelease(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::instance_of;

    #[test]
    fn an_instance_is_the_module_id_s_prefix() {
        assert_eq!(
            instance_of("i-0123456789abcdef0-enc0123456789abcdef0"),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(instance_of("i-1-enc2-enc3"), Some("i-1-enc2"));
        assert_eq!(instance_of("enc0123"), None);
        assert_eq!(instance_of("x-1-enc2"), None);
        assert_eq!(instance_of(""), None);
    }
}
