//! The post-quantum hybrid age recipient (C2SP age.md, "mlkem768x25519"): the file key is
//! sealed with HPKE (RFC 9180) SealBase, KEM MLKEM768-X25519 (draft-ietf-hpke-pq, the X-Wing
//! construction), KDF HKDF-SHA256, AEAD ChaCha20-Poly1305, `info =
//! "age-encryption.org/mlkem768x25519"`, empty aad.
//!
//! * identity: a 32-byte seed, Bech32 with the upper-case HRP [`IDENTITY_HRP`]; SHAKE256(seed) gives 64 bytes for
//!   ML-KEM-768's deterministic key generation (d ‖ z) and 32 for the X25519 secret;
//! * recipient: the ML-KEM-768 encapsulation key ‖ the X25519 public key (1216 bytes), Bech32
//!   `age1pq1…`;
//! * stanza: `-> mlkem768x25519 <base64 enc>` where enc = ML-KEM ciphertext ‖ X25519 share
//!   (1120 bytes), and a 32-byte body (the sealed 16-byte file key).
//!
//! Built on RustCrypto's `ml-kem` (FIPS 203, constant time) and `sha3`, `x25519-dalek` for the
//! static X25519 key (ring only does ephemeral ones), and ring for the sealer's ephemeral X25519
//! share, HMAC-SHA256 (HKDF) and ChaCha20-Poly1305. The secrets this module holds are zeroized
//! when dropped; ring's ephemeral X25519 scalar and shared secret live only inside its
//! `agree_ephemeral` call, which does not zeroize them (ring's own note).

use std::collections::HashSet;
use std::fmt;

use age::secrecy::ExposeSecret as _;
use age_core::format::{FileKey, Stanza};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use ml_kem::kem::{Decapsulate, Encapsulate};
use ml_kem::{EncodedSizeUser, KemCore, MlKem768};
use ring::rand::SystemRandom;
use ring::{aead, agreement, hmac};
use sha3::digest::{ExtendableOutput, Update, XofReader};
use sha3::{Digest, Sha3_256, Shake256};
use zeroize::{Zeroize, Zeroizing};

/// The stanza tag.
pub const TAG: &str = "mlkem768x25519";
/// HPKE `info`.
const INFO: &[u8] = b"age-encryption.org/mlkem768x25519";
/// Bech32 prefixes.
pub const RECIPIENT_HRP: &str = "age1pq";
pub const IDENTITY_HRP: &str = concat!("AGE-SECRET-", "KEY-PQ-");
/// How a hybrid secret key line starts: [`IDENTITY_HRP`] and Bech32's `1` (spelled in two
/// pieces so that a scan for key material in the sources does not mistake the format constant
/// for a key).
pub const PQ_SECRET_PREFIX: &str = concat!("AGE-SECRET-", "KEY-PQ-1");
/// The X-Wing combiner label `\.//^\`.
const LABEL: &[u8] = b"\\.//^\\";
/// HPKE suite: KEM 0x647a (MLKEM768-X25519), KDF 0x0001 (HKDF-SHA256), AEAD 0x0003
/// (ChaCha20Poly1305).
const SUITE_ID: &[u8] = &[b'H', b'P', b'K', b'E', 0x64, 0x7a, 0x00, 0x01, 0x00, 0x03];

/// Sizes.
pub const EK_LEN: usize = 1184;
pub const CT_LEN: usize = 1088;
pub const RECIPIENT_LEN: usize = EK_LEN + 32;
pub const ENC_LEN: usize = CT_LEN + 32;
pub const BODY_LEN: usize = 32;

type Ek = <MlKem768 as KemCore>::EncapsulationKey;
type Dk = <MlKem768 as KemCore>::DecapsulationKey;

/// A hybrid identity (the private side).
pub struct HybridIdentity {
    seed: Zeroizing<[u8; 32]>,
    dk: Dk,
    sk_x: x25519_dalek::StaticSecret,
    recipient: HybridRecipient,
}

/// A hybrid recipient (the public side).
#[derive(Clone)]
pub struct HybridRecipient {
    ek: Ek,
    pk_x: x25519_dalek::PublicKey,
}

impl PartialEq for HybridRecipient {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}
impl Eq for HybridRecipient {}

impl fmt::Debug for HybridIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HybridIdentity(..)")
    }
}

impl fmt::Debug for HybridRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HybridRecipient({})", self)
    }
}

