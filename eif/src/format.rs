//! The EIF header and section headers: layout, encoding and the structural rules a reader
//! enforces before it reads any section body.

use core::fmt;

use crate::error::ImageError;

/// The first four bytes of every image: `.eif`.
pub const EIF_MAGIC: [u8; 4] = *b".eif";
/// The version written and read.
pub const EIF_VERSION: u16 = 4;
/// The size of the image header.
pub const HEADER_LEN: usize = 548;
/// The size of each section's header.
pub const SECTION_HEADER_LEN: usize = 12;
/// The number of section slots in the header.
pub const MAX_SECTIONS: usize = 32;
/// The longest kernel command line read or written. Linux itself takes at most a few KiB.
pub const MAX_CMDLINE_LEN: u64 = 64 * 1024;
/// The largest metadata section read or written.
pub const MAX_METADATA_LEN: u64 = 1024 * 1024;
/// The largest signature section read or written.
pub const MAX_SIGNATURE_LEN: u64 = 64 * 1024;
/// The memory `nitro-cli` records by default, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// The CPUs `nitro-cli` records by default.
pub const DEFAULT_CPUS: u64 = 2;

/// Header flag bit 0: the image is for arm64 (aarch64).
const FLAG_ARM64: u16 = 0x1;
/// Where the CRC field starts: the CRC covers the header up to here.
pub(crate) const CRC_OFFSET: usize = HEADER_LEN - 4;
const OFFSETS_AT: usize = 28;
const SIZES_AT: usize = OFFSETS_AT + 8 * MAX_SECTIONS;

/// The architecture an image boots on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 (flag bit 0 clear).
    #[default]
    X86_64,
    /// arm64 (flag bit 0 set).
    Aarch64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    /// The kernel (type 1).
    Kernel,
    /// The kernel command line (type 2).
    Cmdline,
    /// A ramdisk (type 3).
    Ramdisk,
    /// The signature over PCR0 (type 4).
    Signature,
    /// Build metadata, JSON (type 5).
    Metadata,
}

impl SectionKind {
    pub(crate) fn code(self) -> u16 {
        match self {
            SectionKind::Kernel => 1,
            SectionKind::Cmdline => 2,
            SectionKind::Ramdisk => 3,
            SectionKind::Signature => 4,
            SectionKind::Metadata => 5,
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => SectionKind::Kernel,
            2 => SectionKind::Cmdline,
            3 => SectionKind::Ramdisk,
            4 => SectionKind::Signature,
            5 => SectionKind::Metadata,
            _ => return None,
        })
    }

    /// The largest body a reader accepts for this kind; kernels and ramdisks are streamed and
    /// bounded only by the file.
    pub(crate) fn max_len(self) -> Option<u64> {
        match self {
            SectionKind::Cmdline => Some(MAX_CMDLINE_LEN),
            SectionKind::Metadata => Some(MAX_METADATA_LEN),
            SectionKind::Signature => Some(MAX_SIGNATURE_LEN),
            SectionKind::Kernel | SectionKind::Ramdisk => None,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::Kernel => "kernel",
            SectionKind::Cmdline => "cmdline",
            SectionKind::Ramdisk => "ramdisk",
            SectionKind::Signature => "signature",
            SectionKind::Metadata => "metadata",
        })
    }
}

/// The image header, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) arch: Arch,
    pub(crate) default_memory: u64,
    pub(crate) default_cpus: u64,
    /// `(offset, size)` of each section, `offset` being where its 12-byte header starts.
    pub(crate) sections: Vec<(u64, u64)>,
    pub(crate) crc32: u32,
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    let mut out = [0u8; 2];
    if let Some(src) = bytes.get(at..at + 2) {
        out.copy_from_slice(src);
    }
    u16::from_be_bytes(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut out = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        out.copy_from_slice(src);
    }
    u32::from_be_bytes(out)
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        out.copy_from_slice(src);
    }
    u64::from_be_bytes(out)
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    if let Some(dst) = bytes.get_mut(at..at + value.len()) {
        dst.copy_from_slice(value);
    }
}

impl Header {
    /// Decode and check a header: magic, version, flags, reserved fields, the section count and
    /// that unused slots are zero. Whether the sections fit the file is checked by the reader.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, ImageError> {
        let bad = |reason: String| ImageError::MalformedHeader { reason };
        if bytes.get(..4) != Some(EIF_MAGIC.as_slice()) {
            return Err(ImageError::BadMagic);
        }
        let version = be_u16(bytes, 4);
        if version != EIF_VERSION {
            return Err(ImageError::UnsupportedVersion { version });
        }
        let flags = be_u16(bytes, 6);
        if flags & !FLAG_ARM64 != 0 {
            return Err(bad(format!(
                "unknown flags {flags:#06x} (only bit 0, arm64, is defined)"
            )));
        }
        let arch = if flags & FLAG_ARM64 != 0 {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        let reserved = be_u16(bytes, 24);
        if reserved != 0 {
            return Err(bad(format!("reserved field is {reserved:#x}, not zero")));
        }
        let count = usize::from(be_u16(bytes, 26));
        if count > MAX_SECTIONS {
            return Err(bad(format!(
                "{count} sections; the header has room for {MAX_SECTIONS}"
            )));
        }
        let mut sections = Vec::with_capacity(count);
        for slot in 0..MAX_SECTIONS {
            let offset = be_u64(bytes, OFFSETS_AT + 8 * slot);
            let size = be_u64(bytes, SIZES_AT + 8 * slot);
            if slot < count {
                sections.push((offset, size));
            } else if offset != 0 || size != 0 {
                return Err(bad(format!(
                    "section slot {slot} is beyond the {count} sections but not zero"
                )));
            }
        }
        let unused = be_u32(bytes, CRC_OFFSET - 4);
        if unused != 0 {
            return Err(bad(format!("unused field is {unused:#x}, not zero")));
        }
        Ok(Header {
            arch,
            default_memory: be_u64(bytes, 8),
            default_cpus: be_u64(bytes, 16),
            sections,
            crc32: be_u32(bytes, CRC_OFFSET),
        })
    }

