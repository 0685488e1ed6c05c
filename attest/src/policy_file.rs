//! The policy file: a TOML file holding trust (roots, cross-certificates) and policy
//! (measurements, debug, age, regions). Unknown keys are errors. See `docs/policy.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::{MeasurementSet, Policy};
use crate::time::parse_duration;
use crate::types::{PcrIndex, PcrValue, Region};

/// A policy file, read and checked. Certificate paths are resolved against the file's directory
/// but not yet read.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PolicyFile {
    /// Trust the built-in AWS Nitro root directly (default `true`).
    pub aws_root: bool,
    /// Roots other than AWS's that issue the Nitro CA hierarchy themselves: a simulated Nitro
    /// PKI in development.
    pub nitro_roots: Vec<PathBuf>,
    /// National roots: they reach documents only through `cross_certificates`.
    pub roots: Vec<PathBuf>,
    /// Cross-certificates, such as a national root's certificate for the AWS root.
    pub cross_certificates: Vec<PathBuf>,
    /// The policy the file describes.
    pub policy: Policy,
}

/// A policy file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyFileError {
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Toml(String),
    /// A value of the right type that is not allowed.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "yes")]
    aws_root: bool,
    #[serde(default)]
    nitro_roots: Vec<PathBuf>,
    #[serde(default)]
    roots: Vec<PathBuf>,
    #[serde(default)]
    cross_certificates: Vec<PathBuf>,
    max_age: Option<String>,
    #[serde(default)]
    dangerous_any_age: bool,
    #[serde(default)]
    dangerous_allow_debug: bool,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    measurements: Vec<BTreeMap<String, String>>,
}

fn yes() -> bool {
    true
}

/// The policy half of a policy file, on its own: `max_age`, `dangerous_any_age`,
/// `dangerous_allow_debug`, `regions` and `[[measurements]]`, with the same meaning and checks.
/// Other tools embed it in their own files (the key broker has one per model).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    max_age: Option<String>,
    #[serde(default)]
    dangerous_any_age: bool,
    #[serde(default)]
    dangerous_allow_debug: bool,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    measurements: Vec<BTreeMap<String, String>>,
}

