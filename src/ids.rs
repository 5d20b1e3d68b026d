//! Names and identities: party kinds, SPIFFE IDs (`spiffe://<trust-domain>/<kind>/<name>`), and
//! random identifiers. Parsing here is strict: what a certificate or a request names is checked
//! against these rules before anything else looks at it.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest party name we accept.
pub const MAX_NAME_LEN: usize = 64;
/// Longest trust domain we accept (SPIFFE allows 255; we keep it short).
pub const MAX_TRUST_DOMAIN_LEN: usize = 128;

/// What a party is; decides what it may do (DESIGN.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PartyKind {
    User,
    Agent,
    Admin,
    Relay,
    /// A data owner's sealing service (docs/sources.md).
    Source,
}

impl PartyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartyKind::User => "user",
            PartyKind::Agent => "agent",
            PartyKind::Admin => "admin",
            PartyKind::Relay => "relay",
            PartyKind::Source => "source",
        }
    }
    /// The one-byte code used in canonical statements.
    pub fn code(self) -> u8 {
        match self {
            PartyKind::User => 1,
            PartyKind::Agent => 2,
            PartyKind::Admin => 3,
            PartyKind::Relay => 4,
            PartyKind::Source => 5,
        }
    }
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(PartyKind::User),
            2 => Ok(PartyKind::Agent),
            3 => Ok(PartyKind::Admin),
            4 => Ok(PartyKind::Relay),
            5 => Ok(PartyKind::Source),
            other => Err(Error::bad_input(format!("unknown party kind code {other}"))),
        }
    }
}

impl fmt::Display for PartyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PartyKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "user" => Ok(PartyKind::User),
            "agent" => Ok(PartyKind::Agent),
            "admin" => Ok(PartyKind::Admin),
            "relay" => Ok(PartyKind::Relay),
            "source" => Ok(PartyKind::Source),
            other => Err(Error::bad_input(format!(
                "unknown party kind {other:?}: use user, agent, admin, relay or source"
            ))),
        }
    }
}

/// Checks a party name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_len = !name.is_empty() && name.len() <= MAX_NAME_LEN;
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "invalid name {:?}: use 1-{MAX_NAME_LEN} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            truncate_for_message(name)
        )))
    }
}

/// Checks a SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
pub fn validate_trust_domain(td: &str) -> Result<()> {
    let ok = !td.is_empty()
        && td.len() <= MAX_TRUST_DOMAIN_LEN
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "invalid trust domain {:?}: use lowercase letters, digits, '.', '-' or '_' (e.g. example.org)",
            truncate_for_message(td)
        )))
    }
}

/// A party's identity: `spiffe://<trust-domain>/<kind>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    kind: PartyKind,
    name: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, kind: PartyKind, name: &str) -> Result<Self> {
        validate_trust_domain(trust_domain)?;
        validate_name(name)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            kind,
            name: name.to_owned(),
        })
    }
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    pub fn kind(&self) -> PartyKind {
        self.kind
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `user/alice`: short form for messages and file names.
    pub fn short(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/{}/{}",
            self.trust_domain, self.kind, self.name
        )
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::bad_input(format!(
                "invalid SPIFFE ID {:?}: expected spiffe://<trust-domain>/<user|agent|admin|relay>/<name>",
                truncate_for_message(s)
            ))
        };
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(td), Some(kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let kind: PartyKind = kind.parse().map_err(|_| bad())?;
        SpiffeId::new(td, kind, name).map_err(|_| bad())
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message()))
    }
}

/// A 128-bit identifier with a type, so a grant id is never taken for an envelope id: random,
/// or for an envelope the relay's [`EnvelopeId::ordered`] (a millisecond and 80 random bits).
/// On the wire and in the store it is its 16 bytes (`serde(transparent)`); in text, 32 hex digits.
macro_rules! id128 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Result<Self> {
                let mut id = [0u8; 16];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                    .map_err(|_| Error::internal("no randomness for an id"))?;
                Ok($name(id))
            }
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            pub fn as_slice(&self) -> &[u8] {
                &self.0
            }
            /// 32 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), hex(&self.0))
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                parse_hex::<16>(s)
                    .map($name)
                    .map_err(|e| e.context(concat!("invalid ", $what, " id (32 hex digits)")))
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<[u8; 16]> for $name {
            fn from(b: [u8; 16]) -> Self {
                $name(b)
            }
        }
    };
}

