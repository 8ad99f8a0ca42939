/* Layers as forward/backward pairs over row-major batches: dense (torch.nn.Linear layout), ReLU, tanh,
 * sigmoid. Loops are written so gcc -O3 vectorises them without -ffast-math: the one reduction (me_dot) keeps
 * eight independent partial sums, every other inner loop is an axpy over contiguous memory. */
#include <math.h>
#include <string.h>

#include "internal.h"

float me_dot(const float *a, const float *b, uint32_t len)
{
    float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    uint32_t i = 0;
    for (; i + 8u <= len; i += 8u)
        for (uint32_t j = 0; j < 8u; j++) part[j] += a[i + j] * b[i + j];
    float sum = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    for (; i < len; i++) sum += a[i] * b[i];
    return sum;
}

/* Register-blocked matrix product, the one kernel behind the dense forward and backward passes:
 *   c (m, p) = a (m, k) b (k, p) [+ bias (p)], then optionally ReLU, or zeroed where mask (m, p) <= 0
 * a is read through strides (element (r, q) at a[r * ars + q * aks]), so a transposed operand costs nothing; b, c
 * and mask are row-major with p columns. Tiles of up to 6 rows x 2 vectors of outputs accumulate in registers:
 * the inner loop is an axpy over contiguous columns of b (no reduction, so no reassociation is needed), and each
 * row of b is loaded once per 6 rows of a. With gcc/clang and a SIMD target the tiles use the compilers' generic
 * vector types (gcc's auto-vectoriser spills such tiles); elsewhere, and for the last columns, plain C. */
#define ME_ROWS 6u

/* force inlining where speed is wanted so the tile sizes are constants; -Os builds keep one copy */
#if defined(__GNUC__) && !defined(__OPTIMIZE_SIZE__)
#define ME_TILE static inline __attribute__((always_inline))
#else
#define ME_TILE static
#endif

#if defined(__GNUC__) && !defined(__OPTIMIZE_SIZE__) && \
    (defined(__SSE2__) || defined(__ARM_NEON) || defined(__ARM_NEON__) || defined(__AVX__))
#define ME_VEC 1
#if defined(__AVX__)
#define ME_VLEN 8u
#else
#define ME_VLEN 4u
#endif
typedef float me_vf __attribute__((vector_size(4 * ME_VLEN)));
typedef int32_t me_vi __attribute__((vector_size(4 * ME_VLEN)));
#else
#define ME_VEC 0
#endif

typedef struct me_mm {
    float *c;
    const float *a, *b, *bias, *mask;
    uint32_t ars, aks, k, p;
    int relu;
} me_mm;

/* plain C tile of rows x cols outputs at (r0, j0) */
ME_TILE void mm_tile(const me_mm *t, uint32_t r0, uint32_t j0, uint32_t rows, uint32_t cols)
{
    float acc[ME_ROWS][8];
    const uint32_t p = t->p, k = t->k;
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t j = 0; j < cols; j++) acc[r][j] = t->bias ? t->bias[j0 + j] : 0.f;
    const float *a = t->a + (size_t)r0 * t->ars;
    const float *b = t->b + j0;
    for (uint32_t q = 0; q < k; q++) {
        const float *bq = b + (size_t)q * p;
        for (uint32_t r = 0; r < rows; r++) {
            const float s = a[(size_t)r * t->ars + (size_t)q * t->aks];
            for (uint32_t j = 0; j < cols; j++) acc[r][j] += s * bq[j];
        }
    }
    float *c = t->c + (size_t)r0 * p + j0;
    if (t->mask) {
        const float *mk = t->mask + (size_t)r0 * p + j0;
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t j = 0; j < cols; j++) c[(size_t)r * p + j] = mk[(size_t)r * p + j] > 0.f ? acc[r][j] : 0.f;
    } else if (t->relu) {
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t j = 0; j < cols; j++) c[(size_t)r * p + j] = acc[r][j] > 0.f ? acc[r][j] : 0.f;
    } else {
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t j = 0; j < cols; j++) c[(size_t)r * p + j] = acc[r][j];
    }
}

