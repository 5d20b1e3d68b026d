//! age's STREAM payload: 64 KiB plaintext chunks, each sealed with ChaCha20-Poly1305 (ring)
//! under the payload key, nonce = 11-byte big-endian chunk counter || last-chunk flag.
//!
//! Chunks depend only on the key, their index and the flag, so they are sealed and opened in
//! parallel: worker threads take shares of each 4 MiB batch while the calling thread reads the
//! next batch (or, for a file, the workers read their shares at offsets themselves) and writes
//! the previous one (`pipeline`); memory stays bounded by two batches. Opening releases
//! plaintext strictly in order and only chunks that authenticated; nothing after the first
//! failure is released. The `_at` forms instead have each worker write its share at its offset
//! into a file (`-o`'s temporary file): opening then writes chunks as they authenticate, out of
//! order, into a file kept only if every chunk did.

use std::io::{Read, Write};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

pub use super::chunks::{BATCH_CHUNKS, CHUNK, SLOT, TAG};
use super::pipeline::{pipeline, Opened, Part};
pub use super::pipeline::{ReadAt, Source, WriteAt};
use super::EnvelopeError;

/// How many threads seal or open a batch: the cores this process may use, read once (the
/// standard library reads the cgroup's quota files at each call).
pub fn default_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 16)
    })
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    // The counter is 88 bits; a u64 index fills its low 8 bytes.
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn key(payload_key: &[u8; 32]) -> Result<LessSafeKey, EnvelopeError> {
    UnboundKey::new(&CHACHA20_POLY1305, payload_key)
        .map(LessSafeKey::new)
        .map_err(|_| EnvelopeError::Internal("bad payload key length"))
}

/// Seals everything from `input` to `output` as a STREAM. Returns plaintext bytes sealed.
pub fn seal<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: &mut R,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    seal_from(payload_key, Source::Reader(input), output, threads)
}

/// [`seal`] from a [`Source`]: a reader, or a file the workers read at offsets.
pub fn seal_from<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: Source<'_, R>,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    seal_inner(payload_key, input, output, None, threads)
}

/// [`seal_from`] into a file that the worker threads write at offsets themselves, the STREAM
/// starting at `base` (after the header and nonce): no thread writes everything in order.
pub fn seal_from_at<R: Read + ?Sized>(
    payload_key: &[u8; 32],
    input: Source<'_, R>,
    output: &dyn WriteAt,
    base: u64,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    seal_inner(
        payload_key,
        input,
        &mut std::io::sink(),
        Some((output, base)),
        threads,
    )
}

/// The bytes of a sealed part: full chunks are contiguous slots, and only the part's last
/// chunk can be short (the stream's final one).
fn sealed_bytes(part: &Part) -> usize {
    let full = part.lens.iter().take_while(|&&l| l == CHUNK).count();
    full * SLOT + part.lens.get(full).map_or(0, |&l| l + TAG)
}

fn seal_inner<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: Source<'_, R>,
    output: &mut W,
    at: Option<(&dyn WriteAt, u64)>,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    let key = key(payload_key)?;
    let mut total = 0u64;
    pipeline(
        input,
        output,
        threads,
        false,
        |part| {
            for (i, slot) in part.buf.chunks_mut(SLOT).enumerate().take(part.lens.len()) {
                let len = part.lens[i];
                let last = part.at_end == Some(i);
                let (pt, rest) = slot.split_at_mut(len);
                match key.seal_in_place_separate_tag(
                    nonce(part.first + i as u64, last),
                    Aad::empty(),
                    pt,
                ) {
                    Ok(tag) => rest[..TAG].copy_from_slice(tag.as_ref()),
                    Err(_) => part.sealed_ok = false,
                }
            }
            // Written at its place by this worker: every chunk before the part's first is a
            // full slot.
            let n = sealed_bytes(part);
            if let (Some((file, base)), true, true) = (at, part.sealed_ok, n > 0) {
                let offset = base + part.first * SLOT as u64;
                if let Err(e) = file.write_all_at(&part.buf[..n], offset) {
                    part.io = Some(e);
                }
            }
        },
        |out, part| {
            if !part.sealed_ok {
                return Err(EnvelopeError::Internal("ChaCha20-Poly1305 seal failed"));
            }
            if at.is_none() {
                out.write_all(&part.buf[..sealed_bytes(part)])
                    .map_err(EnvelopeError::Io)?;
            }
            total += part.lens.iter().map(|&l| l as u64).sum::<u64>();
            Ok(())
        },
    )?;
    Ok(total)
}

