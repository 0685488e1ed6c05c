//! Assembling an image from its parts, deterministically: the same parts, command line, metadata
//! and settings give the same bytes (for a signed image, the same bytes but for the ECDSA
//! signature, which is randomised; its PCRs are the same).
//!
//! Parts are read twice: once to measure them (the signature over PCR0 and the CRC must be known
//! before the header is written), once to copy them to the output. A part that changes between
//! the two passes is detected and the build fails.

use std::io::{Read, Write};
use std::path::PathBuf;

use attest::Timestamp;

use crate::error::ImageError;
use crate::format::{
    Arch, CRC_OFFSET, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, HEADER_LEN, Header, MAX_CMDLINE_LEN,
    MAX_SECTIONS, SECTION_HEADER_LEN, SectionKind, encode_section_header,
};
use crate::measure::{Measurements, Measurer};
use crate::read::stream;
use crate::signature::{ImageSignature, PcrSigner, sign_section};

/// A kernel or ramdisk: bytes in memory, or a file read when the image is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file.
    File(PathBuf),
}

impl Part {
    /// A part held in memory.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Part::Bytes(bytes.into())
    }

    /// A part read from a file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Part::File(path.into())
    }

    fn describe(&self, role: &str) -> String {
        match self {
            Part::Bytes(_) => format!("the {role} (in memory)"),
            Part::File(path) => format!("the {role} {}", path.display()),
        }
    }

    fn len(&self, role: &str) -> Result<u64, ImageError> {
        match self {
            Part::Bytes(bytes) => Ok(u64::try_from(bytes.len()).unwrap_or(u64::MAX)),
            Part::File(path) => std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(ImageError::io(format!("reading {}", self.describe(role)))),
        }
    }

    fn open(&self, role: &str) -> Result<(Box<dyn Read + '_>, u64), ImageError> {
        match self {
            Part::Bytes(bytes) => Ok((
                Box::new(bytes.as_slice()),
                u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            )),
            Part::File(path) => {
                let context = || format!("reading {}", self.describe(role));
                let file = std::fs::File::open(path).map_err(ImageError::io(context()))?;
                let len = file.metadata().map_err(ImageError::io(context()))?.len();
                Ok((Box::new(file), len))
            }
        }
    }
}

/// The metadata section's contents, in the shape `nitro-cli describe-eif` reads. It is not
/// measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// `ImageName`.
    pub name: String,
    /// `ImageVersion`.
    pub version: String,
    /// `BuildTime`: by default the Unix epoch, so that builds are reproducible.
    pub build_time: Timestamp,
    /// `KernelVersion`.
    pub kernel_version: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            name: "enclave".into(),
            version: "1.0".into(),
            build_time: Timestamp::from_unix_secs(0),
            kernel_version: "unknown".into(),
        }
    }
}

/// The metadata section's JSON, in the field order of `aws-nitro-enclaves-image-format`'s
/// `EifIdentityInfo`, so that an image built here is byte for byte what that library writes.
#[derive(serde::Serialize)]
struct IdentityJson<'a> {
    #[serde(rename = "ImageName")]
    name: &'a str,
    #[serde(rename = "ImageVersion")]
    version: &'a str,
    #[serde(rename = "BuildMetadata")]
    build: BuildJson<'a>,
    #[serde(rename = "DockerInfo")]
    docker: Option<()>,
    #[serde(rename = "CustomMetadata")]
    custom: Option<()>,
}

#[derive(serde::Serialize)]
struct BuildJson<'a> {
    #[serde(rename = "BuildTime")]
    time: String,
    #[serde(rename = "BuildTool")]
    tool: &'a str,
    #[serde(rename = "BuildToolVersion")]
    tool_version: &'a str,
    #[serde(rename = "OperatingSystem")]
    os: &'a str,
    #[serde(rename = "KernelVersion")]
    kernel: &'a str,
}

impl Metadata {
    fn to_json(&self) -> Vec<u8> {
        let identity = IdentityJson {
            name: &self.name,
            version: &self.version,
            build: BuildJson {
                time: self.build_time.to_string(),
                tool: "attest",
                tool_version: env!("CARGO_PKG_VERSION"),
                os: "Linux",
                kernel: &self.kernel_version,
            },
            docker: None,
            custom: None,
        };
        // Serialising strings and nulls cannot fail.
        serde_json::to_vec(&identity).unwrap_or_default()
    }
}

/// What [`ImageBuilder::write`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Built {
    /// The image's measurements.
    pub measurements: Measurements,
    /// Its CRC-32.
    pub crc32: u32,
    /// Its length in bytes.
    pub len: u64,
    /// Its signature, for a signed image.
    pub signature: Option<ImageSignature>,
}

