//! Listening on this machine only: the TCP listeners that serve a local client (the MCP
//! endpoint, the web client) refuse any address that is not loopback before they bind.

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// Binds a TCP listener on `listen`, refused (with `rule` and `why`) unless it is a loopback
/// address; returns the listener and the address it got (port 0 picks one).
pub async fn bind_loopback(
    listen: SocketAddr,
    rule: &str,
    why: &str,
) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    if !listen.ip().is_loopback() {
        return Err(Error::bad_input(format!("{rule}, not {listen}: {why}")));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("cannot read the bound address: {e}")))?;
    Ok((listener, addr))
}
