//! The host's forwarding path (client TCP → host → enclave's hybrid-vsock Unix socket) against a
//! direct connection to the same Unix socket, in one run: throughput (one-way bulk transfer) and
//! round-trip latency (64-byte ping-pong), medians of several rounds.
//!
//!     cargo run --release --manifest-path bench/Cargo.toml --bin relay

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::{Forward, Shared};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use transport::{Endpoint, HybridVsock, Transport};

const PORT_BULK: u32 = 5000;
const PORT_ECHO: u32 = 5001;
const BULK_BYTES: u64 = 2 << 30;
const CHUNK: usize = 256 * 1024;
const ROUND_TRIPS: usize = 20_000;
const ROUNDS: usize = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let enclave = HybridVsock::new(dir.join("enclave.sock"));

    // The enclave stand-in: a sink that acknowledges the end of a transfer, and an echo.
    let mut listener = enclave.listen(&[PORT_BULK, PORT_ECHO]).await.unwrap();
    tokio::spawn(async move {
        while let Ok((port, stream)) = listener.accept().await {
            tokio::spawn(async move {
                if port == PORT_BULK {
                    sink(stream).await
                } else {
                    echo(stream).await
                }
            });
        }
    });

    // The host's forwarders, exactly as `host run` starts them.
    let shared = Arc::new(Shared::default());
    shared.set_enclave(Some(Endpoint::Hybrid(enclave.clone())));
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let mut forwards = Vec::new();
    for port in [PORT_BULK, PORT_ECHO] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let forward = Forward {
            listen: address,
            enclave_port: port,
            max_connections: 16,
            idle_timeout: Duration::from_secs(60),
        };
        tokio::spawn(host::forward::serve(
            listener,
            forward,
            shared.clone(),
            stopping.clone(),
            Duration::from_secs(1),
        ));
        forwards.push(address);
    }

    println!(
        "relay benchmark: {} MiB one way, {ROUND_TRIPS} round trips of 64 bytes, median of {ROUNDS} rounds",
        BULK_BYTES >> 20
    );
    println!(
        "machine: {} logical CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut direct_tp = Vec::new();
    let mut relay_tp = Vec::new();
    let mut direct_lat = Vec::new();
    let mut relay_lat = Vec::new();
    for _ in 0..ROUNDS {
        direct_tp.push(throughput(enclave.connect(PORT_BULK).await.unwrap()).await);
        relay_tp.push(throughput(tcp(forwards[0]).await).await);
        direct_lat.extend(latencies(enclave.connect(PORT_ECHO).await.unwrap()).await);
        relay_lat.extend(latencies(tcp(forwards[1]).await).await);
    }
    let (direct, relayed) = (median(&mut direct_tp), median(&mut relay_tp));
    println!(
        "throughput  direct {:8.0} MiB/s   via host {:8.0} MiB/s   ratio {:.1}%",
        direct / 1048576.0,
        relayed / 1048576.0,
        100.0 * relayed / direct
    );
    let (d50, d99) = percentiles(&mut direct_lat);
    let (r50, r99) = percentiles(&mut relay_lat);
    println!(
        "round trip  direct p50 {:6.1} µs p99 {:6.1} µs   via host p50 {:6.1} µs p99 {:6.1} µs",
        d50, d99, r50, r99
    );
    println!(
        "added by the host: p50 {:.1} µs, p99 {:.1} µs",
        r50 - d50,
        r99 - d99
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn tcp(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = vec![0u8; CHUNK];
    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    let _ = stream.write_all(b"k").await;
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 64];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// Bytes per second for a one-way transfer, acknowledged by the far end.
async fn throughput<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> f64 {
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < BULK_BYTES {
        stream.write_all(&chunk).await.unwrap();
        sent += CHUNK as u64;
    }
    stream.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await.unwrap();
    sent as f64 / started.elapsed().as_secs_f64()
}

/// Round-trip times in microseconds.
async fn latencies<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Vec<f64> {
    let mut buf = [7u8; 64];
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        stream.write_all(&buf).await.unwrap();
        stream.read_exact(&mut buf).await.unwrap();
        out.push(started.elapsed().as_secs_f64() * 1e6);
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}
