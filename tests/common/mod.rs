//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

pub mod hooked;

/// `../shared/vectors/<sub>` when present. When absent the test says so and skips, unless
/// `SEALRELAY_REQUIRE_VECTORS` is set (as `.ci/run` does), in which case it fails.
pub fn vectors(sub: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("vectors")
        .join(sub);
    if dir.exists() {
        return Some(dir);
    }
    if std::env::var_os("SEALRELAY_REQUIRE_VECTORS").is_some() {
        panic!(
            "test vectors {} are missing and SEALRELAY_REQUIRE_VECTORS is set",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: test vectors {} not found (put ../shared beside the repository to run them)",
        dir.display()
    );
    None
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The path of the built `sealrelay` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sealrelay"))
}

/// Runs the binary in `dir` with `args`; returns (exit code, stdout, stderr).
pub fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("SEALRELAY_RELAY")
        .output()
        .expect("run sealrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs and requires success.
pub fn ok_in(dir: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = run_in(dir, args);
    assert_eq!(code, 0, "sealrelay {args:?} failed: {err}");
    out
}

/// Every file under `dir` with its bytes and mode, sorted: a before/after picture.
pub fn snapshot(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    bytes,
                    meta.permissions().mode(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Asserts a failure: the exit code, a single-line error, and that nothing under `dir` changed.
pub fn fails_cleanly(dir: &std::path::Path, args: &[&str], code: i32, needle: &str) -> String {
    let before = snapshot(dir);
    let (got, _out, err) = run_in(dir, args);
    assert_eq!(got, code, "sealrelay {args:?}: exit {got}, stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err:?}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert!(
        snapshot(dir) == before,
        "sealrelay {args:?} changed files although it failed"
    );
    err
}

/// `data` sealed to `user`'s age key (one thread).
pub fn seal_for(user: &sealrelay::core::identity::Identity, data: &[u8]) -> Vec<u8> {
    let recipient = user.age_identity.as_ref().unwrap().to_public();
    let mut out = Vec::new();
    sealrelay::core::envelope::seal(&recipient, &mut &data[..], &mut out, 1).unwrap();
    out
}

/// `bot`'s signed submission statement for `body` on `grant_id`, a grant of `alice`'s.
pub fn submission(
    bot: &sealrelay::core::identity::Identity,
    alice: &sealrelay::core::identity::Identity,
    grant_id: sealrelay::ids::GrantId,
    body: &[u8],
) -> sealrelay::core::sign::Signed {
    sealrelay::core::envelope::submission::Submission {
        grant_id,
        user: alice.id.clone().unwrap(),
        agent: bot.id.clone().unwrap(),
        ciphertext_root: sealrelay::core::envelope::pieces::digest(body),
        ciphertext_len: body.len() as u64,
    }
    .sign(&bot.signing_key)
}

/// A temporary directory on a file system with `bytes` free beside the relay's reserve: the
/// RAM-backed `/dev/shm` when it has the room (a CI machine's disk can be nearly full once the
/// test binaries are built, and a relay then rightly refuses a 1 GiB envelope as "storage
/// full"), else the usual temporary directory. When neither has it the test says so and skips.
pub fn roomy_tempdir(bytes: u64) -> Option<tempfile::TempDir> {
    let need = bytes + (64 << 20);
    let shm = std::path::Path::new("/dev/shm");
    let free = |p: &std::path::Path| sealrelay::local::fs::free_bytes(p).unwrap_or(0);
    if free(shm) >= need {
        return Some(tempfile::tempdir_in(shm).unwrap());
    }
    let t = tempfile::tempdir().unwrap();
    if free(t.path()) >= need {
        return Some(t);
    }
    eprintln!(
        "SKIPPED: this test needs {} MiB free, and neither /dev/shm nor {} has it",
        need >> 20,
        t.path().display()
    );
    None
}

/// Whether an external tool is installed. When it is not, the test says so and skips, unless
/// `SEALRELAY_REQUIRE_TOOLS` is set (as `.ci/run` does), in which case it fails.
pub fn have_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_some() {
            panic!("{name} is not installed and SEALRELAY_REQUIRE_TOOLS is set");
        }
        eprintln!("SKIPPED: {name} is not installed (apt-get install {name})");
    }
    found
}

/// Deterministic test bytes of a given length (not all-equal, not random-looking text).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// `plaintext` sealed to `user` and the agent's signed statement for it on `grant`.
pub fn sealed_for(
    user: &sealrelay::core::identity::Identity,
    agent: &sealrelay::core::identity::Identity,
    grant: sealrelay::ids::GrantId,
    plaintext: &[u8],
) -> (Vec<u8>, sealrelay::core::sign::Signed) {
    let recipient = user.age_identity.as_ref().unwrap().to_public();
    let mut body = Vec::new();
    sealrelay::core::envelope::seal(&recipient, &mut &plaintext[..], &mut body, 1).unwrap();
    let statement = sealrelay::core::envelope::submission::Submission {
        grant_id: grant,
        user: user.id.clone().unwrap(),
        agent: agent.id.clone().unwrap(),
        ciphertext_root: sealrelay::core::envelope::pieces::digest(&body),
        ciphertext_len: body.len() as u64,
    }
    .sign(&agent.signing_key);
    (body, statement)
}

/// Opens a stream on `conn` and sends a `Submit` of `len` bytes for `grant` with `statement`,
/// and no body yet.
pub async fn raw_submit(
    conn: &quinn::Connection,
    grant: sealrelay::ids::GrantId,
    statement: &sealrelay::core::sign::Signed,
    len: u64,
) -> (quinn::SendStream, quinn::RecvStream) {
    use sealrelay::core::wire::{self, Request, RequestFrame, WireSigned};
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let frame = wire::encode_frame(&RequestFrame {
        version: wire::PROTOCOL_VERSION,
        request: Request::Submit {
            grant_id: grant,
            statement: WireSigned::from_signed(statement),
            length: len,
            from_piece: 0,
        },
    })
    .unwrap();
    send.write_all(&frame).await.unwrap();
    (send, recv)
}

/// Starts `sealrelay serve --dir keys --data data --listen 127.0.0.1:0` (plus `extra`) in
/// `dir`; returns the process and the address it printed.
pub fn serve(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    serve_at(dir, "127.0.0.1:0", extra)
}

/// [`serve`] on a given address (a restart on the same port).
pub fn serve_at(
    dir: &std::path::Path,
    listen: &str,
    extra: &[&str],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin())
        .args([
            "serve", "--dir", "keys", "--data", "data", "--listen", listen,
        ])
        .args(extra)
        .envs(store_env(dir))
        .current_dir(dir)
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    assert!(
        line.starts_with("sealrelay relay listening on"),
        "serve printed {line:?}"
    );
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    (child, addr)
}

/// [`serve`] with the relay's log kept in `relay.log` (to scan it).
pub fn serve_logged(dir: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let log = std::fs::File::create(dir.join("relay.log")).unwrap();
    let mut child = std::process::Command::new(bin())
        .args([
            "serve",
            "--dir",
            "keys",
            "--data",
            "data",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir)
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    (child, addr)
}

/// Stops a `serve` process with SIGTERM, as an operator would, and returns how it exited.
pub fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().expect("wait for serve")
}

/// A real relay (QUIC + mutual TLS on 127.0.0.1:0) in this process, on a fresh trust root, with
/// a clock the test moves by hand instead of sleeping.
pub struct TestRelay {
    pub tmp: tempfile::TempDir,
    /// The temporary directory: `keys/` (trust root) and `data/`.
    pub dir: PathBuf,
    pub relay: sealrelay::server::RunningRelay,
    pub addr: String,
    pub clock: std::sync::Arc<sealrelay::clock::ManualClock>,
    /// The enrolled parties, in the order given.
    pub ids: Vec<sealrelay::core::identity::Identity>,
    pub admin: sealrelay::core::identity::Identity,
    /// The relay's PostgreSQL database, when it runs on one.
    pub store_url: Option<String>,
}

impl TestRelay {
    /// Large ciphertexts the relay holds, committed or not: blob files (`data/blobs`,
    /// `data/blobs.tmp`), or rows of the database's `blobs` table.
    pub fn blobs_held(&self) -> usize {
        let files =
            |d: &str| std::fs::read_dir(self.dir.join("data").join(d)).map_or(0, |r| r.count());
        let rows = self
            .store_url
            .as_ref()
            .map_or(0, |url| count_rows(url, "blobs"));
        files("blobs") + files("blobs.tmp") + rows
    }
}

/// The number of rows of `table` in the database at `url`, and of its blob pieces when it is
/// `blobs` (one number: a piece without its blob cannot be, so any leftover shows).
pub fn count_rows(url: &str, table: &'static str) -> usize {
    let url = url.to_owned();
    // The synchronous client runs a runtime of its own: not on an async test's thread.
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .expect("count")
            .get(0);
        usize::try_from(n).unwrap()
    })
    .join()
    .unwrap()
}

