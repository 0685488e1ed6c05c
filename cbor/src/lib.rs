//! The one strict CBOR reader, and the deterministic writer that matches it. Every CBOR message
//! the system reads goes through [`Reader`]: attestation-document payloads, control-protocol
//! messages, key-release messages, log entries and receipt payloads.
//!
//! The reader is in the spirit of webpki's `untrusted::Reader`: the input is bounded before
//! anything is read, the caller's schema drives the reading (nothing is skipped, so hostile
//! nesting cannot drive recursion), every length is checked against the bytes left before it is
//! used, and the input must be exactly one item. Indefinite lengths, floats, `undefined`, other
//! simple values and unexpected tags are refused. Map keys must come from the caller's list
//! (an unknown key is refused), at most once each; in the [`Profile::Deterministic`] profile
//! integers must be in their shortest form and keys in order, so that a message has one
//! encoding. Errors are typed ([`ErrorKind`]) and name the field and byte offset.
//!
//! ```
//! use cbor::{ErrorKind, Map, Profile, Reader, required};
//!
//! fn read_point(bytes: &[u8]) -> Result<(u64, u64), cbor::Error> {
//!     Reader::read_all(bytes, 64, Profile::Deterministic, |r| {
//!         let (mut x, mut y) = (None, None);
//!         let mut map = r.map()?;
//!         while let Some(key) = map.key(&["x", "y"])? {
//!             match key {
//!                 "x" => x = Some(map.value().uint()?),
//!                 _ => y = Some(map.value().uint()?),
//!             }
//!         }
//!         Ok((required(x, "x")?, required(y, "y")?))
//!     })
//! }
//!
//! let point = Map::new().with("y", 2u64).with("x", 1u64).encode();
//! assert_eq!(read_point(&point), Ok((1, 2)));
//!
//! // A key the schema does not define is refused, and named:
//! let extra = Map::new().with("x", 1u64).with("y", 2u64).with("z", 3u64).encode();
//! let error = read_point(&extra).unwrap_err();
//! assert_eq!(error.kind(), &ErrorKind::UnknownKey { key: "z".into() });
//!
//! // So is a value of the wrong type, naming its field:
//! let text = Map::new().with("x", "one").with("y", 2u64).encode();
//! assert_eq!(read_point(&text).unwrap_err().field(), Some("x"));
//! ```

#![forbid(unsafe_code)]

mod error;
mod fields;
mod read;
mod write;

// The public interface is:
pub use crate::error::{Error, ErrorKind};
pub use crate::fields::Fields;
pub use crate::read::{Entries, Profile, Reader, required};
pub use crate::write::{Key, Map, Value, encode};

#[cfg(test)]
mod tests;
