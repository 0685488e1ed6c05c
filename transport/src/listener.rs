//! A listener over one or more ports, the same for both transports: accepting runs in
//! background tasks (one per vsock port, or one per hybrid socket with a handshake task per
//! connection), so a slow or silent peer never holds up the next connection.

use std::io;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many accepted connections may wait for [`Listener::accept`].
pub(crate) const BACKLOG: usize = 64;

/// Accepted connections, each with the port it was made to.
#[derive(Debug)]
pub struct Listener<S> {
    incoming: mpsc::Receiver<(u32, S)>,
    tasks: Vec<JoinHandle<()>>,
    /// A socket file this listener created and removes when dropped.
    socket_file: Option<PathBuf>,
}

impl<S> Listener<S> {
    pub(crate) fn new(
        incoming: mpsc::Receiver<(u32, S)>,
        tasks: Vec<JoinHandle<()>>,
        socket_file: Option<PathBuf>,
    ) -> Self {
        Listener {
            incoming,
            tasks,
            socket_file,
        }
    }

    /// The next connection and the port it was made to.
    pub async fn accept(&mut self) -> io::Result<(u32, S)> {
        self.incoming.recv().await.ok_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the listener's sockets closed")
        })
    }
}

impl<S> Drop for Listener<S> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.socket_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Back off briefly after an accept error (for example, out of file descriptors) instead of
/// spinning or giving up on the port.
pub(crate) async fn pause_after_accept_error(error: &io::Error, port: u32) {
    tracing::warn!(port, %error, "accept failed; retrying");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
