//! The host is the adversary. A relay between client and host flips, drops, duplicates,
//! reorders and replays bytes in both directions; whatever it does, the client never accepts a
//! document other than the one the enclave produced for its nonce.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use attest::{Policy, Timestamp};
use common::{Stack, attestation_request, exchange, nonce};
use protocol::wire::{FRAME_HEADER_LEN, MAX_FRAME_LEN, Response, ResponseBody, read_frame};

/// What the relay does to one message.
#[derive(Clone, Copy, Debug)]
enum Attack {
    Flip,
    Drop,
    Duplicate,
    Reorder,
    Truncate,
    Replay,
}

const ATTACKS: [Attack; 6] = [
    Attack::Flip,
    Attack::Drop,
    Attack::Duplicate,
    Attack::Reorder,
    Attack::Truncate,
    Attack::Replay,
];

/// A small deterministic generator, so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

fn attack(bytes: &[u8], attack: Attack, rng: &mut Rng, replay: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len();
    let (a, b) = {
        let x = rng.below(len);
        let y = rng.below(len);
        (x.min(y), x.max(y).max(x.min(y) + 1).min(len))
    };
    match attack {
        Attack::Flip => {
            let i = rng.below(len);
            out[i] ^= 1 << rng.below(8);
        }
        Attack::Drop => {
            out.drain(a..b);
        }
        Attack::Duplicate => {
            let chunk = out[a..b].to_vec();
            out.splice(b..b, chunk);
        }
        Attack::Reorder => {
            let c = (b + rng.below(len - b + 1)).min(len);
            let (first, second) = (out[a..b].to_vec(), out[b..c].to_vec());
            out.splice(a..c, second.into_iter().chain(first));
        }
        Attack::Truncate => out.truncate(a),
        Attack::Replay => return replay.to_vec(),
    }
    out
}

/// Read one frame's worth of bytes (header and body) from a stream, as a relay that knows the
/// protocol would.
fn read_raw_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    stream.read_exact(&mut header).unwrap();
    let len = usize::try_from(u32::from_be_bytes(header))
        .unwrap()
        .min(MAX_FRAME_LEN);
    let mut frame = header.to_vec();
    frame.resize(FRAME_HEADER_LEN + len, 0);
    stream.read_exact(&mut frame[FRAME_HEADER_LEN..]).unwrap();
    frame
}

/// What the relay saw of one exchange: the request it received, the response the host sent.
struct Seen {
    response: Vec<u8>,
}

/// Relay one connection at a time from `listener` to `host`, attacking one direction.
fn relay(
    listener: TcpListener,
    host: SocketAddr,
    plan: mpsc::Receiver<(Attack, bool, u64)>,
    seen: mpsc::Sender<Seen>,
) {
    let mut previous_response: Vec<u8> = Vec::new();
    for (attack_kind, on_request, seed) in plan {
        let (mut client, _) = listener.accept().unwrap();
        let mut rng = Rng(seed | 1);
        let request = read_raw_frame(&mut client);
        let mut upstream = TcpStream::connect(host).unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let sent = if on_request {
            attack(&request, attack_kind, &mut rng, &request)
        } else {
            request
        };
        let _ = upstream.write_all(&sent);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
        let mut response = Vec::new();
        let _ = upstream.read_to_end(&mut response);
        let delivered = if on_request {
            response.clone()
        } else {
            attack(&response, attack_kind, &mut rng, &previous_response)
        };
        let _ = client.write_all(&delivered);
        drop(client);
        seen.send(Seen {
            response: response.clone(),
        })
        .unwrap();
        previous_response = response;
    }
}

/// The document inside a response frame, if it is one.
fn document_in(frame: &[u8]) -> Option<Vec<u8>> {
    let body = read_frame(&mut &frame[..]).ok()?;
    match Response::decode(&body).ok()?.body {
        ResponseBody::Attestation { document } => Some(document),
        _ => None,
    }
}

#[test]
fn nothing_the_relay_does_makes_a_tampered_document_verify() {
    let stack = Stack::start("adversary");
    let verifier = stack.verifier();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_address = listener.local_addr().unwrap();
    let (plan, planned) = mpsc::channel();
    let (saw, seen) = mpsc::channel();
    let host = stack.forward;
    std::thread::spawn(move || relay(listener, host, planned, saw));

    let (mut accepted, mut refused, mut tampered_documents) = (0, 0, 0);
    for trial in 0..240u64 {
        let attack_kind = ATTACKS[usize::try_from(trial).unwrap() % ATTACKS.len()];
        let on_request = trial % 12 >= 6;
        plan.send((attack_kind, on_request, 0x9e37_79b9_7f4a_7c15 ^ trial))
            .unwrap();
        let n = nonce();
        let result = exchange(relay_address, &attestation_request(trial, &n));
        let original = document_in(&seen.recv().unwrap().response);

        let Ok(Response {
            body: ResponseBody::Attestation { document },
            ..
        }) = result
        else {
            refused += 1;
            continue;
        };
        let verdict = attest::parse(&document)
            .map_err(|e| e.to_string())
            .and_then(|parsed| {
                verifier
                    .verify(
                        &parsed,
                        &Policy::new().dangerous_any_measurements().expect_nonce(n),
                        Timestamp::now(),
                    )
                    .map_err(|e| e.to_string())
            });
        let untouched = original.as_deref() == Some(document.as_slice());
        if !untouched {
            tampered_documents += 1;
        }
        match verdict {
            Ok(_) => {
                assert!(
                    untouched,
                    "trial {trial} ({attack_kind:?}, request side: {on_request}): a document the \
                     enclave did not produce for this nonce verified"
                );
                accepted += 1;
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("accepted {accepted}, refused {refused}, tampered {tampered_documents}");
    // The attacks did reach documents, and some exchanges survived (flips in the envelope).
    assert!(
        tampered_documents >= 20,
        "only {tampered_documents} documents were altered"
    );
    assert!(refused >= 200, "refused {refused}, accepted {accepted}");
}
