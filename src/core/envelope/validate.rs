//! What the relay checks about an envelope without any key: a well-formed age v1 header with
//! exactly one recipient stanza (the post-quantum hybrid, or X25519 where the relay allows it)
//! and at most one bounded grease stanza (the Rust age crate adds one), a body whose length fits the STREAM arithmetic, and a payload that is statistically
//! indistinguishable from random bytes (so plaintext behind a forged header is refused).
//!
//! [`EnvelopeValidator`] is incremental: the relay feeds it bytes as they stream in and calls
//! [`EnvelopeValidator::finish`] at the end; memory stays bounded by the header cap.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;

use super::header::{Header, Stanza};
use super::stream;
use super::EnvelopeError;

/// Largest header the relay accepts: one hybrid stanza (a 1120-byte enc, 1494 base64
/// characters), one grease stanza, the MAC.
pub const MAX_RELAY_HEADER_LEN: usize = 2048;
/// Bounds on the grease stanza (the age crate writes tags of 1-8 characters plus `-grease`,
/// at most 4 arguments of 1-8 characters, and bodies under 100 bytes).
pub const MAX_GREASE_TAG_LEN: usize = 32;
pub const MAX_GREASE_ARGS: usize = 4;
pub const MAX_GREASE_ARG_LEN: usize = 16;
pub const MAX_GREASE_BODY_LEN: usize = 128;
/// Randomness windows: chi-square of byte counts over each 64 KiB of payload (and the final
/// window when it holds at least 1 KiB). For random bytes the statistic has 255 degrees of
/// freedom (mean 255, sd 22.6); 800 is 24 sd out, which random data never reaches, while text,
/// JSON or other plaintext lands in the thousands.
pub const WINDOW: usize = 64 * 1024;
pub const MIN_CHI_WINDOW: usize = 1024;
pub const CHI_SQUARE_LIMIT: f64 = 800.0;

/// Checks the header's stanzas against the relay's rule: exactly one recipient stanza — a
/// post-quantum hybrid `mlkem768x25519` stanza (parsed strictly), or, where `allow_x25519`,
/// one X25519 stanza — never a mixture, and at most one bounded grease stanza.
pub fn check_stanzas(stanzas: &[Stanza], allow_x25519: bool) -> Result<(), EnvelopeError> {
    let invalid = |m: &str| Err(EnvelopeError::Invalid(m.to_owned()));
    let (mut x25519, mut hybrid, mut grease) = (0, 0, 0);
    for s in stanzas {
        if s.tag == "X25519" {
            x25519 += 1;
            let share_ok = s.args.len() == 1
                && s.args
                    .first()
                    .and_then(|a| B64.decode(a).ok().filter(|b| B64.encode(b) == *a))
                    .is_some_and(|b| b.len() == 32);
            if !share_ok || s.body.len() != 32 {
                return invalid("the X25519 stanza is malformed");
            }
        } else if s.tag == super::hybrid::TAG {
            hybrid += 1;
            super::hybrid::check_stanza(&s.to_age()).map_err(EnvelopeError::Invalid)?;
        } else if s.tag.ends_with("-grease") {
            grease += 1;
            if s.tag.len() > MAX_GREASE_TAG_LEN
                || s.args.len() > MAX_GREASE_ARGS
                || s.args.iter().any(|a| a.len() > MAX_GREASE_ARG_LEN)
                || s.body.len() > MAX_GREASE_BODY_LEN
            {
                return invalid("the grease stanza is larger than the age crate ever writes");
            }
        } else {
            return Err(EnvelopeError::Invalid(format!(
                "a {:?} stanza is not allowed: envelopes are sealed to exactly one recipient (mlkem768x25519, or X25519 where allowed)",
                crate::ids::truncate_for_message(&s.tag)
            )));
        }
    }
    if grease > 1 {
        return invalid("there is more than one grease stanza");
    }
    match (hybrid, x25519) {
        (1, 0) => Ok(()),
        (0, 1) if allow_x25519 => Ok(()),
        (0, 1) => invalid(
            "the envelope is sealed to an X25519 recipient, but this relay requires post-quantum recipients (require_post_quantum): seal to the user's age1pq1 hybrid recipient",
        ),
        (0, 0) => invalid("there is no recipient stanza"),
        (1.., 1..) => invalid(
            "the envelope mixes a post-quantum and an X25519 recipient (which would undo the post-quantum protection)",
        ),
        _ => invalid("there is more than one recipient stanza (an envelope has exactly one recipient)"),
    }
}

