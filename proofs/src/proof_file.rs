//! Proof files that a person can carry to an auditor.
//!
//! Inclusion proofs use the C2SP `tlog-proof` format (<https://c2sp.org/tlog-proof>): the index,
//! the audit path and the signed checkpoint it leads to, verifiable offline.
//!
//! Consistency proofs have no C2SP format; ours follows the same style:
//!
//! ```text
//! tlog-consistency-proof@v1
//! old <size>
//! new <size>
//! <base64 hash, one per line>
//! ```
//!
//! The two checkpoints travel separately, since each is useful on its own.

use data_encoding::BASE64;

use crate::checkpoint::parse_size;
use crate::hash::Hash;

const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
const CONSISTENCY_HEADER: &str = "tlog-consistency-proof@v1";
/// The largest proof file accepted, in bytes: 64 hashes and a checkpoint with many cosignatures
/// fit well within it.
pub const MAX_PROOF_FILE_LEN: usize = 512 * 1024;
/// The most hashes a proof in a tree of at most 2^64 entries can have.
const MAX_PROOF_HASHES: usize = 128;

/// Why a proof file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofFileError {
    /// The file is not in the expected format.
    #[error("malformed proof file: {0}")]
    Malformed(&'static str),
}

/// An inclusion proof in `c2sp.org/tlog-proof@v1` form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProofFile {
    /// Opaque, unauthenticated extra data.
    pub extra: Option<Vec<u8>>,
    /// The entry's index.
    pub index: u64,
    /// The audit path, from the leaf's sibling up.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint, verbatim. Not yet verified.
    pub checkpoint: String,
}

impl InclusionProofFile {
    /// Parse the file. The checkpoint inside is not verified here.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofFileError> {
        let text = text_of(bytes)?;
        let mut rest = text
            .strip_prefix(TLOG_PROOF_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(ProofFileError::Malformed(
                "the first line must be c2sp.org/tlog-proof@v1",
            ))?;
        let mut extra = None;
        if let Some(after) = rest.strip_prefix("extra ") {
            let (value, next) = split_line(after)?;
            extra = Some(
                crate::note::decode_base64(value).ok_or(ProofFileError::Malformed(
                    "extra data is not canonical base64",
                ))?,
            );
            rest = next;
        }
        let after = rest
            .strip_prefix("index ")
            .ok_or(ProofFileError::Malformed("expected an index line"))?;
        let (index, mut rest) = split_line(after)?;
        let index = size(index)?;
        let mut hashes = Vec::new();
        loop {
            let (line, next) = split_line(rest)?;
            rest = next;
            if line.is_empty() {
                break;
            }
            hashes.push(parse_hash(line)?);
            if hashes.len() > MAX_PROOF_HASHES {
                return Err(ProofFileError::Malformed("too many hashes"));
            }
        }
        if rest.is_empty() {
            return Err(ProofFileError::Malformed("the checkpoint is missing"));
        }
        Ok(Self {
            extra,
            index,
            hashes,
            checkpoint: rest.to_owned(),
        })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for hash in &self.hashes {
            out.push_str(&format!("{hash}\n"));
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }
}

/// A consistency proof between two tree sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProofFile {
    /// The old tree size.
    pub old: u64,
    /// The new tree size.
    pub new: u64,
    /// The proof hashes.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProofFile {
    /// Parse the file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofFileError> {
        let text = text_of(bytes)?;
        let rest = text
            .strip_prefix(CONSISTENCY_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(ProofFileError::Malformed(
                "the first line must be tlog-consistency-proof@v1",
            ))?;
        let (old, rest) = split_line(
            rest.strip_prefix("old ")
                .ok_or(ProofFileError::Malformed("expected an old line"))?,
        )?;
        let (new, mut rest) = split_line(
            rest.strip_prefix("new ")
                .ok_or(ProofFileError::Malformed("expected a new line"))?,
        )?;
        let (old, new) = (size(old)?, size(new)?);
        let mut hashes = Vec::new();
        while !rest.is_empty() {
            let (line, next) = split_line(rest)?;
            hashes.push(parse_hash(line)?);
            if hashes.len() > MAX_PROOF_HASHES {
                return Err(ProofFileError::Malformed("too many hashes"));
            }
            rest = next;
        }
        Ok(Self { old, new, hashes })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{CONSISTENCY_HEADER}\nold {}\nnew {}\n", self.old, self.new);
        for hash in &self.hashes {
            out.push_str(&format!("{hash}\n"));
        }
        out
    }
}

