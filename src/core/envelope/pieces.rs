//! The ciphertext's piece tree: an envelope's ciphertext is cut into [`PIECE`]-byte pieces (the
//! last one shorter), each piece's hash is a leaf, and the digest every party signs and checks
//! (the agent's or source's statement, the user's receipt, the relay's record) is the RFC 6962
//! Merkle tree hash over those leaves (`0x00 || piece` for a leaf, `0x01 || left || right` for
//! a node: `core::tlog::merkle`).
//!
//! With the leaves in hand, each piece can be checked on its own, against a root that was
//! checked once: the relay checks each stored piece as it sends it (nothing altered is ever
//! sent, THREATS.md 30, and no whole pass before the first byte), the user's client checks each
//! piece as it arrives, and a broken transfer resumes from the last checked piece. The leaves
//! travel ahead of the ciphertext (`docs/protocol.md`): 32 bytes per piece, 128 KiB for a
//! gibibyte.

use crate::core::tlog::{self as merkle, Hash};
use crate::error::{Error, Result};

/// The bytes of one piece: the network's and the blob store's unit too.
pub const PIECE: usize = 256 * 1024;

/// The bytes of one leaf hash.
pub const LEAF: usize = 32;

/// How many pieces a ciphertext of `len` bytes has (none for an empty one).
pub fn count(len: u64) -> u64 {
    len.div_ceil(PIECE as u64)
}

/// The length of piece `index` of a ciphertext of `len` bytes (0 past its end).
pub fn piece_len(len: u64, index: u64) -> usize {
    let start = index.saturating_mul(PIECE as u64);
    usize::try_from(len.saturating_sub(start).min(PIECE as u64)).unwrap_or(PIECE)
}

/// The leaf hash of one piece.
pub fn leaf(piece: &[u8]) -> Hash {
    merkle::leaf_hash(piece)
}

/// The tree root over `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    merkle::root_from_leaf_hashes(leaves)
}

/// The digest of a ciphertext held whole (a small one).
pub fn digest(ciphertext: &[u8]) -> Hash {
    let leaves: Vec<Hash> = ciphertext.chunks(PIECE).map(leaf).collect();
    root(&leaves)
}

/// The leaves of a ciphertext, and its length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pieces {
    pub leaves: Vec<Hash>,
    pub len: u64,
}

impl Pieces {
    /// The digest: the tree root over the leaves.
    pub fn root(&self) -> Hash {
        root(&self.leaves)
    }

    /// The leaves as sent ahead of a ciphertext: 32 bytes each, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.leaves.concat()
    }

    /// Reads the leaves of a `len`-byte ciphertext from `bytes` (exactly [`count`]`(len)`
    /// leaves) and checks them against the signed `root`: the one check that makes every later
    /// piece check mean something.
    pub fn checked(bytes: &[u8], len: u64, root_signed: &Hash) -> Result<Pieces> {
        let want = leaves_bytes(len)?;
        if bytes.len() != want {
            return Err(Error::verification(format!(
                "the piece list has {} bytes where a {len}-byte ciphertext has {want}",
                bytes.len()
            )));
        }
        let leaves: Vec<Hash> = bytes
            .chunks_exact(LEAF)
            .map(|c| {
                let mut h = [0u8; LEAF];
                h.copy_from_slice(c);
                h
            })
            .collect();
        let pieces = Pieces { leaves, len };
        if &pieces.root() != root_signed {
            return Err(Error::verification(
                "the piece list does not match the signed digest (altered in transit or at rest)",
            ));
        }
        Ok(pieces)
    }

    /// Checks piece `index` (its whole bytes) against its leaf.
    pub fn check(&self, index: u64, piece: &[u8]) -> Result<()> {
        let expected = usize::try_from(index)
            .ok()
            .and_then(|i| self.leaves.get(i))
            .ok_or_else(|| Error::verification(format!("there is no piece {index}")))?;
        if piece.len() != piece_len(self.len, index) || &leaf(piece) != expected {
            return Err(Error::verification(format!(
                "piece {index} of the ciphertext does not match the signed digest (altered in transit or at rest)"
            )));
        }
        Ok(())
    }
}

