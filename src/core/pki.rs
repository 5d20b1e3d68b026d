//! X.509 for mutual TLS: the sealrelay CA, leaf certificates whose URI SAN is the party's SPIFFE
//! ID, and inspection of certificates we are handed. Issuance uses rcgen (ring backend);
//! inspection and chain checks use x509-parser. Pure: `now` and all key material come in as
//! arguments (rcgen draws its own randomness for ECDSA signatures and key generation).

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ids::{PartyKind, SpiffeId};

/// Cap on a certificate we parse.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Cap on a SubjectPublicKeyInfo we parse.
pub const MAX_SPKI_LEN: usize = 1024;

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// A TLS private key (ECDSA P-256), kept as PKCS#8, zeroized on drop, never printed.
pub struct TlsKey {
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsKey(..)")
    }
}

impl TlsKey {
    pub fn generate() -> Result<Self> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::internal(format!("could not generate a TLS key: {e}")))?;
        Ok(TlsKey {
            pkcs8: Zeroizing::new(kp.serialize_der()),
        })
    }
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let key = TlsKey {
            pkcs8: Zeroizing::new(der.to_vec()),
        };
        key.key_pair()?;
        Ok(key)
    }
    fn key_pair(&self) -> Result<KeyPair> {
        let kp = KeyPair::try_from(self.pkcs8.as_slice())
            .map_err(|_| Error::bad_input("not a PKCS#8 TLS private key"))?;
        if !kp.is_compatible(&PKCS_ECDSA_P256_SHA256) {
            return Err(Error::bad_input("TLS key is not ECDSA P-256"));
        }
        Ok(kp)
    }
    /// The DER SubjectPublicKeyInfo (public).
    pub fn spki_der(&self) -> Result<Vec<u8>> {
        use rcgen::PublicKeyData as _;
        Ok(self.key_pair()?.subject_public_key_info())
    }
    /// PKCS#8 DER. Secret: write it only to 0600 files.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertUsage {
    Client,
    Server,
}

fn time_of(secs: u64) -> Result<time::OffsetDateTime> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::bad_input(format!("time {secs} is out of range")))
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::internal("no randomness for a certificate serial"))?;
    bytes[0] &= 0x7f; // positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

fn ca_params(trust_domain: &str, not_before: u64, not_after: u64) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sealrelay");
    dn.push(DnType::CommonName, format!("sealrelay CA {trust_domain}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time_of(not_before)?;
    params.not_after = time_of(not_after)?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Makes the self-signed CA for `trust_domain`, valid from `now` - 5 min for `days`.
pub fn make_ca(trust_domain: &str, now: u64, days: u64) -> Result<(Vec<u8>, TlsKey)> {
    let key = TlsKey::generate()?;
    let params = ca_params(
        trust_domain,
        now.saturating_sub(300),
        now.saturating_add(days.saturating_mul(DAY)),
    )?;
    let cert = params
        .self_signed(&key.key_pair()?)
        .map_err(|e| Error::internal(format!("could not make the CA certificate: {e}")))?;
    Ok((cert.der().to_vec(), key))
}

/// Issues a leaf certificate for `subject_spki_der` naming `id` in its URI SAN, signed by the CA.
#[allow(clippy::too_many_arguments)]
pub fn issue_leaf(
    ca_cert_der: &[u8],
    ca_key: &TlsKey,
    subject_spki_der: &[u8],
    id: &SpiffeId,
    extra_sans: &[String],
    usage: CertUsage,
    not_before: u64,
    not_after: u64,
) -> Result<Vec<u8>> {
    if subject_spki_der.len() > MAX_SPKI_LEN {
        return Err(Error::bad_input("TLS public key is too large"));
    }
    let subject = SubjectPublicKeyInfo::from_der(subject_spki_der).map_err(|e| {
        Error::bad_input(format!(
            "TLS public key is not a valid SubjectPublicKeyInfo: {e}"
        ))
    })?;
    let ca_kp = ca_key.key_pair()?;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_cert_der), ca_kp)
        .map_err(|e| Error::bad_input(format!("CA certificate cannot be used: {e}")))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sealrelay");
    dn.push(DnType::CommonName, id.short());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        CertUsage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        CertUsage::Server => ExtendedKeyUsagePurpose::ServerAuth,
    }];
    let uri = id
        .to_string()
        .try_into()
        .map_err(|_| Error::bad_input("SPIFFE ID is not ASCII"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for san in extra_sans {
        let entry = match san.parse::<::core::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.clone().try_into().map_err(|_| {
                Error::bad_input(format!("invalid DNS name {san:?} for the certificate"))
            })?),
        };
        params.subject_alt_names.push(entry);
    }
    params.not_before = time_of(not_before)?;
    params.not_after = time_of(not_after)?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&subject, &issuer)
        .map_err(|e| Error::internal(format!("could not issue the certificate: {e}")))?;
    Ok(cert.der().to_vec())
}

