//! The age v1 header, parsed strictly and serialized byte-identically.
//!
//! ```text
//! age-encryption.org/v1\n
//! -> TAG ARG...\n            one line per stanza: "-> " then 1+ space-separated VCHAR strings
//! BODY\n                     canonical unpadded base64, 64 columns, final line shorter (maybe empty)
//! ...
//! --- MAC\n                  HMAC-SHA256 of everything up to and including "---", base64
//! ```
//!
//! Unlike the age crate's parser this refuses the legacy forms (a body missing its final short
//! line), so it can serve as the relay's validator.

use std::io::{BufRead, Read};

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;

use super::EnvelopeError;

pub const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";
/// Longest header we read (the relay accepts far less; see `validate`).
pub const MAX_HEADER_LEN: usize = 64 * 1024;
/// Most stanzas a header may hold.
pub const MAX_STANZAS: usize = 64;
/// Columns of a full body line.
pub const BODY_COLUMNS: usize = 64;
const MAC_PREFIX: &[u8] = b"--- ";
const STANZA_PREFIX: &[u8] = b"-> ";

/// One recipient stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    pub tag: String,
    pub args: Vec<String>,
    pub body: Vec<u8>,
}

impl Stanza {
    pub fn to_age(&self) -> age_core::format::Stanza {
        age_core::format::Stanza {
            tag: self.tag.clone(),
            args: self.args.clone(),
            body: self.body.clone(),
        }
    }
    pub fn from_age(s: &age_core::format::Stanza) -> Self {
        Stanza {
            tag: s.tag.clone(),
            args: s.args.clone(),
            body: s.body.clone(),
        }
    }
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub stanzas: Vec<Stanza>,
    pub mac: [u8; 32],
}

/// Reads one LF-terminated header line into `line` (without the LF), enforcing the cap.
fn next_line<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    total: &mut usize,
) -> Result<(), EnvelopeError> {
    line.clear();
    let budget = MAX_HEADER_LEN.saturating_sub(*total);
    let n = r
        .by_ref()
        .take(u64::try_from(budget).unwrap_or(u64::MAX).saturating_add(1))
        .read_until(b'\n', line)
        .map_err(EnvelopeError::Io)?;
    *total += n;
    if *total > MAX_HEADER_LEN {
        return Err(EnvelopeError::Header(format!(
            "header is longer than {MAX_HEADER_LEN} bytes"
        )));
    }
    if line.last() != Some(&b'\n') {
        return Err(EnvelopeError::Header(
            "header ends early (truncated file?)".into(),
        ));
    }
    line.pop();
    if line.contains(&b'\r') {
        return Err(EnvelopeError::Header(
            "header holds a carriage return".into(),
        ));
    }
    Ok(())
}

