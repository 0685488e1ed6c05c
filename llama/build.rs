//! Links llama.cpp's static libraries, built once per machine by `scripts/llama-cpp` into a
//! cache outside the checkout, and compiles the C shim against the same headers.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let script = manifest.join("../scripts/llama-cpp");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=patches");
    println!("cargo:rerun-if-env-changed=LLAMA_CPP_CACHE");
    let output = Command::new("bash").arg(&script).output();
    let install = match output {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => fail(&format!(
            "scripts/llama-cpp failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => fail(&format!("cannot run scripts/llama-cpp with bash: {e}")),
    };
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .include(install.join("include"))
        .flag("-std=c++17")
        .warnings(true)
        .extra_warnings(true)
        .compile("llama_shim");
    // llama.cpp's tokenizer suite, for tests/vocab.rs.
    println!(
        "cargo:rustc-env=LLAMA_CPP_VOCAB_SUITE={}",
        install.join("vocab").display()
    );
    let lib = install.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    // ggml's CPU backend three times (AVX2 and two AVX-512 builds), each archive's symbols
    // renamed apart; the shim's ggml_backend_cpu_reg calls the one chosen at start-up.
    for name in [
        "llama",
        "ggml",
        "ggml-cpu-haswell",
        "ggml-cpu-skylakex",
        "ggml-cpu-icelake",
        "ggml-base",
    ] {
        println!("cargo:rustc-link-lib=static={name}");
    }
    // llama.cpp is C++: its runtime, static too where the whole binary is (crt-static).
    println!("cargo:rustc-link-lib=stdc++");
    println!("cargo:rustc-link-lib=m");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
