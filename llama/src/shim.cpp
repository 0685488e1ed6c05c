/*
 * The part of llama.cpp's C API the `llama` crate uses, with llama.cpp's structures filled in
 * here, by a compiler that reads the real header, so that Rust never mirrors their layout.
 *
 * C++, so that every entry point can catch what llama.cpp throws (std::bad_alloc, its own
 * errors): no exception crosses into Rust; it becomes the call's failure and its error line.
 * llama.cpp's log goes nowhere but that line (sv_last_error): the first error it logs in a call
 * (the cause; the lines after it are llama.cpp saying that the load or decode failed).
 */
#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>

#include "llama.h"

namespace {

thread_local char last_error[512];

void set_error(const char *text) {
    if (text == nullptr) return;
    size_t n = std::strlen(text);
    if (n >= sizeof last_error) n = sizeof last_error - 1;
    std::memcpy(last_error, text, n);
    last_error[n] = '\0';
}

void sv_log(enum ggml_log_level level, const char *text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR && last_error[0] == '\0') set_error(text);
}

/* Runs `body`; an exception becomes the last error line and `failed`. */
template <typename T, typename F> T guarded(T failed, F body) {
    try {
        return body();
    } catch (const std::exception &e) {
        set_error(e.what());
    } catch (...) {
        set_error("llama.cpp threw an unknown exception");
    }
    return failed;
}

/* The CPU build chosen at start-up (llama::Cpu::index): 0 haswell, 1 skylakex, 2 icelake. */
int cpu_build = 0;

}  // namespace

