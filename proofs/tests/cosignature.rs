//! C2SP tlog-cosignature v1: the message, key IDs and signature lines, against vectors computed
//! from the specification's definitions with Python's `cryptography` (Ed25519 is deterministic,
//! so an independent implementation of the same message gives the same bytes;
//! `tests/data/c2sp/cosignature-vectors.py` is the script), and forged cosignatures.

use proofs::cosignature::{CosignatureVerifier, Cosigner, cosignatures, message};
use proofs::{Note, NoteSigner, NoteVerifier};

/// The checkpoint of the specification's example.
const CHECKPOINT: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
const TIME: u64 = 1_679_315_147;

#[test]
fn the_message_and_signature_match_an_independent_implementation() {
    assert_eq!(
        message(CHECKPOINT, TIME),
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
         CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
    let witness = Cosigner::from_seed("witness.example.com/w1", &[2; 32]).unwrap();
    assert_eq!(
        witness.verifier().to_vkey(),
        "witness.example.com/w1+745fb5e8+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"
    );
    let signature = witness.cosign(CHECKPOINT, TIME).unwrap();
    let line = Note {
        text: String::new(),
        signatures: vec![signature],
    }
    .to_text();
    assert_eq!(
        line.trim_start_matches('\n'),
        "\u{2014} witness.example.com/w1 dF+16AAAAABkGFDLUwBLV8e4tjvb6qEHiNTQjDZIX+7tvd038taw9A7W/\
         cQ7ZhSah0uJMOI6CTPez5qwHtE49MrkWhU349mtYmi3Dw==\n"
    );
    // The log's own signature on the same checkpoint, type 0x01, from the same script.
    let log = NoteSigner::parse(
        "PRIVATE+KEY+example.com/behind-the-sofa+6ded73a9+AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB",
    )
    .unwrap();
    assert_eq!(
        log.verifier().to_vkey(),
        "example.com/behind-the-sofa+6ded73a9+AYqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c"
    );
    let note = log.sign(CHECKPOINT).unwrap().to_text();
    assert!(note.ends_with(
        "\u{2014} example.com/behind-the-sofa be1zqQx8hYrJJIfiWfY39ShElJ74dPrOjXSgJJ2qG3vny2U7JyHN2kKCWb5H5e2MfxP7My2OyDRrDvCH/RbVubiZ8AE=\n"
    ));
}

#[test]
fn cosignatures_are_found_and_forgeries_refused() {
    let log = NoteSigner::generate("gov.example/log").unwrap();
    let witness = Cosigner::generate("agency.example/w").unwrap();
    let other = Cosigner::generate("other.example/w").unwrap();
    let text = "gov.example/log\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let mut note = log.sign(text).unwrap();
    note.signatures.push(witness.cosign(text, TIME).unwrap());
    note.signatures.push(other.cosign(text, TIME + 1).unwrap());
    let parsed = Note::parse(note.to_text().as_bytes()).unwrap();
    let found = cosignatures(&parsed, &[witness.verifier()]).unwrap();
    assert_eq!(found, vec![("agency.example/w".to_owned(), TIME)]);
    // The log's key does not verify as a witness's, nor the reverse: the key IDs differ.
    assert!(parsed.verify(&[log.verifier()]).is_ok());
    assert!(cosignatures(&parsed, &[]).unwrap().is_empty());
    let as_log_key = NoteVerifier::new("agency.example/w", [0; 32]).unwrap();
    assert_ne!(as_log_key.key_id(), witness.verifier().key_id());
    // A cosignature moved to another checkpoint, or with its time changed, is refused.
    let moved_text = "gov.example/log\n8\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let mut moved = log.sign(moved_text).unwrap();
    moved.signatures.push(witness.cosign(text, TIME).unwrap());
    assert!(cosignatures(&moved, &[witness.verifier()]).is_err());
    let mut retimed = parsed.clone();
    if let Some(sig) = retimed.signatures.get_mut(1) {
        sig.signature[7] ^= 1;
    }
    assert!(cosignatures(&retimed, &[witness.verifier()]).is_err());
    // Keys: a vkey of another type, or whose ID does not match, is refused.
    let vkey = witness.verifier().to_vkey();
    assert!(CosignatureVerifier::parse(&vkey).is_ok());
    assert!(CosignatureVerifier::parse(&log.verifier().to_vkey()).is_err());
    assert!(CosignatureVerifier::parse(&vkey.replacen('+', "+0", 1)).is_err());
    let skey = witness.to_skey().unwrap();
    assert_eq!(
        Cosigner::parse(&skey).unwrap().verifier(),
        witness.verifier()
    );
    assert!(witness.cosign(text, 0).is_err());
}
