//! Checkpoints (<https://c2sp.org/tlog-checkpoint>): a log's tree head as a signed note.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! [extension lines]
//!
//! — <key name> <signature>
//! ```

use crate::hash::Hash;
use crate::note::{Note, NoteError, NoteVerifier};

/// Why a checkpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note around it is malformed or not signed by a trusted key.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint is from another log.
    #[error("the checkpoint is from log {found:?}, not {expected:?}")]
    Origin {
        /// The origin expected.
        expected: String,
        /// The origin found.
        found: String,
    },
}

/// A tree head: which log, how many entries, and the root over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, such as `gov.example/attestation-log`.
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The RFC 9162 root over them.
    pub root: Hash,
    /// Opaque extension lines (not recommended; our logs write none).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, self.root);
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parse a note text as a checkpoint.
    pub fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("the text must end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin line"));
        }
        let size = parse_size(lines.next().unwrap_or_default()).ok_or(
            CheckpointError::Malformed("the size must be decimal without leading zeros"),
        )?;
        let root = Hash::from_base64(lines.next().unwrap_or_default()).ok_or(
            CheckpointError::Malformed("the root is not a base64 SHA-256 hash"),
        )?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// A checkpoint whose signature has been verified, with the note it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// The signed note, as received (other signatures, such as witnesses', included).
    pub note: String,
    /// The names of the trusted keys whose signatures verified.
    pub signed_by: Vec<String>,
}

impl SignedCheckpoint {
    /// Parse a signed checkpoint, verify it against `trusted` keys, and check that it comes from
    /// `origin` (if given).
    pub fn open(
        note: &[u8],
        trusted: &[NoteVerifier],
        origin: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let parsed = Note::parse(note)?;
        let checkpoint = Checkpoint::parse_text(&parsed.text)?;
        let signed_by = parsed
            .verify(trusted)?
            .iter()
            .map(|k| k.name().to_owned())
            .collect();
        if let Some(origin) = origin
            && checkpoint.origin != origin
        {
            return Err(CheckpointError::Origin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(Self {
            checkpoint,
            note: parsed.to_text(),
            signed_by,
        })
    }
}

/// ASCII decimal, no sign, no leading zeros (but "0"), at most u64.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A checkpoint of the Go checksum database (sum.golang.org), with its published key.
    const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
    const SUMDB_CHECKPOINT: &str = "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n\u{2014} sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n";

    #[test]
    fn a_published_checkpoint_verifies() {
        let key = NoteVerifier::parse(SUMDB_VKEY).unwrap();
        let cp = SignedCheckpoint::open(
            SUMDB_CHECKPOINT.as_bytes(),
            std::slice::from_ref(&key),
            Some("go.sum database tree"),
        )
        .unwrap();
        assert_eq!(cp.checkpoint.size, 6_476_701);
        assert_eq!(
            cp.checkpoint.root.to_base64(),
            "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
        );
        assert_eq!(cp.note, SUMDB_CHECKPOINT);
        assert!(matches!(
            SignedCheckpoint::open(
                SUMDB_CHECKPOINT.as_bytes(),
                std::slice::from_ref(&key),
                Some("other")
            ),
            Err(CheckpointError::Origin { .. })
        ));
        let altered = SUMDB_CHECKPOINT.replace("6476701", "6476702");
        assert!(SignedCheckpoint::open(altered.as_bytes(), &[key], None).is_err());
    }

    #[test]
    fn sizes_are_canonical_decimal() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "01", "+1", "-1", "1 ", "18446744073709551616", "0x10"] {
            assert!(parse_size(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_text_round_trips_and_is_strict() {
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: Hash::leaf(b"x"),
            extensions: vec![],
        };
        assert_eq!(Checkpoint::parse_text(&cp.to_text()).unwrap(), cp);
        for bad in [
            "example.com/log\n3\n",
            "\n3\nAAAA\n",
            "example.com/log\n3\nnot-base64\n",
            "example.com/log\n03\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "example.com/log\n3\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert!(Checkpoint::parse_text(bad).is_err(), "{bad:?}");
        }
    }
}
