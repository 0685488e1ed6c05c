//! A key broker as a real process, with either key store (the software store, or SoftHSM2
//! through PKCS#11), a sealed model, and a client that plays the enclave's side of a release
//! through the host's relay.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attest::pki::NewRoot;
use attest::sim::DevelopmentRoots;
use attest::sim::{SimulatedPki, SimulatedRequest};
use attest::{PcrIndex, PcrValue, Region, ServiceTrust, Timestamp};
use proofs::entry::{Entry, LogEntry};
use protocol::frame::{read_frame, write_frame};
use sealing::Id;
use sealing::release::{KeyRequest, Message, OaepHash, ReleaseTrust, request_user_data};
use transport::{HybridVsock, Transport};

use super::{Options, Stack, binary, enclave_pcr0, free_port, test_roots};

/// Where Debian's softhsm2 package puts the PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The model id the fixture seals.
pub const MODEL_ID: &str = "test-model";
/// The host port relayed to the broker, and the one serving the sealed model.
pub const BROKER_PORT: u32 = 8001;
/// The host port serving the sealed model.
pub const SOURCE_PORT: u32 = 8002;
/// The PCR0 the test client's documents carry.
pub fn client_pcr0() -> PcrValue {
    PcrValue::measure(b"the test client's image")
}

/// Which key store the broker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded software store.
    Software,
    /// SoftHSM2 through PKCS#11.
    SoftHsm,
}

impl Backend {
    /// Both, in the order the suites run them.
    pub const ALL: [Backend; 2] = [Backend::Software, Backend::SoftHsm];

    /// The OAEP digest the backend wraps with (SoftHSM2 2.6 has only SHA-1).
    pub fn oaep(self) -> OaepHash {
        match self {
            Backend::Software => OaepHash::Sha256,
            Backend::SoftHsm => OaepHash::Sha1,
        }
    }
}

/// A broker process and everything around it.
pub struct Broker {
    pub dir: PathBuf,
    pub backend: Backend,
    pub root: DevelopmentRoots,
    pub listen: SocketAddr,
    pub model: Vec<u8>,
    pub log_vkey: String,
    env: Vec<(String, PathBuf)>,
    child: Option<Child>,
}

/// What a broker fixture is built with.
pub struct Setup<'a> {
    /// The national root, and the simulated Nitro root it cross-certifies: the broker trusts
    /// documents through the cross-certificate, and its certificate is issued by `signing_root`
    /// (the national root unless given).
    pub root: &'a DevelopmentRoots,
    /// Another root to certify the broker's key with (a rogue broker).
    pub signing_root: Option<&'a NewRoot>,
    /// The `[models."test-model"]` rules, after the measurement sets.
    pub rules: &'a str,
    /// The PCR0 values allowed (one measurement set each).
    pub pcr0s: &'a [PcrValue],
    /// Top-level configuration lines (for example `nonce_lifetime = "1s"`).
    pub config_extra: &'a str,
}

