//! `attest measure` on a 1 GiB image against `sha384sum` of the same file, in one run.
//!
//! The image (16 MiB kernel, 16 MiB boot ramdisk, the rest one application ramdisk) is built in
//! a temporary directory with `attest::image`, read once to bring it into the page cache, then
//! measured alternately by `sha384sum`, by the `attest` binary (if built: `cargo build --release
//! -p attest-cli`) and by the library in this process. Measuring computes PCR0, PCR1 and PCR2
//! (every application byte is hashed twice: PCR0 and PCR2) and the CRC-32, and checks every
//! structural rule; `sha384sum` hashes each byte once.
//!
//! Run: `cargo run --release --manifest-path bench/Cargo.toml --bin measure [-- SIZE_MIB]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use eif::{ImageBuilder, Part};

const RUNS: usize = 5;

fn fill(path: &Path, len: usize, seed: u64) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = vec![0u8; len];
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = state.to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    std::fs::write(path, bytes).unwrap();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e9
}

fn main() {
    let size_mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SIZE_MIB"))
        .unwrap_or(1024);
    let dir = std::env::temp_dir().join(format!("attest-measure-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mib = 1024 * 1024;
    fill(&dir.join("kernel"), 16 * mib, 1);
    fill(&dir.join("boot"), 16 * mib, 2);
    fill(&dir.join("app"), (size_mib - 32) * mib, 3);
    let eif = dir.join("image.eif");
    let mut out = std::fs::File::create(&eif).unwrap();
    let started = Instant::now();
    let built = ImageBuilder::new(Part::file(dir.join("kernel")), "console=ttyS0")
        .ramdisk(Part::file(dir.join("boot")))
        .ramdisk(Part::file(dir.join("app")))
        .write(&mut out)
        .unwrap();
    drop(out);
    let build_time = started.elapsed();
    for part in ["kernel", "boot", "app"] {
        std::fs::remove_file(dir.join(part)).unwrap();
    }
    let len = std::fs::metadata(&eif).unwrap().len();
    println!(
        "image: {} bytes ({:.2} GiB); built in {:.2} s ({:.2} GB/s, two passes over the parts)",
        len,
        len as f64 / (1u64 << 30) as f64,
        build_time.as_secs_f64(),
        gbps(len, build_time)
    );

    let sha384sum = |path: &Path| {
        let started = Instant::now();
        let out = Command::new("sha384sum")
            .arg(path)
            .output()
            .expect("sha384sum");
        assert!(out.status.success());
        started.elapsed()
    };
    let binary: Option<PathBuf> = [
        std::env::var_os("ATTEST_BIN").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/attest")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.exists());
    // Warm the page cache so that both read from memory.
    sha384sum(&eif);

    let (mut ours, mut theirs, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        theirs.push(sha384sum(&eif));
        let started = Instant::now();
        let image = eif::read_file(&eif).unwrap();
        ours.push(started.elapsed());
        assert_eq!(image.measurements, built.measurements);
        if let Some(binary) = &binary {
            let started = Instant::now();
            let out = Command::new(binary)
                .args(["measure", "--json"])
                .arg(&eif)
                .output()
                .unwrap();
            cli.push(started.elapsed());
            assert!(out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&built.measurements.pcr0.to_hex())
            );
        }
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("median of {RUNS} runs, page cache warm:");
    println!(
        "  sha384sum              {:.3} s  {:.3} GB/s",
        theirs.as_secs_f64(),
        gbps(len, theirs)
    );
    if !cli.is_empty() {
        let cli = median(cli);
        println!(
            "  attest measure (CLI)   {:.3} s  {:.3} GB/s  {:.0}% of sha384sum",
            cli.as_secs_f64(),
            gbps(len, cli),
            100.0 * theirs.as_secs_f64() / cli.as_secs_f64()
        );
    } else {
        println!("  attest measure (CLI)   not run: cargo build --release -p attest-cli");
    }
    println!(
        "  eif::read    {:.3} s  {:.3} GB/s  {:.0}% of sha384sum",
        ours.as_secs_f64(),
        gbps(len, ours),
        100.0 * theirs.as_secs_f64() / ours.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
