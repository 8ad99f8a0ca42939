/* Guarded SGD with per-parameter rates over the adapted parameters: theta -= rates * grad (MAML, first-order
 * MAML, Meta-SGD, ANIL, Reptile all adapt this way on a device). With ME_GUARD a step that raises the support
 * loss (or makes it non-finite) is rolled back and adaptation stops: later steps would start from the same
 * point and be rejected too. The forward pass that checks a step is also the next step's forward. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* the guard's verdict on a step from loss `before` to `after` (NaN before: any finite after is kept) */
static int rejected(float before, float after) { return !isfinite(after) || after > before; }

/* make theta the other of the two state buffers (theta, backup) and point the layers' adapted tensors at it */
static void swap_state(me_session *s)
{
    float *t = s->theta;
    s->theta = s->backup;
    s->backup = t;
    const me_model *m = s->model;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const me_layer *L = &m->layers[l];
        if (L->flags & ME_ADAPT_WEIGHT) s->w[l] = s->theta + L->w_theta;
        if (L->flags & ME_ADAPT_BIAS) s->b[l] = s->theta + L->b_theta;
    }
}

/* Make the step written into the spare buffer the state and check it with the next forward pass: returns 1 with
 * `loss` and `out` updated when the step is kept, 0 when the guard rolled it back to the previous state. */
static int take_step(me_session *s, uint32_t n, uint32_t flags, float *loss, const float **out)
{
    swap_state(s);
    me_refresh_transposed(s, 0);
    const float *next_out = me_network_forward(s, n);
    const float after = me_network_loss(s, next_out, n);
    if ((flags & ME_GUARD) && rejected(*loss, after)) {
        swap_state(s);
        me_refresh_transposed(s, 0);
        return 0;
    }
    *loss = after;
    *out = next_out;
    return 1;
}

me_status me_adapt_sgd(me_session *s, uint32_t n, uint32_t steps, uint32_t flags, me_adapt_info *info)
{
    const uint32_t p = s->model->n_theta;
    const float *out = me_network_forward(s, n);
    float loss = me_network_loss(s, out, n);
    info->loss_before = loss;
    for (uint32_t k = 0; k < steps; k++) {
        info->steps_run++;
        me_network_loss_backward(s, out, n, s->d0);
        me_network_backward(s, 0, n, s->d0, s->grad);
        /* the step goes into the spare buffer, which becomes theta; the old state stays as backup */
        const float *restrict theta = s->theta, *restrict rates = s->rates, *restrict grad = s->grad;
        float *restrict next = s->backup; /* four separate arena blocks */
        for (uint32_t i = 0; i < p; i++) next[i] = theta[i] - rates[i] * grad[i];
        if (!take_step(s, n, flags, &loss, &out)) break;
        info->steps_kept++;
    }
    info->loss_after = loss;
    return ME_OK;
}

void me_jacobian_rows(me_session *s, uint32_t n, float *jac)
{
    const me_model *m = s->model;
    const uint32_t p = m->n_theta;
    memset(jac, 0, sizeof(float) * (size_t)n * m->out_dim * p);
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t o = 0; o < m->out_dim; o++) {
            memset(s->d0, 0, sizeof(float) * m->out_dim);
            s->d0[o] = 1.f;
            me_network_backward(s, r, 1u, s->d0, jac + ((size_t)r * m->out_dim + o) * p);
        }
}

void me_normal_matrix(me_session *s, uint32_t rows)
{
    const me_model *m = s->model;
    const uint32_t p = m->n_theta;
    for (uint32_t i = 0; i < p; i++) {
        for (uint32_t j = 0; j <= i; j++) {
            double h = 0.0;
            for (uint32_t q = 0; q < rows; q++)
                h += (double)s->jac[(size_t)q * p + i] * (double)s->jac[(size_t)q * p + j];
            s->hess[(size_t)i * p + j] = h;
        }
        s->hess[(size_t)i * p + i] += (double)(expf(s->rates[i]) + m->min_damping);
    }
}

/* Damped Gauss-Newton for MSE (the `ridge` learner):
 *   J = d outputs / d theta (n*out, p), r = f(theta) - y
 *   theta -= (J^T J + diag(exp(rates) + min_damping))^-1 J^T r   (rates: log prior precisions; min_damping:
 *   from the file, docs/firmware.md)
 * J is built row by row with one backward pass per output; the normal equations are formed and solved in
 * double precision (a float32 solve costs ~1e-3 relative accuracy on a 3-point calibration). */
me_status me_adapt_gauss_newton(me_session *s, uint32_t n, uint32_t steps, uint32_t flags, me_adapt_info *info)
{
    const me_model *m = s->model;
    const uint32_t p = m->n_theta, rows = n * m->out_dim;
    const float *out = me_network_forward(s, n);
    float loss = me_network_loss(s, out, n);
    info->loss_before = loss;
    for (uint32_t k = 0; k < steps; k++) {
        info->steps_run++;
        me_jacobian_rows(s, n, s->jac);
        for (uint32_t i = 0; i < p; i++) {
            double g = 0.0;
            for (uint32_t q = 0; q < rows; q++)
                g += (double)s->jac[(size_t)q * p + i] * (double)(out[q] - s->ys[q]);
            s->rhs[i] = g;
        }
        me_normal_matrix(s, rows);
        if (me_cholesky_solve(s->hess, s->rhs, p) != 0) return ME_ERR_SINGULAR;
        for (uint32_t i = 0; i < p; i++) s->backup[i] = s->theta[i] - (float)s->rhs[i];
        if (!take_step(s, n, flags, &loss, &out)) break;
        info->steps_kept++;
    }
    info->loss_after = loss;
    return ME_OK;
}
