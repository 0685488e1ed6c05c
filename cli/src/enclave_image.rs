//! `attest image enclave`: the `enclave` binary and its configuration, as an image that
//! `nitro-cli run-enclave` boots, laid out as `nitro-cli build-enclave` lays it out, without
//! Docker.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use eif::{Application, ImageBuilder, Part, RamdiskOptions, RamdiskTree};

use crate::image::{ImageSettings, SignArgs, write_image};
use crate::shared::Verdict;

/// Where the runtime lives inside the image's root file system.
const ENCLAVE_PATH: &str = "/bin/enclave";
/// Where its configuration (and the files it names) live.
const CONFIG_DIR: &str = "/etc/enclave";
/// Where `nitro-cli` installs its blobs.
const NITRO_CLI_BLOBS: &str = "/usr/share/nitro_enclaves/blobs";

/// Build the enclave image of our runtime: the static `enclave` binary and its configuration,
/// with a kernel and an init, as an EIF that `nitro-cli run-enclave` boots.
///
/// The application ramdisk (PCR2) is laid out as `nitro-cli build-enclave` lays it out: `cmd`
/// (`/bin/enclave run --config /etc/enclave/<config>`), `env`, and `rootfs/` holding the binary
/// at /bin/enclave and the configuration, with every --include file beside it, in /etc/enclave.
/// The boot ramdisk (PCR1, with the kernel and command line) holds the init:
///
///   --boot aws   AWS's init from the blobs that nitro-cli installs (--blobs);
///   --boot ours  the workspace's enclave-init (--init), static and auditable; it keeps AWS's
///                contract (cmd, env, rootfs/, the heartbeat), so the application ramdisk and
///                PCR2 are the same for both chains.
///
/// With either, <blobs>/nsm.ko goes in the boot ramdisk when it exists (a kernel that builds the
/// NSM driver as a module), and both inits load it. Modes are fixed: the runtime and init 0755,
/// everything else 0644, whatever their modes on this machine.
///
/// The kernel and its command line come from --blobs (bzImage and cmdline) unless --kernel and
/// --cmdline are given. The binary must be statically linked: the image holds no loader and no
/// libraries. The same inputs give the same bytes and PCRs on any machine (entries sorted, owners
/// 0:0, mtimes 0, BuildTime from --build-time, else $SOURCE_DATE_EPOCH, else 0).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    bash scripts/build-enclave        # static enclave and enclave-init, into target/enclave-static/production\n  \
    attest image enclave --boot aws --enclave target/enclave-static/production/enclave \\\n    \
    --config enclave.toml --include national-root.pem --out enclave.eif\n  \
    attest image enclave --boot ours --init target/enclave-static/production/enclave-init \\\n    \
    --blobs /path/to/kernel-dir --enclave ... --config enclave.toml --out enclave.eif\n  \
    attest policy from-image enclave.eif    # the policy fragment that pins it\n\n\
    Exit codes: 0 built, 2 usage, input or I/O error (nothing is left at --out).")]
pub(crate) struct EnclaveArgs {
    /// Which init boots the image.
    #[arg(long, value_enum)]
    boot: Boot,
    /// The statically linked `enclave` binary.
    #[arg(long)]
    enclave: PathBuf,
    /// The enclave's configuration (TOML); it is measured into PCR16 at boot.
    #[arg(long)]
    config: PathBuf,
    /// A file the configuration names (a root certificate, say), put beside it; repeat.
    #[arg(long = "include")]
    includes: Vec<PathBuf>,
    /// An environment variable for the runtime, NAME=VALUE; repeat. PATH=/bin is always set.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The directory of the kernel (bzImage), its command line (cmdline) and, for --boot aws,
    /// AWS's init and nsm.ko: as nitro-cli installs them.
    #[arg(long, default_value = NITRO_CLI_BLOBS)]
    blobs: PathBuf,
    /// The kernel, instead of <blobs>/bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The kernel command line, instead of <blobs>/cmdline.
    #[arg(long)]
    cmdline: Option<String>,
    /// For --boot ours: the static `enclave-init` binary.
    #[arg(long, required_if_eq("boot", "ours"))]
    init: Option<PathBuf>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Boot {
    /// AWS's init and nsm.ko, from the blobs nitro-cli installs.
    Aws,
    /// The workspace's enclave-init.
    Ours,
}

/// Refuse a program that needs a dynamic loader.
/// Refuse a program the image cannot run: not an ELF executable for the image's architecture,
/// or one that needs a dynamic loader.
fn require_static(path: &Path, what: &str, arch: eif::Arch) -> anyhow::Result<()> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .with_context(|| format!("reading {what} {}", path.display()))?;
    eif::check_static_executable(&head, arch).map_err(|e| {
        anyhow::anyhow!(
            "{what} {}: {e}; an enclave image has no loader or libraries: build it static \
             (bash scripts/build-enclave)",
            path.display()
        )
    })
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: no usable file name", path.display()))
}