/// `der` as PEM with this label.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn run(mut command: Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Broker {
    /// Prepare a broker in a fresh directory: national root, key store (with its KEK), log key,
    /// certified response key, release policy, and a sealed random model.
    pub fn setup(name: &str, backend: Backend, setup: Setup<'_>) -> Self {
        let dir = std::env::temp_dir().join(format!("e2e-broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("root.pem"),
            pem("CERTIFICATE", &setup.root.national.certificate),
        )
        .unwrap();
        std::fs::write(
            dir.join("cross.pem"),
            pem("CERTIFICATE", &setup.root.cross_certificate),
        )
        .unwrap();
        let signing_root = setup.signing_root.unwrap_or(&setup.root.national);
        std::fs::write(
            dir.join("signing-root.pem"),
            pem("CERTIFICATE", &signing_root.certificate),
        )
        .unwrap();
        std::fs::write(
            dir.join("signing-root.key"),
            signing_root.private_key_pem.as_bytes(),
        )
        .unwrap();
        let mut env = Vec::new();
        let key_store = match backend {
            Backend::Software => {
                std::fs::write(dir.join("passphrase"), "a test passphrase, not a secret\n")
                    .unwrap();
                "kind = \"software\"\nkek_label = \"kek-1\"\nfile = \"state/keystore.json\"\n\
                 passphrase_file = \"passphrase\"\n"
                    .to_owned()
            }
            Backend::SoftHsm => {
                let conf = softhsm_token(&dir);
                env.push(("SOFTHSM2_CONF".to_owned(), conf));
                std::fs::write(dir.join("pin"), "1234\n").unwrap();
                format!(
                    "kind = \"pkcs11\"\nkek_label = \"kek-1\"\nmodule = \"{SOFTHSM_MODULE}\"\n\
                     token = \"broker\"\noaep_hash = \"sha1\"\npin_file = \"pin\"\n"
                )
            }
        };
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // A broker certified by another root trusts that root too, or it would refuse to start.
        let roots = if setup.signing_root.is_some() {
            "[\"root.pem\", \"signing-root.pem\"]"
        } else {
            "[\"root.pem\"]"
        };
        // Without an [approval] section in `config_extra`, the fixture's broker is its only
        // administrator, as it must then say.
        let administrator = if setup.config_extra.contains("[approval]") {
            ""
        } else {
            "dangerous_single_administrator = true\n"
        };
        std::fs::write(
            dir.join("broker.toml"),
            format!(
                "listen = \"{listen}\"\nstate_dir = \"state\"\npolicy = \"policy.toml\"\n\
                 {administrator}{}\n\
                 [trust]\nroots = {roots}\ncross_certificates = [\"cross.pem\"]\n\
                 [signing]\nkey = \"broker.key\"\ncertificate = \"broker.pem\"\n\
                 [log]\norigin = \"test.example/key-release-log\"\nkey = \"log.skey\"\n\
                 [key_store]\n{key_store}",
                setup.config_extra
            ),
        )
        .unwrap();
        let mut policy = format!("version = 1\n[models.\"{MODEL_ID}\"]\n{}\n", setup.rules);
        for pcr0 in setup.pcr0s {
            policy.push_str(&format!(
                "[[models.\"{MODEL_ID}\".measurements]]\npcr0 = \"{pcr0}\"\n"
            ));
        }
        std::fs::write(dir.join("policy.toml"), policy).unwrap();

        let mut broker = Broker {
            dir,
            backend,
            root: setup.root.clone(),
            listen,
            model: Vec::new(),
            log_vkey: String::new(),
            env,
            child: None,
        };
        let out =
            run(broker.command(&["init", "--config", "broker.toml", "--iterations", "100000"]));
        broker.log_vkey = out
            .lines()
            .find_map(|l| l.strip_prefix("log verifier key: "))
            .unwrap()
            .to_owned();
        let mut certify = Command::new(binary("attest"));
        certify.current_dir(&broker.dir).args([
            "pki",
            "certify-broker-key",
            "--issuer-cert",
            "signing-root.pem",
            "--issuer-key",
            "signing-root.key",
            "--public-key",
            "broker.pub.pem",
            "--out",
            "broker.pem",
        ]);
        run(certify);
        // A tiny random-weight GGUF the enclave can load, sealed in several chunks whose last
        // one is partial.
        let model = inference::tiny::model(7);
        assert!(model.len() > 3 * 4096 && !model.len().is_multiple_of(4096));
        broker.seal(model, 4096);
        broker
    }

    /// A second broker made from a copy of this one's directory while it is stopped: the same
    /// keys, certificate and configuration, and the same log so far, from which the two logs
    /// then grow apart. It listens elsewhere.
    pub fn fork(&self, name: &str) -> Self {
        assert!(self.child.is_none(), "fork a stopped broker");
        let dir = std::env::temp_dir().join(format!("e2e-broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&self.dir, &dir);
        let _ = std::fs::remove_file(dir.join("broker.log"));
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = std::fs::read_to_string(dir.join("broker.toml")).unwrap();
        let config = config.replace(
            &format!("listen = \"{}\"", self.listen),
            &format!("listen = \"{listen}\""),
        );
        std::fs::write(dir.join("broker.toml"), config).unwrap();
        let env = self
            .env
            .iter()
            .map(|(k, v)| {
                let v = v
                    .strip_prefix(&self.dir)
                    .map_or_else(|_| v.clone(), |rest| dir.join(rest));
                (k.clone(), v)
            })
            .collect();
        Broker {
            dir,
            backend: self.backend,
            root: self.root.clone(),
            listen,
            model: self.model.clone(),
            log_vkey: self.log_vkey.clone(),
            env,
            child: None,
        }
    }

    /// The `broker` binary with this fixture's directory and environment.
    /// Seal `model` as the model the enclave asks for, replacing the one sealed before.
    pub fn seal(&mut self, model: Vec<u8>, chunk_size: u32) {
        std::fs::write(self.dir.join("model.bin"), &model).unwrap();
        self.model = model;
        let chunk_size = chunk_size.to_string();
        run(self.command(&[
            "seal",
            "model.bin",
            "--model-id",
            MODEL_ID,
            "--out",
            "model.sealed",
            "--chunk-size",
            &chunk_size,
            "--force",
            "--config",
            "broker.toml",
        ]));
        // The plaintext has no business on disk after sealing.
        std::fs::remove_file(self.dir.join("model.bin")).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("broker"));
        command.current_dir(&self.dir).args(args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Start `broker serve` and wait until it accepts connections.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let mut command = self.command(&["serve", "--config", "broker.toml"]);
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the broker exited ({status}):\n{}", self.log());
            }
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the broker never listened:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "the broker failed: {status}\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL, mid-whatever.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The broker's log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// The transparency log's store (the broker must be stopped: the log is locked). A process
    /// that another test forks while the store is open holds a copy of the lock until it execs,
    /// so a `Locked` is retried for a moment.
    pub fn store(&self) -> proofs::FileStore {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match proofs::FileStore::open(self.dir.join("state/log")) {
                Err(proofs::StoreError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.unwrap(),
            }
        }
    }

    /// Every entry of the transparency log (the broker must be stopped).
    pub fn entries(&self) -> Vec<LogEntry> {
        let store = self.store();
        use proofs::LogStore;
        (0..store.size())
            .map(|i| LogEntry::decode(&store.entry(i).unwrap()).unwrap())
            .collect()
    }

    /// The denial reasons in the log, in order.
    pub fn denials(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|e| match e.entry() {
                Entry::KeyRelease(k) if k.outcome == proofs::entry::Outcome::Denied => {
                    Some(k.reason.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The enclave's `[model]` section for this broker.
    pub fn enclave_model_toml(&self) -> String {
        format!(
            "[model]\nid = \"{MODEL_ID}\"\nbroker_port = {BROKER_PORT}\nsource_port = {SOURCE_PORT}\n\
             broker_roots = [\"{}\"]\nlog_keys = [\"{}\"]\noaep_hashes = [\"{}\"]\n",
            self.dir.join("root.pem").display(),
            self.log_vkey,
            self.backend.oaep().as_str()
        )
    }

    /// The host's relay to this broker, and the sealed model it serves.
    pub fn host_toml(&self) -> String {
        self.host_toml_via(self.listen)
    }

    /// The host's relay to `target` (standing in for this broker), and the sealed model.
    pub fn host_toml_via(&self, target: SocketAddr) -> String {
        format!(
            "[[relay]]\nport = {BROKER_PORT}\ntarget = \"{}\"\nidle_timeout = \"10s\"\n\
             [model]\npath = \"{}\"\nport = {SOURCE_PORT}\n",
            target,
            self.dir.join("model.sealed").display()
        )
    }

    /// What an enclave trusting this broker's national root accepts.
    pub fn trust(&self) -> ReleaseTrust {
        let mut roots = ServiceTrust::new();
        roots
            .add_root(self.root.national.certificate.clone())
            .unwrap();
        ReleaseTrust {
            broker_roots: roots,
            log_keys: vec![proofs::NoteVerifier::parse(&self.log_vkey).unwrap()],
            log_origin: Some("test.example/key-release-log".into()),
            witnesses: proofs::cosignature::WitnessPolicy::none(),
            oaep_hashes: vec![self.backend.oaep()],
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A SoftHSM2 token labelled `broker` (user PIN 1234) in `dir`; returns its SOFTHSM2_CONF.
pub fn softhsm_token(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    assert!(
        Path::new(SOFTHSM_MODULE).exists(),
        "this test needs SoftHSM2 (apt-get install softhsm2): {SOFTHSM_MODULE} is missing"
    );
    let mut init = Command::new("softhsm2-util");
    init.args([
        "--init-token",
        "--free",
        "--label",
        "broker",
        "--pin",
        "1234",
        "--so-pin",
        "5678",
    ])
    .env("SOFTHSM2_CONF", &conf);
    run(init);
    conf
}

/// What a test client puts in its attestation document.
pub struct Document<'a> {
    /// The (simulated Nitro) root the simulated NSM signs under.
    pub root: &'a NewRoot,
    /// The region it reports.
    pub region: &'a str,
    /// PCR0 (PCR1 and PCR2 follow it; all zeros makes a debug document).
    pub pcr0: PcrValue,
}

impl Document<'_> {
    /// The document a client makes for `request` over `nonce`.
    pub fn make(&self, request: &KeyRequest, nonce: &[u8; 32]) -> Vec<u8> {
        let user_data = request_user_data(request.model_id(), nonce);
        self.make_with(nonce, Some(&user_data), Some(request.public_key_der()))
    }

    /// A document over `nonce` with exactly this `user_data` and `public_key`.
    pub fn make_with(
        &self,
        nonce: &[u8; 32],
        user_data: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Vec<u8> {
        let now = Timestamp::now();
        let pki = SimulatedPki::new(
            &self.root.certificate,
            &self.root.private_key_pem,
            Region::try_from(self.region).unwrap(),
            now,
        )
        .unwrap();
        let mut pcrs = std::collections::BTreeMap::new();
        for i in 0..16u8 {
            let value = match i {
                0..=2 => self.pcr0,
                _ => PcrValue::ZERO,
            };
            pcrs.insert(PcrIndex::new(i).unwrap(), value);
        }
        pki.attest(
            &SimulatedRequest {
                pcrs,
                public_key,
                user_data,
                nonce: Some(nonce),
            },
            now,
        )
        .unwrap()
    }
}

/// One exchange as the enclave would run it, through the host's relay at `socket` (the hybrid
/// vsock socket the enclave's side uses): hello for `model`, then `attest` builds what to send
/// for the challenge's nonce (return `None` to hang up). Returns the nonce, the document and the
/// answer (the hello's answer when it was not a challenge).
pub fn exchange(
    socket: &Path,
    model: &str,
    delay: Duration,
    attest: impl FnOnce([u8; 32]) -> Option<([u8; 32], Vec<u8>)>,
) -> Result<([u8; 32], Vec<u8>, Message), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut stream = HybridVsock::new(socket)
            .connect_parent(BROKER_PORT)
            .await
            .map_err(|x| e(&x))?;
        let hello = Message::Hello {
            model_id: Id::new(model).unwrap(),
        };
        write_frame(&mut stream, &hello.encode())
            .await
            .map_err(|x| e(&x))?;
        let body = read_frame(&mut stream).await.map_err(|x| e(&x))?;
        let challenge = Message::decode(&body).map_err(|x| e(&x))?;
        let Message::Challenge { nonce, .. } = challenge else {
            return Ok(([0; 32], Vec::new(), challenge));
        };
        tokio::time::sleep(delay).await;
        let Some((sent_nonce, document)) = attest(nonce) else {
            return Err("hung up".into());
        };
        let message = Message::Attest {
            nonce: sent_nonce,
            document: document.clone(),
        };
        write_frame(&mut stream, &message.encode())
            .await
            .map_err(|x| e(&x))?;
        let body = read_frame(&mut stream).await.map_err(|x| e(&x))?;
        Ok((
            sent_nonce,
            document,
            Message::decode(&body).map_err(|x| e(&x))?,
        ))
    })
}

/// The reason of a denial, or panic.
pub fn denied(answer: &Message) -> &str {
    match answer {
        Message::Denied { reason, .. } => reason,
        other => panic!("expected a denial, got {}", other.op()),
    }
}

/// A broker (software key store) with `model` sealed (a tiny random model unless given), and
/// the host with its enclave, once the enclave has received its key and loaded the model. The
/// policy pins the enclave's own PCR0 and the test client's, in `eu-west-3`.
pub fn start_with_model(
    name: &str,
    model: Option<Vec<u8>>,
    production_timeouts: bool,
) -> (Broker, Stack) {
    start_with_rules(name, model, production_timeouts, "", |broker| broker.listen)
}

/// [`start_with_model`], with `rules` added to the model's policy (a `lease`, say), and the
/// host's relay pointed at `relay_target(&broker)` (a proxy in front of the broker, say).
pub fn start_with_rules(
    name: &str,
    model: Option<Vec<u8>>,
    production_timeouts: bool,
    rules: &str,
    relay_target: impl FnOnce(&Broker) -> SocketAddr,
) -> (Broker, Stack) {
    let root = test_roots("National Root");
    let rules = format!("regions = [\"eu-west-3\"]\n{rules}");
    let mut broker = Broker::setup(
        name,
        Backend::Software,
        Setup {
            root: &root,
            signing_root: None,
            rules: &rules,
            pcr0s: &[enclave_pcr0(), client_pcr0()],
            config_extra: "",
        },
    );
    if let Some(model) = model {
        broker.seal(model, 1 << 20);
    }
    broker.start();
    let relay = relay_target(&broker);
    let stack = Stack::start_with(
        name,
        Options {
            extra: &broker.host_toml_via(relay),
            enclave_extra: &broker.enclave_model_toml(),
            root: Some(&broker.root),
            production_timeouts,
            ..Options::default()
        },
    );
    let status = super::model_status(&stack, Duration::from_secs(120));
    assert_eq!(
        status.state,
        protocol::wire::ModelState::Ready,
        "{:?}\n{}\n{}",
        status.detail,
        stack.log(),
        broker.log()
    );
    (broker, stack)
}

/// One exchange straight to the broker's TCP port from source address `from` (any address of
/// 127.0.0.0/8): hello for `model`, then `attest` builds the document for the challenge's nonce
/// (`None` hangs up). Returns the last answer.
pub fn exchange_direct(
    broker: &Broker,
    from: std::net::IpAddr,
    model: &str,
    attest: impl FnOnce([u8; 32]) -> Option<Vec<u8>>,
) -> Message {
    current_thread().block_on(async {
        let mut stream = connect_from(broker, from).await;
        let hello = Message::Hello {
            model_id: Id::new(model).unwrap(),
        };
        write_frame(&mut stream, &hello.encode()).await.unwrap();
        let answer = Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap();
        let Message::Challenge { nonce, .. } = answer else {
            return answer;
        };
        let Some(document) = attest(nonce) else {
            return answer;
        };
        let message = Message::Attest { nonce, document };
        write_frame(&mut stream, &message.encode()).await.unwrap();
        Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap()
    })
}

/// Send raw frames straight to the broker from `from` and return the answer to the last.
pub fn send_direct(broker: &Broker, from: std::net::IpAddr, frames: &[Vec<u8>]) -> Message {
    current_thread().block_on(async {
        let mut stream = connect_from(broker, from).await;
        for frame in frames {
            write_frame(&mut stream, frame).await.unwrap();
        }
        Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap()
    })
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP connection to the broker from source address `from`.
async fn connect_from(broker: &Broker, from: std::net::IpAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    socket.connect(broker.listen).await.unwrap()
}
