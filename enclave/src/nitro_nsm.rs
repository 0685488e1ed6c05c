//! The real Nitro Secure Module, through `/dev/nsm` and AWS's `aws-nitro-enclaves-nsm-api`.

use std::sync::Mutex;

use attest::{PcrIndex, PcrValue};
use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use protocol::wire::NsmKind;
use serde_bytes::ByteBuf;

use protocol::nsm::{AttestationRequest, Nsm, NsmError, PcrState};

const DEVICE: &str = "/dev/nsm";

/// The NSM device of the Nitro enclave this process runs in.
#[derive(Debug)]
pub struct NitroNsm {
    /// The device's file descriptor; requests are serialised through it.
    fd: Mutex<i32>,
}

impl NitroNsm {
    /// Open `/dev/nsm`. Fails outside a Nitro enclave.
    pub fn open() -> Result<Self, NsmError> {
        if !std::path::Path::new(DEVICE).exists() {
            return Err(NsmError::Unavailable {
                path: DEVICE,
                reason: "no such device (is this a Nitro enclave?)".into(),
            });
        }
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(NsmError::Unavailable {
                path: DEVICE,
                reason: "open failed".into(),
            });
        }
        Ok(NitroNsm { fd: Mutex::new(fd) })
    }

    /// Send one request; `pcr` names the PCR it concerns, for the read-only error.
    fn request(&self, request: Request, pcr: Option<PcrIndex>) -> Result<Response, NsmError> {
        let fd = self
            .fd
            .lock()
            .map_err(|_| NsmError::Failure("NSM lock poisoned".into()))?;
        match driver::nsm_process_request(*fd, request) {
            Response::Error(code) => Err(error_from(code, pcr)),
            response => Ok(response),
        }
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        if let Ok(fd) = self.fd.lock() {
            driver::nsm_exit(*fd);
        }
    }
}

fn error_from(code: ErrorCode, pcr: Option<PcrIndex>) -> NsmError {
    match (code, pcr) {
        (ErrorCode::ReadOnlyIndex, Some(index)) => NsmError::ReadOnly(index),
        (
            other @ (ErrorCode::InvalidArgument
            | ErrorCode::InvalidIndex
            | ErrorCode::InputTooLarge),
            _,
        ) => NsmError::InvalidArgument(format!("{other:?}")),
        (other, _) => NsmError::Failure(format!("{other:?}")),
    }
}

fn unexpected(response: &Response) -> NsmError {
    NsmError::Failure(format!(
        "unexpected response {:?}",
        core::mem::discriminant(response)
    ))
}

impl Nsm for NitroNsm {
    fn kind(&self) -> NsmKind {
        NsmKind::Nitro
    }

    fn describe_pcr(&self, index: PcrIndex) -> Result<PcrState, NsmError> {
        let index16 = u16::from(index.get());
        match self.request(Request::DescribePCR { index: index16 }, Some(index))? {
            Response::DescribePCR { lock, data } => Ok(PcrState {
                value: PcrValue::try_from(data.as_slice())
                    .map_err(|e| NsmError::Failure(e.to_string()))?,
                locked: lock,
            }),
            other => Err(unexpected(&other)),
        }
    }

    fn extend_pcr(&self, index: PcrIndex, data: &[u8]) -> Result<PcrValue, NsmError> {
        let request = Request::ExtendPCR {
            index: u16::from(index.get()),
            data: data.to_vec(),
        };
        match self.request(request, Some(index))? {
            Response::ExtendPCR { data } => {
                PcrValue::try_from(data.as_slice()).map_err(|e| NsmError::Failure(e.to_string()))
            }
            other => Err(unexpected(&other)),
        }
    }

    fn lock_pcr(&self, index: PcrIndex) -> Result<(), NsmError> {
        let request = Request::LockPCR {
            index: u16::from(index.get()),
        };
        match self.request(request, Some(index))? {
            Response::LockPCR => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        let mut filled = 0;
        while filled < out.len() {
            let Response::GetRandom { random } = self.request(Request::GetRandom, None)? else {
                return Err(NsmError::Failure("unexpected response to GetRandom".into()));
            };
            if random.is_empty() {
                return Err(NsmError::Failure("GetRandom returned no bytes".into()));
            }
            for (slot, byte) in out.iter_mut().skip(filled).zip(random) {
                *slot = byte;
                filled += 1;
            }
        }
        Ok(())
    }

    fn attest(&self, request: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        let field = |f: Option<&[u8]>| f.map(|b| ByteBuf::from(b.to_vec()));
        let request = Request::Attestation {
            user_data: field(request.user_data),
            nonce: field(request.nonce),
            public_key: field(request.public_key),
        };
        match self.request(request, None)? {
            Response::Attestation { document } => Ok(document),
            other => Err(unexpected(&other)),
        }
    }
}
