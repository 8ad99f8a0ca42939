/* Prototypical-network heads: prototypes are class means of the support embeddings, logits are minus the
 * squared Euclidean distances to them. */
#include <math.h>
#include <string.h>

#include "internal.h"

me_status me_prototypes_build(me_session *s, const float *x, const float *y, uint32_t n)
{
    const me_model *m = s->model;
    const uint32_t d = m->out_dim, in = m->in_dim;
    float *count = s->d1; /* max_shots >= n floats of scratch; labels are < n (checked) */
    uint32_t ways = 0;
    if (!me_all_finite(x, (size_t)n * in) || !me_all_finite(y, n)) return ME_ERR_NONFINITE;
    for (uint32_t r = 0; r < n; r++)
        if (y[r] < 0.f || y[r] >= (float)n || y[r] != floorf(y[r])) return ME_ERR_LABEL;
    memset(count, 0, sizeof(float) * n);
    for (uint32_t r = 0; r < n; r++) {
        const uint32_t c = (uint32_t)y[r];
        count[c] += 1.f;
        if (c + 1u > ways) ways = c + 1u;
    }
    for (uint32_t c = 0; c < ways; c++)
        if (count[c] == 0.f) return ME_ERR_LABEL; /* a class without a sample; the prototypes stay as they were */
    /* one sample at a time: normalise it into x0, embed it, add it to its class sum; so the activations are
     * those of one sample whatever n is */
    float *sum = s->protos;
    memset(sum, 0, sizeof(float) * (size_t)ways * d);
    for (uint32_t r = 0; r < n; r++) {
        const uint32_t c = (uint32_t)y[r];
        me_load_inputs(s, x + (size_t)r * in, 1u); /* finite: checked above */
        const float *z = me_network_forward(s, 1u);
        for (uint32_t j = 0; j < d; j++) sum[(size_t)c * d + j] += z[j];
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
