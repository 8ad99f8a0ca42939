/* Model-predictive control on the session: the control section of model.mebin (format 5), the seeded planner
 * (random shooting and CEM, metaedge.runtime.control's numbers exactly: splitmix64 counter stream, Box-Muller in
 * double, float32 rollouts through the session's network, float64 costs, angle wrap) and the device loop's window
 * of transitions with its scheduled, guarded re-adaptation. Candidate actions are drawn again from their counters
 * when needed instead of being stored, and candidates are rolled out `rows` at a time (the session's activation
 * rows), so the arena grows with N only by a cost and two sort indices per candidate. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define FIXED_BYTES 48u
#define ME_PI 3.14159265358979323846
#define PLAN_RS 0u
#define PLAN_CEM 1u
#define ALIGN 16u

static double read_f64(const unsigned char *p)
{
    const uint64_t bits = (uint64_t)me_read_u32(p) | ((uint64_t)me_read_u32(p + 4) << 32);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static uint64_t arrays_bytes(uint64_t s, uint64_t a, uint64_t n_wrap)
{
    return 4u * (2u * a + s) + 8u * (s + a) + 4u * n_wrap;
}

/* Layout (little-endian): u32 state_dim, u32 action_dim, u8 planner, u8 n_wrap, u16 reserved 0, u32 horizon,
 * u32 candidates, u32 iterations, u32 elites, u32 window, u32 adapt_every, u32 seed low, u32 seed high, f32 dt;
 * then f32 action_low[A], f32 action_high[A], f32 target[S], f64 q[S], f64 r[A], u32 wrap[n_wrap]. */
me_status me_control_parse(me_model *m, uint32_t off, uint32_t total)
{
    if (off % 4u != 0u || (uint64_t)off + FIXED_BYTES > total) return ME_ERR_TRUNCATED;
    const unsigned char *p = m->buf + off;
    struct me_control_spec c;
    memset(&c, 0, sizeof c);
    c.state_dim = me_read_u32(p);
    c.action_dim = me_read_u32(p + 4);
    c.planner = p[8];
    c.n_wrap = p[9];
    c.horizon = me_read_u32(p + 12);
    c.candidates = me_read_u32(p + 16);
    c.iterations = me_read_u32(p + 20);
    c.elites = me_read_u32(p + 24);
    c.window = me_read_u32(p + 28);
    c.adapt_every = me_read_u32(p + 32);
    c.seed = (uint64_t)me_read_u32(p + 36) | ((uint64_t)me_read_u32(p + 40) << 32);
    me_read_f32(&c.dt, p + 44, 1u);
    c.off_arrays = off + FIXED_BYTES;
    /* a dynamics model: (state, action) -> state change, fitted by regression */
    if (m->task != ME_TASK_REGRESSION || m->solver == ME_SOLVER_PROTOTYPES) return ME_ERR_FORMAT;
    if (c.state_dim == 0u || c.action_dim == 0u || (uint64_t)c.state_dim + c.action_dim != m->in_dim ||
        c.state_dim != m->out_dim)
        return ME_ERR_FORMAT;
    if (c.planner > PLAN_CEM || me_read_u16(p + 10) != 0u || c.n_wrap > c.state_dim) return ME_ERR_FORMAT;
    if (c.horizon == 0u || c.horizon > ME_MAX_HORIZON || c.candidates == 0u || c.candidates > ME_MAX_CANDIDATES ||
        c.iterations == 0u || c.iterations > ME_MAX_ITERATIONS || c.elites > c.candidates ||
        (c.planner == PLAN_CEM && c.elites == 0u) || c.window == 0u || c.window > ME_MAX_SHOTS ||
        c.adapt_every == 0u)
        return ME_ERR_FORMAT;
    if (!me_all_finite(&c.dt, 1u) || !(c.dt > 0.f)) return ME_ERR_FORMAT;
    if ((uint64_t)c.off_arrays + arrays_bytes(c.state_dim, c.action_dim, c.n_wrap) > total) return ME_ERR_TRUNCATED;
    const uint32_t s = c.state_dim, a = c.action_dim;
    const unsigned char *low = m->buf + c.off_arrays, *high = low + 4u * a, *target = high + 4u * a;
    const unsigned char *q = target + 4u * s, *r = q + 8u * s, *wrap = r + 8u * a;
    for (uint32_t k = 0; k < a; k++) {
        float lo, hi;
        me_read_f32(&lo, low + 4u * k, 1u);
        me_read_f32(&hi, high + 4u * k, 1u);
        if (!me_all_finite(&lo, 1u) || !me_all_finite(&hi, 1u) || !(hi > lo)) return ME_ERR_FORMAT;
    }
    for (uint32_t i = 0; i < s; i++) {
        float t;
        me_read_f32(&t, target + 4u * i, 1u);
        if (!me_all_finite(&t, 1u)) return ME_ERR_FORMAT;
    }
    for (uint32_t i = 0; i < s + a; i++) { /* q then r: finite and >= 0 */
        const double w = read_f64(q + 8u * i);
        if (!(w >= 0.0 && w <= 1.7976931348623157e308)) return ME_ERR_FORMAT;
    }
    for (uint32_t i = 0; i < c.n_wrap; i++)
        if (me_read_u32(wrap + 4u * i) >= s) return ME_ERR_FORMAT;
    m->ctl = c;
    m->off_control = off;
    return ME_OK;
}

