//! age's STREAM payload: 64 KiB plaintext chunks, each sealed with ChaCha20-Poly1305 (ring)
//! under the payload key, nonce = 11-byte big-endian chunk counter || last-chunk flag.
//!
//! Chunks depend only on the key, their index and the flag, so batches of chunks are sealed and
//! opened in parallel on scoped threads; memory stays bounded by one batch. Opening releases
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

/// Runs `work(index_in_batch, item)` over `items` on up to `threads` threads, in contiguous
/// shares; the last share runs on the calling thread.
fn parallel_map<I, F, T>(items: &mut [I], threads: usize, work: F) -> Vec<T>
where
    I: Send,
    F: Fn(usize, &mut I) -> T + Sync,
    T: Send + Default + Clone,
{
    let n = items.len();
    let mut results = vec![T::default(); n];
    if threads <= 1 || n <= 1 {
        for (i, item) in items.iter_mut().enumerate() {
            results[i] = work(i, item);
        }
        return results;
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let work = &work;
        let mut rest_items: &mut [I] = items;
        let mut rest_results: &mut [T] = &mut results;
        let mut base = 0;
        while !rest_items.is_empty() {
            let take = per.min(rest_items.len());
            let (s, s_rest) = rest_items.split_at_mut(take);
            let (r, r_rest) = rest_results.split_at_mut(take);
            rest_items = s_rest;
            rest_results = r_rest;
            let start = base;
            base += take;
            let mut job = move || {
                for (k, (item, out)) in s.iter_mut().zip(r.iter_mut()).enumerate() {
                    *out = work(start + k, item);
                }
            };
            if rest_items.is_empty() {
                job();
            } else {
                // Scoped threads are joined when the scope ends.
                scope.spawn(job);
            }
        }
    });
    results
}

