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

/// Largest signed checkpoint note we parse: room for the log's signature and 32 cosignatures
/// with names of up to 256 bytes (C2SP signed-note asks for at least 16 signatures).
pub const MAX_CHECKPOINT_LEN: usize = 16 * 1024;
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
        Ok(format!("{text}\n{}", signature_line(&vk.name, &blob)))
    }

    /// Parses a signed note and verifies it with `vk` (whose name must be the origin).
    /// Signature lines of other keys (witness cosignatures among them) are skipped.
    pub fn verify(note: &str, vk: &VerifierKey) -> Result<Checkpoint> {
        let parsed = Note::split(note)?;
        let cp = Checkpoint::parse_text(parsed.text)?;
        if cp.origin != vk.name {
            return Err(bad(&format!(
                "origin {:?} is not the log key's name {:?}",
                cp.origin, vk.name
            )));
        }
        let id = vk.key_id();
        let mut verified = false;
        for line in &parsed.signatures {
            if line.name != vk.name || line.blob.len() != 68 || line.blob.get(..4) != Some(&id[..])
            {
                continue; // another signer's line
            }
            vk.key
                .verify_strict(
                    parsed.text.as_bytes(),
                    line.blob.get(4..).unwrap_or_default(),
                )
                .map_err(|e| bad(&format!("log signature: {e}")))?;
            verified = true;
        }
        if !verified {
            return Err(bad("no valid signature by the log key"));
        }
        Ok(cp)
    }

    /// Parses a checkpoint's note text (origin, size and root lines, each ending in a
    /// newline), strictly: no extension lines, canonical decimal, a 32-byte root.
    pub fn parse_text(text: &str) -> Result<Checkpoint> {
        let mut lines = text.split_terminator('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(bad(
                "the note must have exactly an origin, a size and a root line",
            ));
        };
        if origin.is_empty() || !text.ends_with('\n') {
            return Err(bad("malformed note text"));
        }
        let size =
            parse_decimal(size).ok_or_else(|| bad("tree size is not a canonical decimal"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root is not 32 bytes of base64"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The note text (what the log and witnesses sign).
    pub fn note_text(&self) -> String {
        self.text()
    }
}

fn bad(why: &str) -> Error {
    Error::verification(format!("checkpoint: {why}"))
}

/// An ASCII decimal with no leading zeroes (`0` itself allowed), as C2SP formats require.
pub fn parse_decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && !(s.len() > 1 && s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// A C2SP signed note split into its text and its signature lines.
#[derive(Debug)]
pub struct Note<'a> {
    /// The text, with its final newline (what every signature covers).
    pub text: &'a str,
    pub signatures: Vec<SignatureLine<'a>>,
}

/// One `— <name> <base64>` line of a signed note.
#[derive(Debug)]
pub struct SignatureLine<'a> {
    pub name: &'a str,
    pub blob: Vec<u8>,
}

