/* Adaptation: whole-network gradients against finite differences, the guard's rollback, refusals of bad input,
 * normalisation, the Gauss-Newton solver, classification and prototypes. */
#include <math.h>
#include <string.h>

#include "check.h"

enum { SHOTS = 8 };
static unsigned char buf[4096];
static unsigned char arena[1 << 18];
static me_model model;
static me_session sess;

static void open_model(const tb_spec *sp)
{
    size_t len = tb_build(buf, sizeof buf, sp);
    CHECK(len > 0);
    CHECK_STATUS(me_model_load(&model, buf, len), ME_OK);
    CHECK(me_arena_bytes(&model, SHOTS) <= sizeof arena);
    CHECK_STATUS(me_session_init(&sess, &model, arena, sizeof arena, SHOTS), ME_OK);
}

static void support(float *x, float *y, uint32_t n, uint32_t in)
{
    uint32_t rng = 99u;
    for (uint32_t r = 0; r < n; r++) {
        float s = 0.f;
        for (uint32_t i = 0; i < in; i++) {
            x[r * in + i] = 2.f * check_uniform(&rng);
            s += x[r * in + i];
        }
        y[r] = sinf(s) + 0.5f;
    }
}

/* one unguarded SGD step with equal rates r gives the gradient (theta0 - theta1) / r; compare it with central
 * differences of the support loss */
static void check_gradient(const tb_layer *layers, uint32_t n_layers, const char *name)
{
    const float rate = 0.01f;
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 1, 2, 1, layers, n_layers, NULL, NULL, 0.7f,
                  rate, 3u};
    open_model(&sp);
    float x[5 * 2], y[5], theta0[256], theta1[256], probe[256], lp, lm;
    support(x, y, 5, 2);
    const uint32_t p = me_theta_size(&sess);
    CHECK(p > 0 && p <= 256);
    memcpy(theta0, me_theta(&sess), 4 * p);
    CHECK_STATUS(me_adapt(&sess, x, y, 5, 1, 0, NULL), ME_OK);
    memcpy(theta1, me_theta(&sess), 4 * p);
    for (uint32_t i = 0; i < p; i++) {
        const float eps = 1e-3f;
        memcpy(probe, theta0, 4 * p);
        probe[i] = theta0[i] + eps;
        me_set_theta(&sess, probe, p);
        me_support_loss(&sess, x, y, 5, &lp);
        probe[i] = theta0[i] - eps;
        me_set_theta(&sess, probe, p);
        me_support_loss(&sess, x, y, 5, &lm);
        const double fd = ((double)lp - (double)lm) / (2.0 * eps), g = ((double)theta0[i] - theta1[i]) / rate;
        if (fabs(fd - g) > 2e-3 + 2e-3 * fabs(fd)) {
            check_failures++;
            fprintf(stderr, "%s: gradient[%u] = %g, finite difference %g\n", name, i, g, fd);
        }
    }
}

static void test_gradients(void)
{
    const tb_layer all[] = {{ME_LAYER_DENSE, 3, 2, 6}, {ME_LAYER_TANH, 0, 6, 6}, {ME_LAYER_DENSE, 3, 6, 5},
                            {ME_LAYER_SIGMOID, 0, 5, 5}, {ME_LAYER_DENSE, 3, 5, 1}, {ME_LAYER_SKIP, 3, 2, 1}};
    check_gradient(all, 6, "all adapted, tanh + sigmoid + skip");
    /* the first weight and a later bias: the gradient flows through frozen layers */
    const tb_layer some[] = {{ME_LAYER_DENSE, 1, 2, 6}, {ME_LAYER_RELU, 0, 6, 6}, {ME_LAYER_DENSE, 0, 6, 5},
                             {ME_LAYER_TANH, 0, 5, 5}, {ME_LAYER_DENSE, 2, 5, 1}};
    check_gradient(some, 5, "first weight and head bias adapted, relu");
}

static const tb_layer net[] = {{ME_LAYER_DENSE, 3, 1, 8}, {ME_LAYER_TANH, 0, 8, 8}, {ME_LAYER_DENSE, 3, 8, 1}};

static void test_guard(void)
{
    float x[SHOTS], y[SHOTS], theta0[64];
    support(x, y, SHOTS, 1);
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 5, 1, 1, net, 3, NULL, NULL, 0.8f, 0.05f, 5u};
    open_model(&sp);
    me_adapt_info info;
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 5, ME_GUARD, &info), ME_OK);
    CHECK(info.steps_run == 5 && info.steps_kept == 5 && info.loss_after < info.loss_before);
    /* a huge rate overshoots: the first step raises the loss, is rolled back, and adaptation stops */
    sp.rate = 500.f;
    open_model(&sp);
    memcpy(theta0, me_theta(&sess), 4 * me_theta_size(&sess));
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 5, ME_GUARD, &info), ME_OK);
    CHECK(info.steps_run == 1 && info.steps_kept == 0 && info.loss_after == info.loss_before);
    CHECK(memcmp(theta0, me_theta(&sess), 4 * me_theta_size(&sess)) == 0);
    /* unguarded, the same steps are all taken */
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 3, 0, &info), ME_OK);
    CHECK(info.steps_kept == 3 && memcmp(theta0, me_theta(&sess), 4 * me_theta_size(&sess)) != 0);
    CHECK_STATUS(me_reset(&sess), ME_OK);
    CHECK(memcmp(theta0, me_theta(&sess), 4 * me_theta_size(&sess)) == 0);
}

