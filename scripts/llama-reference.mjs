// Records llama.cpp's greedy token ids for a set of prompts, through node-llama-cpp's prebuilt
// llama.cpp CPU libraries. Run it through scripts/llama-reference, which installs node-llama-cpp
// into a cache directory and passes the settings below as environment variables:
//
//   LLAMA_REF_NLC_DIR      directory holding node_modules/node-llama-cpp (required)
//   LLAMA_REF_MODEL        GGUF model path (required)
//   LLAMA_REF_PROMPTS      prompts JSON: [{"name", "text", "special"?: bool}, ...] (required)
//   LLAMA_REF_OUT          output JSON path (required)
//   LLAMA_REF_TOKENS       new tokens per prompt (required)
//   LLAMA_REF_THREADS      CPU threads (required)
//   LLAMA_REF_BATCH        llama_decode batch size (n_batch = n_ubatch); 0 = whole context
//   LLAMA_REF_FLASH_ATTN   "1" to enable flash attention (default off)
//   LLAMA_REF_KV_TYPE      KV cache element type, "F16" (llama.cpp's default) or "F32"
//   LLAMA_REF_LLAMA_COMMIT llama.cpp commit read from the prebuilt libllama-common (optional)
//
// For each prompt: tokenize exactly as llama.cpp's common_tokenize(text, add_special = true,
// parse_special = special), evaluate the whole prompt, then generate exactly N tokens with
// llama.cpp's greedy sampler (llama_sampler_init_greedy, i.e. argmax; no temperature, no
// top-k/top-p/min-p, no repetition penalties, no logit bias). End-of-generation tokens do NOT
// stop generation: the EOG token is fed back like any other token (this is not llama-cli's
// --ignore-eos, which instead biases EOG logits to -inf). EOG positions are recorded.
// At each generated step the top-2 logits are recorded as margin = top1 - top2.

import { createHash } from "node:crypto";
import { createReadStream, readFileSync, writeFileSync, renameSync, openSync, readSync, fsyncSync, closeSync, unlinkSync, existsSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(msg) {
    process.stderr.write(`llama-reference: error: ${msg}\n`);
    process.exit(1);
}

function env(name, required = true) {
    const v = process.env[name];
    if (required && (v == null || v === "")) die(`${name} is not set (run this through scripts/llama-reference)`);
    return v;
}

function positiveInt(name, value, allowZero = false) {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || (!allowZero && n === 0)) die(`${name} must be a ${allowZero ? "non-negative" : "positive"} integer, got ${JSON.stringify(value)}`);
    return n;
}

async function sha256File(file) {
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(file)) hash.update(chunk);
    return hash.digest("hex");
}

function readBundleHead(nlcPackageDir) {
    // node-llama-cpp ships the llama.cpp source it was built from as a git bundle; its first
    // lines are "# v2 git bundle" and "<sha> HEAD" (a squashed commit made by node-llama-cpp).
    try {
        const fd = openSync(path.join(nlcPackageDir, "llama", "gitRelease.bundle"), "r");
        const buf = Buffer.alloc(256);
        readSync(fd, buf, 0, 256, 0);
        closeSync(fd);
        const m = /^([0-9a-f]{40}) HEAD$/m.exec(buf.toString("latin1"));
        return m ? m[1] : null;
    } catch {
        return null;
    }
}

const nlcDir = env("LLAMA_REF_NLC_DIR");
const modelPath = env("LLAMA_REF_MODEL");
const promptsPath = env("LLAMA_REF_PROMPTS");
const outPath = env("LLAMA_REF_OUT");
const nTokens = positiveInt("tokens", env("LLAMA_REF_TOKENS"));
const threads = positiveInt("threads", env("LLAMA_REF_THREADS"));
const batchOpt = positiveInt("batch", process.env.LLAMA_REF_BATCH ?? "0", true);
const flashAttention = process.env.LLAMA_REF_FLASH_ATTN === "1";
const kvType = (process.env.LLAMA_REF_KV_TYPE || "F16").toUpperCase();
if (kvType !== "F16" && kvType !== "F32") die(`KV cache type must be F16 or F32, got ${kvType}`);
const llamaCommit = process.env.LLAMA_REF_LLAMA_COMMIT || null;

