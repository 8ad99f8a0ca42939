/* Adapted state, format 2: round trips (SGD, Gauss-Newton info, prototypes), refusals with their codes, and the
 * corruption sweep: every truncation and every single-bit flip of a written state is refused and leaves the
 * session's state as it was. Prints the figures. */
#include <math.h>
#include <string.h>

#include "check.h"

enum { SHOTS = 8 };
static unsigned char model_buf[4096], other_buf[4096];
static unsigned char arena[1 << 16];
static unsigned char state[1024], bad[1024];
static me_model model, other;
static me_session sess;

static const tb_layer net[] = {{ME_LAYER_DENSE, 3, 2, 6}, {ME_LAYER_TANH, 0, 6, 6}, {ME_LAYER_DENSE, 3, 6, 1}};

static void open_model(const tb_spec *sp)
{
    const size_t len = tb_build(model_buf, sizeof model_buf, sp);
    CHECK(len > 0);
    CHECK_STATUS(me_model_load(&model, model_buf, len), ME_OK);
    CHECK_STATUS(me_session_init(&sess, &model, arena, sizeof arena, SHOTS), ME_OK);
}

static void support(float *x, float *y, uint32_t n)
{
    uint32_t rng = 5u;
    for (uint32_t r = 0; r < n; r++) {
        x[2 * r] = 2.f * check_uniform(&rng);
        x[2 * r + 1] = 2.f * check_uniform(&rng);
        y[r] = sinf(x[2 * r] + x[2 * r + 1]);
    }
}

static int same_state(const float *want, uint32_t n)
{
    return me_theta_size(&sess) == n && memcmp(me_theta(&sess), want, 4u * n) == 0;
}

