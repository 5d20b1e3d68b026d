//! `sealrelay mcp --http`: the MCP server over Streamable HTTP, on loopback only, behind a
//! bearer token (compared in constant time); any `Origin` header and any non-loopback `Host`
//! are refused (DNS rebinding), as the MCP transport specification asks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::server::McpServer;
use crate::error::{Error, Result};
use crate::net::loopback::bind_loopback;
use crate::net::token::constant_time_eq;

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";
/// The largest request body accepted (tool calls are small).
const MAX_BODY: usize = 1 << 20;

/// A bound listener, ready to serve.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
}

impl HttpServer {
    /// Binds `listen`, which must be a loopback address.
    pub async fn bind(listen: SocketAddr) -> Result<HttpServer> {
        let (listener, addr) = bind_loopback(
            listen,
            "--http must be a loopback address (127.0.0.1:PORT or [::1]:PORT)",
            "the MCP endpoint is for a host on this machine",
        )
        .await?;
        Ok(HttpServer { listener, addr })
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(
        self,
        server: McpServer,
        token: Zeroizing<String>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts([
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
                "[::1]".to_owned(),
                format!("127.0.0.1:{}", self.addr.port()),
                format!("localhost:{}", self.addr.port()),
                format!("[::1]:{}", self.addr.port()),
            ])
            .enforce_origin_validation()
            .with_max_request_body_bytes(MAX_BODY)
            .with_cancellation_token(shutdown.child_token());
        let service: StreamableHttpService<McpServer, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(server.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            );
        let expected = Arc::new(Zeroizing::new(format!("Bearer {}", token.as_str())));
        let router =
            axum::Router::new()
                .nest_service(PATH, service)
                .layer(axum::middleware::from_fn(
                    move |req: Request, next: Next| {
                        let expected = expected.clone();
                        async move { bearer(&expected, req, next).await }
                    },
                ));
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
            .await
            .map_err(|e| Error::io(format!("the MCP HTTP listener failed: {e}")))
    }
}

async fn bearer(expected: &str, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(given, expected.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required: Authorization: Bearer <token>\n",
        )
            .into_response();
    }
    next.run(req).await
}
