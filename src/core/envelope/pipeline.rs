//! The parallel pipeline under [`super::stream`]: worker threads take shares of each batch of
//! chunks (4 MiB; 1 MiB for a reader being sealed) while the calling thread reads the next
//! batch (from a reader, or only plans it when the workers read a file at offsets themselves)
//! and writes the previous one (or, when the work itself wrote each share at its offset, only
//! checks it); memory stays bounded by two batches. An input of at most `INLINE_CHUNKS` chunks
//! is handled by the calling thread alone: starting the workers would cost more than the work.

use std::io::{ErrorKind, Read, Write};

use super::chunks::{BATCH_CHUNKS, CHUNK, READER_BATCH_CHUNKS, SLOT};
use super::EnvelopeError;

/// Inputs of at most this many chunks (128 KiB), all in the first batch, are handled by the
/// calling thread alone.
const INLINE_CHUNKS: u64 = 2;

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
pub(super) struct Part {
    /// Sealing: plaintext in, ciphertext out, in place. Opening: ciphertext (kept intact).
    pub(super) buf: Vec<u8>,
    /// Opening: where each chunk is copied and opened (ring zeroes a buffer that fails, and a
    /// chunk that fails one way must still be tried the other).
    pub(super) plain: Vec<u8>,
    /// Chunk slots this part holds at most.
    pub(super) chunks: usize,
    pub(super) open: bool,
    /// Bytes in each chunk slot of this part.
    pub(super) lens: Vec<usize>,
    /// Stream index of the part's first chunk.
    pub(super) first: u64,
    /// Index within the part of the chunk that ends the input, if it is here.
    pub(super) at_end: Option<usize>,
    /// Sealing: whether every chunk sealed. Opening: each chunk's outcome.
    pub(super) sealed_ok: bool,
    pub(super) opened: Vec<Opened>,
    /// Reading a file at offsets: where the part's first chunk starts (the worker reads it).
    pub(super) at: Option<u64>,
    /// The worker's read at offsets, or its write at offsets, failed.
    pub(super) io: Option<std::io::Error>,
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
            at: None,
            io: None,
        }
    }

    /// Makes room for chunk slot `j` (buffers grow as chunks arrive).
    fn reserve_slot(&mut self, j: usize) {
        let need = (j + 1) * SLOT;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
            if self.open {
                self.plain.resize(need, 0);
            }
        }
    }

    fn reset(&mut self, first: u64) {
        self.lens.clear();
        self.opened.clear();
        self.at_end = None;
        self.sealed_ok = true;
        self.first = first;
        self.at = None;
        self.io = None;
    }

    /// Reads the part's chunks from `file` (chunks of `slot_fill` bytes, contiguous from
    /// `self.at`).
    fn read_at(&mut self, file: &dyn ReadAt, slot_fill: usize) {
        let Some(at) = self.at else { return };
        for (j, &len) in self.lens.iter().enumerate() {
            let offset = at + (j * slot_fill) as u64;
            if let Err(e) = file.read_exact_at(&mut self.buf[j * SLOT..j * SLOT + len], offset) {
                self.io = Some(if e.kind() == ErrorKind::UnexpectedEof {
                    changed_input()
                } else {
                    e
                });
                return;
            }
        }
    }
}

/// The payload comes from a reader, read in order by the calling thread, or from a file
/// between two offsets, read at offsets by the worker threads themselves (so reading is
/// spread over the workers too, not done by one thread for all).
pub enum Source<'a, R: ?Sized> {
    Reader(&'a mut R),
    File {
        file: &'a dyn ReadAt,
        start: u64,
        end: u64,
    },
}