static void test_refusals(void)
{
    float x[SHOTS + 1], y[SHOTS + 1], theta0[64], out[4];
    support(x, y, SHOTS + 1, 1);
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 5, 1, 1, net, 3, NULL, NULL, 0.8f, 0.05f, 5u};
    open_model(&sp);
    const uint32_t p = me_theta_size(&sess);
    memcpy(theta0, me_theta(&sess), 4 * p);
    x[2] = NAN;
    CHECK_STATUS(me_adapt(&sess, x, y, 4, 5, ME_GUARD, NULL), ME_ERR_NONFINITE);
    CHECK_STATUS(me_predict(&sess, x, 4, out), ME_ERR_NONFINITE);
    x[2] = 0.5f;
    y[1] = INFINITY;
    CHECK_STATUS(me_adapt(&sess, x, y, 4, 5, ME_GUARD, NULL), ME_ERR_NONFINITE);
    y[1] = 0.5f;
    CHECK_STATUS(me_adapt(&sess, x, y, 0, 5, ME_GUARD, NULL), ME_ERR_SHOTS);
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS + 1, 5, ME_GUARD, NULL), ME_ERR_SHOTS);
    CHECK_STATUS(me_adapt(&sess, NULL, y, 4, 5, ME_GUARD, NULL), ME_ERR_NULL);
    CHECK(memcmp(theta0, me_theta(&sess), 4 * p) == 0); /* refused input leaves the state alone */
    theta0[0] = NAN;
    CHECK_STATUS(me_set_theta(&sess, theta0, p), ME_ERR_NONFINITE);
    CHECK_STATUS(me_set_theta(&sess, theta0, p - 1), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_support_loss(&sess, x, y, 4, NULL), ME_ERR_NULL);
}

static void test_normalisation(void)
{
    /* y = 10 + 3 * (2 * (x - 1) / 2 + 0.5) */
    const tb_layer lin[] = {{ME_LAYER_DENSE, 3, 1, 1}};
    const float norm[4] = {1.f, 2.f, 10.f, 3.f}, params[2] = {2.f, 0.5f};
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 1, 1, 1, lin, 1, norm, params, 0.f, 0.1f, 1u};
    open_model(&sp);
    const float x[3] = {3.f, 1.f, -1.f};
    float out[3];
    CHECK_STATUS(me_predict(&sess, x, 3, out), ME_OK);
    CHECK_CLOSE(out[0], 17.5, 1e-5);
    CHECK_CLOSE(out[1], 11.5, 1e-5);
    CHECK_CLOSE(out[2], 5.5, 1e-5);
    /* more rows than max_shots are predicted in chunks */
    float many[3 * SHOTS], pred[3 * SHOTS];
    for (int i = 0; i < 3 * SHOTS; i++) many[i] = (float)i;
    CHECK_STATUS(me_predict(&sess, many, 3 * SHOTS, pred), ME_OK);
    CHECK_CLOSE(pred[3 * SHOTS - 1], 10.0 + 3.0 * ((3.0 * SHOTS - 2.0) + 0.5), 1e-4);
}

static void test_gauss_newton(void)
{
    /* a frozen tanh body and an adapted linear head + skip: one step with a tiny prior precision solves the
     * least-squares fit; the targets are a linear function of the features, so it fits them exactly */
    const tb_layer ridge[] = {{ME_LAYER_DENSE, 0, 2, 4}, {ME_LAYER_TANH, 0, 4, 4}, {ME_LAYER_DENSE, 3, 4, 1},
                              {ME_LAYER_SKIP, 3, 2, 1}};
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_GAUSS_NEWTON, 1, 2, 1, ridge, 4, NULL, NULL, 0.6f,
                  logf(1e-8f), 11u};
    open_model(&sp);
    float x[SHOTS * 2], y[SHOTS], out[SHOTS];
    support(x, y, SHOTS, 2);
    for (int r = 0; r < SHOTS; r++) y[r] = 1.f + 2.f * x[2 * r] - x[2 * r + 1];
    me_adapt_info info;
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 1, ME_GUARD, &info), ME_OK);
    CHECK(info.steps_kept == 1 && info.loss_after < 1e-6f);
    CHECK_STATUS(me_predict(&sess, x, SHOTS, out), ME_OK);
    for (int r = 0; r < SHOTS; r++) CHECK_CLOSE(out[r], y[r], 2e-3);
    /* a strong prior (large precision) keeps the head where it was */
    sp.rate = logf(1e8f);
    open_model(&sp);
    float theta0[16];
    memcpy(theta0, me_theta(&sess), 4 * me_theta_size(&sess));
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 1, 0, &info), ME_OK);
    for (uint32_t i = 0; i < me_theta_size(&sess); i++) CHECK_CLOSE(me_theta(&sess)[i], theta0[i], 1e-5);
    /* the damping floor comes from the file (version 3): a tiny prior with a huge floor keeps the head too */
    sp.rate = logf(1e-8f);
    const size_t len = tb_build(buf, sizeof buf, &sp);
    buf[4] = 3;
    const float floor_ = 1e8f;
    uint32_t bits;
    memcpy(&bits, &floor_, 4);
    tb_put_u32(buf + 56, bits);
    tb_fix_crc(buf, len);
    CHECK_STATUS(me_model_load(&model, buf, len), ME_OK);
    CHECK_STATUS(me_session_init(&sess, &model, arena, sizeof arena, SHOTS), ME_OK);
    CHECK_STATUS(me_adapt(&sess, x, y, SHOTS, 1, 0, &info), ME_OK);
    for (uint32_t i = 0; i < me_theta_size(&sess); i++) CHECK_CLOSE(me_theta(&sess)[i], theta0[i], 1e-5);
}

