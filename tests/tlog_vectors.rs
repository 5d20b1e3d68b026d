//! The transparency log's Merkle math against probes nobody here wrote: the RFC 6962 / RFC 9162
//! inclusion and consistency proofs of transparency-dev/merkle (`testdata/`, Apache-2.0), read
//! from `../shared/vectors/transparency-dev-merkle/` (see its README for the snapshot), and the
//! 8-leaf reference tree derived from the same suite.
//!
//! The `subtreeinclusion/` and `subtreeconsistency/` folders are not run: they test subtree
//! proofs from the Merkle Tree Certificates draft, which the log does not implement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sealrelay::core::tlog::{
    hash_from_slice, leaf_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion, Hash,
    ProofError, Tree, EMPTY_ROOT,
};
use serde_json::Value;

/// Probes whose expected outcome we deliberately do not share, with the reason. Each must
/// still exist and still disagree, so the list cannot go stale silently.
const EXCEPTIONS: &[(&str, &str)] = &[(
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    "its roots are 12-byte placeholders; the Go verifier does not look at hash lengths when \
     size1 == size2, ours refuses any hash that is not 32 bytes (documented in \
     ../shared/vectors/README.md, section 2)",
)];

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
}

fn bytes(v: &Value, field: &str) -> Vec<u8> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string"));
    B64.decode(s).unwrap()
}

fn number(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number"))
}

/// A field that must be a hash; a wrong length is the verifier's error, as it would be for
/// bytes off the wire.
fn hash(v: &Value, field: &str) -> Result<Hash, ProofError> {
    hash_from_slice(&bytes(v, field))
}

fn proof(v: &Value) -> Result<Vec<Hash>, ProofError> {
    match &v["proof"] {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| hash_from_slice(&B64.decode(item.as_str().unwrap()).unwrap()))
            .collect(),
        other => panic!("proof is {other}"),
    }
}

fn run_inclusion(v: &Value) -> Result<(), ProofError> {
    verify_inclusion(
        &hash(v, "leafHash")?,
        number(v, "leafIdx"),
        number(v, "treeSize"),
        &proof(v)?,
        &hash(v, "root")?,
    )
}

fn run_consistency(v: &Value) -> Result<(), ProofError> {
    verify_consistency(
        number(v, "size1"),
        number(v, "size2"),
        &proof(v)?,
        &hash(v, "root1")?,
        &hash(v, "root2")?,
    )
}

#[derive(Default, Debug)]
struct Counts {
    ran: usize,
    valid: usize,
    exceptions: usize,
    /// Refused before any hashing because a hash was not 32 bytes.
    bad_hash_length: usize,
}

fn run_folder(
    testdata: &Path,
    kind: &str,
    run: fn(&Value) -> Result<(), ProofError>,
    failures: &mut Vec<String>,
) -> Counts {
    let mut files = Vec::new();
    json_files(&testdata.join(kind), &mut files);
    let mut counts = Counts::default();
    for file in files {
        let name = file
            .strip_prefix(testdata)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let got = run(&v);
        counts.ran += 1;
        if !want_err {
            counts.valid += 1;
        }
        if let Err(ProofError::HashLength { .. }) = got {
            counts.bad_hash_length += 1;
        }
        if let Some((_, reason)) = EXCEPTIONS.iter().find(|(n, _)| *n == name) {
            counts.exceptions += 1;
            if got.is_err() == want_err {
                failures.push(format!(
                    "{name}: listed as an exception ({reason}) but now agrees; remove it"
                ));
            }
            continue;
        }
        if got.is_err() != want_err {
            failures.push(format!(
                "{name} ({}): wantErr {want_err}, got {got:?}",
                v["desc"]
            ));
        }
    }
    counts
}

#[test]
fn transparency_dev_inclusion_and_consistency_probes() {
    let Some(dir) = common::vectors("transparency-dev-merkle") else {
        return;
    };
    let testdata = dir.join("testdata");
    let mut failures = Vec::new();
    let inclusion = run_folder(&testdata, "inclusion", run_inclusion, &mut failures);
    let consistency = run_folder(&testdata, "consistency", run_consistency, &mut failures);
    eprintln!(
        "transparency-dev/merkle: inclusion {inclusion:?}, consistency {consistency:?}; \
         subtreeinclusion/ and subtreeconsistency/ skipped (Merkle Tree Certificates subtree \
         proofs, not implemented)"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The README lists 98 + 98 probes, 6 valid in each folder.
    assert!(
        inclusion.ran >= 98,
        "only {} inclusion probes",
        inclusion.ran
    );
    assert!(
        consistency.ran >= 98,
        "only {} consistency probes",
        consistency.ran
    );
    assert!(inclusion.valid >= 6 && consistency.valid >= 6);
    assert_eq!(
        inclusion.exceptions + consistency.exceptions,
        EXCEPTIONS.len(),
        "an exception names a probe that is not there"
    );
}

#[test]
fn rfc6962_reference_tree() {
    let Some(dir) = common::vectors("transparency-dev-merkle") else {
        return;
    };
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("rfc6962-reference-tree.json")).unwrap())
            .unwrap();
    let inputs: Vec<Vec<u8>> = v["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| common::unhex(s.as_str().unwrap()))
        .collect();
    let want_leaves: Vec<Vec<u8>> = v["leaf_hashes_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| common::unhex(s.as_str().unwrap()))
        .collect();
    let roots = v["root_by_tree_size_hex"].as_object().unwrap();
    assert_eq!(inputs.len(), 8);
    assert_eq!(want_leaves.len(), 8);
    assert_eq!(roots.len(), 9);

    let mut tree = Tree::new();
    let mut leaves = Vec::new();
    for (input, want) in inputs.iter().zip(&want_leaves) {
        let h = leaf_hash(input);
        assert_eq!(h.as_slice(), want.as_slice(), "leaf hash of {input:02x?}");
        tree.append(h);
        leaves.push(h);
    }
    for size in 0..=8u64 {
        let want = common::unhex(roots[&size.to_string()].as_str().unwrap());
        assert_eq!(
            tree.root(size).unwrap().as_slice(),
            want.as_slice(),
            "size {size}"
        );
        assert_eq!(
            root_from_leaf_hashes(&leaves[..size as usize]).as_slice(),
            want.as_slice(),
            "size {size}"
        );
    }
    assert_eq!(tree.root(0).unwrap(), EMPTY_ROOT);
    eprintln!("rfc6962 reference tree: 8 leaf hashes and 9 roots checked");
}
