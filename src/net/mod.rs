//! Transport: quinn endpoints over rustls with the ring provider, built explicitly. TLS 1.3
//! only, ALPN `sealrelay/1`, client certificates required and verified against the sealrelay
//! CA on the relay's own clock, no session resumption and so no 0-RTT, and transport limits set
//! on purpose. The caller's identity comes only from the verified certificate's SPIFFE URI SAN.
//!
//! Beside it, what the local HTTP listeners of every surface share, so that no surface imports
//! another: [`loopback`] (binding loopback only) and [`token`] (random tokens, constant-time
//! comparison).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::clock::Clock;
use crate::core::directory::sha256;
use crate::core::pki;
use crate::core::wire::ALPN;
use crate::error::{Error, Result};
use crate::ids::SpiffeId;

pub mod frame;
pub mod http;
pub mod loopback;
pub mod token;

/// Transport limits (see `docs/config.md`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections served at once (counted after the handshake); more are closed as busy.
    pub max_connections: usize,
    /// Handshakes in progress at once; past this, new attempts are refused.
    pub max_handshakes: usize,
    /// Handshakes in progress past which a client must first prove its address (a QUIC
    /// Retry, stateless for the relay): a flood of spoofed or abandoned attempts then costs
    /// the relay nothing.
    pub retry_above_handshakes: usize,
    /// Seconds a handshake may take.
    pub handshake_timeout_secs: u64,
    /// Handshakes and connections from one IP address at once.
    pub max_connections_per_ip: usize,
    /// Connections one identity may hold open at once.
    pub max_connections_per_identity: usize,
    /// Concurrent request streams per connection.
    pub max_streams_per_connection: u32,
    /// Seconds without traffic before a connection is closed.
    pub idle_timeout_secs: u64,
    /// Per-stream flow-control window (bytes): sized for bulk envelopes.
    pub stream_window: u32,
    /// Per-connection flow-control window (bytes).
    pub connection_window: u32,
    /// Data this side sends and holds until the peer acknowledges it, per connection (bytes):
    /// what a download (the relay) or an upload (a client) holds in memory. `None`: the
    /// connection window, as before this setting. A client's is 2 MiB unless
    /// `SEALRELAY_SEND_WINDOW` says otherwise, so an agent streaming a gibibyte from Node.js
    /// stays under 64 MiB (docs/node.md); it caps one upload at about 2 MiB per round trip
    /// (33 MB/s at 60 ms): raise it on a long path.
    pub send_window: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_handshakes: 1024,
            retry_above_handshakes: 64,
            handshake_timeout_secs: 10,
            max_connections_per_ip: 256,
            max_connections_per_identity: 64,
            max_streams_per_connection: 64,
            idle_timeout_secs: 30,
            stream_window: 8 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            send_window: None,
        }
    }
}

impl Limits {
    /// A client's: the connection counts as dead after 5 s without a packet (keep-alives every
    /// 1.6 s keep a healthy one open), so a client whose relay died fails in seconds, not at
    /// the relay's 30 s idle timeout.
    pub fn client() -> Result<Self> {
        Ok(Limits {
            idle_timeout_secs: 5,
            send_window: Some(client_send_window(
                std::env::var("SEALRELAY_SEND_WINDOW").ok().as_deref(),
            )?),
            ..Limits::default()
        })
    }
}

/// The smallest send window a relay or client accepts (one 64 KiB chunk).
pub const MIN_SEND_WINDOW: u32 = 64 * 1024;
/// A client's send window unless `SEALRELAY_SEND_WINDOW` says otherwise.
pub const CLIENT_SEND_WINDOW: u32 = 2 * 1024 * 1024;

