//! Policy changes that take effect only with k of n approvals.
//!
//! With `[approval]` in the configuration, the policy file is a proposal until the approvals
//! directory holds approvals (see [`attest::approval`]) by `required` of the named `approvers`
//! over its exact bytes and version, each by a key the national root certified for the
//! `policy-approver` role. A policy may also set a notice period (`notice = "24h"`): it then
//! takes effect no sooner than that after its last approval. The broker judges the file when it
//! starts and every [`crate::revocation::POLL`] while it serves; an approved change is logged
//! (a `policy-change` entry naming the approvers) before it takes effect. Until then the policy
//! adopted last stays in force (its bytes are kept in the state directory); with none, the broker
//! does not start.

use std::path::{Path, PathBuf};

use attest::approval::{Approval, ApprovalRule, check_approvals};
use attest::{ServiceTrust, Timestamp};

use crate::config::{ConfigError, read_bounded};
use crate::policy::{MAX_POLICY_LEN, ReleasePolicy};

/// The most approval files read from the directory.
pub const MAX_APPROVAL_FILES: usize = 256;

/// The approval rule and where approvals are kept.
#[derive(Clone, Debug)]
pub struct ApprovalConfig {
    /// k of n.
    pub rule: ApprovalRule,
    /// The directory of `*.approval` files.
    pub dir: PathBuf,
}

/// What to do with a policy file.
#[derive(Debug)]
pub enum Verdict {
    /// Approved and due: adopt it, naming these approvers.
    Adopt {
        /// The policy.
        policy: ReleasePolicy,
        /// Who approved it.
        approvers: Vec<String>,
        /// The approvals that count, as their bytes, for the log.
        approvals: Vec<Vec<u8>>,
    },
    /// Approved, but its notice period runs until `until`.
    Wait {
        /// When it may take effect.
        until: Timestamp,
        /// Who approved it.
        approvers: Vec<String>,
    },
    /// Not enough valid approvals: who approved, who is missing, what was refused.
    NotApproved(String),
}

/// Where the serving broker looks for approved changes.
#[derive(Clone, Debug)]
pub struct PolicySource {
    /// The policy file.
    pub path: PathBuf,
    /// The rule and the approvals' directory.
    pub approval: ApprovalConfig,
    /// The national roots that certify approvers.
    pub trust: ServiceTrust,
}

/// When a proposal was first seen fully approved by this broker process: the notice period runs
/// from the later of that and the last approval, so an approval dated in the past (or collected
/// long before it was applied) does not shorten it. Kept in memory only: a restart starts the
/// period again, which only delays.
#[derive(Debug, Default)]
pub struct FirstSeen(std::sync::Mutex<Option<([u8; 48], Timestamp)>>);

impl FirstSeen {
    fn at(&self, sha384: &[u8; 48], now: Timestamp) -> Timestamp {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *seen {
            Some((sha, at)) if &sha == sha384 => at,
            _ => {
                *seen = Some((*sha384, now));
                now
            }
        }
    }
}

impl PolicySource {
    /// Judge the policy file against `current` (the policy in force) at `now`: `None` when the
    /// file is the policy in force.
    pub fn judge_file(
        &self,
        current: &ReleasePolicy,
        now: Timestamp,
        first_seen: &FirstSeen,
    ) -> Result<Option<Verdict>, ConfigError> {
        let bytes = read_bounded(&self.path, MAX_POLICY_LEN)?;
        if sealing::release::sha384(&bytes) == current.sha384 {
            return Ok(None);
        }
        let policy = ReleasePolicy::parse(&bytes).map_err(|e| ConfigError(e.to_string()))?;
        if policy.version <= current.version {
            return Ok(Some(Verdict::NotApproved(format!(
                "its version {} is not above the version in force ({})",
                policy.version, current.version
            ))));
        }
        judge(policy, self, now, first_seen, current.notice).map(Some)
    }
}

/// Judge `policy` under `source`'s rule at `now`. It may take effect once the longer of its own
/// notice period and `current_notice` (the policy in force's) has passed since the later of its
/// last approval and the moment this process first saw it fully approved.
pub fn judge(
    policy: ReleasePolicy,
    source: &PolicySource,
    now: Timestamp,
    first_seen: &FirstSeen,
    current_notice: std::time::Duration,
) -> Result<Verdict, ConfigError> {
    let (approvals, unreadable) = read_approvals(&source.approval.dir, policy.version)?;
    let report = check_approvals(
        &policy.bytes,
        policy.version,
        &approvals,
        &source.approval.rule,
        &source.trust,
        now,
    );
    if !report.is_enough() {
        let mut summary = report.summary();
        for file in unreadable {
            summary.push_str(&format!("; {file} is not an approval"));
        }
        return Ok(Verdict::NotApproved(summary));
    }
    let approvers: Vec<String> = report.approved.keys().cloned().collect();
    let seen = first_seen.at(&policy.sha384, now);
    let from = report.last_approval().unwrap_or(now).max(seen);
    let notice = policy.notice.max(current_notice);
    let until = Timestamp::from_unix_millis(
        from.unix_millis()
            .saturating_add(u64::try_from(notice.as_millis()).unwrap_or(u64::MAX)),
    );
    if until > now {
        return Ok(Verdict::Wait { until, approvers });
    }
    let approvals = report
        .counted
        .iter()
        .filter_map(|i| approvals.get(*i))
        .map(Approval::to_bytes)
        .collect();
    Ok(Verdict::Adopt {
        policy,
        approvers,
        approvals,
    })
}

/// Check the approvals a `policy-change` entry recorded for `policy` against `source`'s rule and
/// roots, at the entry's `time`: the policy in force must carry them.
pub fn check_logged(
    policy: &ReleasePolicy,
    logged: &[Vec<u8>],
    source: &PolicySource,
    time: Timestamp,
) -> Result<Vec<String>, String> {
    let approvals: Vec<Approval> = logged
        .iter()
        .filter_map(|b| Approval::from_bytes(b).ok())
        .collect();
    let report = check_approvals(
        &policy.bytes,
        policy.version,
        &approvals,
        &source.approval.rule,
        &source.trust,
        time,
    );
    if report.is_enough() {
        Ok(report.approved.keys().cloned().collect())
    } else {
        Err(report.summary())
    }
}

/// Every `*.approval` file in `dir` (none if it does not exist) except those `broker policy
/// apply` wrote for other versions, and the names of those that do not parse.
pub fn read_approvals(
    dir: &Path,
    version: u64,
) -> Result<(Vec<Approval>, Vec<String>), ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(ConfigError(format!("{}: {e}", dir.display()))),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        // Regular files only: a FIFO or a device would block or never end.
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .filter(|p| p.extension().is_some_and(|x| x == "approval"))
        .filter(|p| {
            // `v<version>-…` is how `apply` names them: those of other versions are skipped.
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match name.strip_prefix('v').and_then(|r| r.split('-').next()) {
                Some(v) if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() => {
                    v == version.to_string()
                }
                _ => true,
            }
        })
        .collect();
    paths.sort();
    if paths.len() > MAX_APPROVAL_FILES {
        return Err(ConfigError(format!(
            "{}: more than {MAX_APPROVAL_FILES} approvals",
            dir.display()
        )));
    }
    let mut approvals = Vec::new();
    let mut unreadable = Vec::new();
    for path in paths {
        let parsed = read_bounded(&path, 64 * 1024)
            .map_err(|e| e.to_string())
            .and_then(|b| Approval::parse(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(a) => approvals.push(a),
            Err(_) => unreadable.push(path.display().to_string()),
        }
    }
    Ok((approvals, unreadable))
}
