/* Predictive intervals and guided reference points for Gauss-Newton (ridge) models: the posterior of Bayesian
 * linear regression on the features (the Jacobian of the outputs w.r.t. the adapted parameters), with the noise
 * scale and per-level multipliers of model.mebin's interval section (format 4). The same formulas as
 * metaedge.runtime.intervals, in standardised units:
 *   H = J^T J + diag(exp(rates) + min_damping) = L L^T           (J: the support rows)
 *   spread_o(x) = sigma_o sqrt(1 + |L^-1 j_o(x)|^2)
 *   reduction(k) = sum_c w (z_c . z_k)^2 / (1 + |z_k|^2),  z = L^-1 j,  w = (sigma y_std)^2   (one output)
 * Uses the session's Jacobian and normal-matrix buffers: no arena beyond what adaptation sizes. */
#include <math.h>
#include <string.h>

#include "internal.h"

float me_interval_factor(const me_model *m, float level)
{
    const unsigned char *levels = m->buf + m->off_uncertainty + 4u + 4u * m->out_dim;
    const unsigned char *factors = levels + 4u * m->n_levels;
    float lo, hi, flo, fhi;
    me_read_f32(&lo, levels, 1u);
    me_read_f32(&hi, levels + 4u * (m->n_levels - 1u), 1u);
    if (!(level >= lo && level <= hi)) return -1.f;
    for (uint32_t i = 0; i < m->n_levels; i++) {
        me_read_f32(&hi, levels + 4u * i, 1u);
        if (level <= hi) {
            me_read_f32(&fhi, factors + 4u * i, 1u);
            if (i == 0u || level == hi) return fhi;
            me_read_f32(&lo, levels + 4u * (i - 1u), 1u);
            me_read_f32(&flo, factors + 4u * (i - 1u), 1u);
            return (float)((double)flo + ((double)level - lo) * ((double)fhi - flo) / ((double)hi - lo));
        }
    }
    return -1.f;
}

static me_status check(const me_session *s, const float *xs, uint32_t k)
{
    if (!s || !s->model || (k && !xs)) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (m->solver != ME_SOLVER_GAUSS_NEWTON || m->n_levels == 0u) return ME_ERR_UNSUPPORTED;
    if (k > s->max_shots) return ME_ERR_SHOTS;
    return ME_OK;
}

/* factor s->hess = L L^T of the posterior precision for the k support inputs (k = 0: the prior) */
static me_status posterior_factor(me_session *s, const float *xs, uint32_t k)
{
    const me_model *m = s->model;
    if (k) {
        me_status st = me_load_inputs(s, xs, k);
        if (st != ME_OK) return st;
        me_network_forward(s, k);
        me_jacobian_rows(s, k, s->jac);
    }
    me_normal_matrix(s, k * m->out_dim);
    return me_cholesky_factor(s->hess, m->n_theta) == 0 ? ME_OK : ME_ERR_SINGULAR;
}

/* |L^-1 j|^2 for the Jacobian row j (p floats); leaves L^-1 j in s->rhs */
static double whitened_norm(me_session *s, const float *j)
{
    const uint32_t p = s->model->n_theta;
    for (uint32_t i = 0; i < p; i++) s->rhs[i] = j[i];
    me_cholesky_lower_solve(s->hess, s->rhs, p);
    double q = 0.0;
    for (uint32_t i = 0; i < p; i++) q += s->rhs[i] * s->rhs[i];
    return q;
}

