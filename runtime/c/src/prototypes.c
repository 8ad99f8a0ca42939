/* Prototypical-network heads: prototypes are class means of the support embeddings, logits are minus the
 * squared Euclidean distances to them. */
#include <string.h>

#include "internal.h"

me_status me_prototypes_build(me_session *s, uint32_t n)
{
    const uint32_t d = s->model->out_dim;
    float *count = s->d1; /* n <= max_shots floats of scratch; labels are < n (checked) */
    uint32_t ways = 0;
    memset(count, 0, sizeof(float) * n);
    for (uint32_t r = 0; r < n; r++) {
        const uint32_t c = (uint32_t)s->ys[r];
        count[c] += 1.f;
        if (c + 1u > ways) ways = c + 1u;
    }
    for (uint32_t c = 0; c < ways; c++)
        if (count[c] == 0.f) return ME_ERR_LABEL; /* a class without a sample; the prototypes stay as they were */
    const float *z = me_network_forward(s, n);
    float *sum = s->protos;
    memset(sum, 0, sizeof(float) * (size_t)ways * d);
    for (uint32_t r = 0; r < n; r++) {
        const uint32_t c = (uint32_t)s->ys[r];
        for (uint32_t j = 0; j < d; j++) sum[(size_t)c * d + j] += z[(size_t)r * d + j];
    }
    for (uint32_t c = 0; c < ways; c++)
        for (uint32_t j = 0; j < d; j++) sum[(size_t)c * d + j] /= count[c];
    s->ways = ways;
    return ME_OK;
}

void me_prototype_logits(float *logits, const float *z, const float *protos, uint32_t n, uint32_t ways,
                         uint32_t dim)
{
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t c = 0; c < ways; c++) {
            const float *zr = z + (size_t)r * dim, *pc = protos + (size_t)c * dim;
            float dist = 0.f;
            for (uint32_t j = 0; j < dim; j++) {
                const float e = zr[j] - pc[j];
                dist += e * e;
            }
            logits[(size_t)r * ways + c] = -dist;
        }
}
