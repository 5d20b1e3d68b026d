//! The admin listener (`metrics_listen`, HTTP, loopback by default): `/metrics` in the
//! Prometheus text format, `/livez` (the process answers) and `/readyz` (the store and
//! the log are usable now). Nothing of these names a user or an agent, or carries content; the
//! directory log beside them (`public_log`) is the directory's public statements.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::{Error, Result};

use crate::server::services::health;
use crate::server::services::relay::Relay;

/// Binds the admin listener (at start, so that a taken port stops the relay with a clear error).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::io(format!(
            "cannot listen for metrics on {addr}: {e}; set metrics_listen (or SEALRELAY_METRICS_LISTEN) to a free address, or to \"off\""
        ))
    })
}

/// Serves the admin endpoints until the task is aborted.
pub async fn serve(relay: Arc<Relay>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .merge(super::public_log::routes())
        .with_state(relay);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the admin listener stopped");
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(relay): State<Arc<Relay>>) -> Response {
    let checked = tokio::task::spawn_blocking(move || health::readiness(&relay)).await;
    match checked {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the check failed\n",
        )
            .into_response(),
    }
}

async fn metrics(State(relay): State<Arc<Relay>>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || health::render_metrics(&relay)).await;
    match rendered {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot render the metrics\n",
        )
            .into_response(),
    }
}
