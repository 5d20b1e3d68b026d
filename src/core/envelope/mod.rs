//! Sealed envelopes: standard age v1 files (X25519 recipients), authenticated by a signed
//! submission statement, validated strictly by the relay, sealed and opened in parallel.
//!
//! * [`header`]: the strict age header codec (parse and serialize byte-identically);
//! * [`stream`]: the STREAM payload with ring's ChaCha20-Poly1305, chunks in parallel;
//! * [`validate`]: what the relay checks without any key (shape, lengths, randomness);
//! * [`pieces`]: the piece tree whose root is the ciphertext's digest;
//! * [`submission`]: the agent-signed `{grant, user, agent, digest, length}` statement.
//!
//! Keys come through the age crate's `Recipient` and `Identity` traits, the joint where
//! plugins and hardware keys can come in later.

mod chunks;
pub mod header;
pub mod hybrid;
pub mod keys;
pub mod pieces;
mod pipeline;
pub mod stream;
pub mod submission;
pub mod validate;

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};

use age::secrecy::ExposeSecret as _;
use age_core::format::FileKey;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};

use crate::error::{Error, ErrorKind};
use header::{Header, Stanza};

/// Why sealing or opening failed. Messages name no key material.
#[derive(Debug)]
pub enum EnvelopeError {
    Io(std::io::Error),
    /// The header is malformed (the file is not a well-formed age v1 file).
    Header(String),
    /// No stanza is for the given identity.
    NoMatch,
    /// The header MAC does not verify (the header was altered).
    Mac,
    /// The payload failed to authenticate or is truncated/extended.
    Payload(String),
    /// The recipient could not wrap the file key.
    Recipient(String),
    /// The relay's checks refused the envelope.
    Invalid(String),
    Internal(&'static str),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Io(e) => write!(f, "I/O error: {e}"),
            EnvelopeError::Header(m) => write!(f, "malformed age header: {m}"),
            EnvelopeError::NoMatch => {
                f.write_str("not sealed to this key: no recipient stanza matches this identity")
            }
            EnvelopeError::Mac => {
                f.write_str("the age header MAC does not verify (the header was altered)")
            }
            EnvelopeError::Payload(m) => write!(f, "payload failure: {m}"),
            EnvelopeError::Recipient(m) => write!(f, "cannot seal to this recipient: {m}"),
            EnvelopeError::Invalid(m) => write!(f, "not a valid sealrelay envelope: {m}"),
            EnvelopeError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl From<EnvelopeError> for Error {
    fn from(e: EnvelopeError) -> Self {
        let kind = match &e {
            EnvelopeError::Io(_) => ErrorKind::Io,
            EnvelopeError::Header(_) | EnvelopeError::Invalid(_) | EnvelopeError::Recipient(_) => {
                ErrorKind::BadInput
            }
            EnvelopeError::NoMatch | EnvelopeError::Mac | EnvelopeError::Payload(_) => {
                ErrorKind::Verification
            }
            EnvelopeError::Internal(_) => ErrorKind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}

fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> Result<[u8; 32], EnvelopeError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, hkdf::HKDF_SHA256)
        .map_err(|_| EnvelopeError::Internal("HKDF expand"))?;
    let mut out = [0u8; 32];
    okm.fill(&mut out)
        .map_err(|_| EnvelopeError::Internal("HKDF fill"))?;
    Ok(out)
}

fn header_mac(file_key: &FileKey, stanzas: &[Stanza]) -> Result<hmac::Tag, EnvelopeError> {
    let k = zeroize::Zeroizing::new(hkdf32(file_key.expose_secret(), &[], b"header")?);
    let key = hmac::Key::new(hmac::HMAC_SHA256, k.as_ref());
    Ok(hmac::sign(&key, &Header::mac_input(stanzas)))
}

/// Lengths of a sealed envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub plaintext_len: u64,
    pub ciphertext_len: u64,
}

/// Seals `input` to `recipient` as an age v1 file written to `output`, with the STREAM
/// payload sealed on `threads` threads.
pub fn seal<R: Read + ?Sized, W: Write + ?Sized>(
    recipient: &dyn age::Recipient,
    input: &mut R,
    output: &mut W,
    threads: usize,
) -> Result<Sealed, EnvelopeError> {
    seal_from(recipient, stream::Source::Reader(input), output, threads)
}

/// [`seal`] from a file (all of it), which the worker threads read at offsets; a file that
/// changes size meanwhile is an error.
pub fn seal_file<W: Write + ?Sized>(
    recipient: &dyn age::Recipient,
    input: &dyn stream::ReadAt,
    output: &mut W,
    threads: usize,
) -> Result<Sealed, EnvelopeError> {
    let end = input.size().map_err(EnvelopeError::Io)?;
    seal_from::<std::io::Empty, W>(
        recipient,
        stream::Source::File {
            file: input,
            start: 0,
            end,
        },
        output,
        threads,
    )
}

/// Where sealed bytes go: a writer, in order, or a file the worker threads write at offsets.
enum SealOut<'a, W: ?Sized> {
    Ordered(&'a mut W),
    At(&'a dyn stream::WriteAt),
}

fn seal_from<R: Read + ?Sized, W: Write + ?Sized>(
    recipient: &dyn age::Recipient,
    input: stream::Source<'_, R>,
    output: &mut W,
    threads: usize,
) -> Result<Sealed, EnvelopeError> {
    seal_into(recipient, input, SealOut::Ordered(output), threads)
}

fn seal_into<R: Read + ?Sized, W: Write + ?Sized>(
    recipient: &dyn age::Recipient,
    input: stream::Source<'_, R>,
    output: SealOut<'_, W>,
    threads: usize,
) -> Result<Sealed, EnvelopeError> {
    let rng = SystemRandom::new();
    let file_key = FileKey::try_init_with_mut(|k| rng.fill(k))
        .map_err(|_| EnvelopeError::Internal("no randomness for the file key"))?;
    let (age_stanzas, _labels) = recipient
        .wrap_file_key(&file_key)
        .map_err(|e| EnvelopeError::Recipient(e.to_string()))?;
    let stanzas: Vec<Stanza> = age_stanzas.iter().map(Stanza::from_age).collect();
    let mac = header_mac(&file_key, &stanzas)?;
    let mut mac_bytes = [0u8; 32];
    mac_bytes.copy_from_slice(mac.as_ref());
    let mut header = Header {
        stanzas,
        mac: mac_bytes,
    }
    .to_bytes();
    let header_len = header.len() as u64;
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce)
        .map_err(|_| EnvelopeError::Internal("no randomness for the nonce"))?;
    let payload_key =
        zeroize::Zeroizing::new(hkdf32(file_key.expose_secret(), &nonce, b"payload")?);
    header.extend_from_slice(&nonce);
    let plaintext_len = match output {
        SealOut::Ordered(out) => {
            out.write_all(&header).map_err(EnvelopeError::Io)?;
            stream::seal_from(&payload_key, input, out, threads)?
        }
        SealOut::At(file) => {
            file.write_all_at(&header, 0).map_err(EnvelopeError::Io)?;
            stream::seal_from_at(&payload_key, input, file, header.len() as u64, threads)?
        }
    };
    let ciphertext_len = header_len + 16 + stream::sealed_len(plaintext_len);
    Ok(Sealed {
        plaintext_len,
        ciphertext_len,
    })
}

/// [`seal`] into a file (a new or empty one) that the worker threads write at offsets: the
/// header first, then each batch's shares wherever they belong, so no thread copies everything
/// in order (`seal -o`). `input` is a file read at offsets too, else a reader.
pub fn seal_at<R: Read + ?Sized>(
    recipient: &dyn age::Recipient,
    input: SealInput<'_, R>,
    output: &dyn stream::WriteAt,
    threads: usize,
) -> Result<Sealed, EnvelopeError> {
    let source = match input {
        SealInput::Reader(r) => stream::Source::Reader(r),
        SealInput::File(f) => {
            let end = f.size().map_err(EnvelopeError::Io)?;
            stream::Source::File {
                file: f,
                start: 0,
                end,
            }
        }
    };
    seal_into::<R, std::io::Sink>(recipient, source, SealOut::At(output), threads)
}

/// What [`seal_at`] and [`open_at`] read: a reader in order, or a file at offsets.
pub enum SealInput<'a, R: ?Sized> {
    Reader(&'a mut R),
    File(&'a dyn stream::ReadAt),
}

/// [`open`] into a file that the worker threads write at offsets (`open -o`): each chunk that
/// authenticated is written at its place at once, so until this returns `Ok` the file holds
/// plaintext out of order and perhaps incomplete. Only for a temporary file that is kept only
/// on success: on any error, discard it.
pub fn open_at<R: Read + ?Sized>(
    identities: &[&dyn age::Identity],
    input: SealInput<'_, R>,
    output: &dyn stream::WriteAt,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    match input {
        SealInput::Reader(r) => {
            let mut reader = BufReader::with_capacity(64 * 1024, r);
            let (payload_key, _) = open_header(identities, &mut reader)?;
            stream::open_from_at(
                &payload_key,
                stream::Source::Reader(&mut reader),
                output,
                threads,
            )
        }
        SealInput::File(f) => {
            let end = f.size().map_err(EnvelopeError::Io)?;
            let mut reader = BufReader::with_capacity(4096, OffsetReader { src: f, pos: 0 });
            let (payload_key, start) = open_header(identities, &mut reader)?;
            let start = start as u64;
            stream::open_from_at::<std::io::Empty>(
                &payload_key,
                stream::Source::File {
                    file: f,
                    start,
                    end: end.max(start),
                },
                output,
                threads,
            )
        }
    }
}

/// Opens an age v1 file from `input` with `identities`, writing authenticated plaintext to
/// `output` in order. On a payload failure, what was written is exactly the plaintext of the
/// chunks that authenticated before the failure; on any other failure nothing is written.
pub fn open<R: Read + ?Sized, W: Write + ?Sized>(
    identities: &[&dyn age::Identity],
    input: &mut R,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let (payload_key, _) = open_header(identities, &mut reader)?;
    stream::open(&payload_key, &mut reader, output, threads)
}

/// [`open`] from a file (all of it): the header is read in order, then the worker threads
/// read the payload at offsets. Plaintext is released in order, as [`open`] releases it; a
/// file that changes size meanwhile is an error.
pub fn open_file<W: Write + ?Sized>(
    identities: &[&dyn age::Identity],
    input: &dyn stream::ReadAt,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    let end = input.size().map_err(EnvelopeError::Io)?;
    let mut reader = BufReader::with_capacity(4096, OffsetReader { src: input, pos: 0 });
    let (payload_key, start) = open_header(identities, &mut reader)?;
    let start = start as u64;
    stream::open_from::<std::io::Empty, W>(
        &payload_key,
        stream::Source::File {
            file: input,
            start,
            end: end.max(start),
        },
        output,
        threads,
    )
}

/// Reads a [`stream::ReadAt`] in order from an offset.
struct OffsetReader<'a> {
    src: &'a dyn stream::ReadAt,
    pos: u64,
}

impl Read for OffsetReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.src.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads and checks the header and the payload nonce: the payload key, and the bytes the
/// header and nonce take.
fn open_header<R: BufRead>(
    identities: &[&dyn age::Identity],
    reader: &mut R,
) -> Result<(zeroize::Zeroizing<[u8; 32]>, usize), EnvelopeError> {
    let (header, len) = Header::parse(reader)?;
    if header.stanzas.is_empty() {
        return Err(EnvelopeError::Header(
            "the header has no recipient stanzas".into(),
        ));
    }
    if header.stanzas.iter().any(|s| s.tag == "scrypt") {
        return Err(EnvelopeError::Header(if header.stanzas.len() > 1 {
            "an scrypt stanza must be the only stanza".into()
        } else {
            "passphrase-encrypted (scrypt) files are not supported by sealrelay: use `age -d`"
                .into()
        }));
    }
    let age_stanzas: Vec<age_core::format::Stanza> =
        header.stanzas.iter().map(Stanza::to_age).collect();
    let mut file_key = None;
    'outer: for stanza in &age_stanzas {
        for identity in identities {
            match identity.unwrap_stanza(stanza) {
                Some(Ok(k)) => {
                    file_key = Some(k);
                    break 'outer;
                }
                Some(Err(e)) => {
                    return Err(EnvelopeError::Header(format!(
                        "a {} stanza is malformed ({e})",
                        stanza.tag
                    )))
                }
                None => {}
            }
        }
    }
    let file_key = file_key.ok_or(EnvelopeError::NoMatch)?;
    let k = zeroize::Zeroizing::new(hkdf32(file_key.expose_secret(), &[], b"header")?);
    let key = hmac::Key::new(hmac::HMAC_SHA256, k.as_ref());
    hmac::verify(&key, &Header::mac_input(&header.stanzas), &header.mac)
        .map_err(|_| EnvelopeError::Mac)?;
    let mut nonce = [0u8; 16];
    let mut got = 0;
    while got < 16 {
        match reader.read(&mut nonce[got..]) {
            // The nonce belongs to the header's side of the file (the CCTV suite counts a
            // missing or short nonce as a header failure): nothing was released.
            Ok(0) => {
                return Err(EnvelopeError::Header(
                    "the payload nonce is truncated".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EnvelopeError::Io(e)),
        }
    }
    let payload_key =
        zeroize::Zeroizing::new(hkdf32(file_key.expose_secret(), &nonce, b"payload")?);
    Ok((payload_key, len + 16))
}

/// A writer that passes bytes through and keeps their piece tree ([`pieces`]) and count.
pub struct HashingWriter<W> {
    inner: W,
    hasher: pieces::PieceHasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: pieces::PieceHasher::new(),
        }
    }
    /// The inner writer, the digest (the piece tree's root) and the byte count.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        let (inner, p) = self.finish_pieces();
        (inner, p.root(), p.len)
    }
    /// The inner writer and the pieces' leaves.
    pub fn finish_pieces(self) -> (W, pieces::Pieces) {
        (self.inner, self.hasher.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod positional_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn seal_open_and_wrong_key() {
        let id = age::x25519::Identity::generate();
        let pt = b"the quarterly numbers".repeat(5000);
        let mut ct = Vec::new();
        let sealed = seal(&id.to_public(), &mut pt.as_slice(), &mut ct, 2).unwrap();
        assert_eq!(sealed.ciphertext_len, ct.len() as u64);
        let mut back = Vec::new();
        open(&[&id], &mut ct.as_slice(), &mut back, 2).unwrap();
        assert_eq!(back, pt);
        let other = age::x25519::Identity::generate();
        let mut out = Vec::new();
        let err = open(&[&other], &mut ct.as_slice(), &mut out, 2).unwrap_err();
        assert!(err.to_string().contains("not sealed to this key"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn age_crate_reads_ours_and_we_read_the_age_crate() {
        let id = age::x25519::Identity::generate();
        let recipient = age::x25519::Recipient::from_str(&id.to_public().to_string()).unwrap();
        let pt = vec![0xabu8; 3 * 65536 + 5];
        let mut ours = Vec::new();
        seal(&recipient, &mut pt.as_slice(), &mut ours, 2).unwrap();
        let decryptor = age::Decryptor::new(ours.as_slice()).unwrap();
        let mut r = decryptor
            .decrypt(std::iter::once(&id as &dyn age::Identity))
            .unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, pt);

        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut theirs = Vec::new();
        let mut w = encryptor.wrap_output(&mut theirs).unwrap();
        w.write_all(&pt).unwrap();
        w.finish().unwrap();
        let mut back = Vec::new();
        open(&[&id], &mut theirs.as_slice(), &mut back, 2).unwrap();
        assert_eq!(back, pt);
    }
}
