//! Verifies the same real Nitro documents with `attest` (cold chain and cached chain) and with
//! a peer verifier from crates.io (`nitro_attest`), in one run, and prints documents per second
//! and the ratios.
//!
//! Both verify the full chain to the AWS root, every certificate's validity at the document's
//! own timestamp, and the COSE signature. Run from the repository root:
//!
//!     cargo run --release --manifest-path bench/Cargo.toml

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use attest::{DocumentTrust, Policy, Verifier};

const ROUND: Duration = Duration::from_secs(3);

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../attest/tests/data/nitro");
    let mut documents: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("test data directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cbor"))
        .map(|p| std::fs::read(p).expect("document"))
        .collect();
    documents.sort();
    let times: Vec<attest::Timestamp> = documents
        .iter()
        .map(|d| attest::parse(d).expect("parses").timestamp())
        .collect();
    let policy = Policy::new()
        .dangerous_any_measurements()
        .dangerous_allow_debug();
    let trust = DocumentTrust::aws().expect("AWS root");

    // Every verifier must accept every document before it is timed.
    let check = Verifier::new(trust.clone());
    for (doc, at) in documents.iter().zip(&times) {
        let parsed = attest::parse(doc).expect("parse");
        check
            .verify(&parsed, &policy, *at)
            .expect("attest verifies");
        peer_verify(doc, *at).expect("peer verifies");
    }

    println!(
        "{} real documents, {} per measurement; documents per second (higher is better)\n",
        documents.len(),
        humanize(ROUND)
    );
    let cold = measure(
        || {
            for (doc, at) in documents.iter().zip(&times) {
                let verifier = Verifier::new(trust.clone());
                let parsed = attest::parse(doc).expect("parse");
                black_box(verifier.verify(&parsed, &policy, *at).expect("verify"));
            }
        },
        documents.len(),
    );
    let shared = Verifier::new(trust.clone());
    let cached = measure(
        || {
            for (doc, at) in documents.iter().zip(&times) {
                let parsed = attest::parse(doc).expect("parse");
                black_box(shared.verify(&parsed, &policy, *at).expect("verify"));
            }
        },
        documents.len(),
    );
    let peer = measure(
        || {
            for (doc, at) in documents.iter().zip(&times) {
                black_box(peer_verify(doc, *at)).expect("verify");
            }
        },
        documents.len(),
    );

    println!("{:<34} {:>10.0} docs/s", "attest, cold chain", cold);
    println!("{:<34} {:>10.0} docs/s", "attest, cached chain", cached);
    println!("{:<34} {:>10.0} docs/s", "nitro_attest 0.2.0 (peer)", peer);
    println!();
    println!(
        "attest cold   / peer: {:>5.2}x  (target >= 1.5x)",
        cold / peer
    );
    println!(
        "attest cached / peer: {:>5.2}x  (target >= 3x)",
        cached / peer
    );
}

fn peer_verify(doc: &[u8], at: attest::Timestamp) -> Result<(), String> {
    let millis = i128::from(at.unix_millis());
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
        .map_err(|e| e.to_string())?;
    nitro_attest::UnparsedAttestationDoc::from(doc)
        .parse_and_verify(now)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Run `round` (which verifies `per_round` documents) repeatedly for `ROUND` after a warm-up,
/// and return documents per second.
fn measure(mut round: impl FnMut(), per_round: usize) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < ROUND / 5 {
        round();
    }
    let start = Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < ROUND {
        round();
        rounds += 1;
    }
    f64::from(rounds) * per_round as f64 / start.elapsed().as_secs_f64()
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs())
}
