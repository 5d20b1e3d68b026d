//! The round trip's floor: the same QUIC exchanges as one relay round trip, with frames of the
//! relay's sizes, on the same mutual-TLS configuration, against a server that only answers (no
//! signature, no policy, no store, no log). Per round trip, as `common::round_trips` makes them:
//! the user's grant and its answer; the grant pushed on the agent's long-lived stream; the
//! agent's submission (frame and 1 KiB envelope) and its answer; the user's delivery (the
//! envelope view, piece list and ciphertext), its receipt and the recorded receipt's proof on
//! the same stream. The 1 KiB submissions' floor is the submission exchange alone, from the
//! same agents ([`measure_submissions`]). The server is this bench binary again, in a process
//! of its own ([`SERVER_ENV`]), so that its CPU is measured as the relay's is.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sealrelay::core::identity::Identity;
use tokio::sync::mpsc;

use super::{fail, OrFail};

/// Set to the keys directory: the bench binary runs as the floor's server and prints its address.
pub const SERVER_ENV: &str = "SEALRELAY_BENCH_FLOOR_SERVER";

// Bytes per exchange, from the frames' layouts (docs/vectors/wire.json) and a user holding a
// hybrid post-quantum key (its 1,184-byte ML-KEM key in the entries that travel, its stanza in
// the envelope's header): estimates, not captures; a few hundred bytes either way do not show
// on loopback.
const GRANT: usize = 300;
const GRANTED: usize = 60;
const PUSHED: usize = 3_500;
const SUBMIT: usize = 270 + 2_750;
const SUBMITTED: usize = 22;
const DELIVER: usize = 23;
const ENVELOPE: usize = 6_000;
const RECEIPT: usize = 270;
const RECORDED: usize = 1_500;

const KIND_GRANT: u8 = b'G';
const KIND_FOLLOW: u8 = b'F';
const KIND_SUBMIT: u8 = b'S';
const KIND_DELIVER: u8 = b'D';

type Pushes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<()>>>>;

/// The server: answers each stream by its first byte, until stdin closes.
pub fn serve(keys: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    rt.block_on(async {
        let read = |name: &str| keys.join(name);
        let cert = sealrelay::local::trust_root::read_cert_pem(&read("relay.crt")).or_fail("crt");
        let key = sealrelay::local::trust_root::read_key_pem(&read("relay.key")).or_fail("key");
        let ca = sealrelay::local::trust_root::read_cert_pem(&read("ca.crt")).or_fail("ca");
        let limits = sealrelay::net::Limits::default();
        let sc = sealrelay::net::server_config(
            &cert,
            &key,
            &ca,
            &limits,
            Arc::new(sealrelay::clock::SystemClock),
        )
        .or_fail("server config");
        let ep =
            quinn::Endpoint::server(sc, "127.0.0.1:0".parse().or_fail("addr")).or_fail("endpoint");
        println!("listening on {}", ep.local_addr().or_fail("addr"));
        let pushes: Pushes = Arc::default();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let pushes = pushes.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(answer(send, recv, pushes.clone()));
                    }
                });
            }
        });
        // Until the bench closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        })
        .await
        .or_fail("stdin");
    });
}

