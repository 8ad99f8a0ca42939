/* Sessions: the arena layout, the adapted state (read/write/reset), input checks and normalisation,
 * prediction and the support loss. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define ALIGN 16u

typedef struct cursor {
    unsigned char *base; /* NULL: only count */
    uint64_t used;
} cursor;

static void *take(cursor *c, uint64_t bytes)
{
    c->used = (c->used + (ALIGN - 1u)) & ~(uint64_t)(ALIGN - 1u);
    void *p = c->base ? c->base + c->used : NULL;
    c->used += bytes;
    return p;
}

int me_weights_in_place(const me_model *m)
{
    const uint32_t one = 1u;
    unsigned char first;
    memcpy(&first, &one, 1u);
    /* the parser guarantees off_params % 4 == 0, so the buffer's own alignment decides */
    return m->solver == ME_SOLVER_PROTOTYPES && first == 1u &&
           (uintptr_t)(m->buf + m->off_params) % sizeof(float) == 0u;
}

uint32_t me_session_rows(const me_session *s)
{
    return s->model->solver == ME_SOLVER_PROTOTYPES ? 1u : s->max_shots;
}

/* assign every arena block (or just count them when s->... is not to be filled: base NULL). Prototype sessions
 * embed one sample at a time: their activations and input rows are for one sample, whatever max_shots is; what
 * scales with max_shots is the prototypes (a class per sample at most) and a count per class. */
static uint64_t layout(me_session *s, const me_model *m, uint32_t max_shots, unsigned char *base)
{
    cursor c = {base, 0};
    const uint64_t p = m->n_theta, ny = m->task == ME_TASK_REGRESSION ? m->out_dim : 0u;
    const int newton = m->solver == ME_SOLVER_GAUSS_NEWTON;
    const int protos = m->solver == ME_SOLVER_PROTOTYPES;
    const uint32_t rows = protos ? 1u : max_shots;
    me_session tmp;
    if (!s) s = &tmp;
    s->hess = (double *)take(&c, newton ? 8u * p * p : 0u);
    s->rhs = (double *)take(&c, newton ? 8u * p : 0u);
    s->theta = (float *)take(&c, 4u * p);
    s->theta0 = (float *)take(&c, 4u * p);
    s->backup = (float *)take(&c, 4u * p);
    s->rates = (float *)take(&c, 4u * p);
    s->grad = (float *)take(&c, newton || protos ? 0u : 4u * p);
    /* frozen weights: read in place from the model buffer where they can be (prototype sessions) */
    s->frozen = (float *)take(&c, me_weights_in_place(m) ? 0u : 4ull * (m->n_params - m->n_theta));
    s->norm = (float *)take(&c, 4u * (2ull * m->in_dim + 2u * ny));
    s->x0 = (float *)take(&c, 4ull * rows * m->in_dim);
    s->ys = (float *)take(&c, protos ? 0u : 4ull * rows * (ny ? ny : 1u)); /* prototypes read labels in place */
    /* output gradients; prototypes use only d1, as max_shots floats of scratch (the samples per class) */
    s->d0 = (float *)take(&c, protos ? 0u : 4ull * rows * m->max_width);
    s->d1 = (float *)take(&c, protos ? 4ull * max_shots : 4ull * rows * m->max_width);
    s->protos = (float *)take(&c, protos ? 4ull * max_shots * m->out_dim : 0u);
    s->jac = (float *)take(&c, newton ? 4ull * rows * m->out_dim * p : 0u);
    /* prototypes keep no activations for a backward pass: layer outputs may alternate between two blocks of
     * rows x the widest output, when that is smaller than a block per layer (conv nets) */
    uint64_t per_layer = 0, widest = 0;
    for (uint32_t l = 0; l < m->n_layers; l++)
        if (me_owns_output(m, l)) {
            per_layer += m->layers[l].out;
            if (m->layers[l].out > widest) widest = m->layers[l].out;
        }
    float *pingpong[2] = {NULL, NULL};
    const int alternate = protos && 2u * widest < per_layer;
    if (alternate) {
        pingpong[0] = (float *)take(&c, 4ull * rows * widest);
        pingpong[1] = (float *)take(&c, 4ull * rows * widest);
    }
    uint32_t owned = 0;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const me_layer *L = &m->layers[l];
        /* an adapted weight's block also holds theta0's transpose, after the live one, for me_reset */
        const uint64_t copies = (L->flags & ME_ADAPT_WEIGHT) ? 2u : 1u;
        s->wt[l] = me_uses_transposed(L) ? (float *)take(&c, 4ull * copies * L->in * L->out) : NULL;
        const int own = me_owns_output(m, l);
        s->act[l] = !own        ? s->act[l - 1u] /* activations in place */
                    : alternate ? pingpong[owned++ % 2u]
                                : (float *)take(&c, 4ull * rows * L->out);
    }
    /* control models: the planner and the window of transitions, one block carved by control.c */
    unsigned char *ctl = (unsigned char *)take(&c, me_control_bytes(m, rows));
    if (base && m->off_control) me_control_carve(s, ctl, rows);
    return c.used + ALIGN; /* slack to align an arbitrary arena pointer */
}

