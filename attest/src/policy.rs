//! What a verifier requires of an authentic document: measurements, debug mode, freshness,
//! nonce and region. Dangerous choices are spelled out: allowing debug enclaves or documents of
//! any age needs a call named `dangerous_…`.

use core::time::Duration;
use std::collections::BTreeMap;

use crate::document::Payload;
use crate::error::{PcrDifference, PolicyViolation};
use crate::time::Timestamp;
use crate::types::{Nonce, OutOfRange, PcrIndex, PcrValue, Region};

/// The maximum age a [`Policy`] allows unless told otherwise.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// How far in the future of the verification time a document may be dated (clock skew between
/// the Nitro hypervisor and the verifier).
pub const ALLOWED_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// One allowed set of measurements: every listed PCR must match exactly. An all-zero value
/// means "must be all zeros", never "don't care".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasurementSet {
    pcrs: BTreeMap<PcrIndex, PcrValue>,
    /// The subject of the image-signing certificate PCR8 was derived from, when named.
    signer: Option<String>,
}

/// Why a policy does not pin the enclave image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnpinnedImage {
    /// The policy has no measurement set: any image is accepted.
    #[error(
        "no measurement set: any enclave image would be accepted; pin PCR0 (or PCR0, 1 and 2), \
         or PCR8 with the signing certificate it measures (`attest policy from-image` prints the \
         set for an image)"
    )]
    NoMeasurements,
    /// One set pins neither PCR0 nor a named signing certificate.
    #[error(
        "measurement set {set} pins neither PCR0 nor PCR8 with a named signing_certificate, so \
         it does not identify an image: PCR3 and PCR4 are chosen by the parent instance, PCR16 \
         and above are extended by the enclave's own code, PCR8 alone names no signer, and an \
         all-zero PCR0 is what every debug-mode enclave reports"
    )]
    SetPinsNoImage {
        /// The set (0-based, in policy order).
        set: usize,
    },
}

/// PCR0 measures the whole image; PCR8 the certificate that signed it.
const IMAGE_PCR: PcrIndex = PcrIndex::ZERO;
const SIGNER_PCR: PcrIndex = PcrIndex::SIGNER;

impl MeasurementSet {
    /// The PCRs this set pins.
    pub fn pcrs(&self) -> &BTreeMap<PcrIndex, PcrValue> {
        &self.pcrs
    }

    /// A set that pins PCR0 (the whole image) to `pcr0`; add further PCRs with
    /// [`MeasurementSet::and`].
    pub fn pcr0(pcr0: PcrValue) -> Self {
        Self::from_nonempty(BTreeMap::from([(IMAGE_PCR, pcr0)]))
    }

    /// This set, also pinning `index` to `value`.
    #[must_use]
    pub fn and(mut self, index: PcrIndex, value: PcrValue) -> Self {
        self.pcrs.insert(index, value);
        self
    }

    /// A set from PCRs the caller knows to be non-empty.
    pub(crate) fn from_nonempty(pcrs: BTreeMap<PcrIndex, PcrValue>) -> Self {
        Self { pcrs, signer: None }
    }

    /// Pin PCR8 to the image-signing certificate `certificate` (DER), naming it: the set then
    /// accepts any image that certificate's key signed. If the set already pins PCR8, the
    /// certificate must be the one it measures.
    pub fn signed_by(mut self, certificate: &[u8]) -> Result<Self, OutOfRange> {
        let info = crate::cert::CertInfo::parse(certificate, crate::CertPosition::Leaf)
            .map_err(|_| OutOfRange::new("signing_certificate", "one X.509 certificate"))?;
        let measured = PcrValue::measure(certificate);
        match self.pcrs.get(&SIGNER_PCR) {
            Some(pinned) if *pinned != measured => {
                return Err(OutOfRange::new(
                    "pcr8",
                    "the measurement of the signing_certificate given with it",
                ));
            }
            _ => {}
        }
        self.pcrs.insert(SIGNER_PCR, measured);
        self.signer = Some(info.subject);
        Ok(self)
    }