fn is_vchar_string(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl Header {
    /// The bytes the MAC covers: everything up to and including `---`.
    pub fn mac_input(stanzas: &[Stanza]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(VERSION_LINE);
        for s in stanzas {
            out.extend_from_slice(STANZA_PREFIX);
            out.extend_from_slice(s.tag.as_bytes());
            for a in &s.args {
                out.push(b' ');
                out.extend_from_slice(a.as_bytes());
            }
            out.push(b'\n');
            let b64 = B64.encode(&s.body);
            let mut lines = b64.as_bytes().chunks(BODY_COLUMNS);
            // Full lines, then a final line shorter than 64 columns (empty when the encoding is
            // a multiple of 64, including an empty body).
            let mut last_full = true;
            for line in lines.by_ref() {
                out.extend_from_slice(line);
                out.push(b'\n');
                last_full = line.len() == BODY_COLUMNS;
            }
            if last_full {
                out.push(b'\n');
            }
        }
        out.extend_from_slice(b"---");
        out
    }

    /// The whole header, byte-identical to what [`Header::parse`] read.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Self::mac_input(&self.stanzas);
        out.push(b' ');
        out.extend_from_slice(B64.encode(self.mac).as_bytes());
        out.push(b'\n');
        out
    }

    /// Reads a header from `r`, leaving `r` at the first payload byte. Returns the header and
    /// its length in bytes.
    pub fn parse<R: BufRead>(r: &mut R) -> Result<(Header, usize), EnvelopeError> {
        let mut total = 0usize;
        let mut line = Vec::with_capacity(128);
        next_line(r, &mut line, &mut total)?;
        if line.as_slice() != &VERSION_LINE[..VERSION_LINE.len() - 1] {
            return Err(if line.starts_with(b"age-encryption.org/") {
                EnvelopeError::Header("unsupported age version".into())
            } else if line.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
                EnvelopeError::Header(
                    "armored (PEM) age files are not supported: decode the armor first (`age -d` handles it)".into(),
                )
            } else {
                EnvelopeError::Header("not an age file (no age-encryption.org/v1 line)".into())
            });
        }

        let mut stanzas = Vec::new();
        next_line(r, &mut line, &mut total)?;
        loop {
            if let Some(rest) = line.strip_prefix(MAC_PREFIX) {
                let mac_b64 = std::str::from_utf8(rest)
                    .map_err(|_| EnvelopeError::Header("MAC is not base64".into()))?;
                let mac: [u8; 32] = B64
                    .decode(mac_b64)
                    .ok()
                    .and_then(|m| m.try_into().ok())
                    .ok_or_else(|| {
                        EnvelopeError::Header("MAC is not 32 bytes of canonical base64".into())
                    })?;
                let header = Header { stanzas, mac };
                return Ok((header, total));
            }
            let rest = line.strip_prefix(STANZA_PREFIX).ok_or_else(|| {
                EnvelopeError::Header("expected a stanza (-> ...) or the MAC line (--- ...)".into())
            })?;
            if stanzas.len() >= MAX_STANZAS {
                return Err(EnvelopeError::Header(format!(
                    "more than {MAX_STANZAS} stanzas"
                )));
            }
            let mut parts = rest.split(|b| *b == b' ');
            let tag = parts.next().unwrap_or_default();
            if !is_vchar_string(tag) {
                return Err(EnvelopeError::Header(
                    "stanza has an empty or invalid type".into(),
                ));
            }
            let tag = String::from_utf8_lossy(tag).into_owned();
            let mut args = Vec::new();
            for a in parts {
                if !is_vchar_string(a) {
                    return Err(EnvelopeError::Header(
                        "stanza has an empty or invalid argument".into(),
                    ));
                }
                args.push(String::from_utf8_lossy(a).into_owned());
            }
            // Body lines: full 64-column lines, ended by one shorter line (maybe empty).
            let mut b64 = Vec::new();
            loop {
                next_line(r, &mut line, &mut total)?;
                if line.len() > BODY_COLUMNS {
                    return Err(EnvelopeError::Header(
                        "stanza body line is longer than 64 columns".into(),
                    ));
                }
                if line.starts_with(STANZA_PREFIX)
                    || line.starts_with(MAC_PREFIX)
                    || line.as_slice() == b"---"
                {
                    return Err(EnvelopeError::Header(
                        "stanza body lacks its final short line".into(),
                    ));
                }
                b64.extend_from_slice(&line);
                if line.len() < BODY_COLUMNS {
                    break;
                }
            }
            let body = B64.decode(&b64).map_err(|_| {
                EnvelopeError::Header("stanza body is not canonical unpadded base64".into())
            })?;
            stanzas.push(Stanza { tag, args, body });
            next_line(r, &mut line, &mut total)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body_len: usize) -> Header {
        Header {
            stanzas: vec![
                Stanza {
                    tag: "X25519".into(),
                    args: vec!["TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc".into()],
                    body: vec![7u8; 32],
                },
                Stanza {
                    tag: "x-grease".into(),
                    args: vec![],
                    body: vec![9u8; body_len],
                },
            ],
            mac: [1u8; 32],
        }
    }

    #[test]
    fn round_trips_byte_identically_at_every_body_length() {
        for len in 0..200 {
            let h = sample(len);
            let bytes = h.to_bytes();
            let mut r = std::io::Cursor::new(&bytes);
            let (parsed, n) = Header::parse(&mut r).unwrap();
            assert_eq!(parsed, h, "body length {len}");
            assert_eq!(n, bytes.len());
            assert_eq!(parsed.to_bytes(), bytes);
        }
    }

    #[test]
    fn refuses_legacy_and_malformed_forms() {
        let good = sample(48).to_bytes(); // 64 base64 columns: a full line, then an empty line
        let text = String::from_utf8(good.clone()).unwrap();
        let missing_final = text.replacen("\n\n", "\n", 1);
        assert!(Header::parse(&mut missing_final.as_bytes()).is_err());
        let crlf = text.replacen("\n", "\r\n", 1);
        assert!(Header::parse(&mut crlf.as_bytes()).is_err());
        let padded = sample(10).to_bytes();
        let padded = String::from_utf8(padded).unwrap().replacen(
            "CQkJCQkJCQkJCQ\n",
            "CQkJCQkJCQkJCQ==\n",
            1,
        );
        assert!(Header::parse(&mut padded.as_bytes()).is_err());
        assert!(Header::parse(&mut &good[..good.len() - 1]).is_err());
        assert!(Header::parse(&mut &b"age-encryption.org/v2\n"[..]).is_err());
    }
}
