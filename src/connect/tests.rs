#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;

use super::*;

fn parse(text: &str, base: &Path) -> Result<Connectors> {
    Connectors::parse(text, base)
}

#[test]
fn the_file_shape_of_the_contract_parses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::env::set_var("SEALRELAY_TEST_TOKEN_A", "Bearer t0k");
    let c = parse(
        r#"
[[connector]]
resources = "tickets/*"
http = "http://127.0.0.1:8080/api/tickets/{rest}"
headers = { Authorization = "env:SEALRELAY_TEST_TOKEN_A" }
max_bytes = 1073741824
timeout_secs = 30

[[connector]]
resources = "docs/*"
file_root = "docs"

[[connector]]
resources = "reports/*"
command = ["/usr/local/bin/make-report", "{rest}"]
"#,
        dir.path(),
    )
    .unwrap();
    assert_eq!(c.list.len(), 3);
    assert_eq!(
        c.for_resource("tickets/4711").unwrap().resources,
        "tickets/*"
    );
    assert_eq!(c.for_resource("docs/a/b").unwrap().resources, "docs/*");
    let e = c.for_resource("payroll/2026").unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    assert!(e.message().contains("no connector serves"), "{e}");
    // Names outside the grammar never reach a connector.
    assert!(c.for_resource("docs/../etc/passwd").is_err());
    assert!(c.for_resource("docs/%2e%2e/x").is_err());
}

#[test]
fn bad_connector_files_are_refused_with_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        ("", "no [[connector]]"),
        ("[[connector]]\nresources = \"a/*\"\n", "exactly one of"),
        (
            "[[connector]]\nresources = \"a/*\"\nhttp = \"http://h/{rest}\"\nfile_root = \".\"\n",
            "exactly one of",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\nhttp = \"http://h/x\"\nheaders = { A = \"inline-secret\" }\n",
            "never inline",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\nhttp = \"http://{rest}.evil/x\"\n",
            "host is fixed",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\nhttp = \"ftp://h/{rest}\"\n",
            "http:// or https://",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\nhttp = \"http://h/{oops}\"\n",
            "only {rest}",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\ncommand = [\"make-report\"]\n",
            "absolute path",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\ncommand = [\"/bin/{rest}\"]\n",
            "program of a command is fixed",
        ),
        (
            "[[connector]]\nresources = \"a/../b\"\ncommand = [\"/bin/cat\"]\n",
            "invalid resource pattern",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\nfile_root = \"missing\"\n",
            "cannot be used",
        ),
        (
            "[[connector]]\nresources = \"a/*\"\nhttp = \"http://h/x\"\nheaders = { A = \"env:SEALRELAY_NOT_SET_EVER\" }\n",
            "is not set",
        ),
        ("[[connector]]\nresources = \"a/*\"\nhtp = \"x\"\n", "not valid"),
    ] {
        let e = parse(text, dir.path()).unwrap_err();
        assert!(e.message().contains(says), "{text:?}: {e}");
        assert!(!e.message().contains('\n'), "{e}");
        assert!(!e.message().contains("inline-secret"), "{e}");
    }
}

#[test]
fn scopes_and_connectors_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let c = parse(
        "[[connector]]\nresources = \"tickets/*\"\ncommand = [\"/bin/cat\"]\n",
        dir.path(),
    )
    .unwrap();
    let unserved = c
        .check_scopes(&["tickets/*".into(), "payroll/*".into()])
        .unwrap();
    assert_eq!(unserved, vec!["payroll/*".to_owned()]);
    // A connector for part of a scope serves it.
    let part = parse(
        "[[connector]]\nresources = \"tickets/doc/*\"\ncommand = [\"/bin/cat\"]\n",
        dir.path(),
    )
    .unwrap();
    assert!(part.check_scopes(&["tickets/*".into()]).unwrap().is_empty());
    let e = c.check_scopes(&["docs/*".into()]).unwrap_err();
    assert!(e.message().contains("outside the agent's scopes"), "{e}");
    assert!(pattern_within("tickets/a/*", "tickets/*"));
    assert!(pattern_within("tickets/a", "tickets/*"));
    assert!(!pattern_within("tickets/*", "tickets/a/*"));
    assert!(!pattern_within("*", "tickets/*"));
    assert!(pattern_within("x/*", "*"));
}

