//! The deadline a body must keep, both ways: after a grace period, a request body must arrive
//! (and a fetched body must be taken) at no less than a minimum average rate, so a body trickled
//! at one byte a second, or a reader that stops reading, cannot hold a stream (and its upload
//! claim) for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `t + d`, or a day after `t` when that would overflow (a grace configured absurdly long).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(86_400))
}

/// The rule itself: the first `n` bytes of a body are due `grace + n / rate` after it started.
pub struct Pace {
    started: Instant,
    grace: Duration,
    bytes_per_sec: u64,
}

impl Pace {
    /// Starts the clock now.
    pub fn new(grace: Duration, bytes_per_sec: u64) -> Self {
        Pace {
            started: Instant::now(),
            grace,
            bytes_per_sec: bytes_per_sec.max(1),
        }
    }

    /// When the body's first `bytes` bytes are due.
    pub fn deadline(&self, bytes: u64) -> Instant {
        let secs = bytes as f64 / self.bytes_per_sec as f64;
        later(
            later(self.started, self.grace),
            Duration::from_secs_f64(secs.min(1e9)),
        )
    }

    /// Runs `work` (a write that takes the body to `bytes` bytes in all) unless the body's
    /// deadline for `bytes` passes first: `None` then (the reader fell behind).
    pub async fn within<F: Future>(&self, bytes: u64, work: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.deadline(bytes), work)
            .await
            .ok()
    }
}

/// A body source that fails with `TimedOut` once it falls behind its [`Pace`].
pub struct Paced<R> {
    inner: R,
    pace: Pace,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl<R> Paced<R> {
    pub fn new(inner: R, grace: Duration, bytes_per_sec: u64) -> Self {
        let pace = Pace::new(grace, bytes_per_sec);
        let deadline = Box::pin(tokio::time::sleep_until(pace.deadline(0)));
        Paced {
            inner,
            pace,
            received: 0,
            deadline,
        }
    }

    /// When the body must have delivered one byte more than it has.
    fn next_deadline(&self) -> Instant {
        self.pace.deadline(self.received + 1)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Paced<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.received += (buf.filled().len() - before) as u64;
                let next = this.next_deadline();
                this.deadline.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the body arrived slower than {} bytes/s after a {} s grace period",
                        this.pace.bytes_per_sec,
                        this.pace.grace.as_secs()
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_times_out_and_a_steady_one_does_not() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut body = Paced::new(rx, Duration::from_secs(2), 100);
        let writer = tokio::spawn(async move {
            // 100 bytes/s for 3 s: keeps the pace.
            for _ in 0..30 {
                tx.write_all(&[0u8; 10]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Then one byte a second: falls behind.
            for _ in 0..10 {
                tx.write_all(&[0u8; 1]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut got = 0;
        let mut buf = [0u8; 64];
        let err = loop {
            match body.read(&mut buf).await {
                Ok(0) => panic!("ended"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(got >= 300, "{got}");
        writer.abort();
    }

    /// The way out (threat 33): a write the reader does not take is given up at its deadline;
    /// the same writes to a reader that keeps up all complete.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_is_given_up_at_its_pace_and_a_read_one_is_not() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let pace = Pace::new(Duration::from_secs(2), 100);
        let started = Instant::now();
        // 64 bytes fit the pipe: written at once.
        assert!(pace.within(64, tx.write_all(&[0u8; 64])).await.is_some());
        // Nobody reads: the next 100 bytes were due 2 s + 164 / 100 s after the start.
        assert!(pace.within(164, tx.write_all(&[0u8; 100])).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(3_600));
        drop(rx);

        let (mut tx, mut rx) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            rx.read_to_end(&mut sink).await.unwrap();
            sink.len()
        });
        let pace = Pace::new(Duration::from_secs(2), 100);
        let mut sent = 0u64;
        for _ in 0..10 {
            sent += 100;
            let written = pace.within(sent, tx.write_all(&[0u8; 100])).await;
            assert!(matches!(written, Some(Ok(()))), "{written:?}");
        }
        drop(tx);
        assert_eq!(reader.await.unwrap(), 1000);
    }
}
