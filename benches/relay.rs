//! Relay benchmark (run by `bash benches/relay.sh`): a real `sealrelay serve` process on
//! 127.0.0.1 and clients in this process.
//!
//! * 1 KiB submissions from 32 concurrent agents: throughput, p50 / p99 latency;
//! * full round trips (grant → send → fetch → receipt) with 32 concurrent users;
//! * one 256 MiB envelope up and down, beside raw quinn loopback single-stream throughput
//!   measured in the same run with the same TLS configuration;
//! * the relay's peak RSS while a 1 GiB envelope streams through.
//!
//! Writes the RELAY section of docs/benchmarks.md.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use sealrelay::client::{AgentClient, UserClient};
use sealrelay::core::identity::Identity;

/// Latency of one authorization decision with the shipped policy (µs): p50, p99.
fn decision_latency() -> (f64, f64) {
    use sealrelay::core::directory::Attributes;
    use sealrelay::core::policy::{Action, Authorizer, CedarPolicy, Context, Principal, Target};
    use sealrelay::ids::{PartyKind, SpiffeId};
    let policy = CedarPolicy::default_policy().or_fail("policy");
    let agent = SpiffeId::new("bench.local", PartyKind::Agent, "a").or_fail("id");
    let user = SpiffeId::new("bench.local", PartyKind::User, "u").or_fail("id");
    let principal = Principal {
        id: agent.clone(),
        attributes: Some(Attributes {
            clearance: 0,
            roles: vec![],
            scopes: vec!["tickets/*".into()],
        }),
        quarantined: false,
    };
    let ctx = Context {
        target: Target::Grant {
            id: sealrelay::ids::GrantId([1; 16]),
            requester: user.clone(),
            agent: agent.clone(),
            resource: "tickets/1".into(),
            approved: false,
        },
        user: Some(user),
        agent: Some(agent),
        now: 1_800_000_000,
        size: Some(1024),
        ..Context::default()
    };
    let mut times = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        let d = policy.authorize(&principal, Action::Submit, &ctx);
        times.push(t.elapsed());
        if !d.is_allow() {
            fail("the bench decision should allow");
        }
    }
    times.sort();
    (
        percentile(&times, 0.5) * 1000.0,
        percentile(&times, 0.99) * 1000.0,
    )
}

/// Raw quinn loopback: one stream of `bytes` with the relay's TLS configuration.
/// Raw quinn loopback, one stream: MB/s, and the CPU both ends took per byte (ns; both are in
/// this process).
async fn raw_quinn(keys: &Path, alice: &Identity, bytes: u64) -> (f64, f64) {
    let cert =
        sealrelay::local::trust_root::read_cert_pem(&keys.join("relay.crt")).or_fail("relay.crt");
    let key =
        sealrelay::local::trust_root::read_key_pem(&keys.join("relay.key")).or_fail("relay.key");
    let ca = sealrelay::local::trust_root::read_cert_pem(&keys.join("ca.crt")).or_fail("ca.crt");
    let limits = sealrelay::net::Limits::default();
    let sc = sealrelay::net::server_config(
        &cert,
        &key,
        &ca,
        &limits,
        std::sync::Arc::new(sealrelay::clock::SystemClock),
    )
    .or_fail("server config");
    let server =
        quinn::Endpoint::server(sc, "127.0.0.1:0".parse().or_fail("addr")).or_fail("endpoint");
    let addr = server.local_addr().or_fail("addr");
    let srv = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .unwrap_or_else(|| fail("no connection"))
            .await
            .or_fail("handshake");
        let (mut send, mut recv) = conn.accept_bi().await.or_fail("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while let Some(k) = recv.read(&mut buf).await.or_fail("read") {
            n += k as u64;
        }
        send.write_all(&n.to_be_bytes()).await.or_fail("ack");
        let _ = send.finish();
        let _ = conn.closed().await;
    });
    let cc = sealrelay::net::client_config(
        alice.cert.as_deref().unwrap_or_default(),
        alice.tls_key.pkcs8(),
        &ca,
        &limits,
    )
    .or_fail("client config");
    let mut ep =
        quinn::Endpoint::client("127.0.0.1:0".parse().or_fail("addr")).or_fail("client endpoint");
    ep.set_default_client_config(cc);
    let conn = ep
        .connect(addr, "localhost")
        .or_fail("connect")
        .await
        .or_fail("handshake");
    let (mut send, mut recv) = conn.open_bi().await.or_fail("open");
    let chunk = vec![0x5au8; 1 << 20];
    let cpu0 = cpu_secs("self");
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        send.write_all(&chunk).await.or_fail("write");
        sent += chunk.len() as u64;
    }
    let _ = send.finish();
    let mut ack = [0u8; 8];
    recv.read_exact(&mut ack).await.or_fail("ack");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu0;
    conn.close(0u32.into(), b"done");
    let _ = srv.await;
    (bytes as f64 / secs / 1e6, cpu / bytes as f64 * 1e9)
}

