//! age's STREAM payload: 64 KiB plaintext chunks, each sealed with ChaCha20-Poly1305 (ring)
//! under the payload key, nonce = 11-byte big-endian chunk counter || last-chunk flag.
//!
//! Chunks depend only on the key, their index and the flag, so they are sealed and opened in
//! parallel: worker threads take shares of each 4 MiB batch while the calling thread reads the
//! next batch and writes the previous one; memory stays bounded by two batches. Opening releases
//! plaintext strictly in order and only chunks that authenticated; nothing after the first
//! failure is released.

use std::io::{ErrorKind, Read, Write};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use super::EnvelopeError;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Authentication tag bytes per chunk.
pub const TAG: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const SLOT: usize = CHUNK + TAG;
/// Chunks per batch: 64 chunks = 4 MiB of plaintext in flight per batch.
pub const BATCH_CHUNKS: usize = 64;

/// How many threads seal or open a batch.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
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

/// Reads until `buf` is full or EOF; returns the bytes read.
fn fill<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, EnvelopeError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(EnvelopeError::Io(e)),
        }
    }
    Ok(n)
}

/// A share of a batch: consecutive chunks handled by one worker thread.
struct Part {
    /// Sealing: plaintext in, ciphertext out, in place. Opening: ciphertext (kept intact).
    buf: Vec<u8>,
    /// Opening: where each chunk is copied and opened (ring zeroes a buffer that fails, and a
    /// chunk that fails one way must still be tried the other).
    plain: Vec<u8>,
    /// Chunk slots this part holds at most.
    chunks: usize,
    open: bool,
    /// Bytes in each chunk slot of this part.
    lens: Vec<usize>,
    /// Stream index of the part's first chunk.
    first: u64,
    /// Index within the part of the chunk that ends the input, if it is here.
    at_end: Option<usize>,
    /// Sealing: whether every chunk sealed. Opening: each chunk's outcome.
    sealed_ok: bool,
    opened: Vec<Opened>,
}

impl Part {
    /// Buffers grow as chunks arrive (a small input never allocates a whole batch).
    fn new(chunks: usize, open: bool) -> Self {
        Part {
            buf: Vec::new(),
            plain: Vec::new(),
            chunks,
            open,
            lens: Vec::with_capacity(chunks),
            first: 0,
            at_end: None,
            sealed_ok: true,
            opened: Vec::with_capacity(chunks),
        }
    }
}

/// Reads the next batch into `parts` (chunk slots of `slot_fill` bytes each, in order across
/// the parts). Returns whether the input ended. A one-byte look-ahead past a full batch tells
/// whether its last chunk is the final one; that byte is carried into the next batch.
fn read_batch<R: Read + ?Sized>(
    input: &mut R,
    parts: &mut [Part],
    slot_fill: usize,
    carry: &mut Option<u8>,
    next_index: &mut u64,
) -> Result<bool, EnvelopeError> {
    let mut eof = false;
    for part in parts.iter_mut() {
        part.lens.clear();
        part.opened.clear();
        part.at_end = None;
        part.sealed_ok = true;
        part.first = *next_index;
        if eof {
            continue;
        }
        for j in 0..part.chunks {
            let need = (j + 1) * SLOT;
            if part.buf.len() < need {
                part.buf.resize(need, 0);
                if part.open {
                    part.plain.resize(need, 0);
                }
            }
            let slot = &mut part.buf[j * SLOT..need];
            let mut start = 0;
            if let Some(b) = carry.take() {
                slot[0] = b;
                start = 1;
            }
            let n = start + fill(input, &mut slot[start..slot_fill])?;
            part.lens.push(n);
            *next_index += 1;
            if n < slot_fill {
                eof = true;
                break;
            }
        }
    }
    if !eof {
        let mut one = [0u8; 1];
        if fill(input, &mut one)? == 0 {
            eof = true;
        } else {
            *carry = Some(one[0]);
        }
    }
    if eof {
        // Mark the chunk that ends the input: the last non-empty slot read. An empty slot read
        // at a chunk boundary is not a chunk, unless it is the only one (an empty stream).
        if let Some(pi) = parts.iter().rposition(|p| !p.lens.is_empty()) {
            let is_first_chunk = parts[pi].first == 0 && parts[pi].lens.len() == 1;
            if parts[pi].lens.last() == Some(&0) && !is_first_chunk {
                parts[pi].lens.pop();
                *next_index -= 1;
            }
            if let Some(pj) = parts.iter().rposition(|p| !p.lens.is_empty()) {
                parts[pj].at_end = Some(parts[pj].lens.len() - 1);
            }
        }
    }
    Ok(eof)
}