#if ME_VEC
static inline me_vf vload(const float *p)
{
    me_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* the same with nv vectors of columns */
ME_TILE void mm_vtile(const me_mm *t, uint32_t r0, uint32_t j0, uint32_t rows, uint32_t nv)
{
    me_vf acc[ME_ROWS][2];
    const uint32_t p = t->p, k = t->k;
    const me_vf zero = {0.f};
    for (uint32_t v = 0; v < nv; v++) {
        const me_vf init = t->bias ? vload(t->bias + j0 + v * ME_VLEN) : zero;
        for (uint32_t r = 0; r < rows; r++) acc[r][v] = init;
    }
    const float *a = t->a + (size_t)r0 * t->ars;
    const float *b = t->b + j0;
    for (uint32_t q = 0; q < k; q++) {
        const float *bq = b + (size_t)q * p;
        me_vf bv[2];
        for (uint32_t v = 0; v < nv; v++) bv[v] = vload(bq + v * ME_VLEN);
        for (uint32_t r = 0; r < rows; r++) {
            const float s = a[(size_t)r * t->ars + (size_t)q * t->aks];
            for (uint32_t v = 0; v < nv; v++) acc[r][v] += s * bv[v];
        }
    }
    float *c = t->c + (size_t)r0 * p + j0;
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t v = 0; v < nv; v++) {
            me_vf y = acc[r][v];
            if (t->mask) /* NaN > 0 is false: zero, as the plain ReLU backward */
                y = (me_vf)((me_vi)y & (vload(t->mask + (size_t)(r0 + r) * p + j0 + v * ME_VLEN) > zero));
            else if (t->relu)
                y = (me_vf)((me_vi)y & (y > zero));
            memcpy(c + (size_t)r * p + v * ME_VLEN, &y, sizeof y);
        }
}
#endif

ME_TILE void mm_rows(const me_mm *t, uint32_t r0, uint32_t rows)
{
    uint32_t j = 0;
#if ME_VEC
    for (; j + 2u * ME_VLEN <= t->p; j += 2u * ME_VLEN) mm_vtile(t, r0, j, rows, 2u);
    if (j + ME_VLEN <= t->p) {
        mm_vtile(t, r0, j, rows, 1u);
        j += ME_VLEN;
    }
#else
    for (; j + 8u <= t->p; j += 8u) mm_tile(t, r0, j, rows, 8u);
#endif
    if (j < t->p) mm_tile(t, r0, j, rows, t->p - j);
}

static void mm_run(const me_mm *t, uint32_t m)
{
    uint32_t r = 0;
    for (; r + ME_ROWS <= m; r += ME_ROWS) mm_rows(t, r, ME_ROWS);
    if (r + 4u <= m) {
        mm_rows(t, r, 4u);
        r += 4u;
    }
    if (r + 2u <= m) {
        mm_rows(t, r, 2u);
        r += 2u;
    }
    if (r < m) mm_rows(t, r, 1u);
}

void me_matmul(float *c, const float *a, uint32_t ars, uint32_t aks, const float *b, const float *bias,
               const float *mask, int relu, uint32_t m, uint32_t k, uint32_t p)
{
    const me_mm t = {c, a, b, bias, mask, ars, aks, k, p, relu};
    mm_run(&t, m);
}

/* y[r][o] = b[o] + x[r] . w[o] for `rows` rows at once (each weight row loaded once for all of them) */
ME_TILE void dot_rows(float *y, const float *x, const float *w, const float *b, uint32_t rows, uint32_t in,
                      uint32_t out)
{
    for (uint32_t o = 0; o < out; o++) {
        const float *wo = w + (size_t)o * in;
        float sum[ME_ROWS];
        uint32_t i = 0;
#if ME_VEC
        me_vf acc[ME_ROWS];
        for (uint32_t r = 0; r < rows; r++) acc[r] = (me_vf){0.f};
        for (; i + ME_VLEN <= in; i += ME_VLEN) {
            const me_vf wv = vload(wo + i);
            for (uint32_t r = 0; r < rows; r++) acc[r] += vload(x + (size_t)r * in + i) * wv;
        }
        for (uint32_t r = 0; r < rows; r++) {
            float lane[ME_VLEN];
            memcpy(lane, &acc[r], sizeof lane);
            float t = 0.f;
            for (uint32_t j = 0; j < ME_VLEN; j++) t += lane[j];
            sum[r] = t;
        }
#else
        for (uint32_t r = 0; r < rows; r++) sum[r] = 0.f;
#endif
        for (; i < in; i++)
            for (uint32_t r = 0; r < rows; r++) sum[r] += x[(size_t)r * in + i] * wo[i];
        for (uint32_t r = 0; r < rows; r++) y[(size_t)r * out + o] = b[o] + sum[r];
    }
}