static void test_round_trip_and_refusals(void)
{
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 3, 2, 1, net, 3, NULL, NULL, 0.5f, 0.05f, 7u};
    open_model(&sp);
    float x[SHOTS * 2], y[SHOTS], adapted[64], pred[SHOTS], pred2[SHOTS];
    support(x, y, SHOTS);
    me_adapt_info info, got;
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 3, ME_GUARD, &info), ME_OK);
    const uint32_t n = me_theta_size(&sess);
    memcpy(adapted, me_theta(&sess), 4u * n);
    CHECK_STATUS(me_predict(&sess, x, SHOTS, pred), ME_OK);
    size_t len = 0;
    CHECK_STATUS(me_state_write(&sess, state, 10, &len), ME_ERR_ARGUMENT);
    CHECK(len == ME_STATE_HEADER_BYTES + 4u * n + 4u); /* the size needed, even when it does not fit */
    CHECK_STATUS(me_state_write(&sess, state, sizeof state, &len), ME_OK);
    CHECK(len == ME_STATE_HEADER_BYTES + 4u * n + 4u && memcmp(state, "MEST", 4) == 0);
    CHECK(me_crc32(state, len - 4u) == ((uint32_t)state[len - 4] | (uint32_t)state[len - 3] << 8 |
                                        (uint32_t)state[len - 2] << 16 | (uint32_t)state[len - 1] << 24));

    CHECK_STATUS(me_reset(&sess), ME_OK);
    CHECK_STATUS(me_last_adapt_info(&sess, &got), ME_OK);
    CHECK(got.steps_run == 0 && isnan(got.loss_before));
    CHECK_STATUS(me_state_read(&sess, state, len), ME_OK);
    CHECK(same_state(adapted, n));
    CHECK_STATUS(me_last_adapt_info(&sess, &got), ME_OK);
    CHECK(got.steps_run == info.steps_run && got.steps_kept == info.steps_kept &&
          got.loss_before == info.loss_before && got.loss_after == info.loss_after);
    CHECK_STATUS(me_predict(&sess, x, SHOTS, pred2), ME_OK); /* transposed copies refreshed too */
    CHECK(memcmp(pred, pred2, sizeof pred) == 0);
    CHECK_STATUS(me_state_read(&sess, state, len + 7), ME_OK); /* bytes after the state are ignored */

    /* a state of another model (same shapes, other weights: another CRC) is refused */
    tb_spec sp2 = sp;
    sp2.seed = 8u;
    const size_t olen = tb_build(other_buf, sizeof other_buf, &sp2);
    CHECK_STATUS(me_model_load(&other, other_buf, olen), ME_OK);
    static unsigned char arena2[1 << 16];
    me_session s2;
    CHECK_STATUS(me_session_init(&s2, &other, arena2, sizeof arena2, SHOTS), ME_OK);
    CHECK_STATUS(me_state_read(&s2, state, len), ME_ERR_MODEL);

    /* fields behind a valid CRC (rewritten here) are checked too */
    struct { size_t at; uint32_t value; me_status want; } cases[] = {
        {4, 1u, ME_ERR_VERSION},  {4, 3u, ME_ERR_VERSION}, {6, 64u, ME_ERR_FORMAT},   {16, n - 1u, ME_ERR_FORMAT},
        {16, n + 1u, ME_ERR_FORMAT}, {24, 99u, ME_ERR_FORMAT}, {36, 1u, ME_ERR_FORMAT}, {44, 1u, ME_ERR_FORMAT},
        {ME_STATE_HEADER_BYTES, 0x7FC00000u, ME_ERR_NONFINITE}, {0, 0x5453454Eu, ME_ERR_MAGIC},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(bad, state, len);
        const int u16 = cases[c].at == 4 || cases[c].at == 6;
        bad[cases[c].at] = (unsigned char)cases[c].value;
        bad[cases[c].at + 1] = (unsigned char)(cases[c].value >> 8);
        if (!u16) {
            bad[cases[c].at + 2] = (unsigned char)(cases[c].value >> 16);
            bad[cases[c].at + 3] = (unsigned char)(cases[c].value >> 24);
        }
        tb_put_u32(bad + len - 4, me_crc32(bad, len - 4));
        CHECK_STATUS(me_state_read(&sess, bad, len), cases[c].want);
        CHECK(same_state(adapted, n));
    }
    /* a count that still matches the length but not the model */
    memcpy(bad, state, len);
    tb_put_u32(bad + 8, (uint32_t)len - 4u);
    tb_put_u32(bad + 16, n - 1u);
    tb_put_u32(bad + len - 8, me_crc32(bad, len - 8));
    CHECK_STATUS(me_state_read(&sess, bad, len - 4), ME_ERR_FORMAT);
    CHECK_STATUS(me_state_read(&sess, NULL, len), ME_ERR_NULL);
    CHECK_STATUS(me_state_write(&sess, NULL, len, &len), ME_ERR_NULL);
}

/* the sweep: the session holds state A; a written state B, truncated at every offset or with any one bit
 * flipped, must be refused with an error code and leave A in place */
static void test_corruption_sweep(void)
{
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 3, 2, 1, net, 3, NULL, NULL, 0.5f, 0.05f, 7u};
    open_model(&sp);
    float x[SHOTS * 2], y[SHOTS], a[64];
    support(x, y, SHOTS);
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 3, ME_GUARD, NULL), ME_OK);
    size_t len = 0;
    CHECK_STATUS(me_state_write(&sess, state, sizeof state, &len), ME_OK); /* B: the adapted state */
    CHECK_STATUS(me_reset(&sess), ME_OK);                                   /* A: theta0 */
    const uint32_t n = me_theta_size(&sess);
    memcpy(a, me_theta(&sess), 4u * n);
    unsigned long tried = 0, refused = 0, wrong = 0, accepted = 0;
    for (size_t cut = 0; cut < len; cut++) {
        tried++;
        const me_status st = me_state_read(&sess, state, cut);
        if (st != ME_OK) refused++;
        if (st == ME_OK || !same_state(a, n)) wrong++;
    }
    for (size_t at = 0; at < len; at++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, state, len);
            bad[at] ^= (unsigned char)(1u << bit);
            tried++;
            const me_status st = me_state_read(&sess, bad, len);
            if (st != ME_OK) refused++;
            if (st == ME_OK) accepted++;
            if (st == ME_OK || !same_state(a, n)) wrong++;
        }
    CHECK(wrong == 0 && accepted == 0 && refused == tried);
    CHECK(tried == len + 8u * len);
    printf("state corruption sweep: %lu-byte state, %lu reads (%lu truncations, %lu bit flips), %lu refused, "
           "%lu wrong states returned\n", (unsigned long)len, tried, (unsigned long)len, 8ul * len, refused, wrong);
}

