//! Ed25519 keys, the strict verification rule, and the domain-separated signed-statement
//! framing shared by every signed thing in sealrelay (enrollment requests, directory entries,
//! revocations, grants, approvals, submissions, receipts). `docs/formats.md` is the spec.
//!
//! A statement is `b"sealrelay-statement-v1\0" || type-tag || 0x00 || fields` in the canonical
//! encoding of [`super::codec`]; the signature covers exactly those bytes, so a signature made
//! for one statement type can never verify as another, nor as anything outside sealrelay.
//!
//! Verification rule (strict, documented in `docs/formats.md` and tested against the CCTV and
//! Wycheproof vectors): the signature is 64 bytes; `S < L`; the public key `A` is a canonical
//! encoding and not of small order; `R` is not of small order; and the cofactorless equation
//! `[S]B = R + [k]A` holds with `R` compared byte-for-byte to the canonical encoding. That
//! is the rule of ed25519-dalek's `verify_strict`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::ids::hex;

/// Prefix of every signed statement.
pub const STATEMENT_PREFIX: &[u8] = b"sealrelay-statement-v1\0";
/// Cap on a statement's size; every statement type is far smaller.
pub const MAX_STATEMENT_LEN: usize = 16 * 1024;
/// Cap on a signed-statement file (JSON with base64).
pub const MAX_SIGNED_FILE_LEN: usize = 32 * 1024;

/// The kinds of signed statement. The tag string is part of the signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementType {
    EnrollmentRequest,
    DirectoryEntry,
    Revocation,
    Grant,
    Approval,
    Submission,
    Receipt,
    /// A second person's signed refusal of a grant that awaits approval.
    Denial,
    /// A party's previous key consenting to its new keys (docs/keys.md).
    KeyRotation,
    /// A second admin's signed approval to shorten a key reset's waiting period.
    ResetApproval,
    /// An agent asks a source to fill one of its grants (docs/sources.md).
    Dispatch,
    /// A source's statement of the envelope it sealed for a dispatched grant.
    SourceSubmission,
    /// A source's signed refusal to fill a dispatched grant (its own policy said no).
    SourceRefusal,
}

impl StatementType {
    pub const ALL: [StatementType; 13] = [
        StatementType::EnrollmentRequest,
        StatementType::DirectoryEntry,
        StatementType::Revocation,
        StatementType::Grant,
        StatementType::Approval,
        StatementType::Submission,
        StatementType::Receipt,
        StatementType::Denial,
        StatementType::KeyRotation,
        StatementType::ResetApproval,
        StatementType::Dispatch,
        StatementType::SourceSubmission,
        StatementType::SourceRefusal,
    ];
    pub fn tag(self) -> &'static str {
        match self {
            StatementType::EnrollmentRequest => "enrollment-request",
            StatementType::DirectoryEntry => "directory-entry",
            StatementType::Revocation => "revocation",
            StatementType::Grant => "grant",
            StatementType::Approval => "approval",
            StatementType::Submission => "submission",
            StatementType::Receipt => "receipt",
            StatementType::Denial => "denial",
            StatementType::KeyRotation => "key-rotation",
            StatementType::ResetApproval => "reset-approval",
            StatementType::Dispatch => "dispatch",
            StatementType::SourceSubmission => "source-submission",
            StatementType::SourceRefusal => "source-refusal",
        }
    }
    pub fn from_tag(tag: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.tag() == tag)
            .ok_or_else(|| Error::bad_input(format!("unknown statement type {tag:?}")))
    }
}

impl fmt::Display for StatementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// Starts a statement of type `ty`: prefix, tag, NUL. Fields follow.
pub fn statement_writer(ty: StatementType) -> Writer {
    let mut w = Writer::new();
    w.raw(STATEMENT_PREFIX).raw(ty.tag().as_bytes()).raw(&[0]);
    w
}