/// Worker threads, one per part, fed over channels. Parts go out and come back in FIFO order
/// per worker, so the batch being written overlaps with the next one being processed and the
/// one after being read.
fn pipeline<R, W, F, G>(
    input: &mut R,
    output: &mut W,
    threads: usize,
    open: bool,
    work: F,
    mut write_part: G,
) -> Result<(), EnvelopeError>
where
    R: Read + ?Sized,
    W: Write + ?Sized,
    F: Fn(&mut Part) + Sync,
    G: FnMut(&mut W, &Part) -> Result<(), EnvelopeError>,
{
    let threads = threads.clamp(1, BATCH_CHUNKS);
    let per = BATCH_CHUNKS.div_ceil(threads);
    let slot_fill = if open { SLOT } else { CHUNK };
    std::thread::scope(|scope| {
        let work = &work;
        let mut to_workers = Vec::with_capacity(threads);
        let mut from_workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (job_tx, job_rx) = std::sync::mpsc::channel::<Part>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<Part>();
            scope.spawn(move || {
                while let Ok(mut part) = job_rx.recv() {
                    work(&mut part);
                    if done_tx.send(part).is_err() {
                        break;
                    }
                }
            });
            to_workers.push(job_tx);
            from_workers.push(done_rx);
        }
        // Two batches of parts rotate: one being processed while the other is read/written.
        let mut spare: Vec<Vec<Part>> = (0..2)
            .map(|_| (0..threads).map(|_| Part::new(per, open)).collect())
            .collect();
        let mut carry = None;
        let mut next_index = 0u64;
        let mut in_flight = false;
        let mut eof = false;
        loop {
            let mut dispatched = false;
            if !eof {
                let mut batch = spare
                    .pop()
                    .ok_or(EnvelopeError::Internal("pipeline lost a batch"))?;
                eof = read_batch(input, &mut batch, slot_fill, &mut carry, &mut next_index)?;
                for (tx, part) in to_workers.iter().zip(batch) {
                    tx.send(part)
                        .map_err(|_| EnvelopeError::Internal("a worker stopped"))?;
                }
                dispatched = true;
            }
            if in_flight {
                // Collect and write the older batch (each worker answers in order).
                let mut done = Vec::with_capacity(threads);
                for rx in &from_workers {
                    done.push(
                        rx.recv()
                            .map_err(|_| EnvelopeError::Internal("a worker stopped"))?,
                    );
                }
                for part in &done {
                    write_part(output, part)?;
                }
                spare.push(done);
            }
            in_flight = dispatched;
            if !dispatched {
                return Ok(());
            }
            if eof && !in_flight {
                return Ok(());
            }
        }
    })
}

/// Seals everything from `input` to `output` as a STREAM. Returns plaintext bytes sealed.
pub fn seal<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: &mut R,
    output: &mut W,
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
        },
        |out, part| {
            if !part.sealed_ok {
                return Err(EnvelopeError::Internal("ChaCha20-Poly1305 seal failed"));
            }
            // Full chunks are contiguous: one write; then a short final chunk, if any.
            let full = part.lens.iter().take_while(|&&l| l == CHUNK).count();
            out.write_all(&part.buf[..full * SLOT])
                .map_err(EnvelopeError::Io)?;
            if let Some(&l) = part.lens.get(full) {
                out.write_all(&part.buf[full * SLOT..full * SLOT + l + TAG])
                    .map_err(EnvelopeError::Io)?;
            }
            total += part.lens.iter().map(|&l| l as u64).sum::<u64>();
            Ok(())
        },
    )?;
    Ok(total)
}

/// How a chunk that authenticated relates to where the stream ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Opened {
    /// Did not authenticate (or is malformed): nothing of it is released.
    #[default]
    Failed,
    /// Authenticated where it stands (non-final before more data, final at the end).
    Ok(usize),
    /// Authenticated as a final chunk but more data follows (trailing data, two final chunks).
    FinalBeforeMore(usize),
    /// Authenticated as a non-final chunk but the input ends after it (no final chunk).
    NonFinalAtEnd(usize),
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
