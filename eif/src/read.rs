//! Reading an image: every structural rule is checked from the header's section table before a
//! section body is read, kernels and ramdisks stream through in fixed-size chunks (memory does not
//! grow with the image), and the result is returned only if the CRC matches and the signature,
//! when there is one, verifies.

use std::io::Read;
use std::path::Path;

use attest::PcrValue;

use crate::error::ImageError;
use crate::format::{
    Arch, CRC_OFFSET, HEADER_LEN, Header, SECTION_HEADER_LEN, SectionKind, decode_section_header,
};
use crate::measure::{Measurements, Measurer};
use crate::signature::{ImageSignature, verify_section};

/// Kernels and ramdisks are read in chunks of this size.
pub(crate) const CHUNK_LEN: usize = 1024 * 1024;

/// One section of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// What it holds.
    pub kind: SectionKind,
    /// Where its 12-byte header starts.
    pub offset: u64,
    /// The size of its body.
    pub size: u64,
}

/// An image that has been read and checked: its structure, CRC and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Image {
    /// The architecture it boots on.
    pub arch: Arch,
    /// Default enclave memory, in bytes, as the header records it.
    pub default_memory: u64,
    /// Default CPU count, as the header records it.
    pub default_cpus: u64,
    /// The sections in file order.
    pub sections: Vec<Section>,
    /// The kernel command line.
    pub cmdline: Vec<u8>,
    /// The metadata section (JSON), if present.
    pub metadata: Option<Vec<u8>>,
    /// The CRC-32, checked.
    pub crc32: u32,
    /// The image's length in bytes.
    pub len: u64,
    /// PCR0, PCR1, PCR2 and (signed images) PCR8.
    pub measurements: Measurements,
    /// The verified signature, for a signed image.
    pub signature: Option<ImageSignature>,
}

/// Where a reader is in the order kernel, cmdline, metadata?, ramdisk+, signature?.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Kernel,
    Cmdline,
    Metadata,
    Ramdisks,
    Signature,
}

fn next_stage(stage: Stage, kind: SectionKind) -> Option<Stage> {
    use SectionKind as K;
    match (stage, kind) {
        (Stage::Start, K::Kernel) => Some(Stage::Kernel),
        (Stage::Kernel, K::Cmdline) => Some(Stage::Cmdline),
        (Stage::Cmdline, K::Metadata) => Some(Stage::Metadata),
        (Stage::Cmdline | Stage::Metadata | Stage::Ramdisks, K::Ramdisk) => Some(Stage::Ramdisks),
        (Stage::Ramdisks, K::Signature) => Some(Stage::Signature),
        _ => None,
    }
}

fn expected_after(stage: Stage) -> &'static str {
    match stage {
        Stage::Start => "the kernel first",
        Stage::Kernel => "the command line after the kernel",
        Stage::Cmdline => "metadata or a ramdisk after the command line",
        Stage::Metadata => "a ramdisk after the metadata",
        Stage::Ramdisks => "another ramdisk or the signature",
        Stage::Signature => "nothing after the signature",
    }
}

/// Read an image file.
pub fn read_file(path: &Path) -> Result<Image, ImageError> {
    let context = || format!("reading {}", path.display());
    let mut file = std::fs::File::open(path).map_err(ImageError::io(context()))?;
    let len = file.metadata().map_err(ImageError::io(context()))?.len();
    read(&mut file, len)
}