uint32_t me_control_shots(const me_model *m, uint32_t max_shots)
{
    return m->off_control && max_shots < m->ctl.window ? m->ctl.window : max_shots;
}

/* assign the blocks of s->ctl from block (NULL: only count); returns the bytes */
static uint64_t carve(struct me_control_state *c, const me_model *m, uint32_t rows, unsigned char *block)
{
    const struct me_control_spec *k = &m->ctl;
    const uint64_t s = k->state_dim, a = k->action_dim, h = k->horizon, n = k->candidates, w = k->window;
    const uint64_t e = k->planner == PLAN_CEM ? k->elites : 0u, cem = k->planner == PLAN_CEM;
    uint64_t used = 0;
#define TAKE(type, count)                                                                                  \
    ((used = (used + ALIGN - 1u) & ~(uint64_t)(ALIGN - 1u)), (used += (uint64_t)sizeof(type) * (count)),   \
     block ? (type *)(void *)(block + used - (uint64_t)sizeof(type) * (count)) : (type *)NULL)
    c->q = TAKE(double, s);
    c->r = TAKE(double, a);
    c->costs = TAKE(double, n);
    c->low = TAKE(float, a);
    c->high = TAKE(float, a);
    c->mid = TAKE(float, a);
    c->target = TAKE(float, s);
    c->wrapped = TAKE(uint32_t, s);
    c->order = TAKE(uint32_t, cem ? 2u * n : 0u);
    c->roll = TAKE(float, (uint64_t)rows * s);
    c->acts = TAKE(float, (uint64_t)rows * a);
    c->mean = TAKE(float, h * a);
    c->wmean = TAKE(float, cem ? h * a : 0u);
    c->wstd = TAKE(float, cem ? h * a : 0u);
    c->nmean = TAKE(float, cem ? h * a : 0u);
    c->nstd = TAKE(float, cem ? h * a : 0u);
    c->elite = TAKE(float, e * h * a);
    c->seq = TAKE(float, h * a);
    c->win_x = TAKE(float, 2u * w * (s + a));
    c->win_y = TAKE(float, 2u * w * s);
    c->prev = TAKE(float, m->n_theta);
#undef TAKE
    return used;
}

uint64_t me_control_bytes(const me_model *m, uint32_t rows)
{
    if (!m->off_control) return 0u;
    struct me_control_state tmp;
    return carve(&tmp, m, rows, NULL);
}

me_status me_plan_reset(me_session *s)
{
    if (!s || !s->model) return ME_ERR_NULL;
    if (!s->model->off_control) return ME_ERR_UNSUPPORTED;
    struct me_control_state *c = &s->ctl;
    const struct me_control_spec *k = &s->model->ctl;
    c->calls = 0u;
    c->planned = 0;
    for (uint32_t t = 0; t < k->horizon; t++) memcpy(c->mean + (size_t)t * k->action_dim, c->mid,
                                                     sizeof(float) * k->action_dim);
    return ME_OK;
}

void me_control_forget(me_session *s)
{
    s->ctl.observed = 0u;
    s->ctl.head = 0u;
}

void me_control_carve(me_session *s, unsigned char *block, uint32_t rows)
{
    const me_model *m = s->model;
    struct me_control_state *c = &s->ctl;
    const struct me_control_spec *k = &m->ctl;
    carve(c, m, rows, block);
    const uint32_t sd = k->state_dim, a = k->action_dim;
    const unsigned char *p = m->buf + k->off_arrays;
    me_read_f32(c->low, p, a);
    me_read_f32(c->high, p + 4u * a, a);
    me_read_f32(c->target, p + 8u * a, sd);
    p += 8u * a + 4u * sd;
    for (uint32_t i = 0; i < sd; i++) c->q[i] = read_f64(p + 8u * i);
    for (uint32_t i = 0; i < a; i++) c->r[i] = read_f64(p + 8u * (sd + i));
    p += 8u * (sd + a);
    memset(c->wrapped, 0, sizeof(uint32_t) * sd);
    for (uint32_t i = 0; i < k->n_wrap; i++) c->wrapped[me_read_u32(p + 4u * i)] = 1u;
    for (uint32_t i = 0; i < a; i++) c->mid[i] = (c->low[i] + c->high[i]) / 2.f;
    me_plan_reset(s);
    me_control_forget(s);
}