id128!(
    /// Names a grant (chosen by the user's client).
    GrantId,
    "grant"
);
id128!(
    /// Names a stored envelope (chosen by the relay).
    EnvelopeId,
    "envelope"
);

impl EnvelopeId {
    /// A fresh id for an envelope whose upload the relay begins at `unix_ms` (milliseconds
    /// since the Unix epoch): those milliseconds in its first six bytes (big-endian, good
    /// until the year 10889), then ten random bytes (80 bits). Ids sort by when their uploads
    /// began, so the store puts each new envelope beside the last one rather than at a random
    /// place (fewer pages written per commit), and a user's inbox lists the oldest first. The
    /// order is only as good as the relay's clock (a clock stepped back, or nodes whose clocks
    /// differ, interleave), and ids of one millisecond are in random order. The time it shows
    /// is little news: the log's `envelope.submitted` event carries the second the upload
    /// ended beside the id, so the two tell how long an upload took.
    pub fn ordered(unix_ms: u64) -> Result<Self> {
        let mut id = Self::random()?.0;
        id[..6].copy_from_slice(&unix_ms.min(ORDERED_MS_MAX).to_be_bytes()[2..]);
        Ok(EnvelopeId(id))
    }
}

/// The last millisecond six bytes hold.
const ORDERED_MS_MAX: u64 = (1 << 48) - 1;

/// Cuts untrusted text short before it goes into a message.
pub fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        s.to_owned()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Lowercase hex.
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = bytes.as_ref();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Parses lowercase or uppercase hex of an exact length.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(Error::bad_input(format!(
            "expected {} hex digits, got {}",
            N * 2,
            bytes.len()
        )));
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0])?;
        let lo = hex_digit(pair[1])?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Result<u8> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(Error::bad_input("invalid hex digit")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_round_trip_and_rejects() {
        let id: SpiffeId = "spiffe://example.org/user/alice".parse().unwrap();
        assert_eq!(id.kind(), PartyKind::User);
        assert_eq!(id.name(), "alice");
        assert_eq!(id.to_string(), "spiffe://example.org/user/alice");
        for bad in [
            "spiffe://example.org/user",
            "spiffe://example.org/user/alice/x",
            "spiffe://Example.org/user/alice",
            "spiffe://example.org/robot/alice",
            "https://example.org/user/alice",
            "spiffe://example.org/user/Alice",
            "spiffe://example.org/user/",
            "spiffe:///user/alice",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("research-bot").is_ok());
        assert!(validate_name("a").is_ok());
        assert!(validate_name("-a").is_err());
        assert!(validate_name(".a").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn ordered_envelope_ids_sort_by_their_millisecond_and_stay_random_within_it() {
        let ms = 1_796_601_600_123; // 2026-12-07
        let a = EnvelopeId::ordered(ms).unwrap();
        let b = EnvelopeId::ordered(ms).unwrap();
        let later = EnvelopeId::ordered(ms + 1).unwrap();
        assert_eq!(a.0[..6], ms.to_be_bytes()[2..]);
        assert_ne!(
            a, b,
            "ten random bytes tell apart ids of the same millisecond"
        );
        assert_ne!(a.0[6..], b.0[6..]);
        assert!(a < later && b < later);
        // Past what six bytes hold, the id keeps the largest value rather than wrapping.
        let far = EnvelopeId::ordered(u64::MAX).unwrap();
        assert_eq!(far.0[..6], [0xff; 6]);
        assert!(later < far);
    }

    #[test]
    fn hex_round_trip() {
        let h = hex([0x00, 0xab, 0xff]);
        assert_eq!(h, "00abff");
        assert_eq!(parse_hex::<3>(&h).unwrap(), [0x00, 0xab, 0xff]);
        assert!(parse_hex::<3>("00abf").is_err());
        assert!(parse_hex::<3>("00abfg").is_err());
    }
}
