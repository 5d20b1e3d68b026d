//! A test PKI that mints the bad certificates a relay must refuse, and a raw QUIC client that
//! presents any certificate (or none) and trusts any server, so that the relay's own checks are
//! what is tested, not the client's check of the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sealrelay::core::identity::Identity;
use sealrelay::core::pki::{self, CertUsage, TlsKey};
use sealrelay::core::wire::{self, Request, RequestFrame, Response};
use sealrelay::ids::{PartyKind, SpiffeId};
use sealrelay::local::trust_root::TrustRoot;

/// The kinds of client certificate the suite presents (threats 15–17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Issued by the relay's CA, as `provision` would: the control that must be served.
    Good,
    /// Valid for a day up to `not_after = at`.
    ExpiredAt { at: u64 },
    /// `not_before` in the future, at `at`.
    NotYetValidAt { at: u64 },
    /// Server authentication only, no client-auth EKU.
    WrongEku,
    /// No URI SAN at all.
    NoSpiffe,
    /// A valid SPIFFE ID the directory does not know (another name).
    OtherName,
    /// The same names, from another CA.
    ForeignCa,
    /// Signed by its own key.
    SelfSigned,
}

/// Mints `bad` for `party` (its own TLS key) against the trust root in `keys`.
pub fn mint(keys: &std::path::Path, party: &Identity, bad: Bad, now: u64) -> Vec<u8> {
    let root = TrustRoot::load(keys).unwrap();
    let spki = party.tls_key.spki_der().unwrap();
    let id = party.id.clone().unwrap();
    let issue = |id: &SpiffeId, usage, nb, na| {
        pki::issue_leaf(&root.ca_cert, &root.ca_key, &spki, id, &[], usage, nb, na).unwrap()
    };
    let day = 86_400;
    match bad {
        Bad::Good => issue(&id, CertUsage::Client, now - 60, now + day),
        Bad::ExpiredAt { at } => issue(&id, CertUsage::Client, at - day, at),
        Bad::NotYetValidAt { at } => issue(&id, CertUsage::Client, at, at + day),
        Bad::WrongEku => issue(&id, CertUsage::Server, now - 60, now + day),
        Bad::OtherName => {
            let other = SpiffeId::new(&root.meta.trust_domain, PartyKind::User, "mallory").unwrap();
            issue(&other, CertUsage::Client, now - 60, now + day)
        }
        Bad::NoSpiffe => {
            let kp = rcgen::KeyPair::try_from(party.tls_key.pkcs8()).unwrap();
            let ca_kp = rcgen::KeyPair::try_from(root.ca_key.pkcs8()).unwrap();
            let issuer = rcgen::Issuer::from_ca_cert_der(
                &rustls::pki_types::CertificateDer::from(root.ca_cert.clone()),
                ca_kp,
            )
            .unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["alice.example".into()]).unwrap();
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            params.signed_by(&kp, &issuer).unwrap().der().to_vec()
        }
        Bad::ForeignCa => {
            let (ca, ca_key) = pki::make_ca(&root.meta.trust_domain, now, 30).unwrap();
            pki::issue_leaf(
                &ca,
                &ca_key,
                &spki,
                &id,
                &[],
                CertUsage::Client,
                now - 60,
                now + day,
            )
            .unwrap()
        }
        Bad::SelfSigned => {
            let kp = rcgen::KeyPair::try_from(party.tls_key.pkcs8()).unwrap();
            let mut params = rcgen::CertificateParams::default();
            params.subject_alt_names =
                vec![rcgen::SanType::URI(id.to_string().try_into().unwrap())];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            params.self_signed(&kp).unwrap().der().to_vec()
        }
    }
}

/// Trusts any server certificate (but still checks the handshake signature): the suite tests
/// the relay's checks of the client, which a client refusing the relay first would hide.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What the relay did with a raw request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// A handler answered (with a reply or an error): the connection was accepted.
    Answered(Response),
    /// The TLS handshake was refused with this alert (RFC 8446 §6 numbers).
    TlsAlert(u8),
    /// The relay closed the connection with this application code.
    Closed(u64),
    /// Anything else (timeouts, transport errors).
    Other(String),
}

fn outcome_of(e: &quinn::ConnectionError) -> Outcome {
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            let code = u64::from(c.error_code);
            if (0x100..0x200).contains(&code) {
                Outcome::TlsAlert((code - 0x100) as u8)
            } else {
                Outcome::Other(format!("{c}"))
            }
        }
        quinn::ConnectionError::ApplicationClosed(c) => Outcome::Closed(c.error_code.into_inner()),
        other => Outcome::Other(other.to_string()),
    }
}

/// A read that failed: the connection's end, or the stream's (reset, cut short).
fn lost(conn: &quinn::Connection, e: quinn::ReadExactError) -> Outcome {
    match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => outcome_of(&c),
        other => {
            conn.close(0u32.into(), b"");
            Outcome::Other(format!("no whole answer frame: {other}"))
        }
    }
}

/// A raw client: `cert` with `party`'s TLS key (or no certificate), the given ALPN.
pub struct RawClient {
    endpoint: quinn::Endpoint,
}

impl RawClient {
    pub fn new(party: Option<(&Identity, Vec<u8>)>, alpn: &[u8]) -> RawClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
        let mut tls = match party {
            Some((id, cert)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(cert)],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.tls_key.pkcs8().to_vec())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![alpn.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        RawClient { endpoint }
    }

    /// A connection to `relay` (for a test that drives its streams itself).
    pub async fn connect(&self, relay: SocketAddr) -> quinn::Connection {
        self.endpoint
            .connect(relay, "localhost")
            .unwrap()
            .await
            .unwrap()
    }

    /// Connects to `relay` and sends one request; what happened.
    pub async fn request(&self, relay: SocketAddr, request: Request) -> Outcome {
        let frame = wire::encode_frame(&RequestFrame {
            version: wire::PROTOCOL_VERSION,
            request,
        })
        .unwrap();
        self.send_bytes(relay, &frame, true).await
    }

    /// Connects to `relay`, writes `bytes` on a stream (finishing it when `finish`) and reads
    /// one answer frame; what happened. For garbage, truncation and oversized prefixes.
    pub async fn send_bytes(&self, relay: SocketAddr, bytes: &[u8], finish: bool) -> Outcome {
        let run = async {
            let conn = match self.endpoint.connect(relay, "localhost").unwrap().await {
                Ok(c) => c,
                Err(e) => return outcome_of(&e),
            };
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(s) => s,
                Err(e) => return outcome_of(&e),
            };
            if send.write_all(bytes).await.is_err() {
                return outcome_of(&conn.closed().await);
            }
            if finish {
                let _ = send.finish();
            }
            let mut prefix = [0u8; 4];
            if let Err(e) = recv.read_exact(&mut prefix).await {
                return lost(&conn, e);
            }
            let len = wire::frame_len(prefix).unwrap();
            let mut body = vec![0u8; len];
            if let Err(e) = recv.read_exact(&mut body).await {
                return lost(&conn, e);
            }
            conn.close(0u32.into(), b"");
            Outcome::Answered(wire::decode_frame(&body).unwrap())
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .unwrap_or_else(|_| Outcome::Other("timed out".into()))
    }
}

/// A fresh TLS key (for parties made up by a test).
pub fn fresh_key() -> TlsKey {
    TlsKey::generate().unwrap()
}