/// Consumes and checks the prefix and tag of a statement of type `ty`.
pub fn statement_reader(bytes: &[u8], ty: StatementType) -> Result<Reader<'_>> {
    if bytes.len() > MAX_STATEMENT_LEN {
        return Err(Error::bad_input(format!(
            "statement is {} bytes, more than the limit of {MAX_STATEMENT_LEN}",
            bytes.len()
        )));
    }
    let mut r = Reader::new(bytes);
    r.expect_raw(STATEMENT_PREFIX, "sealrelay statement")?;
    r.expect_raw(ty.tag().as_bytes(), &format!("{ty} statement"))?;
    r.expect_raw(&[0], &format!("{ty} statement"))?;
    Ok(r)
}

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", B64.encode(self.0))
    }
}

impl PublicKey {
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        <[u8; 32]>::try_from(b).map(PublicKey).map_err(|_| {
            Error::bad_input(format!(
                "Ed25519 public key must be 32 bytes, got {}",
                b.len()
            ))
        })
    }
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    /// Short fingerprint for messages: first 8 bytes of SHA-256, hex.
    pub fn fingerprint(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        hex(d.as_ref().get(..8).unwrap_or_default())
    }

    /// Verifies `sig` over `msg` under the strict rule in the module doc.
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        let r: &[u8; 32] = sig
            .get(..32)
            .and_then(|r| r.try_into().ok())
            .ok_or(SignatureError::Malformed)?;
        if sig.len() != 64 {
            return Err(SignatureError::Malformed);
        }
        if !is_canonical_point(&self.0) || is_small_order(&self.0) {
            return Err(SignatureError::WeakKey);
        }
        if is_small_order(r) {
            return Err(SignatureError::Invalid);
        }
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Why a signature did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    WeakKey,
    Invalid,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::Malformed => "signature is malformed (must be 64 bytes)",
            SignatureError::WeakKey => "public key is non-canonical or of small order",
            SignatureError::Invalid => "signature does not verify",
        })
    }
}

/// `y` (the encoding without its sign bit) is below p = 2^255 - 19, and x = 0 is not given a
/// negative sign (those two encodings are caught by the small-order list too).
fn is_canonical_point(enc: &[u8; 32]) -> bool {
    // y >= p only when the top 250 bits are all ones and the low byte is >= 0xed.
    let top = enc[31] & 0x7f == 0x7f;
    let middle = enc[1..31].iter().all(|&b| b == 0xff);
    !(top && middle && enc[0] >= 0xed)
}

/// The encodings of the eight points of order 1, 2, 4 and 8 (with both sign bits where the
/// encoding with the sign bit set is otherwise a valid encoding of the same point).
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 10] = {
    const fn h(s: &[u8; 64]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = (nib(s[2 * i]) << 4) | nib(s[2 * i + 1]);
            i += 1;
        }
        out
    }
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    [
        h(b"0100000000000000000000000000000000000000000000000000000000000000"),
        h(b"0100000000000000000000000000000000000000000000000000000000000080"),
        h(b"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        h(b"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        h(b"0000000000000000000000000000000000000000000000000000000000000000"),
        h(b"0000000000000000000000000000000000000000000000000000000000000080"),
        h(b"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        h(b"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
        h(b"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        h(b"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    ]
};

fn is_small_order(enc: &[u8; 32]) -> bool {
    SMALL_ORDER_ENCODINGS.iter().any(|s| s == enc)
}

/// An Ed25519 private key, kept as PKCS#8 (zeroized on drop, never printed).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public().to_base64())
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::internal("could not generate an Ed25519 key"))?;
        Self::from_pkcs8(doc.as_ref())
    }
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| Error::bad_input("not an Ed25519 PKCS#8 private key"))?;
        Ok(SigningKey {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }
    /// Builds a key from its 32-byte seed (for test vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| Error::bad_input("invalid Ed25519 seed"))?;
        // PKCS#8 v1 wrapper of the seed (RFC 8410), so the key can be stored like any other.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        Ok(SigningKey {
            pair,
            pkcs8: Zeroizing::new(der),
        })
    }
    pub fn public(&self) -> PublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(out)
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }
    /// Whether `sig` is the signature this key makes of `msg`. Ed25519 signing is deterministic
    /// (RFC 8032: the nonce is a hash of the key and the message), so signing again gives the
    /// same bytes, at about half the cost of verifying; equal bytes are a valid signature by
    /// this key. Unequal bytes prove nothing (another signer of this key may pick its nonce
    /// otherwise): verify those with [`PublicKey::verify_strict`].
    /// The comparison takes the same time wherever the bytes differ: `msg` may come from
    /// someone else, and how far their guess matched must not show.
    pub fn made(&self, msg: &[u8], sig: &[u8]) -> bool {
        constant_time_eq(&self.sign(msg), sig)
    }
    /// The PKCS#8 document. Secret: write it only to 0600 files.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only, never on where
