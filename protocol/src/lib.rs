//! What the enclave and its peers say to each other, above the verifier and below every service:
//!
//! - [`wire`]: the control protocol's messages (health, attestation over a nonce), strict and
//!   bounded, and its frames over blocking streams;
//! - [`frame`]: the same frames over async streams (what the services use);
//! - [`channel`]: the inference channel's binding of the enclave's TLS certificate into its
//!   attestation documents, and the names its API and clients share;
//! - [`nsm`]: what the enclave asks of the Nitro Secure Module (PCRs, randomness, attestation
//!   documents), as one trait its runtime and its inference API share.
//!
//! Every frame is a 4-byte big-endian length, checked against [`wire::MAX_FRAME_LEN`] before
//! anything is allocated, then one CBOR message.

#![forbid(unsafe_code)]

pub mod channel;
pub mod frame;
pub mod nsm;
pub mod wire;
