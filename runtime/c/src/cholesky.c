/* Cholesky factorisation and solve in double precision for the Gauss-Newton normal equations. */
#include <math.h>

#include "internal.h"

int me_cholesky_factor(double *a, uint32_t p)
{
    for (uint32_t j = 0; j < p; j++) { /* a = L L^T, L in the lower triangle (row-major) */
        double *aj = a + (size_t)j * p;
        double d = aj[j];
        for (uint32_t k = 0; k < j; k++) d -= aj[k] * aj[k];
        if (!(d > 0.0) || !isfinite(d)) return -1;
        aj[j] = sqrt(d);
        for (uint32_t i = j + 1u; i < p; i++) {
            double *ai = a + (size_t)i * p;
            double v = ai[j];
            for (uint32_t k = 0; k < j; k++) v -= ai[k] * aj[k];
            ai[j] = v / aj[j];
        }
    }
    return 0;
}

void me_cholesky_lower_solve(const double *l, double *b, uint32_t p)
{
    for (uint32_t i = 0; i < p; i++) { /* L z = b */
        const double *li = l + (size_t)i * p;
        double v = b[i];
        for (uint32_t k = 0; k < i; k++) v -= li[k] * b[k];
        b[i] = v / li[i];
    }
}

int me_cholesky_solve(double *a, double *b, uint32_t p)
{
    if (me_cholesky_factor(a, p) != 0) return -1;
    me_cholesky_lower_solve(a, b, p);
    for (uint32_t i = p; i-- > 0;) { /* L^T x = z */
        double v = b[i];
        for (uint32_t k = i + 1u; k < p; k++) v -= a[(size_t)k * p + i] * b[k];
        b[i] = v / a[(size_t)i * p + i];
    }
    return 0;
}
