#![no_main]
// Anything a log, a mirror or an attacker hands a verifier: proof files, checkpoints, signed
// notes and log entries parse to a value or an error, never panic; what parses re-serialises
// to the same bytes; and verification of whatever parses stays an error, not a crash.
use proofs::proof_file::{ConsistencyProofFile, InclusionProofFile};
use proofs::{Checkpoint, Hash, Note, NoteVerifier, audit, entry::LogEntry, merkle};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key =
        NoteVerifier::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
    let keys: Vec<NoteVerifier> = key.into_iter().collect();
    let leaf = Hash::leaf(b"entry");

    if let Ok(file) = InclusionProofFile::parse(data) {
        assert_eq!(
            InclusionProofFile::parse(file.to_text().as_bytes()).ok(),
            Some(file.clone())
        );
        let _ = merkle::verify_inclusion(
            &leaf,
            file.index,
            file.index.saturating_add(1),
            &file.hashes,
            &leaf,
        );
    }
    let _ = audit::verify_inclusion_file(data, &leaf, &keys, None);
    if let Ok(file) = ConsistencyProofFile::parse(data) {
        assert_eq!(file.to_text().as_bytes(), data);
        let _ = merkle::verify_consistency(file.old, file.new, &file.hashes, &leaf, &leaf);
    }
    if let Ok(note) = Note::parse(data) {
        assert_eq!(note.to_text().as_bytes(), data);
        let _ = note.verify(&keys);
        let _ = Checkpoint::parse_text(&note.text);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cp) = Checkpoint::parse_text(text) {
            assert_eq!(cp.to_text(), text);
        }
        let _ = NoteVerifier::parse(text);
        let _ = proofs::NoteSigner::parse(text);
    }
    if let Ok(entry) = LogEntry::decode(data) {
        assert_eq!(entry.bytes(), data);
        assert_eq!(entry.entry().encode().ok().as_deref(), Some(data));
    }
});