    /// The subject of the signing certificate PCR8 was derived from, when the set names one.
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }

    /// The set identifies an image: it pins PCR0 to a value other than all zeros (which every
    /// debug-mode enclave reports, whatever it runs), or PCR8 with a named signing certificate.
    pub fn pins_image(&self) -> bool {
        self.pcrs
            .get(&IMAGE_PCR)
            .is_some_and(|pcr0| *pcr0 != PcrValue::ZERO)
            || self.signer.is_some()
    }

    fn first_difference(
        &self,
        set: usize,
        actual: &BTreeMap<PcrIndex, PcrValue>,
    ) -> Option<PcrDifference> {
        self.pcrs.iter().find_map(|(index, expected)| {
            let found = actual.get(index);
            (found != Some(expected)).then(|| PcrDifference {
                set,
                index: *index,
                expected: *expected,
                actual: found.copied(),
            })
        })
    }
}

impl TryFrom<BTreeMap<PcrIndex, PcrValue>> for MeasurementSet {
    type Error = OutOfRange;

    fn try_from(pcrs: BTreeMap<PcrIndex, PcrValue>) -> Result<Self, Self::Error> {
        if pcrs.is_empty() {
            return Err(OutOfRange::new("a measurement set", "at least one PCR"));
        }
        Ok(Self::from_nonempty(pcrs))
    }
}

/// The requirements an authentic document must meet.
#[derive(Clone, Debug)]
pub struct Policy {
    measurements: Vec<MeasurementSet>,
    any_measurements: bool,
    allow_debug: bool,
    max_age: Option<Duration>,
    nonce: Option<Nonce>,
    regions: Vec<Region>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// A policy that accepts nothing until it is told which images to accept
    /// ([`allow_measurements`](Self::allow_measurements), or
    /// [`dangerous_any_measurements`](Self::dangerous_any_measurements)); debug enclaves
    /// refused, at most [`DEFAULT_MAX_AGE`] old, no nonce expected, any region.
    #[must_use]
    pub fn new() -> Self {
        Self {
            measurements: Vec::new(),
            any_measurements: false,
            allow_debug: false,
            max_age: Some(DEFAULT_MAX_AGE),
            nonce: None,
            regions: Vec::new(),
        }
    }

    /// Allow one more set of measurements: a document must match one of the sets given.
    #[must_use]
    pub fn allow_measurements(mut self, set: MeasurementSet) -> Self {
        self.measurements.push(set);
        self
    }

    /// Accept any image when no measurement set is given: the document is checked for
    /// authenticity, debug mode, age, nonce and region, but could come from any enclave. Fit
    /// for asking "is this a genuine Nitro document?", never for deciding what to trust.
    #[must_use]
    pub fn dangerous_any_measurements(mut self) -> Self {
        self.any_measurements = true;
        self
    }

    /// Refuse documents made longer than `max_age` before the verification time.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Accept documents of any age. Replay protection must then come from somewhere else.
    #[must_use]
    pub fn dangerous_any_age(mut self) -> Self {
        self.max_age = None;
        self
    }

    /// Accept enclaves in debug mode (PCR0 all zeros), whose memory the host can read.
    #[must_use]
    pub fn dangerous_allow_debug(mut self) -> Self {
        self.allow_debug = true;
        self
    }

    /// Require the document to carry exactly this nonce.
    #[must_use]
    pub fn expect_nonce(mut self, nonce: Nonce) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Accept only documents whose chain names one of these regions. An empty list allows any.
    #[must_use]
    pub fn allow_regions(mut self, regions: impl IntoIterator<Item = Region>) -> Self {
        self.regions = regions.into_iter().collect();
        self
    }

    /// The allowed measurement sets (empty: no image is accepted, unless
    /// [`accepts_any_measurements`](Self::accepts_any_measurements)).
    pub fn measurements(&self) -> &[MeasurementSet] {
        &self.measurements
    }

