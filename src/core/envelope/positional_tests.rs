//! `seal_at` / `open_at`: the worker threads' positional writes give exactly what the ordered
//! writes give, for sizes around chunk and batch boundaries, from a reader and from a file, on
//! 1 to 16 threads; a chunk that does not authenticate fails the open; a failing write fails the
//! call.

use std::sync::Mutex;

use super::chunks::{BATCH_CHUNKS, CHUNK, READER_BATCH_CHUNKS};
use super::stream::{ReadAt, WriteAt};
use super::*;

#[derive(Default)]
struct Mem(Mutex<Vec<u8>>);

impl WriteAt for Mem {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        // As pwrite(2): writing nothing extends nothing.
        if buf.is_empty() {
            return Ok(());
        }
        let mut v = self.0.lock().unwrap();
        let at = usize::try_from(offset).unwrap();
        if v.len() < at + buf.len() {
            v.resize(at + buf.len(), 0);
        }
        v[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

impl Mem {
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

struct Bytes(Vec<u8>);

impl ReadAt for Bytes {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let at = usize::try_from(offset).unwrap().min(self.0.len());
        let n = buf.len().min(self.0.len() - at);
        buf[..n].copy_from_slice(&self.0[at..at + n]);
        Ok(n)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

struct Broken;

impl WriteAt for Broken {
    fn write_all_at(&self, _: &[u8], offset: u64) -> std::io::Result<()> {
        if offset > 0 {
            return Err(std::io::Error::other("disk full"));
        }
        Ok(())
    }
}

fn sizes() -> Vec<usize> {
    vec![
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        READER_BATCH_CHUNKS * CHUNK - 1,
        READER_BATCH_CHUNKS * CHUNK,
        READER_BATCH_CHUNKS * CHUNK + 1,
        BATCH_CHUNKS * CHUNK,
        BATCH_CHUNKS * CHUNK + 1,
        2 * BATCH_CHUNKS * CHUNK + 3,
    ]
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn positional_writes_give_what_ordered_writes_give() {
    let id = age::x25519::Identity::generate();
    let to = id.to_public();
    for len in sizes() {
        let pt = plaintext(len);
        for threads in [1, 2, 3, 5, 16] {
            // Sealed at offsets, from a reader and from a file: opens (in order) to the input.
            for from_file in [false, true] {
                let out = Mem::default();
                let sealed = if from_file {
                    seal_at::<std::io::Empty>(
                        &to,
                        SealInput::File(&Bytes(pt.clone())),
                        &out,
                        threads,
                    )
                } else {
                    seal_at(&to, SealInput::Reader(&mut pt.as_slice()), &out, threads)
                }
                .unwrap();
                let ct = out.bytes();
                assert_eq!(sealed.ciphertext_len, ct.len() as u64, "{len} {threads}");
                let mut back = Vec::new();
                open(&[&id], &mut ct.as_slice(), &mut back, 2).unwrap();
                assert!(
                    back == pt,
                    "sealed at offsets: {len} bytes, {threads} threads"
                );
            }
            // Sealed in order, opened at offsets, from a reader and from a file.
            let mut ct = Vec::new();
            seal(&to, &mut pt.as_slice(), &mut ct, threads).unwrap();
            for from_file in [false, true] {
                let out = Mem::default();
                let n = if from_file {
                    open_at::<std::io::Empty>(
                        &[&id],
                        SealInput::File(&Bytes(ct.clone())),
                        &out,
                        threads,
                    )
                } else {
                    open_at(&[&id], SealInput::Reader(&mut ct.as_slice()), &out, threads)
                }
                .unwrap();
                assert_eq!(n, len as u64);
                assert!(
                    out.bytes() == pt,
                    "opened at offsets: {len} bytes, {threads} threads"
                );
            }
        }
    }
}

#[test]
fn a_chunk_that_does_not_authenticate_fails_the_open_at_offsets() {
    let id = age::x25519::Identity::generate();
    let pt = plaintext(3 * BATCH_CHUNKS * CHUNK / 2);
    let mut ct = Vec::new();
    seal(&id.to_public(), &mut pt.as_slice(), &mut ct, 2).unwrap();
    for at in [ct.len() - 3, ct.len() / 2, ct.len() / 5] {
        let mut bad = ct.clone();
        bad[at] ^= 0x01;
        let err = open_at::<std::io::Empty>(
            &[&id],
            SealInput::File(&Bytes(bad.clone())),
            &Mem::default(),
            2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not authenticate"), "{err}");
        let err = open_at(
            &[&id],
            SealInput::Reader(&mut bad.as_slice()),
            &Mem::default(),
            2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not authenticate"), "{err}");
    }
    // Cut short, or with a chunk too many: refused too.
    let cut = &ct[..ct.len() - CHUNK];
    assert!(open_at::<std::io::Empty>(
        &[&id],
        SealInput::File(&Bytes(cut.to_vec())),
        &Mem::default(),
        2
    )
    .is_err());
}

#[test]
fn a_failing_write_fails_the_call() {
    let id = age::x25519::Identity::generate();
    // Small inputs are handled on the calling thread, larger ones by the workers: both paths.
    for len in [1, CHUNK + 1, 5 * CHUNK] {
        let pt = plaintext(len);
        let err = seal_at(
            &id.to_public(),
            SealInput::Reader(&mut pt.as_slice()),
            &Broken,
            2,
        )
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{len}: {err}");
        // Opened, only a second chunk is written past offset 0 (where `Broken` fails).
        if len > CHUNK {
            let mut ct = Vec::new();
            seal(&id.to_public(), &mut pt.as_slice(), &mut ct, 2).unwrap();
            let err =
                open_at(&[&id], SealInput::Reader(&mut ct.as_slice()), &Broken, 2).unwrap_err();
            assert!(err.to_string().contains("disk full"), "{len}: {err}");
        }
    }
}