me_status me_control_info(const me_model *m, me_control_info_t *info)
{
    if (!m || !info) return ME_ERR_NULL;
    memset(info, 0, sizeof *info);
    if (!m->off_control) return ME_ERR_UNSUPPORTED;
    const struct me_control_spec *k = &m->ctl;
    info->state_dim = k->state_dim;
    info->action_dim = k->action_dim;
    info->planner = k->planner;
    info->horizon = k->horizon;
    info->candidates = k->candidates;
    info->iterations = k->iterations;
    info->elites = k->elites;
    info->window = k->window;
    info->adapt_every = k->adapt_every;
    info->n_wrap = k->n_wrap;
    info->seed = k->seed;
    info->dt = k->dt;
    return ME_OK;
}

/* ---- the random stream (runtime/control.py's module docstring) ---------------------------------------------- */

uint64_t me_splitmix64(uint64_t seed, uint64_t counter)
{
    uint64_t z = seed + (counter + 1u) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* the top 24 bits times 2^-24: exact in float32 */
static double uniform(uint64_t seed, uint64_t counter)
{
    return (double)(me_splitmix64(seed, counter) >> 40) * (1.0 / 16777216.0);
}

/* normal j of the draws starting at counter start: Box-Muller of uniforms start + 2j, start + 2j + 1 */
static double normal(uint64_t seed, uint64_t start, uint64_t j)
{
    const double u0 = uniform(seed, start + 2u * j), u1 = uniform(seed, start + 2u * j + 1u);
    return sqrt(-2.0 * log(1.0 - u0)) * cos(2.0 * ME_PI * u1);
}

/* e - 2 pi floor((e + pi) / (2 pi)) in float32, runtime/control.py's wrap_angle */
static float wrap_angle(float e)
{
    const float two_pi = (float)(2.0 * ME_PI), pi = (float)ME_PI;
    const float turns = floorf((e + pi) / two_pi);
    const float shift = two_pi * turns;
    return e - shift;
}

/* action dim k at step t of candidate n in the round whose draws start at counter start: random shooting
 * low + (high - low) u; CEM clip(mean + std g) with the round's mean and std */
static float candidate_action(const me_session *s, uint64_t start, uint32_t n, uint32_t t, uint32_t k)
{
    const struct me_control_spec *spec = &s->model->ctl;
    const struct me_control_state *c = &s->ctl;
    const uint64_t j = ((uint64_t)n * spec->horizon + t) * spec->action_dim + k;
    if (spec->planner == PLAN_RS) {
        const float u = (float)uniform(spec->seed, start + j), span = c->high[k] - c->low[k];
        const float step = span * u;
        return c->low[k] + step;
    }
    const size_t i = (size_t)t * spec->action_dim + k;
    const float g = (float)normal(spec->seed, start, j), spread = c->wstd[i] * g;
    float v = c->wmean[i] + spread;
    v = v < c->low[k] ? c->low[k] : v; /* np.clip: maximum, then minimum (NaN stays NaN) */
    return v > c->high[k] ? c->high[k] : v;
}

/* costs[n] of every candidate of the round starting at counter start, `rows` candidates at a time */
static void rollout(me_session *s, const float *state, uint64_t start)
{
    const me_model *m = s->model;
    const struct me_control_spec *spec = &m->ctl;
    struct me_control_state *c = &s->ctl;
    const uint32_t sd = spec->state_dim, a = spec->action_dim, d = m->in_dim, rows = s->max_shots;
    const float *x_mean = s->norm, *x_std = s->norm + d, *y_mean = s->norm + 2u * d, *y_std = y_mean + sd;
    for (uint32_t n0 = 0; n0 < spec->candidates; n0 += rows) {
        const uint32_t count = spec->candidates - n0 < rows ? spec->candidates - n0 : rows;
        for (uint32_t r = 0; r < count; r++) {
            memcpy(c->roll + (size_t)r * sd, state, sizeof(float) * sd);
            c->costs[n0 + r] = 0.0;
        }
        for (uint32_t t = 0; t < spec->horizon; t++) {
            for (uint32_t r = 0; r < count; r++) { /* the network input: concat(state, action), normalised */
                float *x0 = s->x0 + (size_t)r * d, *act = c->acts + (size_t)r * a;
                const float *st = c->roll + (size_t)r * sd;
                for (uint32_t k = 0; k < a; k++) act[k] = candidate_action(s, start, n0 + r, t, k);
                for (uint32_t i = 0; i < sd; i++) x0[i] = (st[i] - x_mean[i]) / x_std[i];
                for (uint32_t k = 0; k < a; k++) x0[sd + k] = (act[k] - x_mean[sd + k]) / x_std[sd + k];
            }
            const float *out = me_network_forward(s, count);
            for (uint32_t r = 0; r < count; r++) {
                float *st = c->roll + (size_t)r * sd;
                const float *act = c->acts + (size_t)r * a;
                double state_cost = 0.0, action_cost = 0.0;
                for (uint32_t i = 0; i < sd; i++) {
                    const float scaled = out[(size_t)r * sd + i] * y_std[i];
                    const float delta = scaled + y_mean[i];
                    float next = st[i] + delta, e = next - c->target[i];
                    if (c->wrapped[i]) { /* angles stay in [-pi, pi), as the model saw them in training */
                        next = wrap_angle(next);
                        e = wrap_angle(e);
                    }
                    st[i] = next;
                    const double e64 = (double)e;
                    state_cost += (e64 * e64) * c->q[i];
                }
                for (uint32_t k = 0; k < a; k++) {
                    const double a64 = (double)act[k];
                    action_cost += (a64 * a64) * c->r[k];
                }
                c->costs[n0 + r] += state_cost + action_cost;
            }
        }
    }
}

/* whether cost x ranks strictly before y: lower, NaN last */
static int before(double x, double y) { return x < y || (!isnan(x) && isnan(y)); }

/* order[0..n) = the candidates by cost, ties in index order (numpy's stable argsort), tmp: n scratch */
static void stable_sort(uint32_t *order, uint32_t *tmp, const double *costs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) order[i] = i;
    uint32_t *src = order, *dst = tmp;
    for (uint32_t width = 1; width < n; width = width > n / 2u ? n : 2u * width) {
        for (uint32_t lo = 0; lo < n; lo += 2u * width) {
            const uint32_t mid = n - lo < width ? n : lo + width;
            const uint32_t hi = n - mid < width ? n : mid + width;
            uint32_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) dst[o++] = before(costs[src[j]], costs[src[i]]) ? src[j++] : src[i++];
            while (i < mid) dst[o++] = src[i++];
            while (j < hi) dst[o++] = src[j++];
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != order) memcpy(order, src, sizeof(uint32_t) * n);
}

