/* libFuzzer target: the input as an adapted state (format 2) for the example's sinusoid model
 * (examples/firmware/model_data.h). Each input is tried as given and with its CRC-32 recomputed over the length
 * it declares, so mutations reach the checks behind the CRC. A read that succeeds must leave a finite state of
 * the model's size that predicts; a refused one must leave the session's state bit for bit as it was.
 *   clang -fsanitize=fuzzer,address,undefined (CMakeLists.txt, METAEDGE_FUZZ=ON; seeds in fuzz/state_corpus) */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "metaedge.h"
#include "model_data.h"

static unsigned char arena[96 * 1024];
static unsigned char copy[64 * 1024];
static float before[4096];
static me_model model;
static me_session sess;
static int ready = 0;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(const unsigned char *buf, size_t size)
{
    const uint32_t n = me_theta_size(&sess);
    memcpy(before, me_theta(&sess), 4u * n);
    if (me_state_read(&sess, buf, size) != ME_OK) {
        if (me_theta_size(&sess) != n || memcmp(before, me_theta(&sess), 4u * n) != 0) __builtin_trap();
        return;
    }
    const float *theta = me_theta(&sess);
    if (me_theta_size(&sess) != n) __builtin_trap();
    for (uint32_t i = 0; i < n; i++)
        if (!isfinite(theta[i])) __builtin_trap();
    const float x[2] = {0.5f, -1.f};
    float out[2];
    if (me_predict(&sess, x, 2, out) != ME_OK) __builtin_trap();
    me_reset(&sess);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        if (me_model_load(&model, me_model_data, me_model_data_len) != ME_OK ||
            me_session_init(&sess, &model, arena, sizeof arena, 4) != ME_OK)
            __builtin_trap();
        ready = 1;
    }
    run(data, size);
    if (size >= 12 && size <= sizeof copy) {
        memcpy(copy, data, size);
        uint32_t total = (uint32_t)copy[8] | (uint32_t)copy[9] << 8 | (uint32_t)copy[10] << 16 |
                         (uint32_t)copy[11] << 24;
        if (total >= 4u && total <= size) {
            const uint32_t crc = me_crc32(copy, total - 4u);
            for (int i = 0; i < 4; i++) copy[total - 4u + (uint32_t)i] = (unsigned char)(crc >> (8 * i));
            run(copy, size);
        }
    }
    return 0;
}
