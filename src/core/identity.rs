//! The identity file: a party's private keys plus what it trusts, in one text file that is also
//! a valid age identity file (every sealrelay field is a `#` comment line, and a user's age key
//! is the one non-comment line), so `age -d -i alice.id` works with stock tools.
//!
//! ```text
//! # sealrelay identity: PRIVATE. Keep it mode 0600, on this machine only.
//! # sealrelay-version: 1
//! # sealrelay-kind: user
//! # sealrelay-name: alice
//! # sealrelay-signing-key: <base64 PKCS#8 Ed25519>
//! # sealrelay-tls-key: <base64 PKCS#8 ECDSA P-256>
//! # sealrelay-id: spiffe://example.org/user/alice        (after import)
//! # sealrelay-cert: <base64 DER>                          (after import)
//! # sealrelay-ca-cert: <base64 DER>                       (after import)
//! # sealrelay-authority: <verifier key>                   (after import)
//! # sealrelay-log-key: <verifier key>                     (after import)
//! # sealrelay-entry: <base64 statement>.<base64 signature> (after import)
//! # sealrelay-relay: 127.0.0.1:4433                       (optional)
//! <the age X25519 secret key line>                      (users)
//! ```
//!
//! Parsing is strict: unknown or repeated `sealrelay-` fields and stray lines are errors. A file
//! with no `sealrelay-` fields is read as a plain age identity file.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::directory::EnrollmentRequest;
use super::pki::TlsKey;
use super::sign::{Signed, SigningKey, StatementType, VerifierKey};
use crate::error::{Error, Result};
use crate::ids::{validate_name, PartyKind, SpiffeId};

/// Cap on an identity file.
pub const MAX_IDENTITY_FILE_LEN: usize = 64 * 1024;

const HEADER: &str = "# sealrelay identity: PRIVATE. Keep it mode 0600, on this machine only.";
const FIELD_PREFIX: &str = "# sealrelay-";
/// How an age X25519 secret key line starts. Spelled in two pieces so secret scanners that look
/// for the literal prefix in tracked files do not mistake this format constant for a key.
const AGE_SECRET_KEY_PREFIX: &str = concat!("AGE-SECRET-", "KEY-1");
const AGE_PQ_PREFIX: &str = crate::core::envelope::keys::PQ_SECRET_PREFIX;

/// A party's identity: private keys and trust anchors.
pub struct Identity {
    pub kind: PartyKind,
    pub name: String,
    pub signing_key: SigningKey,
    pub tls_key: TlsKey,
    /// Users' age key: the post-quantum hybrid by default, X25519 for older age clients.
    pub age_identity: Option<crate::core::envelope::keys::AgeIdentity>,
    pub id: Option<SpiffeId>,
    pub cert: Option<Vec<u8>>,
    pub ca_cert: Option<Vec<u8>>,
    pub authority: Option<VerifierKey>,
    pub log_key: Option<VerifierKey>,
    /// The trust root's waiting period for a reset key, pinned at import (docs/keys.md).
    pub reset_wait: Option<u64>,
    pub entry: Option<Signed>,
    pub relay: Option<String>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What an identity file turned out to be.
pub enum IdentityFile {
    Sealrelay(Box<Identity>),
    /// A plain age identity file (`age-keygen` output): hybrid or X25519 identities.
    PlainAge(Vec<crate::core::envelope::keys::AgeIdentity>),
}

impl Identity {
    /// This identity's own directory entry (from the bundle it imported), verified against the
    /// authority it pins and checked to name its own signing key.
    pub fn own_entry(&self) -> Result<super::directory::DirectoryEntry> {
        let (Some(signed), Some(authority)) = (&self.entry, &self.authority) else {
            return Err(Error::bad_input(
                "this identity is not enrolled yet: import the bundle the admin issued with `sealrelay keys import`",
            ));
        };
        let entry = super::directory::DirectoryEntry::verify(signed, &authority.key)
            .map_err(|e| e.context("the identity's directory entry"))?;
        if entry.signing_key != self.signing_key.public() {
            return Err(Error::bad_input(
                "the identity's directory entry names another signing key than the identity's own: import this identity's own bundle",
            ));
        }
        Ok(entry)
    }

    /// New keys for a party (run on the party's own machine); a user's age key is the
    /// post-quantum hybrid.
    pub fn generate(kind: PartyKind, name: &str) -> Result<Self> {
        Self::generate_with(kind, name, false)
    }

    /// [`Identity::generate`], with an X25519 age key instead when `x25519_only` (for users
    /// whose age clients predate the hybrid type).
    pub fn generate_with(kind: PartyKind, name: &str, x25519_only: bool) -> Result<Self> {
        validate_name(name)?;
        if !matches!(
            kind,
            PartyKind::User | PartyKind::Agent | PartyKind::Admin | PartyKind::Source
        ) {
            return Err(Error::bad_input(
                "identities are for users, agents, sources and admins",
            ));
        }
        Ok(Identity {
            kind,
            name: name.to_owned(),
            signing_key: SigningKey::generate()?,
            tls_key: TlsKey::generate()?,
            age_identity: match kind {
                PartyKind::User => Some(
                    crate::core::envelope::keys::AgeIdentity::generate(x25519_only)
                        .map_err(Error::internal)?,
                ),
                _ => None,
            },
            id: None,
            cert: None,
            ca_cert: None,
            authority: None,
            log_key: None,
            reset_wait: None,
            entry: None,
            relay: None,
        })
    }