/// What we read from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The SPIFFE ID in the URI SAN (`None` for the CA).
    pub spiffe_id: Option<SpiffeId>,
    pub not_before: u64,
    pub not_after: u64,
    pub spki_der: Vec<u8>,
    pub is_ca: bool,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    if der.len() > MAX_CERT_LEN {
        return Err(Error::bad_input("certificate is too large"));
    }
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|_| Error::bad_input("not a DER X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(Error::bad_input("trailing bytes after the certificate"));
    }
    Ok(cert)
}

/// Reads the SPIFFE ID, validity and key of a certificate. A leaf must carry exactly one URI SAN
/// and it must be a valid sealrelay SPIFFE ID.
pub fn inspect(der: &[u8]) -> Result<CertInfo> {
    let cert = parse(der)?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => {
            return Err(Error::bad_input(
                "certificate has a malformed SAN extension",
            ))
        }
    };
    let is_ca = cert.is_ca();
    let spiffe_id = match (is_ca, uris.as_slice()) {
        (true, []) => None,
        (false, [one]) => Some(one.parse::<SpiffeId>()?),
        (false, []) => {
            return Err(Error::bad_input(
                "certificate carries no SPIFFE ID (URI SAN)",
            ))
        }
        _ => {
            return Err(Error::bad_input(
                "certificate must carry exactly one SPIFFE ID (URI SAN)",
            ))
        }
    };
    let ts = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(CertInfo {
        spiffe_id,
        not_before: ts(cert.validity().not_before.timestamp()),
        not_after: ts(cert.validity().not_after.timestamp()),
        spki_der: cert.public_key().raw.to_vec(),
        is_ca,
    })
}

/// The host names a certificate is valid for, in its order: its DNS names and IP addresses
/// (the names a TLS client checks the host it dialled against; not the SPIFFE ID).
pub fn host_names(der: &[u8]) -> Result<Vec<String>> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| Error::bad_input("certificate has a malformed SAN extension"))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(b) => ip_of(b).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect())
}

/// An IP address SAN's bytes (4 for IPv4, 16 for IPv6).
fn ip_of(bytes: &[u8]) -> Option<::core::net::IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(::core::net::IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(::core::net::IpAddr::from)
}

