//! The release policy: one TOML file naming, per model id, the enclaves that may receive its key.
//!
//! ```toml
//! version = 3                       # raise it with every change; each version is logged once
//! notice = "24h"                    # with approvals: in force no sooner than this after the last
//!                                   # approval (default 0)
//!
//! [models."smollm2-135m"]           # the same rules as an `attest` policy file, and a lease
//! lease = "15m"                     # how long a released key lasts without renewal (default
//!                                   # 15m, 1s to 24h): the longest a revocation waits
//! max_age = "5m"                    # documents older than this are refused (default 5m)
//! regions = ["eu-central-1"]        # default: any region
//! # dangerous_allow_debug = true    # never in production
//! [[models."smollm2-135m".measurements]]
//! pcr0 = "…"                        # 96 hex digits each
//! pcr1 = "…"
//! pcr2 = "…"
//! ```
//!
//! Every measurement set of every model must pin the image: PCR0 (or PCR0, 1 and 2), or PCR8
//! together with the image-signing certificate it measures (`signing_certificate`, inline PEM).
//! A policy that pins only parent-chosen PCRs (3, 4), the enclave's own runtime PCRs (16 and
//! above) or a bare PCR8 is refused at load, naming the rule. Unknown keys are errors.

use std::collections::BTreeMap;
use std::time::Duration;

use attest::{Policy, PolicyRules};
use sealing::Id;
use serde::Deserialize;

/// The largest policy file read.
pub const MAX_POLICY_LEN: u64 = 1024 * 1024;

/// A checked release policy.
#[derive(Clone, Debug)]
pub struct ReleasePolicy {
    /// The version the file declares.
    pub version: u64,
    /// SHA-384 of the file's bytes: what the log records.
    pub sha384: [u8; 48],
    /// Per model, the attestation policy an enclave must satisfy.
    pub models: BTreeMap<Id, Policy>,
    /// Per model, the lease a release or renewal grants.
    pub leases: BTreeMap<Id, Duration>,
    /// How long after its last approval the policy may take effect.
    pub notice: Duration,
    /// The file's bytes: what approvals sign and the state directory keeps once adopted.
    pub bytes: Vec<u8>,
}

/// The longest notice period a policy may ask for.
pub const MAX_NOTICE: Duration = Duration::from_secs(30 * 86_400);

/// The lease granted when a model's policy names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15 * 60);

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[error("release policy: {0}")]
#[derive(Clone)]
pub struct PolicyError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u64,
    notice: Option<String>,
    #[serde(default)]
    models: BTreeMap<String, PolicyRules>,
}

