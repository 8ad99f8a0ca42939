/* Model-predictive control (format 5): the random stream against Vigna's sequential splitmix64, random shooting on
 * a hand-checkable linear model (N = 2, H = 1), the angle wrap, CEM against a reference written out here, the
 * window of transitions and its re-adaptation against me_reset + me_adapt, the arena, and the section's refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "check.h"

static unsigned char buf[4096], buf2[4096];
static unsigned char arena[1 << 16], arena2[1 << 16];
static me_model model, model2;
static me_session sess, sess2;

typedef struct ctl_spec {
    uint32_t planner, horizon, candidates, iterations, elites, window, adapt_every;
    uint64_t seed;
    float low, high, target[2];
    double q[2], r;
    uint32_t n_wrap, wrap;
} ctl_spec;

static void put_u16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v & 0xFFu);
    p[1] = (unsigned char)(v >> 8);
}

static void put_bytes(unsigned char *p, const void *v, size_t n) { memcpy(p, v, n); } /* little-endian hosts */

/* a tb_build file (64-byte header) as format 5: header of 68 bytes (offset 64: the control section's offset),
 * every section moved 4 bytes on, the control section for S = 2, A = 1 appended; returns the new length */
static size_t add_control(unsigned char *b, size_t len, const ctl_spec *c)
{
    memmove(b + 68, b + 64, len - 64);
    for (uint32_t f = 40; f <= 52; f += 4) tb_put_u32(b + f, me_read_u32(b + f) + 4u);
    len += 4;
    put_u16(b + 4, 5u);
    put_u16(b + 6, 68u);
    const uint32_t off = (uint32_t)len;
    tb_put_u32(b + 64, off);
    unsigned char *p = b + off;
    memset(p, 0, 48);
    tb_put_u32(p, 2u);
    tb_put_u32(p + 4, 1u);
    p[8] = (unsigned char)c->planner;
    p[9] = (unsigned char)c->n_wrap;
    const uint32_t fields[6] = {c->horizon, c->candidates, c->iterations, c->elites, c->window, c->adapt_every};
    for (uint32_t i = 0; i < 6; i++) tb_put_u32(p + 12 + 4 * i, fields[i]);
    tb_put_u32(p + 36, (uint32_t)(c->seed & 0xFFFFFFFFu));
    tb_put_u32(p + 40, (uint32_t)(c->seed >> 32));
    const float dt = 0.05f;
    put_bytes(p + 44, &dt, 4);
    p += 48;
    put_bytes(p, &c->low, 4);
    put_bytes(p + 4, &c->high, 4);
    put_bytes(p + 8, c->target, 8);
    put_bytes(p + 16, c->q, 16);
    put_bytes(p + 32, &c->r, 8);
    tb_put_u32(p + 40, c->wrap);
    len = off + 48u + 40u + 4u * c->n_wrap;
    tb_put_u32(b + 8, (uint32_t)len);
    tb_fix_crc(b, len);
    return len;
}

/* the dynamics: state (position, velocity), action u; delta = (k0 . x, k1 . x), x = (position, velocity, u) */
static const tb_layer LINEAR[] = {{ME_LAYER_DENSE, ME_ADAPT_WEIGHT | ME_ADAPT_BIAS, 3, 2}};

static size_t build(unsigned char *b, const float w[6], uint8_t solver, const ctl_spec *c)
{
    float params[8] = {0};
    memcpy(params, w, sizeof(float) * 6);
    const tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, solver, 3, 3, 2, LINEAR, 1, NULL, params, 0.f,
                        solver == ME_SOLVER_SGD ? 0.05f : -2.f, 1u};
    size_t len = tb_build(b, 4096, &sp);
    CHECK(len > 0);
    if (solver == ME_SOLVER_GAUSS_NEWTON) { /* the damping floor of format 3 and later */
        const float floor_ = 1e-6f;
        put_bytes(b + 56, &floor_, 4);
    }
    return add_control(b, len, c);
}

static const float INTEGRATOR[6] = {0.f, 0.1f, 0.f, 0.f, 0.f, 0.1f}; /* position += 0.1 v, v += 0.1 u */