/// they differ (the length of the expected value is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A statement with its signature, as stored and transmitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub ty: StatementType,
    pub statement: Vec<u8>,
    pub signature: [u8; 64],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedJson {
    #[serde(rename = "type")]
    ty: String,
    statement: String,
    signature: String,
}

impl Signed {
    pub fn sign(ty: StatementType, statement: Vec<u8>, key: &SigningKey) -> Self {
        let signature = key.sign(&statement);
        Signed {
            ty,
            statement,
            signature,
        }
    }

    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        key.verify_strict(&self.statement, &self.signature)
    }

    /// The canonical file form: one line of JSON, then a newline.
    pub fn to_json(&self) -> String {
        let j = SignedJson {
            ty: self.ty.tag().to_owned(),
            statement: B64.encode(&self.statement),
            signature: B64.encode(self.signature),
        };
        // Serializing a struct of strings cannot fail.
        let mut s = serde_json::to_string(&j).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses the file form strictly: the bytes must be exactly what [`Signed::to_json`] writes,
    /// so any change to the file, even in whitespace, is detected.
    pub fn from_json(text: &[u8], expected: StatementType) -> Result<Self> {
        if text.len() > MAX_SIGNED_FILE_LEN {
            return Err(Error::bad_input(format!(
                "signed statement is {} bytes, more than the limit of {MAX_SIGNED_FILE_LEN}",
                text.len()
            )));
        }
        let j: SignedJson = serde_json::from_slice(text)
            .map_err(|e| Error::bad_input(format!("not a signed {expected} ({e})")))?;
        let ty = StatementType::from_tag(&j.ty)?;
        if ty != expected {
            return Err(Error::bad_input(format!(
                "this is a signed {ty}, expected a signed {expected}"
            )));
        }
        let statement = B64
            .decode(&j.statement)
            .map_err(|_| Error::bad_input("statement is not canonical base64"))?;
        let signature: [u8; 64] = B64
            .decode(&j.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::bad_input("signature is not 64 bytes of canonical base64"))?;
        let signed = Signed {
            ty,
            statement,
            signature,
        };
        if signed.to_json().as_bytes() != text {
            return Err(Error::bad_input(format!(
                "signed {expected} is not in canonical form (was the file edited?)"
            )));
        }
        Ok(signed)
    }
}

/// A named Ed25519 verifier key in the C2SP signed-note form `<name>+<hash>+<base64(0x01||key)>`,
/// where `hash` is the first four bytes of SHA-256(name || "\n" || 0x01 || key) in hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key: PublicKey,
}

impl VerifierKey {
    pub fn new(name: &str, key: PublicKey) -> Result<Self> {
        if name.is_empty() || name.len() > 256 || name.contains(['+', ' ', '\n', '\t', '\r']) {
            return Err(Error::bad_input(format!(
                "invalid key name {name:?}: no '+', spaces or newlines"
            )));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key,
        })
    }
    /// The 4-byte key ID of C2SP signed notes.
    pub fn key_id(&self) -> [u8; 4] {
        note_key_id(&self.name, 0x01, &self.key)
    }
    pub fn encode(&self) -> String {
        encode_vkey(&self.name, 0x01, &self.key)
    }
    pub fn parse(s: &str) -> Result<Self> {
        let (name, key) = parse_vkey(s, 0x01, "an Ed25519 key")?;
        VerifierKey::new(&name, key)
    }
}

/// A C2SP signed-note key ID: the first four bytes of SHA-256(name || "\n" || alg || key).
/// `alg` is 0x01 for Ed25519 note signatures and 0x04 for Ed25519 cosignatures.
pub fn note_key_id(name: &str, alg: u8, key: &PublicKey) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[b'\n', alg]);
    ctx.update(&key.0);
    let d = ctx.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(d.as_ref().get(..4).unwrap_or(&[0; 4]));
    id
}

