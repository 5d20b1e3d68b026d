//! RFC 6962 §2.1 Merkle tree hashing, the append-only [`Tree`] that produces roots and proofs for
//! every size it has held, and the RFC 9162 §2.1.3.2 / §2.1.4.2 proof verifiers.
//!
//! Hashes are SHA-256 with the RFC's domain separation (`0x00` before a leaf, `0x01` before two
//! children), so a leaf can never be passed off as an interior node or the reverse.
//!
//! The tree keeps, per level `k`, the hash of every complete subtree of `2^k` leaves. Every node
//! of the RFC tree of any size `n` is either one of those, or a right-edge node whose hash folds
//! at most `log2 n` of them; so roots and proofs for historical sizes cost `O(log n)` lookups
//! and hashes, and appending costs one hash per level that the new leaf completes.

use std::fmt;

use ring::digest;

use crate::error::Error;

/// A SHA-256 Merkle tree hash: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The hash of one log entry: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    finish(ctx)
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

fn finish(ctx: digest::Context) -> Hash {
    let mut out = [0u8; 32];
    // A SHA-256 digest is always 32 bytes; zip rather than copy_from_slice so no length
    // mismatch can ever panic.
    for (o, b) in out.iter_mut().zip(ctx.finish().as_ref()) {
        *o = *b;
    }
    out
}

/// Reads a hash from untrusted bytes (a proof or a checkpoint), refusing any other length rather
/// than padding or truncating it.
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, ProofError> {
    Hash::try_from(bytes).map_err(|_| ProofError::HashLength { got: bytes.len() })
}

/// Compares two hashes without an early exit, so the time taken does not reveal how much of a
/// forged root was right. (ring's `constant_time` helper is deprecated, hence this one.)
fn hashes_equal(a: &Hash, b: &Hash) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `MTH(D[n])` of RFC 6962 §2.1, computed straight from the definition; `O(n)` hashes. The
/// reference the [`Tree`] is tested against, and handy for a one-off root of a short list.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [only] => *only,
        _ => {
            // split_point(len) < len because len >= 2, so split_at cannot panic.
            let (left, right) = leaves.split_at(split_point(leaves.len() as u64) as usize);
            node_hash(&root_from_leaf_hashes(left), &root_from_leaf_hashes(right))
        }
    }
}

/// The largest power of two strictly below `n` (for `n >= 2`): where RFC 6962 splits a tree of
/// `n` leaves into its left and right subtrees.
fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    1 << (63 - (n - 1).leading_zeros())
}

/// Why a proof did not verify, or why the tree could not answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked from a larger tree to a smaller one.
    SizesOutOfOrder { size1: u64, size2: u64 },
    /// A consistency proof from the empty tree: it would prove nothing, so it is refused.
    EmptyOldTree,
    /// The proof does not have the number of hashes these sizes (and index) call for.
    ProofLength { got: usize, want: usize },
    /// The root computed from an inclusion proof, or the second root of an equal-size
    /// consistency check, differs from the expected root.
    RootMismatch,
    /// The consistency proof does not reproduce the old tree's root.
    OldRootMismatch,
    /// The consistency proof does not reproduce the new tree's root.
    NewRootMismatch,
    /// A hash read from outside is not 32 bytes.
    HashLength { got: usize },
    /// The tree was asked about a size larger than it has ever been.
    SizeBeyondTree { size: u64, tree_size: u64 },
    /// Stored levels handed to [`Tree::from_levels`] do not have the shape of a tree.
    MalformedLevels { level: usize },
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofError::IndexOutOfRange { index, size } => {
                write!(f, "leaf index {index} is not in a tree of {size} leaves")
            }
            ProofError::SizesOutOfOrder { size1, size2 } => write!(
                f,
                "consistency proof from tree size {size1} to the smaller size {size2}: a log never shrinks"
            ),
            ProofError::EmptyOldTree => f.write_str(
                "consistency proof from the empty tree proves nothing: start from a tree of at least one leaf",
            ),
            ProofError::ProofLength { got, want } => write!(
                f,
                "Merkle proof has {got} hashes where these tree sizes call for {want}"
            ),
            ProofError::RootMismatch => {
                f.write_str("Merkle proof does not lead to the expected root hash")
            }
            ProofError::OldRootMismatch => {
                f.write_str("consistency proof does not reproduce the old tree's root hash")
            }
            ProofError::NewRootMismatch => {
                f.write_str("consistency proof does not reproduce the new tree's root hash")
            }
            ProofError::HashLength { got } => {
                write!(f, "a Merkle tree hash must be 32 bytes, got {got}")
            }
            ProofError::SizeBeyondTree { size, tree_size } => write!(
                f,
                "tree size {size} is beyond the {tree_size} leaves the log holds"
            ),
            ProofError::MalformedLevels { level } => write!(
                f,
                "stored Merkle tree level {level} has the wrong number of hashes for the level below it"
            ),
        }
    }
}

