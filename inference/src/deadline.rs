//! A write deadline on a connection: a peer that stops reading cannot hold a connection (and
//! the generation feeding it) forever. When a write makes no progress for the deadline, it
//! fails with `TimedOut`, which ends the connection and, through it, the answer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner`, whose writes must make progress within `deadline`.
#[derive(Debug)]
pub(crate) struct WriteDeadline<S> {
    inner: S,
    deadline: Duration,
    /// Armed while a write is pending; reset by any progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, deadline: Duration) -> Self {
        WriteDeadline {
            inner,
            deadline,
            timer: None,
        }
    }

    /// The outcome of a write-side poll: progress disarms the timer; pending arms it and fails
    /// once it fires.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.timer = None;
            return poll;
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the peer read nothing for {} s",
                        self.deadline.as_secs_f64()
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that reads nothing: the writer fails after the deadline instead of hanging; a
    /// peer that reads keeps the writer going past it.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_at_the_deadline() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = WriteDeadline::new(ours, Duration::from_secs(5));
        let started = Instant::now();
        let chunk = vec![7u8; 4096];
        let error = ours.write_all(&chunk).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(ours);
        let mut buffered = Vec::new();
        theirs.read_to_end(&mut buffered).await.unwrap();
        assert_eq!(
            buffered.len(),
            1024,
            "what fit before the peer stopped reading"
        );

        let (ours, mut reader) = tokio::io::duplex(1024);
        let mut ours = WriteDeadline::new(ours, Duration::from_secs(5));
        let drain = tokio::spawn(async move {
            let mut total = 0usize;
            let mut buf = [0u8; 256];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        ours.write_all(&vec![1u8; 16 * 1024]).await.unwrap();
        drop(ours);
        assert_eq!(drain.await.unwrap(), 16 * 1024);
    }
}
