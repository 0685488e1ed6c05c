//! How the enclave and its host reach each other. In production that is vsock: the enclave
//! listens on its ports, the host connects to the enclave's CID, and the enclave reaches the
//! host (for example its relay to the key broker) at CID 3. Development machines have no vsock,
//! so the same [`Transport`] trait is also implemented over Unix sockets, addressed the way
//! Firecracker's hybrid vsock does it: the host connects to one socket and writes
//! `CONNECT <port>\n`; the enclave reaches host port `P` at `<socket>_<P>`. Switching between
//! them is configuration only ([`Endpoint`]).
//!
//! The control protocol's frames over these streams are the `protocol` crate's.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use transport::{Endpoint, Transport};
//!
//! let endpoint: Endpoint = "unix:/tmp/enclave.sock".parse().expect("an endpoint");
//! match endpoint {
//!     Endpoint::Vsock(vsock) => { let _stream = vsock.connect(5000).await?; }
//!     Endpoint::Hybrid(hybrid) => { let _stream = hybrid.connect(5000).await?; }
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod endpoint;
mod hybrid;
mod listener;
mod vsock;

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

// The public interface is:
pub use crate::endpoint::{Endpoint, InvalidEndpoint};
pub use crate::hybrid::{HANDSHAKE_TIMEOUT, HybridVsock};
pub use crate::listener::Listener;
pub use crate::vsock::{PARENT_CID, Vsock};

/// A byte stream between the enclave and its host.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// The channel between an enclave and its parent instance. Ports are vsock ports (32 bits).
pub trait Transport: Clone + Send + Sync + 'static {
    /// The stream both directions use.
    type Stream: Connection;

    /// Host side: open a connection to the enclave's `port`.
    fn connect(&self, port: u32) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Enclave side: accept the host's connections to any of `ports`.
    fn listen(
        &self,
        ports: &[u32],
    ) -> impl Future<Output = io::Result<Listener<Self::Stream>>> + Send;

    /// Enclave side: open a connection to the host's `port`.
    fn connect_parent(&self, port: u32) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Host side: accept the enclave's connections to the host's `port`.
    fn listen_parent(
        &self,
        port: u32,
    ) -> impl Future<Output = io::Result<Listener<Self::Stream>>> + Send;
}