fn ramdisk_bytes(tree: &RamdiskTree, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    tree.write(&RamdiskOptions::default(), &mut out)
        .with_context(|| format!("writing the {what}"))?;
    Ok(out)
}

pub(crate) fn run(args: EnclaveArgs) -> anyhow::Result<Verdict> {
    let arch = args.settings.arch();
    require_static(&args.enclave, "the enclave binary", arch)?;
    // The NSM driver goes with the kernel: when the blobs have one (a kernel that builds it as a
    // module), both inits load it.
    let nsm = Some(args.blobs.join("nsm.ko")).filter(|p| p.exists());
    let init = match args.boot {
        Boot::Aws => args.blobs.join("init"),
        Boot::Ours => {
            let init = args.init.clone().context("--boot ours needs --init")?;
            require_static(&init, "the init", arch)?;
            init
        }
    };
    let kernel = args
        .kernel
        .clone()
        .unwrap_or_else(|| args.blobs.join("bzImage"));
    let cmdline = match &args.cmdline {
        Some(cmdline) => cmdline.clone(),
        None => {
            let path = args.blobs.join("cmdline");
            let text = crate::shared::read_small_file(&path, "the kernel command line")
                .with_context(|| format!("{} (or give --cmdline)", path.display()))?;
            String::from_utf8(text)
                .with_context(|| format!("{} is not text", path.display()))?
                .trim_end()
                .to_owned()
        }
    };
    if !kernel.is_file() {
        bail!(
            "the kernel {} is not a file (give --blobs or --kernel)",
            kernel.display()
        );
    }
    let boot = eif::boot_ramdisk(&init, nsm.as_deref())
        .with_context(|| format!("the boot ramdisk (init {})", init.display()))?;

    let config_name = file_name(&args.config)?;
    let config_path = format!("{CONFIG_DIR}/{config_name}");
    let mut files = vec![
        (ENCLAVE_PATH.to_owned(), args.enclave.as_path()),
        (config_path.clone(), args.config.as_path()),
    ];
    for include in &args.includes {
        let name = file_name(include)?;
        if name == config_name {
            bail!(
                "--include {}: the configuration has that name",
                include.display()
            );
        }
        let inside = format!("{CONFIG_DIR}/{name}");
        if files.iter().any(|(path, _)| *path == inside) {
            bail!(
                "--include {}: another file has that name",
                include.display()
            );
        }
        files.push((inside, include.as_path()));
    }
    let mut env = vec![("PATH".to_owned(), "/bin".to_owned())];
    for var in &args.env {
        let (name, value) = var
            .split_once('=')
            .with_context(|| format!("--env {var}: expected NAME=VALUE"))?;
        if name == "PATH" {
            bail!("--env PATH: the image's PATH is /bin");
        }
        if env.iter().any(|(n, _)| n == name) {
            bail!("--env {name}: given twice");
        }
        env.push((name.to_owned(), value.to_owned()));
    }
    let app = Application {
        files,
        cmd: vec![
            ENCLAVE_PATH.to_owned(),
            "run".to_owned(),
            "--config".to_owned(),
            config_path,
        ],
        env,
    };
    let application = eif::application_ramdisk(&app).context("the application ramdisk")?;

    let builder = ImageBuilder::new(Part::file(kernel), cmdline)
        .ramdisk(Part::bytes(ramdisk_bytes(&boot, "boot ramdisk")?))
        .ramdisk(Part::bytes(ramdisk_bytes(
            &application,
            "application ramdisk",
        )?));
    write_image(
        builder,
        &args.sign,
        &args.settings,
        &args.out,
        args.force,
        args.json,
    )
}