if (!existsSync(modelPath)) die(`model not found: ${modelPath} (run: bash scripts/fetch-model)`);

let prompts;
try {
    prompts = JSON.parse(readFileSync(promptsPath, "utf8"));
} catch (e) {
    die(`cannot read prompts file ${promptsPath}: ${e.message}`);
}
if (!Array.isArray(prompts) || prompts.length === 0) die(`${promptsPath}: expected a non-empty JSON array`);
const seen = new Set();
for (const [i, p] of prompts.entries()) {
    if (p == null || typeof p.name !== "string" || typeof p.text !== "string" || p.text === "")
        die(`${promptsPath}: entry ${i} needs a string "name" and a non-empty string "text"`);
    if (p.special != null && typeof p.special !== "boolean") die(`${promptsPath}: entry ${i}: "special" must be a boolean`);
    if (seen.has(p.name)) die(`${promptsPath}: duplicate name ${JSON.stringify(p.name)}`);
    seen.add(p.name);
}

const nlcPackageDir = path.join(nlcDir, "node_modules", "node-llama-cpp");
const nlcVersion = JSON.parse(readFileSync(path.join(nlcPackageDir, "package.json"), "utf8")).version;
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(path.join(nlcPackageDir, "dist", "index.js")).href);

const llama = await getLlama({
    gpu: false,                 // CPU backend only
    build: "never",             // never fall back to downloading/compiling llama.cpp
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
    maxThreads: threads,
});
if (llama.buildType !== "prebuilt") die(`expected node-llama-cpp's prebuilt binaries, got build type ${llama.buildType}`);

const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
const addBos = model.tokens.shouldPrependBosToken && model.tokens.bos != null;
const addEos = model.tokens.shouldAppendEosToken && model.tokens.eos != null;

// Tokenize everything first so the context can be sized for the longest prompt.
const tokenized = prompts.map((p) => {
    const special = p.special === true;
    // model.tokenize() calls common_tokenize(vocab, text, add_special = false, parse_special);
    // add BOS/EOS here exactly as add_special = true would (llama_vocab_get_add_bos/eos).
    const ids = [...model.tokenize(p.text, special)];
    if (addBos) ids.unshift(model.tokens.bos);
    if (addEos) ids.push(model.tokens.eos);
    if (ids.length === 0) die(`prompt ${p.name} tokenized to nothing`);
    return { name: p.name, special, ids };
});
const maxPrompt = Math.max(...tokenized.map((t) => t.ids.length));
const contextSize = Math.ceil((maxPrompt + nTokens + 1) / 256) * 256;
const trainContext = model.trainContextSize;
if (contextSize > trainContext) process.stderr.write(`llama-reference: warning: context ${contextSize} exceeds the model's training context ${trainContext}\n`);
const batchSize = batchOpt === 0 ? contextSize : batchOpt;

const generateNext = {
    token: true,
    logits: { filter: { tokens: [], includeTop: 2 } },
    options: { temperature: 0 }, // temperature <= 0 => llama_sampler_init_greedy, nothing else in the chain
};

const cases = [];
for (const t of tokenized) {
    const started = Date.now();
    // A fresh context per case, so no state (KV cells, sampler) is shared between cases.
    const context = await model.createContext({
        contextSize,
        batchSize,
        threads,
        flashAttention,
        experimentalKvCacheKeyType: kvType,
        experimentalKvCacheValueType: kvType,
        sequences: 1,
        ignoreMemorySafetyChecks: true,
    });
    const sequence = context.getSequence();
    const ids = [];
    const margins = [];
    const eogPositions = [];
    let argmaxDisagreements = 0;
    let input = t.ids.map((id, i) => (i === t.ids.length - 1 ? [id, { generateNext }] : id));
    for (let step = 0; step < nTokens; step++) {
        const results = await sequence.controlledEvaluate(input);
        const next = results[input.length - 1]?.next;
        if (next == null || next.token == null) die(`${t.name}: no token produced at step ${step}`);
        const token = next.token;
        const top = [...next.logits.entries()].sort((a, b) => b[1] - a[1]);
        if (top.length < 2) die(`${t.name}: fewer than two logits returned at step ${step}`);
        if (top[0][0] !== token && top[0][1] !== top[1][1]) argmaxDisagreements++;
        margins.push(Number((top[0][1] - top[1][1]).toFixed(5)));
        if (model.isEogToken(token)) eogPositions.push(step);
        ids.push(token);
        input = [[token, { generateNext }]];
    }
    await context.dispose();
    if (argmaxDisagreements > 0) die(`${t.name}: the greedy sampler disagreed with the logits' argmax ${argmaxDisagreements} times`);
    const text = model.detokenize(ids, true);
    cases.push({
        name: t.name,
        parse_special: t.special,
        prompt_ids: t.ids,
        ids,
        text,
        margins,
        eog_positions: eogPositions,
    });
    process.stderr.write(`llama-reference: ${t.name}: ${t.ids.length} prompt tokens, ${ids.length} generated` +
        `${eogPositions.length ? `, EOG at ${eogPositions.join(",")}` : ""}, min margin ${Math.min(...margins).toFixed(4)} ` +
        `(${((Date.now() - started) / 1000).toFixed(1)}s)\n`);
}