/// The verifier-key text `<name>+<hex key ID>+<base64(alg || key)>`.
pub fn encode_vkey(name: &str, alg: u8, key: &PublicKey) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(alg);
    raw.extend_from_slice(&key.0);
    format!(
        "{name}+{}+{}",
        hex(note_key_id(name, alg, key)),
        B64.encode(raw)
    )
}

/// Parses a verifier-key text of algorithm `alg` (`what` names it in the error), checking the
/// key ID; returns the name and the key.
pub fn parse_vkey(s: &str, alg: u8, what: &str) -> Result<(String, PublicKey)> {
    let s = s.trim_end_matches('\n');
    let bad = |why: &str| {
        Error::bad_input(format!(
            "not a verifier key ({why}): expected <name>+<hash>+<base64>"
        ))
    };
    // Names hold no '+', but base64 may: split from the left.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("wrong shape"));
    };
    let raw = B64.decode(b64).map_err(|_| bad("bad base64"))?;
    let (found, key) = raw.split_first().ok_or_else(|| bad("empty key"))?;
    if *found != alg {
        return Err(bad(&format!("not {what}")));
    }
    let key = PublicKey::from_slice(key)?;
    if hex(note_key_id(name, alg, &key)) != hash {
        return Err(bad("key hash does not match"));
    }
    Ok((name.to_owned(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let key = SigningKey::generate().unwrap();
        let mut w = statement_writer(StatementType::Grant);
        w.str("hello");
        let signed = Signed::sign(StatementType::Grant, w.finish(), &key);
        signed.verify(&key.public()).unwrap();
        let other = SigningKey::generate().unwrap();
        assert_eq!(signed.verify(&other.public()), Err(SignatureError::Invalid));
        // The tag is inside the signed bytes: a grant cannot be read as a receipt.
        assert!(statement_reader(&signed.statement, StatementType::Receipt).is_err());
        let mut r = statement_reader(&signed.statement, StatementType::Grant).unwrap();
        assert_eq!(r.str(10, "x").unwrap(), "hello");
        r.finish().unwrap();
    }

    #[test]
    fn signed_json_is_strict() {
        let key = SigningKey::generate().unwrap();
        let signed = Signed::sign(StatementType::Grant, b"abc".to_vec(), &key);
        let json = signed.to_json();
        assert_eq!(
            Signed::from_json(json.as_bytes(), StatementType::Grant).unwrap(),
            signed
        );
        assert!(Signed::from_json(json.as_bytes(), StatementType::Receipt).is_err());
        let spaced = json.replace(':', ": ");
        assert!(Signed::from_json(spaced.as_bytes(), StatementType::Grant).is_err());
        let mut crlf = json.clone();
        crlf.insert(crlf.len() - 1, '\r');
        assert!(Signed::from_json(crlf.as_bytes(), StatementType::Grant).is_err());
    }

    #[test]
    fn seed_pkcs8_round_trips() {
        let k = SigningKey::from_seed(&[7u8; 32]).unwrap();
        let k2 = SigningKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(k.public(), k2.public());
    }

    #[test]
    fn verifier_key_round_trip() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::new("example.org/log", key.public()).unwrap();
        let text = vk.encode();
        assert_eq!(VerifierKey::parse(&text).unwrap(), vk);
        let mut tampered = text.clone().into_bytes();
        let idx = vk.name.len() + 2;
        tampered[idx] = if tampered[idx] == b'0' { b'1' } else { b'0' };
        assert!(VerifierKey::parse(std::str::from_utf8(&tampered).unwrap()).is_err());
    }

    #[test]
    fn small_order_and_noncanonical_keys_are_refused() {
        for enc in SMALL_ORDER_ENCODINGS {
            let pk = PublicKey(enc);
            assert_eq!(
                pk.verify_strict(b"m", &[0u8; 64]),
                Err(SignatureError::WeakKey)
            );
        }
        let mut y_ge_p = [0xffu8; 32];
        y_ge_p[31] = 0x7f;
        y_ge_p[0] = 0xee;
        assert!(!is_canonical_point(&y_ge_p));
    }
}
