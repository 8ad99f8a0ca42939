/* Predictive intervals and guided reference points (format 4): a model that is plain Bayesian linear regression
 * (one adapted dense layer, identity normalisation: features [x1, x2, 1]) against the closed form computed here in
 * double precision, the Woodbury suggestion against refitted posteriors, and the parser's and API's refusals. */
#include <math.h>
#include <string.h>

#include "check.h"

enum { SHOTS = 8, P = 3 };
static unsigned char buf[4096];
static unsigned char arena[1 << 16];
static me_model model;
static me_session sess;
static const float LEVELS[3] = {0.5f, 0.8f, 0.95f}, FACTORS[3] = {0.7f, 1.3f, 2.0f}, SIGMA = 0.25f;
static const float RATE = -1.f; /* prior precision exp(-1) + min_damping on every parameter */

/* the linear model with the interval section appended; returns the file's length */
static size_t build(int with_section)
{
    const tb_layer lin[] = {{ME_LAYER_DENSE, 3, 2, 1}};
    const tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_GAUSS_NEWTON, 1, 2, 1, lin, 1, NULL, NULL, 0.5f,
                        RATE, 5u};
    size_t len = tb_build(buf, sizeof buf, &sp);
    CHECK(len > 0);
    buf[4] = 4;
    const float floor_ = 1e-6f;
    uint32_t bits;
    memcpy(&bits, &floor_, 4);
    tb_put_u32(buf + 56, bits);
    if (with_section) {
        tb_put_u32(buf + 60, (uint32_t)len);
        tb_put_u32(buf + len, 3u);
        float values[7] = {SIGMA, LEVELS[0], LEVELS[1], LEVELS[2], FACTORS[0], FACTORS[1], FACTORS[2]};
        memcpy(buf + len + 4, values, sizeof values); /* little-endian hosts (the tests' targets) */
        len += 4 + sizeof values;
        tb_put_u32(buf + 8, (uint32_t)len);
    }
    tb_fix_crc(buf, len);
    return len;
}

static void open_model(int with_section)
{
    const size_t len = build(with_section);
    CHECK_STATUS(me_model_load(&model, buf, len), ME_OK);
    CHECK_STATUS(me_session_init(&sess, &model, arena, sizeof arena, SHOTS), ME_OK);
}

/* inverse of the 3x3 posterior precision sum_r f_r f_r^T + diag(lambda), features f = [x1, x2, 1] */
static void posterior(const float *xs, int k, double cov[P][P])
{
    const double lam = exp(RATE) + 1e-6;
    double h[P][P] = {{lam, 0, 0}, {0, lam, 0}, {0, 0, lam}};
    for (int r = 0; r < k; r++) {
        const double f[P] = {xs[2 * r], xs[2 * r + 1], 1.0};
        for (int i = 0; i < P; i++)
            for (int j = 0; j < P; j++) h[i][j] += f[i] * f[j];
    }
    const double det = h[0][0] * (h[1][1] * h[2][2] - h[1][2] * h[2][1]) -
                       h[0][1] * (h[1][0] * h[2][2] - h[1][2] * h[2][0]) +
                       h[0][2] * (h[1][0] * h[2][1] - h[1][1] * h[2][0]);
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) { /* cofactor of (j, i) */
            const int a = (j + 1) % 3, b = (j + 2) % 3, c = (i + 1) % 3, d = (i + 2) % 3;
            cov[i][j] = (h[a][c] * h[b][d] - h[a][d] * h[b][c]) / det;
        }
}

static double quad(double cov[P][P], const float *x)
{
    const double f[P] = {x[0], x[1], 1.0};
    double q = 0.0;
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) q += f[i] * cov[i][j] * f[j];
    return q;
}

