//! `sealrelay ui`: the requester's own client as a web app on 127.0.0.1. The private key never
//! leaves this process; pages get only what the client decided to show (headers it judged,
//! plaintext the user chose to open), never ciphertext or keys.
//!
//! The Jupyter model, closed against other ports: a random port, a random path prefix
//! (`/s/<32 hex>`, new each run) under which the whole app lives, and a random token in the URL
//! printed once; the first request with the token sets a `SameSite=Strict`, `HttpOnly` cookie
//! scoped by `Path` to the prefix and redirects to the bare path. Browsers send a 127.0.0.1
//! cookie to every port of that host whose path matches, so the prefix, which a server on
//! another port cannot guess, is what keeps the cookie from it: outside the prefix every request
//! gets 404, with no cookie read or set and no token accepted. Every request must name this
//! server in `Host` (loopback names and the bound port only: DNS rebinding), carry no foreign
//! `Origin`, and not be cross-site by `Sec-Fetch-Site`; a POST must prove it is same-origin.
//! Every response carries a Content-Security-Policy that forbids inline scripts and anything
//! remote; every asset is embedded in the binary.

mod follow;
mod guard;
mod pages;

use crate::local::checkpoint_state::CheckpointState;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::client::{Destination, EnvelopeHeader, UserClient};
use crate::core::identity::Identity;
use crate::error::{Error, Result};
use crate::ids::{parse_hex, EnvelopeId, GrantId};
use crate::net::token::constant_time_eq;

/// The cookie that carries the token after the first visit, named with the port and scoped by
/// `Path` to this run's random prefix: browsers keep cookies per host, not per port, so two
/// clients on one machine must not share a name, and they send a cookie to any port whose path
/// matches, so only a path no other server knows keeps it from a hostile one.
const COOKIE: &str = "sealrelay_ui";
/// Random bytes in this run's path prefix (`/s/` and these in hex).
const PREFIX_BYTES: usize = 16;
/// Plaintext up to this size, if it is UTF-8 text, is shown in the page (escaped); anything
/// else is offered as a download.
pub const SHOW_MAX: u64 = 1 << 20;

/// What the page is never sent: a Content-Security-Policy with no inline script and nothing
/// remote.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An envelope this client opened (fetched, verified, decrypted to `out`).
#[derive(Clone, Debug)]
pub struct Opened {
    pub header: EnvelopeHeader,
    pub delivered: bool,
    pub plaintext_len: u64,
    pub problem: Option<String>,
    pub receipt_index: u64,
    pub tree_size: u64,
    pub path: PathBuf,
}

/// The web client's state.
pub struct Ui {
    identity: Arc<Identity>,
    identity_path: Option<PathBuf>,
    relay: String,
    /// Where opened envelopes are written (0600) with their receipts.
    out: PathBuf,
    token: Zeroizing<String>,
    port: u16,
    /// This run's random path prefix, `/s/<32 hex>` without the trailing slash: every page,
    /// asset, form and fetch lives under it, and the cookie's `Path` is it with the slash.
    base: String,
    opened: Mutex<HashMap<EnvelopeId, Opened>>,
    /// Each envelope's turn to be opened: one open at a time (a double-click, two tabs); kept
    /// for the run, as `opened` is.
    opening: Mutex<HashMap<EnvelopeId, Arc<tokio::sync::Mutex<()>>>>,
    /// How many envelopes the inbox subscription has brought (`follow`).
    arrived: tokio::sync::watch::Sender<u64>,
    /// Set when the server is shutting down: waiting pages are answered at once.
    closing: tokio::sync::watch::Sender<bool>,
}

/// A bound listener, ready to serve.
pub struct UiServer {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    /// The identity file's path, to keep `IDENTITY.checkpoint` as `fetch` does.
    identity_path: Option<PathBuf>,
    /// This run's random path prefix (as `Ui::base`), drawn at bind.
    base: String,
}

