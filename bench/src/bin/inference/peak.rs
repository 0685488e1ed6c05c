//! Peak memory: each model loaded the way the enclave loads it, in a fresh process (this
//! binary again, with `--peak FILE`), its peak resident memory beside the GGUF's size plus the
//! KV cache of the one request it answers.

use inference::engine::{Engine, Message, Role, SamplingParams, Settings};

use crate::{PROMPT, bench_threads, chosen, chosen_types, model_file, other_models};

/// Each chosen model's peak, measured in a fresh process, as a table.
pub(crate) fn report(threads: usize) {
    println!();
    println!(
        "peak memory: a fresh process streams the GGUF into the engine's memory file, loads it \
         and answers one request of 64 tokens; VmHWM plus the memory file's pages it does not \
         count (the header llama.cpp unmaps), against the GGUF's size plus that request's KV \
         cache (F16, its context rounded up to 256 positions)"
    );
    let mut files: Vec<(String, std::path::PathBuf, Option<std::path::PathBuf>)> = chosen_types()
        .into_iter()
        .map(|kind| (kind.as_str().to_owned(), model_file(kind), None))
        .collect();
    for (name, path, template) in other_models() {
        if path.exists() && chosen(name) {
            files.push((name.into(), path, template));
        }
    }
    for (label, path, template) in files {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .arg("--peak")
            .arg(&path)
            .env("BENCH_THREADS", threads.to_string());
        if let Some(template) = template {
            command.env("BENCH_TEMPLATE", template);
        }
        let out = command.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--peak {}: {e}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mib = |key: &str| report[key].as_f64().unwrap() / (1u64 << 20) as f64;
        let budget = mib("gguf_bytes") + mib("kv_bytes");
        println!(
            "  {:<8} GGUF {:>6.1} MiB + KV {:>5.1} MiB = {:>6.1} MiB; peak {:>6.1} MiB (before \
             loading {:>5.1}); peak / (GGUF + KV) = {:.2}, (peak - before) / (GGUF + KV) = {:.2}",
            label,
            mib("gguf_bytes"),
            mib("kv_bytes"),
            budget,
            mib("peak_bytes"),
            mib("baseline_bytes"),
            mib("peak_bytes") / budget,
            (mib("peak_bytes") - mib("baseline_bytes")) / budget
        );
    }
}

/// `--peak FILE`: what the enclave does with a decrypted model, in a fresh process; prints its
/// peak resident memory as JSON.
pub(crate) fn measure(path: &std::path::Path) {
    let status = |key: &str| -> u64 {
        let text = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    };
    let baseline = status("VmHWM:");
    let mut file = inference::ModelFile::new("model.gguf").unwrap();
    let mut input = std::fs::File::open(path).unwrap();
    let gguf_bytes = std::io::copy(&mut input, &mut file).unwrap();
    let (engine, report) = Engine::load_file(
        file,
        Settings {
            threads: bench_threads(),
            repack: false,
            chat_template: std::env::var_os("BENCH_TEMPLATE")
                .map(|path| std::fs::read_to_string(path).unwrap()),
            ..Settings::default()
        },
    )
    .unwrap();
    let messages = vec![Message {
        role: Role::User,
        content: PROMPT.into(),
    }];
    let params = SamplingParams {
        max_tokens: 64,
        temperature: 0.0,
        top_p: 1.0,
        seed: 1,
        stop: Vec::new(),
    };
    let prompt = engine.check(&messages, &params).unwrap();
    // The request's context: its prompt and completion, rounded up to 256 positions.
    let positions = (prompt + params.max_tokens).div_ceil(256) as u64 * 256;
    engine.generate(&messages, &params, |_| true).unwrap();
    // The memory file's pages are memory whether mapped or not, but VmHWM counts only the
    // mapped ones: llama.cpp unmaps the GGUF's header (its metadata) once read. Those pages
    // are added to the peak.
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_model = false;
    let mut mapped = 0u64;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Rss:") {
            if in_model {
                let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().unwrap();
                mapped = mapped.max(kib * 1024);
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            in_model = line.contains("memfd:model.gguf");
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "gguf_bytes": gguf_bytes,
            "kv_bytes": report.kv_bytes_per_position * positions,
            "baseline_bytes": baseline,
            "peak_bytes": status("VmHWM:") + gguf_bytes.saturating_sub(mapped),
            "unmapped_file_bytes": gguf_bytes.saturating_sub(mapped),
        })
    );
}
