//! The trust root on the admin's machine (`keys/` by default), made by `keys init`:
//!
//! | file | what | mode |
//! |---|---|---|
//! | `root.json` | trust domain, names, log origin | 0644 |
//! | `authority.key` / `authority.pub` | Ed25519 key that signs directory entries | 0600 / 0644 |
//! | `ca.key` / `ca.crt` | the mutual-TLS CA (ECDSA P-256) | 0600 / 0644 |
//! | `relay.key` / `relay.crt` | the relay's server certificate | 0600 / 0644 |
//! | `log.key` / `log.pub` | the relay's transparency-log signing key | 0600 / 0644 |
//! | `admin.id` | the admin's identity (client certificate) | 0600 |
//! | `directory/` | signed entries and revocations ([`super::dirstore`]) | 0700 |

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fs::{
    ensure_dir, exists, read_capped, read_private, write_atomic, PRIVATE_MODE, PUBLIC_MODE,
};
use crate::core::bundle::Bundle;
use crate::core::identity::Identity;
use crate::core::pki::{self, CertUsage, TlsKey, DAY};
use crate::core::sign::{SigningKey, VerifierKey};
use crate::error::{Error, Result};
use crate::ids::{validate_name, validate_trust_domain, PartyKind, SpiffeId};

const MAX_KEY_FILE: usize = 16 * 1024;

/// Public facts about the trust root (`root.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootMeta {
    pub trust_domain: String,
    pub relay_name: String,
    pub admin_name: String,
    pub log_origin: String,
    pub created: u64,
    /// Seconds a reset key (one its party's previous key did not sign) waits before it is in
    /// force; pinned by every client at import (docs/keys.md).
    #[serde(default = "default_reset_wait")]
    pub reset_wait: u64,
}

fn default_reset_wait() -> u64 {
    crate::core::keylog::DEFAULT_RESET_WAIT
}

/// Options for `keys init`.
pub struct InitOptions {
    pub trust_domain: String,
    pub relay_name: String,
    pub admin_name: String,
    /// Extra DNS names / IPs for the relay certificate (localhost and loopback are always in).
    pub relay_sans: Vec<String>,
    pub force: bool,
    /// Seconds a reset key waits (docs/keys.md).
    pub reset_wait: u64,
    pub ca_days: u64,
    pub relay_days: u64,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            trust_domain: "sealrelay.local".into(),
            relay_name: "relay".into(),
            admin_name: "admin".into(),
            relay_sans: Vec::new(),
            force: false,
            reset_wait: crate::core::keylog::DEFAULT_RESET_WAIT,
            ca_days: 3650,
            relay_days: 365,
        }
    }
}

/// The loaded trust root (admin side): the keys admin commands sign with.
pub struct TrustRoot {
    pub dir: PathBuf,
    pub meta: RootMeta,
    pub authority: SigningKey,
    pub ca_cert: Vec<u8>,
    pub ca_key: TlsKey,
    pub log_public: VerifierKey,
}

pub fn authority_key_name(trust_domain: &str) -> String {
    format!("{trust_domain}/sealrelay/authority")
}

pub fn log_origin(trust_domain: &str) -> String {
    format!("{trust_domain}/sealrelay/log")
}

