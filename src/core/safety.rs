//! Safety numbers: a short string of digits for a party's current keys that two people can
//! compare out of band (read aloud, side by side), as messengers do (Signal's safety numbers,
//! Apple's Contact Key Verification). Two entries give the same number only if they name the
//! same party with the same signing key, age recipient and TLS key.
//!
//! 30 digits in six groups of five (about 99 bits), each group five bytes of an iterated
//! SHA-512 (5,200 rounds, to make a search for a key with a chosen number cost more) taken as a
//! big-endian integer modulo 100,000. The input is fixed: a version, then each field with its
//! length:
//!
//! ```text
//! h0 = SHA-512("sealrelay-safety-number-v1" || len(id) || id || signing key (32) ||
//!              len(recipient) || recipient || TLS SPKI SHA-256 (32))
//! hN = SHA-512(hN-1 || signing key)        for N = 1 … 5200
//! digits = for i in 0..6: (big-endian u40 of h5200[5i .. 5i+5]) mod 100000, zero-padded to 5
//! ```
//!
//! Lengths are 8-byte big-endian. The recipient is its age string (empty for agents and admins).

use super::directory::DirectoryEntry;

/// Rounds of SHA-512.
pub const ITERATIONS: usize = 5200;
/// Groups of five digits.
pub const GROUPS: usize = 6;
const VERSION: &[u8] = b"sealrelay-safety-number-v1";

/// The safety number of `entry`'s keys: `GROUPS` groups of five digits, space-separated.
pub fn safety_number(entry: &DirectoryEntry) -> String {
    let id = entry.id.to_string();
    let recipient = entry.age_recipient.as_deref().unwrap_or_default();
    let key = &entry.signing_key.0;
    let mut input = Vec::with_capacity(VERSION.len() + id.len() + recipient.len() + 96);
    input.extend_from_slice(VERSION);
    input.extend_from_slice(&(id.len() as u64).to_be_bytes());
    input.extend_from_slice(id.as_bytes());
    input.extend_from_slice(key);
    input.extend_from_slice(&(recipient.len() as u64).to_be_bytes());
    input.extend_from_slice(recipient.as_bytes());
    input.extend_from_slice(&entry.tls_spki_sha256);
    let mut h = ring::digest::digest(&ring::digest::SHA512, &input);
    for _ in 0..ITERATIONS {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
        ctx.update(h.as_ref());
        ctx.update(key);
        h = ctx.finish();
    }
    let bytes = h.as_ref();
    (0..GROUPS)
        .map(|i| {
            let chunk = bytes.get(i * 5..i * 5 + 5).unwrap_or_default();
            let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::directory::Attributes;
    use crate::core::sign::PublicKey;
    use crate::ids::{PartyKind, SpiffeId};

    fn entry(key: u8, recipient: &str) -> DirectoryEntry {
        DirectoryEntry {
            id: SpiffeId::new("example.org", PartyKind::User, "alice").unwrap(),
            age_recipient: Some(recipient.to_owned()),
            signing_key: PublicKey([key; 32]),
            tls_spki_sha256: [7; 32],
            attributes: Attributes::default(),
            serial: 1,
            not_before: 0,
            not_after: 1,
            enrolled_by: String::new(),
            rotation: None,
        }
    }

    #[test]
    fn thirty_digits_that_change_with_any_key_and_not_with_the_serial() {
        let a = safety_number(&entry(1, "age1example"));
        assert_eq!(a.len(), 6 * 5 + 5);
        assert!(a
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        // The same keys under a later serial or validity: the same number.
        let mut later = entry(1, "age1example");
        later.serial = 9;
        later.not_after = 99;
        assert_eq!(safety_number(&later), a);
        // Any key changed: another number.
        assert_ne!(safety_number(&entry(2, "age1example")), a);
        assert_ne!(safety_number(&entry(1, "age1other")), a);
        let mut tls = entry(1, "age1example");
        tls.tls_spki_sha256 = [8; 32];
        assert_ne!(safety_number(&tls), a);
    }

    #[test]
    fn the_number_is_the_documented_computation() {
        // Recomputed here from the module doc's description, step by step, so a change to the
        // format cannot pass unnoticed.
        let e = entry(3, "age1pq1x");
        let id = e.id.to_string();
        let mut input = b"sealrelay-safety-number-v1".to_vec();
        input.extend_from_slice(&(id.len() as u64).to_be_bytes());
        input.extend_from_slice(id.as_bytes());
        input.extend_from_slice(&[3; 32]);
        input.extend_from_slice(&8u64.to_be_bytes());
        input.extend_from_slice(b"age1pq1x");
        input.extend_from_slice(&[7; 32]);
        let mut h = ring::digest::digest(&ring::digest::SHA512, &input)
            .as_ref()
            .to_vec();
        for _ in 0..5200 {
            let mut next = h.clone();
            next.extend_from_slice(&[3; 32]);
            h = ring::digest::digest(&ring::digest::SHA512, &next)
                .as_ref()
                .to_vec();
        }
        let groups: Vec<String> = h
            .chunks(5)
            .take(6)
            .map(|c| {
                let n = c.iter().fold(0u64, |acc, b| acc * 256 + u64::from(*b));
                format!("{:05}", n % 100_000)
            })
            .collect();
        assert_eq!(safety_number(&e), groups.join(" "));
    }
}
