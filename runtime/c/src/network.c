/* The layer table as one function of the session's parameters: forward over a batch of rows, backward into
 * the gradient of the adapted parameters only. Activations run in place on their dense layer's output
 * buffer, so a network needs one buffer per dense layer. */
#include "internal.h"

static const float *layer_input(const me_session *s, uint32_t l, size_t row0)
{
    const me_model *m = s->model;
    return l == 0u ? s->x0 + row0 * m->in_dim : s->act[l - 1u] + row0 * m->layers[l - 1u].out;
}

const float *me_network_forward(me_session *s, uint32_t n)
{
    const me_model *m = s->model;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const me_layer *L = &m->layers[l];
        const float *x = layer_input(s, l, 0);
        float *y = s->act[l];
        const size_t len = (size_t)n * L->out;
        switch (L->kind) {
        case ME_LAYER_DENSE:
            if (s->wt[l] || L->in == 1u) { /* w (out, 1) is its own transpose (1, out). A ReLU right after
                                              * runs inside the kernel, on the same (in-place) buffer */
                const int relu = l + 1u < m->n_layers && m->layers[l + 1u].kind == ME_LAYER_RELU;
                me_matmul(y, x, L->in, 1u, s->wt[l] ? s->wt[l] : s->w[l], s->b[l], NULL, relu, n, L->in, L->out);
                l += (uint32_t)relu;
            } else {
                me_dense_forward(y, x, s->w[l], s->b[l], n, L->in, L->out);
            }
            break;
        case ME_LAYER_RELU: me_relu_forward(y, x, len); break;
        case ME_LAYER_TANH: me_tanh_forward(y, x, len); break;
        case ME_LAYER_SIGMOID: me_sigmoid_forward(y, x, len); break;
        case ME_LAYER_CONV1D: { /* prototype embeddings only (forward); a ReLU right after runs in the kernel */
            const int relu = l + 1u < m->n_layers && m->layers[l + 1u].kind == ME_LAYER_RELU;
            me_conv1d_forward(y, x, s->w[l], s->b[l], n, L->in / L->len, L->out / L->len, L->len, relu);
            l += (uint32_t)relu;
            break;
        }
        case ME_LAYER_MAXPOOL1D: me_maxpool1d_forward(y, x, n, L->in / L->len, L->len); break;
        case ME_LAYER_SKIP: /* y (== x, in place) += x0 W^T + b */
            for (uint32_t r = 0; r < n; r++)
                for (uint32_t o = 0; o < L->out; o++)
                    y[(size_t)r * L->out + o] += s->b[l][o] + me_dot(s->x0 + (size_t)r * L->in,
                                                                     s->w[l] + (size_t)o * L->in, L->in);
            break;
        default: break; /* the parser admits no other kind */
        }
    }
    return s->act[m->n_layers - 1u];
}

void me_network_backward(me_session *s, uint32_t row0, uint32_t n, float *dout, float *g)
{
    const me_model *m = s->model;
    uint32_t first = m->n_layers; /* the first layer with adapted parameters: no gradient flows below it */
    for (uint32_t l = 0; l < m->n_layers; l++)
        if (m->layers[l].flags) {
            first = l;
            break;
        }
    float *d = dout;
    for (uint32_t l = m->n_layers; l-- > first;) {
        const me_layer *L = &m->layers[l];
        const float *y = s->act[l] + (size_t)row0 * L->out;
        const size_t len = (size_t)n * L->out;
        float *dw = (L->flags & ME_ADAPT_WEIGHT) ? g + L->w_theta : NULL;
        float *db = (L->flags & ME_ADAPT_BIAS) ? g + L->b_theta : NULL;
        switch (L->kind) {
        case ME_LAYER_DENSE: {
            const float *x = layer_input(s, l, row0);
            if (dw) me_dense_weight_grad(dw, d, x, n, L->in, L->out);
            if (db) me_bias_grad(db, d, n, L->out);
            if (l > first) { /* dx = d w, with a ReLU below folded in (its output is this layer's input x) */
                float *dx = d == s->d0 ? s->d1 : s->d0;
                const int relu = m->layers[l - 1u].kind == ME_LAYER_RELU;
                me_matmul(dx, d, L->out, 1u, s->w[l], NULL, relu ? x : NULL, 0, n, L->out, L->in);
                l -= (uint32_t)relu;
                d = dx;
            }
            break;
        }
        case ME_LAYER_RELU: me_relu_backward(d, d, y, len); break;
        case ME_LAYER_TANH: me_tanh_backward(d, d, y, len); break;
        case ME_LAYER_SIGMOID: me_sigmoid_backward(d, d, y, len); break;
        case ME_LAYER_SKIP: /* the gradient passes unchanged to the head's output */
            me_dense_backward(NULL, dw, db, d, s->x0 + (size_t)row0 * L->in, s->w[l], n, L->in, L->out);
            break;
        default: break;
        }
    }
}

float me_network_loss(const me_session *s, const float *out, uint32_t n)
{
    const me_model *m = s->model;
    if (m->loss == ME_LOSS_MSE) return me_mse_forward(out, s->ys, (size_t)n * m->out_dim);
    return me_cross_entropy_forward(out, s->ys, n, m->out_dim);
}

void me_network_loss_backward(const me_session *s, const float *out, uint32_t n, float *dout)
{
    const me_model *m = s->model;
    if (m->loss == ME_LOSS_MSE)
        me_mse_backward(dout, out, s->ys, (size_t)n * m->out_dim);
    else
        me_cross_entropy_backward(dout, out, s->ys, n, m->out_dim);
}
