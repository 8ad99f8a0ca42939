/* me_advantages: returns against hand-computed values, the baseline fit against its defining properties (an
 * exactly representable return leaves zero advantage; residuals are orthogonal to every feature), the
 * standardisation, and the refusals. The numpy twin is compared on random episodes in tests/test_meta_rl.py. */
#include <math.h>
#include <string.h>

#include "check.h"

#define E 3
#define T 40
#define O 2
#define F (2 * O + 4)

static double work[2 * F * F + 2 * F];

static void test_returns(void)
{
    /* one episode, gamma 0.5: R = [1 + 0.5 (2 + 0.5 * 3), 2 + 0.5 * 3, 3] */
    const float obs[3] = {0.1f, -0.2f, 0.3f}, rewards[3] = {1.f, 2.f, 3.f};
    float ret[3], adv[3];
    CHECK(me_advantages_work(1) == 2u * 6u * 6u + 2u * 6u);
    CHECK_STATUS(me_advantages(obs, rewards, 1, 3, 1, 0.5f, 0, work, ret, adv), ME_OK);
    CHECK_CLOSE(ret[0], 2.75, 1e-6);
    CHECK_CLOSE(ret[1], 3.5, 1e-6);
    CHECK_CLOSE(ret[2], 3.0, 1e-6);
}

static void test_exact_fit(void)
{
    /* the first observation is the return itself, so the baseline fits it (up to the 1e-5 ridge) */
    static float obs[E * T * O], rewards[E * T], ret[E * T], adv[E * T];
    uint32_t seed = 7u;
    for (int i = 0; i < E * T; i++) rewards[i] = 0.05f * check_uniform(&seed);
    CHECK_STATUS(me_advantages(obs, rewards, E, T, O, 0.9f, 0, work, ret, NULL), ME_ERR_NULL);
    memset(obs, 0, sizeof obs);
    /* returns first (obs is not read for them), then place them as the first observation */
    CHECK_STATUS(me_advantages(obs, rewards, E, T, O, 0.9f, 0, work, ret, adv), ME_OK);
    for (int i = 0; i < E * T; i++) obs[i * O] = ret[i], obs[i * O + 1] = 0.3f * check_uniform(&seed);
    CHECK_STATUS(me_advantages(obs, rewards, E, T, O, 0.9f, 0, work, ret, adv), ME_OK);
    double worst = 0.0;
    for (int i = 0; i < E * T; i++)
        if (fabs(adv[i]) > worst) worst = fabs(adv[i]);
    CHECK(worst < 1e-3);
}

static void test_orthogonal_and_standardised(void)
{
    static float obs[E * T * O], rewards[E * T], adv[E * T], norm[E * T];
    uint32_t seed = 3u;
    for (int i = 0; i < E * T * O; i++) obs[i] = 2.f * check_uniform(&seed);
    for (int i = 0; i < E * T; i++) rewards[i] = -1.f + check_uniform(&seed);
    CHECK_STATUS(me_advantages(obs, rewards, E, T, O, 0.99f, 0, work, NULL, adv), ME_OK);
    /* least squares: sum_t phi_j(t) A(t) = -reg w_j, tiny; checked for the constant, time and o_0 features */
    double s1 = 0.0, st = 0.0, so = 0.0, ss = 0.0;
    for (int e = 0; e < E; e++)
        for (int t = 0; t < T; t++) {
            const double a = adv[e * T + t];
            s1 += a, st += a * t / 100.0, so += a * obs[(e * T + t) * O], ss += a * a;
        }
    CHECK(ss > 1.0); /* the random returns are not all explained */
    CHECK(fabs(s1) < 1e-3 && fabs(st) < 1e-3 && fabs(so) < 1e-3);
    CHECK_STATUS(me_advantages(obs, rewards, E, T, O, 0.99f, ME_ADV_NORMALIZE, work, NULL, norm), ME_OK);
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < E * T; i++) mean += norm[i];
    mean /= E * T;
    for (int i = 0; i < E * T; i++) var += (norm[i] - mean) * (norm[i] - mean);
    var /= E * T;
    CHECK_CLOSE(mean, 0.0, 1e-6);
    CHECK_CLOSE(var, 1.0, 1e-5);
    /* standardisation is affine: norm = (adv - mean(adv)) / std(adv) */
    CHECK_CLOSE(norm[5] - norm[9], (adv[5] - adv[9]) / sqrt(ss / (E * T) - (s1 / (E * T)) * (s1 / (E * T))), 1e-4);
}

static void test_refusals(void)
{
    float obs[4] = {0}, rewards[2] = {1.f, 2.f}, adv[2];
    CHECK_STATUS(me_advantages(obs, rewards, 0, 2, 2, 0.9f, 0, work, NULL, adv), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_advantages(obs, rewards, 1, 2, 2, 1.5f, 0, work, NULL, adv), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_advantages(obs, rewards, 1, 2, 2, 0.9f, 4u, work, NULL, adv), ME_ERR_ARGUMENT);
    CHECK_STATUS(me_advantages(obs, rewards, 1, 2, 2, 0.9f, 0, NULL, NULL, adv), ME_ERR_NULL);
    rewards[1] = NAN;
    CHECK_STATUS(me_advantages(obs, rewards, 1, 2, 2, 0.9f, 0, work, NULL, adv), ME_ERR_NONFINITE);
    rewards[1] = 2.f;
    obs[3] = INFINITY;
    CHECK_STATUS(me_advantages(obs, rewards, 1, 2, 2, 0.9f, 0, work, NULL, adv), ME_ERR_NONFINITE);
}

int main(void)
{
    test_returns();
    test_exact_fit();
    test_orthogonal_and_standardised();
    test_refusals();
    return check_report("test_advantages");
}