fn open_chunk(
    key: &LessSafeKey,
    c: &[u8],
    p: &mut [u8],
    len: usize,
    index: u64,
    at_end: bool,
) -> Opened {
    if len < TAG {
        return Opened::Failed;
    }
    let mut try_open = |last: bool| -> Option<usize> {
        if last && len == TAG && index != 0 {
            return None; // an empty final chunk is only valid for an empty file
        }
        p[..len].copy_from_slice(&c[..len]);
        key.open_in_place(nonce(index, last), Aad::empty(), &mut p[..len])
            .ok()
            .map(|pt| pt.len())
    };
    if at_end {
        match try_open(true) {
            Some(n) => Opened::Ok(n),
            None if len == SLOT => try_open(false).map_or(Opened::Failed, Opened::NonFinalAtEnd),
            None => Opened::Failed,
        }
    } else {
        match try_open(false) {
            Some(n) => Opened::Ok(n),
            None => try_open(true).map_or(Opened::Failed, Opened::FinalBeforeMore),
        }
    }
}

/// Opens a STREAM from `input`, writing authenticated plaintext to `output` in order. On error
/// everything written so far is the plaintext of chunks that authenticated before the failure
/// (as the age reference implementations release it).
pub fn open<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: &mut R,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    open_from(payload_key, Source::Reader(input), output, threads)
}

/// [`open`] from a [`Source`]: a reader, or a file the workers read at offsets. Plaintext is
/// released in order either way.
pub fn open_from<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: Source<'_, R>,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    open_inner(payload_key, input, output, None, threads)
}

/// [`open_from`] into a file that the worker threads write at offsets themselves: each chunk
/// that authenticated goes at its place as soon as it did, so the file holds plaintext out of
/// order until the call returns. Only for a file nobody reads before the whole stream
/// authenticated (an `-o` temporary file, kept only on success).
pub fn open_from_at<R: Read + ?Sized>(
    payload_key: &[u8; 32],
    input: Source<'_, R>,
    output: &dyn WriteAt,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    open_inner(
        payload_key,
        input,
        &mut std::io::sink(),
        Some((output, 0)),
        threads,
    )
}

fn open_inner<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: Source<'_, R>,
    output: &mut W,
    at: Option<(&dyn WriteAt, u64)>,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    let key = key(payload_key)?;
    let mut total = 0u64;
    let mut chunks_seen = 0u64;
    pipeline(
        input,
        output,
        threads,
        true,
        |part| {
            let Part {
                buf,
                plain,
                lens,
                first,
                at_end,
                opened,
                io,
                ..
            } = part;
            for (i, (c, p)) in buf
                .chunks(SLOT)
                .zip(plain.chunks_mut(SLOT))
                .enumerate()
                .take(lens.len())
            {
                opened.push(open_chunk(
                    &key,
                    c,
                    p,
                    lens[i],
                    *first + i as u64,
                    *at_end == Some(i),
                ));
            }
            // Each chunk that authenticated, at its place (every chunk before it is a full
            // one); nothing from the first failure on.
            if let Some((file, base)) = at {
                for (i, r) in opened.iter().enumerate() {
                    let n = match *r {
                        Opened::Ok(n) | Opened::FinalBeforeMore(n) | Opened::NonFinalAtEnd(n) => n,
                        Opened::Failed => break,
                    };
                    let offset = base + (*first + i as u64) * CHUNK as u64;
                    if let Err(e) = file.write_all_at(&plain[i * SLOT..i * SLOT + n], offset) {
                        *io = Some(e);
                        break;
                    }
                }
            }
        },
        |out, part| {
            // (offset, length) of the chunks released from this batch, in order.
            let mut ready: Vec<(usize, usize)> = Vec::with_capacity(part.opened.len());
            for (i, r) in part.opened.iter().enumerate() {
                let at = part.first + i as u64;
                chunks_seen = at + 1;
                let (n, err) = match *r {
                    Opened::Ok(n) => (n, None),
                    Opened::FinalBeforeMore(n) => (
                        n,
                        Some(format!(
                            "data follows the final chunk {at} (extended or spliced stream)"
                        )),
                    ),
                    Opened::NonFinalAtEnd(n) => (
                        n,
                        Some(format!(
                            "the stream ends after chunk {at} without a final chunk (truncated?)"
                        )),
                    ),
                    Opened::Failed => {
                        // What authenticated before it is released first, as before.
                        write_chunks(out, &part.plain, &ready)?;
                        return Err(EnvelopeError::Payload(if part.lens[i] < TAG {
                            format!("chunk {at} is truncated")
                        } else {
                            format!("chunk {at} does not authenticate (corrupt, reordered, truncated or spliced)")
                        }));
                    }
                };
                ready.push((i * SLOT, n));
                total += n as u64;
                if let Some(e) = err {
                    write_chunks(out, &part.plain, &ready)?;
                    return Err(EnvelopeError::Payload(e));
                }
            }
            // Every chunk of the batch authenticated: one vectored write, no copy.
            write_chunks(out, &part.plain, &ready)
        },
    )?;
    if chunks_seen == 0 {
        return Err(EnvelopeError::Payload("the payload has no chunks".into()));
    }
    Ok(total)
}

