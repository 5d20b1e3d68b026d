//! The enrollment bundle: what the admin hands back to a party after `user add` / `agent add`
//! (its signed directory entry, client certificate, the CA, and the authority and log verifier
//! keys). Public. `keys import` checks every binding before it writes anything.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::directory::{sha256, DirectoryEntry};
use super::identity::Identity;
use super::pki;
use super::sign::{Signed, StatementType, VerifierKey};
use crate::error::{Error, Result};

/// Cap on a bundle file.
pub const MAX_BUNDLE_LEN: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub entry: Signed,
    pub cert: Vec<u8>,
    pub ca_cert: Vec<u8>,
    pub authority: VerifierKey,
    pub log_key: VerifierKey,
    pub relay: Option<String>,
    /// The trust root's waiting period for a reset key (docs/keys.md).
    pub reset_wait: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleJson {
    sealrelay_bundle: u32,
    entry: String,
    cert: String,
    ca_cert: String,
    authority: String,
    log_key: String,
    relay: Option<String>,
    /// Absent in bundles made before key transparency: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reset_wait: Option<u64>,
}

impl Bundle {
    pub fn to_json(&self) -> String {
        let j = BundleJson {
            sealrelay_bundle: 1,
            entry: self.entry.to_json().trim_end().to_owned(),
            cert: B64.encode(&self.cert),
            ca_cert: B64.encode(&self.ca_cert),
            authority: self.authority.encode(),
            log_key: self.log_key.encode(),
            relay: self.relay.clone(),
            reset_wait: Some(self.reset_wait),
        };
        let mut s = serde_json::to_string_pretty(&j).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(Error::bad_input("bundle is too large"));
        }
        let j: BundleJson = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_input(format!("not a sealrelay bundle ({e})")))?;
        if j.sealrelay_bundle != 1 {
            return Err(Error::bad_input("bundle version is not 1"));
        }
        let mut entry_line = j.entry;
        entry_line.push('\n');
        let b64 = |v: &str, what: &str| {
            B64.decode(v)
                .map_err(|_| Error::bad_input(format!("bundle field {what} is not base64")))
        };
        Ok(Bundle {
            entry: Signed::from_json(entry_line.as_bytes(), StatementType::DirectoryEntry)?,
            cert: b64(&j.cert, "cert")?,
            ca_cert: b64(&j.ca_cert, "ca_cert")?,
            authority: VerifierKey::parse(&j.authority)?,
            log_key: VerifierKey::parse(&j.log_key)?,
            relay: j.relay,
            reset_wait: j
                .reset_wait
                .unwrap_or(crate::core::keylog::DEFAULT_RESET_WAIT),
        })
    }

    /// Checks the bundle against the identity and, if everything binds, stores it there.
    /// Nothing in `identity` changes on error.
    pub fn import_into(&self, identity: &mut Identity, now: u64) -> Result<DirectoryEntry> {
        if let Some(pinned) = &identity.authority {
            if pinned.key != self.authority.key {
                return Err(Error::verification(
                    "the bundle's authority key differs from the one this identity already trusts; refusing to re-pin",
                ));
            }
        }
        let entry = DirectoryEntry::verify(&self.entry, &self.authority.key)?;
        if entry.id.kind() != identity.kind || entry.id.name() != identity.name {
            return Err(Error::bad_input(format!(
                "the bundle is for {}, not for {} {}",
                entry.id.short(),
                identity.kind,
                identity.name
            )));
        }
        if entry.signing_key != identity.signing_key.public() {
            return Err(Error::verification(
                "the bundle's entry names a different signing key than this identity holds",
            ));
        }
        let our_recipient = identity
            .age_identity
            .as_ref()
            .map(|i| i.to_public().to_string());
        if entry.age_recipient != our_recipient {
            return Err(Error::verification(
                "the bundle's entry names a different age recipient than this identity holds",
            ));
        }
        let spki = identity.tls_key.spki_der()?;
        if entry.tls_spki_sha256 != sha256(&spki) {
            return Err(Error::verification(
                "the bundle's entry names a different TLS key than this identity holds",
            ));
        }
        let cert_id = pki::check_party_cert(&self.cert, &self.ca_cert, identity.kind, now)?;
        if cert_id != entry.id {
            return Err(Error::verification(
                "the certificate names a different SPIFFE ID than the entry",
            ));
        }
        if pki::inspect(&self.cert)?.spki_der != spki {
            return Err(Error::verification(
                "the certificate is for a different TLS key than this identity holds",
            ));
        }
        identity.id = Some(entry.id.clone());
        identity.cert = Some(self.cert.clone());
        identity.ca_cert = Some(self.ca_cert.clone());
        identity.authority = Some(self.authority.clone());
        identity.log_key = Some(self.log_key.clone());
        // A waiting period once pinned only grows: a new bundle cannot shorten it.
        identity.reset_wait = Some(
            identity
                .reset_wait
                .map_or(self.reset_wait, |w| w.max(self.reset_wait)),
        );
        identity.entry = Some(self.entry.clone());
        if self.relay.is_some() {
            identity.relay = self.relay.clone();
        }
        Ok(entry)
    }
}
