//! `attest measure`, `attest image build`, `attest image ramdisk`: enclave images and their
//! measurements, for image builders and for the policies that pin them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attest::{PcrIndex, Timestamp};
use aws_lc_rs::digest;
use data_encoding::HEXLOWER;
use eif::{
    Arch, FileSigner, Image, ImageBuilder, ImageError, Measurements, Metadata, Part, PcrSigner,
    RamdiskOptions,
};
use serde_json::json;

use crate::shared::{Verdict, read_small_file, write_atomically};
use crate::verify::print_json;

/// What `nitro-cli` prints for the hash algorithm (the `Debug` form of its SHA-384 hasher);
/// scripts written against `nitro-cli describe-eif` compare it.
const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// Measure an enclave image: PCR0, PCR1, PCR2 and, when signed, PCR8.
///
/// The image is read once, streaming: every rule of the EIF format is checked, then the CRC, then
/// the signature (which must verify under its certificate's key and cover the image's PCR0).
/// --json prints the shape of `nitro-cli describe-eif` ("Measurements" with "HashAlgorithm",
/// "PCR0", …), plus fields of our own.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    attest measure enclave.eif\n  \
    attest measure enclave.eif --json | jq -r .Measurements.PCR0\n\n\
    Exit codes: 0 measured, 1 the image is malformed or its CRC or signature is wrong, \
    2 usage or I/O error.")]
pub(crate) struct MeasureArgs {
    /// The image (EIF version 4).
    image: PathBuf,
    /// Print JSON (the `nitro-cli describe-eif` shape) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    Build(Box<BuildArgs>),
    Enclave(Box<crate::enclave_image::EnclaveArgs>),
    Ramdisk(RamdiskArgs),
}

/// Assemble an enclave image from a kernel, a command line and ramdisks, deterministically: the
/// same inputs give the same bytes and the same PCRs.
///
/// The first ramdisk is the boot ramdisk (PCR1, with the kernel and command line); the others are
/// the application (PCR2). Signing (--sign-key, or a PKCS#11 token) adds a signature over PCR0
/// and makes PCR8 the measurement of --sign-cert. The metadata section is not measured; its
/// BuildTime is $SOURCE_DATE_EPOCH, or the Unix epoch, unless --build-time is given.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    attest image ramdisk app/ --out app.cpio\n  \
    attest image build --kernel bzImage --cmdline 'reboot=k panic=30 pci=off nomodule console=ttyS0' \\\n    \
    --ramdisk init.cpio --ramdisk app.cpio --out enclave.eif\n  \
    attest image build ... --sign-key signing-key.pem --sign-cert signing-cert.pem --out enclave.eif\n  \
    ATTEST_PKCS11_PIN=... attest image build ... --sign-cert cert.pem \\\n    \
    --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pkcs11-token images --pkcs11-key eif-signing \
    --out enclave.eif\n\n\
    Exit codes: 0 built, 2 usage, input or I/O error (nothing is left at --out).")]
pub(crate) struct BuildArgs {
    /// The kernel (bzImage on x86-64, Image on arm64).
    #[arg(long)]
    kernel: PathBuf,
    /// The kernel command line.
    #[arg(long)]
    cmdline: String,
    /// A ramdisk (cpio); repeat, boot ramdisk first.
    #[arg(long = "ramdisk", required = true)]
    ramdisks: Vec<PathBuf>,
    /// Where to write the image (atomically).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    sign: SignArgs,
    #[command(flatten)]
    settings: ImageSettings,
    /// Print JSON (the `nitro-cli build-enclave` shape) instead of text.
    #[arg(long)]
    json: bool,
}

/// How an image is signed, if at all.
#[derive(Debug, clap::Args)]
pub(crate) struct SignArgs {
    /// Sign with this ECDSA private key (PEM: PKCS#8 or SEC1, P-256/P-384/P-521).
    #[arg(long, requires = "sign_cert", conflicts_with = "pkcs11_module")]
    sign_key: Option<PathBuf>,
    /// The signing key's certificate (PEM or DER); PCR8 measures it.
    #[arg(long)]
    sign_cert: Option<PathBuf>,
    /// Sign with a key in a PKCS#11 token: the module (shared library). The PIN is read from
    /// $ATTEST_PKCS11_PIN.
    #[arg(long, requires_all = ["sign_cert", "pkcs11_token", "pkcs11_key"])]
    pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "pkcs11_module")]
    pkcs11_token: Option<String>,
    /// The private key's label (CKA_LABEL).
    #[arg(long, requires = "pkcs11_module")]
    pkcs11_key: Option<String>,
}

