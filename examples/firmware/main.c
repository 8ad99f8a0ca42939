/* Firmware-style example: a sinusoid "unit" (amplitude 2, phase 0.5) calibrates the compiled-in meta-learned
 * model from 3 reference points, then predicts. No malloc: the arena is a static array. The numbers are printed
 * with 4 decimals so the host and the Cortex-M4 build (qemu-system-arm) print the same text. */
#include <stdio.h>

#include "metaedge.h"
#include "model_data.h"

#define SHOTS 3u
static unsigned char arena[64 * 1024];

int main(void)
{
    /* x and 2 sin(x - 0.5) as literals, so every platform's libm sees the same data */
    static const float xs[SHOTS] = {-3.0f, 0.0f, 2.5f};
    static const float ys[SHOTS] = {0.70156646f, -0.95885110f, 1.81859480f};
    static const float xq[5] = {-4.0f, -2.0f, 0.5f, 2.0f, 4.0f};
    static const float yq[5] = {1.95506f, -1.19694f, 0.0f, 1.99499f, -0.70157f};
    me_model model;
    me_session s;
    me_adapt_info info;
    float pred[5];

    me_status st = me_model_load(&model, me_model_data, me_model_data_len);
    if (st != ME_OK) {
        printf("load: %s\n", me_strerror(st));
        return 1;
    }
    const size_t need = me_arena_bytes(&model, SHOTS);
    printf("model: %u bytes, %u parameters, %u adapted, arena %u bytes\n", (unsigned)model.bytes,
           (unsigned)model.n_params, (unsigned)model.n_theta, (unsigned)need);
    st = me_session_init(&s, &model, arena, sizeof arena, SHOTS);
    if (st == ME_OK) st = me_adapt(&s, xs, ys, SHOTS, 5u, ME_GUARD, &info);
    if (st == ME_OK) st = me_predict(&s, xq, 5u, pred);
    if (st != ME_OK) {
        printf("error: %s\n", me_strerror(st));
        return 1;
    }
    printf("adapted on %u points: %u of %u steps kept, support loss %.4f -> %.4f\n", SHOTS,
           (unsigned)info.steps_kept, (unsigned)info.steps_run, (double)info.loss_before, (double)info.loss_after);
    for (unsigned i = 0; i < 5u; i++)
        printf("x = %7.4f  predicted %7.4f  true %7.4f\n", (double)xq[i], (double)pred[i], (double)yq[i]);
    return 0;
}
