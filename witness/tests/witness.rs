//! The witness against real logs: what it cosigns, what it refuses with which status, and that
//! its state survives a restart. A log that keeps two histories gets only one cosigned.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap or index is a failed test"
)]

use proofs::cosignature::{Cosigner, cosignatures};
use proofs::{Log, MemoryStore, Note, NoteSigner, SignedCheckpoint};
use witness::{Answer, Witness};

const ORIGIN: &str = "gov.example/key-release-log";
const NOW: u64 = 1_800_000_000;

struct Fixture {
    dir: std::path::PathBuf,
    log_key: Vec<u8>,
    witness_seed: [u8; 32],
}

impl Fixture {
    fn new(name: &str) -> (Self, NoteSigner) {
        let dir = std::env::temp_dir().join(format!("witness-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let signer = NoteSigner::generate(ORIGIN).unwrap();
        let log_key = signer.to_skey().unwrap().as_bytes().to_vec();
        (
            Self {
                dir,
                log_key,
                witness_seed: [9; 32],
            },
            signer,
        )
    }

    fn log_signer(&self) -> NoteSigner {
        NoteSigner::parse(std::str::from_utf8(&self.log_key).unwrap()).unwrap()
    }

    fn witness(&self) -> Witness {
        let cosigner =
            Cosigner::from_seed("witness.agency.example/w1", &self.witness_seed).unwrap();
        Witness::open(
            &self.dir,
            cosigner,
            vec![(ORIGIN.to_owned(), vec![self.log_signer().verifier()])],
        )
        .unwrap()
    }

    fn cosigner(&self) -> Cosigner {
        Cosigner::from_seed("witness.agency.example/w1", &self.witness_seed).unwrap()
    }
}

/// A log with `n` entries whose contents start with `tag`.
fn log(signer: NoteSigner, tag: &str, n: u64) -> Log<MemoryStore> {
    let mut log = Log::open(MemoryStore::new(), signer).unwrap();
    for i in 0..n {
        log.append(format!("{tag} entry {i}").as_bytes()).unwrap();
    }
    log
}

fn request(old: u64, log: &mut Log<MemoryStore>) -> (Vec<u8>, SignedCheckpoint) {
    let checkpoint = log.checkpoint().unwrap();
    let mut body = format!("old {old}\n");
    if old > 0 && old < checkpoint.checkpoint.size {
        for hash in log
            .prove_consistency(old, checkpoint.checkpoint.size)
            .unwrap()
            .hashes
        {
            body.push_str(&hash.to_base64());
            body.push('\n');
        }
    }
    body.push('\n');
    body.push_str(&checkpoint.note);
    (body.into_bytes(), checkpoint)
}

fn status(answer: &Answer) -> u16 {
    answer.status
}

#[test]
fn it_cosigns_what_extends_what_it_cosigned_and_nothing_else() {
    let (f, signer) = Fixture::new("extends");
    let witness = f.witness();
    let mut log = log(signer, "a", 5);
    let (body, checkpoint) = request(0, &mut log);
    let answer = witness.add_checkpoint(&body, NOW);
    assert_eq!(
        status(&answer),
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // The answer is one cosignature line that verifies on the checkpoint.
    let mut note = checkpoint.note.clone();
    note.push_str(std::str::from_utf8(&answer.body).unwrap());
    let note = Note::parse(note.as_bytes()).unwrap();
    let found = cosignatures(&note, &[f.cosigner().verifier()]).unwrap();
    assert_eq!(found, vec![("witness.agency.example/w1".to_owned(), NOW)]);

    // Growing: with the proof from 5, cosigned; the same again, cosigned (same tree).
    for _ in 0..3 {
        log.append(b"more").unwrap();
    }
    let (body, _) = request(5, &mut log);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 200);
    assert_eq!(witness.latest(ORIGIN).unwrap().0, 8);
    let (same, _) = request(8, &mut log);
    assert_eq!(status(&witness.add_checkpoint(&same, NOW)), 200);

    // A stale `old`: 409 with the size it holds.
    let (stale, _) = request(5, &mut log);
    let answer = witness.add_checkpoint(&stale, NOW);
    assert_eq!(answer.status, 409);
    assert_eq!(answer.body, b"8\n");
    assert_eq!(answer.content_type, "text/x.tlog.size");

    // A wrong proof: 422. `old` above the size: 400.
    log.append(b"ninth").unwrap();
    let (mut body, _) = request(8, &mut log);
    let flipped = body.iter().position(|b| *b == b'\n').unwrap() + 3;
    body[flipped] = if body[flipped] == b'A' { b'B' } else { b'A' };
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 422);
    let (body, _) = request(8, &mut log);
    let text = String::from_utf8(body)
        .unwrap()
        .replacen("old 8", "old 99", 1);
    assert_eq!(status(&witness.add_checkpoint(text.as_bytes(), NOW)), 400);
}

#[test]
fn a_log_with_two_histories_gets_only_one_cosigned() {
    let (f, signer) = Fixture::new("fork");
    let witness = f.witness();
    // One log key, two histories: what it shows the witness, and a private fork.
    let mut public = log(signer, "public", 6);
    let mut fork = log(f.log_signer(), "fork", 6);
    let (body, _) = request(0, &mut public);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 200);
    // The fork at the same size: refused (another tree of a size it cosigned).
    let (body, _) = request(6, &mut fork);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 422);
    // The fork grown, with its own (valid for the fork) proof from 6: refused.
    fork.append(b"hidden release").unwrap();
    let (body, _) = request(6, &mut fork);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 422);
    // The fork presented as new from size 0: 409, the witness holds 6.
    let (body, _) = request(0, &mut fork);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 409);
    // Also after a restart: the state is on disk.
    drop(witness);
    let witness = f.witness();
    assert_eq!(witness.latest(ORIGIN).unwrap().0, 6);
    let (body, _) = request(6, &mut fork);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 422);
    public.append(b"next").unwrap();
    let (body, _) = request(6, &mut public);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 200);
}

