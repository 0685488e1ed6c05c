//! Copying bytes both ways between two streams without looking at them: each direction is
//! forwarded as it arrives, a half-close is passed on, and the pair is closed when both
//! directions have ended, when either fails, or when neither has moved a byte for the idle
//! timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The copy buffer for each direction.
const BUFFER_LEN: usize = 256 * 1024;

/// How a pumped connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both sides closed their sending halves.
    Closed,
    /// A read or write failed (for example, a reset).
    Failed,
    /// No bytes moved either way for the idle timeout.
    Idle,
}

/// Byte counters for the two directions.
#[derive(Clone, Copy, Debug)]
pub struct Counters<'a> {
    /// Bytes from `a` to `b`.
    pub a_to_b: &'a AtomicU64,
    /// Bytes from `b` to `a`.
    pub b_to_a: &'a AtomicU64,
}

/// Copy between `a` and `b` until the connection ends; see the module documentation.
pub async fn pump<A, B>(a: A, b: B, idle: Duration, counters: Counters<'_>) -> Ending
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last_activity_ms = AtomicU64::new(0);
    let mut a = Tracked {
        inner: a,
        read: counters.a_to_b,
        last_activity_ms: &last_activity_ms,
        start,
    };
    let mut b = Tracked {
        inner: b,
        read: counters.b_to_a,
        last_activity_ms: &last_activity_ms,
        start,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER_LEN, BUFFER_LEN);
    let watchdog = async {
        loop {
            let last = Duration::from_millis(last_activity_ms.load(Ordering::Relaxed));
            let deadline = start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        result = copy => match result {
            Ok(_) => Ending::Closed,
            Err(_) => Ending::Failed,
        },
        () = watchdog => Ending::Idle,
    }
}

/// A stream that counts the bytes read from it and notes when they arrived. Each direction is
/// counted where it is read, so one wrapper per side counts both directions.
struct Tracked<'a, S> {
    inner: S,
    read: &'a AtomicU64,
    last_activity_ms: &'a AtomicU64,
    start: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.read
                .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
            let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_activity_ms.store(elapsed, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn bytes_cross_unchanged_and_half_closes_pass_on() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let counters = Counters {
            a_to_b: &up,
            b_to_a: &down,
        };
        let pumping = pump(a, b, Duration::from_secs(5), counters);
        let peers = async {
            let payload: Vec<u8> = (0..100_000u32)
                .map(|i| u8::try_from(i % 251).unwrap())
                .collect();
            let (send, receive) = tokio::join!(
                async {
                    client.write_all(&payload).await.unwrap();
                    client.shutdown().await.unwrap();
                    let mut back = Vec::new();
                    client.read_to_end(&mut back).await.unwrap();
                    back
                },
                async {
                    let mut got = Vec::new();
                    server.read_to_end(&mut got).await.unwrap();
                    server.write_all(b"done").await.unwrap();
                    server.shutdown().await.unwrap();
                    got
                }
            );
            (payload, send, receive)
        };
        let (ending, (payload, back, got)) = tokio::join!(pumping, peers);
        assert_eq!(ending, Ending::Closed);
        assert_eq!(got, payload);
        assert_eq!(back, b"done");
        assert_eq!(up.load(Ordering::Relaxed), 100_000);
        assert_eq!(down.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_are_closed_after_the_idle_timeout() {
        let (_client, a) = duplex(1024);
        let (b, _server) = duplex(1024);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let counters = Counters {
            a_to_b: &up,
            b_to_a: &down,
        };
        let started = Instant::now();
        assert_eq!(
            pump(a, b, Duration::from_secs(30), counters).await,
            Ending::Idle
        );
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_in_one_direction_keeps_the_connection_open() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let counters = Counters {
            a_to_b: &up,
            b_to_a: &down,
        };
        let talker = async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                client.write_all(b"x").await.unwrap();
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).await.unwrap();
            }
            Instant::now()
        };
        let (ending, finished_talking) =
            tokio::join!(pump(a, b, Duration::from_secs(30), counters), talker);
        assert_eq!(ending, Ending::Idle);
        assert_eq!(up.load(Ordering::Relaxed), 5, "100s of traffic got through");
        assert!(finished_talking.elapsed() < Duration::from_secs(31));
    }
}
