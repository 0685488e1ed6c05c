//! Sealing and opening, streaming: memory is one chunk when sealing, and when opening either
//! one chunk (the caller's buffer) or exactly the plaintext (when opening into memory).

use std::io::{self, Read, Write};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{Context, SHA384};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::format::{
    DIGEST_LEN, DataKey, FIXED_HEADER_LEN, Header, Id, MAGIC, MAX_HEADER_LEN, NONCE_PREFIX_LEN,
    TAG_LEN, VERSION, chunk_aad, chunk_nonce,
};

/// The length and SHA-384 of everything `reader` yields: the first of sealing's two passes.
/// `progress` is called with the bytes read so far.
pub fn digest(
    reader: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, [u8; DIGEST_LEN]), SealError> {
    let mut context = Context::new(&SHA384);
    // The model's plaintext passes through here: wiped when done.
    let mut buf = Zeroizing::new(vec![0u8; 1024 * 1024]);
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        context.update(buf.get(..n).unwrap_or_default());
        len = len.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        progress(len);
    }
    Ok((len, finish_digest(context)))
}

impl Header {
    /// A header for a new sealed file, with a fresh random nonce prefix.
    pub fn new(
        model_id: Id,
        key_id: Id,
        chunk_size: u32,
        plaintext_len: u64,
        plaintext_sha384: [u8; DIGEST_LEN],
    ) -> Result<Self, SealError> {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        aws_lc_rs::rand::fill(&mut nonce_prefix).map_err(|_| SealError::Crypto("random"))?;
        let header = Self {
            model_id,
            key_id,
            chunk_size,
            plaintext_len,
            plaintext_sha384,
            nonce_prefix,
        };
        header.encode()?;
        Ok(header)
    }
}

/// Seal everything `reader` yields under `key` into `writer`: the second pass. The plaintext
/// must be exactly what `header` describes (its length and digest, from [`digest`]); if it is
/// not, the input changed between the passes and [`SealError::InputChanged`] is returned, so the
/// caller must discard what was written. `progress` is called with the plaintext bytes sealed.
pub fn seal(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    header: &Header,
    key: &DataKey,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SealError> {
    let header_bytes = header.encode()?;
    writer.write_all(&header_bytes)?;
    let aead = aead_key(key)?;
    let mut context = Context::new(&SHA384);
    let chunk_size = usize::try_from(header.chunk_size).unwrap_or(usize::MAX);
    let mut buf = Zeroizing::new(vec![0u8; chunk_size]);
    let count = header.chunk_count();
    let mut done = 0u64;
    for index in 0..count {
        let want = usize::try_from(header.chunk_len(index)).unwrap_or(usize::MAX);
        let chunk = buf.get_mut(..want).ok_or(SealError::InputChanged)?;
        read_exact_or(reader, chunk, SealError::InputChanged)?;
        context.update(chunk);
        let last = index + 1 == count;
        let tag = aead
            .seal_in_place_separate_tag(
                chunk_nonce_for(header, index, last)?,
                Aad::from(chunk_aad(&header_bytes, index32(index)?, last)),
                chunk,
            )
            .map_err(|_| SealError::Crypto("AES-GCM seal"))?;
        writer.write_all(chunk)?;
        writer.write_all(tag.as_ref())?;
        done = done.saturating_add(u64::try_from(want).unwrap_or(u64::MAX));
        progress(done);
    }
    // Nothing may follow what was hashed in the first pass.
    let mut probe = [0u8; 1];
    if read_some(reader, &mut probe)? != 0
        || !bool::from(finish_digest(context).ct_eq(&header.plaintext_sha384))
    {
        return Err(SealError::InputChanged);
    }
    Ok(())
}

/// What a caller expects of a sealed file before it spends any work on it.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    /// The model asked for.
    pub model_id: &'a Id,
    /// The key that was released for it.
    pub key_id: &'a Id,
    /// The digest the key broker signed.
    pub plaintext_sha384: &'a [u8; DIGEST_LEN],
    /// The largest plaintext the caller will hold.
    pub max_len: u64,
}