fn chi_square(counts: &[u64; 256], n: u64) -> f64 {
    let expected = n as f64 / 256.0;
    counts
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum()
}

/// Incremental validator for an envelope streaming in.
pub struct EnvelopeValidator {
    header_buf: Vec<u8>,
    header_len: Option<usize>,
    payload_len: u64,
    counts: [u64; 256],
    window_fill: usize,
    printable: u64,
    allow_x25519: bool,
}

impl Default for EnvelopeValidator {
    fn default() -> Self {
        Self::new()
    }
}

/// What a valid envelope looks like from the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub header_len: u64,
    /// Bytes after the header: 16-byte nonce plus STREAM.
    pub payload_len: u64,
}

impl EnvelopeValidator {
    pub fn new() -> Self {
        EnvelopeValidator {
            header_buf: Vec::with_capacity(256),
            header_len: None,
            payload_len: 0,
            counts: [0; 256],
            window_fill: 0,
            printable: 0,
            allow_x25519: false,
        }
    }

    /// Also accept one X25519 stanza (a relay with `require_post_quantum = false`).
    pub fn allowing_x25519(mut self, allow: bool) -> Self {
        self.allow_x25519 = allow;
        self
    }

    /// Feeds the next bytes. Fails as soon as the envelope is known to be invalid.
    pub fn update(&mut self, data: &[u8]) -> Result<(), EnvelopeError> {
        if self.header_len.is_none() {
            // Accumulate until the MAC line ends; the header is small and capped.
            let room = MAX_RELAY_HEADER_LEN.saturating_sub(self.header_buf.len());
            let take = data.len().min(room);
            let before = self.header_buf.len();
            self.header_buf.extend_from_slice(&data[..take]);
            if let Some(nl) = self.header_buf.iter().position(|&b| b == b'\n') {
                if self.header_buf[..=nl] != *super::header::VERSION_LINE {
                    return Err(EnvelopeError::Invalid(
                        "not an age v1 file (the first line is not age-encryption.org/v1)".into(),
                    ));
                }
            }
            if let Some(end) = find_header_end(&self.header_buf) {
                let (header, len) = Header::parse(&mut &self.header_buf[..end])?;
                if len != end {
                    return Err(EnvelopeError::Internal("header length mismatch"));
                }
                check_stanzas(&header.stanzas, self.allow_x25519)?;
                self.header_len = Some(end);
                self.header_buf = Vec::new();
                // The bytes of `data` past the header's end are the start of the payload.
                let payload_start = end.saturating_sub(before);
                return self.update_payload_after(data.get(payload_start..).unwrap_or_default());
            }
            if self.header_buf.len() >= MAX_RELAY_HEADER_LEN {
                return Err(EnvelopeError::Invalid(format!(
                    "the age header is longer than {MAX_RELAY_HEADER_LEN} bytes"
                )));
            }
            return Ok(());
        }
        self.update_payload_after(data)
    }

    fn update_payload_after(&mut self, data: &[u8]) -> Result<(), EnvelopeError> {
        let mut data = data;
        while !data.is_empty() {
            let room = WINDOW - self.window_fill;
            let take = room.min(data.len());
            self.feed_payload(&data[..take]);
            data = &data[take..];
            if self.window_fill == WINDOW {
                self.close_window()?;
            }
        }
        Ok(())
    }

