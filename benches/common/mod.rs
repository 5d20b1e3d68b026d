//! What the relay benchmarks share: a real `sealrelay serve` process, CPU and latency figures,
//! the 1 KiB submission load, and the docs/benchmarks.md section writer.
#![allow(dead_code)]

pub mod floor;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::core::identity::Identity;

pub fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("bench failed: {msg}");
    std::process::exit(1)
}

pub trait OrFail<T> {
    fn or_fail(self, what: &str) -> T;
}
impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|e| fail(format!("{what}: {e}")))
    }
}
impl<T> OrFail<T> for Option<T> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|| fail(format!("{what}: none")))
    }
}

pub struct Relay {
    pub child: Child,
    pub addr: String,
}

impl Relay {
    pub fn start(bin: &Path, base: &Path) -> Relay {
        Relay::start_with(bin, base, "data", &[])
    }

    /// `serve --dir keys --data DATA --listen 127.0.0.1:0` plus `extra` (e.g. `--config F`).
    pub fn start_with(bin: &Path, base: &Path, data: &str, extra: &[&str]) -> Relay {
        Relay::start_env(bin, base, data, extra, &[])
    }

    /// [`Relay::start_with`] with environment variables (e.g. `SEALRELAY_STORE`).
    pub fn start_env(
        bin: &Path,
        base: &Path,
        data: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Relay {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--dir",
                "keys",
                "--data",
                data,
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .current_dir(base)
            .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .or_fail("start the relay");
        let addr = listening_address(&mut child, "the relay");
        Relay { child, addr }
    }
    /// Peak resident set (VmHWM) of the relay process, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Resident set (VmRSS) of the relay process now, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// Resets the relay's peak resident set to what it holds now (`clear_refs` 5, Linux), so that
    /// the next [`peak_rss_mib`](Self::peak_rss_mib) is the peak of what comes after. Returns
    /// the resident set at the reset, MiB; fails the bench if the kernel refuses.
    pub fn reset_peak_rss(&self) -> f64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .or_fail("reset the relay's peak RSS (/proc/PID/clear_refs)");
        self.rss_mib()
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat (clock ticks of 1/100 s).
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The address at the end of the first line `child` prints ("… listening on ADDR").
pub fn listening_address(child: &mut std::process::Child, what: &str) -> String {
    let stdout = child.stdout.take().unwrap_or_else(|| fail("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .or_fail(&format!("read the first line of {what}"));
    line.trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// CPU seconds the threads of process `pid` whose name starts with `prefix` have used (the
/// relay's commit thread is `sealrelay-commit`, shown as `sealrelay-commi`).
pub fn thread_cpu_secs(pid: &str, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| cpu_secs(&format!("{pid}/task/{}", t.file_name().to_string_lossy())))
        .sum()
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub fn grant_req(agent: &str, max: u64) -> GrantRequest {
    GrantRequest {
        agent: agent.into(),
        resource: "tickets/bench".into(),
        purpose: String::new(),
        ttl_secs: 3600,
        max_bytes: max,
    }
}

/// Bytes that are not text, so the relay's randomness check sees ciphertext-like input (the
/// envelopes here are real age files anyway).
pub fn data(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v).or_fail("random");
    v
}

/// 1 KiB submissions, `per_agent` from each agent at once (pre-sealed; the timed part is the
/// relay's work); with several relay nodes (`addrs`), agent `k` and user `j` speak to node
/// `k` and `j` (round robin). Returns the rate, p50 and p99 (ms), the count, the CPU the
/// relays in `relay_pids` used per submission (µs) and, of that, their commit threads' (µs).
pub async fn submissions(
    addrs: &[String],
    users: &[Identity],
    agents: &[Identity],
    per_agent: usize,
    scratch: &Path,
    relay_pids: &[String],
) -> (f64, f64, f64, usize, f64, f64) {
    // Grants first (not timed): each agent gets `per_agent` grants from the users in turn.
    let mut user_conns = Vec::new();
    for (j, u) in users.iter().enumerate() {
        let addr = &addrs[j % addrs.len()];
        user_conns.push(UserClient::connect(u, addr).await.or_fail("user connect"));
    }
    for (k, a) in agents.iter().enumerate() {
        let name = a.name.clone();
        for j in 0..per_agent {
            let u = &user_conns[(k + j) % user_conns.len()];
            u.grant(&grant_req(&name, 64 * 1024)).await.or_fail("grant");
        }
    }
    // Each agent seals its 1 KiB envelopes up front; the timed part is the relay's work.
    let barrier = Arc::new(tokio::sync::Barrier::new(agents.len() + 1));
    let mut tasks = Vec::new();
    for (k, a) in agents.iter().enumerate() {
        let a = a.clone_for_bench();
        let addr = addrs[k % addrs.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let client = AgentClient::connect(&a, &addr)
                .await
                .or_fail("agent connect");
            let grants = client.grants().await.or_fail("grants");
            let mut prepared = Vec::new();
            for g in grants {
                let recipient: sealrelay::core::envelope::keys::AgeRecipient = g
                    .user_entry
                    .age_recipient
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .or_fail("recipient");
                let mut body = Vec::new();
                sealrelay::core::envelope::seal(
                    &recipient,
                    &mut data(1024).as_slice(),
                    &mut body,
                    1,
                )
                .or_fail("seal");
                let st = sealrelay::core::envelope::submission::Submission {
                    grant_id: g.grant.grant_id,
                    user: g.grant.user.clone(),
                    agent: a.id.clone().unwrap_or_else(|| fail("agent id")),
                    ciphertext_root: sealrelay::core::envelope::pieces::digest(&body),
                    ciphertext_len: body.len() as u64,
                }
                .sign(&a.signing_key);
                prepared.push((g.grant.grant_id, st, body));
            }
            barrier.wait().await;
            let mut lat = Vec::new();
            for (gid, st, body) in prepared {
                let t = Instant::now();
                client
                    .submit_raw(gid, &st, body.len() as u64, &mut body.as_slice())
                    .await
                    .or_fail("submit");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let _ = scratch;
    barrier.wait().await;
    let cpu = || relay_pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let commit_cpu = || {
        relay_pids
            .iter()
            .map(|p| thread_cpu_secs(p, "sealrelay-commi"))
            .sum::<f64>()
    };
    let (cpu0, commit0) = (cpu(), commit_cpu());
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.or_fail("join"));
    }
    let secs = start.elapsed().as_secs_f64();
    // Relay CPU per submission (µs), for the policy-overhead figure.
    let cpu_per = (cpu() - cpu0) / all.len().max(1) as f64 * 1e6;
    let commit_per = (commit_cpu() - commit0) / all.len().max(1) as f64 * 1e6;
    all.sort();
    (
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len(),
        cpu_per,
        commit_per,
    )
}

/// Full round trips (grant → list → send → fetch → receipt), `per_user` for each of the
/// user/agent pairs at once; with several relay nodes (`addrs`), pair `i`'s user speaks to node
/// `i` and its agent to the next node, so every round trip crosses nodes.
pub async fn round_trips(
    addrs: &[String],
    users: &[Identity],
    agents: &[Identity],
    per_user: usize,
    scratch: PathBuf,
) -> (f64, usize) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    // User i asks agent i: each agent's grant list stays short.
    for (i, (u, bot)) in users.iter().zip(agents).enumerate() {
        let u = u.clone_for_bench();
        let bot = bot.clone_for_bench();
        let user_addr = addrs[i % addrs.len()].clone();
        let agent_addr = addrs[(i + 1) % addrs.len()].clone();
        let scratch = scratch.clone();
        tasks.push(tokio::spawn(async move {
            let uc = UserClient::connect(&u, &user_addr)
                .await
                .or_fail("user connect");
            let ac = AgentClient::connect(&bot, &agent_addr)
                .await
                .or_fail("agent connect");
            // The agent follows its grants (pushed by the relay), as `agent run` does.
            let mut feed = ac
                .subscribe(&mut sealrelay::client::Followed::default())
                .await
                .or_fail("subscribe");
            while let sealrelay::client::FeedEvent::Items(_) =
                ac.next_grants(&mut feed).await.or_fail("catch-up")
            {}
            for _ in 0..per_user {
                let gid = uc
                    .grant(&grant_req(&bot.name, 64 * 1024))
                    .await
                    .or_fail("grant");
                let g = match ac.next_grants(&mut feed).await.or_fail("pushed grant") {
                    sealrelay::client::FeedEvent::Items(mut items) if items.len() == 1 => {
                        items.pop().or_fail("item").1.or_fail("grant verifies")
                    }
                    _ => fail("not the one grant pushed"),
                };
                if g.grant.grant_id != gid {
                    fail("another grant was pushed");
                }
                let env = ac
                    .send(&g, &mut data(1024).as_slice(), &scratch)
                    .await
                    .or_fail("send");
                let mut out = Vec::new();
                uc.fetch(env, &scratch, &mut out).await.or_fail("fetch");
            }
        }));
    }
    for t in tasks {
        t.await.or_fail("join");
    }
    let n = users.len() * per_user;
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

pub trait CloneForBench {
    fn clone_for_bench(&self) -> Identity;
}
impl CloneForBench for Identity {
    fn clone_for_bench(&self) -> Identity {
        match sealrelay::core::identity::parse_identity_file(self.to_text().as_bytes())
            .or_fail("identity")
        {
            sealrelay::core::identity::IdentityFile::Sealrelay(b) => *b,
            _ => fail("identity"),
        }
    }
}

pub fn replace_section(doc: &Path, name: &str, body: &str) {
    let begin = format!("<!-- BEGIN {name} -->");
    let end = format!("<!-- END {name} -->");
    let text = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &text[..a], block, &text[b + end.len()..]),
        _ => format!("{}\n\n{}\n", text.trim_end(), block),
    };
    std::fs::write(doc, new).or_fail("write docs/benchmarks.md");
}

/// The release binary, a temporary directory with a trust root, and 32 users then 32 agents
/// (scope `tickets/*`) provisioned in it: what every relay benchmark starts from.
pub fn bench_world() -> (
    std::path::PathBuf,
    std::path::PathBuf,
    tempfile::TempDir,
    Vec<Identity>,
) {
    use sealrelay::local::provision::{agent, provision, user, PartySpec};
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // SEALRELAY_BENCH_BIN: another relay binary to serve (an A/B run against an older build).
    let bin = std::env::var_os("SEALRELAY_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/sealrelay"));
    if !bin.exists() {
        fail("build the release binary first: cargo build --release (the benches' .sh scripts do)");
    }
    let tmp = tempfile::tempdir().or_fail("tempdir");
    let now = sealrelay::clock::now();
    let user_names: Vec<String> = (0..32).map(|i| format!("user{i}")).collect();
    let agent_names: Vec<String> = (0..32).map(|i| format!("agent{i}")).collect();
    let mut specs: Vec<PartySpec> = user_names.iter().map(|n| user(n, 2, &[])).collect();
    specs.extend(agent_names.iter().map(|n| agent(n, &["tickets/*"])));
    let (ids, _) = provision(&tmp.path().join("keys"), &specs, now).or_fail("provision");
    (root, bin, tmp, ids)
}