/// Provisions `parties` and starts a relay for them; `adjust` changes the config first.
pub async fn test_relay(
    parties: &[sealrelay::local::provision::PartySpec<'_>],
    adjust: impl FnOnce(&mut sealrelay::server::RelayConfig),
) -> TestRelay {
    test_relay_with(parties, adjust, None).await
}

/// [`test_relay`] on a given store.
pub async fn test_relay_with(
    parties: &[sealrelay::local::provision::PartySpec<'_>],
    adjust: impl FnOnce(&mut sealrelay::server::RelayConfig),
    store: Option<std::sync::Arc<dyn sealrelay::core::store::Store>>,
) -> TestRelay {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let now = sealrelay::clock::now();
    let (ids, admin) =
        sealrelay::local::provision::provision(&dir.join("keys"), parties, now).unwrap();
    let mut config = sealrelay::server::RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: dir.join("data"),
        dir: dir.join("keys"),
        metrics_listen: "off".into(),
        store: if store.is_none() {
            fresh_postgres()
        } else {
            None
        },
        ..Default::default()
    };
    adjust(&mut config);
    let store_url = config.store.clone();
    let clock = std::sync::Arc::new(sealrelay::clock::ManualClock::new(now));
    let deps = sealrelay::server::Dependencies {
        store,
        clock: clock.clone(),
    };
    let relay = sealrelay::server::start_with(config, deps).await.unwrap();
    let addr = relay.local_addr.to_string();
    TestRelay {
        tmp,
        dir,
        relay,
        addr,
        clock,
        ids,
        admin,
        store_url,
    }
}

/// keys init; alice (user) and research-bot (agent, tickets/*) enrolled through the CLI.
pub fn cli_world(dir: &std::path::Path) {
    cli_world_scoped(dir, &["tickets/*"]);
}

/// [`cli_world`] with research-bot's scopes given: keys made by each party (`keys gen`),
/// enrolled by the admin (`user add`/`agent add` of the requests), bundles imported.
pub fn cli_world_scoped(dir: &std::path::Path, scopes: &[&str]) {
    ok_in(dir, &["keys", "init", "--dir", "keys"]);
    for (name, kind, out) in [
        ("alice", "user", "alice.id"),
        ("research-bot", "agent", "bot.id"),
    ] {
        ok_in(
            dir,
            &["keys", "gen", "--name", name, "--kind", kind, "--out", out],
        );
    }
    ok_in(dir, &["user", "add", "alice.id.request", "--dir", "keys"]);
    let mut agent = vec!["agent", "add", "bot.id.request", "--dir", "keys"];
    for scope in scopes {
        agent.extend(["--scope", scope]);
    }
    ok_in(dir, &agent);
    ok_in(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "alice.id",
            "alice.id.bundle",
        ],
    );
    ok_in(
        dir,
        &["keys", "import", "--identity", "bot.id", "bot.id.bundle"],
    );
}