impl UiServer {
    /// Binds `listen`, which must be a loopback address, and draws this run's path prefix.
    pub async fn bind(listen: SocketAddr) -> Result<UiServer> {
        // The page's link and its Host check name 127.0.0.1: another loopback address (which
        // would leave 127.0.0.1:PORT to whoever takes it) is refused.
        if listen.ip() != std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
            return Err(Error::bad_input(format!(
                "--listen must be the loopback address 127.0.0.1:PORT (not {listen}): the link the web client prints and the Host it accepts name 127.0.0.1"
            )));
        }
        let base = random_base()?;
        let (listener, addr) = crate::net::loopback::bind_loopback(
            listen,
            "--listen must be a loopback address (127.0.0.1:PORT)",
            "the web client is for this machine's browser only",
        )
        .await?;
        Ok(UiServer {
            listener,
            addr,
            identity_path: None,
            base,
        })
    }

    /// Keeps the newest checkpoint seen in `IDENTITY.checkpoint` beside `identity_path`, as
    /// `fetch` does: a receipt whose checkpoint does not extend it fails the open (FORK or
    /// ROLLBACK), and the page says so.
    pub fn remember_checkpoints(mut self, identity_path: PathBuf) -> Self {
        self.identity_path = Some(identity_path);
        self
    }

    /// The URL to open (this run's prefix and the token), printed once.
    pub fn url(&self, token: &str) -> String {
        format!(
            "http://127.0.0.1:{}{}/?token={token}",
            self.addr.port(),
            self.base
        )
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        identity: Arc<Identity>,
        relay: String,
        out: PathBuf,
        token: Zeroizing<String>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let ui = Arc::new(Ui {
            identity,
            identity_path: self.identity_path,
            relay,
            out,
            token,
            port: self.addr.port(),
            base: self.base,
            opened: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            arrived: tokio::sync::watch::channel(0).0,
            closing: tokio::sync::watch::channel(false).0,
        });
        let following = tokio::spawn(follow::follow_inbox(ui.clone(), ui.arrived.clone()));
        let closing = ui.closing.clone();
        let app = router(ui);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                closing.send_replace(true);
            })
            .await
            .map_err(|e| Error::io(format!("the web client's listener failed: {e}")));
        following.abort();
        served
    }
}

/// Every route under this run's prefix; the guard wraps them and the fallback alike, so a path
/// outside the prefix meets it too (and gets its 404).
fn router(ui: Arc<Ui>) -> Router {
    let p = ui.base.clone();
    Router::new()
        .route(&format!("{p}/"), get(inbox))
        .route(&format!("{p}/api/inbox"), get(api_inbox))
        .route(&format!("{p}/api/inbox/next"), get(follow::next))
        .route(&format!("{p}/envelope/{{id}}"), get(envelope))
        .route(&format!("{p}/envelope/{{id}}/open"), post(open))
        .route(&format!("{p}/envelope/{{id}}/content"), get(content))
        .route(&format!("{p}/approvals"), get(approvals))
        .route(&format!("{p}/approvals/{{id}}/approve"), post(approve))
        .route(&format!("{p}/approvals/{{id}}/deny"), post(deny))
        .route(&format!("{p}/grants"), get(grants))
        .route(
            &format!("{p}/receipt"),
            get(receipt_form).post(receipt_check),
        )
        .route(&format!("{p}/static/style.css"), get(style))
        .route(&format!("{p}/static/app.js"), get(script))
        .fallback(guard::no_page)
        .layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            guard::guard,
        ))
        .with_state(ui)
}