impl std::error::Error for ProofError {}

impl From<ProofError> for Error {
    fn from(e: ProofError) -> Self {
        Error::verification(e.to_string())
    }
}

/// The proof length RFC 6962 gives for leaf `index < size`: the levels below the point where
/// the paths to `index` and to the last leaf part (`inner`), plus one per left sibling above it
/// (`border`). Only used to say what was expected in an error; the verifier itself decides by
/// running the RFC 9162 algorithm.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (inner, border) = decompose_inclusion(index, size);
    (inner + border) as usize
}

fn decompose_inclusion(index: u64, size: u64) -> (u32, u32) {
    let inner = 64 - (index ^ size.saturating_sub(1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// The consistency proof length for `0 < size1 < size2`: the inclusion path of leaf `size1 - 1`
/// from the level of the largest complete subtree it ends, plus that subtree's hash unless it
/// is the whole old tree.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let (inner, border) = decompose_inclusion(size1.saturating_sub(1), size2);
    let inner = inner.saturating_sub(size1.trailing_zeros());
    let seed = usize::from(!size1.is_power_of_two());
    seed + (inner + border) as usize
}

/// The root a leaf's inclusion proof leads to (RFC 9162 §2.1.3.2 without the final
/// comparison), for callers that compare against a root they hold in another form.
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let wrong_length = ProofError::ProofLength {
        got: proof.len(),
        want: inclusion_proof_len(index, size),
    };
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            // Climb past the levels where this node is the last one of the tree and has no
            // right sibling.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length);
    }
    Ok(r)
}

/// Checks that the leaf with hash `leaf_hash` is at `index` in the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2). The proof must have exactly the hashes the algorithm
/// consumes.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, size, proof)?;
    if hashes_equal(&computed, root) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks the proof against the old root and returns the new root it leads to (RFC 9162
/// §2.1.4.2 without the final comparison with the new root). Equal sizes need an empty proof
/// and give back `root1`; a proof from size 0 is refused, as transparency-dev/merkle does.
pub fn root_from_consistency_proof(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
) -> Result<Hash, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::ProofLength {
                got: proof.len(),
                want: 0,
            });
        }
        return Ok(*root1);
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    let wrong_length = ProofError::ProofLength {
        got: proof.len(),
        want: consistency_proof_len(size1, size2),
    };
    // When the old tree is a complete subtree of the new one, its root is the first node of the
    // path and the proof leaves it out.
    let (seed, rest) = if size1.is_power_of_two() {
        if proof.is_empty() {
            return Err(wrong_length);
        }
        (root1, proof)
    } else {
        proof.split_first().ok_or(wrong_length)?
    };
    let mut fnode = size1 - 1;
    let mut snode = size2 - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *seed;
    let mut sr = *seed;
    for c in rest {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length);
    }
    if !hashes_equal(&fr, root1) {
        return Err(ProofError::OldRootMismatch);
    }
    Ok(sr)
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves
/// with root `root1` (RFC 9162 §2.1.4.2): the log was appended to, never rewritten.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_consistency_proof(size1, size2, proof, root1)?;
    if hashes_equal(&computed, root2) {
        Ok(())
    } else if size1 == size2 {
        Err(ProofError::RootMismatch)
    } else {
        Err(ProofError::NewRootMismatch)
    }
}