impl<'a> Note<'a> {
    /// Splits a signed note (C2SP `signed-note`): text, the last blank line, then one or more
    /// signature lines, each ending in a newline. Control characters other than newline are
    /// refused.
    pub fn split(note: &'a str) -> Result<Note<'a>> {
        if note.len() > MAX_CHECKPOINT_LEN {
            return Err(bad("too large"));
        }
        if note.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(bad("control characters other than newline"));
        }
        // The text ends at the last blank line.
        let cut = note
            .rfind("\n\n")
            .ok_or_else(|| bad("not a signed note (no blank line)"))?;
        let text = note.get(..cut + 1).unwrap_or_default();
        let sigs = note.get(cut + 2..).unwrap_or_default();
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(bad("signature lines must end with a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            let rest = line
                .strip_prefix(DASH)
                .ok_or_else(|| bad("malformed signature line"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("malformed signature line"))?;
            if name.is_empty() || b64.contains(' ') {
                return Err(bad("malformed signature line"));
            }
            let blob = B64
                .decode(b64)
                .map_err(|_| bad("signature is not base64"))?;
            if blob.len() < 5 {
                return Err(bad("signature too short"));
            }
            signatures.push(SignatureLine { name, blob });
        }
        Ok(Note { text, signatures })
    }
}

/// The last few notes one party verified, with what they said: a note seen again (the
/// directory's checkpoint, unchanged until a key is enrolled, is checked at every grant) costs
/// a comparison instead of a signature check. Exactly the same note under exactly the same key
/// verifies the same way every time, so nothing is trusted that was not verified once. Kept per
/// party (an agent's pins, a client's checkpoint state), never shared between parties.
#[derive(Debug, Default)]
pub struct VerifiedNotes(std::sync::Mutex<Vec<(VerifierKey, String, Checkpoint)>>);

impl VerifiedNotes {
    /// How many notes are remembered (the newest; a note is at most a few KiB).
    const KEPT: usize = 4;

    /// [`Checkpoint::verify`], remembered.
    pub fn verify(&self, note: &str, vk: &VerifierKey) -> Result<Checkpoint> {
        if let Some(cp) = self.kept(note, vk) {
            return Ok(cp);
        }
        let cp = Checkpoint::verify(note, vk)?;
        // The list is whole at every step, so a panic elsewhere leaves it usable.
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !kept.iter().any(|(k, n, _)| k == vk && n == note) {
            if kept.len() >= Self::KEPT {
                kept.remove(0);
            }
            kept.push((vk.clone(), note.to_owned(), cp.clone()));
        }
        Ok(cp)
    }

    fn kept(&self, note: &str, vk: &VerifierKey) -> Option<Checkpoint> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter()
            .find(|(k, n, _)| k == vk && n == note)
            .map(|(_, _, cp)| cp.clone())
    }
}

/// A signature line for a note: `— <name> <base64(blob)>\n`.
pub fn signature_line(name: &str, blob: &[u8]) -> String {
    format!("{DASH}{name} {}\n", B64.encode(blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remembered note is only ever the same bytes under the same key: an altered note, or
    /// the same note under another key, is verified afresh (and refused).
    #[test]
    fn remembered_notes_are_exactly_the_verified_ones() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::new("example.org/sealrelay/log", key.public()).unwrap();
        let other = SigningKey::generate().unwrap();
        let other_vk = VerifierKey::new("example.org/sealrelay/log", other.public()).unwrap();
        let cp = Checkpoint {
            origin: vk.name.clone(),
            size: 3,
            root: [7; 32],
        };
        let note = cp.sign(&key, &vk).unwrap();
        let notes = VerifiedNotes::default();
        for _ in 0..2 {
            assert_eq!(notes.verify(&note, &vk).unwrap(), cp);
        }
        // The same text with its signature altered, or with a second line under the log's
        // name and key id whose signature is garbage: refused, and refused again (nothing
        // unverified is remembered).
        let sig_line = note.lines().last().unwrap().to_owned();
        let mut bad_sig = sig_line.clone().into_bytes();
        let at = bad_sig.len() - 5;
        bad_sig[at] = if bad_sig[at] == b'A' { b'B' } else { b'A' };
        let bad_sig = note.replace(&sig_line, std::str::from_utf8(&bad_sig).unwrap());
        let mut blob = vk.key_id().to_vec();
        blob.extend_from_slice(&[9u8; 64]);
        let garbage_line = format!("{note}{}", signature_line(&vk.name, &blob));
        let altered = note.replacen("\n3\n", "\n4\n", 1);
        for bad in [&bad_sig, &garbage_line, &altered] {
            assert_ne!(bad, &note);
            for _ in 0..2 {
                assert!(notes.verify(bad, &vk).is_err(), "{bad}");
            }
        }
        for _ in 0..2 {
            assert!(notes.verify(&note, &other_vk).is_err());
        }
        // Many other notes push it out; it still verifies (afresh).
        for size in 10..20 {
            let c = Checkpoint { size, ..cp.clone() };
            notes.verify(&c.sign(&key, &vk).unwrap(), &vk).unwrap();
        }
        assert_eq!(notes.verify(&note, &vk).unwrap(), cp);
        assert!(notes.0.lock().unwrap().len() <= VerifiedNotes::KEPT);
    }

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