size_t me_arena_bytes(const me_model *m, uint32_t max_shots)
{
    if (!m || !m->buf || max_shots == 0u || max_shots > ME_MAX_SHOTS) return 0u;
    const uint64_t bytes = layout(NULL, m, me_control_shots(m, max_shots), NULL);
    return bytes > (uint64_t)SIZE_MAX ? 0u : (size_t)bytes;
}

me_status me_session_init(me_session *s, const me_model *m, void *arena, size_t arena_bytes, uint32_t max_shots)
{
    if (!s || !m || !arena || !m->buf) return ME_ERR_NULL;
    if (max_shots == 0u || max_shots > ME_MAX_SHOTS) return ME_ERR_SHOTS;
    const size_t need = me_arena_bytes(m, max_shots);
    if (need == 0u || arena_bytes < need) return ME_ERR_ARENA;
    memset(s, 0, sizeof *s);
    unsigned char *base = (unsigned char *)arena;
    base += (ALIGN - ((uintptr_t)base % ALIGN)) % ALIGN;
    max_shots = me_control_shots(m, max_shots);
    s->model = m; /* before the layout: the control block's carving reads the model */
    layout(s, m, max_shots, base);
    s->model = m;
    s->max_shots = max_shots;

    const uint32_t ny = m->task == ME_TASK_REGRESSION ? m->out_dim : 0u;
    me_read_f32(s->norm, m->buf + m->off_norm, 2u * m->in_dim + 2u * ny);
    me_read_f32(s->rates, m->buf + m->off_rates, m->n_theta);
    uint32_t frozen = 0;
    const int in_place = me_weights_in_place(m);
    for (uint32_t l = 0; l < m->n_layers; l++) { /* adapted tensors live in theta, the others in frozen */
        const me_layer *L = &m->layers[l];
        const int conv = L->kind == ME_LAYER_CONV1D;
        if (L->kind != ME_LAYER_DENSE && L->kind != ME_LAYER_SKIP && !conv) continue;
        const uint32_t nb = conv ? L->out / L->len : L->out;
        const uint32_t nw = conv ? 3u * (L->in / L->len) * nb : L->in * L->out; /* conv: (C_out, C_in, 3) */
        const unsigned char *wsrc = m->buf + m->off_params + 4u * L->w_param;
        const unsigned char *bsrc = m->buf + m->off_params + 4u * L->b_param;
        if (in_place) { /* prototypes: nothing adapted; little-endian float32 at 4-byte alignment (checked) */
            s->w[l] = (float *)(uintptr_t)wsrc;
            s->b[l] = (float *)(uintptr_t)bsrc;
        } else {
            if (L->flags & ME_ADAPT_WEIGHT) {
                s->w[l] = s->theta0 + L->w_theta;
            } else {
                s->w[l] = s->frozen + frozen;
                frozen += nw;
            }
            me_read_f32(s->w[l], wsrc, nw);
            if (L->flags & ME_ADAPT_BIAS) {
                s->b[l] = s->theta0 + L->b_theta;
            } else {
                s->b[l] = s->frozen + frozen;
                frozen += nb;
            }
            me_read_f32(s->b[l], bsrc, nb);
        }
        if (s->wt[l]) /* frozen: the copy used from now on; adapted: theta0's copy, for me_reset */
            me_transpose(s->wt[l] + ((L->flags & ME_ADAPT_WEIGHT) ? (size_t)nw : 0u), s->w[l], L->out, L->in);
        if (L->flags & ME_ADAPT_WEIGHT) s->w[l] = s->theta + L->w_theta; /* work on theta, keep theta0 */
        if (L->flags & ME_ADAPT_BIAS) s->b[l] = s->theta + L->b_theta;
    }
    return me_reset(s);
}