extern "C" {

/* ggml's CPU backend, built three times by scripts/llama-cpp with each build's symbols
 * renamed apart (sv_<build>_...). */
ggml_backend_reg_t sv_haswell_ggml_backend_cpu_reg(void);
ggml_backend_reg_t sv_skylakex_ggml_backend_cpu_reg(void);
ggml_backend_reg_t sv_icelake_ggml_backend_cpu_reg(void);

/* What ggml's backend registry calls to register the CPU backend: the chosen build's. Only
 * that build's code ever runs, so a CPU without AVX-512 never meets an AVX-512 instruction. */
ggml_backend_reg_t ggml_backend_cpu_reg(void) {
    switch (cpu_build) {
        case 1:
            return sv_skylakex_ggml_backend_cpu_reg();
        case 2:
            return sv_icelake_ggml_backend_cpu_reg();
        default:
            return sv_haswell_ggml_backend_cpu_reg();
    }
}

const char *sv_last_error(void) { return last_error; }

void sv_clear_error(void) { last_error[0] = '\0'; }

/* Chooses the CPU build (checked by the caller against this CPU) and initialises llama.cpp;
 * once, before any other call. */
int32_t sv_init(int32_t cpu) {
    cpu_build = cpu;
    return guarded<int32_t>(-1, [] {
        /* Allocations of 64 KiB or more (KV caches, work buffers, logits) are made as their own
         * mappings, returned to the kernel when freed, whenever glibc must grow its heap for
         * them; a fixed threshold also stops glibc from raising it as such blocks are freed. */
        mallopt(M_MMAP_THRESHOLD, 64 * 1024);
        llama_log_set(sv_log, nullptr);
        llama_backend_init();
        return 0;
    });
}

/* Loads from `fd` (from its start), which this call takes over and closes; with `vocab_only`,
 * the tokenizer alone. */
struct llama_model *sv_model_load(int fd, bool mmap, bool repack, bool vocab_only) {
    if (lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return nullptr;
    }
    FILE *file = fdopen(fd, "rb");
    if (file == nullptr) {
        close(fd);
        return nullptr;
    }
    struct llama_model *model = guarded<struct llama_model *>(nullptr, [&] {
        struct llama_model_params p = llama_model_default_params();
        p.n_gpu_layers = 0;
        /* (no weights to map: a vocabulary-only GGUF's data section need not be aligned) */
        p.load_mode = mmap && !vocab_only ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
        p.use_extra_bufts = repack;
        p.check_tensors = true;
        p.vocab_only = vocab_only;
        return llama_model_load_from_file_ptr(file, p);
    });
    fclose(file);
    return model;
}

void sv_model_free(struct llama_model *model) {
    guarded<int>(0, [&] {
        llama_model_free(model);
        return 0;
    });
}

int32_t sv_n_vocab(const struct llama_model *model) {
    return guarded<int32_t>(0, [&] { return llama_vocab_n_tokens(llama_model_get_vocab(model)); });
}

uint64_t sv_model_size(const struct llama_model *model) {
    return guarded<uint64_t>(0, [&] { return llama_model_size(model); });
}

struct llama_context *sv_context(struct llama_model *model, uint32_t n_ctx, int32_t threads) {
    return guarded<struct llama_context *>(nullptr, [&] {
        struct llama_context_params p = llama_context_default_params();
        p.n_ctx = n_ctx;
        p.n_batch = n_ctx;
        p.n_seq_max = 1;
        p.n_threads = threads;
        p.n_threads_batch = threads;
        p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        p.embeddings = false;
        p.no_perf = true;
        return llama_init_from_model(model, p);
    });
}

void sv_context_free(struct llama_context *ctx) {
    guarded<int>(0, [&] {
        llama_free(ctx);
        return 0;
    });
}

uint32_t sv_n_ctx(const struct llama_context *ctx) {
    return guarded<uint32_t>(0, [&] { return llama_n_ctx(ctx); });
}

/* Evaluates `n` ids after those already in the context; 0 on success. */
int32_t sv_decode(struct llama_context *ctx, const int32_t *ids, int32_t n) {
    return guarded<int32_t>(-100, [&] {
        struct llama_batch batch = llama_batch_get_one(const_cast<llama_token *>(ids), n);
        return llama_decode(ctx, batch);
    });
}

/* The logits of the last id evaluated. */
const float *sv_logits(struct llama_context *ctx) {
    return guarded<const float *>(nullptr, [&] { return llama_get_logits_ith(ctx, -1); });
}

/* Forgets every id evaluated, overwriting the KV cache with zeros; 0 on success. */
int32_t sv_clear(struct llama_context *ctx) {
    return guarded<int32_t>(-1, [&] {
        llama_memory_clear(llama_get_memory(ctx), true);
        return 0;
    });
}

/* Writes `in` requantized to `ftype` (a llama_ftype) as `out`; 0 on success. */
uint32_t sv_quantize(const char *in, const char *out, int32_t ftype, int32_t threads) {
    return guarded<uint32_t>(1, [&] {
        llama_model_quantize_params p = llama_model_quantize_default_params();
        p.nthread = threads;
        p.ftype = static_cast<enum llama_ftype>(ftype);
        p.allow_requantize = true;
        return llama_model_quantize(in, out, &p);
    });
}

/* Tokenizes `len` bytes of `text` into at most `max` ids; the count, or minus the count needed
 * when `max` is too small (INT32_MIN on failure). Special-token text becomes those tokens when
 * `special`; no BOS/EOS is added (the chat template writes what the model wants). */
int32_t sv_tokenize(const struct llama_model *model, const char *text, int32_t len, int32_t *ids,
                    int32_t max, bool special) {
    return guarded<int32_t>(INT32_MIN, [&] {
        return llama_tokenize(llama_model_get_vocab(model), text, len, ids, max, false, special);
    });
}

/* The bytes `id` stands for (control tokens render as nothing); the count, or minus the count
 * needed when `size` is too small (INT32_MIN on failure). */
int32_t sv_piece(const struct llama_model *model, int32_t id, char *buf, int32_t size) {
    return guarded<int32_t>(INT32_MIN, [&] {
        return llama_token_to_piece(llama_model_get_vocab(model), id, buf, size, 0, false);
    });
}

/* The token's text in the vocabulary, its attributes, and whether it ends generation. */
const char *sv_token_text(const struct llama_model *model, int32_t id) {
    return guarded<const char *>(nullptr,
                                 [&] { return llama_vocab_get_text(llama_model_get_vocab(model), id); });
}

uint32_t sv_token_attr(const struct llama_model *model, int32_t id) {
    return guarded<uint32_t>(0, [&] {
        return static_cast<uint32_t>(llama_vocab_get_attr(llama_model_get_vocab(model), id));
    });
}

bool sv_token_is_eog(const struct llama_model *model, int32_t id) {
    return guarded<bool>(false, [&] { return llama_vocab_is_eog(llama_model_get_vocab(model), id); });
}

}  // extern "C"