/// Makes a new trust root in `dir`. Refuses to replace an existing one unless `force`; with
/// `force` the old `directory/` is moved aside (its entries were signed by the old authority).
pub fn init(dir: &Path, opts: &InitOptions, now: u64) -> Result<RootMeta> {
    validate_trust_domain(&opts.trust_domain)?;
    validate_name(&opts.relay_name)?;
    validate_name(&opts.admin_name)?;
    if exists(&dir.join("authority.key")) && !opts.force {
        return Err(Error::conflict(format!(
            "a trust root already exists in {} (authority.key): use --force to replace it, which invalidates every certificate and entry it issued",
            dir.display()
        )));
    }
    // Everything is generated before anything is written.
    let authority = SigningKey::generate()?;
    let log_key = SigningKey::generate()?;
    let (ca_cert, ca_key) = pki::make_ca(&opts.trust_domain, now, opts.ca_days)?;
    let relay_key = TlsKey::generate()?;
    let relay_id = SpiffeId::new(&opts.trust_domain, PartyKind::Relay, &opts.relay_name)?;
    let sans = pki::relay_host_names(&opts.relay_sans)?;
    let relay_cert = pki::issue_leaf(
        &ca_cert,
        &ca_key,
        &relay_key.spki_der()?,
        &relay_id,
        &sans,
        CertUsage::Server,
        now.saturating_sub(300),
        now.saturating_add(opts.relay_days.saturating_mul(DAY)),
    )?;
    let meta = RootMeta {
        trust_domain: opts.trust_domain.clone(),
        relay_name: opts.relay_name.clone(),
        admin_name: opts.admin_name.clone(),
        log_origin: log_origin(&opts.trust_domain),
        reset_wait: opts.reset_wait,
        created: now,
    };
    let authority_vk =
        VerifierKey::new(&authority_key_name(&opts.trust_domain), authority.public())?;
    let log_vk = VerifierKey::new(&meta.log_origin, log_key.public())?;

    // The admin's own identity: a client certificate for spiffe://<td>/admin/<name>.
    let mut admin = Identity::generate(PartyKind::Admin, &opts.admin_name)?;
    let admin_id = SpiffeId::new(&opts.trust_domain, PartyKind::Admin, &opts.admin_name)?;
    let admin_cert = pki::issue_leaf(
        &ca_cert,
        &ca_key,
        &admin.tls_key.spki_der()?,
        &admin_id,
        &[],
        CertUsage::Client,
        now.saturating_sub(300),
        now.saturating_add(opts.relay_days.saturating_mul(DAY)),
    )?;
    // The admin is a directory entry too (pinned to its TLS key, revocable, rotated like a
    // user): a CA-issued admin certificate alone is not enough for the relay.
    let admin_entry = admin_entry(
        &admin,
        &admin_id,
        now.saturating_sub(300),
        now.saturating_add(opts.relay_days.saturating_mul(DAY)),
    )?
    .sign(&authority)?;
    admin.entry = Some(admin_entry.clone());
    admin.id = Some(admin_id);
    admin.cert = Some(admin_cert);
    admin.ca_cert = Some(ca_cert.clone());
    admin.authority = Some(authority_vk.clone());
    admin.log_key = Some(log_vk.clone());

    ensure_dir(dir, 0o700)?;
    let directory = dir.join("directory");
    if opts.force && exists(&directory) {
        let aside = dir.join(format!("directory.replaced-{now}"));
        std::fs::rename(&directory, &aside)
            .map_err(|e| Error::io(format!("cannot move the old directory aside: {e}")))?;
    }
    ensure_dir(&directory, 0o700)?;
    let ow = opts.force;
    let entry_path = crate::local::dirpaths::entry_path(&directory, &admin_entry_id(&meta)?, 1);
    if let Some(parent) = entry_path.parent() {
        ensure_dir(parent, 0o700)?;
    }
    write_atomic(
        &entry_path,
        admin_entry.to_json().as_bytes(),
        PUBLIC_MODE,
        ow,
    )?;
    let meta_json = serde_json::to_string_pretty(&meta)
        .map_err(|e| Error::internal(format!("cannot encode root.json: {e}")))?;
    // Private files first, root.json last: a root without root.json is not loadable.
    write_atomic(
        &dir.join("authority.key"),
        pki::key_pem(authority.pkcs8()).as_bytes(),
        PRIVATE_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("log.key"),
        pki::key_pem(log_key.pkcs8()).as_bytes(),
        PRIVATE_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("ca.key"),
        pki::key_pem(ca_key.pkcs8()).as_bytes(),
        PRIVATE_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("relay.key"),
        pki::key_pem(relay_key.pkcs8()).as_bytes(),
        PRIVATE_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("admin.id"),
        admin.to_text().as_bytes(),
        PRIVATE_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("authority.pub"),
        format!("{}\n", authority_vk.encode()).as_bytes(),
        PUBLIC_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("log.pub"),
        format!("{}\n", log_vk.encode()).as_bytes(),
        PUBLIC_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("ca.crt"),
        pki::cert_pem(&ca_cert).as_bytes(),
        PUBLIC_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("relay.crt"),
        pki::cert_pem(&relay_cert).as_bytes(),
        PUBLIC_MODE,
        ow,
    )?;
    write_atomic(
        &dir.join("root.json"),
        format!("{meta_json}\n").as_bytes(),
        PUBLIC_MODE,
        ow,
    )?;
    Ok(meta)
}