#[test]
fn files_are_opened_beneath_the_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/ok.txt"), b"inside").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("escape")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("absolute")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("sub/ok.txt", root.join("inner")).unwrap();
    let c = parse(
        "[[connector]]\nresources = \"docs/*\"\nfile_root = \"root\"\nmax_bytes = 6\n",
        dir.path(),
    )
    .unwrap();
    let conn = &c.list[0];
    let read = |name: &str| -> Result<Vec<u8>> {
        let mut s = conn.open(name, u64::MAX, &[])?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .map_err(|_| s.failure().cloned().unwrap())?;
        s.finish()?;
        Ok(out)
    };
    assert_eq!(read("docs/sub/ok.txt").unwrap(), b"inside");
    assert_eq!(read("docs/inner").unwrap(), b"inside");
    for name in ["docs/escape", "docs/absolute", "docs/up/secret.txt"] {
        let e = read(name).unwrap_err();
        assert!(
            e.message().contains("outside the connector's root"),
            "{name}: {e}"
        );
    }
    assert!(read("docs/../secret.txt").is_err());
    assert_eq!(
        read("docs/none").unwrap_err().kind(),
        crate::ErrorKind::NotFound
    );
    // Over max_bytes (6): refused before a byte is read.
    std::fs::write(root.join("big"), b"1234567").unwrap();
    assert!(read("docs/big")
        .unwrap_err()
        .message()
        .contains("more than the limit of 6 bytes"));
    // A directory or a FIFO is not a document.
    assert!(read("docs/sub").is_err());
}

