//! The age key types sealrelay uses: the post-quantum hybrid (recipient `age1pq1…`, secret
//! line [`PQ_SECRET_PREFIX`]…, the default for users) and X25519 (recipient `age1…`, secret line
//! [`X25519_SECRET_PREFIX`]…, kept for older age clients).

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

pub use super::hybrid::PQ_SECRET_PREFIX;
use super::hybrid::{HybridIdentity, HybridRecipient};

/// How an X25519 secret key line starts.
pub const X25519_SECRET_PREFIX: &str = concat!("AGE-SECRET-", "KEY-1");

/// A private age key.
pub enum AgeIdentity {
    Hybrid(Box<HybridIdentity>),
    X25519(age::x25519::Identity),
}

/// A public age key (a directory entry's recipient).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgeRecipient {
    Hybrid(Box<HybridRecipient>),
    X25519(X25519Recipient),
}

/// The age crate's X25519 recipient, compared by its encoding.
#[derive(Clone, Debug)]
pub struct X25519Recipient(pub age::x25519::Recipient);

impl PartialEq for X25519Recipient {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}
impl Eq for X25519Recipient {}

impl AgeIdentity {
    /// A new key: hybrid unless `x25519_only`.
    pub fn generate(x25519_only: bool) -> Result<AgeIdentity, &'static str> {
        Ok(if x25519_only {
            AgeIdentity::X25519(age::x25519::Identity::generate())
        } else {
            AgeIdentity::Hybrid(Box::new(HybridIdentity::generate()?))
        })
    }

    pub fn to_public(&self) -> AgeRecipient {
        match self {
            AgeIdentity::Hybrid(h) => AgeRecipient::Hybrid(Box::new(h.to_public())),
            AgeIdentity::X25519(x) => AgeRecipient::X25519(X25519Recipient(x.to_public())),
        }
    }

    /// The secret line (hybrid or X25519).
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        match self {
            AgeIdentity::Hybrid(h) => h.to_bech32(),
            AgeIdentity::X25519(x) => Zeroizing::new(x.to_string().expose_secret().to_owned()),
        }
    }

    /// Parses a secret line of either type.
    pub fn parse(line: &str) -> Result<AgeIdentity, &'static str> {
        if line.starts_with(PQ_SECRET_PREFIX) {
            HybridIdentity::from_bech32(line).map(|h| AgeIdentity::Hybrid(Box::new(h)))
        } else if line.starts_with(X25519_SECRET_PREFIX) {
            age::x25519::Identity::from_str(line)
                .map(AgeIdentity::X25519)
                .map_err(|_| "a malformed X25519 secret key line")
        } else {
            Err("not an age secret key sealrelay supports (hybrid or X25519)")
        }
    }

    /// For [`super::open`].
    pub fn as_identity(&self) -> &dyn age::Identity {
        match self {
            AgeIdentity::Hybrid(h) => h.as_ref(),
            AgeIdentity::X25519(x) => x,
        }
    }

    pub fn is_post_quantum(&self) -> bool {
        matches!(self, AgeIdentity::Hybrid(_))
    }
}

impl AgeRecipient {
    /// For [`super::seal`].
    pub fn as_recipient(&self) -> &dyn age::Recipient {
        match self {
            AgeRecipient::Hybrid(h) => h.as_ref(),
            AgeRecipient::X25519(x) => &x.0,
        }
    }

    pub fn is_post_quantum(&self) -> bool {
        matches!(self, AgeRecipient::Hybrid(_))
    }
}

/// Whether a recipient string that was already parsed once (a directory entry's: decoding an
/// entry checks that its recipient parses) is the post-quantum hybrid: its prefix says, without
/// decoding its 1,200-byte ML-KEM key again.
pub fn names_post_quantum(checked: &str) -> bool {
    checked.starts_with(HYBRID_PREFIX)
}

/// The prefix of a hybrid recipient's bech32 string (its HRP and separator).
const HYBRID_PREFIX: &str = "age1pq1";