int me_owns_output(const me_model *m, uint32_t l)
{
    const uint8_t kind = m->layers[l].kind;
    return l == 0u || kind == ME_LAYER_DENSE || kind == ME_LAYER_CONV1D || kind == ME_LAYER_MAXPOOL1D;
}

int me_uses_transposed(const me_layer *L) { return L->kind == ME_LAYER_DENSE && L->in > 1u && L->out >= 8u; }

void me_refresh_transposed(me_session *s, int all)
{
    const me_model *m = s->model;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const me_layer *L = &m->layers[l];
        if (!s->wt[l] || !(all || (L->flags & ME_ADAPT_WEIGHT))) continue;
        me_transpose(s->wt[l], s->w[l], L->out, L->in);
    }
}

size_t me_sizeof_model(void) { return sizeof(me_model); }
size_t me_sizeof_session(void) { return sizeof(me_session); }

uint32_t me_theta_size(const me_session *s)
{
    if (!s || !s->model) return 0u;
    return s->model->solver == ME_SOLVER_PROTOTYPES ? s->ways * s->model->out_dim : s->model->n_theta;
}

const float *me_theta(const me_session *s)
{
    if (!s || !s->model) return NULL;
    return s->model->solver == ME_SOLVER_PROTOTYPES ? s->protos : s->theta;
}

uint32_t me_classes(const me_session *s)
{
    if (!s || !s->model) return 0u;
    return s->model->solver == ME_SOLVER_PROTOTYPES ? s->ways : s->model->out_dim;
}

me_status me_reset(me_session *s)
{
    if (!s || !s->model) return ME_ERR_NULL;
    me_theta_reset(s);
    me_control_forget(s);
    return ME_OK;
}

void me_theta_reset(me_session *s)
{
    const me_model *m = s->model;
    memcpy(s->theta, s->theta0, sizeof(float) * m->n_theta);
    for (uint32_t l = 0; l < m->n_layers; l++) { /* theta0's transposed copies, kept since me_session_init */
        const me_layer *L = &m->layers[l];
        if (!s->wt[l] || !(L->flags & ME_ADAPT_WEIGHT)) continue;
        const size_t nw = (size_t)L->in * L->out;
        memcpy(s->wt[l], s->wt[l] + nw, sizeof(float) * nw);
    }
    s->ways = 0u;
    me_forget_adapt_info(s);
}

void me_forget_adapt_info(me_session *s)
{
    s->last.steps_run = s->last.steps_kept = 0u;
    s->last.loss_before = s->last.loss_after = NAN; /* unknown */
}

me_status me_last_adapt_info(const me_session *s, me_adapt_info *info)
{
    if (!s || !s->model || !info) return ME_ERR_NULL;
    *info = s->last;
    return ME_OK;
}

me_status me_set_theta(me_session *s, const float *theta, uint32_t size)
{
    if (!s || !s->model || !theta) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (m->solver == ME_SOLVER_PROTOTYPES) {
        if (size == 0u || size % m->out_dim != 0u || size / m->out_dim > s->max_shots) return ME_ERR_ARGUMENT;
    } else if (size != m->n_theta) {
        return ME_ERR_ARGUMENT;
    }
    if (!me_all_finite(theta, size)) return ME_ERR_NONFINITE;
    if (m->solver == ME_SOLVER_PROTOTYPES) {
        memcpy(s->protos, theta, sizeof(float) * size);
        s->ways = size / m->out_dim;
    } else {
        memcpy(s->theta, theta, sizeof(float) * size);
        me_refresh_transposed(s, 0);
    }
    me_forget_adapt_info(s);
    return ME_OK;
}

me_status me_load_inputs(me_session *s, const float *x, uint32_t n)
{
    const uint32_t d = s->model->in_dim;
    if (!me_all_finite(x, (size_t)n * d)) return ME_ERR_NONFINITE;
    const float *mean = s->norm, *std = s->norm + d;
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t i = 0; i < d; i++) s->x0[(size_t)r * d + i] = (x[(size_t)r * d + i] - mean[i]) / std[i];
    return ME_OK;
}