impl Ui {
    async fn client(&self) -> Result<UserClient<'_>> {
        let client = UserClient::connect(&self.identity, &self.relay).await?;
        let seen = match (&self.identity_path, &self.identity.log_key) {
            (Some(path), Some(log)) => Some(CheckpointState::for_identity(path, log.clone())),
            _ => None,
        };
        Ok(match seen {
            Some(s) => client.remember_checkpoints(s),
            None => client,
        })
    }

    fn opened(&self, id: &EnvelopeId) -> Option<Opened> {
        self.opened.lock().ok().and_then(|m| m.get(id).cloned())
    }

    /// Whether `path` lies under this run's prefix (`/s/<32 hex>/` and anything after it); the
    /// prefix is compared in constant time, as the token is.
    fn inside(&self, path: &str) -> bool {
        let n = self.base.len();
        match (path.get(..n), path.get(n..)) {
            (Some(head), Some(rest)) => {
                constant_time_eq(head.as_bytes(), self.base.as_bytes()) && rest.starts_with('/')
            }
            _ => false,
        }
    }

    fn refuse(&self, status: StatusCode, why: &str) -> Response {
        (status, Html(pages::message(&self.base, "Refused", why))).into_response()
    }

    fn failed(&self, e: &Error) -> Response {
        (
            StatusCode::BAD_GATEWAY,
            Html(pages::message(
                &self.base,
                "Something went wrong",
                e.message(),
            )),
        )
            .into_response()
    }

    fn no_envelope(&self) -> Response {
        self.refuse(StatusCode::NOT_FOUND, "no such envelope")
    }
}

fn envelope_id(s: &str) -> Option<EnvelopeId> {
    parse_hex(s).map(EnvelopeId).ok()
}

async fn headers(ui: &Ui) -> Result<Vec<EnvelopeHeader>> {
    let c = ui.client().await?;
    let list = c.inbox_headers().await;
    c.conn.close().await;
    list
}

/// The inbox and the key alerts: what the directory log holds under this person's name that
/// their own keys did not make (docs/keys.md), read from where this identity last stopped.
async fn headers_and_alerts(ui: &Ui) -> Result<(Vec<EnvelopeHeader>, Vec<String>)> {
    let c = ui.client().await?;
    let alerts = key_alerts(ui, &c).await;
    let list = c.inbox_headers().await;
    c.conn.close().await;
    Ok((list?, alerts?))
}

/// The open key alerts, read on from where this identity last stopped in the directory log (a
/// log that does not extend what it read is refused: FORK / ROLLBACK), as `inbox` and `fetch`
/// read them.
async fn key_alerts(ui: &Ui, c: &crate::client::UserClient<'_>) -> Result<Vec<String>> {
    match &ui.identity_path {
        Some(path) => crate::client::keywatch::watch(
            &ui.identity,
            path,
            crate::client::keywatch::LogSource::Relay(&c.conn),
            false,
        )
        .await
        .map(|r| {
            r.open_alerts
                .iter()
                .map(crate::client::keywatch::describe)
                .collect()
        }),
        None => Ok(Vec::new()),
    }
}

async fn inbox(State(ui): State<Arc<Ui>>) -> Response {
    match headers_and_alerts(&ui).await {
        Ok((list, alerts)) => {
            let safety = ui
                .identity
                .own_entry()
                .ok()
                .map(|e| crate::core::safety::safety_number(&e));
            Html(pages::inbox(&ui.base, &list, safety.as_deref(), &alerts)).into_response()
        }
        Err(e) => ui.failed(&e),
    }
}

async fn api_inbox(State(ui): State<Arc<Ui>>) -> Response {
    match headers(&ui).await {
        Ok(list) => {
            let v: Vec<_> = list.iter().map(EnvelopeHeader::to_json).collect();
            axum::Json(v).into_response()
        }
        Err(e) => ui.failed(&e),
    }
}