/// A client's send window from `SEALRELAY_SEND_WINDOW` (bytes, at least [`MIN_SEND_WINDOW`]),
/// else [`CLIENT_SEND_WINDOW`].
fn client_send_window(env: Option<&str>) -> Result<u32> {
    let Some(v) = env else {
        return Ok(CLIENT_SEND_WINDOW);
    };
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|&w| w >= MIN_SEND_WINDOW)
        .ok_or_else(|| {
            Error::bad_input(format!(
                "SEALRELAY_SEND_WINDOW must be a number of bytes from {MIN_SEND_WINDOW} to {} (it is {v:?}): fix or unset it",
                u32::MAX
            ))
        })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(limits: &Limits, keep_alive: bool) -> Result<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_window))
        .receive_window(VarInt::from_u32(limits.connection_window))
        .send_window(u64::from(
            limits.send_window.unwrap_or(limits.connection_window),
        ))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(Duration::from_secs(limits.idle_timeout_secs.max(1)))
                .map_err(|_| Error::bad_input("idle timeout is too large"))?,
        ));
    if keep_alive {
        t.keep_alive_interval(Some(Duration::from_secs(
            (limits.idle_timeout_secs / 3).max(1),
        )));
    }
    Ok(t)
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::bad_input(format!("TLS configuration: {e}"))
}

/// Certificate validity judged on the relay's clock (threat 16: one clock for grants, directory
/// entries and certificates, which a test can move to the second).
struct RelayTime(Arc<dyn Clock>);

impl std::fmt::Debug for RelayTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayTime")
    }
}

impl rustls::time_provider::TimeProvider for RelayTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            self.0.now(),
        )))
    }
}

/// The relay's QUIC server configuration. Client certificates are checked against `ca` at
/// `clock`'s time. Sessions are never resumed: no tickets, no session cache, so every connection
/// proves its certificate afresh and early data (0-RTT) cannot be offered (threats 19, 23).
pub fn server_config(
    cert: &[u8],
    key_pkcs8: &[u8],
    ca: &[u8],
    limits: &Limits,
    clock: Arc<dyn Clock>,
) -> Result<quinn::ServerConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .map_err(tls_err)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(tls_err)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let mut tls =
        rustls::ServerConfig::builder_with_details(provider(), Arc::new(RelayTime(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![CertificateDer::from(cert.to_vec())], key)
            .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0; // no 0-RTT: every request is bound to a full handshake
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits, false)?));
    config.migration(false);
    config.max_incoming(limits.max_connections.max(1));
    Ok(config)
}

/// A party's QUIC client configuration (its certificate and the CA it trusts).
pub fn client_config(
    cert: &[u8],
    key_pkcs8: &[u8],
    ca: &[u8],
    limits: &Limits,
) -> Result<quinn::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .map_err(tls_err)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![CertificateDer::from(cert.to_vec())], key)
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits, true)?));
    Ok(config)
}

/// The verified peer of a connection: its SPIFFE ID and the SHA-256 of its certificate's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: SpiffeId,
    pub spki_sha256: [u8; 32],
}

/// Reads the peer's identity from a connection whose certificate rustls already verified.
pub fn peer(conn: &quinn::Connection) -> Result<Peer> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| Error::new(crate::ErrorKind::Refused, "no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Error::new(crate::ErrorKind::Refused, "no client certificate"))?;
    let info = pki::inspect(leaf.as_ref())?;
    let id = info.spiffe_id.ok_or_else(|| {
        Error::new(
            crate::ErrorKind::Refused,
            "the certificate carries no SPIFFE ID",
        )
    })?;
    Ok(Peer {
        id,
        spki_sha256: sha256(&info.spki_der),
    })
}

/// Resolves `host:port` (the relay address) to a socket address and the TLS server name.
pub fn resolve(relay: &str) -> Result<(SocketAddr, String)> {
    use std::net::ToSocketAddrs;
    let addr = relay
        .to_socket_addrs()
        .map_err(|e| {
            Error::bad_input(format!(
                "cannot resolve the relay address {relay:?}: {e} (use HOST:PORT)"
            ))
        })?
        .next()
        .ok_or_else(|| {
            Error::bad_input(format!("the relay address {relay:?} resolves to nothing"))
        })?;
    let host = match relay.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => relay.to_owned(),
    };
    Ok((addr, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_send_window_comes_from_the_environment_or_is_refused_in_a_line() {
        assert_eq!(client_send_window(None).unwrap(), CLIENT_SEND_WINDOW);
        assert_eq!(client_send_window(Some("4194304")).unwrap(), 4 << 20);
        for bad in ["", "2 MiB", "-1", "65535", "4294967296"] {
            let err = client_send_window(Some(bad)).unwrap_err();
            assert!(err.message().contains("SEALRELAY_SEND_WINDOW"), "{err}");
            assert!(!err.message().contains('\n'));
        }
    }
}