static ctl_spec hand_spec(void)
{
    ctl_spec c = {0, 1, 2, 1, 0, 4, 2, 0u, -1.f, 1.f, {0.f, 0.f}, {1.0, 0.5}, 0.01, 0, 0};
    return c;
}

static unsigned char *exact; /* an arena of exactly me_arena_bytes (ASan sees an overrun) */

static void open_with(const ctl_spec *c, const float w[6], uint8_t solver, uint32_t shots)
{
    const size_t len = build(buf, w, solver, c);
    CHECK_STATUS(me_model_load(&model, buf, len), ME_OK);
    const size_t need = me_arena_bytes(&model, shots);
    free(exact);
    exact = malloc(need);
    CHECK(exact != NULL && (uintptr_t)exact % 16u == 0u);
    CHECK_STATUS(me_session_init(&sess, &model, exact, need, shots), ME_OK);
}

/* Vigna's splitmix64.c: a state advanced by the golden gamma, output by the mixer */
static uint64_t ref_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double ref_uniform(uint64_t seed, uint64_t counter)
{
    uint64_t x = seed, v = 0;
    for (uint64_t i = 0; i <= counter; i++) v = ref_next(&x);
    return (double)(v >> 40) / 16777216.0;
}

static void test_stream_is_splitmix64(void)
{
    CHECK(me_splitmix64(0u, 0u) == 0xE220A8397B1DCDAFull);
    CHECK(me_splitmix64(0u, 1u) == 0x6E789E6AA1B965F4ull);
    CHECK(me_splitmix64(0u, 2u) == 0x06C45D188009454Full);
    CHECK(me_splitmix64(1234567u, 0u) == 0x599ED017FB08FC85ull);
    const uint64_t seeds[3] = {0u, 7u, 0xFFFFFFFFFFFFFFFFull};
    int same = 1;
    for (int k = 0; k < 3; k++) {
        uint64_t x = seeds[k];
        for (uint64_t c = 0; c < 1000; c++) same &= me_splitmix64(seeds[k], c) == ref_next(&x);
    }
    CHECK(same);
}

/* N = 2, H = 1 from (1, 0): the candidates are u0 = 0xE220A8 / 2^24 and u1 = 0x6E789E / 2^24 mapped to
 * [-1, 1): a = 2u - 1 (exact in float32), 0.7666216 and -0.1369441. The next state is (1, 0.1 a), so the cost is
 * 1 + 0.5 (0.1 a)^2 + 0.01 a^2 and the smaller |a| (candidate 1) wins. */
static void test_random_shooting_by_hand(void)
{
    const ctl_spec c = hand_spec();
    open_with(&c, INTEGRATOR, ME_SOLVER_SGD, 4);
    const float a0 = 2.f * (float)(0xE220A8u / 16777216.0) - 1.f, a1 = 2.f * (float)(0x6E789Eu / 16777216.0) - 1.f;
    CHECK_CLOSE(a0, 0.7666215896606445, 1e-9);
    CHECK_CLOSE(a1, -0.13694405555725098, 1e-9);
    const float state[2] = {1.f, 0.f};
    float action, seq;
    double cost;
    CHECK_STATUS(me_plan_result(&sess, &seq, &cost), ME_ERR_STATE);
    CHECK_STATUS(me_plan(&sess, state, &action), ME_OK);
    CHECK(action == a1);
    CHECK_STATUS(me_plan_result(&sess, &seq, &cost), ME_OK);
    const float v1 = 0.1f * a1;
    CHECK(seq == a1);
    CHECK_CLOSE(cost, 1.0 + 0.5 * (double)v1 * v1 + 0.01 * (double)a1 * a1, 1e-15);
    /* call 1 draws from counter 1 * iterations * 2 * N * H = 4 on: counters 4 and 5 */
    const float b0 = -1.f + 2.f * (float)ref_uniform(0u, 4u), b1 = -1.f + 2.f * (float)ref_uniform(0u, 5u);
    CHECK_STATUS(me_plan(&sess, state, &action), ME_OK);
    CHECK(action == (fabsf(b0) < fabsf(b1) ? b0 : b1));
    /* after a reset the first plan again */
    CHECK_STATUS(me_plan_reset(&sess), ME_OK);
    CHECK_STATUS(me_plan(&sess, state, &action), ME_OK);
    CHECK(action == a1);
}

