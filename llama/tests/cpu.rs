//! One build of the CPU kernels per process: the first choice stays, another is refused, and a
//! build this CPU cannot run is refused naming what it lacks. (Its own test binary: the choice
//! is the process's.)

use llama::{Cpu, cpu, use_cpu};

#[test]
fn the_first_choice_stays_and_no_other_replaces_it() {
    use_cpu(Cpu::Haswell).unwrap();
    // Again, the same: fine.
    use_cpu(Cpu::Haswell).unwrap();
    assert_eq!(cpu().unwrap(), Cpu::Haswell);
    for other in [Cpu::SkylakeX, Cpu::IceLake] {
        let err = use_cpu(other).unwrap_err().to_string();
        if other.runs_here() {
            assert!(err.contains("haswell build already runs"), "{err}");
        } else {
            let missing = other.missing();
            assert!(!missing.is_empty());
            for feature in missing {
                assert!(err.contains(feature), "{err}");
            }
            assert!(err.contains("which this CPU lacks"), "{err}");
        }
    }
    assert_eq!(cpu().unwrap(), Cpu::Haswell, "the refusals changed nothing");
}

/// Every build's code is whole in the linked binary: no reference to a renamed symbol of a
/// build (`sv_<build>_...`) is left unresolved, as one is when the linker keeps another build's
/// copy of a COMDAT group and drops this one's (the call then jumps to address 0).
#[test]
fn no_reference_to_a_build_s_symbol_is_left_unresolved() {
    // A call into llama.cpp (failing: the file does not exist) links the shim, whose
    // ggml_backend_cpu_reg references all three builds.
    let missing = std::env::temp_dir().join("no-such-model-for-the-cpu-test.gguf");
    assert!(
        llama::quantize(
            &missing,
            &missing.with_extension("out"),
            llama::FileType::Q8_0,
            1
        )
        .is_err()
    );
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("nm")
        .arg("-u")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("nm (binutils) is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let undefined = String::from_utf8_lossy(&out.stdout);
    let unresolved: Vec<&str> = undefined.lines().filter(|l| l.contains(" sv_")).collect();
    assert!(unresolved.is_empty(), "unresolved: {unresolved:?}");
    // And the three builds are there at all.
    let out = std::process::Command::new("nm")
        .args(["--defined-only"])
        .arg(&exe)
        .output()
        .unwrap();
    let defined = String::from_utf8_lossy(&out.stdout);
    for cpu in Cpu::ALL {
        let reg = format!(" sv_{cpu}_ggml_backend_cpu_reg");
        assert!(
            defined.lines().any(|l| l.ends_with(&reg)),
            "{reg} is not linked"
        );
    }
}
