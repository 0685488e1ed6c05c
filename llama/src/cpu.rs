//! Which build of ggml's CPU backend runs.
//!
//! `scripts/llama-cpp` builds llama.cpp's CPU kernels three times, as stock llama.cpp's variants
//! of the same names, and links them side by side (each archive's symbols renamed apart):
//! [`Cpu::Haswell`] for AVX2, the instruction set of every CPU Nitro enclaves run on, and two
//! AVX-512 builds. One runs per process, chosen before the first model is loaded: haswell
//! unless [`use_cpu`] asked for another ([`Cpu::best`] names the most capable this CPU runs),
//! and it stays for the life of the process. The AVX-512 builds are asked for by name because
//! the project's own measurements and parity results come from the haswell build.
//!
//! The variants compute the same model with other instructions, so their floating-point sums
//! round differently: a greedy answer can differ between them where two tokens are nearly tied.
//! A fleet that must give the same answer on every machine pins one with [`use_cpu`].

use std::sync::OnceLock;

use crate::Error;

/// A build of ggml's CPU backend, named as llama.cpp names its variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Cpu {
    /// AVX2, FMA, F16C and BMI2: Intel Haswell and later, AMD Zen and later.
    Haswell,
    /// Haswell's and AVX-512 F, CD, VL, DQ and BW: Intel Skylake-SP and Cascade Lake.
    SkylakeX,
    /// Skylake-X's and AVX-512 VBMI and VNNI: Intel Ice Lake and later, AMD Zen 4 and later.
    IceLake,
}

impl Cpu {
    /// Every build, from the least demanding.
    pub const ALL: [Cpu; 3] = [Cpu::Haswell, Cpu::SkylakeX, Cpu::IceLake];

    /// The build's name: `haswell`, `skylakex` or `icelake`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cpu::Haswell => "haswell",
            Cpu::SkylakeX => "skylakex",
            Cpu::IceLake => "icelake",
        }
    }

    /// The build named `name` (as [`Cpu::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Cpu> {
        Cpu::ALL.into_iter().find(|cpu| cpu.as_str() == name)
    }

    /// The instruction-set extensions the build needs, as `is_x86_feature_detected!` names
    /// them.
    pub fn features(self) -> &'static [&'static str] {
        const HASWELL: &[&str] = &["sse4.2", "avx", "avx2", "fma", "f16c", "bmi2"];
        const SKYLAKEX: &[&str] = &[
            "sse4.2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl",
            "avx512dq", "avx512bw",
        ];
        const ICELAKE: &[&str] = &[
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "bmi2",
            "avx512f",
            "avx512cd",
            "avx512vl",
            "avx512dq",
            "avx512bw",
            "avx512vbmi",
            "avx512vnni",
        ];
        match self {
            Cpu::Haswell => HASWELL,
            Cpu::SkylakeX => SKYLAKEX,
            Cpu::IceLake => ICELAKE,
        }
    }

    /// The extensions the build needs that this CPU (and its operating system) lacks; none
    /// when it can run here.
    pub fn missing(self) -> Vec<&'static str> {
        self.features()
            .iter()
            .copied()
            .filter(|feature| detected(feature) != Some(true))
            .collect()
    }

    /// Whether this CPU runs the build.
    pub fn runs_here(self) -> bool {
        self.missing().is_empty()
    }

    /// The most capable build this CPU runs, if any.
    pub fn best() -> Option<Cpu> {
        Cpu::ALL.into_iter().rev().find(|cpu| cpu.runs_here())
    }

    /// The index the C shim knows the build by.
    pub(crate) fn index(self) -> i32 {
        match self {
            Cpu::Haswell => 0,
            Cpu::SkylakeX => 1,
            Cpu::IceLake => 2,
        }
    }
}

impl core::fmt::Display for Cpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether this CPU has `feature`; None for a name this function does not know.
#[cfg(target_arch = "x86_64")]
fn detected(feature: &str) -> Option<bool> {
    Some(match feature {
        "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
        "avx" => std::arch::is_x86_feature_detected!("avx"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512cd" => std::arch::is_x86_feature_detected!("avx512cd"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        _ => return None,
    })
}

/// No build runs on other architectures.
#[cfg(not(target_arch = "x86_64"))]
fn detected(_feature: &str) -> Option<bool> {
    Some(false)
}

/// The build chosen for this process.
static CHOSEN: OnceLock<Result<Cpu, String>> = OnceLock::new();

/// Run `cpu`'s build in this process: before the first model is loaded (or again with the
/// same build). Refused when this CPU lacks what it needs, or when another build was already
/// chosen (explicitly, or by loading a model first).
pub fn use_cpu(cpu: Cpu) -> Result<(), Error> {
    let missing = cpu.missing();
    if !missing.is_empty() {
        return Err(Error::Cpu(format!(
            "the {cpu} build needs {}, which this CPU lacks",
            missing.join(", ")
        )));
    }
    match CHOSEN.get_or_init(|| Ok(cpu)) {
        Ok(chosen) if *chosen == cpu => Ok(()),
        Ok(chosen) => Err(Error::Cpu(format!(
            "the {chosen} build already runs in this process; {cpu} cannot replace it"
        ))),
        Err(message) => Err(Error::Cpu(message.clone())),
    }
}

/// The build this process runs: the one [`use_cpu`] chose, else haswell (chosen now, for good).
/// An error when the CPU cannot run it (it lacks AVX2 or one of its companions).
pub fn cpu() -> Result<Cpu, Error> {
    CHOSEN
        .get_or_init(|| {
            let missing = Cpu::Haswell.missing();
            if missing.is_empty() {
                Ok(Cpu::Haswell)
            } else {
                Err(format!(
                    "this CPU lacks {}, which every build of the engine needs",
                    missing.join(", ")
                ))
            }
        })
        .clone()
        .map_err(Error::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_builds_need_more_as_they_go() {
        for cpu in Cpu::ALL {
            assert_eq!(Cpu::from_name(cpu.as_str()), Some(cpu));
            assert_eq!(cpu.to_string(), cpu.as_str());
            for feature in cpu.features() {
                // Every name is one the detection knows (a typo would read as "lacking").
                assert!(
                    detected(feature).is_some(),
                    "{feature} of {cpu} is not detected"
                );
            }
        }
        assert_eq!(detected("avx512"), None);
        assert_eq!(Cpu::from_name("zen4"), None);
        assert_eq!(Cpu::from_name("Haswell"), None);
        for pair in Cpu::ALL.windows(2) {
            let [lower, higher] = pair else { continue };
            for feature in lower.features() {
                assert!(
                    higher.features().contains(feature),
                    "{higher} lacks {feature}"
                );
            }
            assert!(higher.features().len() > lower.features().len());
        }
    }

    #[test]
    fn the_best_build_is_one_this_cpu_runs_and_none_better_runs() {
        let best = Cpu::best();
        if let Some(best) = best {
            assert!(best.runs_here());
            assert!(
                Cpu::ALL
                    .iter()
                    .filter(|c| **c > best)
                    .all(|c| !c.runs_here())
            );
        }
        // A build is refused exactly when something it needs is missing.
        for cpu in Cpu::ALL {
            assert_eq!(cpu.runs_here(), cpu.missing().is_empty());
        }
    }
}
