//! Copying bytes both ways between two streams without looking at them: each direction is
//! forwarded as it arrives, a half-close is passed on, and the pair is closed when both
//! directions have ended, when either fails, or when neither has moved a byte for the idle
//! timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The copy buffer for each direction.
const BUFFER_LEN: usize = 64 * 1024;

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
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let up = copy_half(
        &mut a_read,
        &mut b_write,
        counters.a_to_b,
        &last_activity_ms,
        start,
    );
    let down = copy_half(
        &mut b_read,
        &mut a_write,
        counters.b_to_a,
        &last_activity_ms,
        start,
    );
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
    tokio::pin!(up, down, watchdog);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            result = &mut up, if !up_done => {
                if result.is_err() { return Ending::Failed; }
                up_done = true;
            }
            result = &mut down, if !down_done => {
                if result.is_err() { return Ending::Failed; }
                down_done = true;
            }
            () = &mut watchdog => return Ending::Idle,
        }
        if up_done && down_done {
            return Ending::Closed;
        }
    }
}

async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    counter: &AtomicU64,
    last_activity_ms: &AtomicU64,
    start: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER_LEN];
    loop {
        let n = reader.read(&mut buffer).await?;
        let Some(chunk) = buffer.get(..n).filter(|c| !c.is_empty()) else {
            // End of stream: pass the half-close on, so the peer sees it too.
            return writer.shutdown().await;
        };
        writer.write_all(chunk).await?;
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_activity_ms.store(elapsed, Ordering::Relaxed);
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
