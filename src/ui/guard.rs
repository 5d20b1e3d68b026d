//! The web client's guard, in front of every route and the fallback alike: this run's random
//! prefix first (outside it, a bare 404 with no cookie read or set), then Host, Origin,
//! Sec-Fetch-Site, same-origin POSTs, then the token (in the URL once, then the cookie); and
//! the security headers on every response.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::{pages, Ui, COOKIE, CSP};
use crate::net::token::constant_time_eq;

/// A path outside this run's prefix: a bare 404 that names nothing of the prefix.
fn nowhere() -> Response {
    (StatusCode::NOT_FOUND, Html(pages::NOT_FOUND)).into_response()
}

/// A path under the prefix that is no page (after the guard admitted it).
pub(super) async fn no_page(State(ui): State<Arc<Ui>>) -> Response {
    ui.refuse(StatusCode::NOT_FOUND, "no such page")
}

/// Every request: this run's prefix, Host, Origin, Sec-Fetch-Site, same-origin POSTs, then the
/// token (in the URL once, then the cookie); every response: the security headers.
pub(super) async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    let mut response = match admit(&ui, &req) {
        None => next.run(req).await,
        Some(r) => r,
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` on this
    // page's own form POSTs, which the Origin check would refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `None`: go on; `Some(r)`: answer `r` instead (a refusal, or the token's redirect).
fn admit(ui: &Ui, req: &Request) -> Option<Response> {
    // threat: the ui cookie reaching other loopback ports. First of all, and before any token
    // or cookie is read or set: a path outside this run's random prefix is not this app's.
    if !ui.inside(req.uri().path()) {
        return Some(nowhere());
    }
    let headers = req.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let ours = |host: &str| {
        [
            format!("127.0.0.1:{}", ui.port),
            format!("localhost:{}", ui.port),
        ]
        .iter()
        .any(|h| h == host)
    };
    if !text(header::HOST).is_some_and(ours) {
        return Some(ui.refuse(
            StatusCode::FORBIDDEN,
            "this server answers only to its own loopback address",
        ));
    }
    let origin = text(header::ORIGIN);
    if let Some(o) = origin {
        if !o.strip_prefix("http://").is_some_and(ours) {
            return Some(ui.refuse(StatusCode::FORBIDDEN, "a request from another origin"));
        }
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return Some(ui.refuse(StatusCode::FORBIDDEN, "a cross-site request"));
    }
    if req.method() == Method::POST && origin.is_none() && site != Some("same-origin") {
        return Some(ui.refuse(
            StatusCode::FORBIDDEN,
            "a form must come from this page (no Origin or Sec-Fetch-Site)",
        ));
    }
    let token = ui.token.as_bytes();
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::as_bytes)
    });
    if let Some(t) = from_query {
        if !constant_time_eq(t, token) || req.method() != Method::GET {
            return Some(ui.refuse(StatusCode::UNAUTHORIZED, "a wrong token"));
        }
        // Path: this run's prefix, so the browser sends the cookie back only under it (never
        // to another port's server, which does not know the prefix).
        let cookie = format!(
            "{COOKIE}_{}={}; HttpOnly; SameSite=Strict; Path={}/",
            ui.port,
            ui.token.as_str(),
            ui.base
        );
        // The path the token came to, under the prefix (the guard checked it above).
        let mut r = Redirect::to(req.uri().path()).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return Some(r);
    }
    let has_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(&format!("{COOKIE}_{}=", ui.port)))
        .any(|t| constant_time_eq(t.as_bytes(), token));
    if !has_cookie {
        return Some(ui.refuse(
            StatusCode::UNAUTHORIZED,
            "open the URL that `sealrelay ui` printed (it carries the token)",
        ));
    }
    None
}
