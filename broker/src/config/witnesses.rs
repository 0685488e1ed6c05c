//! The `[witnesses]` section: who cosigns the log's checkpoints before a release is answered.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, duration, invalid};

/// The `[witnesses]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessesConfig {
    /// The witnesses.
    pub witnesses: Vec<crate::witnesses::WitnessConfig>,
    /// How many must cosign each checkpoint.
    pub required: usize,
    /// How long each is waited for.
    pub timeout: Duration,
}

impl WitnessesConfig {
    /// The witnesses, ready to ask.
    pub fn open(&self) -> crate::witnesses::Witnesses {
        crate::witnesses::Witnesses::new(self.witnesses.clone(), self.required, self.timeout)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWitnesses {
    required: Option<usize>,
    timeout: Option<String>,
    witness: Vec<RawWitness>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    key: String,
    url: String,
}

pub(super) fn parse(raw: RawWitnesses) -> Result<WitnessesConfig, ConfigError> {
    if raw.witness.is_empty() {
        return Err(invalid(
            "witnesses.witness",
            "name at least one witness ([[witnesses.witness]] key, url), or leave [witnesses] out",
        ));
    }
    let mut witnesses = Vec::new();
    for w in raw.witness {
        let key = proofs::cosignature::CosignatureVerifier::parse(w.key.trim())
            .map_err(|e| invalid("witnesses.witness.key", format!("{:?}: {e}", w.key)))?;
        let url = scaffold::http::HttpUrl::parse(&w.url)
            .map_err(|e| invalid("witnesses.witness.url", e))?;
        witnesses.push(crate::witnesses::WitnessConfig { key, url });
    }
    // Every cosignature rides in the inclusion proof an enclave accepts (at most 8 KiB, with
    // up to 63 proof hashes and the log's own signature line): refuse what could not fit.
    let worst: usize = witnesses
        .iter()
        .map(|w| w.key.name().len() + 110)
        .sum::<usize>()
        + 3_500;
    if worst > sealing::release::MAX_PROOF_LEN {
        return Err(invalid(
            "witnesses.witness",
            format!(
                "{} witnesses with these names could make an inclusion proof of {worst} bytes, \
                 over the {} an enclave accepts: name fewer, or shorter-named, witnesses",
                witnesses.len(),
                sealing::release::MAX_PROOF_LEN
            ),
        ));
    }
    let required = raw.required.unwrap_or(witnesses.len());
    // The checks an enclave's policy makes (distinct witnesses, 1 ≤ required ≤ n), except the
    // majority: the broker's `required` is its own availability setting, and a broker cannot
    // protect parties from itself; their policies require a majority.
    proofs::cosignature::WitnessPolicy::allowing_minority(
        witnesses.iter().map(|w| w.key.clone()).collect(),
        required,
    )
    .map_err(|e| invalid("witnesses.required", e))?;
    Ok(WitnessesConfig {
        witnesses,
        required,
        timeout: duration("witnesses.timeout", raw.timeout, Duration::from_secs(5))?,
    })
}