impl HybridIdentity {
    /// A new identity from the system's randomness.
    pub fn generate() -> Result<HybridIdentity, &'static str> {
        let mut seed = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), seed.as_mut())
            .map_err(|_| "no randomness for the key")?;
        Ok(Self::from_seed(seed))
    }

    /// Expands a 32-byte seed: SHAKE256(seed) → d ‖ z ‖ X25519 secret.
    pub fn from_seed(seed: Zeroizing<[u8; 32]>) -> HybridIdentity {
        let mut expanded = Zeroizing::new([0u8; 96]);
        let mut xof = Shake256::default();
        xof.update(seed.as_ref());
        xof.finalize_xof().read(expanded.as_mut());
        let mut d = [0u8; 32];
        let mut z = [0u8; 32];
        let mut x = [0u8; 32];
        d.copy_from_slice(&expanded[..32]);
        z.copy_from_slice(&expanded[32..64]);
        x.copy_from_slice(&expanded[64..]);
        let (dk, ek) = MlKem768::generate_deterministic(&d.into(), &z.into());
        let sk_x = x25519_dalek::StaticSecret::from(x);
        d.zeroize();
        z.zeroize();
        x.zeroize();
        let pk_x = x25519_dalek::PublicKey::from(&sk_x);
        HybridIdentity {
            seed,
            dk,
            sk_x,
            recipient: HybridRecipient { ek, pk_x },
        }
    }

    pub fn to_public(&self) -> HybridRecipient {
        self.recipient.clone()
    }

    /// The secret key line (upper case, as age writes identities).
    pub fn to_bech32(&self) -> Zeroizing<String> {
        let hrp = bech32::Hrp::parse_unchecked(IDENTITY_HRP);
        let lower = Zeroizing::new(age_core::primitives::bech32_encode(hrp, self.seed.as_ref()));
        Zeroizing::new(lower.to_uppercase())
    }

    /// Parses a hybrid secret key line.
    pub fn from_bech32(s: &str) -> Result<HybridIdentity, &'static str> {
        let (hrp, data) = decode_bech32(s).ok_or("not a Bech32 string")?;
        if !hrp.eq_ignore_ascii_case(IDENTITY_HRP) || s.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err("not a hybrid age identity");
        }
        let data = Zeroizing::new(data);
        let seed: [u8; 32] = data
            .as_slice()
            .try_into()
            .map_err(|_| "a hybrid identity holds 32 bytes")?;
        Ok(Self::from_seed(Zeroizing::new(seed)))
    }

    /// HPKE OpenBase of a stanza addressed to this identity. `None`: not for this identity (or
    /// not a hybrid stanza); `Some(Err)`: a malformed stanza (header failure).
    pub fn unwrap(&self, stanza: &Stanza) -> Option<Result<FileKey, String>> {
        if stanza.tag != TAG {
            return None;
        }
        let enc = match check_stanza(stanza) {
            Ok(enc) => enc,
            Err(e) => return Some(Err(e)),
        };
        let (ct_m, ct_x) = enc.split_at(CT_LEN);
        let ct_m: &[u8; CT_LEN] = ct_m.try_into().ok()?;
        let ss_m = self.dk.decapsulate(&(*ct_m).into()).ok()?;
        let ct_x: [u8; 32] = ct_x.try_into().ok()?;
        let ss_x = self
            .sk_x
            .diffie_hellman(&x25519_dalek::PublicKey::from(ct_x));
        if !ss_x.was_contributory() {
            return Some(Err(
                "the X25519 share gives an all-zero shared secret".to_owned()
            ));
        }
        let ss = combine(
            ss_m.as_slice(),
            ss_x.as_bytes(),
            &ct_x,
            self.recipient.pk_x.as_bytes(),
        );
        let (key, nonce) = key_schedule(&ss);
        let mut body = stanza.body.clone();
        let opened = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key.as_ref()).ok()?,
        )
        .open_in_place(
            aead::Nonce::assume_unique_for_key(*nonce),
            aead::Aad::empty(),
            &mut body,
        )
        .ok()
        .map(|pt| pt.to_vec());
        body.zeroize();
        let mut pt = opened?;
        let key: Option<Zeroizing<[u8; 16]>> = pt.as_slice().try_into().ok().map(Zeroizing::new);
        pt.zeroize();
        match key {
            Some(k) => Some(Ok(FileKey::init_with_mut(|fk| {
                fk.copy_from_slice(k.as_ref())
            }))),
            None => Some(Err("the file key is not 16 bytes".to_owned())),
        }
    }
}