me_status me_predict_interval(me_session *s, const float *xs, uint32_t k, const float *x, uint32_t n, float level,
                              float *out, float *lower, float *upper)
{
    me_status st = check(s, xs, k);
    if (st != ME_OK) return st;
    if (!x || !out || !lower || !upper) return ME_ERR_NULL;
    const me_model *m = s->model;
    const float factor = me_interval_factor(m, level);
    if (!(factor > 0.f)) return ME_ERR_ARGUMENT;
    if (!me_all_finite(x, (size_t)n * m->in_dim)) return ME_ERR_NONFINITE;
    if ((st = posterior_factor(s, xs, k)) != ME_OK) return st;
    const uint32_t d = m->out_dim, p = m->n_theta, chunk = s->max_shots;
    const float *mean = s->norm + 2u * m->in_dim, *std = mean + d;
    const unsigned char *noise = m->buf + m->off_uncertainty + 4u;
    for (uint32_t r0 = 0; r0 < n; r0 += chunk) {
        const uint32_t rows = n - r0 < chunk ? n - r0 : chunk;
        me_load_inputs(s, x + (size_t)r0 * m->in_dim, rows);
        const float *y = me_network_forward(s, rows);
        /* the Jacobian rows of this chunk, then one whitened norm per row and output */
        me_jacobian_rows(s, rows, s->jac);
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t o = 0; o < d; o++) {
                const size_t at = (size_t)(r0 + r) * d + o, row = (size_t)r * d + o;
                float sigma;
                me_read_f32(&sigma, noise + 4u * o, 1u);
                const double spread = (double)sigma * sqrt(1.0 + whitened_norm(s, s->jac + row * p));
                const double half = (double)factor * (double)std[o] * spread;
                const float pred = y[row] * std[o] + mean[o];
                out[at] = pred;
                lower[at] = (float)((double)pred - half);
                upper[at] = (float)((double)pred + half);
            }
    }
    return ME_OK;
}

/* check the candidates, factor the posterior for the support, and whiten the candidates' Jacobian rows in place:
 * s->jac[c] = z_c = L^-1 j_c (single-output models) */
static me_status whitened_candidates(me_session *s, const float *xs, uint32_t k, const float *candidates,
                                     uint32_t m_cand)
{
    me_status st = check(s, xs, k);
    if (st != ME_OK) return st;
    if (!candidates) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (m->out_dim != 1u) return ME_ERR_UNSUPPORTED;
    if (m_cand == 0u || m_cand > s->max_shots) return ME_ERR_SHOTS;
    if (!me_all_finite(candidates, (size_t)m_cand * m->in_dim)) return ME_ERR_NONFINITE;
    if ((st = posterior_factor(s, xs, k)) != ME_OK) return st;
    const uint32_t p = m->n_theta;
    me_load_inputs(s, candidates, m_cand);
    me_network_forward(s, m_cand);
    me_jacobian_rows(s, m_cand, s->jac);
    for (uint32_t c = 0; c < m_cand; c++) {
        whitened_norm(s, s->jac + (size_t)c * p);
        for (uint32_t i = 0; i < p; i++) s->jac[(size_t)c * p + i] = (float)s->rhs[i];
    }
    return ME_OK;
}

static double dot(const float *a, const float *b, uint32_t p)
{
    double v = 0.0;
    for (uint32_t i = 0; i < p; i++) v += (double)a[i] * b[i];
    return v;
}

/* one candidate's reduction alone, sum_c (z_c . z_k)^2 / (1 + |z_k|^2) (without the weight w) */
static double single_reduction(const me_session *s, uint32_t kk, uint32_t m_cand)
{
    const uint32_t p = s->model->n_theta;
    const float *zk = s->jac + (size_t)kk * p;
    double sum = 0.0;
    for (uint32_t c = 0; c < m_cand; c++) {
        const double d = dot(s->jac + (size_t)c * p, zk, p);
        sum += d * d;
    }
    return sum / (1.0 + dot(zk, zk, p));
}

me_status me_suggest(me_session *s, const float *xs, uint32_t k, const float *candidates, uint32_t m_cand,
                     uint32_t *best, float *scores)
{
    if (!best) return ME_ERR_NULL;
    me_status st = whitened_candidates(s, xs, k, candidates, m_cand);
    if (st != ME_OK) return st;
    const me_model *m = s->model;
    float sigma;
    me_read_f32(&sigma, m->buf + m->off_uncertainty + 4u, 1u);
    const double w = (double)sigma * sigma * (double)s->norm[2u * m->in_dim + 1u] * s->norm[2u * m->in_dim + 1u];
    double top = -1.0;
    for (uint32_t kk = 0; kk < m_cand; kk++) {
        const double score = w * single_reduction(s, kk, m_cand);
        if (scores) scores[kk] = (float)score;
        if (score > top) {
            top = score;
            *best = kk;
        }
    }
    return ME_OK;
}

/* the reduction of the set `set` (b candidates) read together, tr((I + Z_S Z_S^T)^-1 Z_S G Z_S^T) with
 * G = sum_c z_c z_c^T, from z (s->jac) and u_a = G z_a (work); -1 when the small system is singular */