#[test]
fn commands_run_without_a_shell_and_their_failures_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = parse(
        r#"
[[connector]]
resources = "echo/*"
command = ["/bin/echo", "-n", "{rest}"]

[[connector]]
resources = "fail/*"
command = ["/bin/sh", "-c", "printf partial; exit 3"]

[[connector]]
resources = "slow/*"
command = ["/bin/sleep", "30"]
timeout_secs = 1

[[connector]]
resources = "big/*"
command = ["/bin/cat", "/dev/zero"]
max_bytes = 100000
"#,
        dir.path(),
    )
    .unwrap();
    let run = |name: &str| -> Result<Vec<u8>> {
        let conn = c.for_resource(name)?;
        let mut s = conn.open(name, u64::MAX, &[])?;
        let mut out = Vec::new();
        if s.read_to_end(&mut out).is_err() {
            return Err(s.failure().cloned().unwrap());
        }
        s.finish()?;
        Ok(out)
    };
    // The name is one argument, not shell text.
    assert_eq!(
        run("echo/a;b").unwrap_err().kind(),
        crate::ErrorKind::BadInput
    );
    assert_eq!(run("echo/x.y").unwrap(), b"x.y");
    let e = run("fail/1").unwrap_err();
    assert!(e.message().contains("exited with status 3"), "{e}");
    assert!(!e.message().contains("partial"));
    let started = std::time::Instant::now();
    let e = run("slow/1").unwrap_err();
    assert!(e.message().contains("did not finish within 1 s"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let e = run("big/1").unwrap_err();
    assert!(e.message().contains("more than the limit of 100000"), "{e}");
}

/// An HTTPS source on 127.0.0.1 with a certificate of its own CA: served when `ca_file` names
/// that CA, refused (TLS verified) with the built-in roots.
#[test]
fn https_sources_are_verified() {
    use std::io::Write;
    use std::sync::Arc;
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure",
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    let read = |c: &Connectors| -> Result<Vec<u8>> {
        let mut s = c.list[0].open("t/1", u64::MAX, &[])?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .map_err(|_| s.failure().cloned().unwrap())?;
        s.finish()?;
        Ok(out)
    };
    let trusted = parse(
        &format!(
            "[[connector]]\nresources = \"t/*\"\nhttp = \"https://localhost:{port}/{{rest}}\"\nca_file = \"ca.pem\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    assert_eq!(read(&trusted).unwrap(), b"secure");
    let web_roots = parse(
        &format!(
            "[[connector]]\nresources = \"t/*\"\nhttp = \"https://localhost:{port}/{{rest}}\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    let e = read(&web_roots).unwrap_err();
    assert!(!e.message().contains('\n'), "{e}");
    // A fixed sentence: the library's text names what the source's certificate holds.
    assert!(e.message().contains("TLS connection was refused"), "{e}");
}

/// A source that redirects forever is followed `max_redirects` times, then refused; a
/// connector with secret headers follows no redirect at all.
#[test]
fn redirects_are_bounded_and_never_followed_with_secret_headers() {
    use std::io::{BufRead, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut auth = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                auth |= h.to_ascii_lowercase().starts_with("authorization:");
            }
            log.lock().unwrap().push((line.trim().to_owned(), auth));
            let mut out = conn;
            let _ = out.write_all(
                b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    std::env::set_var("SEALRELAY_TEST_TOKEN_R", "Bearer r3d1rect");
    let dir = tempfile::tempdir().unwrap();
    // Without secret headers: followed max_redirects times, then refused.
    let c = parse(
        &format!(
            "[[connector]]\nresources = \"t/*\"\nhttp = \"http://127.0.0.1:{port}/{{rest}}\"\nmax_redirects = 2\n"
        ),
        dir.path(),
    )
    .unwrap();
    let e = c.list[0].open("t/1", u64::MAX, &[]).err().unwrap();
    assert!(e.message().contains("redirected too many times"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 3);
    // With secret headers: max_redirects is refused at load, and no redirect is followed (a
    // redirect could carry the headers to another host).
    let with_headers = |extra: &str| {
        parse(
            &format!(
                "[[connector]]\nresources = \"t/*\"\nhttp = \"http://127.0.0.1:{port}/{{rest}}\"\nheaders = {{ X-Api-Key = \"env:SEALRELAY_TEST_TOKEN_R\" }}\n{extra}"
            ),
            dir.path(),
        )
    };
    let e = with_headers("max_redirects = 2\n").unwrap_err();
    assert!(e.message().contains("cannot be set with headers"), "{e}");
    seen.lock().unwrap().clear();
    let c = with_headers("").unwrap();
    assert!(c.list[0].open("t/1", u64::MAX, &[]).is_err());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "a redirect was followed: {seen:?}");
}

/// Helper-found: a connector without headers followed redirects to any host, so a source (or
/// an open redirect on it) could point it at the connector host's own network, a cloud's
/// metadata address say, and that answer was sealed and delivered. Only redirects on the same
/// origin are followed now.
#[test]
fn redirects_are_followed_only_on_the_same_origin() {
    use std::io::{BufRead, Write};
    use std::sync::{Arc, Mutex};
    // A server that answers each path from `routes` (status line and extra headers, body).
    let serve = |routes: Vec<(&'static str, String)>| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = hits.clone();
        let routes = Arc::new(Mutex::new(routes));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(path.clone());
                let answer = routes
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_else(|| "404 Not Found\r\n".into());
                let mut out = conn;
                let _ = write!(
                    out,
                    "HTTP/1.1 {answer}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        (port, hits)
    };
    let (inner, inner_hits) = serve(vec![("/metadata", "200 OK\r\n".into())]);
    let (port, hits) = serve(vec![
        (
            "/t/away",
            format!("302 Found\r\nLocation: http://127.0.0.1:{inner}/metadata\r\n"),
        ),
        ("/t/path", "301 Moved\r\nLocation: /final\r\n".into()),
        (
            "/t/protocol",
            "302 Found\r\nLocation: //127.0.0.1/final\r\n".into(),
        ),
        ("/final", "200 OK\r\n".into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let c = parse(
        &format!(
            "[[connector]]\nresources = \"t/*\"\nhttp = \"http://127.0.0.1:{port}/t/{{rest}}\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    let e = c.list[0].open("t/away", u64::MAX, &[]).err().unwrap();
    assert!(e.message().contains("another host"), "{e}");
    assert!(
        inner_hits.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
    let e = c.list[0].open("t/protocol", u64::MAX, &[]).err().unwrap();
    assert!(e.message().contains("another host"), "{e}");
    let mut got = String::new();
    let mut s = c.list[0].open("t/path", u64::MAX, &[]).unwrap();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "ok");
    assert!(hits.lock().unwrap().contains(&"/final".to_owned()));
}

/// A command never sees the agent's environment (the HTTP connectors' secrets live there), a
/// resource cannot become one of its options, and its timeout kills what it started too (and
/// ends the read even when something it started escaped the kill).
#[test]
fn commands_get_a_clean_environment_no_options_and_a_group_kill() {
    std::env::set_var("SEALRELAY_TEST_SECRET_E", "do-not-leak");
    let dir = tempfile::tempdir().unwrap();
    let c = parse(
        r#"
[[connector]]
resources = "env/*"
command = ["/usr/bin/env"]

[[connector]]
resources = "opt/*"
command = ["/bin/echo", "{rest}"]

[[connector]]
resources = "tree/*"
command = ["/bin/sh", "-c", "sleep 30 & wait"]
timeout_secs = 1

[[connector]]
resources = "detached/*"
command = ["/bin/sh", "-c", "setsid -f sleep 20; printf partial"]
timeout_secs = 1
"#,
        dir.path(),
    )
    .unwrap();
    let run = |name: &str| -> Result<Vec<u8>> {
        let conn = c.for_resource(name)?;
        let env = [("SEALRELAY_RESOURCE", name.to_owned())];
        let mut s = conn.open(name, u64::MAX, &env)?;
        let mut out = Vec::new();
        if s.read_to_end(&mut out).is_err() {
            return Err(s.failure().cloned().unwrap());
        }
        s.finish()?;
        Ok(out)
    };
    let env = String::from_utf8(run("env/1").unwrap()).unwrap();
    assert!(env.contains("SEALRELAY_RESOURCE=env/1"), "{env}");
    assert!(!env.contains("do-not-leak"), "{env}");
    let e = run("opt/-n").unwrap_err();
    assert!(e.message().contains("as an option"), "{e}");
    let started = std::time::Instant::now();
    let e = run("tree/1").unwrap_err();
    assert!(e.message().contains("did not finish within 1 s"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a grandchild kept the pipe open"
    );
    // A process in a session of its own is out of the group kill's reach and holds the pipe
    // open after the command exited 0: reading still gives up at the deadline.
    let started = std::time::Instant::now();
    let e = run("detached/1").unwrap_err();
    assert!(e.message().contains("did not finish within 1 s"), "{e}");
    assert!(!e.message().contains("partial"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a detached process kept the pipe open"
    );
}
