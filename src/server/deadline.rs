//! The deadline a request body must keep: after a grace period, the body must arrive at no less
//! than a minimum average rate, so a body trickled at one byte a second cannot hold a stream
//! (and its upload claim) for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A body source that fails with `TimedOut` once it falls behind `grace + bytes / rate`.
pub struct Paced<R> {
    inner: R,
    started: Instant,
    grace: Duration,
    bytes_per_sec: u64,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

/// `t + d`, or a day after `t` when that would overflow (a grace configured absurdly long).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(86_400))
}

impl<R> Paced<R> {
    pub fn new(inner: R, grace: Duration, bytes_per_sec: u64) -> Self {
        let started = Instant::now();
        Paced {
            inner,
            started,
            grace,
            bytes_per_sec: bytes_per_sec.max(1),
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(later(started, grace))),
        }
    }

    /// When the body must have delivered one byte more than it has.
    fn next_deadline(&self) -> Instant {
        let secs = (self.received + 1) as f64 / self.bytes_per_sec as f64;
        later(
            later(self.started, self.grace),
            Duration::from_secs_f64(secs.min(1e9)),
        )
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
                        this.bytes_per_sec,
                        this.grace.as_secs()
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
}