/// Assembles an image: kernel, command line, metadata, ramdisks (the first is the boot ramdisk,
/// measured into PCR1; the others are the application, PCR2), and optionally a signature.
pub struct ImageBuilder<'a> {
    kernel: Part,
    cmdline: String,
    ramdisks: Vec<Part>,
    metadata: Metadata,
    arch: Arch,
    memory_mib: u64,
    cpus: u64,
    signer: Option<&'a dyn PcrSigner>,
}

impl core::fmt::Debug for ImageBuilder<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ImageBuilder")
            .field("kernel", &self.kernel)
            .field("cmdline", &self.cmdline)
            .field("ramdisks", &self.ramdisks)
            .field("arch", &self.arch)
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// A part being written: its kind, its source and what the measuring pass saw.
struct Planned<'p> {
    kind: SectionKind,
    role: String,
    source: Source<'p>,
    size: u64,
    crc: crc32fast::Hasher,
}

enum Source<'p> {
    Part(&'p Part),
    Bytes(Vec<u8>),
}

impl<'a> ImageBuilder<'a> {
    /// An image with this kernel and command line. Add at least one ramdisk.
    pub fn new(kernel: Part, cmdline: impl Into<String>) -> Self {
        ImageBuilder {
            kernel,
            cmdline: cmdline.into(),
            ramdisks: Vec::new(),
            metadata: Metadata::default(),
            arch: Arch::X86_64,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            signer: None,
        }
    }

    /// Add a ramdisk; the first is the boot ramdisk.
    #[must_use]
    pub fn ramdisk(mut self, ramdisk: Part) -> Self {
        self.ramdisks.push(ramdisk);
        self
    }

    /// Set the metadata section's contents.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Set the architecture (default x86-64).
    #[must_use]
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = arch;
        self
    }

    /// Set the default memory (MiB) and CPU count recorded in the header (default 1024 and 2).
    #[must_use]
    pub fn resources(mut self, memory_mib: u64, cpus: u64) -> Self {
        self.memory_mib = memory_mib;
        self.cpus = cpus;
        self
    }

    /// Sign the image's PCR0 with this signer; PCR8 then measures its certificate.
    #[must_use]
    pub fn sign_with(mut self, signer: &'a dyn PcrSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    fn check(&self) -> Result<(), ImageError> {
        let invalid = |reason: String| Err(ImageError::InvalidInput { reason });
        if self.ramdisks.is_empty() {
            return invalid("an image needs at least one ramdisk".into());
        }
        if self.cmdline.contains('\0') {
            return invalid("the command line contains a NUL byte".into());
        }
        if u64::try_from(self.cmdline.len()).unwrap_or(u64::MAX) > MAX_CMDLINE_LEN {
            return invalid(format!(
                "the command line is {} bytes; the limit is {MAX_CMDLINE_LEN}",
                self.cmdline.len()
            ));
        }
        let count = 3 + self.ramdisks.len() + usize::from(self.signer.is_some());
        if count > MAX_SECTIONS {
            return Err(ImageError::TooManySections { count });
        }
        if self.memory_mib == 0 || self.cpus == 0 {
            return invalid("default memory and CPUs must be at least 1".into());
        }
        Ok(())
    }

    /// Write the image to `out`.
    pub fn write(&self, out: &mut dyn Write) -> Result<Built, ImageError> {
        self.check()?;
        let memory =
            self.memory_mib
                .checked_mul(1024 * 1024)
                .ok_or_else(|| ImageError::InvalidInput {
                    reason: "default memory overflows".into(),
                })?;

        // Pass 1: sizes, measurements, and each section's CRC.
        let mut planned = Vec::with_capacity(4 + self.ramdisks.len());
        let mut measurer = Measurer::new();
        let mut buffer = Vec::new();
        let kernel = (SectionKind::Kernel, "kernel", &self.kernel);
        plan_part(&mut planned, &mut measurer, &mut buffer, kernel, true)?;
        planned.push(planned_bytes(
            SectionKind::Cmdline,
            "command line",
            self.cmdline.clone().into_bytes(),
        ));
        measurer.boot(self.cmdline.as_bytes());
        planned.push(planned_bytes(
            SectionKind::Metadata,
            "metadata",
            self.metadata.to_json(),
        ));
        let mut app_remaining = 0u64;
        for ramdisk in self.ramdisks.iter().skip(1) {
            app_remaining = app_remaining.saturating_add(ramdisk.len("ramdisk")?);
        }
        for (index, ramdisk) in self.ramdisks.iter().enumerate() {
            let role = format!("ramdisk {}", index + 1);
            if index > 0 {
                measurer.start_app(app_remaining);
            }
            let part = (SectionKind::Ramdisk, role.as_str(), ramdisk);
            let size = plan_part(&mut planned, &mut measurer, &mut buffer, part, index == 0)?;
            app_remaining = app_remaining.saturating_sub(size);
        }
        let [pcr0, pcr1, pcr2] = measurer.finish()?;
        let mut signature = None;
        if let Some(signer) = self.signer {
            let (section, verified) = sign_section(signer, &pcr0)?;
            signature = Some(verified);
            planned.push(planned_bytes(SectionKind::Signature, "signature", section));
        }

        // The header, its CRC combined from the sections'.
        let mut sections = Vec::with_capacity(planned.len());
        let mut offset = u64::try_from(HEADER_LEN).unwrap_or(u64::MAX);
        for part in &planned {
            sections.push((offset, part.size));
            offset = offset
                .checked_add(u64::try_from(SECTION_HEADER_LEN).unwrap_or(u64::MAX))
                .and_then(|o| o.checked_add(part.size))
                .ok_or_else(|| ImageError::InvalidInput {
                    reason: "the image would be larger than 2^64 bytes".into(),
                })?;
        }
        let mut header = Header {
            arch: self.arch,
            default_memory: memory,
            default_cpus: self.cpus,
            sections,
            crc32: 0,
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(header.encode()?.get(..CRC_OFFSET).unwrap_or_default());
        for part in &planned {
            crc.combine(&part.crc);
        }
        header.crc32 = crc.finalize();

        // Pass 2: write, checking each part against what pass 1 saw.
        let write_error = || ImageError::io("writing the image");
        out.write_all(&header.encode()?).map_err(write_error())?;
        for part in &planned {
            let section_header = encode_section_header(part.kind, part.size);
            out.write_all(&section_header).map_err(write_error())?;
            match &part.source {
                Source::Bytes(bytes) => out.write_all(bytes).map_err(write_error())?,
                Source::Part(source) => {
                    let mut check = crc32fast::Hasher::new();
                    check.update(&section_header);
                    let mut failed = None;
                    let expected = Some(part.size);
                    stream_part(source, &part.role, expected, &mut buffer, |chunk| {
                        check.update(&chunk);
                        if failed.is_none()
                            && let Err(e) = out.write_all(&chunk)
                        {
                            failed = Some(e);
                        }
                        chunk
                    })?;
                    if let Some(e) = failed {
                        return Err(write_error()(e));
                    }
                    if check.finalize() != part.crc.clone().finalize() {
                        return Err(ImageError::InputChanged {
                            part: source.describe(&part.role),
                        });
                    }
                }
            }
        }
        out.flush().map_err(write_error())?;
        Ok(Built {
            measurements: Measurements {
                pcr0,
                pcr1,
                pcr2,
                pcr8: signature
                    .as_ref()
                    .map(|s| attest::PcrValue::measure(s.certificate.as_ref())),
            },
            crc32: header.crc32,
            len: offset,
            signature,
        })
    }
}