/// What the header and metadata record.
#[derive(Debug, clap::Args)]
pub(crate) struct ImageSettings {
    /// The architecture recorded in the header.
    #[arg(long, value_enum, default_value_t = ArchArg::X86_64)]
    arch: ArchArg,
    /// Default enclave memory recorded in the header, MiB.
    #[arg(long, default_value_t = eif::DEFAULT_MEMORY_MIB)]
    memory: u64,
    /// Default CPU count recorded in the header.
    #[arg(long, default_value_t = eif::DEFAULT_CPUS)]
    cpus: u64,
    /// ImageName in the metadata.
    #[arg(long, default_value = "enclave")]
    name: String,
    /// ImageVersion in the metadata.
    #[arg(long, default_value = "1.0")]
    image_version: String,
    /// BuildTime in the metadata (RFC 3339).
    #[arg(long)]
    build_time: Option<String>,
}

impl ImageSettings {
    /// The architecture the image is for.
    pub(crate) fn arch(&self) -> Arch {
        match self.arch {
            ArchArg::X86_64 => Arch::X86_64,
            ArchArg::Aarch64 => Arch::Aarch64,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

/// Write a reproducible ramdisk: an uncompressed newc cpio archive of a directory's contents.
///
/// Only the contents and the files' execute bits decide the bytes: entries are sorted by path,
/// owned by 0:0, dated --mtime (default 0), directories 0755, files 0755 or 0644, symbolic links
/// stored as links. Devices, FIFOs and sockets are refused.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    mkdir -p app/etc && cp target/release/enclave app/ && cp enclave.toml national-root.pem app/etc/\n  \
    attest image ramdisk app --out app.cpio\n\n\
    Exit codes: 0 written, 2 usage or I/O error (nothing is left at --out).")]
pub(crate) struct RamdiskArgs {
    /// The directory whose contents become the ramdisk's root.
    dir: PathBuf,
    /// Where to write the archive (atomically).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// The mtime of every entry, seconds since the Unix epoch.
    #[arg(long, default_value_t = 0)]
    mtime: u32,
}

pub(crate) fn run(command: Command) -> anyhow::Result<Verdict> {
    match command {
        Command::Build(args) => build(*args),
        Command::Enclave(args) => crate::enclave_image::run(*args),
        Command::Ramdisk(args) => ramdisk(args),
    }
}

/// Read an image for a command: a refusal is a verdict, an I/O failure an error.
pub(crate) fn read_image(path: &Path) -> anyhow::Result<Result<Image, ImageError>> {
    match eif::read_file(path) {
        Err(ImageError::Io { context, source }) => Err(anyhow::Error::new(source).context(context)),
        other => Ok(other),
    }
}

pub(crate) fn measure(args: MeasureArgs) -> anyhow::Result<Verdict> {
    match read_image(&args.image)? {
        Ok(image) => {
            if args.json {
                print_json(&describe(&image))?;
            } else {
                print_image(&args.image, &image);
            }
            Ok(Verdict::Accepted)
        }
        Err(error) => refuse(&args.image, &error, args.json),
    }
}

pub(crate) fn refuse(path: &Path, error: &ImageError, json: bool) -> anyhow::Result<Verdict> {
    if json {
        print_json(&json!({
            "error": { "kind": error.kind(), "message": error.to_string() },
        }))?;
    } else {
        println!("REFUSED {}: {error}", path.display());
    }
    Ok(Verdict::Refused)
}

fn measurements_json(m: &Measurements) -> serde_json::Value {
    let mut out = json!({
        "HashAlgorithm": HASH_ALGORITHM,
        "PCR0": m.pcr0.to_hex(),
        "PCR1": m.pcr1.to_hex(),
        "PCR2": m.pcr2.to_hex(),
    });
    if let (Some(pcr8), Some(map)) = (m.pcr8, out.as_object_mut()) {
        map.insert("PCR8".into(), pcr8.to_hex().into());
    }
    out
}

fn describe(image: &Image) -> serde_json::Value {
    let mut out = json!({
        "EifVersion": eif::EIF_VERSION,
        "Measurements": measurements_json(&image.measurements),
        "IsSigned": image.signature.is_some(),
        "CheckCRC": true,
        "Arch": image.arch.to_string(),
        "DefaultMemoryMiB": image.default_memory / (1024 * 1024),
        "DefaultCpus": image.default_cpus,
        "Cmdline": String::from_utf8_lossy(&image.cmdline),
        "Crc32": format!("{:08x}", image.crc32),
        "Length": image.len,
        "Sections": image.sections.iter().map(|s| json!({
            "Type": s.kind.to_string(), "Offset": s.offset, "Size": s.size,
        })).collect::<Vec<_>>(),
    });
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    if let Some(signature) = &image.signature {
        map.insert("SignatureCheck".into(), true.into());
        map.insert(
            "SigningCertificate".into(),
            json!({
                "Subject": signature.subject,
                "Issuer": signature.issuer,
                "Algorithm": signature.algorithm.name(),
                "NotBefore": signature.not_before.to_string(),
                "NotAfter": signature.not_after.to_string(),
                "Sha256": HEXLOWER.encode(
                    digest::digest(&digest::SHA256, signature.certificate.as_ref()).as_ref()
                ),
            }),
        );
    }
    let metadata = image
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok());
    if let Some(metadata) = metadata {
        for key in ["ImageName", "ImageVersion"] {
            if let Some(value) = metadata.get(key) {
                map.insert(key.into(), value.clone());
            }
        }
        map.insert("Metadata".into(), metadata);
    }
    out
}

fn print_measurements(m: &Measurements) {
    for (index, value) in m.pcrs() {
        println!("  {:<5} {value}", format!("{index}"));
    }
}

fn print_image(path: &Path, image: &Image) {
    println!(
        "{}: EIF v4, {}, {} bytes, CRC {:08x} ok",
        path.display(),
        image.arch,
        image.len,
        image.crc32
    );
    print_measurements(&image.measurements);
    match &image.signature {
        Some(signature) => println!(
            "  signed ({}) by {}, certificate valid {} to {}",
            signature.algorithm.name(),
            signature.subject,
            signature.not_before,
            signature.not_after
        ),
        None => println!("  unsigned"),
    }
}

fn build_time(arg: Option<&str>) -> anyhow::Result<Timestamp> {
    if let Some(text) = arg {
        return Timestamp::parse_rfc3339(text).context("--build-time");
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => {
            let secs: u64 = text
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a number of seconds")?;
            Ok(Timestamp::from_unix_secs(secs))
        }
        Err(_) => Ok(Timestamp::from_unix_secs(0)),
    }
}

fn signer(args: &SignArgs) -> anyhow::Result<Option<Box<dyn PcrSigner>>> {
    let Some(cert_path) = &args.sign_cert else {
        return Ok(None);
    };
    let certificate = read_small_file(cert_path, "signing certificate")?;
    if let Some(key_path) = &args.sign_key {
        let key = zeroize::Zeroizing::new(read_small_file(key_path, "signing key")?);
        let signer = FileSigner::from_pem(&key, &certificate)
            .with_context(|| format!("{} and {}", key_path.display(), cert_path.display()))?;
        return Ok(Some(Box::new(signer)));
    }
    if let (Some(module), Some(token), Some(key)) =
        (&args.pkcs11_module, &args.pkcs11_token, &args.pkcs11_key)
    {
        let pin = std::env::var("ATTEST_PKCS11_PIN")
            .context("set the token's user PIN in $ATTEST_PKCS11_PIN")?;
        let signer = crate::pkcs11::TokenSigner::open(module, token, key, &pin, &certificate)?;
        return Ok(Some(Box::new(signer)));
    }
    bail!(
        "--sign-cert needs a key: --sign-key, or --pkcs11-module with --pkcs11-token and --pkcs11-key"
    )
}

fn build(args: BuildArgs) -> anyhow::Result<Verdict> {
    let mut builder = ImageBuilder::new(Part::file(&args.kernel), args.cmdline.clone());
    for ramdisk in &args.ramdisks {
        builder = builder.ramdisk(Part::file(ramdisk));
    }
    write_image(
        builder,
        &args.sign,
        &args.settings,
        &args.out,
        args.force,
        args.json,
    )
}

/// Sign (if asked), write atomically and print the measurements: the end of every image build.
pub(crate) fn write_image(
    builder: ImageBuilder<'_>,
    sign: &SignArgs,
    settings: &ImageSettings,
    out: &Path,
    force: bool,
    json: bool,
) -> anyhow::Result<Verdict> {
    let signer = signer(sign)?;
    let metadata = Metadata {
        name: settings.name.clone(),
        version: settings.image_version.clone(),
        build_time: build_time(settings.build_time.as_deref())?,
        ..Metadata::default()
    };
    let mut builder = builder
        .metadata(metadata)
        .arch(settings.arch())
        .resources(settings.memory, settings.cpus);
    if let Some(signer) = signer.as_deref() {
        builder = builder.sign_with(signer);
    }
    let built = write_atomically(out, false, force, |file| Ok(builder.write(file)?))?;
    if json {
        print_json(&json!({
            "Path": out.display().to_string(),
            "Measurements": measurements_json(&built.measurements),
        }))?;
    } else {
        println!(
            "wrote {} ({} bytes, {}):",
            out.display(),
            built.len,
            if built.signature.is_some() {
                "signed"
            } else {
                "unsigned"
            }
        );
        print_measurements(&built.measurements);
    }
    Ok(Verdict::Accepted)
}

fn ramdisk(args: RamdiskArgs) -> anyhow::Result<Verdict> {
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let options = RamdiskOptions { mtime: args.mtime };
    let summary = write_atomically(&args.out, false, args.force, |out| {
        let mut hashing = HashingWriter {
            inner: out,
            context: digest::Context::new(&digest::SHA384),
        };
        let summary = eif::write_ramdisk(&args.dir, &options, &mut hashing)?;
        Ok((summary, hashing.context.finish()))
    })?;
    println!(
        "wrote {}: {} entries, {} bytes, sha384 {}",
        args.out.display(),
        summary.0.entries,
        summary.0.len,
        HEXLOWER.encode(summary.1.as_ref())
    );
    Ok(Verdict::Accepted)
}

struct HashingWriter<'w, W: std::io::Write> {
    inner: &'w mut W,
    context: digest::Context,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.context.update(buf.get(..written).unwrap_or_default());
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `attest policy from-image`: the policy fragment that pins an image.
pub(crate) fn policy_fragment(path: &Path, pcrs: &[u8], json: bool) -> anyhow::Result<Verdict> {
    let image = match read_image(path)? {
        Ok(image) => image,
        Err(error) => return refuse(path, &error, json),
    };
    let all = image.measurements.pcrs();
    let mut pinned = Vec::new();
    for index in pcrs {
        let index = PcrIndex::new(*index).context("PCR index out of range")?;
        match all.get(&index) {
            Some(value) => pinned.push((index, *value)),
            None => bail!(
                "{} has no {index} (PCR8 exists only for signed images)",
                path.display()
            ),
        }
    }
    if pinned.is_empty() {
        pinned = all.into_iter().collect();
    }
    if json {
        let set: serde_json::Map<_, _> = pinned
            .iter()
            .map(|(index, value)| (format!("pcr{}", index.get()), value.to_hex().into()))
            .collect();
        print_json(&json!({ "measurements": [set] }))?;
    } else {
        println!(
            "# {} ({}), measured by attest {}.",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            if image.signature.is_some() {
                "signed"
            } else {
                "unsigned"
            },
            env!("CARGO_PKG_VERSION"),
        );
        println!("# A document must match every PCR of at least one [[measurements]] set.");
        println!("[[measurements]]");
        for (index, value) in pinned {
            println!("pcr{} = \"{value}\"", index.get());
        }
    }
    Ok(Verdict::Accepted)
}
