#![no_main]
// What a tile server, a mirror or a log's caller hands a monitor or a witness: tile paths, entry
// bundles, hash tiles, cosigned checkpoints and tlog-witness requests parse to a value or an
// error, never panic; paths that parse print back to the same bytes; a witness answers every
// request with a status, and cosigns nothing that no configured key signed.
use std::sync::OnceLock;

use proofs::cosignature::{Cosigner, WitnessPolicy};
use proofs::tiles::{Resource, parse_entries, parse_tile};
use proofs::{NoteSigner, NoteVerifier};

fn witness() -> &'static witness::Witness {
    static W: OnceLock<witness::Witness> = OnceLock::new();
    W.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fuzz-witness-{}", std::process::id()));
        // A log key whose private half is thrown away: nothing the fuzzer makes is signed by it.
        let keys: Vec<NoteVerifier> = NoteSigner::generate("gov.example/log")
            .map(|s| s.verifier())
            .into_iter()
            .collect();
        let cosigner = Cosigner::from_seed("witness.example", &[9; 32]).ok();
        cosigner
            .and_then(|c| {
                witness::Witness::open(&dir, c, vec![("gov.example/log".into(), keys)]).ok()
            })
            .unwrap_or_else(|| std::process::abort())
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(resource) = Resource::parse(text) {
            assert_eq!(resource.path(), text);
        }
        let policy = WitnessPolicy::new(vec![witness_key()], 1).ok();
        if let Some(policy) = policy {
            let _ = policy.check(text);
        }
    }
    for width in [1u16, 7, 256] {
        if let Some(entries) = parse_entries(data, width) {
            assert_eq!(entries.len(), usize::from(width));
        }
        if let Some(hashes) = parse_tile(data, width) {
            assert_eq!(hashes.len(), usize::from(width));
        }
    }
    let answer = witness().add_checkpoint(data, 1_780_000_000);
    assert!(
        answer.status != 200,
        "cosigned a checkpoint no configured key signed"
    );
});

fn witness_key() -> proofs::cosignature::CosignatureVerifier {
    static K: OnceLock<proofs::cosignature::CosignatureVerifier> = OnceLock::new();
    K.get_or_init(|| {
        Cosigner::from_seed("witness.example", &[9; 32])
            .map(|c| c.verifier())
            .unwrap_or_else(|_| std::process::abort())
    })
    .clone()
}
