/*
 * llama.cpp as the anchor of `bench --bin inference`, through its own C API (the prebuilt
 * libraries of node-llama-cpp; scripts/llama-reference --bench compiles and starts this).
 *
 *   llama-bench BACKEND_DIR MODEL THREADS FLASH_ATTENTION(0|1)
 *
 * Loads the model once and prints one JSON line: {"ready": true, "load_ms", "threads",
 * "flash_attention", "system_info"}. Then for each line of standard input, "N id id id ...", it
 * clears the KV cache, evaluates the prompt ids (one llama_decode call; llama.cpp splits it
 * into micro-batches of its default size), and generates N tokens with llama.cpp's greedy
 * sampler, one llama_decode per token; it answers with one JSON line {"prefill_ms",
 * "decode_ms", "prompt_tokens", "tokens", "ids"}: prefill_ms to the first generated token,
 * decode_ms for the N-1 after it. Exit status 1 on any llama.cpp failure, 2 on bad input.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "llama.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static bool silent_progress(float progress, void *user) {
    (void)progress;
    (void)user;
    return true;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: llama-bench BACKEND_DIR MODEL THREADS FLASH_ATTENTION(0|1)\n");
        return 2;
    }
    int threads = atoi(argv[3]);
    int flash = atoi(argv[4]);
    if (threads < 1 || (flash != 0 && flash != 1)) {
        fprintf(stderr, "llama-bench: THREADS must be positive, FLASH_ATTENTION 0 or 1\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = silent_progress;
    double started = now_ms();
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (model == NULL) {
        fprintf(stderr, "llama-bench: cannot load %s\n", argv[2]);
        return 1;
    }
    double load_ms = now_ms() - started;

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 4096;
    cp.n_batch = 4096;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "llama-bench: cannot create a context\n");
        return 1;
    }
    struct llama_sampler *greedy = llama_sampler_init_greedy();
    printf("{\"ready\": true, \"load_ms\": %.3f, \"threads\": %d, \"flash_attention\": %s, "
           "\"system_info\": \"%s\"}\n",
           load_ms, threads, flash ? "true" : "false", llama_print_system_info());
    fflush(stdout);

    static llama_token prompt[4096];
    static llama_token out[4096];
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        char *p = line;
        char *end;
        long tokens = strtol(p, &end, 10);
        if (end == p) continue; /* an empty line */
        p = end;
        int n = 0;
        for (;;) {
            long id = strtol(p, &end, 10);
            if (end == p) break;
            if (n == 4096 || id < 0) {
                fprintf(stderr, "llama-bench: bad prompt\n");
                return 2;
            }
            prompt[n++] = (llama_token)id;
            p = end;
        }
        if (n == 0 || tokens < 1 || n + tokens > 4096) {
            fprintf(stderr, "llama-bench: expected \"N id id ...\" within a 4096-token context\n");
            return 2;
        }
        llama_memory_clear(llama_get_memory(ctx), true);
        llama_sampler_reset(greedy);
        double begin = now_ms();
        double first = begin;
        struct llama_batch batch = llama_batch_get_one(prompt, n);
        for (long step = 0; step < tokens; step++) {
            if (llama_decode(ctx, batch) != 0) {
                fprintf(stderr, "llama-bench: llama_decode failed at step %ld\n", step);
                return 1;
            }
            out[step] = llama_sampler_sample(greedy, ctx, -1);
            if (step == 0) first = now_ms();
            batch = llama_batch_get_one(&out[step], 1);
        }
        double done = now_ms();
        printf("{\"prefill_ms\": %.3f, \"decode_ms\": %.3f, \"prompt_tokens\": %d, \"tokens\": %ld, "
               "\"ids\": [",
               first - begin, done - first, n, tokens);
        for (long i = 0; i < tokens; i++) printf(i ? ",%d" : "%d", out[i]);
        printf("]}\n");
        fflush(stdout);
    }
    free(line);
    llama_sampler_free(greedy);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
