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
typedef float me_v4 __attribute__((vector_size(16))); /* 4x4 transposes */
typedef int32_t me_i4 __attribute__((vector_size(16)));
#if defined(__clang__)
#define ME_SHUF(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define ME_SHUF(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (me_i4){i0, i1, i2, i3})
#endif
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

/* plain C tiles over all m rows for columns [j0, p) (fewer than 8 with vector tiles, all of them otherwise) */
ME_TILE void mm_cols_plain(const me_mm *t, uint32_t m, uint32_t j0, uint32_t cols)
{
    uint32_t r = 0;
    for (; r + ME_ROWS <= m; r += ME_ROWS) mm_tile(t, r, j0, ME_ROWS, cols);
    if (r + 4u <= m) {
        mm_tile(t, r, j0, 4u, cols);
        r += 4u;
    }
    if (r + 2u <= m) {
        mm_tile(t, r, j0, 2u, cols);
        r += 2u;
    }
    if (r < m) mm_tile(t, r, j0, 1u, cols);
}

static void mm_tail(const me_mm *t, uint32_t m, uint32_t j0) { mm_cols_plain(t, m, j0, t->p - j0); }

#if ME_VEC
static inline me_vf vload(const float *p)
{
    me_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* the vector tiles for the compile-time target */
#define MK_VF me_vf
#define MK_VI me_vi
#define MK_VLEN ME_VLEN
#define MK_NAME(x) mm_v_##x
#define MK_ATTR
#define MK_MADD(acc, s, b) ((acc) + (s) * (b))
#include "mm_kernel.h"
#undef MK_VF
#undef MK_VI
#undef MK_VLEN
#undef MK_NAME
#undef MK_ATTR
#undef MK_MADD
static void mm_run(const me_mm *t, uint32_t m) { mm_v_run(t, m); }

#if (defined(__x86_64__) || defined(__i386__)) && !defined(__AVX__)
/* x86 builds for an older baseline (the default x86-64 one: SSE2) also get an AVX copy of the tiles, 8 lanes,
 * taken when the CPU and OS support AVX (checked on each call: a load and a test). Multiply then add, as the
 * SSE2 copy: the same roundings, so the results do not depend on the CPU (fused multiply-adds moved a ridge
 * prediction of ~100 by 2 ulp, past the 1e-5 parity tolerance with PyTorch) */
#define ME_AVX_DISPATCH 1
typedef float me_vf8 __attribute__((vector_size(32)));
typedef int32_t me_vi8 __attribute__((vector_size(32)));
#define MK_VF me_vf8
#define MK_VI me_vi8
#define MK_VLEN 8u
#define MK_NAME(x) mm_avx_##x
#define MK_ATTR __attribute__((target("avx")))
#define MK_MADD(acc, s, b) ((acc) + (s) * (b))
#include "mm_kernel.h"
#endif

#else
static void mm_run(const me_mm *t, uint32_t m)
{
    uint32_t j = 0;
    for (; j + 8u <= t->p; j += 8u) mm_cols_plain(t, m, j, 8u);
    if (j < t->p) mm_tail(t, m, j);
}
#endif

void me_matmul(float *c, const float *a, uint32_t ars, uint32_t aks, const float *b, const float *bias,
               const float *mask, int relu, uint32_t m, uint32_t k, uint32_t p)
{
    const me_mm t = {c, a, b, bias, mask, ars, aks, k, p, relu};
#if defined(ME_AVX_DISPATCH)
    if (__builtin_cpu_supports("avx")) {
        mm_avx_run(&t, m);
        return;
    }
#endif
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
    float *restrict g = db; /* the gradient and the layer's output gradient never overlap */
    const float *restrict d = dy;
    if (out == 1u) { /* a one-output head: one running sum, in row order as below */
        float sum = d[0];
        for (uint32_t r = 1; r < n; r++) sum += d[r];
        g[0] = sum;
        return;
    }
    for (uint32_t o = 0; o < out; o++) g[o] = d[o];
    for (uint32_t r = 1; r < n; r++)
        for (uint32_t o = 0; o < out; o++) g[o] += d[(size_t)r * out + o];
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

/* dst (cols, rows) = src (rows, cols)^T: 4x4 blocks transposed in registers where the compiler has vector
 * shuffles, element by element elsewhere and at the edges */
void me_transpose(float *dst, const float *src, uint32_t rows, uint32_t cols)
{
    uint32_t r = 0;
#if ME_VEC
    for (; r + 4u <= rows; r += 4u) {
        uint32_t c = 0;
        for (; c + 4u <= cols; c += 4u) {
            me_v4 x0, x1, x2, x3;
            memcpy(&x0, src + (size_t)r * cols + c, sizeof x0);
            memcpy(&x1, src + (size_t)(r + 1u) * cols + c, sizeof x1);
            memcpy(&x2, src + (size_t)(r + 2u) * cols + c, sizeof x2);
            memcpy(&x3, src + (size_t)(r + 3u) * cols + c, sizeof x3);
            const me_v4 t0 = ME_SHUF(x0, x1, 0, 4, 1, 5), t1 = ME_SHUF(x0, x1, 2, 6, 3, 7);
            const me_v4 t2 = ME_SHUF(x2, x3, 0, 4, 1, 5), t3 = ME_SHUF(x2, x3, 2, 6, 3, 7);
            const me_v4 y0 = ME_SHUF(t0, t2, 0, 1, 4, 5), y1 = ME_SHUF(t0, t2, 2, 3, 6, 7);
            const me_v4 y2 = ME_SHUF(t1, t3, 0, 1, 4, 5), y3 = ME_SHUF(t1, t3, 2, 3, 6, 7);
            memcpy(dst + (size_t)c * rows + r, &y0, sizeof y0);
            memcpy(dst + (size_t)(c + 1u) * rows + r, &y1, sizeof y1);
            memcpy(dst + (size_t)(c + 2u) * rows + r, &y2, sizeof y2);
            memcpy(dst + (size_t)(c + 3u) * rows + r, &y3, sizeof y3);
        }
        for (; c < cols; c++)
            for (uint32_t i = r; i < r + 4u; i++) dst[(size_t)c * rows + i] = src[(size_t)i * cols + c];
    }
#endif
    for (; r < rows; r++)
        for (uint32_t c = 0; c < cols; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}
