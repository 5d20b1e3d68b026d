//! `sealrelay ui`, the requester's web client: its security from raw HTTP (token, Host, Origin,
//! cross-site, same-origin POSTs, CSP, loopback only, nothing secret or foreign in any response),
//! and the whole flow in a real headless Chromium driven through WebDriver (Debian `chromium`
//! and `chromium-driver`; `.ci/run` installs them), with a screenshot of each page. The browser
//! test skips with a message when Chromium is missing (fails under `SEALRELAY_REQUIRE_TOOLS`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::ids::hex;
use sealrelay::local::identity_file::save;
use sealrelay::local::provision::{agent, user};
use serde_json::{json, Value};

fn request(resource: &str, purpose: &str) -> GrantRequest {
    GrantRequest {
        agent: "research-bot".into(),
        resource: resource.into(),
        purpose: purpose.into(),
        ttl_secs: 600,
        max_bytes: 1 << 20,
    }
}

/// `sealrelay ui` for `identity`; returns the process, the base URL and the token.
fn start_ui(dir: &Path, identity: &str, relay: &str, out: &str) -> (Child, String, String) {
    let mut child = Command::new(common::bin())
        .args(["ui", "--identity", identity, "--relay", relay, "--out", out])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let line = line.trim();
    let (base, token) = line.split_once("/?token=").expect(line);
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base.to_owned(), token.to_owned())
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// One raw HTTP/1.1 request; returns (status, headers, body).
fn raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

struct World {
    w: common::TestRelay,
}