/// One party enrolled through the CLI as on its own machine: `keys gen` (NAME, KIND, OUT), the
/// admin's `user add`/`agent add`/`admin add` of OUT.request, and `keys import` of the bundle.
pub fn enroll(dir: &std::path::Path, name: &str, kind: &str, out: &str) {
    enroll_with(dir, name, kind, out, &[]);
}

/// [`enroll`] with more arguments to the admin's `add` (e.g. `--rotate`).
pub fn enroll_with(dir: &std::path::Path, name: &str, kind: &str, out: &str, add: &[&str]) {
    ok_in(
        dir,
        &["keys", "gen", "--name", name, "--kind", kind, "--out", out],
    );
    let request = format!("{out}.request");
    let mut args = vec![kind, "add", &request, "--dir", "keys"];
    args.extend_from_slice(add);
    ok_in(dir, &args);
    let bundle = format!("{out}.bundle");
    ok_in(dir, &["keys", "import", "--identity", out, &bundle]);
}

/// keys init; each user's keys made by the admin (`user add NAME --out NAME.id`, with its
/// roles), and research-bot's (`bot.id`, scope tickets/*).
pub fn admin_world(dir: &std::path::Path, users: &[(&str, &[&str])]) {
    ok_in(dir, &["keys", "init", "--dir", "keys"]);
    for (user, roles) in users {
        let out = format!("{user}.id");
        let mut add = vec!["user", "add", user, "--dir", "keys", "--out", &out];
        for role in *roles {
            add.extend(["--role", role]);
        }
        ok_in(dir, &add);
    }
    ok_in(
        dir,
        &[
            "agent",
            "add",
            "research-bot",
            "--dir",
            "keys",
            "--out",
            "bot.id",
            "--scope",
            "tickets/*",
        ],
    );
}