fn text_of(bytes: &[u8]) -> Result<&str, ProofFileError> {
    if bytes.len() > MAX_PROOF_FILE_LEN {
        return Err(ProofFileError::Malformed("the file is too large"));
    }
    std::str::from_utf8(bytes).map_err(|_| ProofFileError::Malformed("not UTF-8"))
}

/// The first line of `text` (without its newline) and what follows it.
fn split_line(text: &str) -> Result<(&str, &str), ProofFileError> {
    text.split_once('\n').ok_or(ProofFileError::Malformed(
        "a line does not end in a newline",
    ))
}

fn size(text: &str) -> Result<u64, ProofFileError> {
    parse_size(text).ok_or(ProofFileError::Malformed(
        "a size or index must be decimal without leading zeros",
    ))
}

fn parse_hash(line: &str) -> Result<Hash, ProofFileError> {
    Hash::from_base64(line).ok_or(ProofFileError::Malformed(
        "a proof line is not a base64 SHA-256 hash",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusion_proof_files_round_trip() {
        let file = InclusionProofFile {
            extra: Some(b"context".to_vec()),
            index: 73894,
            hashes: vec![Hash::leaf(b"a"), Hash::leaf(b"b")],
            checkpoint: "example.com/log\n5\nAAAA\n\n\u{2014} example.com/log AAAA\n".into(),
        };
        assert_eq!(
            InclusionProofFile::parse(file.to_text().as_bytes()).unwrap(),
            file
        );
        let no_extra = InclusionProofFile {
            extra: None,
            hashes: vec![],
            ..file
        };
        assert_eq!(
            InclusionProofFile::parse(no_extra.to_text().as_bytes()).unwrap(),
            no_extra
        );
    }

    #[test]
    fn the_c2sp_example_parses() {
        // The example in the tlog-proof specification (signatures shortened there as well).
        let text = "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 73894\ngSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\nB95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\nEKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\nRoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\nAHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n\nexample.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n\u{2014} example.com/fancylog hI2DJw==\n";
        let file = InclusionProofFile::parse(text.as_bytes()).unwrap();
        assert_eq!(file.index, 73894);
        assert_eq!(file.hashes.len(), 5);
        assert!(
            file.checkpoint
                .starts_with("example.com/fancylog\n109482\n")
        );
        assert_eq!(file.to_text(), text);
    }

    #[test]
    fn malformed_proof_files_are_refused() {
        for bad in [
            "",
            "c2sp.org/tlog-proof@v2\nindex 1\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 01\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 1\nnot-a-hash\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 1\n\n",
            "c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\ncp\n",
        ] {
            assert!(
                InclusionProofFile::parse(bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            "tlog-consistency-proof@v1\nold 1\n",
            "tlog-consistency-proof@v1\nnew 1\nold 2\n",
            "tlog-consistency-proof@v1\nold 1\nnew 2\nAAAA\n",
            "tlog-consistency-proof@v1\nold 1\nnew 2\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert!(
                ConsistencyProofFile::parse(bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn consistency_proof_files_round_trip() {
        let file = ConsistencyProofFile {
            old: 3,
            new: 8,
            hashes: vec![Hash::leaf(b"a"), Hash::leaf(b"b")],
        };
        assert_eq!(
            ConsistencyProofFile::parse(file.to_text().as_bytes()).unwrap(),
            file
        );
    }
}