    /// Whether a policy without measurement sets accepts any image.
    pub fn accepts_any_measurements(&self) -> bool {
        self.any_measurements && self.measurements.is_empty()
    }

    /// Whether the policy admits only identified images: at least one measurement set, and
    /// every set pins PCR0, or PCR8 with a named signing certificate
    /// ([`MeasurementSet::pins_image`]). A key release or a prompt must never go to an enclave
    /// that a policy failing this would accept.
    pub fn check_pins_image(&self) -> Result<(), UnpinnedImage> {
        if self.measurements.is_empty() {
            return Err(UnpinnedImage::NoMeasurements);
        }
        match self.measurements.iter().position(|set| !set.pins_image()) {
            Some(set) => Err(UnpinnedImage::SetPinsNoImage { set }),
            None => Ok(()),
        }
    }

    /// Whether debug enclaves are accepted.
    pub fn allows_debug(&self) -> bool {
        self.allow_debug
    }

    /// The maximum age, or `None` if any age is accepted.
    pub fn max_age_limit(&self) -> Option<Duration> {
        self.max_age
    }

    /// The allowed regions (empty: any).
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub(crate) fn check(
        &self,
        payload: &Payload,
        region: Option<&Region>,
        at: Timestamp,
    ) -> Result<(), PolicyViolation> {
        let pcr0 = payload.pcr0().ok_or(PolicyViolation::NoPcr0)?;
        if *pcr0 == PcrValue::ZERO && !self.allow_debug {
            return Err(PolicyViolation::DebugMode);
        }

        self.check_measurements(&payload.pcrs)?;
        self.check_age(payload.timestamp, at)?;

        if let Some(expected) = &self.nonce {
            let expected_hex = data_encoding::HEXLOWER.encode(expected.as_bytes());
            match &payload.nonce {
                None => {
                    return Err(PolicyViolation::NonceMissing {
                        expected: expected_hex,
                    });
                }
                Some(actual) if !expected.matches(actual) => {
                    return Err(PolicyViolation::NonceMismatch {
                        expected: expected_hex,
                        actual: data_encoding::HEXLOWER.encode(actual),
                    });
                }
                Some(_) => {}
            }
        }

        if !self.regions.is_empty() {
            let region = region.ok_or(PolicyViolation::RegionUnknown)?;
            if !self.regions.contains(region) {
                return Err(PolicyViolation::RegionNotAllowed {
                    region: region.clone(),
                    allowed: self.regions.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_measurements(
        &self,
        pcrs: &BTreeMap<PcrIndex, PcrValue>,
    ) -> Result<(), PolicyViolation> {
        if self.measurements.is_empty() {
            return if self.any_measurements {
                Ok(())
            } else {
                Err(PolicyViolation::NoMeasurements)
            };
        }
        let mut differences = Vec::with_capacity(self.measurements.len());
        for (i, set) in self.measurements.iter().enumerate() {
            match set.first_difference(i, pcrs) {
                None => return Ok(()),
                Some(d) => differences.push(d),
            }
        }
        match <[PcrDifference; 1]>::try_from(differences) {
            Ok([only]) => Err(PolicyViolation::PcrMismatch(only)),
            Err(all) => Err(PolicyViolation::NoMeasurementSetMatched(all)),
        }
    }

    fn check_age(&self, timestamp: Timestamp, at: Timestamp) -> Result<(), PolicyViolation> {
        if timestamp > at.saturating_add(ALLOWED_CLOCK_SKEW) {
            return Err(PolicyViolation::FromTheFuture { timestamp, at });
        }
        if let Some(max_age) = self.max_age {
            let age = at.duration_since(timestamp).unwrap_or(Duration::ZERO);
            if age > max_age {
                return Err(PolicyViolation::Stale {
                    timestamp,
                    at,
                    age,
                    max_age,
                });
            }
        }
        Ok(())
    }
}
