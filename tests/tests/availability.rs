//! An unauthenticated client cannot make the host restart the enclave. The review's
//! reproduction: idle TCP connections, opened again as soon as they are closed, to every port
//! the host forwards, for longer than the host takes to give up on an enclave that stops
//! answering its probes (three failures, five seconds apart). With production timeouts, the
//! enclave must stay ready and unrestarted throughout, and serve a verified answer afterwards.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attest::{MeasurementSet, Nonce, PcrIndex, Policy, Verifier};
use client::{ChatRequest, Session, Timeouts, Trust};
use common::broker::start_with_model;
use common::{Stack, enclave_pcr0, exchange};
use protocol::wire::{Request, RequestBody, ResponseBody};

/// How many idle connections the attacker keeps open on each forwarded port: more than the
/// enclave's limit for the port (64).
const IDLE_PER_PORT: usize = 100;
/// How long the attack lasts: longer than three failed probes take to restart an enclave.
const ATTACK: Duration = Duration::from_secs(25);

/// Keep `IDLE_PER_PORT` connections to `target` open, sending nothing, until `stop`; reopen each
/// as soon as it is closed. Counts the connections made.
async fn hold_idle(target: SocketAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IDLE_PER_PORT {
        let (stop, opened) = (stop.clone(), opened.clone());
        tasks.spawn(async move {
            use tokio::io::AsyncReadExt;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = tokio::net::TcpStream::connect(target).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 64];
                // Wait until the other side closes (or the attack ends), reading nothing it
                // would not send anyway.
                loop {
                    tokio::select! {
                        read = stream.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(Ordering::Relaxed) { break; }
                        }
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn restarts(stack: &Stack) -> u64 {
    let (_, body) = stack.get("/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["restarts"].as_u64().unwrap()
}

#[test]
fn idle_connections_on_every_port_neither_restart_nor_stop_the_enclave() {
    let (mut broker, stack) = start_with_model("idle-flood", None, true);
    assert_eq!(restarts(&stack), 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let attack: Vec<_> = [stack.forward, stack.api]
        .into_iter()
        .map(|target| runtime.spawn(hold_idle(target, stop.clone(), opened.clone())))
        .collect();

    // Throughout the attack, the host's readiness (which follows its probes) holds.
    let started = Instant::now();
    let mut not_ready = 0;
    while started.elapsed() < ATTACK {
        match stack.get("/readyz") {
            Some((200, _)) => {}
            other => {
                not_ready += 1;
                eprintln!("readyz: {other:?}");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = restarts(&stack);
    stop.store(true, Ordering::Relaxed);
    for task in attack {
        runtime.block_on(task).unwrap();
    }
    assert!(
        opened.load(Ordering::Relaxed) >= 2 * IDLE_PER_PORT,
        "the attack opened {} connections",
        opened.load(Ordering::Relaxed)
    );
    assert_eq!(
        not_ready,
        0,
        "readiness dropped during the attack:\n{}",
        stack.log()
    );
    assert_eq!(during, 0, "the enclave was restarted:\n{}", stack.log());
    assert!(
        !stack.log().contains("health probe failed"),
        "{}",
        stack.log()
    );

    // Still serving: a fresh document over the control port, and a verified answer.
    let nonce = Nonce::try_from(&[7u8; 32][..]).unwrap();
    let answer = exchange(
        stack.forward,
        &Request {
            id: 1,
            body: RequestBody::Attestation { nonce },
        },
    )
    .unwrap();
    assert!(matches!(answer.body, ResponseBody::Attestation { .. }));
    let pcr0 = std::collections::BTreeMap::from([(PcrIndex::ZERO, enclave_pcr0())]);
    let trust = Trust::new(
        Verifier::new(broker.root.document_trust().unwrap()),
        Policy::new().allow_measurements(MeasurementSet::try_from(pcr0).unwrap()),
    )
    .unwrap();
    let text = runtime.block_on(async {
        let mut session =
            Session::connect(&stack.api.to_string(), Arc::new(trust), Timeouts::default())
                .await
                .unwrap();
        let request = ChatRequest {
            messages: vec![("user".into(), "hello".into())],
            max_tokens: Some(4),
            temperature: Some(0.0),
            ..ChatRequest::default()
        };
        session.chat(&request, |_| {}).await.unwrap().text
    });
    assert!(!text.is_empty());
    assert_eq!(restarts(&stack), 0);
    stack.stop();
    broker.stop();
}