const output = {
    generator: {
        "llama.cpp": {
            release: llama.llamaCppRelease.release,
            repo: llama.llamaCppRelease.repo,
            commit: llamaCommit,
            source_bundle_head: readBundleHead(nlcPackageDir),
        },
        "node-llama-cpp": nlcVersion,
        build_type: llama.buildType,
        gpu: llama.gpu,
        cpu_variant: process.env.LLAMA_REF_CPU || "best",
        system_info: llama.systemInfo,
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
    },
    model: {
        file: path.basename(modelPath),
        sha256: await sha256File(modelPath),
    },
    threads,
    tokens: nTokens,
    settings: {
        tokenization: "common_tokenize(text, add_special=true, parse_special=case.parse_special)",
        add_bos: addBos,
        add_eos: addEos,
        bos_id: model.tokens.bos ?? null,
        eos_id: model.tokens.eos ?? null,
        sampling: "greedy: llama_sampler_init_greedy (argmax, ties to the lowest id); no temperature, top-k, top-p, min-p, penalties or bias",
        eog: "not a stop condition: EOG tokens are fed back and generation continues to exactly `tokens` ids; eog_positions lists the steps that produced an EOG token (no -inf bias as in llama-cli --ignore-eos)",
        margins: "per generated step, top1 logit - top2 logit (float32 logits, rounded to 1e-5)",
        text: "detokenized continuation with special tokens rendered",
        context_size: contextSize,
        batch_size: batchSize,
        ubatch_size: batchSize,
        prompt_evaluation: batchSize >= maxPrompt ? "each prompt in a single llama_decode call" : `prompts in llama_decode chunks of ${batchSize} tokens`,
        flash_attention: flashAttention,
        kv_cache_type: kvType,
        context_per_case: "fresh llama_context per case",
    },
    cases,
};

await model.dispose();
await llama.dispose();

// JSON with two-space indentation, except that arrays of numbers stay on one line.
function toJson(value, indent = "") {
    if (Array.isArray(value)) {
        if (value.every((v) => typeof v === "number")) return `[${value.map((v) => JSON.stringify(v)).join(", ")}]`;
        if (value.length === 0) return "[]";
        const inner = indent + "  ";
        return `[\n${value.map((v) => inner + toJson(v, inner)).join(",\n")}\n${indent}]`;
    }
    if (value !== null && typeof value === "object") {
        const entries = Object.entries(value);
        if (entries.length === 0) return "{}";
        const inner = indent + "  ";
        return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${toJson(v, inner)}`).join(",\n")}\n${indent}}`;
    }
    return JSON.stringify(value);
}

const dir = path.dirname(path.resolve(outPath));
const tmp = path.join(dir, `.${path.basename(outPath)}.tmp-${process.pid}`);
try {
    writeFileSync(tmp, toJson(output) + "\n");
    const fd = openSync(tmp, "r");
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, outPath);
} catch (e) {
    try { unlinkSync(tmp); } catch {}
    die(`cannot write ${outPath}: ${e.message}`);
}
process.stderr.write(`llama-reference: wrote ${outPath} (${cases.length} cases, ${nTokens} tokens each)\n`);
