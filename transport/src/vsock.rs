//! vsock, as in a Nitro enclave: the enclave listens on its ports, the host connects to the
//! enclave's CID, and the enclave reaches its parent at [`PARENT_CID`].

use std::io;

use tokio::sync::mpsc;
use tokio_vsock::{VMADDR_CID_ANY, VsockAddr, VsockListener, VsockStream};

use crate::Transport;
use crate::listener::{BACKLOG, Listener, pause_after_accept_error};

/// The parent instance's CID as seen from inside a Nitro enclave.
pub const PARENT_CID: u32 = 3;

/// vsock to one enclave (host side) or from inside it (enclave side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vsock {
    /// The enclave's CID (used by the host to connect; the enclave listens on any CID).
    pub cid: u32,
}

impl Vsock {
    /// vsock to the enclave with this CID.
    pub fn new(cid: u32) -> Self {
        Vsock { cid }
    }

    /// The enclave's own view: it only listens, and reaches its parent at CID 3.
    pub fn inside_enclave() -> Self {
        Vsock {
            cid: VMADDR_CID_ANY,
        }
    }
}

impl Transport for Vsock {
    type Stream = VsockStream;

    async fn connect(&self, port: u32) -> io::Result<VsockStream> {
        VsockStream::connect(VsockAddr::new(self.cid, port)).await
    }

    async fn listen(&self, ports: &[u32]) -> io::Result<Listener<VsockStream>> {
        let (sender, incoming) = mpsc::channel(BACKLOG);
        let mut tasks = Vec::with_capacity(ports.len());
        for &port in ports {
            let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))?;
            let sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            if sender.send((port, stream)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => pause_after_accept_error(&e, port).await,
                    }
                }
            }));
        }
        Ok(Listener::new(incoming, tasks, None))
    }

    async fn connect_parent(&self, port: u32) -> io::Result<VsockStream> {
        VsockStream::connect(VsockAddr::new(PARENT_CID, port)).await
    }

    async fn listen_parent(&self, port: u32) -> io::Result<Listener<VsockStream>> {
        self.listen(&[port]).await
    }
}
