/* Discounted returns and linear-baseline advantages of one task's episodes, for a device that adapts its policy
 * from its own experience (the policy-gradient step of a policy bundle's adapt_step.onnx takes them).
 * The definition of metaedge.runtime.policy.advantages (numpy), in double precision:
 *   R[e][t] = sum_{k >= t} gamma^(k - t) r[e][k]
 *   phi(o, t) = [c, c^2, t/100, (t/100)^2, (t/100)^3, 1],  c = clip(o, -10, 10)     (F = 2 O + 4 features)
 *   (Phi^T Phi + reg I) w = Phi^T R  by Cholesky; reg = 1e-5, times 10 (at most 5 tries) while not definite
 *   A = R - Phi w, then (A - mean) / (std + 1e-8) over all steps with ME_ADV_NORMALIZE.
 * Two or three passes over the data (the returns are recomputed rather than stored in double), the caller's
 * work buffer, no malloc. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define ADV_REG 1e-5
#define ADV_REG_TRIES 5
#define ADV_EPS 1e-8
#define ADV_CLIP 10.0
#define ADV_TIME_SCALE 100.0

size_t me_advantages_work(uint32_t obs_dim)
{
    const size_t f = 2u * (size_t)obs_dim + 4u;
    return 2u * f * f + 2u * f;
}

/* phi (F) of observation o (obs_dim) at step t */
static void features(double *phi, const float *o, uint32_t obs_dim, uint32_t t)
{
    for (uint32_t i = 0; i < obs_dim; i++) {
        double c = (double)o[i];
        c = c > ADV_CLIP ? ADV_CLIP : (c < -ADV_CLIP ? -ADV_CLIP : c);
        phi[i] = c;
        phi[obs_dim + i] = c * c;
    }
    const double s = (double)t / ADV_TIME_SCALE;
    phi[2u * obs_dim] = s;
    phi[2u * obs_dim + 1u] = s * s;
    phi[2u * obs_dim + 2u] = s * s * s;
    phi[2u * obs_dim + 3u] = 1.0;
}

/* out[row] = ((R - Phi w)[row] - shift) * scale for every step, R recomputed backwards in time; adds the unscaled
 * residuals and their squares to *sum and *sumsq */
static void baseline_residuals(const float *obs, const float *rewards, uint32_t episodes, uint32_t steps,
                               uint32_t obs_dim, double g, const double *w, double *phi, double shift, double scale,
                               float *out, double *sum, double *sumsq)
{
    const uint32_t f = 2u * obs_dim + 4u;
    for (uint32_t e = 0; e < episodes; e++) {
        const float *r = rewards + (size_t)e * steps;
        double acc = 0.0;
        for (uint32_t t = steps; t-- > 0u;) {
            acc = (double)r[t] + g * acc;
            const size_t row = (size_t)e * steps + t;
            features(phi, obs + row * obs_dim, obs_dim, t);
            double a = acc;
            for (uint32_t i = 0; i < f; i++) a -= phi[i] * w[i];
            out[row] = (float)((a - shift) * scale);
            *sum += a;
            *sumsq += a * a;
        }
    }
}

me_status me_advantages(const float *obs, const float *rewards, uint32_t episodes, uint32_t steps,
                        uint32_t obs_dim, float discount, uint32_t flags, double *work, float *returns,
                        float *advantages)
{
    if (!obs || !rewards || !work || !advantages) return ME_ERR_NULL;
    if (episodes == 0u || steps == 0u || obs_dim == 0u || obs_dim > ME_MAX_DIM || !(discount >= 0.0f) ||
        !(discount <= 1.0f) || (flags & ~ME_ADV_NORMALIZE) != 0u)
        return ME_ERR_ARGUMENT;
    const size_t n = (size_t)episodes * steps;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(rewards[i])) return ME_ERR_NONFINITE;
    for (size_t i = 0; i < n * obs_dim; i++)
        if (!isfinite(obs[i])) return ME_ERR_NONFINITE;

    const uint32_t f = 2u * obs_dim + 4u;
    double *gram = work, *chol = work + (size_t)f * f, *w = chol + (size_t)f * f, *phi = w + f;
    memset(gram, 0, sizeof(double) * (size_t)f * f);
    memset(w, 0, sizeof(double) * f);
    const double g = (double)discount;
    /* pass 1: the normal equations (lower triangle) and Phi^T R; the returns go out as they are computed */
    for (uint32_t e = 0; e < episodes; e++) {
        const float *r = rewards + (size_t)e * steps;
        double acc = 0.0;
        for (uint32_t t = steps; t-- > 0u;) {
            acc = (double)r[t] + g * acc;
            const size_t row = (size_t)e * steps + t;
            if (returns) returns[row] = (float)acc;
            features(phi, obs + row * obs_dim, obs_dim, t);
            for (uint32_t i = 0; i < f; i++) {
                double *gi = gram + (size_t)i * f;
                for (uint32_t j = 0; j <= i; j++) gi[j] += phi[i] * phi[j];
                w[i] += phi[i] * acc;
            }
        }
    }
    double reg = ADV_REG;
    int tries = 0;
    for (;; tries++) {
        if (tries == ADV_REG_TRIES) return ME_ERR_SINGULAR;
        memcpy(chol, gram, sizeof(double) * (size_t)f * f);
        for (uint32_t i = 0; i < f; i++) chol[(size_t)i * f + i] += reg;
        if (me_cholesky_factor(chol, f) == 0) break;
        reg *= 10.0;
    }
    me_cholesky_lower_solve(chol, w, f); /* L z = Phi^T R */
    for (uint32_t i = f; i-- > 0u;) {    /* L^T w = z */
        double v = w[i];
        for (uint32_t k = i + 1u; k < f; k++) v -= chol[(size_t)k * f + i] * w[k];
        w[i] = v / chol[(size_t)i * f + i];
    }
    /* pass 2: A = R - Phi w, with its mean and variance; pass 3 (ME_ADV_NORMALIZE) standardises A recomputed from
     * R - Phi w in double rather than from the float copy: the same rounding as numpy's */
    double sum = 0.0, sumsq = 0.0;
    baseline_residuals(obs, rewards, episodes, steps, obs_dim, g, w, phi, 0.0, 1.0, advantages, &sum, &sumsq);
    if (flags & ME_ADV_NORMALIZE) {
        const double mean = sum / (double)n;
        double var = sumsq / (double)n - mean * mean;
        var = var > 0.0 ? var : 0.0;
        baseline_residuals(obs, rewards, episodes, steps, obs_dim, g, w, phi, mean, 1.0 / (sqrt(var) + ADV_EPS),
                           advantages, &sum, &sumsq);
    }
    return ME_OK;
}