    /// Encode, with the CRC field as given.
    pub(crate) fn encode(&self) -> Result<[u8; HEADER_LEN], ImageError> {
        if self.sections.len() > MAX_SECTIONS {
            return Err(ImageError::TooManySections {
                count: self.sections.len(),
            });
        }
        let mut out = [0u8; HEADER_LEN];
        put(&mut out, 0, &EIF_MAGIC);
        put(&mut out, 4, &EIF_VERSION.to_be_bytes());
        let flags = match self.arch {
            Arch::X86_64 => 0,
            Arch::Aarch64 => FLAG_ARM64,
        };
        put(&mut out, 6, &flags.to_be_bytes());
        put(&mut out, 8, &self.default_memory.to_be_bytes());
        put(&mut out, 16, &self.default_cpus.to_be_bytes());
        let count =
            u16::try_from(self.sections.len()).map_err(|_| ImageError::TooManySections {
                count: self.sections.len(),
            })?;
        put(&mut out, 26, &count.to_be_bytes());
        for (slot, (offset, size)) in self.sections.iter().enumerate() {
            put(&mut out, OFFSETS_AT + 8 * slot, &offset.to_be_bytes());
            put(&mut out, SIZES_AT + 8 * slot, &size.to_be_bytes());
        }
        put(&mut out, CRC_OFFSET, &self.crc32.to_be_bytes());
        Ok(out)
    }
}

/// A section's 12-byte header.
pub(crate) fn encode_section_header(kind: SectionKind, size: u64) -> [u8; SECTION_HEADER_LEN] {
    let mut out = [0u8; SECTION_HEADER_LEN];
    put(&mut out, 0, &kind.code().to_be_bytes());
    put(&mut out, 4, &size.to_be_bytes());
    out
}

/// Decode a section header: a known type, zero flags.
pub(crate) fn decode_section_header(
    index: usize,
    bytes: &[u8; SECTION_HEADER_LEN],
) -> Result<(SectionKind, u64), ImageError> {
    let code = be_u16(bytes, 0);
    let kind = SectionKind::from_code(code).ok_or_else(|| ImageError::MalformedSection {
        index,
        reason: format!("unknown section type {code}"),
    })?;
    let flags = be_u16(bytes, 2);
    if flags != 0 {
        return Err(ImageError::MalformedSection {
            index,
            reason: format!("{kind} section has flags {flags:#06x}; none are defined"),
        });
    }
    Ok((kind, be_u64(bytes, 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            arch: Arch::Aarch64,
            default_memory: 512 << 20,
            default_cpus: 4,
            sections: vec![(548, 10), (570, 3)],
            crc32: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips_and_has_the_documented_layout() {
        let bytes = header().encode().unwrap();
        assert_eq!(&bytes[..6], b".eif\x00\x04");
        assert_eq!(&bytes[6..8], &[0, 1], "arm64 flag");
        assert_eq!(&bytes[26..28], &[0, 2], "section count");
        assert_eq!(&bytes[28..36], &548u64.to_be_bytes(), "first offset");
        assert_eq!(&bytes[284..292], &10u64.to_be_bytes(), "first size");
        assert_eq!(&bytes[544..], &0xdead_beefu32.to_be_bytes(), "CRC last");
        assert_eq!(Header::decode(&bytes).unwrap(), header());
    }

    #[test]
    fn header_rules() {
        let good = header().encode().unwrap();
        let with = |at: usize, value: u8| {
            let mut bytes = good;
            bytes[at] = value;
            Header::decode(&bytes)
        };
        assert!(matches!(with(0, b'E'), Err(ImageError::BadMagic)));
        assert!(matches!(
            with(5, 3),
            Err(ImageError::UnsupportedVersion { version: 3 })
        ));
        assert!(matches!(
            with(7, 2),
            Err(ImageError::MalformedHeader { .. })
        ));
        assert!(matches!(
            with(25, 1),
            Err(ImageError::MalformedHeader { .. })
        ));
        assert!(matches!(
            with(27, 33),
            Err(ImageError::MalformedHeader { .. })
        ));
        // A non-zero slot past the section count.
        assert!(matches!(
            with(28 + 8 * 5, 1),
            Err(ImageError::MalformedHeader { .. })
        ));
        assert!(matches!(
            with(541, 1),
            Err(ImageError::MalformedHeader { .. })
        ));
    }

    #[test]
    fn section_header_rules() {
        let bytes = encode_section_header(SectionKind::Metadata, 77);
        assert_eq!(bytes, [0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 77]);
        assert_eq!(
            decode_section_header(0, &bytes).unwrap(),
            (SectionKind::Metadata, 77)
        );
        let mut unknown = bytes;
        unknown[1] = 6;
        assert!(decode_section_header(0, &unknown).is_err());
        let mut flagged = bytes;
        flagged[3] = 1;
        assert!(decode_section_header(0, &flagged).is_err());
    }
}
