/* Losses as forward/backward pairs: mean squared error over all elements (torch's mse mean) and softmax
 * cross-entropy averaged over samples (torch.nn.functional.cross_entropy). */
#include <math.h>

#include "internal.h"

float me_mse_forward(const float *pred, const float *target, size_t len)
{
    float sum = 0.f;
    for (size_t i = 0; i < len; i++) {
        float e = pred[i] - target[i];
        sum += e * e;
    }
    return sum / (float)len;
}

void me_mse_backward(float *dpred, const float *pred, const float *target, size_t len)
{
    const float scale = 2.f / (float)len;
    for (size_t i = 0; i < len; i++) dpred[i] = scale * (pred[i] - target[i]);
}

static float row_max(const float *z, uint32_t classes)
{
    float m = z[0];
    for (uint32_t c = 1; c < classes; c++) m = z[c] > m ? z[c] : m;
    return m;
}

float me_cross_entropy_forward(const float *logits, const float *labels, uint32_t n, uint32_t classes)
{
    float total = 0.f;
    for (uint32_t r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * classes;
        const float m = row_max(z, classes);
        float sum = 0.f;
        for (uint32_t c = 0; c < classes; c++) sum += expf(z[c] - m);
        total += logf(sum) - (z[(uint32_t)labels[r]] - m);
    }
    return total / (float)n;
}

void me_cross_entropy_backward(float *dlogits, const float *logits, const float *labels, uint32_t n,
                               uint32_t classes)
{
    const float inv_n = 1.f / (float)n;
    for (uint32_t r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * classes;
        float *d = dlogits + (size_t)r * classes;
        const float m = row_max(z, classes);
        float sum = 0.f;
        for (uint32_t c = 0; c < classes; c++) {
            d[c] = expf(z[c] - m);
            sum += d[c];
        }
        for (uint32_t c = 0; c < classes; c++) d[c] = d[c] / sum * inv_n;
        d[(uint32_t)labels[r]] -= inv_n;
    }
}
