//! Running a host (development mode) with its enclave as real processes, on free ports, in a
//! fresh directory; and a client for the control protocol.

#![allow(
    dead_code,
    reason = "shared by several test crates, each using a part: an expectation would be unfulfilled in some"
)]
#![expect(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

pub mod broker;
pub mod nsm;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attest::sim::DevelopmentRoots;
use attest::{Nonce, Timestamp, Verifier};
use protocol::wire::{Request, RequestBody, Response, read_frame, write_frame};

/// A binary built by `cargo test --workspace`, next to this test's directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A national root and a simulated Nitro root it cross-certifies, valid from a day ago for a
/// month.
pub fn test_roots(name: &str) -> DevelopmentRoots {
    let now = Timestamp::now();
    DevelopmentRoots::new(
        name,
        Timestamp::from_unix_secs(now.unix_secs() - 86_400),
        Timestamp::from_unix_secs(now.unix_secs() + 86_400 * 30),
    )
    .unwrap()
}

/// A root CA valid from a day ago for a month.
pub fn test_root(name: &str) -> attest::pki::NewRoot {
    let now = Timestamp::now();
    attest::pki::init_root(
        name,
        "Test",
        "XX",
        Timestamp::from_unix_secs(now.unix_secs() - 86_400),
        Timestamp::from_unix_secs(now.unix_secs() + 86_400 * 30),
    )
    .unwrap()
}

/// A host running a development enclave.
pub struct Stack {
    pub dir: PathBuf,
    pub forward: SocketAddr,
    /// Forwarded to the enclave's inference API port (8000).
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub socket: PathBuf,
    /// The national root and the simulated Nitro root the enclave's NSM signs under.
    pub roots: DevelopmentRoots,
    host: Child,
}

/// Extra host configuration (TOML appended to the generated file).
pub struct Options<'a> {
    pub extra: &'a str,
    pub forward_max_connections: usize,
    /// TOML lines appended to the enclave's `[nsm]` section.
    pub nsm_extra: &'a str,
    /// TOML appended to the enclave's configuration after `[nsm]` (for example a `[model]`).
    pub enclave_extra: &'a str,
    /// The development roots: the simulated NSM signs under their Nitro root (fresh ones if
    /// `None`).
    pub root: Option<&'a DevelopmentRoots>,
    /// The production defaults for idle connections (the host's forwards 60 s, the enclave's
    /// control port 30 s) instead of the short ones that keep other tests quick.
    pub production_timeouts: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            extra: "",
            forward_max_connections: 64,
            nsm_extra: "",
            enclave_extra: "",
            root: None,
            production_timeouts: false,
        }
    }
}