/// A hash the tree stored when a leaf was appended: the complete subtree at `level` and
/// position `index` on that level, which covers leaves `index * 2^level .. (index + 1) *
/// 2^level`. Level 0 is the leaf itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub level: u32,
    pub index: u64,
    pub hash: Hash,
}

/// An append-only Merkle tree held in memory, answering roots and proofs for its current size
/// and every earlier one.
///
/// `levels[k][i]` is the hash of the complete subtree of leaves `i * 2^k .. (i + 1) * 2^k`;
/// `levels[0]` are the leaf hashes. Nothing else is stored: right-edge nodes of smaller trees
/// are folded from these on demand, which is what lets old sizes be answered without keeping
/// their roots. A store persists the [`Node`]s that [`Tree::append`] returns and rebuilds the
/// tree with [`Tree::from_levels`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the tree by appending each leaf hash in turn (one hash per leaf, amortized).
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.append(leaf);
        }
        tree
    }

    /// Restores a tree from levels a store kept. The shape is checked (level `k + 1` holds
    /// half as many hashes as level `k`, rounded down, and the top level holds exactly one;
    /// the empty tree has no levels); the hashes are not recomputed, because that would cost a
    /// hash per node on every load. A store that doubts its medium can compare
    /// [`root_from_leaf_hashes`] of level 0 with the root it signed.
    pub fn from_levels(levels: Vec<Vec<Hash>>) -> Result<Self, ProofError> {
        for (below, pair) in levels.windows(2).enumerate() {
            if let [lower, upper] = pair {
                if upper.len() != lower.len() / 2 {
                    return Err(ProofError::MalformedLevels { level: below + 1 });
                }
            }
        }
        if let Some(top) = levels.last() {
            if top.len() != 1 {
                return Err(ProofError::MalformedLevels {
                    level: levels.len() - 1,
                });
            }
        }
        Ok(Tree { levels })
    }

    /// The stored complete-subtree hashes, level 0 (the leaves) first: what a store persists.
    pub fn levels(&self) -> &[Vec<Hash>] {
        &self.levels
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The hash of leaf `index`, if the tree has it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.complete(0, index)
    }

    /// Appends a leaf hash and returns every hash this stored: the leaf itself (level 0), then
    /// one node per complete subtree the leaf finishes. The leaf's index is `returned[0].index`.
    pub fn append(&mut self, leaf_hash: Hash) -> Vec<Node> {
        let mut added = Vec::new();
        let mut hash = leaf_hash;
        let mut level: u32 = 0;
        while let Some(row) = self.row_for_append(level as usize) {
            row.push(hash);
            let count = row.len();
            added.push(Node {
                level,
                index: (count - 1) as u64,
                hash,
            });
            if !count.is_multiple_of(2) {
                break;
            }
            // An even count means the last two hashes are siblings whose parent is now complete.
            match row.get(count - 2..) {
                Some([left, right]) => hash = node_hash(left, right),
                _ => break,
            }
            level += 1;
        }
        added
    }

    /// Cuts the tree back to its first `size` leaves (no-op when it is not larger): what a
    /// store does when appends it made in memory were not committed.
    pub fn truncate(&mut self, size: u64) {
        if size >= self.size() {
            return;
        }
        let mut keep = size;
        for row in self.levels.iter_mut() {
            row.truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            keep /= 2;
        }
        while self.levels.last().is_some_and(|row| row.is_empty()) {
            self.levels.pop();
        }
    }

    fn row_for_append(&mut self, level: usize) -> Option<&mut Vec<Hash>> {
        if self.levels.len() == level {
            self.levels.push(Vec::new());
        }
        self.levels.get_mut(level)
    }

    /// The root of the tree as it was at `size` leaves (`size` up to the current size).
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(EMPTY_ROOT);
        }
        self.subtree(0, size, size)
    }

    /// The inclusion proof (RFC 6962 §2.1.1 PATH) of leaf `index` in the tree of `size` leaves,
    /// ordered from the leaf's sibling up to the root's child.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut top_down = Vec::new();
        let (mut lo, mut hi) = (0u64, size);
        while hi - lo > 1 {
            let mid = lo + split_point(hi - lo);
            if index < mid {
                top_down.push(self.subtree(mid, hi, size)?);
                hi = mid;
            } else {
                top_down.push(self.subtree(lo, mid, size)?);
                lo = mid;
            }
        }
        top_down.reverse();
        Ok(top_down)
    }

    /// The consistency proof (RFC 6962 §2.1.2 PROOF) from the tree of `old_size` leaves to the
    /// tree of `new_size`. Empty when the sizes are equal or `old_size` is 0 (a proof from the
    /// empty tree is empty, and the verifier refuses it as meaningless).
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(ProofError::SizesOutOfOrder {
                size1: old_size,
                size2: new_size,
            });
        }
        if old_size == 0 || old_size == new_size {
            return Ok(Vec::new());
        }
        // SUBPROOF(m, D[lo:hi], old_is_whole_subtree), unrolled; `m` counts from `lo`.
        let mut top_down = Vec::new();
        let (mut lo, mut hi, mut m) = (0u64, new_size, old_size);
        let mut old_is_whole_subtree = true;
        loop {
            if m == hi - lo {
                if !old_is_whole_subtree {
                    top_down.push(self.subtree(lo, hi, new_size)?);
                }
                break;
            }
            let k = split_point(hi - lo);
            if m <= k {
                top_down.push(self.subtree(lo + k, hi, new_size)?);
                hi = lo + k;
            } else {
                top_down.push(self.subtree(lo, lo + k, new_size)?);
                lo += k;
                m -= k;
                old_is_whole_subtree = false;
            }
        }
        top_down.reverse();
        Ok(top_down)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let tree_size = self.size();
        if size > tree_size {
            return Err(ProofError::SizeBeyondTree { size, tree_size });
        }
        Ok(())
    }

    fn complete(&self, level: u32, index: u64) -> Option<Hash> {
        let row = self.levels.get(level as usize)?;
        row.get(usize::try_from(index).ok()?).copied()
    }

    /// MTH of leaves `start..end` for a node of the RFC tree: its `end - start` leaves split into
    /// complete subtrees by the bits of the count, largest first, and hash right to left. The
    /// `size` is only for the error, which callers that checked their bounds never see.
    fn subtree(&self, start: u64, end: u64, size: u64) -> Result<Hash, ProofError> {
        let missing = ProofError::SizeBeyondTree {
            size,
            tree_size: self.size(),
        };
        if start >= end {
            return Err(missing);
        }
        let mut acc: Option<Hash> = None;
        let mut hi = end;
        while hi > start {
            let level = (hi - start).trailing_zeros();
            let width = 1u64 << level;
            let lo = hi - width;
            // RFC tree nodes always decompose into aligned complete subtrees; anything else
            // would silently read the wrong subtree, so refuse it.
            if !lo.is_multiple_of(width) {
                return Err(missing);
            }
            let h = self.complete(level, lo >> level).ok_or(missing)?;
            acc = Some(match acc {
                None => h,
                Some(right) => node_hash(&h, &right),
            });
            hi = lo;
        }
        acc.ok_or(missing)
    }
}

#[cfg(test)]
mod tests;