/// Open a sealed file into memory. Every chunk is authenticated before it is kept, the file must
/// end exactly where the header says, and the plaintext's digest must match; the plaintext is
/// returned only when all of that holds, and on any failure the partial plaintext is zeroized.
/// The buffer is allocated once, at the plaintext's length, so no copy is left behind.
pub fn open_into_memory(
    reader: &mut dyn Read,
    key: &DataKey,
    expected: &Expected<'_>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut opener = Opener::new(reader, key)?;
    let header = opener.header().clone();
    check_header(&header, expected)?;
    let mut plaintext = Zeroizing::new(Vec::new());
    plaintext
        .try_reserve_exact(usize::try_from(header.plaintext_len).unwrap_or(usize::MAX))
        .map_err(|_| SealError::TooLarge {
            len: header.plaintext_len,
            max: expected.max_len,
        })?;
    while opener.open_chunk(&mut plaintext)? {}
    opener.finish()?;
    Ok(plaintext)
}

/// Open a sealed file into `sink`, one authenticated chunk at a time, holding no more than one
/// chunk of plaintext outside it (zeroized after each write). The same checks as
/// [`open_into_memory`], but `sink` has received authenticated chunks of a file that may still
/// turn out truncated or not the one expected: on an error the caller must discard all of it.
pub fn open_into(
    reader: &mut dyn Read,
    key: &DataKey,
    expected: &Expected<'_>,
    sink: &mut dyn std::io::Write,
) -> Result<(), SealError> {
    let mut opener = Opener::new(reader, key)?;
    check_header(opener.header(), expected)?;
    let mut chunk = Zeroizing::new(Vec::new());
    loop {
        chunk.clear();
        let more = opener.open_chunk(&mut chunk)?;
        sink.write_all(&chunk).map_err(SealError::Io)?;
        if !more {
            break;
        }
    }
    opener.finish()
}

/// The header names the model, key and plaintext expected, and is not too large.
fn check_header(header: &Header, expected: &Expected<'_>) -> Result<(), SealError> {
    let mismatch = |field, found: &dyn std::fmt::Display, expected: &dyn std::fmt::Display| {
        Err(SealError::Unexpected {
            field,
            found: found.to_string(),
            expected: expected.to_string(),
        })
    };
    if &header.model_id != expected.model_id {
        return mismatch("model id", &header.model_id, expected.model_id);
    }
    if &header.key_id != expected.key_id {
        return mismatch("key id", &header.key_id, expected.key_id);
    }
    if !bool::from(header.plaintext_sha384.ct_eq(expected.plaintext_sha384)) {
        return mismatch(
            "plaintext SHA-384",
            &hex(&header.plaintext_sha384),
            &hex(expected.plaintext_sha384),
        );
    }
    if header.plaintext_len > expected.max_len {
        return Err(SealError::TooLarge {
            len: header.plaintext_len,
            max: expected.max_len,
        });
    }
    Ok(())
}

/// A sealed file being opened chunk by chunk.
///
/// Each chunk's plaintext is authenticated before [`Opener::open_chunk`] appends it, but the
/// file as a whole (its end, its digest) is only known to be intact after [`Opener::finish`]:
/// act on nothing before then.
pub struct Opener<'r> {
    reader: &'r mut dyn Read,
    header: Header,
    header_bytes: Vec<u8>,
    aead: LessSafeKey,
    context: Context,
    next: u64,
}

impl std::fmt::Debug for Opener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("header", &self.header)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<'r> Opener<'r> {
    /// Read the header (not yet authenticated: the first chunk's tag covers it).
    pub fn new(reader: &'r mut dyn Read, key: &DataKey) -> Result<Self, SealError> {
        let (header, header_bytes) = read_header(reader)?;
        Ok(Self {
            reader,
            header,
            header_bytes,
            aead: aead_key(key)?,
            context: Context::new(&SHA384),
            next: 0,
        })
    }