static float ref_wrap(float e)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846), pi = (float)3.14159265358979323846;
    return e - two_pi * floorf((e + pi) / two_pi);
}

/* From angle 3: delta = 0.5 u takes candidate 0 past pi to 3.383 - 2 pi = -2.900 (squared error 8.41), candidate
 * 1 to 2.932 (8.60): candidate 0 wins only because the angle is wrapped (unwrapped: 11.45) */
static void test_wrapped_angle(void)
{
    ctl_spec c = hand_spec();
    c.n_wrap = 1;
    c.wrap = 0;
    const float w[6] = {0.f, 0.f, 0.5f, 0.f, 0.f, 0.1f};
    open_with(&c, w, ME_SOLVER_SGD, 4);
    const float a0 = 2.f * (float)(0xE220A8u / 16777216.0) - 1.f;
    const float state[2] = {3.f, 0.f};
    float action;
    double cost;
    CHECK_STATUS(me_plan(&sess, state, &action), ME_OK);
    CHECK(action == a0);
    CHECK_STATUS(me_plan_result(&sess, NULL, &cost), ME_OK);
    const float theta = ref_wrap(3.f + 0.5f * a0), v = 0.1f * a0;
    CHECK_CLOSE(theta, 3.f + 0.5f * a0 - 2.0 * 3.14159265358979323846, 1e-6);
    CHECK_CLOSE(cost, (double)theta * theta + 0.5 * (double)v * v + 0.01 * (double)a0 * a0, 1e-12);
}

/* CEM written out for the integrator (whose float32 steps are exact products, so the reference agrees bit for
 * bit): N candidates of H steps, E elites, rounds of normals from counter (k * iterations + i) * 2 N H on */
enum { CN = 6, CH = 3, CE = 2, CI = 2 };

static double ref_normal(uint64_t seed, uint64_t start, uint64_t j)
{
    const double u0 = ref_uniform(seed, start + 2 * j), u1 = ref_uniform(seed, start + 2 * j + 1);
    return sqrt(-2.0 * log(1.0 - u0)) * cos(2.0 * 3.14159265358979323846 * u1);
}

