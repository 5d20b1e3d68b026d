//! A chaos UDP proxy on loopback: every datagram between the clients and the relay passes
//! through a seeded schedule of drops, duplicates, reorderings, delays and truncations
//! (netem is not available on these machines). Each client address gets its own upstream
//! socket, so the relay sees one peer per client, as it would without the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::Rng;

/// What the proxy does to each datagram, in each direction.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back so that later ones overtake it.
    pub reorder: f64,
    /// Probability that a datagram is cut short (the peer must discard it).
    pub truncate: f64,
    /// Every datagram waits a random time in `0..=jitter`.
    pub jitter: Duration,
}

impl Faults {
    pub const NONE: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        truncate: 0.0,
        jitter: Duration::ZERO,
    };
}

/// What the proxy did, for the test's report (and to show the faults really happened).
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub truncated: AtomicU64,
}

impl Counts {
    pub fn summary(&self) -> String {
        format!(
            "forwarded {} dropped {} duplicated {} reordered {} truncated {}",
            self.forwarded.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.duplicated.load(Ordering::Relaxed),
            self.reordered.load(Ordering::Relaxed),
            self.truncated.load(Ordering::Relaxed)
        )
    }
}

pub struct ChaosProxy {
    /// Where clients connect instead of the relay.
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    pub seed: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    upstreams: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.upstreams.lock().unwrap().iter() {
            t.abort();
        }
    }
}

/// Sends `datagram` to `to` on `socket` according to the schedule.
fn deliver(
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    mut datagram: Vec<u8>,
    faults: Faults,
    rng: &Mutex<Rng>,
    counts: &Arc<Counts>,
) {
    let (copies, delay) = {
        let mut rng = rng.lock().unwrap();
        if rng.chance(faults.drop) {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if rng.chance(faults.truncate) && datagram.len() > 1 {
            let keep = 1 + rng.below(datagram.len() as u64 - 1) as usize;
            datagram.truncate(keep);
            counts.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let copies = if rng.chance(faults.duplicate) {
            counts.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let jitter = faults.jitter.as_micros() as u64;
        let mut delay = if jitter > 0 { rng.below(jitter + 1) } else { 0 };
        if rng.chance(faults.reorder) {
            // Held back past the jitter window: datagrams sent after it arrive first.
            delay += jitter.max(2_000) * 2;
            counts.reordered.fetch_add(1, Ordering::Relaxed);
        }
        (copies, Duration::from_micros(delay))
    };
    counts.forwarded.fetch_add(1, Ordering::Relaxed);
    let socket = socket.clone();
    if delay.is_zero() {
        for _ in 0..copies {
            let _ = socket.try_send_to(&datagram, to);
        }
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        for _ in 0..copies {
            let _ = socket.send_to(&datagram, to).await;
        }
    });
}

impl ChaosProxy {
    /// A proxy in front of `relay` with `faults`, scheduled by `seed`.
    pub async fn start(relay: SocketAddr, faults: Faults, seed: u64) -> ChaosProxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        let upstreams: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let task = {
            let (counts, rng, upstreams) = (counts.clone(), rng.clone(), upstreams.clone());
            tokio::spawn(async move {
                let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, client)) = front.recv_from(&mut buf).await else {
                        return;
                    };
                    let up = match peers.get(&client) {
                        Some(up) => up.clone(),
                        None => {
                            let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                            peers.insert(client, up.clone());
                            // Replies from the relay go back to this client through `front`.
                            let (up2, front2, counts2, rng2) =
                                (up.clone(), front.clone(), counts.clone(), rng.clone());
                            let back = tokio::spawn(async move {
                                let mut buf = vec![0u8; 65_536];
                                loop {
                                    let Ok((n, _)) = up2.recv_from(&mut buf).await else {
                                        return;
                                    };
                                    deliver(
                                        &front2,
                                        client,
                                        buf[..n].to_vec(),
                                        faults,
                                        &rng2,
                                        &counts2,
                                    );
                                }
                            });
                            upstreams.lock().unwrap().push(back);
                            up
                        }
                    };
                    deliver(&up, relay, buf[..n].to_vec(), faults, &rng, &counts);
                }
            })
        };
        ChaosProxy {
            addr,
            counts,
            seed,
            tasks: vec![task],
            upstreams,
        }
    }
}
