//! Key-release and sealing figures, in one run:
//!
//! - release latency (p50, p99) over loopback TCP to a real `broker` server, lease-renewal
//!   latency (p50, p99) beside it, and releases per second with concurrent clients, for the software key store and for SoftHSM2 through
//!   PKCS#11, with the broker's share spent verifying the attestation, in the key store and in
//!   the log;
//! - sealing and unsealing throughput against raw AES-256-GCM (and SHA-384, which unsealing
//!   must also compute) on the same buffer;
//! - with the software store again, the same releases with the log's checkpoints cosigned by 1
//!   and by 3 real `witness` processes on loopback (all required), and the cosigning step's own
//!   latency and share of a release.
//!
//! ```text
//! cargo build --release -p witness
//! cargo run --release --manifest-path bench/Cargo.toml --bin release [-- RELEASES [MIB]]
//! ```
//!
//! RELEASES per backend defaults to 400; MIB (the sealing buffer) to 512. SoftHSM2 must be
//! installed (`apt-get install softhsm2`): the run re-executes itself with SOFTHSM2_CONF set
//! for a token in a temporary directory. The log's fsyncs go to the temporary directory's disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest::pki::certify_service_key;
use attest::service::ServiceRole;
use attest::sim::{DevelopmentRoots, SimulatedPki, SimulatedRequest};
use attest::{PcrIndex, PcrValue, Region, Timestamp, Verifier};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use broker::keystore::{
    KekWrapMechanism, KeyStore, MIN_ITERATIONS, Pkcs11Config, Pkcs11Store, SoftwareStore,
};
use broker::policy::ReleasePolicy;
use broker::release::{Broker, Parts, Timings};
use broker::seal::{SealRequest, seal_model};
use broker::state::{Ledger, StateDir};
use broker::witnesses::{WitnessConfig, Witnesses};
use proofs::NoteSigner;
use protocol::frame::{read_frame, write_frame};
use sealing::release::{
    KeyRequest, Message, OaepHash, ResponseSigner, renewal_user_data, request_user_data,
};
use sealing::{DataKey, Expected, Header, Id};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const MODEL: &str = "bench-model";
const CLIENTS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--softhsm-child") {
        let dir = PathBuf::from(&args[2]);
        let releases: usize = args[3].parse().unwrap_or(400);
        release_bench(
            "pkcs11 (SoftHSM2) key store",
            &dir,
            releases,
            Backend::SoftHsm,
            0,
        );
        return;
    }
    let releases: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let mib: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(512);
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_name()
    );

    let dir = std::env::temp_dir().join(format!("release-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let alone = release_bench(
        "software key store",
        &dir.join("software"),
        releases,
        Backend::Software,
        0,
    );
    // The same with the log's checkpoints cosigned by 1 and by 3 real witness processes.
    if WitnessProcess::binary().is_some() {
        for n in [1, 3] {
            let witnessed = release_bench(
                &format!("software key store, {n} witness(es) required"),
                &dir.join(format!("software-{n}-witnesses")),
                releases,
                Backend::Software,
                n,
            );
            println!(
                "  => witnessing adds {:.2} ms to the release p50 ({:.2} -> {:.2} ms): {:.0}% of a witnessed release",
                ms(witnessed.saturating_sub(alone)),
                ms(alone),
                ms(witnessed),
                100.0 * ms(witnessed.saturating_sub(alone)) / ms(witnessed)
            );
        }
    } else {
        println!(
            "\nwitness cosigning skipped: build the witness first (cargo build --release -p witness)"
        );
    }

    // SoftHSM2 reads SOFTHSM2_CONF when the module loads: prepare a token and run again.
    let hsm = dir.join("softhsm");
    std::fs::create_dir_all(hsm.join("tokens")).unwrap();
    let conf = hsm.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            hsm.join("tokens").display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output();
    match init {
        Ok(out) if out.status.success() => {
            let status = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--softhsm-child",
                    &hsm.display().to_string(),
                    &releases.to_string(),
                ])
                .env("SOFTHSM2_CONF", &conf)
                .status()
                .unwrap();
            assert!(status.success());
        }
        _ => println!("\nSoftHSM2 is not installed (apt-get install softhsm2): pkcs11 skipped"),
    }

    seal_bench(mib);
    let _ = std::fs::remove_dir_all(&dir);
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Software,
    SoftHsm,
}

struct Fixture {
    broker: Arc<Broker>,
    roots: DevelopmentRoots,
    key_id: Id,
}

