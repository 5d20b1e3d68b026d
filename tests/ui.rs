//! `sealrelay ui`, the requester's web client: its security from raw HTTP (token, Host, Origin,
//! cross-site, same-origin POSTs, CSP, loopback only, nothing secret or foreign in any response,
//! the whole app and its cookie under a random per-run path prefix, nothing outside it answered),
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

/// `sealrelay ui` for `identity`; returns the process, its origin (`http://127.0.0.1:PORT`),
/// this run's path prefix (`/s/<32 hex>`, no trailing slash) and the token, all from the URL it
/// printed (`ORIGIN PREFIX /?token=TOKEN`).
fn start_ui(dir: &Path, identity: &str, relay: &str, out: &str) -> (Child, String, String, String) {
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
    let (app, token) = line.split_once("/?token=").expect(line);
    let (port, prefix) = app
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split_once('/'))
        .expect(line);
    let prefix = format!("/{prefix}");
    let digits = prefix.strip_prefix("/s/").expect(line);
    assert!(
        digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(port.parse::<u16>().is_ok(), "{line}");
    (
        child,
        format!("http://127.0.0.1:{port}"),
        prefix,
        token.to_owned(),
    )
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

/// A hostile server on another loopback port of the same host: it answers every request with a
/// small page and reports each request head it was sent (to show no ui cookie reaches it).
fn hostile_server() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !find(&head, b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.is_empty() {
                    return;
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 23\r\n\
Connection: close\r\n\r\n<p>a hostile server</p>",
                );
            });
        }
    });
    (origin, rx)
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
        // Helper-found: another loopback address was taken, while the printed link and the
        // Host check named 127.0.0.1 (a port there anyone could take).
        let (code, _, err) = common::run_in(
            &dir,
            &[
                "ui",
                "--identity",
                "alice.id",
                "--relay",
                &relay,
                "--listen",
                "127.0.0.2:0",
            ],
        );
        assert_ne!(code, 0);
        assert!(err.contains("127.0.0.1:PORT (not 127.0.0.2:0)"), "{err}");
        let (ui, base, prefix, token) = start_ui(&dir, "alice.id", &relay, "opened");
        let port = base.rsplit(':').next().unwrap().to_owned();
        // Every page lives under this run's prefix.
        let at = |path: &str| format!("{prefix}{path}");
        // No token, a wrong token: 401.
        assert_eq!(raw(&base, "GET", &at("/"), &[], "").0, 401);
        assert_eq!(raw(&base, "GET", &at("/?token=0000"), &[], "").0, 401);
        // The token with a foreign Host (DNS rebinding): 403.
        let foreign = format!("evil.example:{port}");
        let q = at(&format!("/?token={token}"));
        assert_eq!(raw(&base, "GET", &q, &[("Host", &foreign)], "").0, 403);
        // The token: a cookie (HttpOnly, SameSite=Strict) and a redirect without it.
        let (code, head, _) = raw(&base, "GET", &q, &[], "");
        assert_eq!(code, 303, "{head}");
        assert!(
            head.contains("HttpOnly") && head.contains("SameSite=Strict"),
            "{head}"
        );
        let home = format!("location: {prefix}/");
        assert!(head.lines().any(|l| l == home), "{head}");
        let cookie = format!("sealrelay_ui_{port}={token}");
        let c = [("Cookie", cookie.as_str())];
        let (code, head, body) = raw(&base, "GET", &at("/"), &c, "");
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
        assert_eq!(raw(&base, "GET", &at("/"), &o, "").0, 403);
        let x = [
            ("Cookie", cookie.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ];
        assert_eq!(raw(&base, "GET", &at("/api/inbox"), &x, "").0, 403);
        let open = at(&format!("/envelope/{alice_env}/open"));
        assert_eq!(raw(&base, "POST", &open, &c, "").0, 403);
        let me = format!("http://127.0.0.1:{port}");
        let same = [("Cookie", cookie.as_str()), ("Origin", me.as_str())];
        // Helper-found: Open did not read the directory log as `fetch` does. A relay showing a
        // shorter log than this identity read (ROLLBACK) now stops the open before anything
        // is fetched; the inbox page already refused it.
        let watch = dir.join("alice.id.keywatch");
        let saved = std::fs::read_to_string(&watch).unwrap();
        let v: serde_json::Value = serde_json::from_str(&saved).unwrap();
        let size = v["size"].as_u64().unwrap();
        std::fs::write(
            &watch,
            saved.replacen(&format!("\"size\": {size}"), "\"size\": 1000000", 1),
        )
        .unwrap();
        let (code, head, body) = raw(&base, "POST", &open, &same, "");
        assert_eq!(code, 502, "{head}");
        assert!(
            find(&body, b"ROLLBACK"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        std::fs::write(&watch, &saved).unwrap();
        // Two Opens at once (a double-click, two tabs) both land on the opened envelope, and one
        // receipt is filed. (Helper-found: a first request the browser drops could be cut off
        // after the relay recorded the receipt and before its file was written; an open now
        // runs as a task of its own, one per envelope at a time. This check passes on the code
        // before too: the cut needs a drop inside that window.)
        let twice: Vec<_> = (0..2)
            .map(|_| {
                let (base, open) = (base.clone(), open.clone());
                let same: Vec<(String, String)> = same
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                std::thread::spawn(move || {
                    let h: Vec<(&str, &str)> =
                        same.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    raw(&base, "POST", &open, &h, "")
                })
            })
            .collect();
        for t in twice {
            let (code, head, body) = t.join().unwrap();
            assert_eq!(code, 303, "{head} {}", String::from_utf8_lossy(&body));
        }
        let receipts = std::fs::read_dir(dir.join("opened"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "receipt")
            })
            .count();
        assert_eq!(receipts, 1);
        // Every page, the envelope opened with a same-origin POST included.
        let mut bodies = Vec::new();
        let c: &[(&str, &str)] = &c;
        let same: &[(&str, &str)] = &same;
        for (method, path, h) in [
            ("GET", at("/"), c),
            ("GET", at("/api/inbox"), c),
            ("GET", at("/api/inbox/next"), c),
            ("GET", at(&format!("/envelope/{alice_env}")), c),
            ("POST", open.clone(), same),
            ("GET", at(&format!("/envelope/{alice_env}")), c),
            ("GET", at(&format!("/envelope/{alice_env}/content")), c),
            ("GET", at("/grants"), c),
            ("GET", at("/approvals"), c),
            ("GET", at("/receipt"), c),
            ("GET", at("/static/app.js"), c),
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

/// threat: the ui cookie reaching other loopback ports. Browsers send a 127.0.0.1 cookie to
/// every port of that host whose path matches, so a hostile server on another port must never
/// be sent the client's cookie: the whole client lives under a random prefix printed once, the
/// cookie's `Path` is that prefix, and nothing outside it is answered (404, no token taken, no
/// cookie read or set, nothing of the prefix or the token in the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_lives_under_a_random_prefix_that_keeps_its_cookie_from_other_ports() {
    let World { w } = world().await;
    let dir = w.dir.clone();
    let relay = w.addr.clone();
    tokio::task::spawn_blocking(move || {
        let (ui, base, prefix, token) = start_ui(&dir, "alice.id", &relay, "opened");
        let port = base.rsplit(':').next().unwrap().to_owned();
        // A fresh prefix each run.
        let (again, _, again_prefix, _) = start_ui(&dir, "alice.id", &relay, "opened2");
        stop(again);
        assert_ne!(prefix, again_prefix, "two runs drew one prefix");
        let digits = prefix.strip_prefix("/s/").unwrap().to_owned();
        let cookie = format!("sealrelay_ui_{port}={token}");
        let me = base.clone();
        let none: &[(&str, &str)] = &[];
        let with_cookie: &[(&str, &str)] = &[("Cookie", cookie.as_str())];
        let same_origin: &[(&str, &str)] = &[("Cookie", cookie.as_str()), ("Origin", me.as_str())];
        // A 404 from outside the prefix: no cookie set, no redirect, nothing of the prefix or
        // the token, and still the security headers.
        let outside = |method: &str, path: &str, h: &[(&str, &str)]| {
            let (code, head, body) = raw(&base, method, path, h, "");
            assert_eq!(code, 404, "{method} {path}: {head}");
            let lower = head.to_ascii_lowercase();
            assert!(!lower.contains("set-cookie"), "{method} {path}: {head}");
            assert!(!lower.contains("location"), "{method} {path}: {head}");
            for secret in [digits.as_bytes(), token.as_bytes()] {
                assert!(!find(head.as_bytes(), secret), "{method} {path}: {head}");
                assert!(
                    !find(&body, secret),
                    "{method} {path} told the prefix or token"
                );
            }
            assert!(
                head.contains("content-security-policy: default-src 'none'"),
                "{head}"
            );
        };
        // The token is not taken outside the prefix: at the root, at a page's bare path, at the
        // prefix without its slash, under another prefix, under one a digit off.
        let wrong = "0".repeat(32);
        let last = if digits.ends_with('0') { '1' } else { '0' };
        let near = format!("{}{last}", &digits[..31]);
        let tokened = [
            format!("/?token={token}"),
            format!("/receipt?token={token}"),
            format!("{prefix}?token={token}"),
            format!("/s/{wrong}/?token={token}"),
            format!("/s/{near}/?token={token}"),
            format!("/s/?token={token}"),
        ];
        for path in &tokened {
            outside("GET", path, none);
        }
        // The token in the prefix: the cookie's Path is exactly the prefix printed.
        let (code, head, _) = raw(&base, "GET", &format!("{prefix}/?token={token}"), none, "");
        assert_eq!(code, 303, "{head}");
        let set = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .expect(&head);
        let attrs: Vec<&str> = set.split("; ").collect();
        assert_eq!(attrs[0], cookie, "{set}");
        assert!(attrs.contains(&"HttpOnly"), "{set}");
        assert!(attrs.contains(&"SameSite=Strict"), "{set}");
        let paths: Vec<&str> = attrs
            .iter()
            .filter_map(|a| a.strip_prefix("Path="))
            .collect();
        assert_eq!(paths, [format!("{prefix}/").as_str()], "{set}");
        let home = format!("location: {prefix}/");
        assert!(head.lines().any(|l| l == home), "{head}");
        // With the cookie, the pages under the prefix answer...
        for page in ["/receipt", "/static/app.js", "/static/style.css"] {
            let (code, head, _) = raw(&base, "GET", &format!("{prefix}{page}"), with_cookie, "");
            assert_eq!(code, 200, "{page}: {head}");
        }
        // ...and the same pages outside it are 404, cookie or not, GET or same-origin POST.
        for page in ["/", "/receipt", "/api/inbox", "/static/app.js", "/grants"] {
            outside("GET", page, none);
            outside("GET", page, with_cookie);
            outside("GET", &format!("/s/{wrong}{page}"), with_cookie);
        }
        outside("POST", "/receipt", same_origin);
        outside("POST", &format!("/s/{wrong}/receipt"), same_origin);
        // Under the prefix, a path that is no page is the client's own 404 (after the guard).
        assert_eq!(
            raw(&base, "GET", &format!("{prefix}/nope"), none, "").0,
            401
        );
        assert_eq!(
            raw(&base, "GET", &format!("{prefix}/nope"), with_cookie, "").0,
            404
        );
        stop(ui);
    })
    .await
    .unwrap();
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
    let (alice_ui, alice_origin, alice_prefix, alice_token) =
        start_ui(&dir, "alice.id", &relay, "opened");
    let (bob_ui, bob_origin, bob_prefix, bob_token) =
        start_ui(&dir, "bob.id", &relay, "bob-opened");
    // Each client's app: its origin and this run's prefix.
    let alice_base = format!("{alice_origin}{alice_prefix}");
    let bob_base = format!("{bob_origin}{bob_prefix}");
    let driver = {
        let (dir, shots) = (dir.clone(), shots.clone());
        tokio::task::spawn_blocking(move || Driver::start(&dir.join("profile"), shots))
            .await
            .unwrap()
    };
    let d = std::sync::Arc::new(driver);

    // The inbox: who, what, why, verified; and the safety number `keys show` prints for alice.
    let safety = sealrelay::core::safety::safety_number(&w.ids[0].own_entry().unwrap());
    let dd = d.clone();
    let url = format!("{alice_base}/?token={alice_token}");
    let (prefix, token, home) = (
        alice_prefix.clone(),
        alice_token.clone(),
        format!("{alice_base}/"),
    );
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
        let shown = dd.text("#safety");
        assert!(shown.contains(&safety), "{safety}: {shown}");
        dd.shot("inbox");
        // threat: the ui cookie reaching other loopback ports. The browser keeps the cookie
        // under this run's prefix only...
        let cookies = dd.call("GET", &dd.s("/cookie"), None);
        let ours: Vec<&Value> = cookies
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("sealrelay_ui_"))
            })
            .collect();
        assert_eq!(ours.len(), 1, "{cookies}");
        assert_eq!(
            ours[0]["path"].as_str(),
            Some(format!("{prefix}/").as_str())
        );
        assert_eq!(ours[0]["httpOnly"].as_bool(), Some(true), "{cookies}");
        // ...so a hostile server on another port of 127.0.0.1, visited in the same browser,
        // is sent none of it, at any path it can name.
        let (hostile, heads) = hostile_server();
        for path in ["/", "/receipt", "/s/", "/api/inbox"] {
            dd.go(&format!("{hostile}{path}"));
            assert!(dd.text("body").contains("a hostile server"));
        }
        let heads: Vec<String> = heads.try_iter().collect();
        assert!(
            heads.iter().any(|h| h.starts_with("GET /receipt ")),
            "{heads:?}"
        );
        for h in &heads {
            assert!(
                !h.contains("sealrelay_ui") && !h.contains(token.as_str()),
                "the hostile server was sent the cookie: {h}"
            );
        }
        // Back in the client, the cookie still opens it (no token in the URL now).
        dd.go(&home);
        dd.wait_for("the inbox again", |d| d.find("#inbox").is_some());
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
    let approvals = format!("nav a[href='{bob_prefix}/approvals']");
    let gid = hex(payroll);
    tokio::task::spawn_blocking(move || {
        dd.go(&url);
        dd.click(&approvals);
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

    // Threat 47: whoever holds the authority key enrolls a key for alice that she did not
    // make. Her next look at the inbox shows it first, as a banner naming who and when.
    let (rdir, raddr) = (dir.clone(), relay.clone());
    tokio::task::spawn_blocking(move || {
        common::ok_in(
            &rdir,
            &[
                "keys", "gen", "--name", "alice", "--kind", "user", "--out", "rogue.id",
            ],
        );
        let out = common::ok_in(
            &rdir,
            &[
                "user",
                "add",
                "rogue.id.request",
                "--dir",
                "keys",
                "--rotate",
                "--relay",
                &raddr,
            ],
        );
        assert!(out.contains("RESET"), "{out}");
    })
    .await
    .unwrap();
    let dd = d.clone();
    let home = format!("{alice_base}/");
    tokio::task::spawn_blocking(move || {
        dd.go(&home);
        dd.wait_for("the key alert", |d| d.find("#key-alert").is_some());
        let t = dd.text("#key-alert");
        for needle in [
            "A key you did not make was enrolled under your name",
            "enrolled under your name by",
            "reset, serial 2",
        ] {
            assert!(t.contains(needle), "{needle}: {t}");
        }
        dd.shot("key-alert");
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
        "key-alert",
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