static void ref_cem(uint64_t seed, uint64_t call, const float state[2], float mean[CH], float *action)
{
    float m[CH], sd[CH], acts[CN][CH];
    double costs[CN];
    for (int t = 0; t < CH; t++) {
        m[t] = mean[t];
        sd[t] = (1.f - -1.f) / 2.f;
    }
    for (int i = 0; i < CI; i++) {
        const uint64_t start = (call * CI + (uint64_t)i) * 2u * CN * CH;
        for (int n = 0; n < CN; n++) {
            float p = state[0], v = state[1];
            costs[n] = 0.0;
            for (int t = 0; t < CH; t++) {
                float a = m[t] + sd[t] * (float)ref_normal(seed, start, (uint64_t)n * CH + t);
                a = a < -1.f ? -1.f : a > 1.f ? 1.f : a;
                acts[n][t] = a;
                const float dp = 0.1f * v, dv = 0.1f * a;
                p = p + dp;
                v = v + dv;
                costs[n] += ((double)p * p * 1.0 + (double)v * v * 0.5) + (double)a * a * 0.01;
            }
        }
        int order[CN];
        for (int n = 0; n < CN; n++) { /* insertion sort: stable */
            int j = n;
            while (j > 0 && costs[order[j - 1]] > costs[n]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = n;
        }
        for (int t = 0; t < CH; t++) {
            float s = 0.f, q = 0.f;
            for (int e = 0; e < CE; e++) s += acts[order[e]][t];
            const float mu = s / (float)CE;
            for (int e = 0; e < CE; e++) q += (acts[order[e]][t] - mu) * (acts[order[e]][t] - mu);
            m[t] = mu;
            sd[t] = sqrtf(q / (float)CE);
        }
    }
    *action = m[0];
    for (int t = 0; t + 1 < CH; t++) mean[t] = m[t + 1];
    mean[CH - 1] = 0.f;
}

static void test_cem_against_reference(void)
{
    ctl_spec c = hand_spec();
    c.planner = 1;
    c.horizon = CH;
    c.candidates = CN;
    c.iterations = CI;
    c.elites = CE;
    c.seed = 11u;
    float mean[CH] = {0.f, 0.f, 0.f};
    float state[2] = {1.f, -0.5f};
    float got[5][2]; /* sessions of 2 and of 8 network rows: the candidates in 3 chunks and in one */
    for (int rows = 0; rows < 2; rows++) {
        open_with(&c, INTEGRATOR, ME_SOLVER_SGD, rows ? 8u : 2u);
        CHECK(sess.max_shots == (rows ? 8u : 4u)); /* raised to the window (4) */
        float s[2] = {1.f, -0.5f};
        for (int k = 0; k < 5; k++) {
            CHECK_STATUS(me_plan(&sess, s, &got[k][rows]), ME_OK);
            s[1] = s[1] + 0.1f * got[k][rows];
            s[0] = s[0] + 0.1f * s[1];
        }
    }
    for (int k = 0; k < 5; k++) {
        float want;
        ref_cem(11u, (uint64_t)k, state, mean, &want);
        CHECK(got[k][0] == want && got[k][1] == want);
        state[1] = state[1] + 0.1f * want;
        state[0] = state[0] + 0.1f * state[1];
    }
    float seq[CH];
    CHECK_STATUS(me_plan_result(&sess, seq, NULL), ME_OK);
    CHECK(seq[0] == got[4][1]);
}

/* the window holds the last M transitions and every K-th observation re-adapts on them from theta0: the same
 * state as me_reset + me_adapt on that window in a second session, for SGD and Gauss-Newton (2 outputs) */
static void test_observe_readapts_on_the_window(uint8_t solver)
{
    ctl_spec c = hand_spec();
    c.window = 3;
    c.adapt_every = 2;
    c.n_wrap = 1;
    c.wrap = 0;
    const float w[6] = {0.2f, 0.1f, 0.f, -0.1f, 0.3f, 0.1f};
    open_with(&c, w, solver, 3);
    const size_t len = build(buf2, w, solver, &c);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_OK);
    CHECK_STATUS(me_session_init(&sess2, &model2, arena2, sizeof arena2, 3), ME_OK);
    const uint32_t p = me_theta_size(&sess);
    float xs[8][3], ys[8][2], theta0[8];
    memcpy(theta0, me_theta(&sess), sizeof theta0);
    uint32_t rng = 5u;
    for (int i = 0; i < 8; i++) {
        const float s0 = i == 1 ? 3.1f : 2.f * check_uniform(&rng), s1 = check_uniform(&rng);
        const float u = check_uniform(&rng);
        const float n0 = i == 1 ? -3.1f : s0 + 0.1f * s1 + 0.02f * check_uniform(&rng);
        const float n1 = s1 + 0.15f * u - 0.05f * s0;
        const float state[2] = {s0, s1}, next[2] = {n0, n1};
        xs[i][0] = s0;
        xs[i][1] = s1;
        xs[i][2] = u;
        ys[i][0] = ref_wrap(n0 - s0); /* 3.1 -> -3.1 is a change of 0.083, not -6.2 */
        ys[i][1] = n1 - s1;
        CHECK_STATUS(me_observe(&sess, state, &u, next), ME_OK);
        if (i % 2 == 0) {
            CHECK(memcmp(me_theta(&sess), i == 0 ? theta0 : me_theta(&sess2), 4 * p) == 0); /* not yet */
            continue;
        }
        const int first = i + 1 > 3 ? i - 2 : 0;
        CHECK_STATUS(me_reset(&sess2), ME_OK);
        CHECK_STATUS(me_adapt(&sess2, &xs[first][0], &ys[first][0], (uint32_t)(i + 1 - first),
                              me_default_steps(&model2), ME_GUARD, NULL), ME_OK);
        CHECK(memcmp(me_theta(&sess), me_theta(&sess2), 4 * p) == 0);
        CHECK(memcmp(me_theta(&sess), theta0, 4 * p) != 0);
    }
    CHECK_CLOSE(ys[1][0], 2.0 * 3.14159265358979323846 - 6.2, 1e-5);
    /* refused observations store nothing; me_reset forgets the window */
    const float bad[2] = {NAN, 0.f}, ok[2] = {0.f, 0.f}, u = 0.f;
    CHECK_STATUS(me_observe(&sess, bad, &u, ok), ME_ERR_NONFINITE);
    CHECK_STATUS(me_observe(&sess, ok, &u, bad), ME_ERR_NONFINITE);
    CHECK_STATUS(me_reset(&sess), ME_OK);
    const float s0[2] = {xs[0][0], xs[0][1]}, s1[2] = {xs[1][0], xs[1][1]};
    const float n0[2] = {xs[0][0] + ys[0][0], xs[0][1] + ys[0][1]}, n1[2] = {xs[1][0] + ys[1][0], xs[1][1] + ys[1][1]};
    CHECK_STATUS(me_observe(&sess, s0, &xs[0][2], n0), ME_OK);
    CHECK_STATUS(me_observe(&sess, s1, &xs[1][2], n1), ME_OK);
    CHECK_STATUS(me_reset(&sess2), ME_OK);
    float wy[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            const float nxt = xs[i][j] + ys[i][j];
            wy[i][j] = j == 0 ? ref_wrap(nxt - xs[i][j]) : nxt - xs[i][j];
        }
    CHECK_STATUS(me_adapt(&sess2, &xs[0][0], &wy[0][0], 2, me_default_steps(&model2), ME_GUARD, NULL), ME_OK);
    CHECK(memcmp(me_theta(&sess), me_theta(&sess2), 4 * p) == 0);
}