/// The bytes of the piece list of a `len`-byte ciphertext.
pub fn leaves_bytes(len: u64) -> Result<usize> {
    usize::try_from(count(len))
        .ok()
        .and_then(|n| n.checked_mul(LEAF))
        .ok_or_else(|| Error::bad_input("a ciphertext too long for this machine"))
}

/// Hashes bytes given in any cut into pieces, one piece's hash state at a time.
pub struct PieceHasher {
    ctx: ring::digest::Context,
    filled: usize,
    pieces: Pieces,
}

impl Default for PieceHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PieceHasher {
    pub fn new() -> Self {
        PieceHasher {
            ctx: Self::start(),
            filled: 0,
            pieces: Pieces::default(),
        }
    }

    fn start() -> ring::digest::Context {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&[0x00]);
        ctx
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = bytes.len().min(PIECE - self.filled);
            self.ctx.update(&bytes[..take]);
            self.filled += take;
            self.pieces.len += take as u64;
            bytes = &bytes[take..];
            if self.filled == PIECE {
                self.close_piece();
            }
        }
    }

    fn close_piece(&mut self) {
        let ctx = std::mem::replace(&mut self.ctx, Self::start());
        let mut h = [0u8; LEAF];
        h.copy_from_slice(ctx.finish().as_ref());
        self.pieces.leaves.push(h);
        self.filled = 0;
    }

    /// The bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.pieces.len
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.len == 0
    }

    /// The leaves (the last, short piece closed).
    pub fn finish(mut self) -> Pieces {
        if self.filled > 0 {
            self.close_piece();
        }
        self.pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hasher_agrees_with_whole_pieces_however_the_bytes_are_cut() {
        let data: Vec<u8> = (0..(3 * PIECE + 777)).map(|i| (i * 7 + 3) as u8).collect();
        let whole = digest(&data);
        for cut in [1usize, 1000, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE] {
            let mut h = PieceHasher::new();
            for c in data.chunks(cut) {
                h.update(c);
            }
            let p = h.finish();
            assert_eq!(p.len, data.len() as u64);
            assert_eq!(p.leaves.len() as u64, count(p.len));
            assert_eq!(p.root(), whole, "cut {cut}");
        }
        // One piece: the root is its leaf; exactly one piece's worth is still one piece.
        assert_eq!(digest(b"abc"), leaf(b"abc"));
        assert_eq!(count(PIECE as u64), 1);
        assert_eq!(count(PIECE as u64 + 1), 2);
        assert_eq!(piece_len(PIECE as u64 + 1, 1), 1);
        assert_eq!(piece_len(PIECE as u64 + 1, 2), 0);
    }

    #[test]
    fn a_wrong_piece_list_or_an_altered_piece_is_refused() {
        let data: Vec<u8> = (0..(2 * PIECE + 10)).map(|i| (i % 251) as u8).collect();
        let mut h = PieceHasher::new();
        h.update(&data);
        let p = h.finish();
        let root = p.root();
        let bytes = p.to_bytes();
        let back = Pieces::checked(&bytes, p.len, &root).unwrap();
        for (i, piece) in data.chunks(PIECE).enumerate() {
            back.check(i as u64, piece).unwrap();
        }
        // Any flipped bit of the list, a list for another length, a short or long list.
        for i in [0, 31, 32, bytes.len() - 1] {
            let mut t = bytes.clone();
            t[i] ^= 1;
            assert!(Pieces::checked(&t, p.len, &root).is_err(), "byte {i}");
        }
        assert!(Pieces::checked(&bytes, p.len + PIECE as u64, &root).is_err());
        assert!(Pieces::checked(&bytes[..64], p.len, &root).is_err());
        // Any altered, swapped, cut or extended piece.
        let mut altered = data[..PIECE].to_vec();
        altered[PIECE / 2] ^= 0x80;
        assert!(back.check(0, &altered).is_err());
        assert!(back.check(1, &data[..PIECE]).is_err());
        assert!(back.check(2, &data[2 * PIECE..2 * PIECE + 9]).is_err());
        assert!(back.check(3, b"").is_err());
    }
}
