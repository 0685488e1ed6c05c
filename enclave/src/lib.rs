//! The runtime inside the Nitro enclave. At boot it opens the NSM (the real device, or in a
//! development build the simulated one, which a production build refuses), extends its
//! configuration's digest into PCR16 and locks it, then serves the control protocol
//! ([`protocol::wire`]) on its vsock port: health, and fresh attestation documents over a
//! caller's nonce. With a `[model]` in its configuration it acquires a sealed model at boot
//! ([`model`]): the key from the key broker, the ciphertext from the host, decrypted in memory.
//! It holds no state between requests and writes nothing to disk.
//!
//! ```
//! use enclave::{CONFIG_PCR, Config};
//!
//! let config = Config::from_toml("control_port = 5000", std::path::Path::new("."))?;
//! // The value a verifier pins for PCR16: one extension of the configuration's digest.
//! assert_eq!(config.expected_pcr(), attest::PcrValue::ZERO.extend(&config.digest()));
//! assert_eq!(CONFIG_PCR.get(), 16);
//!
//! // Unknown keys are errors.
//! assert!(Config::from_toml("contrl_port = 5000", std::path::Path::new(".")).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod api;
mod config;
#[cfg(feature = "simulated-nsm")]
mod emulator_nsm;
pub mod model;
mod nitro_nsm;
mod runtime;
mod server;
#[cfg(feature = "simulated-nsm")]
mod simulated_nsm;

// The public interface is:
pub use crate::api::inference_api;
pub use crate::config::{
    CONFIG_PCR, Config, ConfigError, ModelConfig, NsmConfig, SimulatedNsmConfig,
};
pub use crate::nitro_nsm::NitroNsm;
pub use crate::runtime::{SIMULATED_NSM_COMPILED, StartError, measure_config, open_nsm, permit};
pub use crate::server::Service;
#[cfg(feature = "simulated-nsm")]
pub use crate::simulated_nsm::{BootMeasurements, Clock, DevelopmentRoot, SimulatedNsm};
pub use protocol::nsm::{AttestationRequest, FIRST_USER_PCR, Nsm, NsmError, PcrState};