async fn envelope(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Response {
    let Some(id) = envelope_id(&id) else {
        return ui.no_envelope();
    };
    if let Some(o) = ui.opened(&id) {
        let shown = pages::shown_text(&o);
        return Html(pages::opened(&ui.base, &o, shown.as_deref())).into_response();
    }
    match header_and_alerts(&ui, id).await {
        Ok((Some(h), alerts)) => Html(pages::header_page(&ui.base, &h, &alerts)).into_response(),
        Ok((None, _)) => ui.refuse(StatusCode::NOT_FOUND, "no such envelope in your inbox"),
        Err(e) => ui.failed(&e),
    }
}

/// One envelope's header, judged alone (a long inbox is listed, not judged whole), and the
/// key alerts.
async fn header_and_alerts(
    ui: &Ui,
    id: EnvelopeId,
) -> Result<(Option<EnvelopeHeader>, Vec<String>)> {
    let c = ui.client().await?;
    let found = async {
        let alerts = key_alerts(ui, &c).await?;
        let header = match c.inbox().await?.into_iter().find(|v| v.envelope_id == id) {
            Some(v) => Some(c.judge(&v, &mut Vec::new()).await?),
            None => None,
        };
        Ok((header, alerts))
    }
    .await;
    c.conn.close().await;
    found
}

/// Fetches, verifies and opens the envelope into the output directory, files the receipt.
async fn open(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Response {
    let Some(id) = envelope_id(&id) else {
        return ui.no_envelope();
    };
    let there = format!("{}/envelope/{}", ui.base, crate::ids::hex(id));
    if ui.opened(&id).is_some() {
        return Redirect::to(&there).into_response();
    }
    // One open of an envelope at a time (a double-click, a second tab), and each runs to its
    // end as a task of its own, holding its turn: a browser that drops the first request (a
    // double-click does) would otherwise cut it off after the relay recorded the receipt and
    // before the receipt file was written, and the second would find the receipt taken.
    let turn = match ui.opening.lock() {
        Ok(mut m) => m.entry(id).or_default().clone(),
        Err(_) => return ui.failed(&Error::internal("the open lock is poisoned")),
    };
    let turn = turn.lock_owned().await;
    if ui.opened(&id).is_some() {
        return Redirect::to(&there).into_response();
    }
    let task = {
        let ui = ui.clone();
        tokio::spawn(async move {
            let opened = open_into(&ui, id).await;
            if let Ok(o) = &opened {
                if let Ok(mut m) = ui.opened.lock() {
                    m.insert(id, o.clone());
                }
            }
            drop(turn);
            opened
        })
    };
    match task.await {
        Ok(Ok(_)) => Redirect::to(&there).into_response(),
        Ok(Err(e)) => ui.failed(&e),
        Err(_) => ui.failed(&Error::internal("the open failed")),
    }
}

async fn open_into(ui: &Ui, id: EnvelopeId) -> Result<Opened> {
    // Plaintext goes here: a directory this client makes is the user's alone (0700); files
    // opened into it are 0600, receipts (public proofs) 0644.
    crate::local::fs::ensure_private_dir(&ui.out)?;
    let path = ui.out.join(crate::ids::hex(id));
    let c = ui.client().await?;
    // The directory log first, as `fetch` reads it: a relay showing another log is refused
    // before anything is opened (the page that offered Open showed the alerts).
    if let Err(e) = key_alerts(ui, &c).await {
        c.conn.close().await;
        return Err(e);
    }
    let saved = c.fetch_to(id, Destination::Path(&path), &ui.out).await;
    c.conn.close().await;
    let fetched = saved?.fetched;
    Ok(Opened {
        delivered: fetched.status == crate::core::grant::DeliveryStatus::Delivered,
        header: fetched.header,
        plaintext_len: fetched.plaintext_len,
        problem: fetched.problem,
        receipt_index: fetched.event_index,
        tree_size: fetched.receipt_file.tree_size,
        path,
    })
}

async fn content(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Response {
    let Some(id) = envelope_id(&id) else {
        return ui.no_envelope();
    };
    let Some(o) = ui.opened(&id).filter(|o| o.delivered) else {
        return ui.refuse(StatusCode::NOT_FOUND, "open the envelope first");
    };
    let file = match tokio::fs::File::open(&o.path).await {
        Ok(f) => f,
        Err(e) => return ui.failed(&Error::io(format!("cannot read the opened file: {e}"))),
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.bin\"",
        crate::ids::hex(id)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn approvals(State(ui): State<Arc<Ui>>) -> Response {
    let list = async {
        let c = ui.client().await?;
        let l = c.pending_with_classification().await;
        c.conn.close().await;
        l
    };
    match list.await {
        Ok(l) => Html(pages::approvals(&ui.base, &l, None)).into_response(),
        Err(e) => ui.failed(&e),
    }
}

#[derive(Deserialize)]
struct DenyForm {
    #[serde(default)]
    reason: String,
}

fn grant_id(s: &str) -> Option<GrantId> {
    parse_hex(s).map(GrantId).ok()
}

async fn decide(ui: &Ui, id: GrantId, deny: Option<&str>) -> Response {
    let done = async {
        let c = ui.client().await?;
        let r = match deny {
            None => c
                .approve(id)
                .await
                .map(|g| format!("Approved: {}", pages::grant_line(&g))),
            Some(reason) => c
                .deny(id, reason)
                .await
                .map(|g| format!("Denied: {}", pages::grant_line(&g))),
        };
        let list = c.pending_with_classification().await;
        c.conn.close().await;
        Ok::<_, Error>((r?, list?))
    };
    match done.await {
        Ok((said, list)) => Html(pages::approvals(&ui.base, &list, Some(&said))).into_response(),
        Err(e) => ui.failed(&e),
    }
}

async fn approve(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Response {
    match grant_id(&id) {
        Some(id) => decide(&ui, id, None).await,
        None => ui.refuse(StatusCode::NOT_FOUND, "no such grant"),
    }
}

async fn deny(
    State(ui): State<Arc<Ui>>,
    Path(id): Path<String>,
    Form(form): Form<DenyForm>,
) -> Response {
    match grant_id(&id) {
        Some(id) => decide(&ui, id, Some(form.reason.trim())).await,
        None => ui.refuse(StatusCode::NOT_FOUND, "no such grant"),
    }
}

async fn grants(State(ui): State<Arc<Ui>>) -> Response {
    let list = async {
        let c = ui.client().await?;
        let l = c.my_grants().await;
        c.conn.close().await;
        l
    };
    match list.await {
        Ok(l) => Html(pages::grants(&ui.base, &l)).into_response(),
        Err(e) => ui.failed(&e),
    }
}

async fn receipt_form(State(ui): State<Arc<Ui>>) -> Response {
    Html(pages::receipt(&ui.base, None)).into_response()
}

#[derive(Deserialize)]
struct ReceiptForm {
    receipt: String,
}

/// Verifies a pasted receipt file offline, with the keys this identity pinned.
async fn receipt_check(State(ui): State<Arc<Ui>>, Form(form): Form<ReceiptForm>) -> Response {
    let verdict = (|| {
        let authority = ui
            .identity
            .authority
            .as_ref()
            .ok_or_else(|| Error::bad_input("this identity pins no authority"))?;
        let log = ui
            .identity
            .log_key
            .as_ref()
            .ok_or_else(|| Error::bad_input("this identity trusts no log key"))?;
        let file = crate::core::receipt_file::ReceiptFile::from_json(form.receipt.as_bytes())?;
        file.verify(&authority.key, log)
    })();
    let said = match verdict {
        Ok(v) => Ok(format!(
            "Verified: envelope {} {} to {}, log entry {} of {} under a checkpoint signed by {}.",
            crate::ids::hex(v.receipt.envelope_id),
            v.receipt.status.as_str(),
            v.receipt.user,
            v.leaf_index,
            v.checkpoint.size,
            v.checkpoint.origin
        )),
        Err(e) => Err(format!("Does not verify: {}", e.message())),
    };
    Html(pages::receipt(&ui.base, Some(said))).into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// A fresh random path prefix for one run: `/s/` and 16 random bytes in hex (32 digits), which a
/// server on another port cannot guess.
fn random_base() -> Result<String> {
    let mut bytes = [0u8; PREFIX_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::internal("no randomness for the path prefix"))?;
    Ok(format!("/s/{}", crate::ids::hex(bytes)))
}
