/* libFuzzer target: parse the input as a model.mebin, then (if it loads and its arena fits) run one guarded
 * adapt on 3 fixed samples and a prediction, and for a control section (format 5) a plan and observations that
 * re-adapt. Each input is tried twice: as given, and with its CRC-32 field recomputed so mutations reach the
 * checks behind the CRC.
 *   clang -fsanitize=fuzzer,address,undefined (see CMakeLists.txt, METAEDGE_FUZZ=ON) */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "metaedge.h"

#define ARENA_BYTES (4u << 20)
static unsigned char arena[ARENA_BYTES];
static unsigned char copy[1u << 20];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(const unsigned char *buf, size_t size)
{
    me_model m;
    me_session s;
    me_model_info_t info;
    if (me_model_load(&m, buf, size) != ME_OK) return;
    if (me_model_info(buf, size, &info) != ME_OK) __builtin_trap(); /* the same parser must agree */
    const uint32_t shots = 3;
    const size_t need = me_arena_bytes(&m, shots);
    if (need == 0 || need > ARENA_BYTES) return;
    if (me_session_init(&s, &m, arena, need, shots) != ME_OK) __builtin_trap();
    float x[3 * 64], y[3 * 64], out[3 * 64];
    if (info.in_dim > 64 || info.out_dim > 64) return;
    for (uint32_t i = 0; i < 3 * info.in_dim; i++) x[i] = 0.25f * (float)i - 0.5f;
    for (uint32_t i = 0; i < 3 * info.out_dim; i++)
        y[i] = info.task == ME_TASK_CLASSIFICATION ? (float)(i % 2) : 0.1f * (float)i;
    me_adapt_info done;
    me_status st = me_adapt(&s, x, y, shots, info.default_steps > 3 ? 3 : info.default_steps, ME_GUARD, &done);
    if (st == ME_OK && me_classes(&s) <= 64) me_predict(&s, x, 3, out);
    /* a control section (format 5): one plan and a re-adaptation from the window, when the work is bounded */
    me_control_info_t c;
    if (me_control_info(&m, &c) != ME_OK) return;
    if ((uint64_t)c.candidates * c.horizon * c.iterations * c.action_dim > 20000u || c.state_dim > 64) return;
    float action[64], next[64];
    if (me_plan(&s, x, action) != ME_OK) __builtin_trap(); /* a finite state of a loaded model always plans */
    for (uint32_t i = 0; i < c.state_dim; i++) next[i] = x[i] + 0.01f * (float)i;
    if (info.default_steps > 4u || c.window > 64u) return; /* bounded re-adaptation work */
    for (uint32_t k = 0; k < (c.adapt_every < 4u ? c.adapt_every : 2u); k++) me_observe(&s, x, action, next);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size);
    if (size >= 16 && size <= sizeof copy) {
        memcpy(copy, data, size);
        const uint32_t crc = me_crc32(copy + 16, size - 16);
        for (int i = 0; i < 4; i++) copy[12 + i] = (unsigned char)(crc >> (8 * i));
        run(copy, size);
    }
    return 0;
}