/// A relay of its own with `n` idle mutual-TLS connections open (spread over the enrolled
/// parties; the per-IP cap raised for the one loopback address the bench connects from), and
/// its resident memory (VmRSS, MiB) at rest and with them open.
struct IdleRelay {
    // Dropped first: the connections close before the relay is killed.
    _conns: Vec<sealrelay::client::Connection>,
    relay: Relay,
    at_rest: f64,
    with_idle: f64,
}

impl IdleRelay {
    fn start(
        bin: &Path,
        base: &Path,
        ids: &[Identity],
        n: usize,
        rt: &tokio::runtime::Runtime,
    ) -> Self {
        let config = base.join("idle.toml");
        std::fs::write(
            &config,
            "[limits]\nmax_connections = 2048\nmax_handshakes = 2048\nmax_connections_per_ip = 4096\n",
        )
        .or_fail("idle config");
        let relay = Relay::start_with(
            bin,
            base,
            "data-idle",
            &["--config", &config.to_string_lossy()],
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let at_rest = relay.rss_mib();
        let conns = rt.block_on(async {
            let mut conns = Vec::with_capacity(n);
            for i in 0..n {
                let c =
                    sealrelay::client::Connection::connect(&ids[i % ids.len()], &relay.addr).await;
                conns.push(c.or_fail("idle connection"));
            }
            conns
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        let with_idle = relay.rss_mib();
        IdleRelay {
            _conns: conns,
            relay,
            at_rest,
            with_idle,
        }
    }
}

fn main() {
    if let Some(keys) = std::env::var_os(common::floor::SERVER_ENV) {
        common::floor::serve(Path::new(&keys));
        return;
    }
    if std::env::var_os("SEALRELAY_BENCH_DECISION_ONLY").is_some() {
        let (p50, p99) = decision_latency();
        eprintln!("policy decision p50 {p50:.1} µs p99 {p99:.1} µs");
        return;
    }
    let (root, bin, tmp, ids) = bench_world();
    let base = tmp.path();
    let (users, agents) = ids.split_at(32);
    let relay = Relay::start(&bin, base);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let scratch = base.to_path_buf();

    let per_agent: usize = std::env::var("SEALRELAY_BENCH_PER_AGENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let relay_pid = relay.child.id().to_string();
    // Profiling mode (benches/profile.sh): round trips only, N per user pair, no doc update.
    if let Some(n) = std::env::var("SEALRELAY_BENCH_ROUND_TRIPS_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        eprintln!("relay pid {relay_pid}");
        let (relay_cpu0, client_cpu0) = (cpu_secs(&relay_pid), cpu_secs("self"));
        // SEALRELAY_BENCH_PAIRS=K: only the first K user/agent pairs (K = 1: one round trip at
        // a time, so every commit holds one operation and counts repeat run after run).
        let pairs = std::env::var("SEALRELAY_BENCH_PAIRS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(users.len())
            .clamp(1, users.len());
        let (rate, n) = rt.block_on(round_trips(
            std::slice::from_ref(&relay.addr),
            &users[..pairs],
            &agents[..pairs],
            n,
            scratch.clone(),
        ));
        let relay_cpu = (cpu_secs(&relay_pid) - relay_cpu0) / n as f64 * 1000.0;
        let client_cpu = (cpu_secs("self") - client_cpu0) / n as f64 * 1000.0;
        eprintln!("round trips: {n} at {rate:.0}/s; CPU per round trip: relay {relay_cpu:.2} ms, clients {client_cpu:.2} ms");
        // The floor with the same pairs and the same round trips per pair.
        let f = common::floor::measure(
            &base.join("keys"),
            &users[..pairs],
            &agents[..pairs],
            n / pairs,
            &rt,
        );
        eprintln!(
            "floor (the same exchanges, a server that only answers): {:.0}/s; CPU per round trip: server {:.2} ms, clients {:.2} ms; three signature checks {:.3} ms",
            f.rate,
            f.server_cpu_ms,
            f.client_cpu_ms,
            common::floor::signatures_ms()
        );
        return;
    }
    // Profiling mode: the 1 KiB submissions only, N per agent, no doc update.
    if let Some(n) = std::env::var("SEALRELAY_BENCH_SUBMISSIONS_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        eprintln!("relay pid {relay_pid}");
        let (rate, p50, p99, count, cpu_per, commit_per) = rt.block_on(submissions(
            std::slice::from_ref(&relay.addr),
            users,
            agents,
            n,
            &scratch,
            std::slice::from_ref(&relay_pid),
        ));
        eprintln!("submissions: {count} at {rate:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms; relay CPU per submission {cpu_per:.0} µs, of which the commit thread {commit_per:.0} µs");
        let f = common::floor::measure_submissions(&base.join("keys"), agents, n, &rt);
        eprintln!(
            "floor (the same submissions, a server that only answers): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; server CPU per submission {:.0} µs; one signature check {:.0} µs",
            f.rate,
            f.p50_ms,
            f.p99_ms,
            f.server_cpu_us,
            common::floor::signatures_ms() / 3.0 * 1000.0
        );
        return;
    }
    // Large envelopes: 256 MiB up and down, then 1 GiB for the RSS check (sealed to a file
    // first, untimed).
    // Up and down MB/s, and the CPU relay and client took together per byte each way (ns).
    let big = |mib: u64, addr: &str, pid: &str| -> (f64, f64, f64, f64) {
        rt.block_on(async {
            let uc = UserClient::connect(&users[0], addr).await.or_fail("user");
            let ac = AgentClient::connect(&agents[1], addr)
                .await
                .or_fail("agent");
            let gid = uc
                .grant(&grant_req(&agents[1].name, (mib + 1) << 20))
                .await
                .or_fail("grant");
            let g = ac
                .grants()
                .await
                .or_fail("grants")
                .into_iter()
                .find(|g| g.grant.grant_id == gid)
                .unwrap_or_else(|| fail("grant"));
            // Seal to a file first (not timed), then time the upload and the download.
            let path = scratch.join("big.age");
            let recipient: sealrelay::core::envelope::keys::AgeRecipient = g
                .user_entry
                .age_recipient
                .as_deref()
                .unwrap_or_default()
                .parse()
                .or_fail("recipient");
            {
                let mut f = std::io::BufWriter::new(std::fs::File::create(&path).or_fail("create"));
                let mut src = std::io::Read::take(
                    std::fs::File::open("/dev/urandom").or_fail("urandom"),
                    mib << 20,
                );
                sealrelay::core::envelope::seal(&recipient, &mut src, &mut f, 2).or_fail("seal");
            }
            let len = std::fs::metadata(&path).or_fail("meta").len();
            let mut hasher = sealrelay::core::envelope::HashingWriter::new(std::io::sink());
            std::io::copy(&mut std::fs::File::open(&path).or_fail("open"), &mut hasher)
                .or_fail("hash");
            let (_, digest, _) = hasher.finish();
            let st = sealrelay::core::envelope::submission::Submission {
                grant_id: gid,
                user: g.grant.user.clone(),
                agent: agents[1].id.clone().unwrap_or_else(|| fail("id")),
                ciphertext_root: digest,
                ciphertext_len: len,
            }
            .sign(&agents[1].signing_key);
            let cpu = || cpu_secs(pid) + cpu_secs("self");
            let (t, cpu0) = (Instant::now(), cpu());
            let env = ac
                .submit_raw(
                    gid,
                    &st,
                    len,
                    &mut std::fs::File::open(&path).or_fail("open"),
                )
                .await
                .or_fail("upload");
            let up = len as f64 / t.elapsed().as_secs_f64() / 1e6;
            let up_busy = (cpu() - cpu0) / t.elapsed().as_secs_f64();
            let up_ns = (cpu() - cpu0) / len as f64 * 1e9;
            // As `fetch -o FILE` runs it, the file on tmpfs (as the envelope benchmark's are)
            // so that the figure is the transfer's, not this machine's disk.
            let out_dir = if std::path::Path::new("/dev/shm").is_dir() {
                std::path::PathBuf::from("/dev/shm")
            } else {
                scratch.clone()
            };
            let out = out_dir.join(format!("sealrelay-bench-{}.out", std::process::id()));
            let (t, cpu0) = (Instant::now(), cpu());
            let saved = uc
                .fetch_to(env, sealrelay::client::Destination::Path(&out), &scratch)
                .await
                .or_fail("fetch");
            let down = len as f64 / t.elapsed().as_secs_f64() / 1e6;
            let (down_cpu, down_secs) = (cpu() - cpu0, t.elapsed().as_secs_f64());
            let down_ns = down_cpu / len as f64 * 1e9;
            let f = saved.fetched;
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&saved.receipt_path);
            // Cores kept busy (relay and clients together): near the machine's count, the
            // transfer is bound by CPU, not by waiting.
            let down_busy = down_cpu / down_secs;
            eprintln!(
                "{mib} MiB: cores busy (relay + client) up {up_busy:.2}, down {down_busy:.2}"
            );
            assert!(f.plaintext_len == mib << 20);
            let _ = std::fs::remove_file(&path);
            (up, down, up_ns, down_ns)
        })
    };
    // Memory mode: the 1 GiB envelope only, then the relay's peak RSS; no doc update.
    if std::env::var_os("SEALRELAY_BENCH_RSS_ONLY").is_some() {
        let (up, down, _, _) = big(1024, &relay.addr, &relay_pid);
        let rss = relay.peak_rss_mib();
        eprintln!("1 GiB: up {up:.0} MB/s, down+open {down:.0} MB/s; relay peak RSS {rss:.1} MiB");
        return;
    }
    // Bulk mode: the 256 MiB envelope and raw quinn only, N times, no doc update.
    if let Some(n) = std::env::var("SEALRELAY_BENCH_BULK_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for _ in 0..n {
            let (up, down, up_ns, down_ns) = big(256, &relay.addr, &relay_pid);
            let (raw, raw_ns) = rt.block_on(raw_quinn(&base.join("keys"), &users[0], 256 << 20));
            eprintln!("256 MiB: up {up:.0} MB/s, down+open {down:.0} MB/s; raw quinn {raw:.0} MB/s ({:.0}% / {:.0}%)", 100.0 * up / raw, 100.0 * down / raw);
            eprintln!("256 MiB: CPU per byte (relay + client) up {up_ns:.2} ns, down {down_ns:.2} ns; raw quinn {raw_ns:.2} ns: at raw quinn's use of the cores, {:.0}% / {:.0}% of its rate", 100.0 * raw_ns / up_ns, 100.0 * raw_ns / down_ns);
        }
        return;
    }
    let (sub_rate, p50, p99, n_sub, cpu_per_sub, commit_per_sub) = rt.block_on(submissions(
        std::slice::from_ref(&relay.addr),
        users,
        agents,
        per_agent,
        &scratch,
        std::slice::from_ref(&relay_pid),
    ));
    let (dec_p50, dec_p99) = decision_latency();
    let policy_share = 100.0 * dec_p50 / cpu_per_sub.max(1e-9);
    eprintln!("policy decision p50 {dec_p50:.1} µs p99 {dec_p99:.1} µs; relay CPU per submission {cpu_per_sub:.0} µs ({policy_share:.1}%)");
    eprintln!("submissions: {n_sub} at {sub_rate:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms; the commit thread {commit_per_sub:.0} µs per submission");
    let sub_floor = common::floor::measure_submissions(&base.join("keys"), agents, per_agent, &rt);
    eprintln!(
        "submissions' floor: {:.0}/s, p99 {:.2} ms, server CPU {:.0} µs per submission",
        sub_floor.rate, sub_floor.p99_ms, sub_floor.server_cpu_us
    );
    let rss_after_submissions = relay.peak_rss_mib();
    eprintln!("relay peak RSS after the submissions: {rss_after_submissions:.1} MiB");
    let (relay_cpu0, client_cpu0) = (cpu_secs(&relay_pid), cpu_secs("self"));
    let (rt_rate, n_rt) = rt.block_on(round_trips(
        std::slice::from_ref(&relay.addr),
        users,
        agents,
        20,
        scratch.clone(),
    ));
    let relay_cpu_rt = (cpu_secs(&relay_pid) - relay_cpu0) / n_rt as f64 * 1000.0;
    let client_cpu_rt = (cpu_secs("self") - client_cpu0) / n_rt as f64 * 1000.0;
    let cores_f = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let relay_capacity = cores_f * 1000.0 / relay_cpu_rt.max(1e-9);
    eprintln!("round trips: {n_rt} at {rt_rate:.0}/s; CPU per round trip: relay {relay_cpu_rt:.2} ms, clients {client_cpu_rt:.2} ms");
    eprintln!(
        "relay peak RSS after the round trips: {:.1} MiB",
        relay.peak_rss_mib()
    );
    let floor = common::floor::measure(&base.join("keys"), users, agents, 20, &rt);
    let sig_ms = common::floor::signatures_ms();
    eprintln!(
        "floor: {:.0}/s; CPU per round trip: server {:.2} ms, clients {:.2} ms; signatures {sig_ms:.3} ms",
        floor.rate, floor.server_cpu_ms, floor.client_cpu_ms
    );

    let (up, down, up_ns, down_ns) = big(256, &relay.addr, &relay_pid);
    let (raw, raw_ns) = rt.block_on(raw_quinn(&base.join("keys"), &users[0], 256 << 20));
    eprintln!("256 MiB: up {up:.0} MB/s, down+open {down:.0} MB/s; raw quinn {raw:.0} MB/s");
    eprintln!(
        "256 MiB: CPU per byte up {up_ns:.2} ns, down {down_ns:.2} ns; raw quinn {raw_ns:.2} ns"
    );
    // The peak while the gibibyte streams: the high-water mark is reset first (the earlier
    // phases' peak is reported beside it), then read when it has gone up and down.
    let run_peak = relay.peak_rss_mib();
    let before_big = relay.reset_peak_rss();
    big(1024, &relay.addr, &relay_pid);
    let rss = relay.peak_rss_mib();
    eprintln!("relay peak RSS while a 1 GiB envelope streamed: {rss:.1} MiB (RSS before it {before_big:.1} MiB; the run's peak before it {run_peak:.1} MiB)");

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mark = |ok: bool| if ok { "met" } else { "**not met**" };
    drop(relay);
    let idle = IdleRelay::start(&bin, base, &ids, 1000, &rt);
    let (idle_rest, idle_1000) = (idle.at_rest, idle.with_idle);
    idle.relay.reset_peak_rss();
    big(1024, &idle.relay.addr, &idle.relay.child.id().to_string());
    let idle_big = idle.relay.peak_rss_mib();
    drop(idle);
    eprintln!(
        "relay RSS: {idle_rest:.1} MiB at rest, {idle_1000:.1} MiB with 1000 idle connections, peak {idle_big:.1} MiB while a 1 GiB envelope streamed beside them"
    );
    let body = format!(
        "## Relay\n\n\
Measured on {cores} cores ({cpu}) by `bash benches/relay.sh`: a release `sealrelay serve` process on\n\
127.0.0.1 with the embedded store (redb, fsync per commit, group commit) and the clients in one\n\
other process on the same 2 cores, so client work competes with the relay for CPU.\n\n\
| measurement | figure | target | |\n|---|---:|---:|---|\n\
| 1 KiB submissions, 32 concurrent agents ({n_sub} in all, pre-sealed) | {sub_rate:.0}/s | ≥ 8,000/s | {m1} |\n\
| submission latency p50 / p99 | {p50:.2} / {p99:.2} ms | p99 ≤ 10 ms | {m2} |\n\
| relay CPU per submission, and of it the commit thread's (the store: redb's copy-on-write pages, fsync) | {cpu_per_sub:.0} µs / {commit_per_sub:.0} µs | | |\n\
| floor, same run: the same submissions (frame and envelope sizes, 32 agents one after another each) against a server that only answers (`benches/common/floor.rs`): rate / p50 / p99 / server CPU per submission | {sf_rate:.0}/s / {sf_p50:.2} ms / {sf_p99:.2} ms / {sf_cpu:.0} µs | | |\n\
| floor: the one Ed25519 signature check a submission needs, one core | {sig_sub_us:.0} µs | | |\n\
| full round trips with receipts: grant → pushed to the agent's subscription → send (seal) → deliver (fetch, verify, open, receipt on one stream), 32 user/agent pairs | {rt_rate:.0}/s | ≥ 1,200/s | {m3} |\n\
| relay CPU per round trip | {relay_cpu_rt:.2} ms | ≤ 0.5 ms | {m10} |\n\
| clients' CPU per round trip (same cores) | {client_cpu_rt:.2} ms | | |\n\
| floor, same run: the same QUIC exchanges and frame sizes against a server that only answers (`benches/common/floor.rs`): round trips / server CPU per round trip / clients' CPU | {f_rate:.0}/s / {f_server:.2} ms / {f_client:.2} ms | | |\n\
| floor: the three Ed25519 signature checks a round trip needs (grant, submission, receipt), one core | {sig_ms:.3} ms | | |\n\
| round trips the relay's own CPU allows on {cores} cores | {relay_capacity:.0}/s | ≥ 4,000/s | {m6} |\n\
| one 256 MiB envelope end to end: upload / download + verify + open into a file (`fetch -o`, on tmpfs) | {up:.0} / {down:.0} MB/s ({up_ratio:.0}% / {down_ratio:.0}% of raw) | ≥ 60% of raw | {m4} |\n\
| raw quinn loopback, one stream, same TLS config, same run | {raw:.0} MB/s | reference | |\n\
| floor, same run: CPU per byte, relay and client together, upload / download, beside raw quinn's (both ends) | {up_ns:.2} / {down_ns:.2} ns, raw {raw_ns:.2} ns: with the cores as busy as raw quinn keeps them, {up_ceiling:.0}% / {down_ceiling:.0}% of its rate | | |\n\
| relay RSS (VmRSS) with 1,000 open idle connections (at rest: {idle_rest:.1} MiB) | {idle_1000:.1} MiB | | |\n\
| relay peak RSS (VmHWM) while a 1 GiB envelope streams beside those 1,000 idle connections | {idle_big:.1} MiB | ≤ 100 MiB | {m9} |\n\
| relay peak RSS (VmHWM, reset before it) while a 1 GiB envelope streams, after the phases above (RSS before it: {before_big:.1} MiB; the run's peak before it: {run_peak:.1} MiB) | {rss:.1} MiB | ≤ 64 MiB | {m5} |\n\
| one Cedar authorization decision (submit, shipped policy), p50 / p99 | {dec_p50:.1} / {dec_p99:.1} µs | p50 ≤ 50 µs | {m7} |\n\
| that decision as a share of the relay's CPU per 1 KiB submission ({cpu_per_sub:.0} µs) | {policy_share:.1}% | ≤ 10% | {m8} |\n\n\
Where the time goes, from the profiles (`bash benches/profile.sh LABEL`, flame graphs in\n\
docs/flamegraphs/), and what would reach each target not met: the section \"Performance: the\n\
limits\" below.\n",
        cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        f_rate = floor.rate,
        sf_rate = sub_floor.rate,
        sf_p50 = sub_floor.p50_ms,
        sf_p99 = sub_floor.p99_ms,
        sf_cpu = sub_floor.server_cpu_us,
        sig_sub_us = sig_ms / 3.0 * 1000.0,
        f_server = floor.server_cpu_ms,
        f_client = floor.client_cpu_ms,
        m1 = mark(sub_rate >= 8000.0),
        m2 = mark(p99 <= 10.0),
        m3 = mark(rt_rate >= 1200.0),
        m4 = mark(up.min(down) >= raw * 0.6),
        m9 = mark(idle_1000.max(idle_big) <= 100.0),
        m10 = mark(relay_cpu_rt <= 0.5),
        down_ratio = 100.0 * down / raw.max(1e-9),
        m5 = mark(rss <= 64.0),
        m6 = mark(relay_capacity >= 4000.0),
        m7 = mark(dec_p50 <= 50.0),
        m8 = mark(policy_share <= 10.0),
        up_ratio = 100.0 * up / raw.max(1e-9),
        up_ceiling = 100.0 * raw_ns / up_ns.max(1e-9),
        down_ceiling = 100.0 * raw_ns / down_ns.max(1e-9),
    );
    replace_section(&root.join("docs/benchmarks.md"), "RELAY", &body);
    let _ = Arc::new(());
}