async fn answer(mut send: quinn::SendStream, mut recv: quinn::RecvStream, pushes: Pushes) {
    let mut head = [0u8; 5];
    if recv.read_exact(&mut head).await.is_err() {
        return;
    }
    let pair = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let mut buf = vec![0u8; ENVELOPE.max(PUSHED)];
    let ok: Option<()> = async {
        match head[0] {
            KIND_GRANT => {
                recv.read_exact(&mut buf[..GRANT]).await.ok()?;
                send.write_all(&buf[..GRANTED]).await.ok()?;
                let to = pushes.lock().ok()?.get(&pair).cloned();
                to?.send(()).ok()?;
            }
            KIND_FOLLOW => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                pushes.lock().ok()?.insert(pair, tx);
                send.write_all(&[1]).await.ok()?;
                while rx.recv().await.is_some() {
                    send.write_all(&buf[..PUSHED]).await.ok()?;
                }
            }
            KIND_SUBMIT => {
                recv.read_exact(&mut buf[..SUBMIT]).await.ok()?;
                send.write_all(&buf[..SUBMITTED]).await.ok()?;
            }
            KIND_DELIVER => {
                recv.read_exact(&mut buf[..DELIVER]).await.ok()?;
                send.write_all(&buf[..ENVELOPE]).await.ok()?;
                recv.read_exact(&mut buf[..RECEIPT]).await.ok()?;
                send.write_all(&buf[..RECORDED]).await.ok()?;
            }
            _ => return None,
        }
        Some(())
    }
    .await;
    if ok.is_some() {
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

/// A client connection of `who` to the floor's server.
async fn connect(who: &Identity, addr: std::net::SocketAddr, ca: &[u8]) -> quinn::Connection {
    let cc = sealrelay::net::client_config(
        who.cert.as_deref().unwrap_or_default(),
        who.tls_key.pkcs8(),
        ca,
        &sealrelay::net::Limits::default(),
    )
    .or_fail("client config");
    let mut ep =
        quinn::Endpoint::client("127.0.0.1:0".parse().or_fail("addr")).or_fail("client endpoint");
    ep.set_default_client_config(cc);
    ep.connect(addr, "localhost")
        .or_fail("connect")
        .await
        .or_fail("handshake")
}

/// One exchange: the request (`kind`, the pair, `out` bytes), then `back` bytes of answer.
async fn exchange(conn: &quinn::Connection, kind: u8, pair: u32, out: usize, back: usize) {
    let (mut send, mut recv) = conn.open_bi().await.or_fail("open");
    let mut msg = vec![0u8; 5 + out];
    msg[0] = kind;
    msg[1..5].copy_from_slice(&pair.to_be_bytes());
    send.write_all(&msg).await.or_fail("write");
    let mut got = vec![0u8; back];
    recv.read_exact(&mut got).await.or_fail("read");
    if kind == KIND_DELIVER {
        send.write_all(&vec![0u8; RECEIPT]).await.or_fail("receipt");
        let mut recorded = vec![0u8; RECORDED];
        recv.read_exact(&mut recorded).await.or_fail("recorded");
    }
    let _ = send.finish();
}

/// `per_user` round trips per user–agent pair against the floor's server at `addr`: the rate.
pub async fn round_trips(
    addr: &str,
    keys: &Path,
    users: &[Identity],
    agents: &[Identity],
    per_user: usize,
) -> (f64, usize) {
    let addr: std::net::SocketAddr = addr.parse().or_fail("floor address");
    let ca = sealrelay::local::trust_root::read_cert_pem(&keys.join("ca.crt")).or_fail("ca");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, (u, a)) in users.iter().zip(agents).enumerate() {
        let pair = u32::try_from(i).unwrap_or_else(|_| fail("pairs"));
        let (uc, ac) = (connect(u, addr, &ca).await, connect(a, addr, &ca).await);
        tasks.push(tokio::spawn(async move {
            let (mut fsend, mut follow) = ac.open_bi().await.or_fail("follow");
            let mut msg = vec![KIND_FOLLOW];
            msg.extend_from_slice(&pair.to_be_bytes());
            fsend.write_all(&msg).await.or_fail("follow");
            let mut live = [0u8; 1];
            follow.read_exact(&mut live).await.or_fail("live");
            let mut pushed = vec![0u8; PUSHED];
            for _ in 0..per_user {
                exchange(&uc, KIND_GRANT, pair, GRANT, GRANTED).await;
                follow.read_exact(&mut pushed).await.or_fail("pushed");
                exchange(&ac, KIND_SUBMIT, pair, SUBMIT, SUBMITTED).await;
                exchange(&uc, KIND_DELIVER, pair, DELIVER, ENVELOPE).await;
            }
            uc.close(0u32.into(), b"done");
            ac.close(0u32.into(), b"done");
        }));
    }
    for t in tasks {
        t.await.or_fail("join");
    }
    let n = users.len() * per_user;
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

/// What the floor measured: round trips per second, and the CPU per round trip (ms) of its
/// server process and of the clients (this process).
pub struct Floor {
    pub rate: f64,
    pub server_cpu_ms: f64,
    pub client_cpu_ms: f64,
}

/// The floor's server: this bench binary in a process of its own ([`SERVER_ENV`]), stopped
/// when dropped.
struct Server {
    child: std::process::Child,
    addr: String,
    pid: String,
}

impl Server {
    fn start(keys: &Path) -> Server {
        let exe = std::env::current_exe().or_fail("the bench binary");
        let mut child = std::process::Command::new(exe)
            .env(SERVER_ENV, keys)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .or_fail("start the floor's server");
        let addr = super::listening_address(&mut child, "the floor's server");
        let pid = child.id().to_string();
        Server { child, addr, pid }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Starts the floor's server, runs `per_user` round trips per pair against it, and stops it.
pub fn measure(
    keys: &Path,
    users: &[Identity],
    agents: &[Identity],
    per_user: usize,
    rt: &tokio::runtime::Runtime,
) -> Floor {
    let server = Server::start(keys);
    let pid = &server.pid;
    let (server0, client0) = (super::cpu_secs(pid), super::cpu_secs("self"));
    let (rate, n) = rt.block_on(round_trips(&server.addr, keys, users, agents, per_user));
    let per = |secs: f64| secs / n.max(1) as f64 * 1000.0;
    Floor {
        rate,
        server_cpu_ms: per(super::cpu_secs(pid) - server0),
        client_cpu_ms: per(super::cpu_secs("self") - client0),
    }
}

/// What the submissions' floor measured: submissions per second, their latency (ms) and the
/// CPU its server took per submission (µs).
pub struct SubmitFloor {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub server_cpu_us: f64,
}

/// The 1 KiB submissions' floor: each agent sends `per_agent` submissions one after another
/// (a frame and an envelope of a submission's size, then its answer), all agents at once, as
/// `common::submissions` does, against the server that only answers.
pub fn measure_submissions(
    keys: &Path,
    agents: &[Identity],
    per_agent: usize,
    rt: &tokio::runtime::Runtime,
) -> SubmitFloor {
    let server = Server::start(keys);
    let addr: std::net::SocketAddr = server.addr.parse().or_fail("floor address");
    let ca = sealrelay::local::trust_root::read_cert_pem(&keys.join("ca.crt")).or_fail("ca");
    rt.block_on(async {
        let mut conns = Vec::new();
        for a in agents {
            conns.push(connect(a, addr, &ca).await);
        }
        let server0 = super::cpu_secs(&server.pid);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, conn) in conns.into_iter().enumerate() {
            let pair = u32::try_from(i).unwrap_or_else(|_| fail("agents"));
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_agent);
                for _ in 0..per_agent {
                    let t = Instant::now();
                    exchange(&conn, KIND_SUBMIT, pair, SUBMIT, SUBMITTED).await;
                    lat.push(t.elapsed());
                }
                conn.close(0u32.into(), b"done");
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.or_fail("join"));
        }
        let secs = start.elapsed().as_secs_f64();
        let server_cpu = super::cpu_secs(&server.pid) - server0;
        all.sort();
        SubmitFloor {
            rate: all.len() as f64 / secs,
            p50_ms: super::percentile(&all, 0.5),
            p99_ms: super::percentile(&all, 0.99),
            server_cpu_us: server_cpu / all.len().max(1) as f64 * 1e6,
        }
    })
}

/// The signature checks a round trip cannot do without (the grant's, the submission's and the
/// receipt's Ed25519 signatures), alone: ms of one core per round trip (a third of it is a
/// submission's one check).
pub fn signatures_ms() -> f64 {
    let key = sealrelay::core::sign::SigningKey::generate().or_fail("key");
    let public = key.public();
    let signed = sealrelay::core::sign::Signed::sign(
        sealrelay::core::sign::StatementType::Receipt,
        vec![7u8; 200],
        &key,
    );
    let n = 3_000;
    let t = Instant::now();
    for _ in 0..n {
        signed.verify(&public).or_fail("verify");
    }
    t.elapsed().as_secs_f64() * 1000.0 / n as f64 * 3.0
}