    /// The public enrollment request, signed with the new signing key.
    pub fn enrollment_request(&self, now: u64) -> Result<Signed> {
        let req = EnrollmentRequest {
            kind: self.kind,
            name: self.name.clone(),
            age_recipient: self
                .age_identity
                .as_ref()
                .map(|i| i.to_public().to_string()),
            signing_key: self.signing_key.public(),
            tls_spki: self.tls_key.spki_der()?,
            created: now,
        };
        req.sign(&self.signing_key)
    }

    /// The text form. Secret: write only to 0600 files.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        let mut field = |name: &str, value: &str| {
            out.push_str(FIELD_PREFIX);
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push('\n');
        };
        field("version", "1");
        field("kind", self.kind.as_str());
        field("name", &self.name);
        field(
            "signing-key",
            &Zeroizing::new(B64.encode(self.signing_key.pkcs8())),
        );
        field("tls-key", &Zeroizing::new(B64.encode(self.tls_key.pkcs8())));
        if let Some(id) = &self.id {
            field("id", &id.to_string());
        }
        if let Some(c) = &self.cert {
            field("cert", &B64.encode(c));
        }
        if let Some(c) = &self.ca_cert {
            field("ca-cert", &B64.encode(c));
        }
        if let Some(k) = &self.authority {
            field("authority", &k.encode());
        }
        if let Some(k) = &self.log_key {
            field("log-key", &k.encode());
        }
        if let Some(w) = self.reset_wait {
            field("reset-wait", &w.to_string());
        }
        if let Some(e) = &self.entry {
            field(
                "entry",
                &format!("{}.{}", B64.encode(&e.statement), B64.encode(e.signature)),
            );
        }
        if let Some(r) = &self.relay {
            field("relay", r);
        }
        let mut text = Zeroizing::new(format!("{HEADER}\n"));
        text.push_str(&out);
        if let Some(age_id) = &self.age_identity {
            text.push_str(&age_id.to_secret_string());
            text.push('\n');
        }
        text
    }

    /// Requires a sealrelay identity of `kind`.
    pub fn require_kind(&self, kind: PartyKind) -> Result<()> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(Error::bad_input(format!(
                "this is the identity of {} {}, but the command needs a {kind} identity",
                self.kind, self.name
            )))
        }
    }
}

fn decode_b64(value: &str, what: &str) -> Result<Vec<u8>> {
    B64.decode(value)
        .map_err(|_| Error::bad_input(format!("field {what} is not canonical base64")))
}

