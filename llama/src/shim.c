/*
 * The part of llama.cpp's C API the `llama` crate uses, with llama.cpp's structures filled in
 * here, by a compiler that reads the real header, so that Rust never mirrors their layout.
 *
 * llama.cpp only ever sees token ids: text is tokenized and detokenized in Rust. Its log goes
 * nowhere but the calling thread's last error line (sv_last_error).
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "llama.h"

static _Thread_local char last_error[512];

static void sv_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level != GGML_LOG_LEVEL_ERROR || text == NULL) return;
    size_t n = strlen(text);
    if (n >= sizeof last_error) n = sizeof last_error - 1;
    memcpy(last_error, text, n);
    last_error[n] = '\0';
}

const char *sv_last_error(void) { return last_error; }

void sv_clear_error(void) { last_error[0] = '\0'; }

void sv_init(void) {
    /* Every allocation of 64 KiB or more (KV caches, work buffers, logits) is its own mapping,
     * returned to the kernel when freed, never kept in the heap for reuse: a fixed threshold
     * also stops glibc from raising it as such blocks are freed. */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    llama_log_set(sv_log, NULL);
    llama_backend_init();
}

/* Loads from `fd` (from its start), which this call takes over and closes. */
struct llama_model *sv_model_load(int fd, bool mmap, bool repack) {
    if (lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return NULL;
    }
    FILE *file = fdopen(fd, "rb");
    if (file == NULL) {
        close(fd);
        return NULL;
    }
    struct llama_model_params p = llama_model_default_params();
    p.n_gpu_layers = 0;
    p.load_mode = mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    p.use_extra_bufts = repack;
    p.check_tensors = true;
    struct llama_model *model = llama_model_load_from_file_ptr(file, p);
    fclose(file);
    return model;
}

void sv_model_free(struct llama_model *model) { llama_model_free(model); }

int32_t sv_n_vocab(const struct llama_model *model) {
    return llama_vocab_n_tokens(llama_model_get_vocab(model));
}

int32_t sv_n_ctx_train(const struct llama_model *model) { return llama_model_n_ctx_train(model); }

uint64_t sv_model_size(const struct llama_model *model) { return llama_model_size(model); }

struct llama_context *sv_context(struct llama_model *model, uint32_t n_ctx, int32_t threads) {
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
}

void sv_context_free(struct llama_context *ctx) { llama_free(ctx); }

uint32_t sv_n_ctx(const struct llama_context *ctx) { return llama_n_ctx(ctx); }

/* Evaluates `n` ids after those already in the context; 0 on success. */
int32_t sv_decode(struct llama_context *ctx, const int32_t *ids, int32_t n) {
    struct llama_batch batch = llama_batch_get_one((llama_token *)ids, n);
    return llama_decode(ctx, batch);
}

/* The logits of the last id evaluated. */
const float *sv_logits(struct llama_context *ctx) { return llama_get_logits_ith(ctx, -1); }

/* Forgets every id evaluated, overwriting the KV cache with zeros. */
void sv_clear(struct llama_context *ctx) { llama_memory_clear(llama_get_memory(ctx), true); }

/* Writes `in` requantized to `ftype` (a llama_ftype) as `out`; 0 on success. */
uint32_t sv_quantize(const char *in, const char *out, int32_t ftype, int32_t threads) {
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.nthread = threads;
    p.ftype = (enum llama_ftype)ftype;
    p.allow_requantize = true;
    return llama_model_quantize(in, out, &p);
}

/* Tokenizes `len` bytes of `text` into at most `max` ids; the count, or minus the count needed
 * when `max` is too small. Special-token text becomes those tokens when `special`; no BOS/EOS
 * is added (the chat template writes what the model wants). */
int32_t sv_tokenize(const struct llama_model *model, const char *text, int32_t len, int32_t *ids,
                    int32_t max, bool special) {
    return llama_tokenize(llama_model_get_vocab(model), text, len, ids, max, false, special);
}

/* The bytes `id` stands for (control tokens render as nothing); the count, or minus the count
 * needed when `size` is too small. */
int32_t sv_piece(const struct llama_model *model, int32_t id, char *buf, int32_t size) {
    return llama_token_to_piece(llama_model_get_vocab(model), id, buf, size, 0, false);
}

/* The token's text in the vocabulary, its attributes, and whether it ends generation. */
const char *sv_token_text(const struct llama_model *model, int32_t id) {
    return llama_vocab_get_text(llama_model_get_vocab(model), id);
}

uint32_t sv_token_attr(const struct llama_model *model, int32_t id) {
    return (uint32_t)llama_vocab_get_attr(llama_model_get_vocab(model), id);
}

bool sv_token_is_eog(const struct llama_model *model, int32_t id) {
    return llama_vocab_is_eog(llama_model_get_vocab(model), id);
}
