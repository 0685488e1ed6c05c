//! Serving the sealed model to the enclave: each connection to the configured host port gets
//! the sealed file's bytes from the start, then the connection is closed. The file is
//! ciphertext; the host learns nothing from serving it, and anything it alters the enclave
//! refuses.

use std::path::PathBuf;
use std::sync::Arc;

use scaffold::{Connections, Limit};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use transport::{Connection, Listener};

/// The sealed model and the host port it is served on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSource {
    /// The sealed file.
    pub path: PathBuf,
    /// The host port the enclave connects to.
    pub port: u32,
}

/// Transfers at once.
const MAX_TRANSFERS: usize = 4;

/// How much of the file each read takes. `tokio::fs` runs every read on the blocking pool, so
/// `tokio::io::copy`'s 8 KiB reads made one thread hand-off per 8 KiB (about 1 s for 100 MB).
const READ_LEN: usize = 1 << 20;

/// Serve the sealed model on `listener` until shutdown; transfers in flight are cut at shutdown.
pub async fn serve<S: Connection>(
    mut listener: Listener<S>,
    source: ModelSource,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = Arc::new(source.path);
    let limit = Limit::new(MAX_TRANSFERS);
    let mut transfers = Connections::new();
    loop {
        let mut stream = tokio::select! {
            _ = shutdown.changed() => break,
            () = transfers.reap() => continue,
            accepted = listener.accept() => match accepted {
                Ok((_, stream)) => stream,
                Err(e) => {
                    tracing::error!(port = source.port, error = %e, "the model port's listener failed");
                    break;
                }
            },
        };
        let Some(permit) = limit.admit() else {
            tracing::warn!(
                port = source.port,
                "too many model transfers at once; closing one"
            );
            continue;
        };
        let path = path.clone();
        transfers.spawn(permit, async move {
            let started = std::time::Instant::now();
            let result = async {
                let file = tokio::fs::File::open(path.as_ref()).await?;
                let mut file = tokio::io::BufReader::with_capacity(READ_LEN, file);
                let sent = tokio::io::copy_buf(&mut file, &mut stream).await?;
                stream.shutdown().await?;
                Ok::<_, std::io::Error>(sent)
            }
            .await;
            match result {
                Ok(bytes) => tracing::info!(
                    bytes,
                    elapsed_ms = started.elapsed().as_millis(),
                    "sealed model sent to the enclave"
                ),
                Err(e) => tracing::warn!(error = %e, "sending the sealed model failed"),
            }
        });
    }
    // A transfer in flight is cut at once: the enclave retries with another host.
    transfers.drain(std::time::Duration::ZERO).await;
}
