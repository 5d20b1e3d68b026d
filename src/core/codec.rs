//! The canonical byte encoding every signed statement uses, and a cursor that reads it without
//! panicking. Fields are written in a fixed order per statement type:
//!
//! * `u8`, `u64`: 1 byte, 8 bytes big-endian;
//! * byte strings and UTF-8 strings: a `u32` big-endian length, then the bytes;
//! * optional values: `0x00`, or `0x01` then the value;
//! * lists: a `u32` big-endian count, then the items.
//!
//! Every length read from input is checked against a cap given by the caller before anything is
//! allocated, and a reader that is not fully consumed is an error (no trailing data).

use std::cell::RefCell;

use crate::error::{Error, Result};

/// One field as a [`Writer`] wrote it: what the test vectors (`docs/vectors/`) list, so that
/// an implementation in another language can rebuild a statement's bytes field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    U8(u8),
    U64(u64),
    Bytes(Vec<u8>),
    Str(String),
    OptStr(Option<String>),
    StrList(Vec<String>),
}

thread_local! {
    static TRACE: RefCell<Option<Vec<Field>>> = const { RefCell::new(None) };
}

/// Runs `encode` and returns what it built with the fields every [`Writer`] wrote meanwhile,
/// in order (statement prefixes and tags written with [`Writer::raw`] are not fields).
pub fn traced(encode: impl FnOnce() -> Vec<u8>) -> (Vec<u8>, Vec<Field>) {
    /// Puts the thread's previous trace back however `encode` ends (a panic included), so a
    /// caught panic cannot leave every later field recorded.
    struct Restore(Option<Option<Vec<Field>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                TRACE.with(|t| *t.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(TRACE.with(|t| t.borrow_mut().replace(Vec::new()))));
    let bytes = encode();
    let outer = restore.0.take().unwrap_or_default();
    let fields = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (bytes, fields.unwrap_or_default())
}

fn record(field: impl FnOnce() -> Field) {
    TRACE.with(|t| {
        if let Some(fields) = t.borrow_mut().as_mut() {
            fields.push(field());
        }
    });
}

/// Builds canonical bytes.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        record(|| Field::U8(v));
        self.buf.push(v);
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        record(|| Field::U64(v));
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn put_bytes(&mut self, v: &[u8]) {
        // Lengths are capped far below u32::MAX by every statement type; saturate defensively so
        // the reader's cap check fails rather than wrapping.
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v);
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        record(|| Field::Bytes(v.to_vec()));
        self.put_bytes(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        record(|| Field::Str(v.to_owned()));
        self.put_bytes(v.as_bytes());
        self
    }
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        record(|| Field::OptStr(v.map(str::to_owned)));
        match v {
            None => self.buf.push(0),
            Some(s) => {
                self.buf.push(1);
                self.put_bytes(s.as_bytes());
            }
        }
        self
    }
    pub fn str_list(&mut self, items: &[String]) -> &mut Self {
        record(|| Field::StrList(items.to_vec()));
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&n.to_be_bytes());
        for item in items {
            self.put_bytes(item.as_bytes());
        }
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads canonical bytes; every method fails cleanly on short or oversized input.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::bad_input("truncated statement"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Consumes exactly `expected` or fails.
    pub fn expect_raw(&mut self, expected: &[u8], what: &str) -> Result<()> {
        let got = self
            .take(expected.len())
            .map_err(|_| Error::bad_input(format!("not a {what}")))?;
        if got == expected {
            Ok(())
        } else {
            Err(Error::bad_input(format!("not a {what}")))
        }
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    /// A number a store indexes by (a serial, an expiry): at most [`MAX_STORED`], what
    /// PostgreSQL's BIGINT holds, so a statement one store takes is never one another refuses
    /// (and with it every other write of its commit).
    pub fn stored_u64(&mut self, what: &str) -> Result<u64> {
        let v = self.u64()?;
        check_stored(v, what)?;
        Ok(v)
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8]> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if len > max {
            return Err(Error::bad_input(format!(
                "{what} is {len} bytes, more than the limit of {max}"
            )));
        }
        self.take(len)
    }

    /// A length-prefixed byte string of exactly `N` bytes.
    pub fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        <[u8; N]>::try_from(b)
            .map_err(|_| Error::bad_input(format!("{what} must be {N} bytes, got {}", b.len())))
    }

    pub fn str(&mut self, max: usize, what: &str) -> Result<&'a str> {
        let b = self.bytes(max, what)?;
        std::str::from_utf8(b).map_err(|_| Error::bad_input(format!("{what} is not UTF-8")))
    }

    pub fn opt_str(&mut self, max: usize, what: &str) -> Result<Option<&'a str>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str(max, what)?)),
            _ => Err(Error::bad_input(format!("{what}: bad option tag"))),
        }
    }

    pub fn str_list(
        &mut self,
        max_items: usize,
        max_len: usize,
        what: &str,
    ) -> Result<Vec<String>> {
        let n = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if n > max_items {
            return Err(Error::bad_input(format!(
                "{what} has {n} items, more than the limit of {max_items}"
            )));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.str(max_len, what)?.to_owned());
        }
        Ok(out)
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Fails if any bytes are left.
    pub fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::bad_input(format!(
                "{} trailing bytes after the statement",
                self.rest.len()
            )))
        }
    }
}

/// The largest serial or expiry a statement may carry: `i64::MAX`, PostgreSQL's BIGINT.
pub const MAX_STORED: u64 = i64::MAX as u64;

/// Refuses a number past [`MAX_STORED`], in one line naming `what`.
pub fn check_stored(v: u64, what: &str) -> Result<()> {
    if v > MAX_STORED {
        return Err(Error::bad_input(format!(
            "the {what} is {v}, past the largest a relay stores ({MAX_STORED})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing() {
        let mut w = Writer::new();
        w.u8(7).u64(42).str("hi").opt_str(None).opt_str(Some("x"));
        w.str_list(&["a".into(), "bc".into()]);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), 42);
        assert_eq!(r.str(10, "s").unwrap(), "hi");
        assert_eq!(r.opt_str(10, "o").unwrap(), None);
        assert_eq!(r.opt_str(10, "o").unwrap(), Some("x"));
        assert_eq!(r.str_list(4, 4, "l").unwrap(), vec!["a", "bc"]);
        r.finish().unwrap();

        let mut extra = bytes.clone();
        extra.push(0);
        let mut r = Reader::new(&extra);
        r.take(bytes.len()).unwrap();
        assert!(r.finish().is_err());
    }

    #[test]
    fn caps_and_truncation() {
        let mut w = Writer::new();
        w.str("hello");
        let bytes = w.finish();
        assert!(Reader::new(&bytes).str(4, "s").is_err());
        assert!(Reader::new(&bytes[..6]).str(10, "s").is_err());
        // A huge claimed length fails on the cap, not on allocation.
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(Reader::new(&huge).bytes(1 << 20, "b").is_err());
        assert!(Reader::new(&huge).str_list(8, 8, "l").is_err());
    }
}
