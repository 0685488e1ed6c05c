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
