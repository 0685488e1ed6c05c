//! The production path, booted: the image `attest image enclave` builds from the static
//! `enclave` and `enclave-init` boots in QEMU's emulated Nitro enclave (the `nitro-enclave`
//! machine, which measures the image itself and provides the NSM as a virtio device), launched by
//! the host's emulator mode, with vsock through vhost-device-vsock.
//!
//! Checked end to end: the host receives the boot heartbeat; the runtime opens the real
//! `/dev/nsm` through `NitroNsm` and the PCR0/1/2 it reads equal `attest measure` of the image
//! (QEMU's EIF loader is an independent implementation of the measurement); the host reaches the
//! enclave over vsock and `attest fetch` returns a document whose PCRs `attest inspect` shows;
//! `attest verify` refuses it, naming the missing signature (QEMU's NSM does not sign). And the
//! quick start's path in the emulator: key release over real vsock, the sealed model, a verified
//! answer (the development build, whose `emulator` NSM signs QEMU's measurements again under a
//! development root).
//!
//! Needs the emulator's tools and the static binaries; `scripts/test` provides them:
//!
//!   eval "$(bash scripts/emulator/tools)"
//!   export ENCLAVE_STATIC="$(bash scripts/build-enclave)"
//!   export ENCLAVE_STATIC_DEVELOPMENT="$(bash scripts/build-enclave --simulated-nsm)"
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_port, temp_dir};

/// No KVM here: QEMU emulates the CPU (TCG), so every step is given minutes, not seconds. A
/// boot takes about 3 s; now and then (about one in twenty here) the emulated kernel stalls early
/// in boot, and the host restarts the enclave when it is not ready within 60 s, as it would a
/// hung enclave in production: the test allows for that.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn tool(variable: &str) -> PathBuf {
    let value = std::env::var_os(variable).unwrap_or_else(|| {
        panic!(
            "${variable} is not set: this test boots the enclave image in QEMU's emulated Nitro \
             enclave. Build the tools and the static binaries first (about 20 minutes on a \
             fresh machine, cached after):\n  eval \"$(bash scripts/emulator/tools)\"\n  \
             export ENCLAVE_STATIC=\"$(bash scripts/build-enclave)\"\n  \
             export ENCLAVE_STATIC_DEVELOPMENT=\"$(bash scripts/build-enclave --simulated-nsm)\"\n\
             (bash scripts/test does all of this)"
        )
    });
    let path = PathBuf::from(value);
    assert!(
        path.exists(),
        "${variable}: {} does not exist",
        path.display()
    );
    path
}

struct Host {
    child: Child,
    dir: PathBuf,
}