/// Read an image of `len` bytes from `input`, checking every rule of the format, the CRC and the
/// signature.
pub fn read(input: &mut dyn Read, len: u64) -> Result<Image, ImageError> {
    if len < u64::try_from(HEADER_LEN).unwrap_or(u64::MAX) {
        return Err(ImageError::TooShort { len });
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    read_exact(input, &mut header_bytes, "the header")?;
    let header = Header::decode(&header_bytes)?;
    check_layout(&header, len)?;

    let mut crc = crc32fast::Hasher::new();
    crc.update(header_bytes.get(..CRC_OFFSET).unwrap_or_default());
    let mut measurer = Measurer::new();
    let mut stage = Stage::Start;
    let mut sections = Vec::with_capacity(header.sections.len());
    let mut cmdline = Vec::new();
    let mut metadata = None;
    let mut signature_section = None;
    let mut buffer = Vec::with_capacity(CHUNK_LEN);
    let mut app_remaining = app_bytes(&header);
    let mut ramdisks = 0usize;

    for (index, &(offset, size)) in header.sections.iter().enumerate() {
        let mut section_header = [0u8; SECTION_HEADER_LEN];
        read_exact(input, &mut section_header, "a section header")?;
        crc.update(&section_header);
        let (kind, declared) = decode_section_header(index, &section_header)?;
        if declared != size {
            return Err(ImageError::MalformedSection {
                index,
                reason: format!(
                    "{kind} section header says {declared} bytes, the image header {size}"
                ),
            });
        }
        stage = next_stage(stage, kind).ok_or_else(|| ImageError::MalformedSection {
            index,
            reason: format!("found a {kind} section; expected {}", expected_after(stage)),
        })?;
        if let Some(limit) = kind.max_len()
            && size > limit
        {
            return Err(ImageError::SectionTooLarge {
                index,
                kind,
                size,
                limit,
            });
        }
        sections.push(Section { kind, offset, size });
        match kind {
            SectionKind::Cmdline | SectionKind::Metadata | SectionKind::Signature => {
                let mut body = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
                read_exact(input, &mut body, "a section")?;
                crc.update(&body);
                match kind {
                    SectionKind::Cmdline => {
                        measurer.boot(&body);
                        cmdline = body;
                    }
                    SectionKind::Metadata => {
                        if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                            return Err(ImageError::MalformedSection {
                                index,
                                reason: "the metadata section is not JSON".into(),
                            });
                        }
                        metadata = Some(body);
                    }
                    _ => signature_section = Some(body),
                }
            }
            SectionKind::Kernel | SectionKind::Ramdisk => {
                let boot = kind == SectionKind::Kernel || ramdisks == 0;
                if kind == SectionKind::Ramdisk {
                    ramdisks += 1;
                }
                if boot {
                    stream(input, size, &mut buffer, |chunk| {
                        crc.update(&chunk);
                        measurer.boot(&chunk);
                        chunk
                    })?;
                } else {
                    measurer.start_app(app_remaining);
                    app_remaining = app_remaining.saturating_sub(size);
                    stream(input, size, &mut buffer, |chunk| {
                        crc.update(&chunk);
                        measurer.app(chunk)
                    })?;
                }
            }
        }
    }
    if ramdisks == 0 {
        return Err(ImageError::MalformedSection {
            index: sections.len(),
            reason: "the image has no ramdisk".into(),
        });
    }
    let actual = crc.finalize();
    if actual != header.crc32 {
        return Err(ImageError::CrcMismatch {
            expected: header.crc32,
            actual,
        });
    }
    let [pcr0, pcr1, pcr2] = measurer.finish()?;
    let signature = signature_section
        .map(|section| verify_section(&section, &pcr0))
        .transpose()?;
    let pcr8 = signature
        .as_ref()
        .map(|s| PcrValue::measure(s.certificate.as_ref()));
    Ok(Image {
        arch: header.arch,
        default_memory: header.default_memory,
        default_cpus: header.default_cpus,
        sections,
        cmdline,
        metadata,
        crc32: actual,
        len,
        measurements: Measurements {
            pcr0,
            pcr1,
            pcr2,
            pcr8,
        },
        signature,
    })
}

/// The sections follow the header and each other with no gap or overlap, and end exactly where
/// the image does.
fn check_layout(header: &Header, len: u64) -> Result<(), ImageError> {
    let section_header_len = u64::try_from(SECTION_HEADER_LEN).unwrap_or(u64::MAX);
    let mut position = u64::try_from(HEADER_LEN).unwrap_or(u64::MAX);
    for (index, &(offset, size)) in header.sections.iter().enumerate() {
        if offset != position {
            return Err(ImageError::Layout {
                index,
                reason: format!(
                    "starts at byte {offset}, expected {position}: sections must follow each \
                     other with no gap or overlap"
                ),
            });
        }
        let end = offset
            .checked_add(section_header_len)
            .and_then(|end| end.checked_add(size))
            .filter(|end| *end <= len)
            .ok_or_else(|| ImageError::Layout {
                index,
                reason: format!(
                    "{size} bytes at byte {offset} extend past the end of the {len}-byte image"
                ),
            })?;
        position = end;
    }
    if position != len {
        return Err(ImageError::Length {
            reason: format!(
                "{} bytes after the last section end at byte {position}",
                len - position
            ),
        });
    }
    Ok(())
}

/// The total size of the ramdisks after the first.
fn app_bytes(header: &Header) -> u64 {
    // Kinds are known only once section headers are read; sizes after the first three sections
    // bound the application ramdisks from above, which is all the hint needs.
    header
        .sections
        .iter()
        .skip(3)
        .fold(0u64, |sum, (_, size)| sum.saturating_add(*size))
}

fn read_exact(input: &mut dyn Read, buffer: &mut [u8], what: &str) -> Result<(), ImageError> {
    input.read_exact(buffer).map_err(|source| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            ImageError::Length {
                reason: format!("the image ends inside {what}"),
            }
        } else {
            ImageError::Io {
                context: format!("reading {what}"),
                source,
            }
        }
    })
}

/// Read `size` bytes in chunks, handing each to `each`, which returns the buffer to read the next
/// chunk into.
pub(crate) fn stream(
    input: &mut dyn Read,
    size: u64,
    buffer: &mut Vec<u8>,
    mut each: impl FnMut(Vec<u8>) -> Vec<u8>,
) -> Result<(), ImageError> {
    let mut left = size;
    while left > 0 {
        let take = left.min(u64::try_from(CHUNK_LEN).unwrap_or(u64::MAX));
        buffer.resize(usize::try_from(take).unwrap_or(CHUNK_LEN), 0);
        read_exact(input, buffer, "a section")?;
        *buffer = each(core::mem::take(buffer));
        left -= take;
    }
    Ok(())
}
