//! An HTTP/1.1 server for a listener open to the network (the witness): a deadline for each
//! request's head, and a cap on connections held at once. `axum::serve` sets neither, so a
//! client that sends its head a byte at a time, or opens connections and sends nothing, holds
//! them (and the process's file descriptors) for as long as it likes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// The longest a client may take to send a request's head (and to begin one on a connection
/// kept alive).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections held at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 1024;

/// The longest a shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then lets what is in flight finish
/// (for at most a few seconds).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
    head_timeout: Duration,
    max_connections: usize,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closed at once, nothing read.
            drop(stream);
            continue;
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        return Err(Error::io(
            "requests were still in flight when the server stopped",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read, Write};

    use super::*;

    /// Helper-found: the witness served with `axum::serve`, which sets no deadline for a
    /// request's head and no cap on connections: a client sending its head a byte at a time,
    /// or many connections sending nothing, held them (and file descriptors) as long as it
    /// liked. A slow head is cut at the deadline now, and connections past the cap are closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_head_is_cut_and_connections_past_the_cap_are_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            async {
                let _ = stopped.await;
            },
            Duration::from_millis(300),
            2,
        ));
        tokio::task::spawn_blocking(move || {
            let read_all = |s: &mut std::net::TcpStream| {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                out
            };
            // A whole request is answered.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let out = read_all(&mut s);
            assert!(
                out.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&out)
            );
            // Two slow heads take both slots; a third connection is closed unanswered.
            let mut slow: Vec<_> = (0..2)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
                    s
                })
                .collect();
            std::thread::sleep(Duration::from_millis(100));
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            assert!(
                read_all(&mut third).is_empty(),
                "a connection past the cap was served"
            );
            // The slow heads are cut at the deadline (well before the 5 s read timeout).
            let started = std::time::Instant::now();
            for s in &mut slow {
                let out = read_all(s);
                assert!(
                    !String::from_utf8_lossy(&out).contains(" 200 "),
                    "a slow head was served"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "slow heads were held"
            );
            // Their slots are free again.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            assert!(read_all(&mut s).starts_with(b"HTTP/1.1 200"));
        })
        .await
        .unwrap();
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
