//! Unix sockets addressed like Firecracker's hybrid vsock, for development and tests (a kernel
//! without vsock loopback can still run enclave and host side by side).
//!
//! - Host to enclave: connect to the socket at `path`, write `CONNECT <port>\n`, read
//!   `OK <n>\n`; from then on the stream is the enclave's port. If nothing listens on that port
//!   the enclave closes the connection, as Firecracker does.
//! - Enclave to host: connect to `<path>_<port>`, where the host listens.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::Transport;
use crate::listener::{BACKLOG, Listener, pause_after_accept_error};

/// How long either side waits for the other's half of the `CONNECT` handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// `CONNECT 4294967295\n` and `OK 4294967295\n` both fit.
const MAX_HANDSHAKE_LINE: usize = 32;

/// Hybrid vsock over the Unix socket at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HybridVsock {
    path: PathBuf,
}

impl HybridVsock {
    /// Hybrid vsock whose enclave-side socket is `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        HybridVsock { path: path.into() }
    }

    /// The enclave-side socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket where the host listens for the enclave's connections to `port`.
    pub fn parent_socket(&self, port: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!("_{port}"));
        PathBuf::from(name)
    }
}

impl Transport for HybridVsock {
    type Stream = UnixStream;

    async fn connect(&self, port: u32) -> io::Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path).await?;
        let handshake = async {
            stream
                .write_all(format!("CONNECT {port}\n").as_bytes())
                .await?;
            let line = read_line(&mut stream).await?;
            match line.strip_prefix("OK ") {
                Some(n) if n.parse::<u32>().is_ok() => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected hybrid vsock handshake reply",
                )),
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nothing listens on enclave port {port}"),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "hybrid vsock handshake timed out",
            )),
        }
    }

    async fn listen(&self, ports: &[u32]) -> io::Result<Listener<UnixStream>> {
        let listener = bind_fresh(&self.path)?;
        let ports: Arc<[u32]> = ports.into();
        let (sender, incoming) = mpsc::channel(BACKLOG);
        let next_local_port = Arc::new(AtomicU32::new(1 << 30));
        let task = tokio::spawn(async move {
            loop {
                let mut stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        pause_after_accept_error(&e, 0).await;
                        continue;
                    }
                };
                let (sender, ports, next) =
                    (sender.clone(), ports.clone(), next_local_port.clone());
                tokio::spawn(async move {
                    let Ok(Ok(port)) = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        accept_handshake(&mut stream, &ports),
                    )
                    .await
                    else {
                        return;
                    };
                    let local = next.fetch_add(1, Ordering::Relaxed);
                    if stream
                        .write_all(format!("OK {local}\n").as_bytes())
                        .await
                        .is_ok()
                    {
                        let _ = sender.send((port, stream)).await;
                    }
                });
            }
        });
        Ok(Listener::new(incoming, vec![task], Some(self.path.clone())))
    }

    async fn connect_parent(&self, port: u32) -> io::Result<UnixStream> {
        UnixStream::connect(self.parent_socket(port)).await
    }

    async fn listen_parent(&self, port: u32) -> io::Result<Listener<UnixStream>> {
        let path = self.parent_socket(port);
        let listener = bind_fresh(&path)?;
        let (sender, incoming) = mpsc::channel(BACKLOG);
        let task = tokio::spawn(async move {
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
        });
        Ok(Listener::new(incoming, vec![task], Some(path)))
    }
}

/// Bind a Unix socket, replacing a stale socket file left by a process that died, but never
/// any other kind of file.
fn bind_fresh(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
}

/// Read `CONNECT <port>\n` and return the port if it is one of `ports`.
async fn accept_handshake(stream: &mut UnixStream, ports: &[u32]) -> io::Result<u32> {
    let line = read_line(stream).await?;
    let port = line
        .strip_prefix("CONNECT ")
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a CONNECT line"))?;
    if ports.contains(&port) {
        Ok(port)
    } else {
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("nothing listens on port {port}"),
        ))
    }
}

/// One handshake line, without its newline, read a byte at a time so that nothing after it is
/// consumed.
async fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::with_capacity(MAX_HANDSHAKE_LINE);
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        if line.len() == MAX_HANDSHAKE_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake line too long",
            ));
        }
        line.push(byte);
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "handshake line is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn socket_in(dir: &Path) -> HybridVsock {
        HybridVsock::new(dir.join("enclave.sock"))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("transport-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn connect_reaches_the_requested_port_only() {
        let dir = temp_dir("ports");
        let transport = socket_in(&dir);
        let mut listener = transport.listen(&[5000, 5001]).await.unwrap();

        let mut client = transport.connect(5001).await.unwrap();
        let (port, mut server) = listener.accept().await.unwrap();
        assert_eq!(port, 5001);
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        let refused = transport.connect(6000).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        drop(listener);
        assert!(!transport.path().exists(), "the socket file is removed");
    }

    #[tokio::test]
    async fn parent_ports_are_suffixed_sockets() {
        let dir = temp_dir("parent");
        let transport = socket_in(&dir);
        assert_eq!(transport.parent_socket(8001), dir.join("enclave.sock_8001"));
        let mut listener = transport.listen_parent(8001).await.unwrap();
        let mut client = transport.connect_parent(8001).await.unwrap();
        let (port, mut server) = listener.accept().await.unwrap();
        assert_eq!(port, 8001);
        server.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert!(transport.connect_parent(8002).await.is_err());
    }

    #[tokio::test]
    async fn a_silent_peer_does_not_block_others() {
        let dir = temp_dir("silent");
        let transport = socket_in(&dir);
        let mut listener = transport.listen(&[5000]).await.unwrap();
        let _silent = UnixStream::connect(transport.path()).await.unwrap();
        let _client = transport.connect(5000).await.unwrap();
        let (port, _) = listener.accept().await.unwrap();
        assert_eq!(port, 5000);
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = temp_dir("file");
        let transport = socket_in(&dir);
        std::fs::write(transport.path(), b"precious").unwrap();
        assert!(transport.listen(&[5000]).await.is_err());
        assert_eq!(std::fs::read(transport.path()).unwrap(), b"precious");
    }
}