/// A grant for research-bot: 600 s, up to 1 MiB.
pub fn grant_request(resource: &str) -> sealrelay::client::GrantRequest {
    sealrelay::client::GrantRequest {
        agent: "research-bot".into(),
        resource: resource.into(),
        purpose: "p".into(),
        ttl_secs: 600,
        max_bytes: 1 << 20,
    }
}

/// Starts `serve --dir keys --data DATA --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0` in
/// `dir` with `envs`; returns it, the relay's address and the admin listener's base URL.
pub fn serve_with_admin(
    dir: &std::path::Path,
    data: &str,
    envs: Vec<(String, String)>,
) -> (std::process::Child, String, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--dir", "keys", "--data", data])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .envs(envs)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start serve");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).expect("the listening line");
    out.read_line(&mut second).expect("the metrics line");
    assert!(
        first.starts_with("sealrelay relay listening on"),
        "serve printed {first:?}"
    );
    let addr = first
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let admin = second
        .trim()
        .strip_prefix("sealrelay metrics on ")
        .unwrap_or_else(|| panic!("second line: {second:?}"))
        .to_owned();
    (child, addr, admin)
}

/// The environment that puts a `serve` in `dir` on its own PostgreSQL database when
/// `SEALRELAY_TEST_POSTGRES` is set (the same database on every restart in `dir`); empty
/// otherwise.
pub fn store_env(dir: &std::path::Path) -> Vec<(String, String)> {
    let file = dir.join("test-postgres.url");
    let url = match std::fs::read_to_string(&file) {
        Ok(url) => Some(url),
        Err(_) => fresh_postgres().inspect(|url| std::fs::write(&file, url).unwrap()),
    };
    url.map(|u| ("SEALRELAY_STORE".to_owned(), u))
        .into_iter()
        .collect()
}

/// With `SEALRELAY_TEST_POSTGRES` set (a `postgres://` URL whose user may create databases, as
/// `.ci/run` sets), a new empty database for one relay, as a URL; otherwise `None` (the relay
/// then runs on the embedded store).
pub fn fresh_postgres() -> Option<String> {
    let base = std::env::var("SEALRELAY_TEST_POSTGRES").ok()?;
    let name = format!("sealrelay_test_{}", sealrelay::ids::hex(rand_bytes::<8>()));
    // The synchronous client runs a runtime of its own: not on an async test's thread.
    let (base2, name2) = (base.clone(), name.clone());
    std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&base2, postgres::NoTls)
            .expect("connect to SEALRELAY_TEST_POSTGRES");
        admin
            .batch_execute(&format!("CREATE DATABASE {name2}"))
            .expect("create a test database");
    })
    .join()
    .expect("create a test database");
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    Some(format!("{prefix}/{name}"))
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("random");
    b
}

/// Holds the relay's default ports (the admin listener's 127.0.0.1:9464, the relay's UDP
/// 127.0.0.1:4433) for as long as the returned guards live, as a relay already running on this
/// machine would: a test that still depended on a default port being free fails instead of
/// passing by luck (issue 33: the README's test command hung beside a running relay). A port
/// something else already holds is left to it.
pub fn hold_default_ports() -> (Option<std::net::TcpListener>, Option<std::net::UdpSocket>) {
    (
        std::net::TcpListener::bind("127.0.0.1:9464").ok(),
        std::net::UdpSocket::bind("127.0.0.1:4433").ok(),
    )
}

/// A Python that can import `cryptography` (`SEALRELAY_PYTHON`, else `python3`), or `None`
/// (the test says so and skips; with `SEALRELAY_REQUIRE_TOOLS` set it fails).
#[allow(dead_code)]
pub fn python_with_cryptography() -> Option<String> {
    python_with("cryptography", "the cryptography package")
}

/// The Python of `SEALRELAY_PYTHON` (else python3) when it can `import {modules}`; else says
/// what is missing and skips (fails under `SEALRELAY_REQUIRE_TOOLS`).
pub fn python_with(modules: &str, what: &str) -> Option<String> {
    let py = std::env::var("SEALRELAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let msg = format!("{what} is not importable by {py} (set SEALRELAY_PYTHON): skipping");
    assert!(
        std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_none(),
        "{msg}"
    );
    eprintln!("SKIP: {msg}");
    None
}