/// Writes the chunks `(offset, length)` of `buf` in order with vectored writes (no copy into a
/// buffer first).
fn write_chunks<W: Write + ?Sized>(
    out: &mut W,
    buf: &[u8],
    chunks: &[(usize, usize)],
) -> Result<(), EnvelopeError> {
    let mut slices: Vec<std::io::IoSlice<'_>> = chunks
        .iter()
        .filter(|(_, n)| *n > 0)
        .filter_map(|&(at, n)| buf.get(at..at + n).map(std::io::IoSlice::new))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => {
                return Err(EnvelopeError::Io(std::io::Error::from(
                    std::io::ErrorKind::WriteZero,
                )))
            }
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EnvelopeError::Io(e)),
        }
    }
    Ok(())
}

/// The ciphertext length of a STREAM over `plaintext_len` bytes (without nonce).
pub fn sealed_len(plaintext_len: u64) -> u64 {
    let chunk = CHUNK as u64;
    let chunks = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(chunk)
    };
    plaintext_len + chunks * TAG as u64
}

/// Whether `ciphertext_len` bytes of STREAM (without nonce) can be a valid STREAM: at least one
/// chunk, every chunk but the last full, the last holding at least one plaintext byte unless it
/// is the only chunk.
pub fn is_valid_stream_len(ciphertext_len: u64) -> bool {
    let slot = SLOT as u64;
    let tag = TAG as u64;
    if ciphertext_len < tag {
        return false;
    }
    let full = ciphertext_len / slot;
    let rest = ciphertext_len % slot;
    match (full, rest) {
        (0, r) => r >= tag, // a single chunk, possibly empty
        (_, 0) => true,     // the final chunk is full
        (_, r) => r > tag,  // a non-empty final chunk after full ones
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(len: usize, threads: usize) {
        let pt: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let k = [5u8; 32];
        let mut ct = Vec::new();
        assert_eq!(
            seal(&k, &mut pt.as_slice(), &mut ct, threads).unwrap(),
            len as u64
        );
        assert_eq!(ct.len() as u64, sealed_len(len as u64));
        assert!(is_valid_stream_len(ct.len() as u64));
        let mut back = Vec::new();
        open(&k, &mut ct.as_slice(), &mut back, threads).unwrap();
        assert!(back == pt, "len {len}");
    }

    #[test]
    fn round_trips_at_chunk_and_batch_edges() {
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
            BATCH_CHUNKS * CHUNK,
            BATCH_CHUNKS * CHUNK + 1,
            (BATCH_CHUNKS + 1) * CHUNK,
        ] {
            round_trip(len, 1);
            round_trip(len, 3);
        }
    }

    #[test]
    fn parallel_and_serial_agree() {
        let pt = vec![42u8; 5 * CHUNK + 17];
        let k = [9u8; 32];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        seal(&k, &mut pt.as_slice(), &mut a, 1).unwrap();
        seal(&k, &mut pt.as_slice(), &mut b, 4).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn truncation_reorder_and_extension_release_only_authenticated_chunks() {
        let pt: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 256) as u8).collect();
        let k = [1u8; 32];
        let mut ct = Vec::new();
        seal(&k, &mut pt.as_slice(), &mut ct, 2).unwrap();
        // Truncate: drop the final chunk.
        let mut out = Vec::new();
        assert!(open(&k, &mut &ct[..2 * SLOT], &mut out, 2).is_err());
        assert!(
            out == pt[..2 * CHUNK],
            "chunks 0 and 1 authenticate; nothing else is released"
        );
        // Cut inside a chunk: only the chunks before it.
        let mut out = Vec::new();
        assert!(open(&k, &mut &ct[..2 * SLOT - 5], &mut out, 2).is_err());
        assert!(out == pt[..CHUNK]);
        // Reorder chunks 0 and 1.
        let mut swapped = ct.clone();
        swapped[..SLOT].copy_from_slice(&ct[SLOT..2 * SLOT]);
        swapped[SLOT..2 * SLOT].copy_from_slice(&ct[..SLOT]);
        let mut out = Vec::new();
        assert!(open(&k, &mut swapped.as_slice(), &mut out, 2).is_err());
        assert!(out.is_empty());
        // Extend with trailing bytes.
        let mut extended = ct.clone();
        extended.extend_from_slice(b"more");
        let mut out = Vec::new();
        assert!(open(&k, &mut extended.as_slice(), &mut out, 2).is_err());
        assert!(
            out == pt,
            "the final chunk authenticates; the appended bytes are refused"
        );
    }

    /// Bytes in memory, read at offsets as a file would be.
    struct Mem(Vec<u8>);

    impl ReadAt for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let from = usize::try_from(offset).unwrap().min(self.0.len());
            let n = buf.len().min(self.0.len() - from);
            buf[..n].copy_from_slice(&self.0[from..from + n]);
            Ok(n)
        }
        fn size(&self) -> std::io::Result<u64> {
            Ok(self.0.len() as u64)
        }
    }

    /// A "file" holding `prefix` then `bytes`, and the offsets of `bytes` in it.
    fn file_with(prefix: &[u8], bytes: &[u8]) -> (Mem, u64, u64) {
        let mut all = prefix.to_vec();
        all.extend_from_slice(bytes);
        (
            Mem(all),
            prefix.len() as u64,
            (prefix.len() + bytes.len()) as u64,
        )
    }

    fn at(file: &Mem, start: u64, end: u64) -> Source<'_, std::io::Empty> {
        Source::File { file, start, end }
    }

    /// Read at offsets by the workers, a file gives the same ciphertext and plaintext as the
    /// same bytes read in order, at every chunk and batch edge.
    #[test]
    fn a_file_read_at_offsets_matches_a_reader() {
        let k = [7u8; 32];
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            BATCH_CHUNKS * CHUNK,
            BATCH_CHUNKS * CHUNK + 1,
            (BATCH_CHUNKS + 1) * CHUNK,
            2 * BATCH_CHUNKS * SLOT + 3,
        ] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let mut expected = Vec::new();
            seal(&k, &mut pt.as_slice(), &mut expected, 2).unwrap();
            for threads in [1, 3] {
                let (f, start, end) = file_with(b"prefix", &pt);
                let mut ct = Vec::new();
                assert_eq!(
                    seal_from(&k, at(&f, start, end), &mut ct, threads).unwrap(),
                    len as u64
                );
                assert!(ct == expected, "seal, len {len}");
                let (f, start, end) = file_with(b"xy", &ct);
                let mut back = Vec::new();
                open_from(&k, at(&f, start, end), &mut back, threads).unwrap();
                assert!(back == pt, "open, len {len}");
            }
        }
    }

    #[test]
    fn a_damaged_file_read_at_offsets_releases_what_a_reader_would() {
        let pt: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 256) as u8).collect();
        let k = [1u8; 32];
        let mut ct = Vec::new();
        seal(&k, &mut pt.as_slice(), &mut ct, 2).unwrap();
        let mut swapped = ct.clone();
        swapped[..SLOT].copy_from_slice(&ct[SLOT..2 * SLOT]);
        swapped[SLOT..2 * SLOT].copy_from_slice(&ct[..SLOT]);
        let mut extended = ct.clone();
        extended.extend_from_slice(b"more");
        for bad in [
            ct[..2 * SLOT].to_vec(),
            ct[..2 * SLOT - 5].to_vec(),
            swapped,
            extended,
        ] {
            let mut by_reader = Vec::new();
            let e1 = open(&k, &mut bad.as_slice(), &mut by_reader, 2).unwrap_err();
            let (f, start, end) = file_with(b"", &bad);
            let mut by_file = Vec::new();
            let e2 = open_from(&k, at(&f, start, end), &mut by_file, 2).unwrap_err();
            assert!(by_reader == by_file);
            assert_eq!(e1.to_string(), e2.to_string());
        }
    }

    /// A file whose size is not what it was when reading began is refused.
    #[test]
    fn a_file_that_changed_size_is_refused() {
        let pt = vec![3u8; 2 * CHUNK];
        let k = [2u8; 32];
        let (f, start, end) = file_with(b"", &pt);
        let mut ct = Vec::new();
        let err = seal_from(&k, at(&f, start, end - 10), &mut ct, 2).unwrap_err();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
        let err = seal_from(&k, at(&f, start, end + 10), &mut ct, 2).unwrap_err();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
    }

    #[test]
    fn stream_length_arithmetic() {
        assert!(!is_valid_stream_len(0));
        assert!(!is_valid_stream_len(15));
        assert!(is_valid_stream_len(16));
        assert!(is_valid_stream_len(SLOT as u64));
        assert!(!is_valid_stream_len(SLOT as u64 + 16));
        assert!(is_valid_stream_len(SLOT as u64 + 17));
        for len in [0u64, 1, 65535, 65536, 65537, 3 * 65536, 10 << 20] {
            assert!(is_valid_stream_len(sealed_len(len)));
        }
    }
}