impl FromStr for AgeRecipient {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with(HYBRID_PREFIX) {
            HybridRecipient::from_bech32(s).map(|h| AgeRecipient::Hybrid(Box::new(h)))
        // A plugin's tag recipient has the prefix "age1tag" and then bech32's separator "1"
        // (never a data character): an X25519 recipient's data may itself begin "tag".
        } else if s.starts_with("age1") && !s.starts_with("age1tag1") {
            age::x25519::Recipient::from_str(s)
                .map(|r| AgeRecipient::X25519(X25519Recipient(r)))
                .map_err(|_| "a malformed age1 X25519 recipient")
        } else {
            Err("not an age recipient sealrelay supports (age1pq1… or age1…)")
        }
    }
}

impl AgeRecipient {
    /// [`FromStr`], remembered for this process: an agent seals to the same users again and
    /// again, and parsing a hybrid recipient (bech32, then a 1,184-byte ML-KEM key) costs about
    /// as much as the X25519 agreement of the seal itself. Parsing is deterministic, so a
    /// remembered parse is the parse; at most 256 are kept (all forgotten when full).
    pub fn parse_remembered(s: &str) -> Result<AgeRecipient, &'static str> {
        type Parsed = std::collections::HashMap<String, AgeRecipient>;
        static PARSED: std::sync::OnceLock<std::sync::Mutex<Parsed>> = std::sync::OnceLock::new();
        let parsed = PARSED.get_or_init(Default::default);
        if let Some(hit) = parsed.lock().ok().and_then(|m| m.get(s).cloned()) {
            return Ok(hit);
        }
        let r = AgeRecipient::from_str(s)?;
        if let Ok(mut m) = parsed.lock() {
            if m.len() >= 256 {
                m.clear();
            }
            m.insert(s.to_owned(), r.clone());
        }
        Ok(r)
    }
}

impl fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgeRecipient::Hybrid(h) => h.fmt(f),
            AgeRecipient::X25519(x) => x.0.fmt(f),
        }
    }
}

impl age::Recipient for AgeRecipient {
    fn wrap_file_key(
        &self,
        file_key: &age_core::format::FileKey,
    ) -> Result<
        (
            Vec<age_core::format::Stanza>,
            std::collections::HashSet<String>,
        ),
        age::EncryptError,
    > {
        self.as_recipient().wrap_file_key(file_key)
    }
}

impl age::Identity for AgeIdentity {
    fn unwrap_stanza(
        &self,
        stanza: &age_core::format::Stanza,
    ) -> Option<Result<age_core::format::FileKey, age::DecryptError>> {
        self.as_identity().unwrap_stanza(stanza)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One X25519 recipient in 32,768 begins "age1tag…" (its data's first three characters):
    /// it is an X25519 recipient like any other (a flaky test found it).
    /// A remembered parse is the parse of exactly that text: each recipient comes back as
    /// itself, a malformed one is refused every time, and many more than are kept still parse.
    #[test]
    fn remembered_recipients_are_their_own_parse() {
        let ids: Vec<AgeIdentity> = (0..300)
            .map(|i| AgeIdentity::generate(i % 2 == 0).unwrap())
            .collect();
        for _ in 0..2 {
            for id in &ids {
                let text = id.to_public().to_string();
                let r = AgeRecipient::parse_remembered(&text).unwrap();
                assert_eq!(r, id.to_public());
                assert_eq!(r.to_string(), text);
            }
        }
        let text = ids[1].to_public().to_string();
        let mut bad = text.clone().into_bytes();
        let at = bad.len() - 3;
        bad[at] = if bad[at] == b'q' { b'p' } else { b'q' };
        let bad = String::from_utf8(bad).unwrap();
        for _ in 0..2 {
            assert!(AgeRecipient::parse_remembered(&bad).is_err());
        }
    }

    #[test]
    fn an_x25519_recipient_whose_data_begins_tag_is_one() {
        // 't' = 11, 'a' = 29, 'g' = 8 in bech32's alphabet: the key's first 15 bits.
        let mut key = [0u8; 32];
        key[0] = 0b0101_1111;
        key[1] = 0b0101_0000;
        let text =
            bech32::encode::<bech32::Bech32>(bech32::Hrp::parse_unchecked("age"), &key).unwrap();
        assert!(text.starts_with("age1tag"), "{text}");
        let parsed: AgeRecipient = text.parse().unwrap();
        assert!(!parsed.is_post_quantum());
        assert_eq!(parsed.to_string(), text);
        assert!("age1tag1qqqq".parse::<AgeRecipient>().is_err());
    }
}