static void test_arena_and_refusals(void)
{
    const ctl_spec c = hand_spec();
    const float w[6] = {0};
    size_t len = build(buf, w, ME_SOLVER_SGD, &c);
    CHECK_STATUS(me_model_load(&model, buf, len), ME_OK);
    me_control_info_t info;
    CHECK_STATUS(me_control_info(&model, &info), ME_OK);
    CHECK(info.state_dim == 2 && info.action_dim == 1 && info.candidates == 2 && info.window == 4 &&
          info.adapt_every == 2 && info.planner == 0 && info.dt == 0.05f);
    /* the same model without the section: smaller arena, no planner */
    const tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 3, 3, 2, LINEAR, 1, NULL, NULL, 0.1f,
                        0.05f, 1u};
    const size_t plain_len = tb_build(buf2, sizeof buf2, &sp);
    CHECK_STATUS(me_model_load(&model2, buf2, plain_len), ME_OK);
    CHECK_STATUS(me_control_info(&model2, &info), ME_ERR_UNSUPPORTED);
    CHECK(me_arena_bytes(&model, 1) == me_arena_bytes(&model, 4)); /* raised to the window */
    CHECK(me_arena_bytes(&model, 4) > me_arena_bytes(&model2, 4));
    CHECK_STATUS(me_session_init(&sess2, &model2, arena2, sizeof arena2, 4), ME_OK);
    float state[2] = {0.f, 0.f}, action;
    CHECK_STATUS(me_plan(&sess2, state, &action), ME_ERR_UNSUPPORTED);
    CHECK_STATUS(me_observe(&sess2, state, &action, state), ME_ERR_UNSUPPORTED);
    CHECK_STATUS(me_session_init(&sess, &model, arena, me_arena_bytes(&model, 4) - 1, 4), ME_ERR_ARENA);
    CHECK_STATUS(me_session_init(&sess, &model, arena, me_arena_bytes(&model, 4), 4), ME_OK);
    state[0] = INFINITY;
    CHECK_STATUS(me_plan(&sess, state, &action), ME_ERR_NONFINITE);

    /* every truncation refused */
    int refused = 1;
    for (size_t cut = 0; cut < len; cut++) refused &= me_model_load(&model2, buf, cut) != ME_OK;
    CHECK(refused);
    /* each field of the section (offset from its start) corrupted, the CRC fixed: refused with its code */
    const uint32_t off = me_read_u32(buf + 64);
    struct {
        uint32_t at, value;
        me_status want;
    } cases[] = {
        {0, 3, ME_ERR_FORMAT},  {4, 2, ME_ERR_FORMAT},      {8, 2, ME_ERR_FORMAT},  {9, 3, ME_ERR_FORMAT},
        {10, 1, ME_ERR_FORMAT}, {12, 0, ME_ERR_FORMAT},     {12, 5000, ME_ERR_FORMAT}, {16, 0, ME_ERR_FORMAT},
        {20, 0, ME_ERR_FORMAT}, {24, 3, ME_ERR_FORMAT},     {28, 0, ME_ERR_FORMAT}, {32, 0, ME_ERR_FORMAT},
        {44, 0, ME_ERR_FORMAT}, {44, 0x7FC00000u, ME_ERR_FORMAT}, /* dt 0, NaN */
        {48, 0x3F800000u, ME_ERR_FORMAT},                   /* low 1 = high */
        {56, 0x7F800000u, ME_ERR_FORMAT},                   /* target infinite */
        {68, 0xBFF00000u, ME_ERR_FORMAT},                   /* q[0] = -1 (high word of the f64) */
        {84, 0x7FF80000u, ME_ERR_FORMAT},                   /* r NaN */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf2, buf, len);
        if (cases[i].at == 8 || cases[i].at == 9)
            buf2[off + cases[i].at] = (unsigned char)cases[i].value;
        else if (cases[i].at == 10)
            put_u16(buf2 + off + 10, cases[i].value);
        else
            tb_put_u32(buf2 + off + cases[i].at, cases[i].value);
        tb_fix_crc(buf2, len);
        const me_status got = me_model_load(&model2, buf2, len);
        if (got != cases[i].want) {
            check_failures++;
            fprintf(stderr, "control field at +%u = %u: got %d, want %d\n", cases[i].at, cases[i].value, got,
                    cases[i].want);
        }
    }
    /* CEM needs elites; a wrap index must be a state dim; the section must follow the rates; version 4 has no
     * header field for it; a classifier is no dynamics model */
    ctl_spec bad = c;
    bad.planner = 1;
    len = build(buf2, w, ME_SOLVER_SGD, &bad);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_ERR_FORMAT);
    bad = c;
    bad.n_wrap = 1;
    bad.wrap = 2;
    len = build(buf2, w, ME_SOLVER_SGD, &bad);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_ERR_FORMAT);
    len = build(buf2, w, ME_SOLVER_SGD, &c);
    tb_put_u32(buf2 + 64, me_read_u32(buf2 + 52)); /* onto the rates */
    tb_fix_crc(buf2, len);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_ERR_FORMAT);
    len = build(buf2, w, ME_SOLVER_SGD, &c);
    put_u16(buf2 + 4, 4u);
    tb_fix_crc(buf2, len);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_ERR_FORMAT);
    len = build(buf2, w, ME_SOLVER_SGD, &c);
    tb_put_u32(buf2 + 64, (uint32_t)len - 40u); /* a section that runs past the end */
    tb_fix_crc(buf2, len);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_ERR_TRUNCATED);
    const tb_spec cls = {ME_TASK_CLASSIFICATION, ME_LOSS_CROSS_ENTROPY, ME_SOLVER_SGD, 3, 3, 2, LINEAR, 1, NULL,
                         NULL, 0.1f, 0.05f, 1u};
    len = add_control(buf2, tb_build(buf2, sizeof buf2, &cls), &c);
    CHECK_STATUS(me_model_load(&model2, buf2, len), ME_ERR_FORMAT);
}

int main(void)
{
    test_stream_is_splitmix64();
    test_random_shooting_by_hand();
    test_wrapped_angle();
    test_cem_against_reference();
    test_observe_readapts_on_the_window(ME_SOLVER_SGD);
    test_observe_readapts_on_the_window(ME_SOLVER_GAUSS_NEWTON);
    test_arena_and_refusals();
    free(exact);
    return check_report("test_control");
}