me_status me_load_targets(me_session *s, const float *y, uint32_t n, uint32_t classes)
{
    const me_model *m = s->model;
    if (m->task == ME_TASK_CLASSIFICATION) {
        if (!me_all_finite(y, n)) return ME_ERR_NONFINITE;
        for (uint32_t r = 0; r < n; r++) {
            if (y[r] < 0.f || y[r] >= (float)classes || y[r] != floorf(y[r])) return ME_ERR_LABEL;
            s->ys[r] = y[r];
        }
        return ME_OK;
    }
    const uint32_t d = m->out_dim;
    if (!me_all_finite(y, (size_t)n * d)) return ME_ERR_NONFINITE;
    const float *mean = s->norm + 2u * m->in_dim, *std = mean + d;
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t o = 0; o < d; o++) s->ys[(size_t)r * d + o] = (y[(size_t)r * d + o] - mean[o]) / std[o];
    return ME_OK;
}

me_status me_adapt(me_session *s, const float *x, const float *y, uint32_t n, uint32_t steps, uint32_t flags,
                   me_adapt_info *info)
{
    if (!s || !s->model || !x || !y) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (n == 0u || n > s->max_shots) return ME_ERR_SHOTS;
    me_adapt_info local;
    if (!info) info = &local;
    me_status st;
    if (m->solver == ME_SOLVER_PROTOTYPES) {
        memset(info, 0, sizeof *info);
        st = me_prototypes_build(s, x, y, n); /* one sample at a time */
    } else {
        st = me_load_inputs(s, x, n);
        if (st == ME_OK) st = me_load_targets(s, y, n, m->out_dim);
        if (st != ME_OK) return st;
        memset(info, 0, sizeof *info);
        st = m->solver == ME_SOLVER_SGD ? me_adapt_sgd(s, n, steps, flags, info)
                                        : me_adapt_gauss_newton(s, n, steps, flags, info);
    }
    if (st == ME_OK) s->last = *info;
    return st;
}

me_status me_predict(me_session *s, const float *x, uint32_t n, float *out)
{
    if (!s || !s->model || !x || !out) return ME_ERR_NULL;
    const me_model *m = s->model;
    const int protos = m->solver == ME_SOLVER_PROTOTYPES;
    if (protos && s->ways == 0u) return ME_ERR_STATE;
    if (!me_all_finite(x, (size_t)n * m->in_dim)) return ME_ERR_NONFINITE;
    const uint32_t width = protos ? s->ways : m->out_dim, chunk = me_session_rows(s);
    for (uint32_t r0 = 0; r0 < n; r0 += chunk) {
        const uint32_t rows = n - r0 < chunk ? n - r0 : chunk;
        me_load_inputs(s, x + (size_t)r0 * m->in_dim, rows);
        const float *y = me_network_forward(s, rows);
        float *o = out + (size_t)r0 * width;
        if (protos) {
            me_prototype_logits(o, y, s->protos, rows, s->ways, m->out_dim);
        } else if (m->task == ME_TASK_REGRESSION) {
            const float *mean = s->norm + 2u * m->in_dim, *std = mean + m->out_dim;
            for (uint32_t r = 0; r < rows; r++)
                for (uint32_t j = 0; j < width; j++)
                    o[(size_t)r * width + j] = y[(size_t)r * width + j] * std[j] + mean[j];
        } else {
            memcpy(o, y, sizeof(float) * rows * width);
        }
    }
    return ME_OK;
}

me_status me_support_loss(me_session *s, const float *x, const float *y, uint32_t n, float *loss)
{
    if (!s || !s->model || !x || !y || !loss) return ME_ERR_NULL;
    if (s->model->solver == ME_SOLVER_PROTOTYPES) return ME_ERR_UNSUPPORTED;
    if (n == 0u || n > s->max_shots) return ME_ERR_SHOTS;
    me_status st = me_load_inputs(s, x, n);
    if (st == ME_OK) st = me_load_targets(s, y, n, s->model->out_dim);
    if (st != ME_OK) return st;
    *loss = me_network_loss(s, me_network_forward(s, n), n);
    return ME_OK;
}
