//! What the enclave needs from the Nitro Secure Module, as one trait, [`Nsm`]: the enclave's
//! runtime extends and locks its configuration PCR through it, and its inference API has
//! attestation documents signed through it. The enclave implements it twice: the real device
//! (`enclave::NitroNsm`) and, in development builds only, a software module that signs under a
//! development root (`enclave::SimulatedNsm`).

use attest::{PcrIndex, PcrValue};

use crate::wire::NsmKind;

/// The first PCR an enclave may extend; PCR0–15 are locked by the hypervisor at boot.
pub const FIRST_USER_PCR: u8 = 16;

/// A PCR's current value and whether it can still be extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcrState {
    /// The value.
    pub value: PcrValue,
    /// Whether the PCR is read-only.
    pub locked: bool,
}

/// What to put in an attestation document besides the PCRs, each at most 1024 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttestationRequest<'a> {
    /// Application data, for example a hash binding the request.
    pub user_data: Option<&'a [u8]>,
    /// The verifier's nonce.
    pub nonce: Option<&'a [u8]>,
    /// A public key the enclave holds the private half of.
    pub public_key: Option<&'a [u8]>,
}

/// Why the NSM refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NsmError {
    /// The device could not be opened.
    #[error("cannot open the NSM device {path}: {reason}")]
    Unavailable {
        /// The device path.
        path: &'static str,
        /// Why.
        reason: String,
    },
    /// The PCR is locked.
    #[error("PCR{0} is locked")]
    ReadOnly(PcrIndex),
    /// The NSM rejected the request's arguments.
    #[error("the NSM rejected the request: {0}")]
    InvalidArgument(String),
    /// The NSM failed, or answered with something that does not fit the request.
    #[error("NSM failure: {0}")]
    Failure(String),
}

/// The Nitro Secure Module operations the enclave uses. Implementations are shared across
/// request tasks.
pub trait Nsm: core::fmt::Debug + Send + Sync + 'static {
    /// Which module this is (reported in health responses).
    fn kind(&self) -> NsmKind;

    /// A PCR's value and lock state.
    fn describe_pcr(&self, index: PcrIndex) -> Result<PcrState, NsmError>;

    /// Extend a PCR with `data` (`PCR = SHA-384(PCR ‖ data)`), returning the new value.
    fn extend_pcr(&self, index: PcrIndex, data: &[u8]) -> Result<PcrValue, NsmError>;

    /// Make a PCR read-only until the enclave stops.
    fn lock_pcr(&self, index: PcrIndex) -> Result<(), NsmError>;

    /// Fill `out` with random bytes from the module.
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError>;

    /// A signed attestation document (COSE_Sign1) over the PCRs and the request's fields.
    fn attest(&self, request: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError>;
}