/// Options for `keys reissue-relay`.
pub struct ReissueOptions {
    /// The DNS names / IPs the new certificate names besides [`pki::LOOPBACK_NAMES`]. Empty: the
    /// current certificate's names are kept (a renewal).
    pub sans: Vec<String>,
    /// Days the new certificate is valid (it may not outlive the CA).
    pub days: u64,
    /// Certify the existing `relay.key` instead of a new key.
    pub keep_key: bool,
}

/// What `keys reissue-relay` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reissued {
    /// The relay's SPIFFE ID (unchanged).
    pub id: SpiffeId,
    /// Every DNS name and IP address the new certificate names.
    pub names: Vec<String>,
    /// Names the previous certificate carried that the new one does not.
    pub dropped: Vec<String>,
    pub not_after: u64,
    /// Whether `relay.key` is a new key.
    pub new_key: bool,
}

/// Signs a new relay certificate (`relay.crt`) with the CA in `dir`, for a new `relay.key`
/// unless `keep_key`. Nothing else in `dir` changes: the CA, the authority, the log keys and
/// every entry and certificate issued stay valid, because clients trust the CA and check the
/// relay's SPIFFE ID, never the relay's own key or certificate. A running relay serves the old
/// certificate until it is restarted.
///
/// A new key is the default because reissuing is usually a move to another host or name: with a
/// fresh key, a copy of the old one left behind (on the old host, in a backup, in an image)
/// cannot serve under the new names. The old certificate cannot be revoked, so with the old key
/// it stays usable until it expires, but only for the names it carried. `keep_key` suits a key
/// that cannot be replaced (held by other tooling).
///
/// Everything is made and checked before anything is written; each file is replaced atomically
/// (the new key first, then the certificate; if the certificate cannot be written the old key
/// is put back, so the pair on disk always matches).
pub fn reissue_relay(dir: &Path, opts: &ReissueOptions, now: u64) -> Result<Reissued> {
    let meta = read_meta(dir)?;
    let ca_cert = read_cert_pem(&dir.join("ca.crt"))?;
    let ca_key =
        TlsKey::from_pkcs8(&read_key_pem(&dir.join("ca.key"))?).map_err(|e| e.context("ca.key"))?;
    let ca = pki::inspect(&ca_cert)?;
    if ca.spki_der != ca_key.spki_der()? {
        return Err(Error::verification(
            "ca.crt does not match ca.key: the trust root is inconsistent",
        ));
    }
    if opts.days == 0 {
        return Err(Error::bad_input("--validity must be at least 1 day"));
    }
    if ca.not_after <= now {
        return Err(Error::bad_input(format!(
            "the CA in {} expired on {}: it can issue nothing more; make a new trust root (`sealrelay keys init --force`)",
            dir.display(),
            crate::clock::rfc3339(ca.not_after)
        )));
    }
    let not_after = now.saturating_add(opts.days.saturating_mul(DAY));
    if not_after > ca.not_after {
        return Err(Error::bad_input(format!(
            "the CA expires on {}, and a relay certificate may not outlive it: choose --validity {} or fewer",
            crate::clock::rfc3339(ca.not_after),
            (ca.not_after - now) / DAY
        )));
    }
    let crt_path = dir.join("relay.crt");
    let key_path = dir.join("relay.key");
    let old_names = read_cert_pem(&crt_path).and_then(|c| pki::host_names(&c));
    let old_names = match old_names {
        Ok(names) => Some(names),
        // With --san the old names only tell what is dropped: a lost certificate is no reason
        // not to make a new one.
        Err(_) if !opts.sans.is_empty() => None,
        Err(e) => return Err(e.context("cannot keep the relay certificate's names (give --san)")),
    };
    let extra: Vec<String> = if opts.sans.is_empty() {
        old_names.clone().unwrap_or_default()
    } else {
        opts.sans.clone()
    };
    let names = pki::relay_host_names(&extra)?;
    let dropped: Vec<String> = old_names
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    let relay_key = if opts.keep_key {
        TlsKey::from_pkcs8(&read_key_pem(&key_path)?).map_err(|e| e.context("relay.key"))?
    } else {
        TlsKey::generate()?
    };
    let id = SpiffeId::new(&meta.trust_domain, PartyKind::Relay, &meta.relay_name)?;
    let cert = pki::issue_leaf(
        &ca_cert,
        &ca_key,
        &relay_key.spki_der()?,
        &id,
        &names,
        CertUsage::Server,
        now.saturating_sub(300),
        not_after,
    )?;
    // What is written is what a client will check: issued by this CA, for the relay's ID, for
    // this key, naming these hosts.
    pki::verify_issued_by(&cert, &ca_cert)?;
    let info = pki::inspect(&cert)?;
    if info.spiffe_id.as_ref() != Some(&id)
        || info.spki_der != relay_key.spki_der()?
        || pki::host_names(&cert)? != names
    {
        return Err(Error::internal(
            "the new relay certificate is not what was asked for; nothing was written",
        ));
    }
    let cert_pem = pki::cert_pem(&cert);
    if opts.keep_key {
        write_atomic(&crt_path, cert_pem.as_bytes(), PUBLIC_MODE, true)?;
    } else {
        let old_key = read_private(&key_path, MAX_KEY_FILE).ok();
        write_atomic(
            &key_path,
            pki::key_pem(relay_key.pkcs8()).as_bytes(),
            PRIVATE_MODE,
            true,
        )?;
        if let Err(e) = write_atomic(&crt_path, cert_pem.as_bytes(), PUBLIC_MODE, true) {
            if let Some(old) = old_key {
                let _ = write_atomic(&key_path, old.as_slice(), PRIVATE_MODE, true);
            }
            return Err(e);
        }
    }
    Ok(Reissued {
        id,
        names,
        dropped,
        not_after: info.not_after,
        new_key: !opts.keep_key,
    })
}

