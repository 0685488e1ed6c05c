/*
 * llama.cpp's own quantizer (llama_model_quantize), for the parity evidence in
 * docs/inference.md: scripts/llama-reference --quantize TYPE --out FILE compiles and runs this.
 *
 *   llama-quantize BACKEND_DIR IN OUT FTYPE
 *
 * FTYPE is llama.cpp's llama_ftype number (Q4_0 = 2, Q8_0 = 7, Q4_K_M = 15, Q5_K_M = 17,
 * Q6_K = 18). Quantized tensors are requantized (allow_requantize): the output carries the
 * input's rounding and its own.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ggml-backend.h"
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: llama-quantize BACKEND_DIR IN OUT FTYPE\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    llama_backend_init();
    struct llama_model_quantize_params params = llama_model_quantize_default_params();
    params.ftype = (enum llama_ftype)atoi(argv[4]);
    params.allow_requantize = true;
    if (llama_model_quantize(argv[2], argv[3], &params) != 0) {
        fprintf(stderr, "llama-quantize: quantizing %s failed\n", argv[2]);
        return 1;
    }
    return 0;
}
