//! The inference API's place in the enclave: the NSM signs its attestation documents. Its
//! connections arrive on the API's vsock port and are accepted with the control protocol's
//! ([`Service::with_api`](crate::Service::with_api)).

use std::sync::Arc;

use inference::{Api, Limits};
use protocol::nsm::Nsm;

use crate::config::ModelConfig;

/// The API for `model`: a fresh TLS key and receipt key, documents from `nsm`.
pub fn inference_api(nsm: Arc<dyn Nsm>, model: &ModelConfig) -> Result<Api, inference::StartError> {
    let limits = Limits {
        max_concurrent: model.max_concurrent,
        ..Limits::default()
    };
    Api::new(model.id.as_str(), nsm, limits)
}
