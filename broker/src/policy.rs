//! The release policy: one TOML file naming, per model id, the enclaves that may receive its key.
//!
//! ```toml
//! version = 3                       # raise it with every change; each version is logged once
//!
//! [models."smollm2-135m"]           # the same rules as an `attest` policy file
//! max_age = "5m"                    # documents older than this are refused (default 5m)
//! regions = ["eu-central-1"]        # default: any region
//! # dangerous_allow_debug = true    # never in production
//! [[models."smollm2-135m".measurements]]
//! pcr0 = "…"                        # 96 hex digits each
//! pcr1 = "…"
//! pcr2 = "…"
//! ```
//!
//! Every model must pin at least one measurement set: a release policy that accepts any image
//! is refused. Unknown keys are errors.

use std::collections::BTreeMap;

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
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[error("release policy: {0}")]
pub struct PolicyError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u64,
    #[serde(default)]
    models: BTreeMap<String, PolicyRules>,
}

impl ReleasePolicy {
    /// Parse and check a policy file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PolicyError("not UTF-8".into()))?;
        let raw: Raw = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        if raw.version == 0 {
            return Err(PolicyError("version starts at 1".into()));
        }
        let mut models = BTreeMap::new();
        for (name, rules) in &raw.models {
            let id = Id::new(name).map_err(|e| PolicyError(format!("models.{name:?}: {e}")))?;
            let policy = rules
                .to_policy(&format!("models.{name}."))
                .map_err(|e| PolicyError(e.to_string()))?;
            if policy.measurements().is_empty() {
                return Err(PolicyError(format!(
                    "models.{name}: no [[measurements]]: a release policy must pin the enclave \
                     image (`attest policy from-image` prints the set for an image)"
                )));
            }
            models.insert(id, policy);
        }
        Ok(Self {
            version: raw.version,
            sha384: sealing::release::sha384(bytes),
            models,
        })
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
                        set.pcrs()
                            .iter()
                            .map(|(i, v)| (format!("pcr{}", i.get()), hex(v.as_bytes()).into()))
                            .collect::<serde_json::Map<_, _>>()
                            .into()
                    })
                    .collect();
                let value = serde_json::json!({
                    "measurements": sets,
                    "allow_debug": p.allows_debug(),
                    "max_age_secs": p.max_age_limit().map(|d| d.as_secs()),
                    "regions": p.regions().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                });
                (id.to_string(), value)
            })
            .collect();
        serde_json::json!({
            "version": self.version,
            "sha384": hex(&self.sha384),
            "models": models,
        })
    }
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
    }

    #[test]
    fn unsafe_or_unknown_policies_are_refused() {
        for (text, needle) in [
            (
                "version = 1\n[models.m]\nregions = []\n",
                "no [[measurements]]",
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
