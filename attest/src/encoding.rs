//! Documents arrive as raw CBOR, hex or base64 (standard or URL-safe, padded or not, with line
//! breaks). This finds out which.

use data_encoding::{BASE64, BASE64_NOPAD, BASE64URL, BASE64URL_NOPAD};

use crate::document::MAX_DOCUMENT_LEN;

/// The largest encoded input accepted: a maximum-size document in hex with line breaks.
pub const MAX_ENCODED_LEN: usize = 3 * MAX_DOCUMENT_LEN;

/// How a document was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The CBOR bytes themselves.
    Raw,
    /// Hexadecimal text.
    Hex,
    /// Base64 text.
    Base64,
}

/// Input that is none of the accepted encodings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodingError {
    /// Larger than [`MAX_ENCODED_LEN`].
    #[error("input is {len} bytes; the limit is {max}")]
    TooLarge {
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not CBOR, hex or base64.
    #[error("input is not a CBOR document, hex or base64")]
    Unrecognised,
}

/// Decode `input` to the document's CBOR bytes, saying which encoding it used.
pub fn decode_document(input: &[u8]) -> Result<(Vec<u8>, Encoding), EncodingError> {
    if input.len() > MAX_ENCODED_LEN {
        return Err(EncodingError::TooLarge {
            len: input.len(),
            max: MAX_ENCODED_LEN,
        });
    }
    // A COSE_Sign1 is a four-element array (0x84), or tag 18 (0xd2) then that array.
    if matches!(input.first(), Some(0x84 | 0xd2)) {
        return Ok((input.to_vec(), Encoding::Raw));
    }
    let text: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Err(EncodingError::Unrecognised);
    }
    if text.iter().all(u8::is_ascii_hexdigit)
        && let Ok(bytes) = data_encoding::HEXLOWER_PERMISSIVE.decode(&text)
    {
        return Ok((bytes, Encoding::Hex));
    }
    for engine in [&BASE64, &BASE64_NOPAD, &BASE64URL, &BASE64URL_NOPAD] {
        if let Ok(bytes) = engine.decode(&text) {
            return Ok((bytes, Encoding::Base64));
        }
    }
    Err(EncodingError::Unrecognised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_encoding() {
        let raw = vec![0x84, 0x40, 0xa0, 0x40, 0x40];
        assert_eq!(decode_document(&raw).unwrap(), (raw.clone(), Encoding::Raw));
        let hex = data_encoding::HEXUPPER.encode(&raw);
        assert_eq!(
            decode_document(hex.as_bytes()).unwrap(),
            (raw.clone(), Encoding::Hex)
        );
        let b64 = format!("{}\n", BASE64.encode(&raw));
        assert_eq!(
            decode_document(b64.as_bytes()).unwrap(),
            (raw.clone(), Encoding::Base64)
        );
        let url = BASE64URL_NOPAD.encode(&[0xfb, 0xff, 0x84]);
        assert_eq!(decode_document(url.as_bytes()).unwrap().1, Encoding::Base64);
    }

    #[test]
    fn rejects_other_input() {
        assert_eq!(decode_document(b""), Err(EncodingError::Unrecognised));
        assert_eq!(
            decode_document(b"not a document!"),
            Err(EncodingError::Unrecognised)
        );
        assert!(matches!(
            decode_document(&vec![b'a'; MAX_ENCODED_LEN + 1]),
            Err(EncodingError::TooLarge { .. })
        ));
    }
}
