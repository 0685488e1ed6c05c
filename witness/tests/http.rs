//! The `witness` binary over HTTP: `init` makes and prints its key, `serve` answers
//! `POST /add-checkpoint` as the C2SP tlog-witness protocol says, and its state survives a
//! restart.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proofs::cosignature::{CosignatureVerifier, cosignatures};
use proofs::{Log, MemoryStore, Note, NoteSigner};

const ORIGIN: &str = "gov.example/key-release-log";

fn post(address: SocketAddr, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: witness\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

fn start(config: &std::path::Path, address: SocketAddr) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(["serve", "--config"])
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "the witness never listened");
        assert!(child.try_wait().unwrap().is_none(), "the witness exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn body(old: u64, log: &mut Log<MemoryStore>) -> (Vec<u8>, String) {
    let checkpoint = log.checkpoint().unwrap();
    let mut body = format!("old {old}\n");
    if old > 0 && old < checkpoint.checkpoint.size {
        for hash in log
            .prove_consistency(old, checkpoint.checkpoint.size)
            .unwrap()
            .hashes
        {
            body.push_str(&hash.to_base64());
            body.push('\n');
        }
    }
    body.push('\n');
    body.push_str(&checkpoint.note);
    (body.into_bytes(), checkpoint.note)
}

#[test]
fn the_binary_speaks_tlog_witness() {
    let dir = std::env::temp_dir().join(format!("witness-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier().to_vkey();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.join("witness.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nname = \"agency.example/w1\"\nkey = \"witness.key\"\n\
             state_dir = \"state\"\n[[log]]\norigin = \"{ORIGIN}\"\nkeys = [\"{vkey}\"]\n"
        ),
    )
    .unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(["init", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(init.status.success());
    let printed = String::from_utf8(init.stdout).unwrap();
    let witness_key = CosignatureVerifier::parse(
        printed
            .trim()
            .strip_prefix("witness verifier key: ")
            .unwrap(),
    )
    .unwrap();

    let mut log = Log::open(MemoryStore::new(), signer).unwrap();
    for i in 0..4 {
        log.append(format!("entry {i}").as_bytes()).unwrap();
    }
    let mut child = start(&config, address);
    let (request, note) = body(0, &mut log);
    let (status, _, answer) = post(address, "/add-checkpoint", &request);
    assert_eq!(status, 200, "{answer}");
    let cosigned = Note::parse(format!("{note}{answer}").as_bytes()).unwrap();
    assert_eq!(
        cosignatures(&cosigned, std::slice::from_ref(&witness_key))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(post(address, "/other", b"").0, 404);
    child.kill().unwrap();
    child.wait().unwrap();

    // Killed and restarted: it remembers size 4.
    let mut child = start(&config, address);
    log.append(b"entry 4").unwrap();
    let (stale, _) = body(0, &mut log);
    let (status, content_type, answer) = post(address, "/add-checkpoint", &stale);
    assert_eq!(
        (status, content_type.as_str(), answer.as_str()),
        (409, "text/x.tlog.size", "4\n")
    );
    let (request, _) = body(4, &mut log);
    assert_eq!(post(address, "/add-checkpoint", &request).0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
