//! Known answers: the RFC 6962 test leaves and the transparency-dev/merkle proof vectors
//! (see tests/data/transparency-dev/SOURCES.md).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::as_conversions,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use std::path::{Path, PathBuf};

use data_encoding::{BASE64, HEXLOWER};
use proofs::merkle::{verify_consistency, verify_inclusion};
use proofs::{Hash, LogStore, MemoryStore};
use serde_json::Value;

/// The eight RFC 6962 test leaves.
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// The RFC 6962 roots of the trees of the first 0..=8 leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference_log() -> MemoryStore {
    let mut store = MemoryStore::new();
    for leaf in LEAVES {
        store
            .append(&[&HEXLOWER.decode(leaf.as_bytes()).unwrap()])
            .unwrap();
    }
    store
}

#[test]
fn tree_heads_match_rfc6962() {
    let store = reference_log();
    for (size, root) in ROOTS.iter().enumerate() {
        assert_eq!(
            store.root_at(size as u64).unwrap().to_hex(),
            *root,
            "size {size}"
        );
    }
}

fn cases(kind: &str) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut dirs = vec![
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/transparency-dev")
            .join(kind),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                out.push((path, value));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A 32-byte hash, or `None` for a vector's deliberately malformed one.
fn hash(v: &Value) -> Option<Hash> {
    Hash::from_slice(&BASE64.decode(v.as_str().unwrap().as_bytes()).ok()?)
}

/// Whether every hash in a case is 32 bytes. Some cases use short placeholder roots that the Go
/// API, which takes byte slices, compares as opaque bytes; here a hash is a type, and a value
/// that is not 32 bytes is refused when it is parsed, before any proof is checked.
fn representable(case: &Value, fields: &[&str]) -> bool {
    fields.iter().all(|f| hash(&case[*f]).is_some()) && proof(&case["proof"]).is_some()
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => panic!("proof is {v}"),
    }
}

#[test]
fn inclusion_vectors() {
    let store = reference_log();
    let (mut accepted, mut refused, mut generated, mut placeholders) = (0, 0, 0, 0);
    for (path, case) in cases("inclusion") {
        let index = case["leafIdx"].as_u64().unwrap();
        let size = case["treeSize"].as_u64().unwrap();
        let want_err = case["wantErr"].as_bool().unwrap();
        if !representable(&case, &["leafHash", "root"]) {
            // Refused at parse time: right when the case wants an error; a placeholder otherwise.
            if want_err {
                refused += 1;
            } else {
                placeholders += 1;
            }
            continue;
        }
        let result = match (
            hash(&case["leafHash"]),
            hash(&case["root"]),
            proof(&case["proof"]),
        ) {
            (Some(leaf), Some(root), Some(p)) => {
                verify_inclusion(&leaf, index, size, &p, &root).is_ok()
            }
            _ => false,
        };
        assert_eq!(result, !want_err, "{}", path.display());
        if want_err {
            refused += 1;
            continue;
        }
        accepted += 1;
        // A valid case over the RFC 6962 leaves: our generated proof is the same.
        let root = hash(&case["root"]).unwrap();
        if size <= 8 && store.root_at(size).unwrap() == root {
            let ours = store.inclusion_proof(index, size).unwrap();
            assert_eq!(ours, proof(&case["proof"]).unwrap(), "{}", path.display());
            generated += 1;
        }
    }
    println!(
        "inclusion: {accepted} accepted, {refused} refused, {generated} regenerated, {placeholders} placeholders"
    );
    assert!(accepted >= 6 && refused >= 90 && generated >= 5 && placeholders == 0);
}

#[test]
fn consistency_vectors() {
    let store = reference_log();
    let (mut accepted, mut refused, mut generated, mut placeholders) = (0, 0, 0, 0);
    for (path, case) in cases("consistency") {
        let size1 = case["size1"].as_u64().unwrap();
        let size2 = case["size2"].as_u64().unwrap();
        let want_err = case["wantErr"].as_bool().unwrap();
        if !representable(&case, &["root1", "root2"]) {
            // Refused at parse time: right when the case wants an error; a placeholder otherwise.
            if want_err {
                refused += 1;
            } else {
                placeholders += 1;
            }
            continue;
        }
        let result = match (
            hash(&case["root1"]),
            hash(&case["root2"]),
            proof(&case["proof"]),
        ) {
            (Some(r1), Some(r2), Some(p)) => verify_consistency(size1, size2, &p, &r1, &r2).is_ok(),
            _ => false,
        };
        assert_eq!(result, !want_err, "{}", path.display());
        if want_err {
            refused += 1;
            continue;
        }
        accepted += 1;
        let (r1, r2) = (hash(&case["root1"]).unwrap(), hash(&case["root2"]).unwrap());
        if size2 <= 8 && store.root_at(size1).unwrap() == r1 && store.root_at(size2).unwrap() == r2
        {
            let ours = store.consistency_proof(size1, size2).unwrap();
            assert_eq!(ours, proof(&case["proof"]).unwrap(), "{}", path.display());
            generated += 1;
        }
    }
    println!(
        "consistency: {accepted} accepted, {refused} refused, {generated} regenerated, {placeholders} placeholders"
    );
    // One case accepts two equal 12-byte placeholder roots for equal sizes.
    assert!(accepted >= 5 && refused >= 90 && generated >= 5 && placeholders <= 1);
}
