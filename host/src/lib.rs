//! The parent-instance daemon. The host is trusted for nothing but availability: it launches
//! and supervises the enclave, forwards client bytes to the enclave's vsock port without
//! reading them, and relays the enclave's outbound connections to one allowlisted address per
//! port. Everything that matters (documents, keys, prompts) is protected end to end between the
//! enclave and its peers, so whatever the host does to the bytes can only deny service.
//!
//! ```
//! use host::HostConfig;
//!
//! let config = HostConfig::from_toml(r#"
//!     [enclave]
//!     mode = "nitro"
//!     [enclave.nitro]
//!     eif = "/opt/enclave.eif"
//!     cpu_count = 2
//!     memory_mib = 4096
//!
//!     [[forward]]
//!     listen = "0.0.0.0:8443"
//!     enclave_port = 5000
//! "#, std::path::Path::new("/etc/sovereign"))?;
//! assert_eq!(config.forwards[0].enclave_port, 5000);
//!
//! // A relay must name exactly one address.
//! assert!(HostConfig::from_toml("[enclave]\nmode = \"nitro\"\n[[relay]]\nport = 8001\ntarget = \"*\"",
//!     std::path::Path::new(".")).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod admin;
mod config;
pub mod dev;
pub mod emulator;
pub mod forward;
pub mod launcher;
mod metrics;
pub mod model_source;
pub mod pump;
pub mod relay;
mod state;
pub mod supervisor;

// The public interface is:
pub use crate::config::{
    ConfigError, EnclaveSettings, Forward, HostConfig, Launch, NitroSettings, Relay,
    sibling_executable,
};
pub use crate::metrics::{Metrics, names as metric_names};
pub use crate::state::{Shared, Status};
