//! Enclave images: the EIF format (version 4), the measurements a Nitro enclave reports for an
//! image (PCR0, PCR1, PCR2 and, for a signed image, PCR8), image signing, and reproducible
//! ramdisks.
//!
//! The format, as `nitro-cli` and `aws-nitro-enclaves-image-format` write it:
//!
//! - a 548-byte big-endian header: magic `.eif`, version, flags (bit 0: arm64), default memory
//!   and CPUs, the number of sections, 32 section offsets, 32 section sizes, 4 unused bytes and a
//!   CRC-32 (IEEE) over the header without its CRC field and then every section in file order;
//! - sections, each a 12-byte header (type, flags, size) and its body, in the order kernel,
//!   command line (no trailing NUL), metadata (JSON), ramdisks, signature.
//!
//! The measurements are `SHA-384(48 zero bytes ‖ SHA-384(measured bytes))`: PCR0 over the kernel,
//! command line and every ramdisk; PCR1 over the kernel, command line and first ramdisk; PCR2
//! over the other ramdisks; PCR8 over the DER of the signing certificate.
//!
//! ```
//! use eif::{ImageBuilder, Part};
//!
//! let mut eif = Vec::new();
//! let built = ImageBuilder::new(Part::bytes(b"kernel".to_vec()), "console=ttyS0")
//!     .ramdisk(Part::bytes(b"boot ramdisk".to_vec()))
//!     .ramdisk(Part::bytes(b"application ramdisk".to_vec()))
//!     .write(&mut eif)?;
//!
//! let image = eif::read(&mut eif.as_slice(), eif.len() as u64)?;
//! assert_eq!(image.measurements, built.measurements);
//! assert_eq!(image.cmdline, b"console=ttyS0");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod build;
mod error;
mod format;
mod layout;
mod measure;
mod ramdisk;
mod read;
mod signature;

pub use build::{Built, ImageBuilder, Metadata, Part};
pub use error::ImageError;
pub use format::{
    Arch, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, EIF_MAGIC, EIF_VERSION, HEADER_LEN, MAX_CMDLINE_LEN,
    MAX_METADATA_LEN, MAX_SECTIONS, MAX_SIGNATURE_LEN, SECTION_HEADER_LEN, SectionKind,
};
pub use layout::{
    AWS_CMDLINE, Application, LayoutError, application_ramdisk, boot_ramdisk,
    check_static_executable, elf_interpreter,
};
pub use measure::Measurements;
pub use ramdisk::{RamdiskError, RamdiskOptions, RamdiskSummary, RamdiskTree, write_ramdisk};
pub use read::{Image, Section, read, read_file};
pub use signature::{
    FileSigner, ImageSignature, PcrSigner, SignatureError, SigningAlgorithm,
    certificate_for_signing, pcr0_payload,
};