impl ReleasePolicy {
    /// Parse and check a policy file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PolicyError("not UTF-8".into()))?;
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        // `lease` is the broker's, not the attestation rules': taken out before they are read.
        let mut leases = BTreeMap::new();
        if let Some(toml::Value::Table(models)) = table.get_mut("models") {
            for (name, rules) in models.iter_mut() {
                let Some(lease) = rules.as_table_mut().and_then(|t| t.remove("lease")) else {
                    continue;
                };
                let lease = parse_lease(name, &lease)?;
                let id = Id::new(name).map_err(|e| PolicyError(format!("models.{name:?}: {e}")))?;
                leases.insert(id, lease);
            }
        }
        let raw: Raw = table.try_into().map_err(|e| PolicyError(e.to_string()))?;
        if raw.version == 0 {
            return Err(PolicyError("version starts at 1".into()));
        }
        let mut models = BTreeMap::new();
        for (name, rules) in &raw.models {
            let id = Id::new(name).map_err(|e| PolicyError(format!("models.{name:?}: {e}")))?;
            let policy = rules
                .to_policy(&format!("models.{name}."))
                .map_err(|e| PolicyError(e.to_string()))?;
            policy.check_pins_image().map_err(|e| {
                PolicyError(format!(
                    "models.{name}: a release policy must pin the enclave image: {e}"
                ))
            })?;
            leases.entry(id.clone()).or_insert(DEFAULT_LEASE);
            models.insert(id, policy);
        }
        let notice = match &raw.notice {
            None => Duration::ZERO,
            Some(text) => {
                let notice = attest::parse_duration(text)
                    .map_err(|e| PolicyError(format!("notice: {e}")))?;
                if notice > MAX_NOTICE {
                    return Err(PolicyError("notice: at most 30 days".into()));
                }
                notice
            }
        };
        Ok(Self {
            version: raw.version,
            sha384: sealing::release::sha384(bytes),
            models,
            leases,
            notice,
            bytes: bytes.to_vec(),
        })
    }

    /// No policy: no model, so every release is refused. It keeps the floor a change must
    /// clear: a version above `version`, and a notice period of at least `notice`.
    pub fn none(version: u64, notice: Duration) -> Self {
        Self {
            version,
            sha384: [0; 48],
            models: BTreeMap::new(),
            leases: BTreeMap::new(),
            notice,
            bytes: Vec::new(),
        }
    }

    /// The lease `model`'s releases and renewals grant.
    pub fn lease(&self, model: &Id) -> Duration {
        self.leases.get(model).copied().unwrap_or(DEFAULT_LEASE)
    }

    /// Read and check a policy file.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let bytes = crate::config::read_bounded(path, MAX_POLICY_LEN)
            .map_err(|e| PolicyError(e.to_string()))?;
        Self::parse(&bytes)
    }

    /// What the policy allows, for `broker policy check --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        let models: serde_json::Map<String, serde_json::Value> = self
            .models
            .iter()
            .map(|(id, p)| {
                let sets: Vec<serde_json::Value> = p
                    .measurements()
                    .iter()
                    .map(|set| {
                        let mut pcrs = set
                            .pcrs()
                            .iter()
                            .map(|(i, v)| (format!("pcr{}", i.get()), hex(v.as_bytes()).into()))
                            .collect::<serde_json::Map<_, _>>();
                        if let Some(signer) = set.signer() {
                            pcrs.insert("signer".into(), signer.into());
                        }
                        pcrs.into()
                    })
                    .collect();
                let value = serde_json::json!({
                    "measurements": sets,
                    "allow_debug": p.allows_debug(),
                    "max_age_secs": p.max_age_limit().map(|d| d.as_secs()),
                    "regions": p.regions().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "lease_secs": self.lease(id).as_secs_f64(),
                });
                (id.to_string(), value)
            })
            .collect();
        serde_json::json!({
            "version": self.version,
            "sha384": hex(&self.sha384),
            "notice_secs": self.notice.as_secs(),
            "models": models,
        })
    }
}

