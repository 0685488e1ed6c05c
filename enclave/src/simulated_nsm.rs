//! A software Nitro Secure Module, compiled in only with the `simulated-nsm` feature. It keeps
//! 32 PCRs with the NSM's semantics (SHA-384 extend, PCR0–15 locked at boot, locks that last
//! until the process ends) and signs documents in exactly the real format under a simulated
//! Nitro PKI whose root is a development root ([`attest::sim`]). Verifiers accept them only when
//! they trust that root; with the AWS root they are refused.

use std::collections::BTreeMap;
use std::sync::Mutex;

use attest::sim::{SimulatedPki, SimulatedRequest};
use attest::{PCR_SLOTS, PcrIndex, PcrValue, Region, Timestamp};
use protocol::wire::NsmKind;
use rustls_pki_types::CertificateDer;

use protocol::nsm::{AttestationRequest, FIRST_USER_PCR, Nsm, NsmError, PcrState};

/// How long before the simulated instance CA expires a new one is issued: a leaf lives three
/// hours and must not outlive its issuer.
const PKI_RENEWAL_MARGIN_SECS: u64 = 4 * 3600;

/// The values a simulated enclave reports in PCR0, PCR1 and PCR2, as if measured from its image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootMeasurements {
    /// PCR0: the whole image.
    pub pcr0: PcrValue,
    /// PCR1: kernel and boot ramdisk.
    pub pcr1: PcrValue,
    /// PCR2: the application.
    pub pcr2: PcrValue,
    /// PCR8: the image's signing certificate, for a signed image.
    pub pcr8: Option<PcrValue>,
}

/// The development root the simulated PKI issues under.
#[derive(Clone)]
pub struct DevelopmentRoot {
    /// The root certificate (DER).
    pub certificate: CertificateDer<'static>,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl core::fmt::Debug for DevelopmentRoot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DevelopmentRoot").finish_non_exhaustive()
    }
}

/// A clock, injected so that tests never depend on the wall clock.
pub type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

/// The software NSM.
pub struct SimulatedNsm {
    signer: SimulatedSigner,
    pcrs: Mutex<[PcrState; 32]>,
}

impl core::fmt::Debug for SimulatedNsm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimulatedNsm")
            .field("region", &self.signer.region)
            .finish_non_exhaustive()
    }
}

/// Signs documents in the real format under a simulated Nitro PKI: regional, zonal and instance
/// CAs issued under the development root, renewed before the instance CA would expire.
pub(crate) struct SimulatedSigner {
    root: DevelopmentRoot,
    region: Region,
    clock: Clock,
    pki: Mutex<Option<SimulatedPki>>,
}

impl SimulatedSigner {
    pub(crate) fn new(root: DevelopmentRoot, region: Region, clock: Clock) -> Self {
        SimulatedSigner {
            root,
            region,
            clock,
            pki: Mutex::new(None),
        }
    }

    /// A document over `pcrs` and the request's fields, signed now.
    pub(crate) fn sign(
        &self,
        pcrs: BTreeMap<PcrIndex, PcrValue>,
        request: &AttestationRequest<'_>,
    ) -> Result<Vec<u8>, NsmError> {
        let now = (self.clock)();
        let mut pki = self
            .pki
            .lock()
            .map_err(|_| NsmError::Failure("simulated PKI lock poisoned".into()))?;
        let renew = pki.as_ref().is_none_or(|pki| {
            pki.not_after().unix_secs() < now.unix_secs().saturating_add(PKI_RENEWAL_MARGIN_SECS)
        });
        if renew {
            let fresh = SimulatedPki::new(
                &self.root.certificate,
                &self.root.key_pem,
                self.region.clone(),
                now,
            )
            .map_err(|e| NsmError::Failure(format!("simulated PKI: {e}")))?;
            tracing::info!(pki = ?fresh, "issued simulated Nitro CAs");
            *pki = Some(fresh);
        }
        let pki = pki
            .as_ref()
            .ok_or_else(|| NsmError::Failure("no simulated PKI".into()))?;
        let request = SimulatedRequest {
            pcrs,
            public_key: request.public_key,
            user_data: request.user_data,
            nonce: request.nonce,
        };
        pki.attest(&request, now)
            .map_err(|e| NsmError::InvalidArgument(e.to_string()))
    }
}

impl SimulatedNsm {
    /// A module that has just booted an image with these measurements.
    pub fn new(
        root: DevelopmentRoot,
        region: Region,
        boot: BootMeasurements,
        clock: Clock,
    ) -> Self {
        let mut pcrs = [PcrState {
            value: PcrValue::ZERO,
            locked: false,
        }; 32];
        for (index, pcr) in pcrs.iter_mut().enumerate() {
            pcr.locked = index < usize::from(FIRST_USER_PCR);
            pcr.value = match index {
                0 => boot.pcr0,
                1 => boot.pcr1,
                2 => boot.pcr2,
                8 => boot.pcr8.unwrap_or(PcrValue::ZERO),
                _ => PcrValue::ZERO,
            };
        }
        SimulatedNsm {
            signer: SimulatedSigner::new(root, region, clock),
            pcrs: Mutex::new(pcrs),
        }
    }

    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut [PcrState; 32]) -> Result<T, NsmError>,
    ) -> Result<T, NsmError> {
        let mut state = self
            .pcrs
            .lock()
            .map_err(|_| NsmError::Failure("simulated NSM lock poisoned".into()))?;
        f(&mut state)
    }
}

fn slot(state: &mut [PcrState; 32], index: PcrIndex) -> Result<&mut PcrState, NsmError> {
    state
        .get_mut(usize::from(index.get()))
        .ok_or_else(|| NsmError::InvalidArgument(format!("PCR{index} out of range")))
}

impl Nsm for SimulatedNsm {
    fn kind(&self) -> NsmKind {
        NsmKind::Simulated
    }

    fn describe_pcr(&self, index: PcrIndex) -> Result<PcrState, NsmError> {
        self.with_state(|state| slot(state, index).map(|pcr| *pcr))
    }

    fn extend_pcr(&self, index: PcrIndex, data: &[u8]) -> Result<PcrValue, NsmError> {
        if data.len() > attest::MAX_USER_FIELD_LEN {
            return Err(NsmError::InvalidArgument(
                "extend data over 1024 bytes".into(),
            ));
        }
        self.with_state(|state| {
            let pcr = slot(state, index)?;
            if pcr.locked {
                return Err(NsmError::ReadOnly(index));
            }
            pcr.value = pcr.value.extend(data);
            Ok(pcr.value)
        })
    }

    fn lock_pcr(&self, index: PcrIndex) -> Result<(), NsmError> {
        self.with_state(|state| {
            slot(state, index)?.locked = true;
            Ok(())
        })
    }

    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        aws_lc_rs::rand::fill(out).map_err(|_| NsmError::Failure("random generation failed".into()))
    }

    fn attest(&self, request: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        // Like the real module: PCR0–15 always, and the enclave's own PCRs once used.
        let pcrs = self.with_state(|state| {
            let mut pcrs = BTreeMap::new();
            for (index, pcr) in (0..PCR_SLOTS).zip(state.iter()) {
                if index < FIRST_USER_PCR || pcr.locked || pcr.value != PcrValue::ZERO {
                    let index = PcrIndex::try_from(u64::from(index))
                        .map_err(|e| NsmError::Failure(e.to_string()))?;
                    pcrs.insert(index, pcr.value);
                }
            }
            Ok(pcrs)
        })?;
        self.signer.sign(pcrs, request)
    }
}

#[cfg(test)]
mod tests;
