//! The transparency log's Merkle math, and only that: the RFC 6962 / RFC 9162 hashes, an
//! append-only in-memory tree that answers roots and proofs for any size it has held, and the
//! verifiers a client runs on those proofs, then the checkpoint format on top. No I/O: the store
//! that persists a [`Tree`] is a layer above.
//!
//! * `merkle.rs`: the hashes, [`Tree`], proof generation and verification, and [`ProofError`];
//! * [`checkpoint`]: C2SP signed-note checkpoints;
//! * [`cosignature`]: witness cosignatures (`cosignature/v1`) and k-of-n witness policies;
//! * [`witness_protocol`]: the `tlog-witness` request and the witness's decision, without I/O;
//! * `crate::core::store::Event::leaf_bytes`: what a leaf holds (ids, digests, decisions, times).
//!
//! Everything works on leaf *hashes*, not leaf data, so a verifier never needs the entry it is
//! checking, and the probes of transparency-dev/merkle (which supply leaf hashes) run directly.

pub mod checkpoint;
pub mod cosignature;
mod merkle;
pub mod witness_protocol;

pub use merkle::{
    hash_from_slice, leaf_hash, node_hash, root_from_consistency_proof, root_from_inclusion_proof,
    root_from_leaf_hashes, verify_consistency, verify_inclusion, Hash, Node, ProofError, Tree,
    EMPTY_ROOT,
};