fn parse_lease(model: &str, value: &toml::Value) -> Result<Duration, PolicyError> {
    let bad = |why: String| PolicyError(format!("models.{model}.lease: {why}"));
    let text = value
        .as_str()
        .ok_or_else(|| bad("a duration such as \"15m\"".into()))?;
    let lease = attest::parse_duration(text).map_err(|e| bad(e.to_string()))?;
    let min = Duration::from_millis(sealing::release::MIN_LEASE_MS);
    let max = Duration::from_millis(sealing::release::MAX_LEASE_MS);
    if lease < min || lease > max {
        return Err(bad(format!(
            "{text} is outside 1s to 24h (enclaves refuse other leases)"
        )));
    }
    Ok(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcr(b: u8) -> String {
        format!("{b:02x}").repeat(48)
    }

    #[test]
    fn a_policy_pins_each_model() {
        let text = format!(
            "version = 2\n[models.\"m-1\"]\nregions = [\"eu-west-1\"]\n\
             [[models.\"m-1\".measurements]]\npcr0 = \"{}\"\npcr16 = \"{}\"\n",
            pcr(1),
            pcr(2)
        );
        let p = ReleasePolicy::parse(text.as_bytes()).unwrap();
        assert_eq!(p.version, 2);
        let m = p.models.get(&Id::new("m-1").unwrap()).unwrap();
        assert_eq!(m.measurements().len(), 1);
        assert_eq!(m.regions().len(), 1);
        assert!(!m.allows_debug());
        assert_eq!(p.sha384, sealing::release::sha384(text.as_bytes()));
        let json = p.to_json();
        assert_eq!(json["models"]["m-1"]["measurements"][0]["pcr16"], pcr(2));
        assert_eq!(p.lease(&Id::new("m-1").unwrap()), DEFAULT_LEASE);
    }

    #[test]
    fn a_lease_is_per_model_and_bounded() {
        let policy = |lease: &str| {
            format!(
                "version = 2\n[models.\"m-1\"]\nlease = {lease}\n\
                 [[models.\"m-1\".measurements]]\npcr0 = \"{}\"\n\
                 [models.\"m-2\"]\n[[models.\"m-2\".measurements]]\npcr0 = \"{}\"\n",
                pcr(1),
                pcr(2)
            )
        };
        let p = ReleasePolicy::parse(policy("\"90s\"").as_bytes()).unwrap();
        assert_eq!(p.lease(&Id::new("m-1").unwrap()), Duration::from_secs(90));
        assert_eq!(p.lease(&Id::new("m-2").unwrap()), DEFAULT_LEASE);
        assert_eq!(p.to_json()["models"]["m-1"]["lease_secs"], 90.0);
        for bad in ["\"0s\"", "\"500ms\"", "\"25h\"", "15", "\"soon\""] {
            let error = ReleasePolicy::parse(policy(bad).as_bytes()).unwrap_err();
            assert!(
                error.to_string().contains("models.m-1.lease"),
                "{bad}: {error}"
            );
        }
    }

    /// PCR3/PCR4 (the parent's choice), PCR16 (the enclave's own code) or a bare PCR8 do not
    /// identify an image: a release policy pinning only those is refused at load, naming the
    /// rule, and so are two keys naming one PCR.
    #[test]
    fn a_policy_that_pins_no_image_is_refused() {
        let set =
            |body: &str| format!("version = 1\n[models.m]\n[[models.m.measurements]]\n{body}");
        for (body, needle) in [
            (
                format!("pcr3 = \"{}\"\npcr4 = \"{}\"\n", pcr(3), pcr(4)),
                "neither PCR0",
            ),
            (format!("pcr16 = \"{}\"\n", pcr(16)), "neither PCR0"),
            (
                format!("pcr1 = \"{}\"\npcr2 = \"{}\"\n", pcr(1), pcr(2)),
                "neither PCR0",
            ),
            (
                format!("pcr8 = \"{}\"\n", pcr(8)),
                "PCR8 alone names no signer",
            ),
            (
                format!("pcr0 = \"{}\"\npcr00 = \"{}\"\n", pcr(1), pcr(2)),
                "not canonical: write pcr0",
            ),
            (
                format!("pcr08 = \"{}\"\n", pcr(8)),
                "not canonical: write pcr8",
            ),
        ] {
            let err = ReleasePolicy::parse(set(&body).as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{body:?}: {err}");
            assert!(err.contains("models.m"), "{body:?}: {err}");
        }
        // A second set that pins nothing does not ride on a first that pins the image.
        let text = format!(
            "version = 1\n[models.m]\n[[models.m.measurements]]\npcr0 = \"{}\"\n\
             [[models.m.measurements]]\npcr4 = \"{}\"\n",
            pcr(1),
            pcr(4)
        );
        let err = ReleasePolicy::parse(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("measurement set 1"), "{err}");
    }

    /// PCR8 with the signing certificate it measures pins the signer; a certificate that is not
    /// the one PCR8 measures is refused.
    #[test]
    fn pcr8_pins_with_its_named_signing_certificate() {
        let root = attest::pki::init_root(
            "Image Signer",
            "Test Government",
            "GB",
            attest::Timestamp::from_unix_secs(1_600_000_000),
            attest::Timestamp::from_unix_secs(2_000_000_000),
        )
        .unwrap();
        let pem = pem_of(&root.certificate);
        let measured = attest::PcrValue::measure(&root.certificate).to_hex();
        let with = |pcr8: &str| {
            format!(
                "version = 1\n[models.m]\n[[models.m.measurements]]\n{pcr8}\
                 signing_certificate = \"\"\"\n{pem}\"\"\"\n"
            )
        };
        let p = ReleasePolicy::parse(with("").as_bytes()).unwrap();
        let m = p.models.get(&Id::new("m").unwrap()).unwrap();
        let set = m.measurements().first().unwrap();
        assert_eq!(
            set.signer(),
            Some("C=GB, O=Test Government, CN=Image Signer")
        );
        assert_eq!(
            set.pcrs().get(&attest::PcrIndex::SIGNER).unwrap().to_hex(),
            measured
        );
        assert!(ReleasePolicy::parse(with(&format!("pcr8 = \"{measured}\"\n")).as_bytes()).is_ok());
        let err = ReleasePolicy::parse(with(&format!("pcr8 = \"{}\"\n", pcr(8))).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("signing_certificate"), "{err}");
    }

    fn pem_of(der: &[u8]) -> String {
        let b64 = data_encoding::BASE64.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn unsafe_or_unknown_policies_are_refused() {
        for (text, needle) in [
            (
                "version = 1\n[models.m]\nregions = []\n",
                "no measurement set",
            ),
            ("version = 0\n", "version starts at 1"),
            ("version = 1\nmodel = {}\n", "unknown field"),
            (
                "version = 1\n[models.m]\nallow_debug = true\n",
                "unknown field",
            ),
            ("version = 1\n[models.\"a b\"]\n", "invalid id"),
            ("[models]\n", "version"),
        ] {
            let err = ReleasePolicy::parse(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