fn fixture(
    dir: &Path,
    backend: Backend,
    note: NoteSigner,
    witnesses: Option<Witnesses>,
) -> Fixture {
    std::fs::create_dir_all(dir).unwrap();
    let now = Timestamp::now();
    let roots = DevelopmentRoots::new(
        "Bench National Root",
        Timestamp::from_unix_secs(now.unix_secs() - 3600),
        Timestamp::from_unix_secs(now.unix_secs() + 86_400),
    )
    .unwrap();
    let root = &roots.national;

    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let cert = certify_service_key(
        &root.certificate,
        &root.private_key_pem,
        key.public_key().as_der().unwrap().as_ref(),
        "bench-broker",
        ServiceRole::KeyBroker,
        Timestamp::from_unix_secs(now.unix_secs() - 60),
        Timestamp::from_unix_secs(now.unix_secs() + 86_400),
    )
    .unwrap();
    let signer = ResponseSigner::new(
        pkcs8.as_ref(),
        cert.to_vec(),
        &roots.service_trust().unwrap(),
        now,
    )
    .unwrap();

    let state = StateDir::open(&dir.join("state")).unwrap();
    let ledger = Ledger::open(&state, note)
        .unwrap()
        .with_witnesses(witnesses);

    let (key_store, oaep): (Arc<dyn KeyStore>, OaepHash) = match backend {
        Backend::Software => {
            let file = dir.join("keystore.json");
            SoftwareStore::create(&file, "kek-1", b"bench passphrase!", MIN_ITERATIONS).unwrap();
            (
                Arc::new(SoftwareStore::open(&file, b"bench passphrase!").unwrap()),
                OaepHash::Sha256,
            )
        }
        Backend::SoftHsm => {
            let config = Pkcs11Config {
                module: SOFTHSM_MODULE.into(),
                token: "bench".into(),
                kek_label: "kek-1".into(),
                kek_wrap: KekWrapMechanism::AesKeyWrap,
                sessions: CLIENTS,
            };
            Pkcs11Store::create_missing(&config, "1234").unwrap();
            (
                Arc::new(Pkcs11Store::open(config, "1234").unwrap()),
                OaepHash::Sha1,
            )
        }
    };
    let model = dir.join("model.bin");
    std::fs::write(&model, vec![7u8; 1 << 20]).unwrap();
    seal_model(
        &SealRequest {
            input: &model,
            model_id: Id::new(MODEL).unwrap(),
            out: &dir.join("model.sealed"),
            overwrite: false,
            chunk_size: 1 << 20,
            at: Timestamp::now(),
        },
        key_store.as_ref(),
        &state,
        Some(&ledger),
        &mut |_, _| {},
    )
    .unwrap();
    let policy = ReleasePolicy::parse(
        format!(
            "version = 1\n[models.\"{MODEL}\"]\n[[models.\"{MODEL}\".measurements]]\npcr0 = \"{}\"\n",
            PcrValue::measure(b"bench image")
        )
        .as_bytes(),
    )
    .unwrap();
    broker::adopt_policy(&policy, &state, &ledger, Timestamp::now(), &[]).unwrap();
    let key_id = state
        .record(&Id::new(MODEL).unwrap())
        .unwrap()
        .unwrap()
        .key_id;
    let broker = Broker::new(Parts {
        key_store,
        verifier: Verifier::new(roots.document_trust().unwrap()),
        policy,
        policy_source: None,
        logged_revocations: Vec::new(),
        state,
        ledger,
        signer,
        nonce_lifetime: Duration::from_secs(30),
        max_pending: 10_000,
        // Every client of the benchmark is one loopback peer.
        max_pending_per_peer: 10_000,
        oaep,
        clock: Box::new(Timestamp::now),
    });
    Fixture {
        broker: Arc::new(broker),
        roots,
        key_id,
    }
}

