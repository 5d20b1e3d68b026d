//! Handshake-level attacks from an independent QUIC implementation (aioquic, from PyPI; `.ci/run`
//! installs it into a virtual environment and names its Python in `SEALRELAY_PYTHON`): no
//! certificate, a foreign CA, an expired certificate, a wrong ALPN (threats 15–17) and 0-RTT
//! (threat 23). A good certificate through the same client is served, so each refusal is the
//! relay's answer to what was wrong. Skips with a message when aioquic is missing (fails under
//! `SEALRELAY_REQUIRE_TOOLS`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::pki::{mint, Bad};
use sealrelay::clock::Clock;
use sealrelay::core::pki::{cert_pem, key_pem};
use sealrelay::core::wire::{
    encode_frame, Page, Reply, Request, RequestFrame, Response, ALPN, PROTOCOL_VERSION,
};
use sealrelay::local::provision::user;

fn python() -> Option<String> {
    let py = std::env::var("SEALRELAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import aioquic"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let msg = format!("aioquic is not importable by {py} (set SEALRELAY_PYTHON): skipping");
    assert!(
        std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_none(),
        "{msg}"
    );
    eprintln!("SKIP: {msg}");
    None
}

fn probe(
    py: &str,
    addr: std::net::SocketAddr,
    alpn: &str,
    creds: Option<(&Path, &Path)>,
    extra: &[&str],
) -> serde_json::Value {
    let frame = encode_frame(&RequestFrame {
        version: PROTOCOL_VERSION,
        request: Request::Inbox {
            page: Page::first(),
        },
    })
    .unwrap();
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/quic/probe.py");
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(alpn)
        .arg(hex)
        .args(extra);
    if let Some((cert, key)) = creds {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("probe.py said {text:?}: {e}"))
}

/// Whether the relay served the request: the answer frame decodes to an inbox listing.
fn served(v: &serde_json::Value) -> bool {
    let Some(hex) = v["reply_hex"].as_str() else {
        return false;
    };
    let bytes = common::unhex(hex);
    bytes.len() > 4
        && matches!(
            sealrelay::core::wire::decode_frame::<Response>(&bytes[4..]),
            Ok(Response::Ok(Reply::Inbox { .. }))
        )
}

/// QUIC carries TLS alert N as transport error 0x100 + N.
fn alert(v: &serde_json::Value) -> Option<u64> {
    v["error_code"]
        .as_u64()
        .filter(|c| (0x100..0x200).contains(c))
        .map(|c| c - 0x100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threats_15_17_23_an_independent_quic_client_meets_the_same_refusals() {
    let Some(py) = python() else { return };
    let t = common::test_relay(&[user("alice", 2, &[])], |_| {}).await;
    let alice = &t.ids[0];
    let keys = t.dir.join("keys");
    let now = t.clock.now();
    let addr = t.relay.local_addr;
    let alpn = std::str::from_utf8(ALPN).unwrap();
    let key = t.dir.join("alice.key.pem");
    std::fs::write(&key, key_pem(alice.tls_key.pkcs8()).as_bytes()).unwrap();
    let cert_file = |name: &str, bad: Bad| {
        let path = t.dir.join(name);
        std::fs::write(&path, cert_pem(&mint(&keys, alice, bad, now))).unwrap();
        path
    };
    let good = cert_file("good.pem", Bad::Good);
    let foreign = cert_file("foreign.pem", Bad::ForeignCa);
    let expired = cert_file("expired.pem", Bad::ExpiredAt { at: now - 10 });

    let py = py.as_str();
    let o = probe(py, addr, alpn, Some((&good, &key)), &[]);
    assert!(served(&o), "the control was not served: {o}");

    let o = probe(py, addr, alpn, None, &[]);
    assert_eq!(alert(&o), Some(116), "no certificate: {o}"); // certificate_required
    let o = probe(py, addr, alpn, Some((&foreign, &key)), &[]);
    assert!(
        matches!(alert(&o), Some(48 | 51)),
        "a foreign CA: {o}" // unknown_ca, or decrypt_error for a CA with our CA's name
    );
    let o = probe(py, addr, alpn, Some((&expired, &key)), &[]);
    assert_eq!(alert(&o), Some(45), "an expired certificate: {o}"); // certificate_expired
    let o = probe(py, addr, "h3", Some((&good, &key)), &[]);
    assert_eq!(alert(&o), Some(120), "a wrong ALPN: {o}"); // no_application_protocol

    // threat 23: the relay gives no session ticket, so there is nothing to send early data on.
    let o = probe(py, addr, alpn, Some((&good, &key)), &["--zero-rtt"]);
    assert!(served(&o["first"]), "{o}");
    assert_eq!(o["tickets"], 0, "the relay issued session tickets: {o}");
}