async fn world() -> World {
    let w = common::test_relay(
        &[
            user("alice", 3, &["engineer"]),
            user("bob", 3, &["approver"]),
            agent("research-bot", &["tickets/*", "payroll/*"]),
        ],
        |_| {},
    )
    .await;
    save(&w.dir.join("alice.id"), &w.ids[0], false).unwrap();
    save(&w.dir.join("bob.id"), &w.ids[1], false).unwrap();
    World { w }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_refuses_strangers_and_serves_no_secret() {
    let World { w } = world().await;
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let bob = UserClient::connect(&w.ids[1], &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.ids[2], &w.addr).await.unwrap();
    let mine = alice
        .grant(&request("tickets/4711", "summarise"))
        .await
        .unwrap();
    // bob's own data, which alice's client must never show.
    let bobs = bob
        .grant(&request("tickets/bob-only-9", "bob's private question"))
        .await
        .unwrap();
    let mut ids = std::collections::HashMap::new();
    for g in bot.grants().await.unwrap() {
        let body = if g.grant.grant_id == bobs {
            "BOB-CANARY-77"
        } else {
            "ALICE-TEXT-11"
        };
        ids.insert(
            g.grant.grant_id,
            bot.send(&g, &mut body.as_bytes(), &w.dir).await.unwrap(),
        );
    }
    let dir = w.dir.clone();
    let relay = w.addr.clone();
    let alice_env = hex(ids[&mine]);
    let identity_text = std::fs::read_to_string(dir.join("alice.id")).unwrap();
    tokio::task::spawn_blocking(move || {
        // Only loopback.
        let (code, _, err) = common::run_in(
            &dir,
            &[
                "ui",
                "--identity",
                "alice.id",
                "--relay",
                &relay,
                "--listen",
                "0.0.0.0:0",
            ],
        );
        assert_ne!(code, 0);
        assert!(err.contains("loopback"), "{err}");
        let (ui, base, token) = start_ui(&dir, "alice.id", &relay, "opened");
        let port = base.rsplit(':').next().unwrap().to_owned();
        // No token, a wrong token: 401.
        assert_eq!(raw(&base, "GET", "/", &[], "").0, 401);
        assert_eq!(raw(&base, "GET", "/?token=0000", &[], "").0, 401);
        // The token with a foreign Host (DNS rebinding): 403.
        let foreign = format!("evil.example:{port}");
        let q = format!("/?token={token}");
        assert_eq!(raw(&base, "GET", &q, &[("Host", &foreign)], "").0, 403);
        // The token: a cookie (HttpOnly, SameSite=Strict) and a redirect without it.
        let (code, head, _) = raw(&base, "GET", &q, &[], "");
        assert_eq!(code, 303, "{head}");
        assert!(
            head.contains("HttpOnly") && head.contains("SameSite=Strict"),
            "{head}"
        );
        assert!(
            head.contains("location: /\r\n") || head.contains("location: /"),
            "{head}"
        );
        let cookie = format!("sealrelay_ui_{port}={token}");
        let c = [("Cookie", cookie.as_str())];
        let (code, head, body) = raw(&base, "GET", "/", &c, "");
        assert_eq!(code, 200, "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{head}"
        );
        assert!(!head.contains("unsafe-inline"));
        assert!(head.contains("x-frame-options: DENY"), "{head}");
        assert!(find(&body, b"tickets/4711"));
        // Another origin, a cross-site fetch, a POST that is not provably same-origin: 403.
        let o = [
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.example"),
        ];
        assert_eq!(raw(&base, "GET", "/", &o, "").0, 403);
        let x = [
            ("Cookie", cookie.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ];
        assert_eq!(raw(&base, "GET", "/api/inbox", &x, "").0, 403);
        let open = format!("/envelope/{alice_env}/open");
        assert_eq!(raw(&base, "POST", &open, &c, "").0, 403);
        // Every page, the envelope opened with a same-origin POST included.
        let me = format!("http://127.0.0.1:{port}");
        let same = [("Cookie", cookie.as_str()), ("Origin", me.as_str())];
        let mut bodies = Vec::new();
        let c: &[(&str, &str)] = &c;
        let same: &[(&str, &str)] = &same;
        for (method, path, h) in [
            ("GET", "/".to_owned(), c),
            ("GET", "/api/inbox".to_owned(), c),
            ("GET", format!("/envelope/{alice_env}"), c),
            ("POST", open.clone(), same),
            ("GET", format!("/envelope/{alice_env}"), c),
            ("GET", format!("/envelope/{alice_env}/content"), c),
            ("GET", "/grants".to_owned(), c),
            ("GET", "/approvals".to_owned(), c),
            ("GET", "/receipt".to_owned(), c),
            ("GET", "/static/app.js".to_owned(), c),
        ] {
            let (code, head, body) = raw(&base, method, &path, h, "");
            assert!(code == 200 || code == 303, "{method} {path}: {head}");
            bodies.push(body);
        }
        let all: Vec<u8> = bodies.concat();
        assert!(find(&all, b"ALICE-TEXT-11"), "the opened content is shown");
        // Like `fetch`, the web client keeps the newest checkpoint it saw, so a later fork or
        // rollback shown to it is refused.
        assert!(
            dir.join("alice.id.checkpoint").exists(),
            "the web client keeps IDENTITY.checkpoint"
        );
        // No ciphertext, no key, nothing of bob's.
        for needle in [
            &b"age-encryption.org/v1"[..],
            b"AGE-SECRET-KEY",
            b"PRIVATE KEY",
            b"BOB-CANARY-77",
            b"bob-only-9",
            b"bob's private question",
        ] {
            assert!(
                !find(&all, needle),
                "a response carried {:?}",
                String::from_utf8_lossy(needle)
            );
        }
        for line in identity_text.lines().filter(|l| l.len() > 40) {
            assert!(
                !find(&all, line.as_bytes()),
                "a response carried a line of the identity file"
            );
        }
        stop(ui);
    })
    .await
    .unwrap();
    alice.conn.close().await;
    bob.conn.close().await;
    bot.conn.close().await;
}

/// A small WebDriver client (W3C protocol over HTTP, to chromedriver).
struct Driver {
    base: String,
    session: String,
    http: ureq::Agent,
    child: Child,
    shots: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    fn start(profile: &Path, shots: PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http.get(&format!("{base}/status")).call().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut d = Driver {
            base,
            session: String::new(),
            http,
            child,
            shots,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.display())]}}}});
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["sessionId"].as_str().unwrap().to_owned();
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => self.http.get(&url).call(),
            "DELETE" => self.http.delete(&url).call(),
            _ => self
                .http
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let text = resp.unwrap().body_mut().read_to_string().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v.get("value").cloned().unwrap_or(v)
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.get(ELEMENT).and_then(Value::as_str).map(str::to_owned)
    }

    fn all(&self, css: &str) -> usize {
        let v = self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array().map_or(0, Vec::len)
    }

    fn click(&self, css: &str) {
        let e = self
            .find(css)
            .unwrap_or_else(|| panic!("no {css} in {}", self.text("body")));
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    fn text(&self, css: &str) -> String {
        match self.find(css) {
            Some(e) => self
                .call("GET", &self.s(&format!("/element/{e}/text")), None)
                .as_str()
                .unwrap_or("")
                .to_owned(),
            None => String::new(),
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).unwrap();
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({"text": text})),
        );
    }

    fn shot(&self, name: &str) {
        use base64::Engine;
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(&self.shots).unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&Driver) -> bool) {
        let started = Instant::now();
        while !ok(self) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "waited for {what}: {}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(&format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> bool {
    let ok = Path::new("/usr/bin/chromium").exists() && common::have_tool("chromedriver");
    if !ok {
        let msg = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver): skipping";
        assert!(
            std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_none(),
            "{msg}"
        );
        eprintln!("SKIP: {msg}");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_chromium_reads_the_inbox_opens_an_envelope_and_approves_a_grant() {
    if !chromium() {
        return;
    }
    let World { w } = world().await;
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.ids[2], &w.addr).await.unwrap();
    let c = harness_canary();
    let first = alice
        .grant(&request("tickets/4711", "summarise the incident"))
        .await
        .unwrap();
    for g in bot.grants().await.unwrap() {
        bot.send(&g, &mut c.as_bytes(), &w.dir).await.unwrap();
    }
    let _ = first;
    let dir = w.dir.clone();
    let relay = w.addr.clone();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let (alice_ui, alice_base, alice_token) = start_ui(&dir, "alice.id", &relay, "opened");
    let (bob_ui, bob_base, bob_token) = start_ui(&dir, "bob.id", &relay, "bob-opened");
    let driver = {
        let (dir, shots) = (dir.clone(), shots.clone());
        tokio::task::spawn_blocking(move || Driver::start(&dir.join("profile"), shots))
            .await
            .unwrap()
    };
    let d = std::sync::Arc::new(driver);

    // The inbox: who, what, why, verified.
    let dd = d.clone();
    let url = format!("{alice_base}/?token={alice_token}");
    tokio::task::spawn_blocking(move || {
        dd.go(&url);
        let t = dd.text("#inbox");
        for needle in [
            "research-bot",
            "tickets/4711",
            "summarise the incident",
            "verified",
        ] {
            assert!(t.contains(needle), "{needle}: {t}");
        }
        dd.shot("inbox");
    })
    .await
    .unwrap();

    // A new envelope appears without a reload.
    alice
        .grant(&request("tickets/4713", "the follow-up"))
        .await
        .unwrap();
    for g in bot.grants().await.unwrap() {
        bot.send(&g, &mut &b"second"[..], &w.dir).await.unwrap();
    }
    let dd = d.clone();
    tokio::task::spawn_blocking(move || {
        dd.wait_for("a second row", |d| d.all("#inbox tbody tr") == 2);
        assert!(dd.text("#inbox").contains("the follow-up"));
        // Open the first: the header first, then the content only after "Open".
        dd.click("#inbox tbody tr:first-child a");
        dd.wait_for("the header page", |d| d.find("#open").is_some());
        assert!(dd.text("dl.header").contains("summarise the incident"));
        assert!(
            dd.find("#content").is_none(),
            "content shown before it was opened"
        );
        dd.shot("envelope-header");
        dd.click("#open");
        dd.wait_for("the content", |d| d.find("#content").is_some());
        assert_eq!(dd.text("#content"), c);
        assert!(
            dd.text("#receipt").contains("delivered"),
            "{}",
            dd.text("#receipt")
        );
        dd.shot("envelope-opened");
    })
    .await
    .unwrap();

    // An approver approves a payroll grant in the browser; the agent can then send.
    let payroll = alice
        .grant(&request("payroll/2026", "check my own payslip"))
        .await
        .unwrap();
    assert!(bot
        .grants()
        .await
        .unwrap()
        .iter()
        .all(|g| g.grant.grant_id != payroll));
    let dd = d.clone();
    let url = format!("{bob_base}/?token={bob_token}");
    let gid = hex(payroll);
    tokio::task::spawn_blocking(move || {
        dd.go(&url);
        dd.click("nav a[href='/approvals']");
        dd.wait_for("the pending grant", |d| {
            d.find(&format!("section[data-grant='{gid}']")).is_some()
        });
        let t = dd.text(&format!("section[data-grant='{gid}']"));
        for needle in [
            "payroll/2026",
            "check my own payslip",
            "/user/alice",
            "research-bot",
        ] {
            assert!(t.contains(needle), "{needle}: {t}");
        }
        dd.shot("approvals");
        dd.click(&format!("section[data-grant='{gid}'] button.approve"));
        dd.wait_for("the approval", |d| d.text("#said").contains("Approved"));
    })
    .await
    .unwrap();
    let g = bot
        .grants()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.grant.grant_id == payroll)
        .expect("the approved grant reaches the agent");
    bot.send(&g, &mut &b"payslip"[..], &w.dir).await.unwrap();

    // Alice's grants, and a receipt check.
    let receipt = std::fs::read_dir(dir.join("opened"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "receipt"))
        .unwrap();
    let receipt = std::fs::read_to_string(receipt).unwrap();
    let dd = d.clone();
    let url = format!("{alice_base}/grants");
    let check = format!("{alice_base}/receipt");
    tokio::task::spawn_blocking(move || {
        dd.go(&url);
        let t = dd.text("#grants");
        for needle in ["delivered", "sent", "payroll/2026"] {
            assert!(t.contains(needle), "{needle}: {t}");
        }
        dd.shot("grants");
        dd.go(&check);
        dd.type_into("#receipt", &receipt);
        dd.click("form button");
        dd.wait_for("the verdict", |d| d.find("#verdict").is_some());
        assert!(
            dd.text("#verdict").starts_with("Verified"),
            "{}",
            dd.text("#verdict")
        );
        dd.shot("receipt");
    })
    .await
    .unwrap();
    drop(d);
    stop(alice_ui);
    stop(bob_ui);
    for name in [
        "inbox",
        "envelope-header",
        "envelope-opened",
        "approvals",
        "grants",
        "receipt",
    ] {
        assert!(shots.join(format!("{name}.png")).exists());
    }
    eprintln!("screenshots in {}", shots.display());
    alice.conn.close().await;
    bot.conn.close().await;
}

fn harness_canary() -> String {
    let mut c = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut c).unwrap();
    format!("CANARY-{}", hex(c))
}
