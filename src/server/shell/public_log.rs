//! The directory log over plain HTTP on the admin listener, readable without a client
//! certificate (docs/keys.md): a person whose identity was revoked can still learn what was
//! enrolled under their name (`sealrelay keys watch --log-url`), and anyone can audit the
//! directory. Paths follow C2SP tlog-tiles for the checkpoint and the entry bundles:
//!
//! * `GET /directory/checkpoint`: the signed checkpoint (origin `<log origin>/directory`);
//! * `GET /directory/tile/entries/<N>[.p/<W>]`: 256 leaves (or the first W of a partial tile),
//!   each a big-endian u16 length and the leaf's bytes;
//! * `GET /directory/proof/<index>?size=<S>`: `{"index", "tree_size", "leaf", "proof"}` (base64),
//!   the inclusion proof of one leaf in the tree of size S (default: the checkpoint's).
//!
//! Hash tiles are not served: a reader rebuilds what it needs from the entries.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::server::services::relay::Relay;

/// Leaves per entry bundle (C2SP tlog-tiles).
pub const TILE_WIDTH: u64 = 256;

pub fn routes() -> axum::Router<Arc<Relay>> {
    axum::Router::new()
        .route("/directory/checkpoint", axum::routing::get(checkpoint))
        .route(
            "/directory/tile/entries/{*path}",
            axum::routing::get(entries),
        )
        .route("/directory/proof/{index}", axum::routing::get(proof))
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the directory log cannot be read now\n",
    )
        .into_response()
}

async fn checkpoint(State(relay): State<Arc<Relay>>) -> Response {
    match relay.directory_checkpoint_for_readers() {
        Some(n) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            n,
        )
            .into_response(),
        None => unavailable(),
    }
}

/// A tile path's index and width: `x001/x234/067` → 1234067 (full), `005.p/7` → (5, 7).
pub fn parse_tile_path(path: &str) -> Option<(u64, u64)> {
    let (groups, width) = match path.split_once(".p/") {
        Some((g, w)) => {
            let w: u64 = w.parse().ok().filter(|w| (1..TILE_WIDTH).contains(w))?;
            if w.to_string() != path.rsplit('/').next()? {
                return None;
            }
            (g, w)
        }
        None => (path, TILE_WIDTH),
    };
    let parts: Vec<&str> = groups.split('/').collect();
    let mut n: u64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let digits = if i + 1 < parts.len() {
            p.strip_prefix('x')?
        } else {
            p
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    // One way to write each number: no leading "x000" groups.
    (parts.len() == 1 || !parts[0].eq("x000")).then_some((n, width))
}

async fn entries(State(relay): State<Arc<Relay>>, Path(path): Path<String>) -> Response {
    let Some((n, width)) = parse_tile_path(&path) else {
        return not_found("no such tile");
    };
    let size = match relay.directory.read() {
        Ok(d) => d.log_size(),
        Err(_) => return unavailable(),
    };
    let Some(from) = n.checked_mul(TILE_WIDTH) else {
        return not_found("no such tile");
    };
    if from.saturating_add(width) > size {
        return not_found("no such tile yet");
    }
    let store = relay.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        store.directory_log(from, usize::try_from(width).unwrap_or(0))
    })
    .await;
    let Ok(Ok(leaves)) = read else {
        return unavailable();
    };
    let mut body = Vec::new();
    for leaf in &leaves {
        let Ok(len) = u16::try_from(leaf.len()) else {
            return unavailable();
        };
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(leaf);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}

/// `size=<S>` from a query string (anything else there is refused).
fn size_param(uri: &axum::http::Uri) -> Result<Option<u64>, ()> {
    match uri.query() {
        None | Some("") => Ok(None),
        Some(q) => q
            .strip_prefix("size=")
            .and_then(crate::core::tlog::checkpoint::parse_decimal)
            .map(Some)
            .ok_or(()),
    }
}

async fn proof(
    State(relay): State<Arc<Relay>>,
    Path(index): Path<u64>,
    uri: axum::http::Uri,
) -> Response {
    let Ok(size) = size_param(&uri) else {
        return (
            StatusCode::BAD_REQUEST,
            "the only parameter is size=<decimal>\n",
        )
            .into_response();
    };
    let hashes = {
        let Ok(dir) = relay.directory.read() else {
            return unavailable();
        };
        let Some(tree) = dir.log_tree() else {
            return unavailable();
        };
        let size = size.unwrap_or(tree.size());
        match tree.inclusion_proof(index, size) {
            Ok(p) => (size, p),
            Err(_) => return not_found("no such leaf in a tree of that size"),
        }
    };
    let store = relay.store.clone();
    let read = tokio::task::spawn_blocking(move || store.directory_log(index, 1)).await;
    let Ok(Ok(mut leaves)) = read else {
        return unavailable();
    };
    let Some(leaf) = leaves.pop() else {
        return not_found("no such leaf");
    };
    let body = serde_json::json!({
        "index": index,
        "tree_size": hashes.0,
        "leaf": B64.encode(&leaf),
        "proof": hashes.1.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_tile_path;

    #[test]
    fn tile_paths_parse_one_way_only() {
        assert_eq!(parse_tile_path("000"), Some((0, 256)));
        assert_eq!(parse_tile_path("005.p/7"), Some((5, 7)));
        assert_eq!(parse_tile_path("x001/x234/067"), Some((1_234_067, 256)));
        assert_eq!(parse_tile_path("x001/000.p/255"), Some((1000, 255)));
        for bad in [
            "5",
            "0005",
            "x000/005",
            "005.p/0",
            "005.p/256",
            "005.p/07",
            "001/002",
            "x1/002",
            "../000",
            "%2e%2e/000",
            "005.p/",
            "",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
    }
}
