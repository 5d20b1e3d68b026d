//! Witness cosignatures in the C2SP `tlog-cosignature` format (`cosignature/v1`, Ed25519):
//!
//! ```text
//! — <witness name> base64(4-byte key ID || 8-byte big-endian timestamp || 64-byte signature)
//! ```
//!
//! The key ID is `SHA-256(name || "\n" || 0x04 || public key)[:4]`; the signed message is
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's note text. A witness key is
//! written as a verifier key with algorithm byte 0x04: `<name>+<hash>+<base64(0x04 || key)>`.
//!
//! [`WitnessPolicy`] is what a client trusts: k of n witness keys must have cosigned a
//! checkpoint before it counts as witnessed.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::checkpoint::{signature_line, Note};
use crate::core::sign::{encode_vkey, note_key_id, parse_vkey, PublicKey, SigningKey};
use crate::error::{Error, Result};

/// The algorithm byte of Ed25519 cosignatures in key IDs and verifier keys.
pub const COSIGNATURE_ALG: u8 = 0x04;
/// Most witnesses a policy may name.
pub const MAX_WITNESSES: usize = 32;
/// Largest timestamp a cosignature may carry (2^63 - 1).
const MAX_TIME: u64 = i64::MAX as u64;

/// A witness's name and Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CosignerKey {
    pub name: String,
    pub key: PublicKey,
}

impl CosignerKey {
    pub fn new(name: &str, key: PublicKey) -> Result<Self> {
        // The same name rules as a log key.
        let vk = crate::core::sign::VerifierKey::new(name, key)?;
        Ok(CosignerKey { name: vk.name, key })
    }
    pub fn key_id(&self) -> [u8; 4] {
        note_key_id(&self.name, COSIGNATURE_ALG, &self.key)
    }
    /// `<name>+<hash>+<base64(0x04 || key)>`.
    pub fn encode(&self) -> String {
        encode_vkey(&self.name, COSIGNATURE_ALG, &self.key)
    }
    pub fn parse(s: &str) -> Result<Self> {
        let (name, key) = parse_vkey(s.trim(), COSIGNATURE_ALG, "a witness (cosignature/v1) key")?;
        CosignerKey::new(&name, key)
    }
}

/// The message a `cosignature/v1` signature covers.
pub fn message(note_text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{note_text}")
}

/// Cosigns a note text at `time`: the signature line to append to the note.
pub fn cosign(note_text: &str, time: u64, key: &SigningKey, who: &CosignerKey) -> Result<String> {
    if key.public() != who.key {
        return Err(Error::internal(
            "the witness key does not match its public key",
        ));
    }
    if time > MAX_TIME {
        return Err(Error::internal("cosignature time out of range"));
    }
    let sig = key.sign(message(note_text, time).as_bytes());
    let mut blob = Vec::with_capacity(76);
    blob.extend_from_slice(&who.key_id());
    blob.extend_from_slice(&time.to_be_bytes());
    blob.extend_from_slice(&sig);
    Ok(signature_line(&who.name, &blob))
}

/// The time of `who`'s valid cosignature on a signed note, or `None` if it has none. A line
/// with `who`'s name and key ID that does not verify makes the whole note invalid.
pub fn verify(note: &str, who: &CosignerKey) -> Result<Option<u64>> {
    let parsed = Note::split(note)?;
    verify_parsed(&parsed, who)
}

fn verify_parsed(parsed: &Note<'_>, who: &CosignerKey) -> Result<Option<u64>> {
    let id = who.key_id();
    let mut found = None;
    for line in &parsed.signatures {
        if line.name != who.name || line.blob.get(..4) != Some(&id[..]) {
            continue;
        }
        let bad =
            |why: &str| Error::verification(format!("cosignature by witness {}: {why}", who.name));
        let (Some(time), Some(sig), 76) =
            (line.blob.get(4..12), line.blob.get(12..), line.blob.len())
        else {
            return Err(bad("not a cosignature/v1 signature (wrong length)"));
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(time);
        let time = u64::from_be_bytes(t);
        if time > MAX_TIME {
            return Err(bad("timestamp out of range"));
        }
        who.key
            .verify_strict(message(parsed.text, time).as_bytes(), sig)
            .map_err(|e| bad(&e.to_string()))?;
        found = Some(found.map_or(time, |t: u64| t.max(time)));
    }
    Ok(found)
}

/// The one line of `answer` (signature lines a witness sent for `note`) that is a valid
/// cosignature by `who`, rebuilt in canonical form; other lines (junk, other keys) are dropped.
pub fn verified_line(note: &str, answer: &str, who: &CosignerKey) -> Option<String> {
    answer
        .split_inclusive('\n')
        .take(MAX_WITNESSES)
        .filter(|line| line.ends_with('\n'))
        .find(|line| matches!(verify(&format!("{note}{line}"), who), Ok(Some(_))))
        .map(str::to_owned)
}

/// The cosignature lines of a note (everything but the log's own signature), for moving
/// cosignatures from one copy of a note to another.
pub fn lines_of<'a>(note: &'a str, witnesses: &[CosignerKey]) -> Vec<&'a str> {
    let Some((_, sigs)) = note.split_once("\n\n") else {
        return Vec::new();
    };
    let prefixes: Vec<String> = witnesses
        .iter()
        .map(|w| format!("\u{2014} {} ", w.name))
        .collect();
    sigs.split_inclusive('\n')
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p.as_str())))
        .collect()
}

