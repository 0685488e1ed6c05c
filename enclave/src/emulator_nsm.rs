//! The NSM of QEMU's emulated Nitro enclave, made usable for development: compiled in only with
//! the `simulated-nsm` feature, so a production build refuses it like the simulated NSM.
//!
//! QEMU's `nitro-enclave` machine measures the image it boots and provides the NSM as a virtio
//! device: PCRs, locks, randomness and attestation documents all come from the real `/dev/nsm`
//! through [`NitroNsm`](crate::NitroNsm), the production code path. But its documents are
//! unsigned (there is no AWS key in an emulator), and no verifier may accept an unsigned
//! document. This module takes each document the device makes, checks that it is an unsigned
//! one that echoes exactly what was asked (nonce, user data, public key), and signs its PCRs
//! again under a simulated Nitro PKI whose root is a development root, as the simulated NSM
//! signs. A verifier that trusts that development root then judges what QEMU measured.
//!
//! It refuses a document the device signed: on real hardware the real signature is the point,
//! and re-signing it would hide it.

use std::collections::BTreeMap;

use attest::{PcrIndex, PcrValue};
use protocol::nsm::{AttestationRequest, Nsm, NsmError, PcrState};
use protocol::wire::NsmKind;

use crate::simulated_nsm::SimulatedSigner;

/// The emulator's NSM device `D` (the real `/dev/nsm` in service), with its unsigned documents
/// signed again under a development root.
pub(crate) struct EmulatorNsm<D> {
    device: D,
    signer: SimulatedSigner,
}

impl<D: core::fmt::Debug> core::fmt::Debug for EmulatorNsm<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EmulatorNsm")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<D: Nsm> EmulatorNsm<D> {
    /// The device, with documents signed by `signer`.
    pub(crate) fn new(device: D, signer: SimulatedSigner) -> Self {
        EmulatorNsm { device, signer }
    }
}

/// Whether the document's field is exactly what was asked for. QEMU leaves an absent field out
/// or null; an empty one asked for is empty.
fn echoes(asked: Option<&[u8]>, got: Option<&[u8]>) -> bool {
    asked.unwrap_or_default() == got.unwrap_or_default()
}

impl<D: Nsm> Nsm for EmulatorNsm<D> {
    fn kind(&self) -> NsmKind {
        NsmKind::Emulator
    }

    fn describe_pcr(&self, index: PcrIndex) -> Result<PcrState, NsmError> {
        self.device.describe_pcr(index)
    }

    fn extend_pcr(&self, index: PcrIndex, data: &[u8]) -> Result<PcrValue, NsmError> {
        self.device.extend_pcr(index, data)
    }

    fn lock_pcr(&self, index: PcrIndex) -> Result<(), NsmError> {
        self.device.lock_pcr(index)
    }

    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        self.device.fill_random(out)
    }

    fn attest(&self, request: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        let document = self.device.attest(request)?;
        let unsigned = attest::parse_unsigned(&document).map_err(|e| {
            NsmError::Failure(format!(
                "the emulator NSM signs only the unsigned documents of an emulated enclave; the \
                 device gave another: {e}"
            ))
        })?;
        let fields = unsigned.unverified();
        for (name, asked, got) in [
            ("nonce", request.nonce, fields.nonce),
            ("user_data", request.user_data, fields.user_data),
            ("public_key", request.public_key, fields.public_key),
        ] {
            if !echoes(asked, got) {
                return Err(NsmError::Failure(format!(
                    "the device's document does not carry the {name} asked for"
                )));
            }
        }
        let pcrs: BTreeMap<PcrIndex, PcrValue> = fields.pcrs.clone();
        self.signer.sign(pcrs, request)
    }
}

#[cfg(test)]
mod tests;
