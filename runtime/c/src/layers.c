/* Layers as forward/backward pairs over row-major batches: dense (torch.nn.Linear layout), ReLU, tanh,
 * sigmoid. Loops are written so gcc -O3 vectorises them without -ffast-math: the one reduction (me_dot) keeps
 * eight independent partial sums, every other inner loop is an axpy over contiguous memory. */
#include <math.h>

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

/* y (n, out) = x (n, in) w^T + b, w (out, in) */
void me_dense_forward(float *y, const float *x, const float *w, const float *b, uint32_t n, uint32_t in,
                      uint32_t out)
{
    if (in == 1u) { /* an input layer of one feature: an axpy per sample */
        for (uint32_t r = 0; r < n; r++) {
            float xr = x[r];
            float *yr = y + (size_t)r * out;
            for (uint32_t o = 0; o < out; o++) yr[o] = b[o] + xr * w[o];
        }
        return;
    }
    for (uint32_t r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * in;
        float *yr = y + (size_t)r * out;
        for (uint32_t o = 0; o < out; o++) yr[o] = b[o] + me_dot(xr, w + (size_t)o * in, in);
    }
}

#define ME_COLS 16u /* block width of me_dense_backward's weight gradient */

/* y (n, out) = x (n, in) wt + b with wt (in, out): an axpy per input feature, no reduction */
void me_dense_forward_t(float *y, const float *x, const float *wt, const float *b, uint32_t n, uint32_t in,
                        uint32_t out)
{
    for (uint32_t r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * in;
        float *yr = y + (size_t)r * out;
        for (uint32_t o = 0; o < out; o++) yr[o] = b[o];
        for (uint32_t i = 0; i < in; i++) {
            const float a = xr[i];
            const float *wi = wt + (size_t)i * out;
            for (uint32_t o = 0; o < out; o++) yr[o] += a * wi[o];
        }
    }
}

/* dx (n, in) = dy w; dw (out, in) += dy^T x; db (out) += column sums of dy */
void me_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, uint32_t n,
                       uint32_t in, uint32_t out)
{
    if (dx)
        for (uint32_t r = 0; r < n; r++) {
            const float *dyr = dy + (size_t)r * out;
            float *dxr = dx + (size_t)r * in;
            for (uint32_t i = 0; i < in; i++) dxr[i] = 0.f;
            for (uint32_t o = 0; o < out; o++) {
                const float g = dyr[o];
                const float *wo = w + (size_t)o * in;
                for (uint32_t i = 0; i < in; i++) dxr[i] += g * wo[i];
            }
        }
    if (dw) /* dw[o][i] += sum_r dy[r][o] x[r][i]: blocks of 16 inputs accumulate over the rows in registers */
        for (uint32_t o = 0; o < out; o++) {
            float *dwo = dw + (size_t)o * in;
            uint32_t i0 = 0;
            for (; i0 + ME_COLS <= in; i0 += ME_COLS) {
                float acc[ME_COLS];
                for (uint32_t j = 0; j < ME_COLS; j++) acc[j] = dwo[i0 + j];
                for (uint32_t r = 0; r < n; r++) {
                    const float g = dy[(size_t)r * out + o];
                    const float *xr = x + (size_t)r * in + i0;
                    for (uint32_t j = 0; j < ME_COLS; j++) acc[j] += g * xr[j];
                }
                for (uint32_t j = 0; j < ME_COLS; j++) dwo[i0 + j] = acc[j];
            }
            for (uint32_t r = 0; r < n; r++) {
                const float g = dy[(size_t)r * out + o];
                const float *xr = x + (size_t)r * in;
                for (uint32_t i = i0; i < in; i++) dwo[i] += g * xr[i];
            }
        }
    if (db)
        for (uint32_t r = 0; r < n; r++)
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
