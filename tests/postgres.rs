//! The PostgreSQL store against a real PostgreSQL server that each test starts itself (Debian's
//! `initdb`/`pg_ctl`, a temporary data directory, a free loopback port): the server killed
//! with SIGKILL and restarted under a running relay, and two relay nodes on one database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{ok_in, run_in};

/// A PostgreSQL server of the test's own.
struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("SEALRELAY_PG_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `bin/tool args`, as the `postgres` user when this runs as root (the server refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl Pg {
    fn start() -> Option<Pg> {
        let Some(bin) = pg_bin() else {
            if std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_some() {
                panic!("PostgreSQL is not installed and SEALRELAY_REQUIRE_TOOLS is set");
            }
            eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let out = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let data = dir.path().join("data");
        let out = pg_command(&bin, "initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "sealrelay",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg {
            _dir: dir,
            data,
            bin,
            port,
        };
        pg.run();
        Some(pg)
    }

    /// Starts the server (again); waits until it accepts connections.
    fn run(&self) {
        let sock = self.data.parent().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = pg_command(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(sock.join("log"))
                .args(["-w", "-o"])
                .arg(format!(
                    "-k {} -p {} -c listen_addresses=127.0.0.1",
                    sock.display(),
                    self.port
                ))
                .arg("start")
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            // After a SIGKILL the old server's children may still hold the port a moment.
            assert!(
                std::time::Instant::now() < deadline,
                "pg_ctl start: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// SIGKILL to the postmaster (as `kill -9` would), and to its children.
    fn kill9(&self) {
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let _ = Command::new("pkill").args(["-9", "-P", &pid]).status();
        let status = Command::new("kill").args(["-9", &pid]).status().unwrap();
        assert!(status.success());
        // Wait for the postmaster to be gone.
        while Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A new database, as a URL.
    fn database(&self, name: &str) -> String {
        let admin = format!("postgres://sealrelay@127.0.0.1:{}/postgres", self.port);
        let sql = format!("CREATE DATABASE {name}");
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&sql).unwrap();
        })
        .join()
        .unwrap();
        format!("postgres://sealrelay@127.0.0.1:{}/{name}", self.port)
    }

    fn stop(&self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `serve` on `url` with data in `dir/data_name`; returns it, its address and its admin URL.
fn serve(dir: &Path, data_name: &str, url: &str) -> (std::process::Child, String, String) {
    common::serve_with_admin(
        dir,
        data_name,
        vec![
            ("SEALRELAY_STORE".to_owned(), url.to_owned()),
            // The kill loop leaves the grants of unacknowledged sends open: more than one
            // user's default share of an agent over 20 cycles.
            (
                "SEALRELAY_QUOTAS__MAX_OPEN_GRANTS_PER_USER_PER_AGENT".to_owned(),
                "1000".to_owned(),
            ),
        ],
    )
}

fn grant(dir: &Path, addr: &str, resource: &str) -> String {
    ok_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            resource,
            "--relay",
            addr,
        ],
    )
    .trim()
    .to_owned()
}

/// `sealrelay send` of `file` on `grant` as the agent, through `relay`: the envelope id.
fn send(dir: &Path, relay: &str, grant: &str, file: &str) -> String {
    let args = ["send", "--identity", "bot.id", "--grant", grant, file];
    ok_in(dir, &[&args[..], &["--relay", relay]].concat())
        .trim()
        .to_owned()
}

/// alice's `fetch --all -o out` through `relay`.
fn fetch_all(dir: &Path, relay: &str, out: &str) {
    let args = ["fetch", "--identity", "alice.id", "--all", "-o", out];
    ok_in(dir, &[&args[..], &["--relay", relay]].concat());
}

/// alice's `audit verify` through `relay`: what it printed.
fn audit_verify(dir: &Path, relay: &str) -> String {
    ok_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            relay,
        ],
    )
}