/// Seals everything from `input` to `output` as a STREAM. Returns plaintext bytes sealed.
pub fn seal<R: Read + ?Sized, W: Write + ?Sized>(
    payload_key: &[u8; 32],
    input: &mut R,
    output: &mut W,
    threads: usize,
) -> Result<u64, EnvelopeError> {
    let key = key(payload_key)?;
    let mut buf = vec![0u8; BATCH_CHUNKS * SLOT];
    let mut carry: Option<u8> = None;
    let mut index: u64 = 0;
    let mut total: u64 = 0;
    loop {
        // Fill plaintext into the slots, each followed by room for its tag.
        let mut lens = Vec::with_capacity(BATCH_CHUNKS);
        let mut eof = false;
        for slot in buf.chunks_mut(SLOT) {
            let mut start = 0;
            if let Some(b) = carry.take() {
                slot[0] = b;
                start = 1;
            }
            let n = start + fill(input, &mut slot[start..CHUNK])?;
            lens.push(n);
            if n < CHUNK {
                eof = true;
                break;
            }
        }
        if !eof {
            // A full batch: peek one byte to learn whether the last chunk is the final one.
            let mut one = [0u8; 1];
            if fill(input, &mut one)? == 0 {
                eof = true;
            } else {
                carry = Some(one[0]);
            }
        }
        // An empty final chunk is only valid for an empty file.
        if eof && lens.len() > 1 && lens.last() == Some(&0) {
            lens.pop();
        }
        let count = lens.len();
        let mut slots: Vec<&mut [u8]> = buf.chunks_mut(SLOT).take(count).collect();
        let first = index;
        let results: Vec<bool> = parallel_map(&mut slots, threads, |i, slot| {
            let len = lens[i];
            let last = eof && i + 1 == count;
            let (pt, rest) = slot.split_at_mut(len);
            match key.seal_in_place_separate_tag(nonce(first + i as u64, last), Aad::empty(), pt) {
                Ok(tag) => {
                    rest[..TAG].copy_from_slice(tag.as_ref());
                    true
                }
                Err(_) => false,
            }
        });
        if results.iter().any(|ok| !ok) {
            return Err(EnvelopeError::Internal("ChaCha20-Poly1305 seal failed"));
        }
        // Full chunks are contiguous in the buffer: write them in one go.
        let full = lens.iter().take_while(|&&l| l == CHUNK).count();
        output
            .write_all(&buf[..full * SLOT])
            .map_err(EnvelopeError::Io)?;
        if full < count {
            let l = lens[full];
            output
                .write_all(&buf[full * SLOT..full * SLOT + l + TAG])
                .map_err(EnvelopeError::Io)?;
        }
        total += lens.iter().map(|&l| l as u64).sum::<u64>();
        index += count as u64;
        if eof {
            return Ok(total);
        }
    }
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
    // Ciphertext is read into `cipher`; each chunk is copied into `plain` and opened there, so
    // a chunk that fails one way can still be tried the other (ring zeroes failed buffers).
    let mut cipher = vec![0u8; BATCH_CHUNKS * SLOT];
    let mut plain = vec![0u8; BATCH_CHUNKS * SLOT];
    let mut carry: Option<u8> = None;
    let mut index: u64 = 0;
    let mut total: u64 = 0;
    loop {
        let mut lens = Vec::with_capacity(BATCH_CHUNKS);
        let mut eof = false;
        for slot in cipher.chunks_mut(SLOT) {
            let mut start = 0;
            if let Some(b) = carry.take() {
                slot[0] = b;
                start = 1;
            }
            let n = start + fill(input, &mut slot[start..])?;
            lens.push(n);
            if n < SLOT {
                eof = true;
                break;
            }
        }
        if !eof {
            let mut one = [0u8; 1];
            if fill(input, &mut one)? == 0 {
                eof = true;
            } else {
                carry = Some(one[0]);
            }
        }
        // A zero-length read at a chunk boundary: the previous chunk was the last one read.
        if eof && lens.last() == Some(&0) {
            lens.pop();
            if lens.is_empty() {
                return Err(if index == 0 {
                    EnvelopeError::Payload("the payload has no chunks".into())
                } else {
                    EnvelopeError::Payload(
                        "the stream ends without a final chunk (truncated?)".into(),
                    )
                });
            }
        }
        let count = lens.len();
        let first = index;
        let mut pairs: Vec<(&[u8], &mut [u8])> = cipher
            .chunks(SLOT)
            .zip(plain.chunks_mut(SLOT))
            .take(count)
            .collect();
        let results: Vec<Opened> = parallel_map(&mut pairs, threads, |i, (c, p)| {
            let len = lens[i];
            let at_end = eof && i + 1 == count;
            let chunk_index = first + i as u64;
            if len < TAG {
                return Opened::Failed;
            }
            let mut try_open = |last: bool| -> Option<usize> {
                if last && len == TAG && chunk_index != 0 {
                    return None; // an empty final chunk is only valid for an empty file
                }
                p[..len].copy_from_slice(&c[..len]);
                key.open_in_place(nonce(chunk_index, last), Aad::empty(), &mut p[..len])
                    .ok()
                    .map(|pt| pt.len())
            };
            if at_end {
                match try_open(true) {
                    Some(n) => Opened::Ok(n),
                    None if len == SLOT => {
                        try_open(false).map_or(Opened::Failed, Opened::NonFinalAtEnd)
                    }
                    None => Opened::Failed,
                }
            } else {
                match try_open(false) {
                    Some(n) => Opened::Ok(n),
                    None => try_open(true).map_or(Opened::Failed, Opened::FinalBeforeMore),
                }
            }
        });
        for (i, r) in results.iter().enumerate() {
            let at = first + i as u64;
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
                    return Err(EnvelopeError::Payload(if lens[i] < TAG {
                        format!("chunk {at} is truncated")
                    } else {
                        format!("chunk {at} does not authenticate (corrupt, reordered, truncated or spliced)")
                    }))
                }
            };
            output
                .write_all(&plain[i * SLOT..i * SLOT + n])
                .map_err(EnvelopeError::Io)?;
            total += n as u64;
            if let Some(e) = err {
                return Err(EnvelopeError::Payload(e));
            }
        }
        index += count as u64;
        if eof {
            return Ok(total);
        }
    }
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