/// Bytes read at offsets, from several threads at once: a regular file (implemented in
/// `local::fs`; the core does no I/O of its own).
pub trait ReadAt: Sync {
    /// Reads from `offset` into `buf`; the bytes read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    /// The current size in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Nothing below `offset` will be read again (told as each batch is done): a source that
    /// holds its bytes in memory may let them go.
    fn release_below(&self, _offset: u64) {}
    /// Fills `buf` from `offset`; an end before it is full is `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(std::io::Error::from(ErrorKind::UnexpectedEof)),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Bytes written at offsets, from several threads at once: a regular file (implemented in
/// `local::fs`), which the worker threads fill in place of one thread writing in order.
pub trait WriteAt: Sync {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
}

/// A file that changed size while it was read.
fn changed_input() -> std::io::Error {
    std::io::Error::other(
        "the input file changed while it was read: run the command again once it is complete",
    )
}

/// Plans the next batch of a file between `*pos` and `end` into `parts`, as [`read_batch`]
/// would read it: full chunk slots, a final short one, one empty chunk only for an empty
/// stream, the last chunk marked. The workers read the bytes. Returns whether the input ends.
fn plan_batch(
    parts: &mut [Part],
    slot_fill: usize,
    pos: &mut u64,
    end: u64,
    next_index: &mut u64,
) -> bool {
    let mut eof = false;
    for part in parts.iter_mut() {
        part.reset(*next_index);
        if eof {
            continue;
        }
        part.at = Some(*pos);
        for j in 0..part.chunks {
            part.reserve_slot(j);
            let n = usize::try_from((end - *pos).min(slot_fill as u64)).unwrap_or(slot_fill);
            part.lens.push(n);
            *pos += n as u64;
            *next_index += 1;
            if *pos == end {
                eof = true;
                break;
            }
        }
    }
    if eof {
        if let Some(p) = parts.iter_mut().rev().find(|p| !p.lens.is_empty()) {
            p.at_end = Some(p.lens.len() - 1);
        }
    }
    eof
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
        part.reset(*next_index);
        if eof {
            continue;
        }
        for j in 0..part.chunks {
            part.reserve_slot(j);
            let slot = &mut part.buf[j * SLOT..(j + 1) * SLOT];
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
pub(super) fn pipeline<R, W, F, G>(
    input: Source<'_, R>,
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
    // A stream of unknown length being sealed (an agent's generator, stdin) goes in smaller
    // batches: what it holds is what a caller with a memory budget counts (1 MiB still gives
    // each of 2 workers 8 chunks). Files, and everything opened, go in full batches.
    let batch = if matches!(input, Source::Reader(_)) && !open {
        READER_BATCH_CHUNKS
    } else {
        BATCH_CHUNKS
    };
    let threads = threads.clamp(1, batch);
    let per = batch.div_ceil(threads);
    let slot_fill = if open { SLOT } else { CHUNK };
    let (mut input, file) = match input {
        Source::Reader(r) => (Some(r), None),
        Source::File { file, start, end } => (None, Some((file, start, end))),
    };
    let mut pos = file.map_or(0, |(_, start, _)| start);
    // Two batches of parts rotate: one being processed while the other is read/written.
    let mut spare: Vec<Vec<Part>> = (0..2)
        .map(|_| (0..threads).map(|_| Part::new(per, open)).collect())
        .collect();
    let mut carry = None;
    let mut next_index = 0u64;
    // The first batch is read before any thread starts: when it is all there is and it is
    // small (a 1 KiB envelope), this thread does the work itself, since starting the workers
    // would cost far more than the work.
    let mut first = spare
        .pop()
        .ok_or(EnvelopeError::Internal("pipeline lost a batch"))?;
    let first_eof = match (&mut input, file) {
        (Some(r), _) => read_batch(*r, &mut first, slot_fill, &mut carry, &mut next_index)?,
        (None, Some((_, _, end))) => {
            plan_batch(&mut first, slot_fill, &mut pos, end, &mut next_index)
        }
        (None, None) => return Err(EnvelopeError::Internal("no input")),
    };
    if first_eof && next_index <= INLINE_CHUNKS {
        let reader = file.map(|(f, _, _)| f);
        for part in &mut first {
            if let Some(f) = reader {
                part.read_at(f, slot_fill);
            }
            if part.io.is_none() {
                work(part);
            }
            // A failed read, or a failed write at offsets by the work itself, as the
            // collector below reports it.
            if let Some(e) = part.io.take() {
                return Err(EnvelopeError::Io(e));
            }
            write_part(output, part)?;
        }
        return unchanged(file);
    }
    let mut first = Some((first, first_eof));
    std::thread::scope(|scope| {
        let work = &work;
        let reader = file.map(|(f, _, _)| f);
        let mut to_workers = Vec::with_capacity(threads);
        let mut from_workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (job_tx, job_rx) = std::sync::mpsc::channel::<Part>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<Part>();
            scope.spawn(move || {
                while let Ok(mut part) = job_rx.recv() {
                    if let Some(f) = reader {
                        part.read_at(f, slot_fill);
                    }
                    if part.io.is_none() {
                        work(&mut part);
                    }
                    if done_tx.send(part).is_err() {
                        break;
                    }
                }
            });
            to_workers.push(job_tx);
            from_workers.push(done_rx);
        }
        let mut in_flight = false;
        let mut eof = false;
        loop {
            let mut dispatched = false;
            if !eof {
                let batch = match first.take() {
                    Some((batch, first_eof)) => {
                        eof = first_eof;
                        batch
                    }
                    None => {
                        let mut batch = spare
                            .pop()
                            .ok_or(EnvelopeError::Internal("pipeline lost a batch"))?;
                        eof = match (&mut input, file) {
                            (Some(r), _) => {
                                read_batch(*r, &mut batch, slot_fill, &mut carry, &mut next_index)?
                            }
                            (None, Some((_, _, end))) => {
                                plan_batch(&mut batch, slot_fill, &mut pos, end, &mut next_index)
                            }
                            (None, None) => return Err(EnvelopeError::Internal("no input")),
                        };
                        batch
                    }
                };
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
                let mut read_upto = None;
                for part in &mut done {
                    if let Some(e) = part.io.take() {
                        return Err(EnvelopeError::Io(e));
                    }
                    write_part(output, part)?;
                    if let Some(at) = part.at {
                        let n: usize = part.lens.iter().sum();
                        read_upto = read_upto.max(Some(at + n as u64));
                    }
                }
                // Batches are done in order: nothing of this one or before it is read again.
                if let (Some(f), Some(upto)) = (reader, read_upto) {
                    f.release_below(upto);
                }
                spare.push(done);
            }
            in_flight = dispatched;
            if !dispatched {
                break;
            }
        }
        unchanged(file)
    })
}

/// A file read at offsets must not have changed size meanwhile (what was read would not be
/// the whole of it).
fn unchanged(file: Option<(&dyn ReadAt, u64, u64)>) -> Result<(), EnvelopeError> {
    if let Some((f, _, end)) = file {
        let now = f.size().map_err(EnvelopeError::Io)?;
        if now != end {
            return Err(EnvelopeError::Io(changed_input()));
        }
    }
    Ok(())
}

/// How a chunk that authenticated relates to where the stream ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Opened {
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
