/* libFuzzer target: parse the input as a model.mebin, then (if it loads and its arena fits) run one guarded
 * adapt on 3 fixed samples and a prediction. Each input is tried twice: as given, and with its CRC-32 field
 * recomputed so mutations reach the checks behind the CRC.
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
    if (me_model_load(&m, buf, size) != ME_OK) return;
    const uint32_t shots = 3;
    const size_t need = me_arena_bytes(&m, shots);
    if (need == 0 || need > ARENA_BYTES) return;
    if (me_session_init(&s, &m, arena, need, shots) != ME_OK) __builtin_trap();
    float x[3 * 64], y[3 * 64], out[3 * 64];
    if (m.in_dim > 64 || m.out_dim > 64) return;
    for (uint32_t i = 0; i < 3 * m.in_dim; i++) x[i] = 0.25f * (float)i - 0.5f;
    for (uint32_t i = 0; i < 3 * m.out_dim; i++) y[i] = m.task == ME_TASK_CLASSIFICATION ? (float)(i % 2) : 0.1f * i;
    me_adapt_info info;
    me_status st = me_adapt(&s, x, y, shots, m.default_steps > 3 ? 3 : m.default_steps, ME_GUARD, &info);
    if (st == ME_OK && me_classes(&s) <= 64) me_predict(&s, x, 3, out);
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
