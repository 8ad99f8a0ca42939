/* 1-D convolutions and max pooling for prototype (ProtoNet) embeddings: forward only, over row-major batches
 * of n samples laid out (channels, length) as torch's flatten(1) of (C, L). Batch norm is folded into the
 * convolution's weight and bias by the exporter, so there is no normalisation layer here. */
#include "internal.h"

/* y[o, t] = b[o] + sum_i sum_k w[o, i, k] x[i, t + k - 1], x zero outside [0, len) */
static void conv_row(float *y, const float *x, const float *w, const float *b, uint32_t cin, uint32_t cout,
                     uint32_t len, int relu)
{
    for (uint32_t o = 0; o < cout; o++) {
        float *yo = y + (size_t)o * len;
        for (uint32_t t = 0; t < len; t++) yo[t] = b[o];
        for (uint32_t i = 0; i < cin; i++) {
            const float *xi = x + (size_t)i * len, *wk = w + ((size_t)o * cin + i) * 3u;
            const float w0 = wk[0], w1 = wk[1], w2 = wk[2];
            if (len == 1u) {
                yo[0] += w1 * xi[0];
                continue;
            }
            yo[0] += w1 * xi[0] + w2 * xi[1];
            for (uint32_t t = 1; t + 1u < len; t++) yo[t] += w0 * xi[t - 1u] + w1 * xi[t] + w2 * xi[t + 1u];
            yo[len - 1u] += w0 * xi[len - 2u] + w1 * xi[len - 1u];
        }
        if (relu)
            for (uint32_t t = 0; t < len; t++) yo[t] = yo[t] > 0.f ? yo[t] : 0.f; /* as me_relu_forward */
    }
}

void me_conv1d_forward(float *y, const float *x, const float *w, const float *b, uint32_t n, uint32_t cin,
                       uint32_t cout, uint32_t len, int relu)
{
    for (uint32_t r = 0; r < n; r++)
        conv_row(y + (size_t)r * cout * len, x + (size_t)r * cin * len, w, b, cin, cout, len, relu);
}

void me_maxpool1d_forward(float *y, const float *x, uint32_t n, uint32_t channels, uint32_t len)
{
    const uint32_t half = len / 2u; /* an odd length drops its last step, as torch.nn.MaxPool1d(2) */
    for (size_t rc = 0; rc < (size_t)n * channels; rc++) {
        const float *xr = x + rc * len;
        float *yr = y + rc * half;
        for (uint32_t t = 0; t < half; t++) {
            const float a = xr[2u * t], c = xr[2u * t + 1u];
            yr[t] = (c > a || c != c) ? c : a; /* NaN propagates, as in torch */
        }
    }
}