/* y (n, out) = x (n, in) w^T + b with w (out, in), for narrow outputs (and any layer without a transposed
 * copy): dot products, vectorised along the inputs, four rows at a time */
void me_dense_forward(float *y, const float *x, const float *w, const float *b, uint32_t n, uint32_t in,
                      uint32_t out)
{
    if (in == 1u) { /* an input layer of one feature: an axpy per sample */
        me_matmul(y, x, 1u, 1u, w, b, NULL, 0, n, 1u, out);
        return;
    }
    uint32_t r = 0;
    for (; r + 4u <= n; r += 4u) dot_rows(y + (size_t)r * out, x + (size_t)r * in, w, b, 4u, in, out);
    if (r + 2u <= n) {
        dot_rows(y + (size_t)r * out, x + (size_t)r * in, w, b, 2u, in, out);
        r += 2u;
    }
    if (r < n) dot_rows(y + (size_t)r * out, x + (size_t)r * in, w, b, 1u, in, out);
}

/* y (n, out) = x (n, in) wt + b with wt (in, out): the blocked kernel */
void me_dense_forward_t(float *y, const float *x, const float *wt, const float *b, uint32_t n, uint32_t in,
                        uint32_t out)
{
    me_matmul(y, x, in, 1u, wt, b, NULL, 0, n, in, out);
}

/* dx (n, in) = dy w; dw (out, in) = dy^T x; db (out) = column sums of dy (all overwritten) */
void me_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, uint32_t n,
                       uint32_t in, uint32_t out)
{
    if (dx) me_matmul(dx, dy, out, 1u, w, NULL, NULL, 0, n, out, in);
    if (dw) me_dense_weight_grad(dw, dy, x, n, in, out);
    if (db) me_bias_grad(db, dy, n, out);
}

void me_dense_weight_grad(float *dw, const float *dy, const float *x, uint32_t n, uint32_t in, uint32_t out)
{
    if (in == 1u) /* dw (out, 1) is dw^T (1, out) = x^T dy: columns over the outputs */
        me_matmul(dw, x, 1u, 1u, dy, NULL, NULL, 0, 1u, n, out);
    else /* dw (out, in) = dy^T (out, n) x (n, in) */
        me_matmul(dw, dy, 1u, out, x, NULL, NULL, 0, out, n, in);
}

void me_bias_grad(float *db, const float *dy, uint32_t n, uint32_t out)
{
    for (uint32_t o = 0; o < out; o++) db[o] = dy[o];
    for (uint32_t r = 1; r < n; r++)
        for (uint32_t o = 0; o < out; o++) db[o] += dy[(size_t)r * out + o];
}

void me_relu_forward(float *y, const float *x, size_t len)
{
    for (size_t i = 0; i < len; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

/* uses the output: y > 0 exactly where x > 0 */
void me_relu_backward(float *dx, const float *dy, const float *y, size_t len)
{
    for (size_t i = 0; i < len; i++) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

void me_tanh_forward(float *y, const float *x, size_t len)
{
    for (size_t i = 0; i < len; i++) y[i] = tanhf(x[i]);
}

void me_tanh_backward(float *dx, const float *dy, const float *y, size_t len)
{
    for (size_t i = 0; i < len; i++) dx[i] = dy[i] * (1.f - y[i] * y[i]);
}

void me_sigmoid_forward(float *y, const float *x, size_t len)
{
    for (size_t i = 0; i < len; i++) y[i] = 1.f / (1.f + expf(-x[i]));
}

void me_sigmoid_backward(float *dx, const float *dy, const float *y, size_t len)
{
    for (size_t i = 0; i < len; i++) dx[i] = dy[i] * y[i] * (1.f - y[i]);
}