/// Reads a PKCS#8 PEM private key file (mode-checked).
pub fn read_key_pem(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let text = read_private(path, MAX_KEY_FILE)?;
    pki::from_pem(&text, "PRIVATE KEY")
        .map(zeroize::Zeroizing::new)
        .map_err(|e| e.context(path.display()))
}

/// Reads a PEM certificate file.
pub fn read_cert_pem(path: &Path) -> Result<Vec<u8>> {
    let text = read_capped(path, MAX_KEY_FILE)?;
    pki::from_pem(&text, "CERTIFICATE").map_err(|e| e.context(path.display()))
}

/// Reads a verifier key file (`authority.pub`, `log.pub`).
pub fn read_verifier_key(path: &Path) -> Result<VerifierKey> {
    let text = read_capped(path, MAX_KEY_FILE)?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| Error::bad_input(format!("{} is not text", path.display())))?;
    VerifierKey::parse(text.trim_end()).map_err(|e| e.context(path.display()))
}

/// Reads `root.json`.
pub fn read_meta(dir: &Path) -> Result<RootMeta> {
    let path = dir.join("root.json");
    let bytes = read_capped(&path, MAX_KEY_FILE).map_err(|e| {
        if e.kind() == crate::ErrorKind::NotFound {
            Error::not_found(format!(
                "no trust root in {}: run `sealrelay keys init --dir {}` first",
                dir.display(),
                dir.display()
            ))
        } else {
            e
        }
    })?;
    let meta: RootMeta = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_input(format!("{} is corrupt: {e}", path.display())))?;
    validate_trust_domain(&meta.trust_domain)?;
    Ok(meta)
}

fn admin_entry_id(meta: &RootMeta) -> Result<SpiffeId> {
    SpiffeId::new(&meta.trust_domain, PartyKind::Admin, &meta.admin_name)
}

/// The directory entry of an admin identity: its signing key and TLS key, nothing else.
fn admin_entry(
    admin: &Identity,
    id: &SpiffeId,
    not_before: u64,
    not_after: u64,
) -> Result<crate::core::directory::DirectoryEntry> {
    Ok(crate::core::directory::DirectoryEntry {
        id: id.clone(),
        age_recipient: None,
        signing_key: admin.signing_key.public(),
        tls_spki_sha256: crate::core::directory::sha256(&admin.tls_key.spki_der()?),
        attributes: Default::default(),
        serial: 1,
        not_before,
        not_after,
        enrolled_by: String::new(),
        rotation: None,
    })
}

impl TrustRoot {
    /// A trust root made before admins were directory entries has none for its admin: this
    /// signs one (from `admin.id` and its certificate's validity) and stores it, so that the
    /// next push or relay start carries it. Does nothing when the entry exists.
    pub fn ensure_admin_entry(&self) -> Result<bool> {
        let id = admin_entry_id(&self.meta)?;
        let path = crate::local::dirpaths::entry_path(&self.directory_dir(), &id, 1);
        if exists(&path) {
            return Ok(false);
        }
        let admin =
            crate::local::identity_file::load(&self.dir.join("admin.id"), Some(PartyKind::Admin))?;
        let cert = admin
            .cert
            .as_ref()
            .ok_or_else(|| Error::bad_input("admin.id holds no certificate"))?;
        let info = pki::inspect(cert)?;
        let signed =
            admin_entry(&admin, &id, info.not_before, info.not_after)?.sign(&self.authority)?;
        if let Some(parent) = path.parent() {
            ensure_dir(parent, 0o700)?;
        }
        write_atomic(&path, signed.to_json().as_bytes(), PUBLIC_MODE, false)?;
        Ok(true)
    }