static double set_reduction(const me_session *s, const float *u, const uint32_t *set, uint32_t b)
{
    const uint32_t p = s->model->n_theta;
    double a[ME_MAX_PLAN * ME_MAX_PLAN], col[ME_MAX_PLAN];
    for (uint32_t i = 0; i < b; i++)
        for (uint32_t j = 0; j <= i; j++)
            a[i * b + j] = dot(s->jac + (size_t)set[i] * p, s->jac + (size_t)set[j] * p, p) + (i == j ? 1.0 : 0.0);
    if (me_cholesky_factor(a, b) != 0) return -1.0;
    double trace = 0.0;
    for (uint32_t j = 0; j < b; j++) { /* column j of A^-1 B, entry j */
        for (uint32_t i = 0; i < b; i++) col[i] = dot(u + (size_t)set[i] * p, s->jac + (size_t)set[j] * p, p);
        me_cholesky_lower_solve(a, col, b);
        for (uint32_t i = b; i-- > 0;) {
            double v = col[i];
            for (uint32_t r = i + 1u; r < b; r++) v -= a[r * b + i] * col[r];
            col[i] = v / a[i * b + i];
        }
        trace += col[j];
    }
    return trace;
}

static int in_set(const uint32_t *set, uint32_t b, uint32_t c)
{
    for (uint32_t i = 0; i < b; i++)
        if (set[i] == c) return 1;
    return 0;
}

me_status me_plan_points(me_session *s, const float *xs, uint32_t k, const float *candidates, uint32_t m_cand,
                         uint32_t count, const uint8_t *exclude, uint32_t *plan, float *work)
{
    if (!plan || !work) return ME_ERR_NULL;
    me_status st = whitened_candidates(s, xs, k, candidates, m_cand);
    if (st != ME_OK) return st;
    uint32_t allowed = 0;
    for (uint32_t c = 0; c < m_cand; c++) allowed += !(exclude && exclude[c]);
    if (count == 0u || count > ME_MAX_PLAN || count > allowed) return ME_ERR_ARGUMENT;
    const uint32_t p = s->model->n_theta;
    for (uint32_t a = 0; a < m_cand; a++) { /* u_a = G z_a = sum_c (z_c . z_a) z_c */
        float *ua = work + (size_t)a * p;
        for (uint32_t i = 0; i < p; i++) ua[i] = 0.f;
        for (uint32_t c = 0; c < m_cand; c++) {
            const float *zc = s->jac + (size_t)c * p;
            const float d = (float)dot(zc, s->jac + (size_t)a * p, p);
            for (uint32_t i = 0; i < p; i++) ua[i] += d * zc[i];
        }
    }
    uint32_t set[ME_MAX_PLAN];
    double best = 0.0;
    for (uint32_t n = 0; n < count; n++) { /* greedy start */
        double top = -INFINITY;
        for (uint32_t c = 0; c < m_cand; c++) {
            if ((exclude && exclude[c]) || in_set(set, n, c)) continue;
            set[n] = c;
            const double g = set_reduction(s, work, set, n + 1u);
            if (g > top) {
                top = g;
                plan[n] = c;
            }
        }
        set[n] = plan[n];
        best = top;
    }
    for (uint32_t pass = 0; pass < 20u && count > 1u; pass++) { /* exchanges while one improves the set */
        int improved = 0;
        for (uint32_t pos = 0; pos < count; pos++) {
            const uint32_t keep = set[pos];
            double top = -INFINITY;
            uint32_t arg = keep;
            for (uint32_t c = 0; c < m_cand; c++) {
                if (exclude && exclude[c]) continue;
                set[pos] = UINT32_MAX;
                if (in_set(set, count, c)) continue;
                set[pos] = c;
                const double g = set_reduction(s, work, set, count);
                if (g > top) {
                    top = g;
                    arg = c;
                }
            }
            if (top > best * (1.0 + 1e-9) + 1e-300) {
                set[pos] = arg;
                best = top;
                improved = 1;
            } else {
                set[pos] = keep;
            }
        }
        if (!improved) break;
    }
    uint32_t first = 0; /* the planned point worth most alone goes first, the rest in plan order */
    double top = -1.0;
    for (uint32_t i = 0; i < count; i++) {
        const double v = single_reduction(s, set[i], m_cand);
        if (v > top || (v == top && set[i] < set[first])) {
            top = v;
            first = i;
        }
    }
    plan[0] = set[first];
    for (uint32_t i = 0, o = 1; i < count; i++)
        if (i != first) plan[o++] = set[i];
    return ME_OK;
}
