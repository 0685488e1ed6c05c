//! The inference API's deadlines, against a client that holds connections open: the TLS
//! handshake, the request body and a non-streamed answer each have a bound, and nothing waits on
//! a silent client forever. The API runs in-process on a tiny model with short limits.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nsm::SigningOnly;
use inference::{Api, Engine, Limits, Loaded, ReleaseFacts};
use protocol::nsm::{AttestationRequest, NsmError};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// The API on a tiny model, on a loopback port.
async fn serve(limits: Limits) -> SocketAddr {
    let api = Api::new(
        "test-model",
        Arc::new(SigningOnly(|_: &AttestationRequest<'_>| {
            Err(NsmError::Failure("no documents in this test".into()))
        })),
        limits,
    )
    .unwrap();
    let bytes = Zeroizing::new(inference::tiny::model(3));
    let (engine, _) = Engine::load(bytes).unwrap();
    api.set_model(Loaded {
        engine,
        release: ReleaseFacts {
            model_digest: [0; 48],
            policy_version: 1,
            key_release_index: 0,
            checkpoint: String::new(),
        },
    });
    let api = Arc::new(api);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(api.clone().serve_connection(stream));
        }
    });
    address
}

/// A TLS connection to the API; its certificate is not checked (these tests are about time).
async fn tls(address: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(address).await.unwrap();
    common::tls::insecure_connector()
        .connect(ServerName::try_from("enclave.test").unwrap(), tcp)
        .await
        .unwrap()
}

/// A chat completion request with `body`, on a new connection the server closes after it;
/// everything the server sent.
async fn post_once(address: SocketAddr, body: &[u8]) -> String {
    let mut stream = tls(address).await;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: enclave\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_to_close(&mut stream).await
}

/// Read until the server closes; the text read.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP connection that never starts TLS is closed at the handshake deadline.
#[test]
fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    runtime().block_on(async {
        let address = serve(limits()).await;
        let mut silent = TcpStream::connect(address).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
            .await
            .expect("the connection was not closed within 10 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    });
}

/// Headers that announce a body which never comes: 408 at the body deadline.
#[test]
fn a_body_that_never_arrives_is_refused_at_its_deadline() {
    runtime().block_on(async {
        let address = serve(limits()).await;
        let mut stream = tls(address).await;
        stream
            .write_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: enclave\r\n\
                  content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\"",
            )
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
    });
}

/// A connection open after its answer, sending nothing, is closed at the idle deadline.
#[test]
fn an_idle_connection_between_requests_is_closed() {
    runtime().block_on(async {
        let address = serve(limits()).await;
        let mut stream = tls(address).await;
        stream
            .write_all(b"GET /v1/models HTTP/1.1\r\nhost: enclave\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    });
}

/// A non-streamed answer that cannot be complete in time is refused with a clear error, not
/// cut by the host's idle timeout with nothing said.
#[test]
fn a_non_streamed_answer_over_its_time_limit_is_a_clear_error() {
    runtime().block_on(async {
        let address = serve(Limits {
            max_answer_time: Duration::ZERO,
            ..limits()
        })
        .await;
        let body = br#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"max_tokens":200}"#;
        let answer = post_once(address, body).await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(answer.contains("answer_timeout"), "{answer}");
        assert!(answer.contains("stream"), "{answer}");

        // The same request streamed is answered.
        let streamed = br#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"max_tokens":20,"stream":true}"#;
        let answer = post_once(address, streamed).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("[DONE]"), "{answer}");
    });
}

/// A streamed answer has a total bound too, so a client that reads just fast enough to keep the
/// write deadline cannot hold a generation slot for ever: the stream ends with an error and no
/// receipt, and the generation stops.
#[test]
fn a_streamed_answer_over_its_time_limit_ends_with_an_error_and_no_receipt() {
    runtime().block_on(async {
        let address = serve(Limits {
            max_stream_time: Duration::ZERO,
            ..limits()
        })
        .await;
        let streamed = br#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"max_tokens":200,"stream":true}"#;
        let answer = post_once(address, streamed).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("answer_timeout"), "{answer}");
        assert!(!answer.contains("[DONE]"), "{answer}");
        assert!(!answer.contains("event: receipt"), "{answer}");
    });
}

/// A receipt's `sequence` numbers the answers of its connection: the second answer on one
/// connection is 1, and another connection starts again at 0, whatever others were served.
#[test]
fn receipts_number_the_answers_of_their_own_connection() {
    runtime().block_on(async {
        let address = serve(limits()).await;
        let body =
            br#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: enclave\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut first = tls(address).await;
        assert_eq!(ask(&mut first, &request, body).await, 0);
        assert_eq!(ask(&mut first, &request, body).await, 1);
        let mut second = tls(address).await;
        assert_eq!(ask(&mut second, &request, body).await, 0);
        assert_eq!(ask(&mut first, &request, body).await, 2);
    });
}

async fn ask(
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
    head: &str,
    body: &[u8],
) -> u64 {
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_sequence(stream).await
}

/// Read one response with a `content-length` body from `stream`; the sequence in its receipt.
async fn read_sequence(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> u64 {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap()
    };
    let len: usize = header("content-length").parse().unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    let receipt = data_encoding::BASE64
        .decode(header(protocol::channel::RECEIPT_HEADER).as_bytes())
        .unwrap();
    proofs::receipt::Receipt::parse(&receipt)
        .unwrap()
        .claims
        .sequence
}
