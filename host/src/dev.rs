//! The embedded development setup of `host run --dev`: a directory holding a simulated Nitro
//! root (created once), the enclave's configuration (simulated NSM under that root) and the
//! hybrid vsock socket; clients on 127.0.0.1:8443, the admin endpoint on 127.0.0.1:9100.
//! Documents from it verify with `attest verify --no-aws-root --nitro-root nitro-root.pem`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use attest::Timestamp;

use crate::config::{EnclaveSettings, Forward, HostConfig, Launch, sibling_executable};

/// Where clients connect in development.
pub const DEV_FORWARD: &str = "127.0.0.1:8443";
/// The admin endpoint in development.
pub const DEV_ADMIN: &str = "127.0.0.1:9100";
const DEV_FORWARD_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);
const DEV_ADMIN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9100);

/// Why the development setup could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A file or the directory could not be written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The simulated Nitro root could not be made.
    #[error("creating the simulated Nitro root: {0}")]
    Root(#[from] attest::pki::PkiError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.to_owned();
    move |source| DevError::Io { what, path, source }
}

/// Prepare `dir` and return the development configuration that uses it.
pub fn prepare(dir: &Path) -> Result<HostConfig, DevError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let dir = dir.canonicalize().map_err(io("resolving", dir))?;
    let (cert, key) = (dir.join("nitro-root.pem"), dir.join("nitro-root.key"));
    if !cert.exists() || !key.exists() {
        let now = Timestamp::now();
        let ten_years = now.saturating_add(Duration::from_secs(10 * 365 * 86_400));
        let root = attest::pki::init_root(
            "Simulated Nitro Root",
            "Simulated Nitro PKI",
            "XX",
            Timestamp::from_unix_secs(now.unix_secs().saturating_sub(86_400)),
            ten_years,
        )?;
        write_file(&key, root.private_key_pem.as_bytes(), true)?;
        write_file(
            &cert,
            pem("CERTIFICATE", root.certificate.as_ref()).as_bytes(),
            false,
        )?;
        tracing::info!(root = %cert.display(), "created a simulated Nitro root");
    }
    let socket = dir.join("enclave.sock");
    let enclave_config = dir.join("enclave.toml");
    let text = format!(
        "# Written by `host run --dev`: the development enclave, on the simulated NSM.\n\
         listen = \"unix:{}\"\n\n[nsm]\nkind = \"simulated\"\n\
         root_certificate = \"nitro-root.pem\"\nroot_key = \"nitro-root.key\"\nregion = \"eu-central-1\"\n",
        socket.display()
    );
    write_file(&enclave_config, text.as_bytes(), false)?;
    Ok(HostConfig {
        enclave: EnclaveSettings {
            launch: Launch::Development {
                binary: sibling_executable("enclave"),
                config: enclave_config,
                socket,
            },
            health_port: crate::config::DEFAULT_HEALTH_PORT,
            ready_timeout: Duration::from_secs(30),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(30),
        },
        model: None,
        forwards: vec![Forward {
            listen: DEV_FORWARD_ADDRESS,
            enclave_port: 5000,
            max_connections: crate::config::DEFAULT_FORWARD_CONNECTIONS,
            idle_timeout: Duration::from_secs(60),
        }],
        relays: Vec::new(),
        admin: Some(DEV_ADMIN_ADDRESS),
        shutdown_grace: Duration::from_secs(10),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Write via a temporary file and rename, so a crash never leaves half a file.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), DevError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io("writing", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("writing", path))?;
    Ok(())
}