impl PolicyRules {
    /// The policy these rules describe. Key names in errors are prefixed with `context`.
    pub fn to_policy(&self, context: &str) -> Result<Policy, PolicyFileError> {
        let invalid = |key: &str, reason: String| PolicyFileError::Invalid {
            key: format!("{context}{key}"),
            reason,
        };
        let mut policy = Policy::new();
        match (&self.max_age, self.dangerous_any_age) {
            (Some(_), true) => {
                return Err(invalid(
                    "max_age",
                    "cannot be set together with dangerous_any_age".to_owned(),
                ));
            }
            (Some(text), false) => {
                let max_age =
                    parse_duration(text).map_err(|e| invalid("max_age", e.to_string()))?;
                policy = policy.max_age(max_age);
            }
            (None, true) => policy = policy.dangerous_any_age(),
            (None, false) => {}
        }
        if self.dangerous_allow_debug {
            policy = policy.dangerous_allow_debug();
        }
        let regions = self
            .regions
            .iter()
            .map(|r| Region::try_from(r.as_str()).map_err(|e| invalid("regions", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        policy = policy.allow_regions(regions);
        for (i, set) in self.measurements.iter().enumerate() {
            policy = policy.allow_measurements(
                parse_measurement_set(set)
                    .map_err(|reason| invalid(&format!("measurements[{i}]"), reason))?,
            );
        }
        // A file that lists no measurements checks authenticity only, as it always has: say so
        // in the type. Whoever uses the policy to decide trust refuses it
        // (`Policy::check_pins_image`): the broker and the verifying client do.
        if self.measurements.is_empty() {
            policy = policy.dangerous_any_measurements();
        }
        Ok(policy)
    }
}

impl PolicyFile {
    /// Parse a policy file's text. Relative certificate paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, PolicyFileError> {
        let raw: Raw = toml::from_str(text).map_err(|e| PolicyFileError::Toml(e.to_string()))?;
        let rules = PolicyRules {
            max_age: raw.max_age,
            dangerous_any_age: raw.dangerous_any_age,
            dangerous_allow_debug: raw.dangerous_allow_debug,
            regions: raw.regions,
            measurements: raw.measurements,
        };
        let policy = rules.to_policy("")?;
        let resolve = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
            paths.into_iter().map(|p| base_dir.join(p)).collect()
        };
        Ok(Self {
            aws_root: raw.aws_root,
            nitro_roots: resolve(raw.nitro_roots),
            roots: resolve(raw.roots),
            cross_certificates: resolve(raw.cross_certificates),
            policy,
        })
    }
}

/// Keys are `pcr0` … `pcr31`, written canonically (no leading zeros, so no two keys can name
/// the same PCR); values are 96 hex digits. `signing_certificate` (a PEM certificate, inline)
/// pins PCR8 to the certificate it names.
fn parse_measurement_set(set: &BTreeMap<String, String>) -> Result<MeasurementSet, String> {
    let mut pcrs = BTreeMap::new();
    let mut signer = None;
    for (key, value) in set {
        if key == SIGNING_CERTIFICATE {
            signer = Some(value);
            continue;
        }
        let index = pcr_key(key)?;
        let value = PcrValue::from_hex(value).map_err(|e| format!("{key}: {e}"))?;
        if pcrs.insert(index, value).is_some() {
            return Err(format!("{key}: the same PCR is named twice"));
        }
    }
    let set = match signer {
        None => MeasurementSet::try_from(pcrs).map_err(|e| e.to_string())?,
        Some(pem) => {
            let certs = crate::trust::load_certificates(pem.as_bytes())
                .map_err(|e| format!("{SIGNING_CERTIFICATE}: {e}"))?;
            let [certificate] = certs.as_slice() else {
                return Err(format!(
                    "{SIGNING_CERTIFICATE}: exactly one PEM certificate, found {}",
                    certs.len()
                ));
            };
            MeasurementSet::from_nonempty(pcrs)
                .signed_by(certificate)
                .map_err(|e| format!("{SIGNING_CERTIFICATE}: {e}"))?
        }
    };
    Ok(set)
}

const SIGNING_CERTIFICATE: &str = "signing_certificate";

/// `pcr<N>` with N in 0..=31 written without leading zeros.
fn pcr_key(key: &str) -> Result<PcrIndex, String> {
    let digits = key
        .strip_prefix("pcr")
        .filter(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("unknown key {key:?}: expected pcr0 … pcr31 or {SIGNING_CERTIFICATE}")
        })?;
    if digits.len() > 1 && digits.starts_with('0') {
        let canonical = match digits.trim_start_matches('0') {
            "" => "0",
            rest => rest,
        };
        return Err(format!(
            "{key:?} is not canonical: write pcr{canonical} (leading zeros would let two keys \
             name one PCR)"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| PcrIndex::try_from(n).ok())
        .ok_or_else(|| format!("unknown key {key:?}: expected pcr0 … pcr31"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyFile, PolicyFileError> {
        PolicyFile::parse(text, Path::new("/etc/attest"))
    }

    #[test]
    fn full_file() {
        let pcr = "00".repeat(47) + "01";
        let file = parse(&format!(
            r#"
            aws_root = false
            roots = ["national-root.pem"]
            cross_certificates = ["/abs/cross.pem"]
            max_age = "10m"
            regions = ["eu-central-1"]
            dangerous_allow_debug = true

            [[measurements]]
            pcr0 = "{pcr}"
            pcr2 = "{pcr}"

            [[measurements]]
            pcr0 = "{pcr}"
            "#
        ))
        .unwrap();
        assert!(!file.aws_root);
        assert_eq!(
            file.roots,
            vec![PathBuf::from("/etc/attest/national-root.pem")]
        );
        assert_eq!(
            file.cross_certificates,
            vec![PathBuf::from("/abs/cross.pem")]
        );
        assert_eq!(
            file.policy.max_age_limit(),
            Some(core::time::Duration::from_secs(600))
        );
        assert!(file.policy.allows_debug());
        assert_eq!(file.policy.regions().len(), 1);
        assert_eq!(file.policy.measurements().len(), 2);
        assert_eq!(file.policy.measurements().first().unwrap().pcrs().len(), 2);
    }

    #[test]
    fn defaults_are_safe() {
        let file = parse("").unwrap();
        assert!(file.aws_root);
        assert!(!file.policy.allows_debug());
        assert_eq!(
            file.policy.max_age_limit(),
            Some(crate::policy::DEFAULT_MAX_AGE)
        );
        assert!(file.policy.measurements().is_empty());
    }

    /// Only PCR0, or PCR8 with the certificate named, identifies an image.
    #[test]
    fn which_sets_pin_an_image() {
        let pcr = "11".repeat(48);
        let pins = |body: &str| {
            parse(&format!("[[measurements]]\n{body}"))
                .unwrap()
                .policy
                .check_pins_image()
        };
        assert!(pins(&format!("pcr0 = \"{pcr}\"")).is_ok());
        assert!(
            pins(&format!(
                "pcr0 = \"{pcr}\"\npcr1 = \"{pcr}\"\npcr2 = \"{pcr}\""
            ))
            .is_ok()
        );
        assert_eq!(
            pins(&format!("pcr0 = \"{}\"", "00".repeat(48))),
            Err(crate::UnpinnedImage::SetPinsNoImage { set: 0 }),
            "an all-zero PCR0 is any debug enclave"
        );
        for body in ["pcr3", "pcr4", "pcr16", "pcr8", "pcr1"] {
            assert_eq!(
                pins(&format!("{body} = \"{pcr}\"")),
                Err(crate::UnpinnedImage::SetPinsNoImage { set: 0 }),
                "{body}"
            );
        }
        assert_eq!(
            parse("").unwrap().policy.check_pins_image(),
            Err(crate::UnpinnedImage::NoMeasurements)
        );
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        let pcr = "00".repeat(48);
        for (text, needle) in [
            ("allow_debug = true", "unknown field"),
            ("max_age = \"soon\"", "max_age"),
            (
                "max_age = \"5m\"\ndangerous_any_age = true",
                "dangerous_any_age",
            ),
            ("regions = [\"EU\"]", "regions"),
            ("[[measurements]]\npcr32 = \"00\"", "pcr32"),
            ("[[measurements]]\npcr0 = \"00\"", "pcr0"),
            (&format!("[[measurements]]\nPCR0 = \"{pcr}\""), "PCR0"),
            ("[[measurements]]", "at least one PCR"),
            (
                &format!("[[measurements]]\npcr0 = \"{pcr}\"\npcr00 = \"{pcr}\""),
                "not canonical: write pcr0",
            ),
            (&format!("[[measurements]]\npcr016 = \"{pcr}\""), "pcr016"),
            (&format!("[[measurements]]\npcr+1 = \"{pcr}\""), "pcr+1"),
            (
                &format!("[[measurements]]\npcr8 = \"{pcr}\"\nsigning_certificate = \"no\""),
                "signing_certificate",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }
}