static void test_interval_is_the_posterior_predictive(void)
{
    open_model(1);
    uint32_t rng = 7u;
    float xs[2 * 3], ys[3], xq[2 * 20], out[20], lo[20], hi[20];
    for (int i = 0; i < 6; i++) xs[i] = 2.f * check_uniform(&rng);
    for (int i = 0; i < 3; i++) ys[i] = 1.f + xs[2 * i] - 0.5f * xs[2 * i + 1];
    for (int i = 0; i < 40; i++) xq[i] = 3.f * check_uniform(&rng);
    me_adapt_info info;
    CHECK_STATUS(me_adapt(&sess, xs, ys, 3, 1, 0, &info), ME_OK);
    double cov[P][P];
    posterior(xs, 3, cov);
    const float levels[3] = {0.8f, 0.95f, 0.875f};
    const double factors[3] = {1.3, 2.0, 1.65}; /* 0.875: halfway between the fitted 0.8 and 0.95 */
    for (int l = 0; l < 3; l++) {
        CHECK_STATUS(me_predict_interval(&sess, xs, 3, xq, 20, levels[l], out, lo, hi), ME_OK);
        float pred[20];
        CHECK_STATUS(me_predict(&sess, xq, 20, pred), ME_OK);
        for (int r = 0; r < 20; r++) {
            const double half = factors[l] * SIGMA * sqrt(1.0 + quad(cov, xq + 2 * r));
            CHECK_CLOSE(out[r], pred[r], 1e-6);
            CHECK_CLOSE(hi[r] - out[r], half, 2e-5);
            CHECK_CLOSE(out[r] - lo[r], half, 2e-5);
        }
    }
    /* no support: the prior's spread */
    posterior(xs, 0, cov);
    CHECK_STATUS(me_predict_interval(&sess, NULL, 0, xq, 1, 0.95f, out, lo, hi), ME_OK);
    CHECK_CLOSE(hi[0] - out[0], 2.0 * SIGMA * sqrt(1.0 + quad(cov, xq)), 2e-5);
    /* outside the fitted levels, NULLs, more support than max_shots, NaN */
    CHECK_STATUS(me_predict_interval(&sess, xs, 3, xq, 1, 0.99f, out, lo, hi), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_predict_interval(&sess, xs, 3, xq, 1, 0.4f, out, lo, hi), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_predict_interval(&sess, NULL, 3, xq, 1, 0.95f, out, lo, hi), ME_ERR_NULL);
    CHECK_STATUS(me_predict_interval(&sess, xs, SHOTS + 1, xq, 1, 0.95f, out, lo, hi), ME_ERR_SHOTS);
    xq[0] = NAN;
    CHECK_STATUS(me_predict_interval(&sess, xs, 3, xq, 1, 0.95f, out, lo, hi), ME_ERR_NONFINITE);
}

static void test_suggest_is_the_largest_variance_reduction(void)
{
    open_model(1);
    uint32_t rng = 11u;
    float xs[2 * 2], cand[2 * SHOTS], scores[SHOTS];
    for (int i = 0; i < 4; i++) xs[i] = check_uniform(&rng);
    for (int i = 0; i < 2 * SHOTS; i++) cand[i] = 3.f * check_uniform(&rng);
    uint32_t best = 99u;
    CHECK_STATUS(me_suggest(&sess, xs, 2, cand, SHOTS, &best, scores), ME_OK);
    /* brute force: the integrated variance over the candidates after refitting with each one */
    double cov[P][P], before = 0.0;
    posterior(xs, 2, cov);
    for (int c = 0; c < SHOTS; c++) before += quad(cov, cand + 2 * c);
    uint32_t ref_best = 0u;
    double ref_top = -1.0;
    for (int k = 0; k < SHOTS; k++) {
        float both[6] = {xs[0], xs[1], xs[2], xs[3], cand[2 * k], cand[2 * k + 1]};
        posterior(both, 3, cov);
        double after = 0.0;
        for (int c = 0; c < SHOTS; c++) after += quad(cov, cand + 2 * c);
        const double reduction = (double)SIGMA * SIGMA * (before - after); /* y_std 1 */
        CHECK_CLOSE(scores[k], reduction, 1e-5 * fmax(1.0, fabs(reduction)));
        if (reduction > ref_top) {
            ref_top = reduction;
            ref_best = (uint32_t)k;
        }
    }
    CHECK(best == ref_best);
    CHECK_STATUS(me_suggest(&sess, xs, 2, cand, SHOTS + 1, &best, scores), ME_ERR_SHOTS);
    CHECK_STATUS(me_suggest(&sess, NULL, 0, cand, SHOTS, &best, NULL), ME_OK);
}

