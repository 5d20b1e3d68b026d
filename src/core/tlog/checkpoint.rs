//! Checkpoints in the C2SP `tlog-checkpoint` format, as C2SP signed notes:
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, base64>\n
//! \n
//! — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\n
//! ```
//!
//! The signature covers the note text (the first three lines, each with its newline). Parsing is
//! strict: canonical decimal, a 32-byte root, no extra text lines, and the signature line of the
//! expected key must verify under the strict Ed25519 rule.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::Hash;
use crate::core::sign::{SigningKey, VerifierKey};
use crate::error::{Error, Result};

/// Largest checkpoint text we parse.
pub const MAX_CHECKPOINT_LEN: usize = 4096;
const DASH: &str = "\u{2014} ";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// The signed note.
    pub fn sign(&self, key: &SigningKey, vk: &VerifierKey) -> Result<String> {
        if vk.key != key.public() || vk.name != self.origin {
            return Err(Error::internal(
                "checkpoint signed with a key that does not match its origin",
            ));
        }
        let text = self.text();
        let sig = key.sign(text.as_bytes());
        let mut blob = vk.key_id().to_vec();
        blob.extend_from_slice(&sig);
        Ok(format!("{text}\n{DASH}{} {}\n", vk.name, B64.encode(blob)))
    }

    /// Parses a signed note and verifies it with `vk` (whose name must be the origin).
    pub fn verify(note: &str, vk: &VerifierKey) -> Result<Checkpoint> {
        let bad = |why: &str| Error::verification(format!("checkpoint: {why}"));
        if note.len() > MAX_CHECKPOINT_LEN {
            return Err(bad("too large"));
        }
        let (text, sigs) = note
            .split_once("\n\n")
            .ok_or_else(|| bad("not a signed note (no blank line)"))?;
        let text = format!("{text}\n");
        let mut lines = text.lines();
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(bad(
                "the note must have exactly an origin, a size and a root line",
            ));
        };
        if origin != vk.name {
            return Err(bad(&format!(
                "origin {origin:?} is not the log key's name {:?}",
                vk.name
            )));
        }
        let canonical_size =
            size.bytes().all(|b| b.is_ascii_digit()) && !(size.len() > 1 && size.starts_with('0'));
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| canonical_size)
            .ok_or_else(|| bad("tree size is not a canonical decimal"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root is not 32 bytes of base64"))?;
        if !sigs.ends_with('\n') {
            return Err(bad("signature lines must end with a newline"));
        }
        let mut verified = false;
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(DASH)
                .ok_or_else(|| bad("malformed signature line"))?;
            let (name, b64) = rest
                .rsplit_once(' ')
                .ok_or_else(|| bad("malformed signature line"))?;
            let blob = B64
                .decode(b64)
                .map_err(|_| bad("signature is not base64"))?;
            if name != vk.name || blob.len() != 68 || blob.get(..4) != Some(vk.key_id().as_slice())
            {
                continue; // another signer's line
            }
            vk.key
                .verify_strict(text.as_bytes(), blob.get(4..).unwrap_or_default())
                .map_err(|e| bad(&format!("log signature: {e}")))?;
            verified = true;
        }
        if !verified {
            return Err(bad("no valid signature by the log key"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::new("example.org/sealrelay/log", key.public()).unwrap();
        let cp = Checkpoint {
            origin: vk.name.clone(),
            size: 42,
            root: [7u8; 32],
        };
        let note = cp.sign(&key, &vk).unwrap();
        assert!(note.contains("\n\n\u{2014} example.org/sealrelay/log "));
        assert_eq!(Checkpoint::verify(&note, &vk).unwrap(), cp);
        // Every byte change is caught (or makes the note unreadable).
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            let mut t = bytes.to_vec();
            t[i] ^= 0x01;
            if let Ok(s) = std::str::from_utf8(&t) {
                assert!(Checkpoint::verify(s, &vk).is_err(), "byte {i}");
            }
        }
        let other = SigningKey::generate().unwrap();
        let ovk = VerifierKey::new("example.org/sealrelay/log", other.public()).unwrap();
        assert!(Checkpoint::verify(&note, &ovk).is_err());
        assert!(Checkpoint::verify(&note.replace("\n42\n", "\n042\n"), &vk).is_err());
    }
}
