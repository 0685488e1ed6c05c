//! Sealed models and the key-release protocol that opens them: the two things the key broker
//! and the enclave must agree on, in one place.
//!
//! - [`format`] and the functions at the crate root: the sealed-model file, chunked AES-256-GCM
//!   in the STREAM style. [`digest`] and [`seal`] are the broker's two passes;
//!   [`open_into`] is the enclave's one (straight into the model's memory file, a chunk at a
//!   time), [`open_into_memory`] the same into one buffer.
//! - [`release`]: the key-release protocol's messages, the broker's signed response, and the
//!   enclave's side of a release ([`release::KeyRequest`]), which checks every bound field and
//!   the transparency-log proof before it unwraps the key.
//!
//! ```
//! use sealing::{DataKey, Expected, Header, Id};
//!
//! let model = b"weights".repeat(1000);
//! let key = DataKey::generate()?;
//! let (len, sha384) = sealing::digest(&mut &model[..], &mut |_| {})?;
//! let header = Header::new(Id::new("demo")?, Id::new("kek-1/01")?, 4096, len, sha384)?;
//! let mut sealed = Vec::new();
//! sealing::seal(&mut &model[..], &mut sealed, &header, &key, &mut |_| {})?;
//!
//! let expected = Expected {
//!     model_id: &header.model_id,
//!     key_id: &header.key_id,
//!     plaintext_sha384: &sha384,
//!     max_len: 1 << 20,
//! };
//! let opened = sealing::open_into_memory(&mut &sealed[..], &key, &expected)?;
//! assert_eq!(opened.as_slice(), model.as_slice());
//!
//! // One flipped bit anywhere and nothing is returned.
//! sealed[200] ^= 1;
//! assert!(sealing::open_into_memory(&mut &sealed[..], &key, &expected).is_err());
//! # Ok::<(), sealing::SealError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
pub mod format;
pub mod release;
mod stream;

// The public interface is:
pub use crate::error::SealError;
pub use crate::format::{DEFAULT_CHUNK_SIZE, DataKey, Header, Id};
pub use crate::stream::{Expected, Opener, digest, open_into, open_into_memory, read_header, seal};