impl Stack {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, Options::default())
    }

    pub fn start_with(name: &str, options: Options<'_>) -> Self {
        let dir = temp_dir(name);
        let roots = match options.root {
            Some(roots) => roots.clone(),
            None => test_roots("Test National Root"),
        };
        let root = &roots.nitro;
        std::fs::write(dir.join("root.der"), root.certificate.as_ref()).unwrap();
        std::fs::write(dir.join("root.key"), root.private_key_pem.as_bytes()).unwrap();
        std::fs::write(
            dir.join("national.der"),
            roots.national.certificate.as_ref(),
        )
        .unwrap();
        std::fs::write(dir.join("cross.der"), roots.cross_certificate.as_ref()).unwrap();
        let socket = dir.join("enclave.sock");
        std::fs::write(
            dir.join("enclave.toml"),
            format!(
                "listen = \"unix:{}\"\nidle_timeout = \"{}\"\n[nsm]\nkind = \"simulated\"\n\
                 root_certificate = \"root.der\"\nroot_key = \"root.key\"\nregion = \"eu-west-3\"\n{}\n{}\n",
                socket.display(),
                if options.production_timeouts { "30s" } else { "2s" },
                options.nsm_extra,
                options.enclave_extra,
            ),
        )
        .unwrap();
        let check = Command::new(binary("enclave"))
            .arg("check-config")
            .arg(dir.join("enclave.toml"))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "the `enclave` binary refuses the simulated NSM (a production build): run the tests \
             with `cargo test --workspace`, which builds it with the `simulated-nsm` feature\n{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let forward: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "shutdown_grace = \"2s\"\n\
             [enclave]\nmode = \"development\"\nrestart_backoff = \"1s\"\n\
             [enclave.development]\nbinary = \"{enclave}\"\nconfig = \"enclave.toml\"\n\
             socket = \"enclave.sock\"\n\n\
             [[forward]]\nlisten = \"{forward}\"\nenclave_port = 5000\nidle_timeout = \"{control_idle}\"\n\
             max_connections = {max}\n\n\
             [[forward]]\nlisten = \"{api}\"\nenclave_port = 8000\nidle_timeout = \"{api_idle}\"\n\n\
             [admin]\nlisten = \"{admin}\"\n{extra}\n",
            enclave = binary("enclave").display(),
            max = options.forward_max_connections,
            control_idle = if options.production_timeouts {
                "60s"
            } else {
                "5s"
            },
            api_idle = if options.production_timeouts {
                "60s"
            } else {
                "30s"
            },
            extra = options.extra,
        );
        std::fs::write(dir.join("host.toml"), config).unwrap();
        std::fs::File::create(dir.join("host.log")).unwrap();
        let host = spawn_host(&dir);
        let mut stack = Stack {
            dir,
            forward,
            api,
            admin,
            socket,
            roots,
            host,
        };
        stack.wait_ready(Duration::from_secs(30));
        stack
    }

    /// The host dies at once (SIGKILL), leaving its enclave running.
    pub fn crash_host(&mut self) {
        let _ = self.host.kill();
        let _ = self.host.wait();
    }

    /// Start the host again on the same configuration, and wait until it is ready.
    pub fn relaunch_host(&mut self) {
        self.host = spawn_host(&self.dir);
        self.wait_ready(Duration::from_secs(30));
    }

    /// Wait until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.host.try_wait() {
                panic!("the host exited ({status}); log:\n{}", self.log());
            }
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the host never became ready; log:\n{}", self.log());
    }

    /// A GET on the admin endpoint: status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.admin, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let code = text.get(9..12)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some((code, body))
    }

    /// The host's (and the enclave's) log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("host.log")).unwrap_or_default()
    }

    /// A verifier that trusts this stack's national root only (through its cross-certificate
    /// for the simulated Nitro root).
    pub fn verifier(&self) -> Verifier {
        Verifier::new(self.roots.document_trust().unwrap())
    }

    /// Send SIGTERM and wait for the host to exit; returns its exit status code.
    pub fn stop(mut self) -> Option<i32> {
        self.terminate()
    }

    fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.host.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.host.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.host.kill();
        None
    }
}

/// `host run` on `dir/host.toml`, appending to `dir/host.log`.
fn spawn_host(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("host.log"))
        .unwrap();
    Command::new(binary("host"))
        .args(["run", "--config"])
        .arg(dir.join("host.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Ok(None) = self.host.try_wait() {
            self.terminate();
        }
    }
}

/// A random 32-byte nonce.
pub fn nonce() -> Nonce {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    Nonce::try_from(&bytes[..]).unwrap()
}

/// One request and its response over a fresh connection to `address`.
pub fn exchange(address: SocketAddr, request: &Request) -> Result<Response, String> {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write_frame(&mut stream, &request.encode()).map_err(|e| e.to_string())?;
    let body = read_frame(&mut stream).map_err(|e| e.to_string())?;
    Response::decode(&body).map_err(|e| e.to_string())
}

/// An attestation request.
pub fn attestation_request(id: u64, nonce: &Nonce) -> Request {
    Request {
        id,
        body: RequestBody::Attestation {
            nonce: nonce.clone(),
        },
    }
}

/// Send raw bytes on a fresh connection, half-close, and read everything that comes back.
pub fn raw_exchange(address: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The simulated NSM measures its own executable into PCR0 when no image is configured.
pub fn enclave_pcr0() -> attest::PcrValue {
    attest::PcrValue::measure(&std::fs::read(binary("enclave")).unwrap())
}

/// Poll the enclave's health until its model leaves `loading`.
pub fn model_status(stack: &Stack, timeout: Duration) -> protocol::wire::ModelStatus {
    use protocol::wire::{ModelState, ResponseBody};
    let deadline = Instant::now() + timeout;
    loop {
        let health = Request {
            id: 1,
            body: RequestBody::Health,
        };
        let ResponseBody::Health(health) = exchange(stack.forward, &health).unwrap().body else {
            panic!("not a health answer");
        };
        let status = health.model.expect("the enclave reports no model");
        if status.state != ModelState::Loading {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the model is still loading: {:?}\n{}",
            status.detail,
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