/* the lowest cost (NaN only when every cost is NaN) and its first candidate */
static uint32_t lowest(const double *costs, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (before(costs[i], costs[best])) best = i;
    return best;
}

/* CEM: refit the sampling Gaussian to the elites of the round at start (numpy's float32 mean and std over the
 * elites in cost order: sequential sums, divided by the count) */
static void refit(me_session *s, uint64_t start)
{
    const struct me_control_spec *spec = &s->model->ctl;
    struct me_control_state *c = &s->ctl;
    const uint32_t len = spec->horizon * spec->action_dim, e = spec->elites, n = spec->candidates;
    stable_sort(c->order, c->order + n, c->costs, n);
    for (uint32_t i = 0; i < e; i++)
        for (uint32_t t = 0; t < spec->horizon; t++)
            for (uint32_t k = 0; k < spec->action_dim; k++)
                c->elite[(size_t)i * len + (size_t)t * spec->action_dim + k] =
                    candidate_action(s, start, c->order[i], t, k);
    for (uint32_t j = 0; j < len; j++) {
        float sum = 0.f;
        for (uint32_t i = 0; i < e; i++) sum += c->elite[(size_t)i * len + j];
        const float mean = sum / (float)e;
        float sq = 0.f;
        for (uint32_t i = 0; i < e; i++) {
            const float dev = c->elite[(size_t)i * len + j] - mean;
            const float dev2 = dev * dev;
            sq += dev2;
        }
        c->nmean[j] = mean;
        c->nstd[j] = sqrtf(sq / (float)e);
    }
    float *t = c->wmean;
    c->wmean = c->nmean;
    c->nmean = t;
    t = c->wstd;
    c->wstd = c->nstd;
    c->nstd = t;
}