fn readyz(admin: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    agent
        .get(&format!("{admin}/readyz"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn postgres_killed_and_restarted_under_a_relay_loses_nothing_acked_and_service_resumes() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database("relay");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let (relay, addr, admin) = serve(dir, "data", &url);

    // Acknowledged envelopes before the database goes down.
    let mut acked = Vec::new();
    for i in 0..5 {
        let g = grant(dir, &addr, &format!("tickets/{i}"));
        std::fs::write(dir.join(format!("in{i}")), format!("ticket {i}\n")).unwrap();
        let id = send(dir, &addr, &g, &format!("in{i}"));
        acked.push((id, format!("ticket {i}\n")));
    }
    assert_eq!(readyz(&admin), 200);

    pg.kill9();
    let (code, _, err) = run_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            "tickets/down",
            "--relay",
            &addr,
        ],
    );
    assert_ne!(code, 0, "a grant with the database down succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("unavailable, try again"), "{err}");
    assert_eq!(readyz(&admin), 503);

    // The database comes back; the relay, never restarted, serves again by itself.
    pg.run();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, _, err) = run_in(
            dir,
            &[
                "grant",
                "--identity",
                "alice.id",
                "--agent",
                "research-bot",
                "--resource",
                "tickets/up",
                "--relay",
                &addr,
            ],
        );
        if code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not recover: {err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    while readyz(&admin) != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Every one of the relay's connections died with the server: none may fail a request now
    // (each is made again, and a read sent again, when found broken).
    for _ in 0..24 {
        ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &addr]);
    }
    fetch_all(dir, &addr, "got");
    for (id, text) in &acked {
        let got = std::fs::read_to_string(dir.join("got").join(id))
            .unwrap_or_else(|_| panic!("acked envelope {id} was lost"));
        assert_eq!(&got, text);
    }
    common::terminate(relay);
}