static void test_gauss_newton_and_prototypes(void)
{
    const tb_layer ridge[] = {{ME_LAYER_DENSE, 0, 2, 4}, {ME_LAYER_TANH, 0, 4, 4}, {ME_LAYER_DENSE, 3, 4, 1}};
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_GAUSS_NEWTON, 1, 2, 1, ridge, 3, NULL, NULL, 0.6f,
                  logf(1e-2f), 11u};
    open_model(&sp);
    float x[SHOTS * 2], y[SHOTS], theta[16];
    support(x, y, SHOTS);
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 1, ME_GUARD, NULL), ME_OK);
    size_t len = 0;
    const uint32_t n = me_theta_size(&sess);
    memcpy(theta, me_theta(&sess), 4u * n);
    CHECK_STATUS(me_state_write(&sess, state, sizeof state, &len), ME_OK);
    CHECK_STATUS(me_reset(&sess), ME_OK);
    CHECK_STATUS(me_state_read(&sess, state, len), ME_OK);
    CHECK(same_state(theta, n));

    const tb_layer emb[] = {{ME_LAYER_DENSE, 0, 2, 3}};
    tb_spec pp = {ME_TASK_CLASSIFICATION, ME_LOSS_CROSS_ENTROPY, ME_SOLVER_PROTOTYPES, 0, 2, 3, emb, 1, NULL, NULL,
                  1.f, 0.f, 2u};
    open_model(&pp);
    CHECK_STATUS(me_state_write(&sess, state, sizeof state, &len), ME_ERR_STATE); /* nothing adapted yet */
    const float labels[SHOTS] = {0.f, 1.f, 2.f, 0.f, 1.f, 2.f, 3.f, 3.f};
    CHECK_STATUS(me_adapt(&sess, x, labels, SHOTS, 0, 0, NULL), ME_OK);
    float protos[4 * 3], logits[SHOTS * 4], logits2[SHOTS * 4];
    CHECK(me_theta_size(&sess) == 12);
    memcpy(protos, me_theta(&sess), sizeof protos);
    CHECK_STATUS(me_predict(&sess, x, SHOTS, logits), ME_OK);
    CHECK_STATUS(me_state_write(&sess, state, sizeof state, &len), ME_OK);
    CHECK(len == ME_STATE_HEADER_BYTES + 4u * 12u + 4u);
    CHECK_STATUS(me_reset(&sess), ME_OK);
    CHECK_STATUS(me_state_read(&sess, state, len), ME_OK);
    CHECK(me_classes(&sess) == 4 && same_state(protos, 12));
    CHECK_STATUS(me_predict(&sess, x, SHOTS, logits2), ME_OK);
    CHECK(memcmp(logits, logits2, sizeof logits) == 0);
    /* more prototypes than this session's max_shots holds */
    static unsigned char small[1 << 14];
    me_session s3;
    CHECK_STATUS(me_session_init(&s3, &model, small, sizeof small, 2), ME_OK);
    CHECK_STATUS(me_state_read(&s3, state, len), ME_ERR_ARGUMENT);
    CHECK(me_theta_size(&s3) == 0);
}

int main(void)
{
    CHECK(me_api_version() == ME_API_VERSION);
    test_round_trip_and_refusals();
    test_corruption_sweep();
    test_gauss_newton_and_prototypes();
    return check_report("test_state");
}