/// How many signature lines of a note are not the log's own (by name: unverified, an
/// indication only; [`WitnessPolicy::check`] verifies).
pub fn other_signature_lines(note: &str) -> usize {
    let Ok(parsed) = Note::split(note) else {
        return 0;
    };
    let origin = parsed.text.split('\n').next().unwrap_or_default();
    parsed
        .signatures
        .iter()
        .filter(|s| s.name != origin)
        .count()
}

/// k of n witnesses: what a client requires before it trusts a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessPolicy {
    pub witnesses: Vec<CosignerKey>,
    pub quorum: usize,
}

/// The policy file: `quorum = K` and `witnesses = ["<vkey>", …]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    quorum: Option<usize>,
    witnesses: Vec<String>,
}

/// What a policy check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witnessed {
    /// The witnesses whose cosignatures verified, with their timestamps.
    pub by: Vec<(String, u64)>,
}

impl WitnessPolicy {
    /// `quorum` of `witnesses` (all of them when `None`).
    pub fn new(witnesses: Vec<CosignerKey>, quorum: Option<usize>) -> Result<Self> {
        let distinct: BTreeSet<&CosignerKey> = witnesses.iter().collect();
        if witnesses.is_empty() || witnesses.len() > MAX_WITNESSES {
            return Err(Error::bad_input(format!(
                "a witness policy names 1 to {MAX_WITNESSES} witnesses"
            )));
        }
        let names: BTreeSet<&String> = witnesses.iter().map(|w| &w.name).collect();
        let keys: BTreeSet<&PublicKey> = witnesses.iter().map(|w| &w.key).collect();
        // One key under two names would count one party twice.
        if distinct.len() != witnesses.len()
            || names.len() != witnesses.len()
            || keys.len() != witnesses.len()
        {
            return Err(Error::bad_input(
                "a witness policy names each witness once (names and keys must differ)",
            ));
        }
        let quorum = quorum.unwrap_or(witnesses.len());
        if quorum == 0 || quorum > witnesses.len() {
            return Err(Error::bad_input(format!(
                "the witness quorum must be between 1 and the {} witnesses named",
                witnesses.len()
            )));
        }
        Ok(WitnessPolicy { witnesses, quorum })
    }

    /// Parses a policy file (TOML: `quorum = K`, `witnesses = ["<vkey>", …]`).
    pub fn parse_file(text: &str) -> Result<Self> {
        let f: PolicyFile = toml::from_str(text)
            .map_err(|e| Error::bad_input(format!("witness policy: {}", e.message())))?;
        let keys = f
            .witnesses
            .iter()
            .map(|k| CosignerKey::parse(k).map_err(|e| e.context("witness policy")))
            .collect::<Result<Vec<_>>>()?;
        WitnessPolicy::new(keys, f.quorum)
    }

    /// The policy's witnesses whose cosignatures on `note` verify (any number).
    pub fn cosigners(&self, note: &str) -> Result<Vec<(String, u64)>> {
        let parsed = Note::split(note)?;
        let mut by = Vec::new();
        for w in &self.witnesses {
            if let Some(t) = verify_parsed(&parsed, w)? {
                by.push((w.name.clone(), t));
            }
        }
        Ok(by)
    }

    /// Checks that at least `quorum` of the policy's witnesses cosigned `note`; the error is
    /// one line naming how many did and who is missing.
    pub fn check(&self, note: &str) -> Result<Witnessed> {
        let by = self.cosigners(note)?;
        let missing: Vec<&str> = self
            .witnesses
            .iter()
            .filter(|w| !by.iter().any(|(n, _)| *n == w.name))
            .map(|w| w.name.as_str())
            .collect();
        if by.len() < self.quorum {
            return Err(Error::verification(format!(
                "not witnessed: {} of the {} required witness cosignatures (missing: {})",
                by.len(),
                self.quorum,
                missing.join(", ")
            )));
        }
        Ok(Witnessed { by })
    }
}

#[cfg(test)]
mod tests;