    fn feed_payload(&mut self, data: &[u8]) {
        // The printable count only matters for payloads under one chi-square window.
        let already = usize::try_from(self.payload_len).unwrap_or(usize::MAX);
        let head = data.len().min(MIN_CHI_WINDOW.saturating_sub(already));
        for &b in &data[..head] {
            if b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.printable += 1;
            }
        }
        // Four interleaved histograms avoid a store-to-load dependency on repeated bytes.
        let mut lanes = [[0u32; 256]; 4];
        let mut quads = data.chunks_exact(4);
        for q in quads.by_ref() {
            lanes[0][usize::from(q[0])] += 1;
            lanes[1][usize::from(q[1])] += 1;
            lanes[2][usize::from(q[2])] += 1;
            lanes[3][usize::from(q[3])] += 1;
        }
        for &b in quads.remainder() {
            lanes[0][usize::from(b)] += 1;
        }
        for (i, c) in self.counts.iter_mut().enumerate() {
            *c += u64::from(lanes[0][i] + lanes[1][i] + lanes[2][i] + lanes[3][i]);
        }
        self.window_fill += data.len();
        self.payload_len += data.len() as u64;
    }

    fn close_window(&mut self) -> Result<(), EnvelopeError> {
        let n = self.window_fill as u64;
        if self.window_fill >= MIN_CHI_WINDOW && chi_square(&self.counts, n) > CHI_SQUARE_LIMIT {
            return Err(EnvelopeError::Invalid(
                "the payload is not ciphertext (its bytes are far from random: plaintext behind a forged header?)".into(),
            ));
        }
        self.counts = [0; 256];
        self.window_fill = 0;
        Ok(())
    }

    /// Checks the lengths and the last window once all bytes are in.
    pub fn finish(mut self) -> Result<Shape, EnvelopeError> {
        let header_len = match self.header_len {
            Some(n) => n,
            None => {
                let n = self.header_buf.len().min(super::header::VERSION_LINE.len());
                return Err(EnvelopeError::Invalid(
                    if self.header_buf.get(..n) == super::header::VERSION_LINE.get(..n) {
                        "the input ends before the age header does"
                    } else {
                        "not an age v1 file (the first line is not age-encryption.org/v1)"
                    }
                    .into(),
                ));
            }
        };
        let total_payload = self.payload_len;
        // Short payloads are too small for chi-square: refuse ones that are almost all
        // printable (random bytes are ~38% printable; 7 standard deviations above that).
        if total_payload < MIN_CHI_WINDOW as u64 && total_payload >= 32 {
            let n = total_payload as f64;
            let p = 98.0 / 256.0;
            let limit = p * n + 7.0 * (n * p * (1.0 - p)).sqrt();
            if self.printable as f64 > limit {
                return Err(EnvelopeError::Invalid(
                    "the payload is not ciphertext (it is mostly printable text: plaintext behind a forged header?)".into(),
                ));
            }
        }
        // A final window too short for chi-square (at the end of a longer payload) gets the
        // same printable test, on its own bytes.
        if total_payload >= MIN_CHI_WINDOW as u64
            && self.window_fill >= 32
            && self.window_fill < MIN_CHI_WINDOW
        {
            let printable: u64 = self
                .counts
                .iter()
                .enumerate()
                .filter(|(b, _)| {
                    let b = *b as u8;
                    b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\r' | b'\t')
                })
                .map(|(_, c)| *c)
                .sum();
            let n = self.window_fill as f64;
            let p = 98.0 / 256.0;
            if printable as f64 > p * n + 7.0 * (n * p * (1.0 - p)).sqrt() {
                return Err(EnvelopeError::Invalid(
                    "the payload is not ciphertext (its last bytes are mostly printable text: plaintext behind a forged header?)".into(),
                ));
            }
        }
        if self.window_fill > 0 {
            self.close_window()?;
        }
        let stream_len = total_payload.checked_sub(16).ok_or_else(|| {
            EnvelopeError::Invalid("the payload is shorter than its 16-byte nonce".into())
        })?;
        if !stream::is_valid_stream_len(stream_len) {
            return Err(EnvelopeError::Invalid(format!(
                "a {stream_len}-byte body cannot be an age STREAM (chunks are 65,536 + 16 bytes, with a non-empty final chunk)"
            )));
        }
        Ok(Shape {
            header_len: header_len as u64,
            payload_len: total_payload,
        })
    }
}

/// The end of the header (just past the MAC line's newline), if it is in `buf`.
fn find_header_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + pos];
        if line.starts_with(b"--- ") {
            return Some(start + pos + 1);
        }
        start += pos + 1;
    }
    None
}

/// Validates a whole envelope from a reader (streaming; memory bounded).
pub fn validate_reader<R: std::io::Read>(r: &mut R) -> Result<Shape, EnvelopeError> {
    validate_reader_with(r, false)
}

/// [`validate_reader`], accepting one X25519 stanza too when `allow_x25519`.
pub fn validate_reader_with<R: std::io::Read>(
    r: &mut R,
    allow_x25519: bool,
) -> Result<Shape, EnvelopeError> {
    let mut v = EnvelopeValidator::new().allowing_x25519(allow_x25519);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(EnvelopeError::Io(e)),
        };
        v.update(&buf[..n])?;
    }
    v.finish()
}