    /// The header as read.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Read, authenticate and append the next chunk's plaintext to `out` (which grows by the
    /// chunk's length). Returns whether more chunks follow.
    pub fn open_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, SealError> {
        let count = self.header.chunk_count();
        let index = self.next;
        if index >= count {
            return Ok(false);
        }
        let last = index + 1 == count;
        let len = usize::try_from(self.header.chunk_len(index)).unwrap_or(usize::MAX);
        let start = out.len();
        out.resize(start.saturating_add(len), 0);
        let mut tag = [0u8; TAG_LEN];
        let result = (|| {
            let chunk = out.get_mut(start..).unwrap_or_default();
            read_exact_or(self.reader, chunk, SealError::Truncated)?;
            read_exact_or(self.reader, &mut tag, SealError::Truncated)?;
            self.aead
                .open_in_place_separate_tag(
                    chunk_nonce_for(&self.header, index, last)?,
                    Aad::from(chunk_aad(&self.header_bytes, index32(index)?, last)),
                    &tag,
                    chunk,
                )
                .map_err(|_| SealError::ChunkAuthentication { index })?;
            self.context.update(chunk);
            Ok(())
        })();
        if let Err(e) = result {
            // Leave nothing unauthenticated behind.
            if let Some(tail) = out.get_mut(start..) {
                tail.fill(0);
            }
            out.truncate(start);
            return Err(e);
        }
        self.next = index + 1;
        Ok(!last)
    }

    /// Check that every chunk was read, nothing follows the final one, and the plaintext's
    /// digest is the header's.
    pub fn finish(self) -> Result<(), SealError> {
        if self.next < self.header.chunk_count() {
            return Err(SealError::Truncated);
        }
        let mut probe = [0u8; 1];
        if read_some(self.reader, &mut probe)? != 0 {
            return Err(SealError::TrailingData);
        }
        if !bool::from(finish_digest(self.context).ct_eq(&self.header.plaintext_sha384)) {
            return Err(SealError::DigestMismatch);
        }
        Ok(())
    }
}

/// Read a header from the start of a stream; returns it and its bytes.
pub fn read_header(reader: &mut dyn Read) -> Result<(Header, Vec<u8>), SealError> {
    let mut bytes = vec![0u8; 12];
    read_exact_or(reader, &mut bytes, SealError::Truncated)?;
    // Check the magic and version before trusting the length field.
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(SealError::NotSealed);
    }
    let version = u16::from_be_bytes([
        bytes.get(8).copied().unwrap_or(0),
        bytes.get(9).copied().unwrap_or(0),
    ]);
    if version != VERSION {
        return Err(SealError::UnsupportedVersion(version));
    }
    let len = usize::from(u16::from_be_bytes([
        bytes.get(10).copied().unwrap_or(0),
        bytes.get(11).copied().unwrap_or(0),
    ]));
    if !(FIXED_HEADER_LEN + 4..=MAX_HEADER_LEN).contains(&len) {
        return Err(SealError::Malformed(format!(
            "a header of {len} bytes is outside {} ..= {MAX_HEADER_LEN}",
            FIXED_HEADER_LEN + 4
        )));
    }
    bytes.resize(len, 0);
    read_exact_or(
        reader,
        bytes.get_mut(12..).unwrap_or_default(),
        SealError::Truncated,
    )?;
    let (header, used) = Header::decode(&bytes)?;
    debug_assert_eq!(used, len);
    Ok((header, bytes))
}

fn aead_key(key: &DataKey) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Crypto("AES-256-GCM key"))
}

fn index32(index: u64) -> Result<u32, SealError> {
    u32::try_from(index).map_err(|_| SealError::Malformed("more than 2^32 chunks".into()))
}

fn chunk_nonce_for(header: &Header, index: u64, last: bool) -> Result<Nonce, SealError> {
    Ok(Nonce::assume_unique_for_key(chunk_nonce(
        header,
        index32(index)?,
        last,
    )))
}

fn finish_digest(context: Context) -> [u8; DIGEST_LEN] {
    <[u8; DIGEST_LEN]>::try_from(context.finish().as_ref()).unwrap_or([0; DIGEST_LEN])
}

/// Fill `buf`; an early end of stream is `short`.
fn read_exact_or(reader: &mut dyn Read, buf: &mut [u8], short: SealError) -> Result<(), SealError> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(short),
        Err(e) => Err(e.into()),
    }
}

fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> Result<usize, SealError> {
    loop {
        match reader.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