/// Parses an identity file (sealrelay or plain age).
pub fn parse_identity_file(text: &[u8]) -> Result<IdentityFile> {
    if text.len() > MAX_IDENTITY_FILE_LEN {
        return Err(Error::bad_input(
            "identity file is too large to be an identity",
        ));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| Error::bad_input("identity file is not UTF-8 text"))?;
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut age_keys: Vec<crate::core::envelope::keys::AgeIdentity> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(FIELD_PREFIX) {
            let (name, value) = rest
                .split_once(": ")
                .ok_or_else(|| Error::bad_input("identity file has a malformed sealrelay- line"))?;
            if fields.iter().any(|(n, _)| *n == name) {
                return Err(Error::bad_input(format!(
                    "identity file repeats the field {name}"
                )));
            }
            fields.push((name, value));
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else if line.starts_with(AGE_SECRET_KEY_PREFIX) || line.starts_with(AGE_PQ_PREFIX) {
            let id = crate::core::envelope::keys::AgeIdentity::parse(line).map_err(|_| {
                Error::bad_input("identity file holds a malformed AGE-SECRET-KEY line")
            })?;
            age_keys.push(id);
        } else if line.starts_with("AGE-") {
            return Err(Error::bad_input(
                "identity file holds an age key type sealrelay does not support (only hybrid and X25519 age secret keys)",
            ));
        } else {
            return Err(Error::bad_input(
                "not an identity file: it has lines that are neither comments nor age secret keys",
            ));
        }
    }
    if fields.is_empty() {
        if age_keys.is_empty() {
            return Err(Error::bad_input("identity file holds no identity"));
        }
        return Ok(IdentityFile::PlainAge(age_keys));
    }
    let get = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    const KNOWN: [&str; 14] = [
        "version",
        "kind",
        "name",
        "signing-key",
        "tls-key",
        "id",
        "cert",
        "ca-cert",
        "authority",
        "log-key",
        "reset-wait",
        "entry",
        "relay",
        "comment",
    ];
    if let Some((unknown, _)) = fields.iter().find(|(n, _)| !KNOWN.contains(n)) {
        return Err(Error::bad_input(format!(
            "identity file has an unknown field {unknown:?} (made by a newer sealrelay?)"
        )));
    }
    if get("version") != Some("1") {
        return Err(Error::bad_input("identity file is not version 1"));
    }
    let need = |name: &str| {
        get(name).ok_or_else(|| Error::bad_input(format!("identity file lacks the field {name}")))
    };
    let kind: PartyKind = need("kind")?.parse()?;
    let name = need("name")?.to_owned();
    validate_name(&name)?;
    let signing_key = SigningKey::from_pkcs8(&Zeroizing::new(decode_b64(
        need("signing-key")?,
        "signing-key",
    )?))
    .map_err(|e| e.context("field signing-key"))?;
    let tls_key = TlsKey::from_pkcs8(&Zeroizing::new(decode_b64(need("tls-key")?, "tls-key")?))
        .map_err(|e| e.context("field tls-key"))?;
    let age_identity = match (kind, age_keys.len()) {
        (PartyKind::User, 1) => age_keys.pop(),
        (PartyKind::User, _) => {
            return Err(Error::bad_input(
                "a user identity holds exactly one age secret key line",
            ))
        }
        (_, 0) => None,
        (_, _) => {
            return Err(Error::bad_input(format!(
                "a {kind} identity holds no age key"
            )))
        }
    };
    let id = get("id").map(SpiffeId::from_str).transpose()?;
    if let Some(id) = &id {
        if id.kind() != kind || id.name() != name {
            return Err(Error::bad_input(
                "identity file's id does not match its kind and name",
            ));
        }
    }
    let entry = match get("entry") {
        None => None,
        Some(v) => {
            let (st, sig) = v
                .split_once('.')
                .ok_or_else(|| Error::bad_input("field entry is malformed"))?;
            let signature: [u8; 64] = decode_b64(sig, "entry")?
                .try_into()
                .map_err(|_| Error::bad_input("field entry has a bad signature length"))?;
            Some(Signed {
                ty: StatementType::DirectoryEntry,
                statement: decode_b64(st, "entry")?,
                signature,
            })
        }
    };
    Ok(IdentityFile::Sealrelay(Box::new(Identity {
        kind,
        name,
        signing_key,
        tls_key,
        age_identity,
        id,
        cert: get("cert").map(|v| decode_b64(v, "cert")).transpose()?,
        ca_cert: get("ca-cert")
            .map(|v| decode_b64(v, "ca-cert"))
            .transpose()?,
        authority: get("authority").map(VerifierKey::parse).transpose()?,
        log_key: get("log-key").map(VerifierKey::parse).transpose()?,
        reset_wait: get("reset-wait")
            .map(|v| {
                crate::core::tlog::checkpoint::parse_decimal(v)
                    .ok_or_else(|| Error::bad_input("the identity's reset-wait is not a number"))
            })
            .transpose()?,
        entry,
        relay: get("relay").map(str::to_owned),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret as _;

    #[test]
    fn round_trip_user_identity() {
        let id = Identity::generate(PartyKind::User, "alice").unwrap();
        let text = id.to_text();
        let IdentityFile::Sealrelay(back) = parse_identity_file(text.as_bytes()).unwrap() else {
            panic!("parsed as plain age");
        };
        assert_eq!(back.kind, PartyKind::User);
        assert_eq!(back.signing_key.public(), id.signing_key.public());
        assert_eq!(
            back.tls_key.spki_der().unwrap(),
            id.tls_key.spki_der().unwrap()
        );
        assert_eq!(
            back.age_identity.as_ref().unwrap().to_public().to_string(),
            id.age_identity.as_ref().unwrap().to_public().to_string()
        );
        assert_eq!(back.to_text(), text);
    }

    #[test]
    fn plain_age_and_rejections() {
        let age_id = age::x25519::Identity::generate();
        let plain = format!("# created: now\n{}\n", age_id.to_string().expose_secret());
        assert!(matches!(
            parse_identity_file(plain.as_bytes()).unwrap(),
            IdentityFile::PlainAge(v) if v.len() == 1
        ));
        assert!(parse_identity_file(b"hello\n").is_err());
        assert!(parse_identity_file(b"# just a comment\n").is_err());
        let agent = Identity::generate(PartyKind::Agent, "bot")
            .unwrap()
            .to_text();
        let dup = format!("{}# sealrelay-kind: agent\n", agent.as_str());
        assert!(parse_identity_file(dup.as_bytes()).is_err());
        let unknown = format!("{}# sealrelay-colour: blue\n", agent.as_str());
        assert!(parse_identity_file(unknown.as_bytes()).is_err());
        let with_age = format!("{}{}\n", agent.as_str(), age_id.to_string().expose_secret());
        assert!(parse_identity_file(with_age.as_bytes()).is_err());
    }
}