impl Host {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("host.log")).unwrap_or_default()
    }

    /// The serial console, without terminal colour sequences (the console is a terminal).
    fn console(&self) -> String {
        let raw = std::fs::read(self.dir.join("console.log")).unwrap_or_default();
        let mut text = String::new();
        let mut chars = String::from_utf8_lossy(&raw)
            .into_owned()
            .into_bytes()
            .into_iter();
        while let Some(b) = chars.next() {
            if b == 0x1b {
                // CSI: ESC [ parameters final-byte
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else if b != b'\r' {
                text.push(char::from(b));
            }
        }
        text
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- host log\n{}\n--- console\n{}",
            self.log(),
            self.console()
        )
    }

    /// The runtime's `boot measurements` line, once it has logged it.
    fn boot_measurements(&self) -> String {
        self.wait_for("the runtime's boot measurements", |console, _| {
            console.contains("boot measurements")
        });
        self.console()
            .lines()
            .find(|l| l.contains("boot measurements"))
            .unwrap()
            .to_owned()
    }

    /// Wait until `found` holds of the console and the host log.
    fn wait_for(&self, what: &str, found: impl Fn(&str, &str) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < BOOT_TIMEOUT {
            if found(&self.console(), &self.log()) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{what}: not within {BOOT_TIMEOUT:?}\n{}",
            self.diagnostics()
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attest(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(binary("attest"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The value of `name=` in a log line (text format: `name=value`).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()
}

/// The enclave's `[model]` section for `broker`, naming the broker's root as the image holds it
/// (`--include` puts it beside the configuration).
fn image_model_toml(broker: &common::broker::Broker) -> String {
    broker.enclave_model_toml().replace(
        &format!("\"{}\"", broker.dir.join("root.pem").display()),
        "\"root.pem\"",
    )
}

/// One emulated enclave at a time: each emulates its CPUs on the machine's own, and the tests of
/// this file would otherwise run side by side.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a booted emulated enclave gives a test.
struct Booted {
    host: Host,
    dir: PathBuf,
    port: u16,
    expected: Vec<String>,
    started: Instant,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Which static build goes into the image.
#[derive(Clone, Copy)]
enum Build {
    /// `scripts/build-enclave`: refuses the development NSMs.
    Production,
    /// `scripts/build-enclave --simulated-nsm`: the quick start's build for the emulator.
    Development,
}

/// Build the image from the static binaries of `build` with this configuration (and files
/// beside it), call `before_launch` with its PCR0, PCR1 and PCR2, and have the host boot it in
/// the emulator with `host_extra` in its configuration.
fn boot(
    name: &str,
    build: Build,
    enclave_toml: &str,
    includes: &[&Path],
    host_extra: &str,
    before_launch: impl FnOnce(&[String]),
) -> Booted {
    // A test that failed while holding the turn poisons it; the next may still run.
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let qemu = tool("EMULATOR_QEMU");
    let firmware = tool("EMULATOR_FIRMWARE");
    let kernel = tool("EMULATOR_KERNEL");
    let vsock = tool("EMULATOR_VSOCK");
    let statics = tool(match build {
        Build::Production => "ENCLAVE_STATIC",
        Build::Development => "ENCLAVE_STATIC_DEVELOPMENT",
    });
    let dir = temp_dir(name);

    // The image, built by our command from the static binaries and a production configuration.
    std::fs::write(dir.join("enclave.toml"), enclave_toml).unwrap();
    let mut build = Command::new(binary("attest"));
    build
        .args(["image", "enclave", "--boot", "ours", "--json"])
        .arg("--init")
        .arg(statics.join("enclave-init"))
        .arg("--enclave")
        .arg(statics.join("enclave"))
        .arg("--config")
        .arg(dir.join("enclave.toml"))
        .arg("--blobs")
        .arg(&kernel)
        .arg("--out")
        .arg(dir.join("enclave.eif"));
    for include in includes {
        build.arg("--include").arg(include);
    }
    let build = build.output().unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let measured = attest(&["measure", "enclave.eif", "--json"], &dir);
    assert!(measured.status.success());
    let measured: serde_json::Value = serde_json::from_slice(&measured.stdout).unwrap();
    let expected: Vec<String> = ["PCR0", "PCR1", "PCR2"]
        .iter()
        .map(|p| measured["Measurements"][p].as_str().unwrap().to_owned())
        .collect();
    before_launch(&expected);

    // The host launches it in the emulator, and forwards a TCP port to its control port.
    let port = free_port();
    std::fs::write(
        dir.join("host.toml"),
        format!(
            "[enclave]\nmode = \"emulator\"\nready_timeout = \"60s\"\n\
             [enclave.emulator]\nqemu = {qemu:?}\nfirmware = {firmware:?}\n\
             vhost_device_vsock = {vsock:?}\neif = \"enclave.eif\"\nsocket = \"vsock.sock\"\n\
             console = \"console.log\"\ncpu_count = 2\nmemory_mib = 512\n\
             [[forward]]\nlisten = \"127.0.0.1:{port}\"\nenclave_port = 5000\n{host_extra}"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("host.log")).unwrap();
    let started = Instant::now();
    let child = Command::new(binary("host"))
        .args(["run", "--config"])
        .arg(dir.join("host.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let host = Host {
        child,
        dir: dir.clone(),
    };
    Booted {
        host,
        dir,
        port,
        expected,
        started,
        _turn: turn,
    }
}

#[test]
fn the_image_boots_in_the_emulated_nitro_enclave() {
    let Booted {
        host,
        dir,
        port,
        expected,
        started,
        _turn,
    } = boot(
        "emulator",
        Build::Production,
        "listen = \"vsock\"\n[nsm]\nkind = \"nitro\"\n",
        &[],
        "",
        |_| {},
    );

    // The heartbeat: sent by enclave-init, answered by the host.
    host.wait_for("the heartbeat", |console, log| {
        console.contains("enclave-init: heartbeat answered by the parent")
            && log.contains("heartbeat received from the enclave")
    });
    let heartbeat = started.elapsed();

    // The runtime read its boot measurements from the real NSM: they are the image's.
    let line = host.boot_measurements();
    let line = line.as_str();
    assert_eq!(
        field(line, "nsm").map(|v| v.trim_matches('"')),
        Some("nitro"),
        "not the real NSM: {line}"
    );
    for (i, pcr) in ["pcr0", "pcr1", "pcr2"].iter().enumerate() {
        assert_eq!(
            field(line, pcr),
            Some(expected[i].as_str()),
            "{pcr} as the NSM reports it differs from attest measure: {line}"
        );
    }

    // Through the host, over vsock: a document.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let _ = std::fs::remove_file(dir.join("doc.cbor"));
        let endpoint = format!("127.0.0.1:{port}");
        let fetch = attest(
            &[
                "fetch",
                "--endpoint",
                &endpoint,
                "--nonce",
                "5eed",
                "--out",
                "doc.cbor",
                "--timeout",
                "60s",
            ],
            &dir,
        );
        if fetch.status.success() {
            break;
        }
        let last = String::from_utf8_lossy(&fetch.stderr);
        assert!(
            Instant::now() < deadline,
            "attest fetch never succeeded: {last}\n{}",
            host.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let first_document = started.elapsed();

    // Shown, marked unsigned, with the image's PCRs and our nonce.
    let inspect = attest(&["inspect", "doc.cbor", "--json"], &dir);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
    let shown: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(shown["signed"], false);
    assert_eq!(shown["nonce"], "5eed");
    for (i, index) in ["0", "1", "2"].iter().enumerate() {
        assert_eq!(shown["pcrs"][index], expected[i].as_str(), "{shown}");
    }
    // Refused by the verifier, which names the missing signature.
    let verify = attest(&["verify", "doc.cbor"], &dir);
    assert_eq!(verify.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.contains("not signed"), "{said}");

    eprintln!(
        "emulated boot: heartbeat after {:.1} s, first document after {:.1} s",
        heartbeat.as_secs_f64(),
        first_document.as_secs_f64()
    );
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The key-release path over the emulator's real vsock: the enclave, booted with a `[model]`,
/// connects to its parent (CID 3) on the broker port, the host relays it to a real broker, and
/// the broker refuses the emulated NSM's document as unsigned, and logs it. (No broker may
/// release a key to it: an unsigned document proves nothing. The release itself is tested with
/// the simulated NSM, which signs.)
#[test]
fn the_broker_refuses_an_emulated_enclave_over_real_vsock() {
    use common::broker::{Backend, Broker, Setup};
    let roots = common::test_roots("emulator-broker");
    // A policy that pins nothing the emulated enclave could fail but its signature: its PCR0 is
    // not known yet, so any image PCR0 set here is replaced once the image is built.
    let mut broker = Broker::setup(
        "emulator",
        Backend::Software,
        Setup {
            root: &roots,
            signing_root: None,
            rules: "",
            pcr0s: &[attest::PcrValue::measure(b"placeholder")],
            config_extra: "",
        },
    );
    broker.start();
    let model = image_model_toml(&broker);
    let root = broker.dir.join("root.pem");
    let booted = boot(
        "emulator-broker",
        Build::Production,
        &format!("listen = \"vsock\"\n[nsm]\nkind = \"nitro\"\n{model}"),
        &[&root],
        &broker.host_toml(),
        |_| {},
    );
    // The broker's log (its store is locked while it runs) says it refused the document.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !broker.log().contains("document_unsigned") {
        assert!(
            Instant::now() < deadline,
            "the broker never refused the emulated enclave:\n--- broker\n{}\n{}",
            broker.log(),
            booted.host.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "emulated enclave refused by the broker after {:.1} s",
        booted.started.elapsed().as_secs_f64()
    );
    drop(booted);
    broker.stop();
    // And its transparency log holds the denial, with the reason.
    let denials = broker.denials();
    assert!(
        denials.iter().any(|d| d == "document_unsigned"),
        "{denials:?}"
    );
}

/// When the runtime exits, enclave-init ends the enclave: the emulator exits (as Nitro ends the
/// enclave) and the host sees it and launches it again. Here the runtime exits because it is a
/// production build given the simulated NSM, which it refuses, inside the real boot.
#[test]
fn a_runtime_that_exits_ends_the_enclave_and_the_host_relaunches_it() {
    let dir = temp_dir("emulator-exit-inputs");
    let root = attest(
        &[
            "pki",
            "init-root",
            "--cert",
            "root.pem",
            "--key",
            "root.key",
        ],
        &dir,
    );
    assert!(
        root.status.success(),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    let booted = boot(
        "emulator-exit",
        Build::Production,
        "listen = \"vsock\"\n[nsm]\nkind = \"simulated\"\n\
         root_certificate = \"root.pem\"\nroot_key = \"root.key\"\n",
        &[&dir.join("root.pem"), &dir.join("root.key")],
        "",
        |_| {},
    );
    booted
        .host
        .wait_for("the enclave ended and launched again", |console, log| {
            console.contains("enclave-init: /bin/enclave exited with status 2")
                && console.contains("enclave-init: ending the enclave (status 2)")
                && log.contains("the emulator exited")
                && log.matches("enclave launched").count() >= 2
        });
    let console = booted.host.console();
    assert!(
        console.contains("refuses the simulated NSM"),
        "the runtime did not say why it exited:\n{console}"
    );
    drop(booted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The quick start's path, in the emulated Nitro enclave: the development build of the runtime
/// (`nsm.kind = "emulator"`: PCRs and documents from QEMU's NSM through the real `/dev/nsm`, each
/// unsigned document signed again under a simulated Nitro root the national root
/// cross-certifies) attests over real vsock to a broker whose policy pins the PCR0 that `attest
/// measure` computed for the image; the broker releases the model key, the enclave fetches the
/// sealed model from the host, decrypts and loads it; and `attest chat` attests the enclave's
/// TLS through the host and verifies the answer's receipt and its key release in the log.
#[test]
fn the_quick_start_runs_in_the_emulated_nitro_enclave() {
    use common::broker::{Backend, Broker, Setup};
    let roots = common::test_roots("emulator-release");
    let mut broker = Broker::setup(
        "emulator-release",
        Backend::Software,
        Setup {
            root: &roots,
            signing_root: None,
            rules: "regions = [\"eu-central-1\"]",
            pcr0s: &[attest::PcrValue::measure(
                b"replaced once the image is measured",
            )],
            config_extra: "",
        },
    );
    // What the emulator NSM signs under: the simulated Nitro root, in the image.
    let inputs = temp_dir("emulator-release-inputs");
    std::fs::write(
        inputs.join("nitro-root.pem"),
        common::broker::pem("CERTIFICATE", &roots.nitro.certificate),
    )
    .unwrap();
    std::fs::write(
        inputs.join("nitro-root.key"),
        roots.nitro.private_key_pem.as_bytes(),
    )
    .unwrap();
    let model = image_model_toml(&broker);
    let api = free_port();
    let host_extra = format!(
        "{}[[forward]]\nlisten = \"127.0.0.1:{api}\"\nenclave_port = 8000\n",
        broker.host_toml()
    );
    let mut pcr0 = String::new();
    let booted = boot(
        "emulator-release",
        Build::Development,
        &format!(
            "listen = \"vsock\"\n[nsm]\nkind = \"emulator\"\nroot_certificate = \"nitro-root.pem\"\n\
             root_key = \"nitro-root.key\"\nregion = \"eu-central-1\"\n{model}"
        ),
        &[
            &broker.dir.join("root.pem"),
            &inputs.join("nitro-root.pem"),
            &inputs.join("nitro-root.key"),
        ],
        &host_extra,
        |pcrs| {
            // The policy pins the image as measured by our tools; QEMU measures it on its own.
            pcr0.clone_from(&pcrs[0]);
            std::fs::write(
                broker.dir.join("policy.toml"),
                format!(
                    "version = 2\n[models.\"{id}\"]\nregions = [\"eu-central-1\"]\n\
                     [[models.\"{id}\".measurements]]\npcr0 = \"{pcr0}\"\n",
                    id = common::broker::MODEL_ID
                ),
            )
            .unwrap();
            broker.start();
        },
    );

    // The runtime runs on the emulator's NSM, and says it is a development one.
    let line = booted.host.boot_measurements();
    let line = line.as_str();
    let console = booted.host.console();
    assert_eq!(
        field(line, "nsm").map(|v| v.trim_matches('"')),
        Some("emulator"),
        "{line}"
    );
    assert_eq!(field(line, "pcr0"), Some(pcr0.as_str()), "{line}");
    assert!(console.contains("EMULATOR NSM"), "{console}");

    // Key released, model fetched over vsock, decrypted and loaded.
    let endpoint = format!("127.0.0.1:{}", booted.port);
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let health = attest(
            &["fetch", "--endpoint", &endpoint, "--health", "--json"],
            &booted.dir,
        );
        let health = String::from_utf8_lossy(&health.stdout).into_owned();
        if health.contains("\"ready\"") {
            break;
        }
        assert!(
            !health.contains("\"failed\"") && Instant::now() < deadline,
            "the enclave never became ready: {health}\n--- broker\n{}\n{}",
            broker.log(),
            booted.host.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let ready = booted.started.elapsed();

    // attest chat: the enclave's TLS attested through the host, the receipt verified.
    std::fs::write(
        booted.dir.join("client-policy.toml"),
        format!(
            "aws_root = false\nroots = [{root:?}]\ncross_certificates = [{cross:?}]\n\
             regions = [\"eu-central-1\"]\n[[measurements]]\npcr0 = \"{pcr0}\"\n",
            root = broker.dir.join("root.pem"),
            cross = broker.dir.join("cross.pem"),
        ),
    )
    .unwrap();
    let asked = Instant::now();
    let chat = attest(
        &[
            "chat",
            "--endpoint",
            &format!("127.0.0.1:{api}"),
            "--policy",
            "client-policy.toml",
            "--log-key",
            &broker.log_vkey,
            "--max-tokens",
            "4",
            "--json",
            "a question for the emulated enclave",
        ],
        &booted.dir,
    );
    assert_eq!(
        chat.status.code(),
        Some(0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&chat.stdout),
        String::from_utf8_lossy(&chat.stderr),
        booted.host.diagnostics()
    );
    let answer: serde_json::Value = serde_json::from_slice(&chat.stdout).unwrap();
    assert_eq!(answer["verified"], true, "{answer}");
    assert_eq!(answer["log_checked"], true, "{answer}");
    let answered = asked.elapsed();

    // The broker logged the release, with the PCR0 QEMU measured.
    drop(booted);
    broker.stop();
    let released: Vec<_> = broker
        .entries()
        .into_iter()
        .filter_map(|e| match e.entry() {
            proofs::entry::Entry::KeyRelease(k)
                if k.outcome == proofs::entry::Outcome::Released =>
            {
                Some(k.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), 1, "{released:?}");
    let index = attest::PcrIndex::new(0).unwrap();
    assert_eq!(released[0].pcrs[&index].to_string(), pcr0);
    eprintln!(
        "emulated enclave: key released and model loaded {:.1} s after launch; a 4-token answer \
         in {:.1} s",
        ready.as_secs_f64(),
        answered.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&inputs);
}