/* the integrated variance over the candidates after the support plus the candidates in set[0..b) */
static double variance_after(const float *xs, int k, const float *cand, const uint32_t *set, int b)
{
    float rows[2 * (2 + SHOTS)];
    memcpy(rows, xs, sizeof(float) * 2u * (size_t)k);
    for (int i = 0; i < b; i++) memcpy(rows + 2 * (k + i), cand + 2 * set[i], 2 * sizeof(float));
    double cov[P][P], v = 0.0;
    posterior(rows, k + b, cov);
    for (int c = 0; c < SHOTS; c++) v += quad(cov, cand + 2 * c);
    return v;
}

static void test_planned_points_are_the_best_set(void)
{
    open_model(1);
    uint32_t rng = 5u;
    float xs[2], cand[2 * SHOTS], work[SHOTS * P];
    for (int i = 0; i < 2; i++) xs[i] = check_uniform(&rng);
    for (int i = 0; i < 2 * SHOTS; i++) cand[i] = 3.f * check_uniform(&rng) - 1.f;
    uint8_t exclude[SHOTS] = {0};
    exclude[2] = 1;
    uint32_t plan[3] = {99u, 99u, 99u};
    CHECK_STATUS(me_plan_points(&sess, xs, 1, cand, SHOTS, 3, exclude, plan, work), ME_OK);
    /* brute force over every 3-subset of the allowed candidates */
    double best = INFINITY;
    for (uint32_t a = 0; a < SHOTS; a++)
        for (uint32_t b = a + 1; b < SHOTS; b++)
            for (uint32_t c = b + 1; c < SHOTS; c++) {
                if (exclude[a] || exclude[b] || exclude[c]) continue;
                const uint32_t set[3] = {a, b, c};
                best = fmin(best, variance_after(xs, 1, cand, set, 3));
            }
    CHECK(plan[0] != plan[1] && plan[1] != plan[2] && plan[0] != plan[2]);
    CHECK(!exclude[plan[0]] && !exclude[plan[1]] && !exclude[plan[2]]);
    CHECK_CLOSE(variance_after(xs, 1, cand, plan, 3), best, 1e-6 * best);
    /* the first is the planned point that alone lowers the variance most */
    for (int i = 1; i < 3; i++) CHECK(variance_after(xs, 1, cand, plan, 1) <= variance_after(xs, 1, cand, plan + i, 1));
    uint8_t all[SHOTS];
    memset(all, 1, sizeof all);
    all[0] = 0;
    CHECK_STATUS(me_plan_points(&sess, xs, 1, cand, SHOTS, 2, all, plan, work), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_plan_points(&sess, xs, 1, cand, SHOTS, ME_MAX_PLAN + 1u, NULL, plan, work), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_plan_points(&sess, xs, 1, cand, SHOTS, 2, NULL, plan, NULL), ME_ERR_NULL);
}

static void test_refusals(void)
{
    /* a format-4 model without the section loads, but has no intervals */
    open_model(0);
    float x[2] = {0.f, 0.f}, o, l, h;
    uint32_t best;
    CHECK_STATUS(me_predict_interval(&sess, NULL, 0, x, 1, 0.95f, &o, &l, &h), ME_ERR_UNSUPPORTED);
    CHECK_STATUS(me_suggest(&sess, NULL, 0, x, 1, &best, NULL), ME_ERR_UNSUPPORTED);
    /* version 3 keeps offset 60 reserved */
    size_t len = build(1);
    buf[4] = 3;
    tb_fix_crc(buf, len);
    CHECK_STATUS(me_model_load(&model, buf, len), ME_ERR_FORMAT);
    /* levels not increasing, a zero noise scale, too many levels, a section past the end */
    const size_t at[4] = {12, 4, 0, 0};
    for (int bad = 0; bad < 4; bad++) {
        len = build(1);
        const uint32_t off = (uint32_t)(len - 32);
        if (bad == 0 || bad == 1) {
            const float v = bad == 0 ? 0.3f : 0.f;
            memcpy(buf + off + at[bad], &v, 4);
        } else if (bad == 2) {
            tb_put_u32(buf + off, ME_MAX_LEVELS + 1u);
        } else {
            tb_put_u32(buf + off, 5u); /* 5 levels do not fit the bytes left */
        }
        tb_fix_crc(buf, len);
        CHECK(me_model_load(&model, buf, len) != ME_OK);
    }
}

int main(void)
{
    test_interval_is_the_posterior_predictive();
    test_suggest_is_the_largest_variance_reduction();
    test_planned_points_are_the_best_set();
    test_refusals();
    return check_report("test_intervals");
}
