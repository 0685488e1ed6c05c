//! The inference API's place in the enclave: the NSM signs its attestation documents. Its
//! connections arrive on the API's vsock port and are accepted with the control protocol's
//! ([`Service::with_api`](crate::Service::with_api)).

use std::sync::Arc;

use inference::{Api, Attester, Limits};

use crate::config::ModelConfig;
use crate::nsm::{AttestationRequest, Nsm};

/// The NSM signs the API's attestation documents.
struct NsmAttester(Arc<dyn Nsm>);

impl Attester for NsmAttester {
    fn attest(&self, nonce: &[u8], user_data: &[u8], public_key: &[u8]) -> Result<Vec<u8>, String> {
        self.0
            .attest(&AttestationRequest {
                nonce: Some(nonce),
                user_data: Some(user_data),
                public_key: Some(public_key),
            })
            .map_err(|e| e.to_string())
    }
}

/// The API for `model`: a fresh TLS key and receipt key, documents from `nsm`.
pub fn inference_api(nsm: Arc<dyn Nsm>, model: &ModelConfig) -> anyhow::Result<Api> {
    let limits = Limits {
        max_concurrent: model.max_concurrent,
        ..Limits::default()
    };
    Ok(Api::new(
        model.id.as_str(),
        Arc::new(NsmAttester(nsm)),
        limits,
    )?)
}