/// Measure a kernel or ramdisk, recording its size and CRC.
fn plan_part<'p>(
    planned: &mut Vec<Planned<'p>>,
    measurer: &mut Measurer,
    buffer: &mut Vec<u8>,
    (kind, role, part): (SectionKind, &str, &'p Part),
    boot: bool,
) -> Result<u64, ImageError> {
    let mut crc = crc32fast::Hasher::new();
    let mut body = crc32fast::Hasher::new();
    let size = stream_part(part, role, None, buffer, |chunk| {
        body.update(&chunk);
        if boot {
            measurer.boot(&chunk);
            chunk
        } else {
            measurer.app(chunk)
        }
    })?;
    crc.update(&encode_section_header(kind, size));
    crc.combine(&body);
    planned.push(Planned {
        kind,
        role: role.to_owned(),
        source: Source::Part(part),
        size,
        crc,
    });
    Ok(size)
}

fn planned_bytes(kind: SectionKind, role: &str, bytes: Vec<u8>) -> Planned<'static> {
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&encode_section_header(kind, size));
    crc.update(&bytes);
    Planned {
        kind,
        role: role.to_owned(),
        source: Source::Bytes(bytes),
        size,
        crc,
    }
}

/// Open a part once and stream it: its current length, or exactly `expected` bytes when given
/// (the writing pass), checking afterwards that it has no more. Returns the length streamed.
fn stream_part(
    part: &Part,
    role: &str,
    expected: Option<u64>,
    buffer: &mut Vec<u8>,
    each: impl FnMut(Vec<u8>) -> Vec<u8>,
) -> Result<u64, ImageError> {
    let (mut input, len) = part.open(role)?;
    let changed = || ImageError::InputChanged {
        part: part.describe(role),
    };
    let size = expected.unwrap_or(len);
    if size != len {
        return Err(changed());
    }
    stream(&mut input, size, buffer, each).map_err(|e| match e {
        ImageError::Length { .. } => changed(),
        other => other,
    })?;
    let mut probe = [0u8; 1];
    match input.read(&mut probe) {
        Ok(0) => Ok(size),
        Ok(_) => Err(changed()),
        Err(source) => Err(ImageError::Io {
            context: format!("reading {}", part.describe(role)),
            source,
        }),
    }
}