#[test]
fn unknown_logs_keys_and_malformed_requests_are_refused() {
    let (f, signer) = Fixture::new("refused");
    let witness = f.witness();
    let mut log = log(signer, "a", 3);
    // Another origin: 404.
    let mut other = self::log(NoteSigner::generate("other.example/log").unwrap(), "b", 3);
    let (body, _) = request(0, &mut other);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 404);
    // The right origin, signed by another key: 403.
    let mut impostor = self::log(NoteSigner::generate(ORIGIN).unwrap(), "c", 3);
    let (body, _) = request(0, &mut impostor);
    assert_eq!(status(&witness.add_checkpoint(&body, NOW)), 403);
    // A proof from size 0: 422.
    let (body, _) = request(0, &mut log);
    let text = String::from_utf8(body).unwrap().replacen(
        "old 0\n",
        &format!("old 0\n{}\n", proofs::Hash::empty().to_base64()),
        1,
    );
    assert_eq!(status(&witness.add_checkpoint(text.as_bytes(), NOW)), 422);
    // Malformed: 400, whatever the shape; and nothing was recorded.
    let (good, _) = request(0, &mut log);
    let good = String::from_utf8(good).unwrap();
    for bad in [
        String::new(),
        "old 0".to_owned(),
        "old 01\n\n".to_owned(),
        "old -1\n\n".to_owned(),
        "new 0\n\n".to_owned(),
        good.replacen("old 0\n\n", "old 0\n", 1),
        good.replacen("old 0\n", "old 0\nnot base64!\n", 1),
        format!("old 0\n{}\n", "AAAA\n".repeat(64)),
        good.replace('\u{2014}', "-"),
        good.get(..good.len() - 5).unwrap().to_owned(),
    ] {
        assert_eq!(
            status(&witness.add_checkpoint(bad.as_bytes(), NOW)),
            400,
            "{bad:?}"
        );
    }
    assert_eq!(status(&witness.add_checkpoint(&[0xff, 0xfe], NOW)), 400);
    assert!(witness.latest(ORIGIN).is_none());
    // A damaged state file stops the witness rather than starting over.
    assert_eq!(status(&witness.add_checkpoint(good.as_bytes(), NOW)), 200);
    drop(witness);
    for entry in std::fs::read_dir(&f.dir).unwrap() {
        std::fs::write(entry.unwrap().path(), "3\n").unwrap();
    }
    let cosigner = f.cosigner();
    assert!(
        Witness::open(
            &f.dir,
            cosigner,
            vec![(ORIGIN.to_owned(), vec![f.log_signer().verifier()])]
        )
        .is_err()
    );
}