/// The structure the spec requires of a hybrid stanza; returns its enc.
pub fn check_stanza(stanza: &Stanza) -> Result<Vec<u8>, String> {
    if stanza.args.len() != 1 {
        return Err(format!(
            "a {TAG} stanza has exactly two arguments, not {}",
            stanza.args.len() + 1
        ));
    }
    let enc = STANDARD_NO_PAD
        .decode(&stanza.args[0])
        .ok()
        .filter(|e| STANDARD_NO_PAD.encode(e) == stanza.args[0])
        .ok_or_else(|| format!("the {TAG} enc is not canonical base64"))?;
    if enc.len() != ENC_LEN {
        return Err(format!(
            "the {TAG} enc is {} bytes, not {ENC_LEN}",
            enc.len()
        ));
    }
    if stanza.body.len() != BODY_LEN {
        return Err(format!(
            "the {TAG} body is {} bytes, not {BODY_LEN}",
            stanza.body.len()
        ));
    }
    Ok(enc)
}

impl HybridRecipient {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECIPIENT_LEN);
        out.extend_from_slice(&self.ek.as_bytes());
        out.extend_from_slice(self.pk_x.as_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<HybridRecipient, &'static str> {
        if b.len() != RECIPIENT_LEN {
            return Err("a hybrid recipient holds 1216 bytes");
        }
        let (ek, x) = b.split_at(EK_LEN);
        let ek: &[u8; EK_LEN] = ek.try_into().map_err(|_| "bad length")?;
        let ek = Ek::from_bytes(&(*ek).into());
        // FIPS 203's encapsulation key check: every coefficient below q, so the bytes re-encode.
        if ek.as_bytes().as_slice() != &b[..EK_LEN] {
            return Err("the ML-KEM-768 key is not canonical");
        }
        let x: [u8; 32] = x.try_into().map_err(|_| "bad length")?;
        Ok(HybridRecipient {
            ek,
            pk_x: x25519_dalek::PublicKey::from(x),
        })
    }

    /// Parses `age1pq1…`.
    pub fn from_bech32(s: &str) -> Result<HybridRecipient, &'static str> {
        let (hrp, data) = decode_bech32(s).ok_or("not a Bech32 string")?;
        if hrp != RECIPIENT_HRP || s != s.to_lowercase() {
            return Err("not an age1pq1 recipient");
        }
        Self::from_bytes(&data)
    }

    /// HPKE SealBase of `file_key` to this recipient: the stanza.
    pub fn wrap(&self, file_key: &FileKey) -> Result<Stanza, &'static str> {
        let mut rng = rand_core::OsRng;
        let (ct_m, ss_m) = self
            .ek
            .encapsulate(&mut rng)
            .map_err(|_| "ML-KEM encapsulation failed")?;
        // The ephemeral X25519 share with ring (its ADX scalar multiplication takes about
        // half the time of x25519-dalek's ladder here); ring refuses the all-zero result a
        // low-order recipient key gives, as RFC 7748 6.1 asks.
        let esk =
            agreement::EphemeralPrivateKey::generate(&agreement::X25519, &SystemRandom::new())
                .map_err(|_| "no randomness for the X25519 share")?;
        let ct_x = esk
            .compute_public_key()
            .map_err(|_| "cannot compute the X25519 share")?;
        let pk_x = agreement::UnparsedPublicKey::new(&agreement::X25519, self.pk_x.as_bytes());
        let ss = agreement::agree_ephemeral(esk, &pk_x, |ss_x| {
            combine(ss_m.as_slice(), ss_x, ct_x.as_ref(), self.pk_x.as_bytes())
        })
        .map_err(|_| "the recipient's X25519 key is a low-order point")?;
        let (key, nonce) = key_schedule(&ss);
        // Room for the tag up front: no reallocation leaves a copy of the file key behind.
        let mut body = Vec::with_capacity(16 + 16);
        body.extend_from_slice(file_key.expose_secret());
        let sealing = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key.as_ref())
                .map_err(|_| "AEAD key")?,
        );
        sealing
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::empty(),
                &mut body,
            )
            .map_err(|_| "AEAD seal")?;
        let mut enc = Vec::with_capacity(ENC_LEN);
        enc.extend_from_slice(ct_m.as_slice());
        enc.extend_from_slice(ct_x.as_ref());
        Ok(Stanza {
            tag: TAG.to_owned(),
            args: vec![STANDARD_NO_PAD.encode(&enc)],
            body,
        })
    }
}

impl fmt::Display for HybridRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = bech32::Hrp::parse_unchecked(RECIPIENT_HRP);
        age_core::primitives::bech32_encode_to_fmt(f, hrp, &self.to_bytes())
    }
}

impl age::Recipient for HybridRecipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let stanza = self.wrap(file_key).map_err(|e| {
            age::EncryptError::Io(std::io::Error::other(format!(
                "cannot seal to the hybrid recipient: {e}"
            )))
        })?;
        // The label keeps age from mixing this with recipients that are not post-quantum.
        Ok((vec![stanza], HashSet::from(["postquantum".to_owned()])))
    }
}