static void test_classification(void)
{
    const tb_layer cls[] = {{ME_LAYER_DENSE, 3, 2, 6}, {ME_LAYER_RELU, 0, 6, 6}, {ME_LAYER_DENSE, 3, 6, 3}};
    tb_spec sp = {ME_TASK_CLASSIFICATION, ME_LOSS_CROSS_ENTROPY, ME_SOLVER_SGD, 3, 2, 3, cls, 3, NULL, NULL, 0.8f,
                  0.2f, 17u};
    open_model(&sp);
    float x[6 * 2], labels[6] = {0.f, 1.f, 2.f, 0.f, 1.f, 2.f}, y[6], logits[6 * 3];
    support(x, y, 6, 2);
    me_adapt_info info;
    CHECK_STATUS(me_adapt(&sess, x, labels, 6, 5, ME_GUARD, &info), ME_OK);
    CHECK(info.steps_kept >= 1 && info.loss_after < info.loss_before);
    CHECK_STATUS(me_predict(&sess, x, 6, logits), ME_OK);
    CHECK(me_classes(&sess) == 3);
    labels[2] = 3.f;
    CHECK_STATUS(me_adapt(&sess, x, labels, 6, 1, ME_GUARD, NULL), ME_ERR_LABEL);
    labels[2] = 1.5f;
    CHECK_STATUS(me_adapt(&sess, x, labels, 6, 1, ME_GUARD, NULL), ME_ERR_LABEL);
    labels[2] = -1.f;
    CHECK_STATUS(me_adapt(&sess, x, labels, 6, 1, ME_GUARD, NULL), ME_ERR_LABEL);
}

static void test_prototypes(void)
{
    /* identity embedding: prototypes are the class means of the inputs */
    const tb_layer emb[] = {{ME_LAYER_DENSE, 0, 2, 2}};
    const float params[6] = {1.f, 0.f, 0.f, 1.f, 0.f, 0.f};
    tb_spec sp = {ME_TASK_CLASSIFICATION, ME_LOSS_CROSS_ENTROPY, ME_SOLVER_PROTOTYPES, 0, 2, 2, emb, 1, NULL,
                  params, 0.f, 0.f, 1u};
    open_model(&sp);
    const float x[6] = {0.f, 0.f, 2.f, 0.f, 0.f, 4.f}, labels[3] = {0.f, 0.f, 1.f}, q[2] = {1.f, 1.f};
    float logits[2];
    CHECK_STATUS(me_predict(&sess, q, 1, logits), ME_ERR_STATE);
    CHECK_STATUS(me_adapt(&sess, x, labels, 3, 0, 0, NULL), ME_OK);
    CHECK(me_classes(&sess) == 2 && me_theta_size(&sess) == 4);
    CHECK_CLOSE(me_theta(&sess)[0], 1.0, 0);
    CHECK_CLOSE(me_theta(&sess)[3], 4.0, 0);
    CHECK_STATUS(me_predict(&sess, q, 1, logits), ME_OK);
    CHECK_CLOSE(logits[0], -1.0, 0);
    CHECK_CLOSE(logits[1], -10.0, 0);
    const float gap[3] = {0.f, 2.f, 2.f}; /* class 1 has no sample */
    CHECK_STATUS(me_adapt(&sess, x, gap, 3, 0, 0, NULL), ME_ERR_LABEL);
    CHECK(me_classes(&sess) == 2); /* the earlier prototypes stay */
    const float three[6] = {0.f, 0.f, 1.f, 1.f, 2.f, 2.f};
    CHECK_STATUS(me_set_theta(&sess, three, 6), ME_OK);
    CHECK(me_classes(&sess) == 3);
    CHECK_STATUS(me_set_theta(&sess, three, 5), ME_ERR_ARGUMENT);
}

int main(void)
{
    test_gradients();
    test_guard();
    test_refusals();
    test_normalisation();
    test_gauss_newton();
    test_classification();
    test_prototypes();
    return check_report("test_adapt");
}