/// What an enclave sends: a document over the nonce with a fresh key (made outside the timing).
fn document(pki: &SimulatedPki, request: &KeyRequest, nonce: &[u8; 32]) -> Vec<u8> {
    let mut pcrs = BTreeMap::new();
    for i in 0..16u8 {
        let v = if i <= 2 {
            PcrValue::measure(b"bench image")
        } else {
            PcrValue::ZERO
        };
        pcrs.insert(PcrIndex::new(i).unwrap(), v);
    }
    let user_data = request_user_data(request.model_id(), nonce);
    pki.attest(
        &SimulatedRequest {
            pcrs,
            public_key: Some(request.public_key_der()),
            user_data: Some(&user_data),
            nonce: Some(nonce),
        },
        Timestamp::now(),
    )
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Returns the sequential release latency's p50.
fn release_bench(
    label: &str,
    dir: &Path,
    releases: usize,
    backend: Backend,
    witnesses: usize,
) -> Duration {
    let note = NoteSigner::generate("bench.example/log").unwrap();
    let cosign_note = NoteSigner::generate("bench.example/cosign-log").unwrap();
    let logs = [
        ("bench.example/log", note.verifier().to_vkey()),
        ("bench.example/cosign-log", cosign_note.verifier().to_vkey()),
    ];
    let processes: Vec<WitnessProcess> = (0..witnesses)
        .map(|i| WitnessProcess::start(&dir.join(format!("witness-{i}")), i, &logs))
        .collect();
    let configs: Vec<WitnessConfig> = processes.iter().map(|p| p.config.clone()).collect();
    let asked =
        (witnesses > 0).then(|| Witnesses::new(configs.clone(), witnesses, Duration::from_secs(5)));
    let f = fixture(dir, backend, note, asked);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    runtime.spawn(broker::server::serve(
        listener,
        f.broker.clone(),
        broker::server::Limits {
            max_connections: 256,
            workers: CLIENTS,
            io_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(1),
        },
        stopped,
    ));
    let pki = Arc::new(
        SimulatedPki::new(
            &f.roots.nitro.certificate,
            &f.roots.nitro.private_key_pem,
            Region::try_from("eu-west-1").unwrap(),
            Timestamp::now(),
        )
        .unwrap(),
    );
    // The enclave's ephemeral RSA key: an enclave makes one per release; the broker's cost does
    // not depend on it, so the clients here reuse one each and its generation is timed apart.
    let keygen = Instant::now();
    let request = KeyRequest::new(Id::new(MODEL).unwrap()).unwrap();
    let keygen = keygen.elapsed();

    // One client, sequential: latency = hello round trip + attest round trip (the broker's
    // decision and the network), without the client's own document signing.
    let mut latencies = Vec::new();
    for _ in 0..releases {
        latencies.push(runtime.block_on(one_release(address, &pki, &request)));
    }
    latencies.sort();
    let mut renewals = Vec::new();
    for _ in 0..releases {
        renewals.push(runtime.block_on(one_renewal(address, &pki, &f.key_id)));
    }
    renewals.sort();

    // Concurrent clients: releases per second. The clients' document signing runs on the same
    // two cores as the broker, so this is a lower bound for the broker alone.
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_client = releases / CLIENTS;
    let request = Arc::new(request);
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            let (pki, done, request) = (pki.clone(), done.clone(), request.clone());
            tasks.spawn(async move {
                for _ in 0..per_client {
                    one_release(address, &pki, &request).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let elapsed = started.elapsed();
    let throughput = done.load(std::sync::atomic::Ordering::Relaxed) as f64 / elapsed.as_secs_f64();

    // The broker's own breakdown, calling it directly.
    let mut total = Timings::default();
    let n = releases.clamp(1, 200);
    for _ in 0..n {
        let peer = std::net::IpAddr::from([127, 0, 0, 1]);
        let Message::Challenge { nonce, .. } = f.broker.hello(&Id::new(MODEL).unwrap(), peer)
        else {
            panic!("no challenge")
        };
        let doc = document(&pki, &request, &nonce);
        let (answer, t) = f
            .broker
            .attest(&Id::new(MODEL).unwrap(), &nonce, &doc, peer);
        assert!(matches!(answer, Message::Release { .. }));
        total.verify += t.verify;
        total.key_store += t.key_store;
        total.log += t.log;
        total.sign += t.sign;
    }
    let each = |d: Duration| ms(d / u32::try_from(n).unwrap_or(1));
    let sum = each(total.verify) + each(total.key_store) + each(total.log) + each(total.sign);
    let share = |d: Duration| 100.0 * each(d) / sum;
    println!("\nkey release, {label} ({releases} releases, loopback TCP)");
    println!(
        "  latency          p50 {:.2} ms   p99 {:.2} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "  lease renewal    p50 {:.2} ms   p99 {:.2} ms   (no key leaves the key store)",
        ms(percentile(&renewals, 0.50)),
        ms(percentile(&renewals, 0.99))
    );
    println!("  throughput       {throughput:.0} releases/s with {CLIENTS} concurrent clients");
    println!(
        "  broker breakdown verify {:.2} ms ({:.0}%), key store {:.2} ms ({:.0}%), log {:.2} ms ({:.0}%), sign {:.2} ms ({:.0}%)",
        each(total.verify),
        share(total.verify),
        each(total.key_store),
        share(total.key_store),
        each(total.log),
        share(total.log),
        each(total.sign),
        share(total.sign)
    );
    println!(
        "  enclave side     RSA-3072 key pair {:.1} ms per release (made before the hello)",
        ms(keygen)
    );
    if witnesses > 0 {
        // The cosigning step alone, on a log of its own (the witnesses know it too): append,
        // checkpoint, then time the requests to every witness until their cosignatures verify.
        let mut log = proofs::Log::open(proofs::MemoryStore::new(), cosign_note).unwrap();
        let asked = Witnesses::new(configs, witnesses, Duration::from_secs(5));
        let mut cosigning = Vec::new();
        for i in 0..releases {
            log.append(format!("entry {i}").as_bytes()).unwrap();
            let checkpoint = log.checkpoint().unwrap();
            let started = Instant::now();
            let cosignatures = asked.cosign(&log, &checkpoint).unwrap();
            cosigning.push(started.elapsed());
            log.add_cosignatures(&cosignatures).unwrap();
        }
        cosigning.sort();
        let p50 = percentile(&cosigning, 0.50);
        println!(
            "  cosigning alone  p50 {:.2} ms   p99 {:.2} ms   ({witnesses} witness process(es), all required)",
            ms(p50),
            ms(percentile(&cosigning, 0.99)),
        );
    }
    drop(processes);
    percentile(&latencies, 0.50)
}

/// A `witness` process on loopback, as an independent agency would run it: state fsynced before
/// each answer.
struct WitnessProcess {
    child: std::process::Child,
    config: WitnessConfig,
}

impl WitnessProcess {
    /// The witness binary the main workspace builds.
    fn binary() -> Option<PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/witness");
        path.exists().then_some(path)
    }

    fn start(dir: &Path, i: usize, logs: &[(&str, String)]) -> Self {
        let binary = Self::binary().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut config = format!(
            "listen = \"{listen}\"\nname = \"witness-{i}.bench\"\nkey = \"witness.key\"\nstate_dir = \"state\"\n"
        );
        for (origin, vkey) in logs {
            config.push_str(&format!(
                "[[log]]\norigin = \"{origin}\"\nkeys = [\"{vkey}\"]\n"
            ));
        }
        std::fs::write(dir.join("witness.toml"), config).unwrap();
        let out = Command::new(&binary)
            .current_dir(dir)
            .args(["init", "--config", "witness.toml"])
            .output()
            .unwrap();
        let vkey = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("witness verifier key: "))
            .unwrap()
            .to_owned();
        let child = Command::new(&binary)
            .current_dir(dir)
            .args(["serve", "--config", "witness.toml"])
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(Instant::now() < deadline, "the witness never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            config: WitnessConfig {
                key: proofs::cosignature::CosignatureVerifier::parse(&vkey).unwrap(),
                url: scaffold::http::HttpUrl::parse(&format!("http://{listen}")).unwrap(),
            },
        }
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One release; returns the time from hello to the answer minus the client's document signing.
async fn one_release(
    address: std::net::SocketAddr,
    pki: &SimulatedPki,
    request: &KeyRequest,
) -> Duration {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    let hello = Message::Hello {
        model_id: Id::new(MODEL).unwrap(),
    };
    write_frame(&mut stream, &hello.encode()).await.unwrap();
    let Message::Challenge { nonce, .. } =
        Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap()
    else {
        panic!("no challenge")
    };
    let challenge = started.elapsed();
    let doc = document(pki, request, &nonce);
    let sent = Instant::now();
    write_frame(
        &mut stream,
        &Message::Attest {
            nonce,
            document: doc,
        }
        .encode(),
    )
    .await
    .unwrap();
    let answer = Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(matches!(answer, Message::Release { .. }), "{answer:?}");
    challenge + sent.elapsed()
}

/// One lease renewal for `key_id`; the time from hello to the answer minus the client's
/// document signing.
async fn one_renewal(address: std::net::SocketAddr, pki: &SimulatedPki, key_id: &Id) -> Duration {
    let model = Id::new(MODEL).unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    write_frame(
        &mut stream,
        &Message::Hello {
            model_id: model.clone(),
        }
        .encode(),
    )
    .await
    .unwrap();
    let Message::Challenge { nonce, .. } =
        Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap()
    else {
        panic!("no challenge")
    };
    let challenge = started.elapsed();
    let mut pcrs = BTreeMap::new();
    for i in 0..16u8 {
        let v = if i <= 2 {
            PcrValue::measure(b"bench image")
        } else {
            PcrValue::ZERO
        };
        pcrs.insert(PcrIndex::new(i).unwrap(), v);
    }
    let user_data = renewal_user_data(&model, key_id, &nonce);
    let document = pki
        .attest(
            &SimulatedRequest {
                pcrs,
                public_key: None,
                user_data: Some(&user_data),
                nonce: Some(&nonce),
            },
            Timestamp::now(),
        )
        .unwrap();
    let sent = Instant::now();
    write_frame(
        &mut stream,
        &Message::Renew {
            nonce,
            key_id: key_id.clone(),
            document,
        }
        .encode(),
    )
    .await
    .unwrap();
    let answer = Message::decode(&read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(matches!(answer, Message::Renewed { .. }), "{answer:?}");
    challenge + sent.elapsed()
}

/// Sealing and unsealing against raw AES-256-GCM and SHA-384 over the same bytes.
fn seal_bench(mib: usize) {
    let len = mib << 20;
    let mut plaintext = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut plaintext).unwrap();
    let key = DataKey::generate().unwrap();
    let gbs = |d: Duration| len as f64 / d.as_secs_f64() / 1e9;
    let best = |f: &mut dyn FnMut() -> Duration| (0..3).map(|_| f()).min().unwrap();

    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose()).unwrap());
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&(i as u64).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut ciphertext = Vec::new();
    let mut tags = Vec::new();
    let raw_seal = best(&mut || {
        let mut buffer = plaintext.clone();
        let t = Instant::now();
        let sealed_tags: Vec<_> = buffer
            .chunks_mut(1 << 20)
            .enumerate()
            .map(|(i, chunk)| {
                raw.seal_in_place_separate_tag(nonce(i), Aad::empty(), chunk)
                    .unwrap()
            })
            .collect();
        let e = t.elapsed();
        ciphertext = buffer;
        tags = sealed_tags;
        e
    });
    let raw_open = best(&mut || {
        let mut buffer = ciphertext.clone();
        let t = Instant::now();
        for (i, (chunk, tag)) in buffer.chunks_mut(1 << 20).zip(&tags).enumerate() {
            raw.open_in_place_separate_tag(nonce(i), Aad::empty(), tag.as_ref(), chunk)
                .unwrap();
        }
        t.elapsed()
    });
    assert!(
        ciphertext.len() == len,
        "the raw ciphertext is the plaintext's length"
    );
    let sha = best(&mut || {
        let t = Instant::now();
        let _ = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &plaintext);
        t.elapsed()
    });

    let (n, digest) = sealing::digest(&mut &plaintext[..], &mut |_| {}).unwrap();
    let header = Header::new(
        Id::new(MODEL).unwrap(),
        Id::new("kek-1/00").unwrap(),
        1 << 20,
        n,
        digest,
    )
    .unwrap();
    let mut sealed = Vec::with_capacity(len + (len >> 10) + 256);
    let seal = best(&mut || {
        sealed.clear();
        let t = Instant::now();
        sealing::seal(&mut &plaintext[..], &mut sealed, &header, &key, &mut |_| {}).unwrap();
        t.elapsed()
    });
    let expected = Expected {
        model_id: &header.model_id,
        key_id: &header.key_id,
        plaintext_sha384: &digest,
        max_len: u64::MAX,
    };
    let unseal = best(&mut || {
        let t = Instant::now();
        let opened = sealing::open_into_memory(&mut &sealed[..], &key, &expected).unwrap();
        let e = t.elapsed();
        assert_eq!(opened.len(), len);
        e
    });
    println!("\nsealing {mib} MiB in memory (1 MiB chunks), best of 3");
    println!("  raw AES-256-GCM seal   {:.2} GB/s", gbs(raw_seal));
    println!("  raw AES-256-GCM open   {:.2} GB/s", gbs(raw_open));
    println!("  SHA-384                {:.2} GB/s", gbs(sha));
    println!(
        "  broker seal (pass 2)   {:.2} GB/s  ({:.0}% of raw AES-GCM seal; pass 1 hashes at SHA-384 speed)",
        gbs(seal),
        100.0 * gbs(seal) / gbs(raw_seal)
    );
    println!(
        "  unseal (open + digest) {:.2} GB/s  ({:.0}% of raw AES-GCM open)",
        gbs(unseal),
        100.0 * gbs(unseal) / gbs(raw_open)
    );
    let bound = 1.0 / (1.0 / gbs(raw_open) + 1.0 / gbs(sha));
    println!(
        "  bound for open + SHA-384 in sequence: {:.2} GB/s; unseal reaches {:.0}% of it",
        bound,
        100.0 * gbs(unseal) / bound
    );
}
