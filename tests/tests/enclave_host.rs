//! The enclave behind the host, as real processes: documents fetched through the host verify
//! against the development root with the caller's nonce; bad frames get clear errors and leave
//! the enclave serving; a crashed enclave is restarted and reported; relays reach only their
//! allowlisted address.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use attest::{DocumentTrust, Policy, Timestamp, Verifier, VerifyError};
use common::{Stack, attestation_request, exchange, nonce, raw_exchange};
use protocol::wire::{
    ErrorCode, MAX_FRAME_LEN, NsmKind, Request, RequestBody, Response, ResponseBody,
};
use transport::{HybridVsock, Transport};

fn error_code(bytes: &[u8]) -> (ErrorCode, String) {
    let body = protocol::wire::read_frame(&mut &bytes[..]).expect("one frame");
    match Response::decode(&body).expect("a response").body {
        ResponseBody::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn fetch_verified(stack: &Stack) {
    let n = nonce();
    let response = exchange(stack.forward, &attestation_request(1, &n)).unwrap();
    let ResponseBody::Attestation { document } = response.body else {
        panic!("no document: {response:?}")
    };
    let parsed = attest::parse(&document).unwrap();
    stack
        .verifier()
        .verify(
            &parsed,
            &Policy::new().dangerous_any_measurements().expect_nonce(n),
            Timestamp::now(),
        )
        .unwrap();
}

#[test]
fn a_document_fetched_through_the_host_verifies_with_the_nonce_echoed() {
    let stack = Stack::start("fetch");
    let files_before = listing(&stack.dir);
    let n = nonce();
    let response = exchange(stack.forward, &attestation_request(42, &n)).unwrap();
    assert_eq!(response.id, 42, "the response answers our request");
    let ResponseBody::Attestation { document } = response.body else {
        panic!("no document: {response:?}")
    };
    let parsed = attest::parse(&document).unwrap();
    let policy = Policy::new()
        .dangerous_any_measurements()
        .expect_nonce(n.clone());
    let verified = stack
        .verifier()
        .verify(&parsed, &policy, Timestamp::now())
        .unwrap();
    assert_eq!(verified.nonce(), Some(n.as_bytes()), "the nonce is echoed");
    assert_eq!(verified.region().unwrap().as_str(), "eu-west-3");

    // PCR16 holds the measurement of the enclave's configuration, as `Config` computes it.
    let config = enclave::Config::load(&stack.dir.join("enclave.toml")).unwrap();
    assert_eq!(verified.pcrs()[&enclave::CONFIG_PCR], config.expected_pcr());

    // The same document is refused with only the AWS root, and under another nonce.
    let aws = Verifier::new(DocumentTrust::aws().unwrap());
    assert!(matches!(
        aws.verify(&parsed, &policy, Timestamp::now()),
        Err(VerifyError::UntrustedRoot { .. })
    ));
    let other = Policy::new()
        .dangerous_any_measurements()
        .expect_nonce(nonce());
    assert!(
        stack
            .verifier()
            .verify(&parsed, &other, Timestamp::now())
            .is_err()
    );

    // Health reports the simulated NSM and the configuration digest.
    let health = exchange(
        stack.forward,
        &Request {
            id: 7,
            body: RequestBody::Health,
        },
    )
    .unwrap();
    let ResponseBody::Health(health) = health.body else {
        panic!("no health")
    };
    assert_eq!(health.nsm, NsmKind::Simulated);
    assert_eq!(health.config_digest, config.digest());
    // Serving wrote nothing: the directory holds what it held (configuration, root, socket, log).
    assert_eq!(listing(&stack.dir), files_before);
    let enclave_pid = pid_in(&stack.get("/status").unwrap().1);
    assert_eq!(stack.stop(), Some(0), "SIGTERM stops the host cleanly");
    let enclave = nix::unistd::Pid::from_raw(i32::try_from(enclave_pid).unwrap());
    assert!(
        nix::sys::signal::kill(enclave, None).is_err(),
        "the host stopped its enclave on the way out"
    );
}

#[test]
fn the_cli_fetches_and_verifies_against_the_development_root_only() {
    let stack = Stack::start("cli");
    let doc = stack.dir.join("doc.cbor");
    let root = stack.dir.join("root.der");
    let nonce = "0badc0de5eed";
    let fetch = Command::new(common::binary("attest"))
        .args([
            "fetch",
            "--endpoint",
            &stack.forward.to_string(),
            "--nonce",
            nonce,
            "--out",
        ])
        .arg(&doc)
        .output()
        .unwrap();
    assert_eq!(fetch.status.code(), Some(0), "{fetch:?}");
    let verify = |args: &[&str]| {
        Command::new(common::binary("attest"))
            .arg("verify")
            .arg(&doc)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    let root = root.to_str().unwrap();
    let national = stack.dir.join("national.der");
    let cross = stack.dir.join("cross.der");
    let national = [
        "--no-aws-root",
        "--root",
        national.to_str().unwrap(),
        "--cross-cert",
        cross.to_str().unwrap(),
    ];
    assert_eq!(
        verify(&["--no-aws-root", "--nitro-root", root, "--nonce", nonce]),
        Some(0)
    );
    assert_eq!(
        verify(&[&national[..], &["--nonce", nonce]].concat()),
        Some(0)
    );
    assert_eq!(
        verify(&["--nonce", nonce]),
        Some(1),
        "refused with the AWS root alone"
    );
    assert_eq!(
        verify(&["--no-aws-root", "--nitro-root", root, "--nonce", "0bad"]),
        Some(1)
    );
    // The simulated Nitro root is not a national root: alone, it reaches nothing.
    assert_eq!(
        verify(&["--no-aws-root", "--root", root, "--nonce", nonce]),
        Some(2)
    );
}

#[test]
fn bad_frames_get_clear_errors_and_the_enclave_keeps_serving() {
    let stack = Stack::start("frames");

    // Oversized: the length prefix alone is refused, before any body is sent.
    let (code, message) = error_code(&raw_exchange(stack.forward, &u32::MAX.to_be_bytes(), false));
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(message.contains(&MAX_FRAME_LEN.to_string()), "{message}");
    fetch_verified(&stack);

    // Truncated: the stream ends inside the frame.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0xa1; 10]);
    let (code, message) = error_code(&raw_exchange(stack.forward, &truncated, true));
    assert_eq!(code, ErrorCode::TruncatedFrame);
    assert!(message.contains("90 bytes short"), "{message}");
    fetch_verified(&stack);

    // Garbage where a frame should start: an HTTP request reads as a huge length.
    let (code, _) = error_code(&raw_exchange(
        stack.forward,
        b"GET / HTTP/1.1\r\n\r\n",
        false,
    ));
    assert_eq!(code, ErrorCode::FrameTooLarge);

    // Garbage inside a well-formed frame: answered, and the same connection stays usable.
    let mut stream = std::net::TcpStream::connect(stack.forward).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    protocol::wire::write_frame(&mut stream, b"\xffnot cbor").unwrap();
    let reply = Response::decode(&protocol::wire::read_frame(&mut stream).unwrap()).unwrap();
    assert!(matches!(
        reply.body,
        ResponseBody::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    let health = Request {
        id: 9,
        body: RequestBody::Health,
    };
    protocol::wire::write_frame(&mut stream, &health.encode()).unwrap();
    let reply = Response::decode(&protocol::wire::read_frame(&mut stream).unwrap()).unwrap();
    assert_eq!(reply.id, 9);
    assert!(matches!(reply.body, ResponseBody::Health(_)));

    // A silent connection is closed after the enclave's idle timeout (2s here).
    let started = Instant::now();
    let (code, _) = error_code(&raw_exchange(stack.forward, &[0, 0], false));
    assert_eq!(code, ErrorCode::TruncatedFrame);
    assert!(started.elapsed() >= Duration::from_secs(2));

    fetch_verified(&stack);
    let status = stack.get("/status").unwrap().1;
    assert!(
        status.contains("\"restarts\":0"),
        "no bad frame crashed the enclave: {status}"
    );
}

#[test]
fn the_enclave_restarts_after_a_crash_and_the_host_reports_it() {
    let stack = Stack::start("crash");
    fetch_verified(&stack);
    let status = stack.get("/status").unwrap().1;
    let pid = pid_in(&status);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = stack.get("/status").map(|s| s.1).unwrap_or_default();
        if status.contains("\"state\":\"ready\"") && status.contains("\"restarts\":1") {
            assert_ne!(pid_in(&status), pid, "a new process");
            assert!(
                status.contains("signal: 9"),
                "the exit is reported: {status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted: {status}\n{}",
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = stack.get("/metrics").unwrap().1;
    assert!(
        metrics.contains("host_enclave_restarts_total 1\n"),
        "{metrics}"
    );
    assert!(stack.log().contains("the enclave stopped"));
    fetch_verified(&stack);
}

/// A host that crashes leaves its enclave running; the next host to start on the same
/// configuration ends it before it launches its own, so one enclave runs, not two.
#[test]
fn a_host_ends_the_enclave_its_crashed_predecessor_left() {
    let mut stack = Stack::start("host-crash");
    let orphan = nix::unistd::Pid::from_raw(
        i32::try_from(pid_in(&stack.get("/status").unwrap().1)).unwrap(),
    );
    stack.crash_host();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        nix::sys::signal::kill(orphan, None).is_ok(),
        "the enclave outlives a host killed with SIGKILL"
    );
    stack.relaunch_host();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(orphan, None).is_ok() && !is_zombie(orphan) {
        assert!(
            Instant::now() < deadline,
            "the orphaned enclave still runs:\n{}",
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = pid_in(&stack.get("/status").unwrap().1);
    assert_ne!(i32::try_from(now).unwrap(), orphan.as_raw());
    assert!(
        stack
            .log()
            .contains("ended an enclave a previous run of the host left running"),
        "{}",
        stack.log()
    );
    fetch_verified(&stack);
}

/// A process that has exited but not been reaped by its (new) parent.
fn is_zombie(pid: nix::unistd::Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Names and sizes of the files in `dir`, except the host's growing log.
fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "host.log")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

fn pid_in(status: &str) -> u32 {
    let rest = status.split("\"pid\":").nth(1).expect("a pid");
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn relays_reach_only_their_allowlisted_address() {
    // The allowlisted target: an echo server that prefixes what it returns.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_address = target.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in target.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(b"target:").is_err() {
                        break;
                    }
                    let _ = stream.write_all(&buf[..n]);
                }
            });
        }
    });
    let extra = format!("[[relay]]\nport = 8001\ntarget = \"{target_address}\"\n");
    let stack = Stack::start_with(
        "relay",
        common::Options {
            extra: &extra,
            ..Default::default()
        },
    );
    let enclave_side = HybridVsock::new(&stack.socket);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The configured port reaches the allowlisted target, whatever the enclave asks for.
        let mut stream = enclave_side.connect_parent(8001).await.unwrap();
        stream.write_all(b"CONNECT 10.0.0.1:22\n").await.unwrap();
        let mut reply = vec![0u8; 27];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, b"target:CONNECT 10.0.0.1:22\n");

        // Any other port is refused.
        for port in [8000, 8002, 22, 443] {
            let refused = enclave_side.connect_parent(port).await;
            assert!(refused.is_err(), "port {port} must be refused");
        }
    });
    let metrics = stack.get("/metrics").unwrap().1;
    assert!(
        metrics.contains("host_relay_connections_total{port=\"8001\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_host_refuses_clients_beyond_its_limit() {
    let stack = Stack::start_with(
        "limit",
        common::Options {
            forward_max_connections: 1,
            ..Default::default()
        },
    );
    let held = std::net::TcpStream::connect(stack.forward).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Were it forwarded, this health request would be answered.
    let mut health = Vec::new();
    let request = Request {
        id: 1,
        body: RequestBody::Health,
    };
    protocol::wire::write_frame(&mut health, &request.encode()).unwrap();
    let refused = raw_exchange(stack.forward, &health, false);
    assert!(
        refused.is_empty(),
        "the second client is closed without a byte"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    fetch_verified(&stack);
    let metrics = stack.get("/metrics").unwrap().1;
    assert!(
        metrics.contains("host_forward_refused_total{port=\"5000\",reason=\"limit\"} 1"),
        "{metrics}"
    );
}
