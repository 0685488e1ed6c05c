//! An NSM for tests of the inference API: it signs attestation documents with the function it
//! is given and measures nothing (its PCR operations fail).

use attest::{PcrIndex, PcrValue};
use protocol::nsm::{AttestationRequest, Nsm, NsmError, PcrState};
use protocol::wire::NsmKind;

/// Signs with `.0`; every other operation fails.
pub struct SigningOnly<F>(pub F);

impl<F> std::fmt::Debug for SigningOnly<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningOnly")
    }
}

fn unused() -> NsmError {
    NsmError::Failure("this test's NSM only signs documents".into())
}

impl<F> Nsm for SigningOnly<F>
where
    F: Fn(&AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> + Send + Sync + 'static,
{
    fn kind(&self) -> NsmKind {
        NsmKind::Simulated
    }
    fn describe_pcr(&self, _: PcrIndex) -> Result<PcrState, NsmError> {
        Err(unused())
    }
    fn extend_pcr(&self, _: PcrIndex, _: &[u8]) -> Result<PcrValue, NsmError> {
        Err(unused())
    }
    fn lock_pcr(&self, _: PcrIndex) -> Result<(), NsmError> {
        Err(unused())
    }
    fn fill_random(&self, _: &mut [u8]) -> Result<(), NsmError> {
        Err(unused())
    }
    fn attest(&self, request: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        (self.0)(request)
    }
}