me_status me_plan(me_session *s, const float *state, float *action)
{
    if (!s || !s->model || !state || !action) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (!m->off_control) return ME_ERR_UNSUPPORTED;
    const struct me_control_spec *spec = &m->ctl;
    struct me_control_state *c = &s->ctl;
    if (!me_all_finite(state, spec->state_dim)) return ME_ERR_NONFINITE;
    const uint32_t a = spec->action_dim, h = spec->horizon, len = h * a;
    const uint64_t draws = (uint64_t)spec->candidates * len;
    const uint64_t base = c->calls * spec->iterations * 2u * draws;
    c->calls++;
    if (spec->planner == PLAN_RS) {
        rollout(s, state, base);
        const uint32_t best = lowest(c->costs, spec->candidates);
        for (uint32_t t = 0; t < h; t++)
            for (uint32_t k = 0; k < a; k++) c->seq[(size_t)t * a + k] = candidate_action(s, base, best, t, k);
        c->cost = c->costs[best];
    } else {
        memcpy(c->wmean, c->mean, sizeof(float) * len); /* the warm start, and the full action range */
        for (uint32_t t = 0; t < h; t++)
            for (uint32_t k = 0; k < a; k++) c->wstd[(size_t)t * a + k] = (c->high[k] - c->low[k]) / 2.f;
        for (uint32_t i = 0; i < spec->iterations; i++) {
            const uint64_t start = base + (uint64_t)i * 2u * draws;
            rollout(s, state, start);
            refit(s, start);
        }
        memcpy(c->seq, c->wmean, sizeof(float) * len);
        c->cost = c->costs[lowest(c->costs, spec->candidates)];
        /* next call starts from this mean shifted by one step, the last step at the middle of the range */
        memcpy(c->mean, c->wmean + a, sizeof(float) * (len - a));
        memcpy(c->mean + (len - a), c->mid, sizeof(float) * a);
    }
    memcpy(action, c->seq, sizeof(float) * a);
    c->planned = 1;
    return ME_OK;
}

me_status me_plan_result(const me_session *s, float *sequence, double *cost)
{
    if (!s || !s->model) return ME_ERR_NULL;
    if (!s->model->off_control) return ME_ERR_UNSUPPORTED;
    if (!s->ctl.planned) return ME_ERR_STATE;
    if (sequence) memcpy(sequence, s->ctl.seq, sizeof(float) * s->model->ctl.horizon * s->model->ctl.action_dim);
    if (cost) *cost = s->ctl.cost;
    return ME_OK;
}

me_status me_observe(me_session *s, const float *state, const float *action, const float *next_state)
{
    if (!s || !s->model || !state || !action || !next_state) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (!m->off_control) return ME_ERR_UNSUPPORTED;
    const struct me_control_spec *spec = &m->ctl;
    struct me_control_state *c = &s->ctl;
    const uint32_t sd = spec->state_dim, a = spec->action_dim, w = spec->window;
    if (!me_all_finite(state, sd) || !me_all_finite(action, a) || !me_all_finite(next_state, sd))
        return ME_ERR_NONFINITE;
    for (uint32_t copy = 0; copy < 2u; copy++) { /* slots head and head + M: the window is always contiguous */
        const size_t row = c->head + (size_t)copy * w;
        float *x = c->win_x + row * (sd + a), *y = c->win_y + row * sd;
        memcpy(x, state, sizeof(float) * sd);
        memcpy(x + sd, action, sizeof(float) * a);
        for (uint32_t i = 0; i < sd; i++) {
            const float change = next_state[i] - state[i];
            y[i] = c->wrapped[i] ? wrap_angle(change) : change; /* angle changes the short way round */
        }
    }
    c->head = c->head + 1u == w ? 0u : c->head + 1u;
    c->observed++;
    if (c->observed % spec->adapt_every != 0u) return ME_OK;
    const uint32_t n = c->observed < w ? (uint32_t)c->observed : w;
    const uint32_t first = c->observed < w ? 0u : c->head; /* the oldest transition */
    const me_adapt_info before_info = s->last;
    memcpy(c->prev, s->theta, sizeof(float) * m->n_theta);
    me_theta_reset(s);
    const me_status st = me_adapt(s, c->win_x + (size_t)first * (sd + a), c->win_y + (size_t)first * sd, n,
                                  me_default_steps(m), ME_GUARD, NULL);
    if (st != ME_OK) { /* keep controlling with the model we had */
        memcpy(s->theta, c->prev, sizeof(float) * m->n_theta);
        me_refresh_transposed(s, 0);
        s->last = before_info;
    }
    return st;
}