    /// Loads what admin commands need.
    pub fn load(dir: &Path) -> Result<Self> {
        let meta = read_meta(dir)?;
        let authority = SigningKey::from_pkcs8(&read_key_pem(&dir.join("authority.key"))?)
            .map_err(|e| e.context("authority.key"))?;
        let authority_pub = read_verifier_key(&dir.join("authority.pub"))?;
        if authority_pub.key != authority.public() {
            return Err(Error::verification(
                "authority.pub does not match authority.key: the trust root is inconsistent",
            ));
        }
        let ca_cert = read_cert_pem(&dir.join("ca.crt"))?;
        let ca_key = TlsKey::from_pkcs8(&read_key_pem(&dir.join("ca.key"))?)
            .map_err(|e| e.context("ca.key"))?;
        if pki::inspect(&ca_cert)?.spki_der != ca_key.spki_der()? {
            return Err(Error::verification(
                "ca.crt does not match ca.key: the trust root is inconsistent",
            ));
        }
        let log_public = read_verifier_key(&dir.join("log.pub"))?;
        let root = TrustRoot {
            dir: dir.to_path_buf(),
            meta,
            authority,
            ca_cert,
            ca_key,
            log_public,
        };
        root.ensure_admin_entry()?;
        Ok(root)
    }

    pub fn authority_vk(&self) -> Result<VerifierKey> {
        VerifierKey::new(
            &authority_key_name(&self.meta.trust_domain),
            self.authority.public(),
        )
    }

    pub fn directory_dir(&self) -> PathBuf {
        self.dir.join("directory")
    }

    /// A bundle for an issued entry and certificate.
    pub fn bundle(
        &self,
        entry: crate::core::sign::Signed,
        cert: Vec<u8>,
        relay: Option<String>,
    ) -> Result<Bundle> {
        Ok(Bundle {
            entry,
            cert,
            ca_cert: self.ca_cert.clone(),
            authority: self.authority_vk()?,
            log_key: self.log_public.clone(),
            relay,
            reset_wait: self.meta.reset_wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reissue_relay_changes_the_relay_certificate_alone() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("keys");
        let now = crate::clock::now();
        let sans = vec!["old.example.test".to_owned()];
        let opts = InitOptions {
            relay_sans: sans.clone(),
            ..InitOptions::default()
        };
        init(&dir, &opts, now).unwrap();
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let kept = ["ca.crt", "ca.key", "authority.key", "log.key", "admin.id"];
        let before = kept.map(read);
        let mut ask = ReissueOptions {
            sans: vec!["example.test".to_owned()],
            days: 30,
            keep_key: false,
        };
        let r = reissue_relay(&dir, &ask, now).unwrap();
        assert_eq!(r.names, ["localhost", "127.0.0.1", "::1", "example.test"]);
        assert_eq!(r.dropped, sans);
        let cert = read_cert_pem(&dir.join("relay.crt")).unwrap();
        let ca = read_cert_pem(&dir.join("ca.crt")).unwrap();
        pki::check_party_cert(&cert, &ca, PartyKind::Relay, now).unwrap();
        let key = TlsKey::from_pkcs8(&read_key_pem(&dir.join("relay.key")).unwrap()).unwrap();
        assert_eq!(
            pki::inspect(&cert).unwrap().spki_der,
            key.spki_der().unwrap()
        );
        assert!(kept.map(read) == before, "more than relay.* changed");
        // A renewal keeps the names; keep_key the key; a refusal writes nothing.
        ask.sans.clear();
        ask.keep_key = true;
        let key = read("relay.key");
        let r = reissue_relay(&dir, &ask, now).unwrap();
        assert!(r.dropped.is_empty() && r.names.contains(&"example.test".to_owned()));
        assert_eq!(read("relay.key"), key);
        let crt = read("relay.crt");
        ask.days = 99_999;
        assert!(reissue_relay(&dir, &ask, now).is_err());
        assert_eq!(read("relay.crt"), crt);
    }
}