#[test]
fn two_nodes_on_one_database_share_grants_envelopes_and_one_log() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database("shared");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let (a, addr_a, _) = serve(dir, "data-a", &url);
    let (b, addr_b, _) = serve(dir, "data-b", &url);

    // A grant made on A, sent on B, fetched on A.
    let g = grant(dir, &addr_a, "tickets/1");
    std::fs::write(dir.join("small"), "across nodes\n").unwrap();
    let id = send(dir, &addr_b, &g, "small");
    fetch_all(dir, &addr_a, "got");
    assert_eq!(
        std::fs::read_to_string(dir.join("got").join(&id)).unwrap(),
        "across nodes\n"
    );
    let out = audit_verify(dir, &addr_a);
    assert!(out.starts_with("ok:"), "{out}");

    // A large envelope (pieces in the database) sent through B is fetched through A, and its
    // pieces go with its receipt.
    let g = grant(dir, &addr_a, "tickets/large");
    let large = common::pattern(3 * 1024 * 1024 + 4321, 7);
    std::fs::write(dir.join("large"), &large).unwrap();
    let id = send(dir, &addr_b, &g, "large");
    let pieces = common::count_rows(&url, "blob_pieces");
    assert!(pieces > 10, "a 3 MiB envelope in {pieces} pieces");
    assert_eq!(common::count_rows(&url, "blobs"), 1);
    fetch_all(dir, &addr_a, "got-large");
    assert!(
        std::fs::read(dir.join("got-large").join(&id)).unwrap() == large,
        "the large envelope fetched through A differs from what was sent through B"
    );
    assert_eq!(common::count_rows(&url, "blobs"), 0, "delivered, yet kept");
    assert_eq!(common::count_rows(&url, "blob_pieces"), 0);

    // Eight sends racing on one grant, four through each node: exactly one is stored.
    let g = grant(dir, &addr_b, "tickets/2");
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let addr = if i % 2 == 0 { &addr_a } else { &addr_b };
            start_send(dir, "small", &g, addr)
        })
        .collect();
    let outcomes: Vec<_> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let stored = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        stored,
        1,
        "{:?}",
        outcomes
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    let count: i64 = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query_one("SELECT count(*) FROM envelopes WHERE waiting", &[])
                .unwrap()
                .get(0)
        })
        .join()
        .unwrap()
    };
    // (The first grant's envelope went once its receipt was recorded.)
    assert_eq!(count, 1, "one envelope stored for the raced grant");

    // One log: B's checkpoint extends the one alice saved from A (and back again).
    let out = audit_verify(dir, &addr_b);
    assert!(out.contains("consistent with your checkpoint"), "{out}");
    grant(dir, &addr_a, "tickets/3");
    let out = audit_verify(dir, &addr_a);
    assert!(out.contains("consistent with your checkpoint"), "{out}");

    // A subscription on B gets a grant made through A, pushed (B tails the shared log every
    // second), and only once however many times B reads that part of the log.
    let bot = sealrelay::local::identity_file::load(&dir.join("bot.id"), None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sealrelay::client::{AgentClient, FeedEvent, Followed};
        let agent = AgentClient::connect(&bot, &addr_b).await.unwrap();
        let mut feed = agent.subscribe(&mut Followed::default()).await.unwrap();
        // What waits (the grants made above) first.
        while let FeedEvent::Items(items) = agent.next_grants(&mut feed).await.unwrap() {
            assert!(!items.is_empty());
        }
        let made = grant(dir, &addr_a, "tickets/pushed");
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            agent.next_grants(&mut feed),
        )
        .await
        .expect("a grant made through node A did not reach a subscription on node B")
        .unwrap();
        let FeedEvent::Items(items) = next else {
            panic!("not a grant")
        };
        let ids: Vec<String> = items
            .into_iter()
            .map(|(_, g)| sealrelay::ids::hex(g.unwrap().grant.grant_id))
            .collect();
        assert_eq!(ids, vec![made.clone()]);
        // Nothing else comes within three more passes of B's tail.
        let more = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            agent.next_grants(&mut feed),
        )
        .await;
        assert!(more.is_err(), "something came again, or unasked");
        agent.conn.close().await;
    });

    // A revocation pushed to A is in force on B (within its one-second sync).
    ok_in(
        dir,
        &[
            "agent",
            "revoke",
            "research-bot",
            "--dir",
            "keys",
            "--relay",
            &addr_a,
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (code, _, err) = run_in(dir, &["grants", "--identity", "bot.id", "--relay", &addr_b]);
        if code != 0 {
            assert!(err.contains("revoked"), "{err}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node B still serves a party revoked through node A"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    common::terminate(a);
    common::terminate(b);
}

const SENDS: usize = 6;
/// When each cycle's kill comes, after its sends start.
/// (The longest is there for a slow or busy machine, where no send would finish sooner.)
const KILL_AFTER_MS: [u64; 10] = [0, 50, 100, 150, 200, 250, 300, 400, 600, 3000];

/// Files of `SENDS` envelopes (every other one large enough for several pieces in the
/// database), each with a grant made through `granting`.
fn prepare_batch(dir: &Path, granting: &str, tag: &str) -> Vec<(Vec<u8>, String, String)> {
    (0..SENDS)
        .map(|i| {
            let g = grant(dir, granting, &format!("tickets/{tag}/{i}"));
            let len = if i % 2 == 0 { 600 * 1024 + i } else { 100 + i };
            let seed = tag.bytes().fold(u8::try_from(i).unwrap(), |a, b| {
                a.wrapping_mul(31).wrapping_add(b)
            });
            let body = common::pattern(len, seed);
            let name = format!("in-{tag}-{i}");
            std::fs::write(dir.join(&name), &body).unwrap();
            (body, name, g)
        })
        .collect()
}

/// `sealrelay send` of one prepared envelope through `relay`, started.
fn start_send(dir: &Path, name: &str, grant: &str, relay: &str) -> std::process::Child {
    Command::new(common::bin())
        .args(["send", "--identity", "bot.id", "--grant", grant, name])
        .args(["--relay", relay])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The other node of two.
fn other(i: usize) -> usize {
    1 - i
}

#[test]
fn a_node_killed_during_concurrent_sends_loses_nothing_acked_twenty_times() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database("killed");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let names = ["data-a", "data-b"];
    let mut nodes = Nodes(
        names
            .iter()
            .map(|n| {
                let (c, addr, _) = serve(dir, n, &url);
                (c, addr)
            })
            .collect(),
    );
    let (mut acked_total, mut cut_total) = (0, 0);
    let mut mid_batch = 0;
    for cycle in 0..20 {
        // Node `k` is killed this cycle; `s` survives and serves grants and fetches.
        let (k, s) = (cycle % 2, other(cycle % 2));
        let survivor = nodes[s].1.clone();
        let batch = prepare_batch(dir, &survivor, &format!("{cycle}"));
        let senders: Vec<_> = batch
            .iter()
            .map(|(_, name, g)| start_send(dir, name, g, &nodes[k].1))
            .collect();
        // kill -9 at a different moment each cycle: before the sends connect, while they
        // upload, after some or all were acknowledged.
        std::thread::sleep(std::time::Duration::from_millis(KILL_AFTER_MS[cycle % 10]));
        nodes[k].0.kill().unwrap();
        nodes[k].0.wait().unwrap();
        let mut acked = Vec::new();
        // A send still waiting two seconds after its relay died can no longer be answered (it
        // would wait out its idle timeout): it is stopped, and counts as cut off.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for (i, mut c) in senders.into_iter().enumerate() {
            while c.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            if out.status.success() {
                acked.push((String::from_utf8(out.stdout).unwrap().trim().to_owned(), i));
            }
        }
        if !acked.is_empty() && acked.len() < SENDS {
            mid_batch += 1;
        }
        acked_total += acked.len();
        cut_total += SENDS - acked.len();
        // Every acknowledged envelope, fetched from the node that was not killed.
        let got = format!("got-{cycle}");
        fetch_all(dir, &survivor, &got);
        for (id, i) in &acked {
            let bytes = std::fs::read(dir.join(&got).join(id)).unwrap_or_else(|_| {
                panic!("cycle {cycle}: envelope {id}, acknowledged before the kill, was lost")
            });
            assert!(bytes == batch[*i].0, "cycle {cycle}: envelope {id} differs");
        }
        // The killed node comes back on the same data directory and database.
        let (c, addr, _) = serve(dir, names[k], &url);
        nodes[k] = (c, addr);
    }
    eprintln!(
        "{acked_total} sends acknowledged, {cut_total} cut off by a kill; {mid_batch} of 20 kills landed mid-batch"
    );
    assert!(
        acked_total > 0 && cut_total > 0,
        "the kills never landed during the sends"
    );
    // One log still, through a node that was killed and restarted.
    let audit = audit_verify(dir, &nodes[0].1);
    assert!(audit.contains("consistent with your checkpoint"), "{audit}");
    for (c, _) in std::mem::take(&mut nodes.0) {
        common::terminate(c);
    }
}

/// Relay nodes, killed if the test fails before it stops them.
struct Nodes(Vec<(std::process::Child, String)>);

impl std::ops::Deref for Nodes {
    type Target = Vec<(std::process::Child, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Nodes {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn blob_pieces_of_a_refused_or_crashed_upload_are_removed_and_a_running_one_is_kept() {
    use sealrelay::store::blobs::BlobStore;
    let Some(pg) = Pg::start() else { return };
    let url = pg.database("blobs");
    let store = sealrelay::store::postgres::PgStore::connect(&url, 2).unwrap();
    let blobs = store.blobs();
    let id = |b: u8| sealrelay::ids::EnvelopeId([b; 16]);
    let piece = common::pattern(sealrelay::store::blobs::PIECE, 1);

    // A writer dropped before its commit (a refused upload) leaves nothing.
    let mut w = blobs.create(&id(1)).unwrap();
    w.write(&piece).unwrap();
    assert_eq!(common::count_rows(&url, "blob_pieces"), 1);
    drop(w);
    assert_eq!(common::count_rows(&url, "blobs"), 0);
    assert_eq!(common::count_rows(&url, "blob_pieces"), 0);

    // A committed blob reads back piece by piece, and rewinds.
    let mut w = blobs.create(&id(2)).unwrap();
    w.write(&piece).unwrap();
    w.write(b"tail").unwrap();
    w.commit().unwrap();
    let mut r = blobs.open(&id(2)).unwrap().expect("committed");
    let mut buf = Vec::new();
    let mut all = Vec::new();
    for _ in 0..2 {
        all.clear();
        loop {
            r.read(&mut buf).unwrap();
            if buf.is_empty() {
                break;
            }
            all.extend_from_slice(&buf);
        }
        assert_eq!(all.len(), piece.len() + 4);
        assert!(all[..piece.len()] == piece[..] && &all[piece.len()..] == b"tail");
        r.seek_piece(0).unwrap();
    }
    // What follows a ciphertext of one piece (its piece list), and a seek to the second piece.
    assert_eq!(r.trailer(piece.len() as u64, 4).unwrap(), b"tail");
    assert_eq!(r.trailer(piece.len() as u64, 2).unwrap(), b"tai");
    r.seek_piece(1).unwrap();
    r.read(&mut buf).unwrap();
    assert_eq!(buf, b"tail");
    // An upload still running (uncommitted) is not readable.
    let mut running = blobs.create(&id(3)).unwrap();
    running.write(b"partial").unwrap();
    assert!(blobs.open(&id(3)).unwrap().is_none());

    // A committed blob an envelope names (its record is in `envelopes`).
    let mut w = blobs.create(&id(4)).unwrap();
    w.write(b"named").unwrap();
    w.commit().unwrap();
    let sql = |sql: &'static str, key: Vec<u8>| {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.execute(sql, &[&key]).unwrap();
        })
        .join()
        .unwrap();
    };
    sql(
        "INSERT INTO envelopes (envelope_id, user_id, waiting, record) VALUES ($1, 'u', true, '')",
        id(4).0.to_vec(),
    );

    // What a crash left (no envelope names these blobs): swept once untouched for an hour, and
    // not before; a running upload on another node is touched by every piece.
    assert_eq!(blobs.sweep_idle().unwrap(), 0);
    let age = "UPDATE blobs SET touched = now() - interval '61 minutes' WHERE envelope_id = $1";
    sql(age, id(2).0.to_vec());
    sql(age, id(4).0.to_vec());
    assert_eq!(blobs.sweep_idle().unwrap(), 1);
    assert!(blobs.open(&id(2)).unwrap().is_none(), "a leftover was kept");
    assert!(
        blobs.open(&id(4)).unwrap().is_some(),
        "an envelope's ciphertext was swept"
    );
    assert_eq!(
        common::count_rows(&url, "blobs"),
        2,
        "the running upload was swept"
    );
    running.write(b" more").unwrap();
    // An upload cut off by a crash (never committed) goes too; were it still running, its
    // next piece says so.
    sql(age, id(3).0.to_vec());
    assert_eq!(blobs.sweep_idle().unwrap(), 1);
    let err = running.write(b" late").unwrap_err();
    assert!(err.to_string().contains("send it again"), "{err}");
}

#[test]
fn the_monitor_counts_an_agents_denials_on_every_node_together() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database("monitor");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    // Four policy denials in the window quarantine an agent: two on each node must do it.
    let envs = || {
        vec![
            ("SEALRELAY_STORE".to_owned(), url.clone()),
            ("SEALRELAY_MONITOR__MAX_DENIALS".to_owned(), "4".to_owned()),
        ]
    };
    let mut nodes = Nodes(
        ["data-a", "data-b"]
            .iter()
            .map(|n| {
                let (c, addr, _) = common::serve_with_admin(dir, n, envs());
                (c, addr)
            })
            .collect(),
    );
    let (a, b) = (nodes[0].1.clone(), nodes[1].1.clone());
    let bot = sealrelay::local::identity_file::load(
        &dir.join("bot.id"),
        Some(sealrelay::ids::PartyKind::Agent),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let denied = |addr: &str| {
        // An agent has no inbox: the relay's policy denies it (the raw request, past the
        // client's own check).
        let err = rt.block_on(async {
            let client = sealrelay::client::AgentClient::connect(&bot, addr)
                .await
                .unwrap();
            let inbox = sealrelay::core::wire::Request::Inbox {
                page: sealrelay::core::wire::Page::first(),
            };
            client.conn.call(inbox, None).await.map(|_| ()).unwrap_err()
        });
        err.to_string()
    };
    for addr in [&a, &b, &a] {
        let err = denied(addr);
        assert!(err.contains("denied by policy"), "{err}");
    }
    ok_in(dir, &["grants", "--identity", "bot.id", "--relay", &b]);
    // The fourth, on B: two per node, four in all. The quarantine closes the connection the
    // denied request came on.
    let err = denied(&b);
    assert!(err.contains("quarantined"), "{err}");
    for addr in [&a, &b] {
        // Quarantined on B at once, and on A within its one-second reload.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (code, _, err) = run_in(dir, &["grants", "--identity", "bot.id", "--relay", addr]);
            if code != 0 {
                assert!(err.contains("quarantined"), "{err}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "four denials across two nodes did not quarantine the agent"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // A release forgets the signals on every node: one more denial does not quarantine again.
    ok_in(
        dir,
        &[
            "agent",
            "release",
            "research-bot",
            "--dir",
            "keys",
            "--relay",
            &a,
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while run_in(dir, &["grants", "--identity", "bot.id", "--relay", &b]).0 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the release did not reach B"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = denied(&b);
    assert!(err.contains("denied by policy"), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ok_in(dir, &["grants", "--identity", "bot.id", "--relay", &a]);
    ok_in(dir, &["grants", "--identity", "bot.id", "--relay", &b]);
    for (c, _) in std::mem::take(&mut nodes.0) {
        common::terminate(c);
    }
}

/// `serve` on `url` that must fail to start: (exit code, the last line of stderr, all of it).
fn serve_fails(dir: &Path, url: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(common::bin());
    cmd.args(["serve", "--dir", "keys", "--data", "data"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .env_remove("SEALRELAY_STORE")
        .current_dir(dir);
    if let Some(url) = url {
        cmd.env("SEALRELAY_STORE", url);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = err.trim_end().lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "{err}");
    (out.status.code().unwrap_or(-1), last, err)
}

/// Issue 33: a server that refuses the credentials in `store`, or has no such database, is
/// named in one line that says what to check (never "unavailable, try again", never the
/// password); and a node that ran on PostgreSQL, started without its `store`, is told that,
/// not that its data was rolled back.
#[test]
fn a_refused_or_missing_store_is_named_at_start() {
    let Some(pg) = Pg::start() else { return };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);

    // The test server trusts every local user that exists: an unknown role is refused (28000).
    let url = format!(
        "postgres://nobody:n0t-this-pw@127.0.0.1:{}/postgres",
        pg.port
    );
    let (code, last, err) = serve_fails(dir, Some(&url));
    assert_eq!(code, 3, "{err}");
    assert!(
        last.contains("store: the database refused the credentials (28000")
            && last.contains("pg_hba.conf")
            && !last.contains("try again"),
        "{last}"
    );
    assert!(
        !err.contains("n0t-this-pw"),
        "the password was printed: {err}"
    );

    let url = format!("postgres://sealrelay@127.0.0.1:{}/no_such_db", pg.port);
    let (code, last, err) = serve_fails(dir, Some(&url));
    assert_eq!(code, 3, "{err}");
    assert!(
        last.contains("the database does not exist (3D000") && last.contains("createdb"),
        "{last}"
    );

    // A node on PostgreSQL, then started without its store.
    let url = pg.database("relay");
    let (relay, _, _) = serve(dir, "data", &url);
    common::terminate(relay);
    let (code, last, err) = serve_fails(dir, None);
    assert_ne!(code, 0, "{err}");
    assert!(
        last.contains("made on PostgreSQL")
            && last.contains("started without its `store` (SEALRELAY_STORE)")
            && !last.contains("rolled back"),
        "{last}"
    );
    let (relay, _, _) = serve(dir, "data", &url);
    common::terminate(relay);
}