/// The names every relay certificate carries, whatever else it names.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The host names of a relay certificate: [`LOOPBACK_NAMES`] and then `extra` (each checked
/// and written as a certificate shows it, duplicates dropped).
pub fn relay_host_names(extra: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for n in extra {
        let n = host_name(n)?;
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(names)
}

/// A name for a certificate's SAN, as [`host_names`] reads it back: an IP address (in its
/// usual form), or a DNS name in lower case (a leading `*.` label allowed). A port, a scheme or
/// a path is the usual slip, and would make a certificate no client matches.
fn host_name(name: &str) -> Result<String> {
    if let Ok(ip) = name.parse::<::core::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    let label_ok = |(i, l): (usize, &str)| {
        (i == 0 && l == "*")
            || (!l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').enumerate().all(label_ok) {
        return Err(Error::bad_input(format!(
            "--san {name:?} is not a DNS name or an IP address: give the host alone (no port, scheme or path)"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// Checks that `leaf_der` is signed by `ca_der` and that the CA is a CA.
pub fn verify_issued_by(leaf_der: &[u8], ca_der: &[u8]) -> Result<()> {
    let leaf = parse(leaf_der)?;
    let ca = parse(ca_der)?;
    if !ca.is_ca() {
        return Err(Error::verification("the issuer certificate is not a CA"));
    }
    if leaf.issuer() != ca.subject() {
        return Err(Error::verification(
            "the certificate was not issued by this CA",
        ));
    }
    leaf.verify_signature(Some(ca.public_key())).map_err(|_| {
        Error::verification("the certificate's signature does not verify against the CA")
    })
}

/// Checks a party certificate against the CA, a SPIFFE ID kind, and time.
pub fn check_party_cert(
    leaf_der: &[u8],
    ca_der: &[u8],
    kind: PartyKind,
    now: u64,
) -> Result<SpiffeId> {
    verify_issued_by(leaf_der, ca_der)?;
    let info = inspect(leaf_der)?;
    let id = info
        .spiffe_id
        .ok_or_else(|| Error::bad_input("certificate carries no SPIFFE ID"))?;
    if id.kind() != kind {
        return Err(Error::bad_input(format!(
            "certificate is for a {}, expected a {kind}",
            id.kind()
        )));
    }
    if now < info.not_before {
        return Err(Error::bad_input(
            "certificate is not valid yet (check the clock)",
        ));
    }
    if now > info.not_after {
        return Err(Error::bad_input(format!(
            "certificate expired on {}: ask the admin to re-issue it",
            crate::clock::rfc3339(info.not_after)
        )));
    }
    Ok(id)
}

/// PEM text of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// PEM text of a PKCS#8 private key. Secret.
pub fn key_pem(der: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec())))
}

/// Reads one PEM block with the given tag.
pub fn from_pem(text: &[u8], tag: &str) -> Result<Vec<u8>> {
    let p = pem::parse(text).map_err(|_| Error::bad_input(format!("not a PEM {tag}")))?;
    if p.tag() != tag {
        return Err(Error::bad_input(format!(
            "PEM block is a {}, expected a {tag}",
            p.tag()
        )));
    }
    Ok(p.into_contents())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_leaf_with_spiffe_id() {
        let now = 1_800_000_000;
        let (ca, ca_key) = make_ca("example.org", now, 365).unwrap();
        let info = inspect(&ca).unwrap();
        assert!(info.is_ca);
        let leaf_key = TlsKey::generate().unwrap();
        let id = SpiffeId::new("example.org", PartyKind::User, "alice").unwrap();
        let leaf = issue_leaf(
            &ca,
            &ca_key,
            &leaf_key.spki_der().unwrap(),
            &id,
            &[],
            CertUsage::Client,
            now,
            now + 30 * DAY,
        )
        .unwrap();
        let info = inspect(&leaf).unwrap();
        assert_eq!(info.spiffe_id.as_ref(), Some(&id));
        assert_eq!(info.spki_der, leaf_key.spki_der().unwrap());
        assert_eq!(
            check_party_cert(&leaf, &ca, PartyKind::User, now + 10).unwrap(),
            id
        );
        assert!(check_party_cert(&leaf, &ca, PartyKind::Agent, now + 10).is_err());
        assert!(check_party_cert(&leaf, &ca, PartyKind::User, now + 31 * DAY).is_err());
        let (other_ca, _) = make_ca("example.org", now, 365).unwrap();
        assert!(verify_issued_by(&leaf, &other_ca).is_err());
    }

    #[test]
    fn relay_host_names_are_checked_and_written_as_a_certificate_shows_them() {
        let names = relay_host_names(&[
            "Relay.Example.TEST".to_owned(),
            "0:0:0:0:0:0:0:1".to_owned(),
            "*.example.test".to_owned(),
            "10.0.0.5".to_owned(),
        ])
        .unwrap();
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "relay.example.test",
                "*.example.test",
                "10.0.0.5"
            ]
        );
        for bad in [
            "relay.example.test:4433",
            "https://relay",
            "a..b",
            "",
            "a b",
        ] {
            let e = relay_host_names(&[bad.to_owned()]).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadInput, "{bad:?}");
        }
    }

    #[test]
    fn host_names_are_the_dns_and_ip_sans() {
        let now = 1_800_000_000;
        let (ca, ca_key) = make_ca("example.org", now, 365).unwrap();
        assert!(host_names(&ca).unwrap().is_empty());
        let key = TlsKey::generate().unwrap();
        let id = SpiffeId::new("example.org", PartyKind::Relay, "relay").unwrap();
        let names: Vec<String> = ["localhost", "127.0.0.1", "::1", "relay.example.test"]
            .map(String::from)
            .to_vec();
        let leaf = issue_leaf(
            &ca,
            &ca_key,
            &key.spki_der().unwrap(),
            &id,
            &names,
            CertUsage::Server,
            now,
            now + DAY,
        )
        .unwrap();
        assert_eq!(host_names(&leaf).unwrap(), names);
    }
}