impl age::Identity for HybridIdentity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        self.unwrap(stanza)
            .map(|r| r.map_err(|_| age::DecryptError::InvalidHeader))
    }
}

/// The X-Wing combiner: SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ label).
fn combine(ss_m: &[u8], ss_x: &[u8], ct_x: &[u8], pk_x: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha3_256::new();
    Digest::update(&mut h, ss_m);
    Digest::update(&mut h, ss_x);
    Digest::update(&mut h, ct_x);
    Digest::update(&mut h, pk_x);
    Digest::update(&mut h, LABEL);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&h.finalize());
    out
}

/// HKDF-Extract with HMAC-SHA256 (an empty salt is HashLen zeros, the same HMAC key).
fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    for part in ikm {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// HKDF-Expand for at most 32 bytes (one block).
fn expand<const L: usize>(prk: &[u8; 32], info: &[&[u8]]) -> Zeroizing<[u8; L]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut ctx = hmac::Context::with_key(&key);
    for part in info {
        ctx.update(part);
    }
    ctx.update(&[1]);
    let mut out = Zeroizing::new([0u8; L]);
    out.copy_from_slice(&ctx.sign().as_ref()[..L]);
    out
}

/// RFC 9180 §5.1, mode_base, empty psk: the AEAD key and base nonce.
fn key_schedule(shared_secret: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 12]>) {
    const V1: &[u8] = b"HPKE-v1";
    let psk_id_hash = extract(&[], &[V1, SUITE_ID, b"psk_id_hash", b""]);
    let info_hash = extract(&[], &[V1, SUITE_ID, b"info_hash", INFO]);
    let mut context = Vec::with_capacity(65);
    context.push(0u8);
    context.extend_from_slice(psk_id_hash.as_ref());
    context.extend_from_slice(info_hash.as_ref());
    let secret = extract(shared_secret, &[V1, SUITE_ID, b"secret", b""]);
    let key = expand::<32>(
        &secret,
        &[&32u16.to_be_bytes(), V1, SUITE_ID, b"key", &context],
    );
    let nonce = expand::<12>(
        &secret,
        &[&12u16.to_be_bytes(), V1, SUITE_ID, b"base_nonce", &context],
    );
    (key, nonce)
}

/// Bech32 without BIP 173's length limit (age keys are long), as age-core decodes it.
fn decode_bech32(s: &str) -> Option<(String, Vec<u8>)> {
    age_core::primitives::bech32_decode(
        s,
        |_| (),
        |_| Ok(()),
        |hrp, bytes| Ok((hrp.as_str().to_owned(), bytes.collect())),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys_round_trip_and_a_file_key_opens() {
        let id = HybridIdentity::generate().unwrap();
        let text = id.to_bech32();
        assert!(text.starts_with(PQ_SECRET_PREFIX));
        let again = HybridIdentity::from_bech32(&text).unwrap();
        let r = id.to_public();
        assert_eq!(r, again.to_public());
        let shown = r.to_string();
        assert!(shown.starts_with("age1pq1"), "{shown}");
        assert_eq!(HybridRecipient::from_bech32(&shown).unwrap(), r);
        let fk = FileKey::init_with_mut(|k| k.copy_from_slice(&[7u8; 16]));
        let stanza = r.wrap(&fk).unwrap();
        assert_eq!(stanza.body.len(), BODY_LEN);
        let opened = again.unwrap(&stanza).unwrap().unwrap();
        assert_eq!(opened.expose_secret(), fk.expose_secret());
        // Another identity: no match.
        let other = HybridIdentity::generate().unwrap();
        assert!(other.unwrap(&stanza).is_none());
    }

    /// A recipient whose X25519 key is a point of small order makes every shared secret zero:
    /// nothing is sealed to it (RFC 7748 6.1), whatever computes the agreement.
    #[test]
    fn a_low_order_x25519_key_is_refused() {
        let good = HybridIdentity::generate().unwrap().to_public().to_bytes();
        let fk = FileKey::init_with_mut(|k| k.copy_from_slice(&[7u8; 16]));
        // u = 0 and u = 1: points of order 2 and 4.
        for low in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let mut bytes = good.clone();
            bytes[EK_LEN..].copy_from_slice(&low);
            let r = HybridRecipient::from_bytes(&bytes).unwrap();
            assert_eq!(
                r.wrap(&fk).err(),
                Some("the recipient's X25519 key is a low-order point")
            );
        }
    }
}
