/* Layer gradients against central finite differences of L = sum(c * y) in double-checked float. */
#include <math.h>
#include <string.h>

#include "../src/internal.h"
#include "check.h"

enum { N = 3, IN = 11, OUT = 7 }; /* IN > 8 exercises me_dot's partial sums and its tail */

static uint32_t rng = 12345u;

static void fill(float *v, size_t len, float scale)
{
    for (size_t i = 0; i < len; i++) v[i] = scale * check_uniform(&rng);
}

static double objective(const float *y, const float *c, size_t len)
{
    double s = 0.0;
    for (size_t i = 0; i < len; i++) s += (double)y[i] * (double)c[i];
    return s;
}

static double dense_objective(const float *x, const float *w, const float *b, const float *c)
{
    float y[N * OUT];
    me_dense_forward(y, x, w, b, N, IN, OUT);
    return objective(y, c, N * OUT);
}

/* central difference of dense_objective with respect to v[i] (v is one of x, w, b) */
static double dense_fd(float *x, float *w, float *b, const float *c, float *v, size_t i)
{
    const float eps = 1e-2f, keep = v[i];
    v[i] = keep + eps;
    const double plus = dense_objective(x, w, b, c);
    v[i] = keep - eps;
    const double minus = dense_objective(x, w, b, c);
    v[i] = keep;
    return (plus - minus) / (2.0 * eps);
}

static void test_dense(void)
{
    float x[N * IN], w[OUT * IN], b[OUT], c[N * OUT], dx[N * IN], dw[OUT * IN], db[OUT];
    fill(x, N * IN, 1.f);
    fill(w, OUT * IN, 0.5f);
    fill(b, OUT, 0.5f);
    fill(c, N * OUT, 1.f);
    memset(dw, 0, sizeof dw);
    memset(db, 0, sizeof db);
    me_dense_backward(dx, dw, db, c, x, w, N, IN, OUT);
    for (size_t i = 0; i < N * IN; i++) CHECK_CLOSE(dx[i], dense_fd(x, w, b, c, x, i), 1e-3);
    for (size_t i = 0; i < OUT * IN; i++) CHECK_CLOSE(dw[i], dense_fd(x, w, b, c, w, i), 1e-3);
    for (size_t i = 0; i < OUT; i++) CHECK_CLOSE(db[i], dense_fd(x, w, b, c, b, i), 1e-3);
    /* golden: one sample, y = [1, 2] . [[3, 4], [5, 6]]^T + [0.5, -1] */
    const float gx[2] = {1.f, 2.f}, gw[4] = {3.f, 4.f, 5.f, 6.f}, gb[2] = {0.5f, -1.f};
    float gy[2];
    me_dense_forward(gy, gx, gw, gb, 1, 2, 2);
    CHECK_CLOSE(gy[0], 11.5, 0);
    CHECK_CLOSE(gy[1], 16.0, 0);
    /* one input feature takes the axpy path */
    const float x1[2] = {2.f, -1.f}, w1[3] = {1.f, 2.f, 3.f}, b1[3] = {0.f, 1.f, -1.f};
    float y1[6];
    me_dense_forward(y1, x1, w1, b1, 2, 1, 3);
    CHECK_CLOSE(y1[2], 5.0, 0);
    CHECK_CLOSE(y1[4], -1.0, 0);
}

typedef void (*act_fn)(float *, const float *, size_t);
typedef void (*act_grad_fn)(float *, const float *, const float *, size_t);

static void test_activation(act_fn forward, act_grad_fn backward, const char *name)
{
    enum { LEN = 40 };
    float x[LEN], y[LEN], c[LEN], dx[LEN];
    fill(x, LEN, 3.f);
    for (size_t i = 0; i < LEN; i++)
        if (fabsf(x[i]) < 0.1f) x[i] = 0.5f; /* keep away from ReLU's kink */
    fill(c, LEN, 1.f);
    forward(y, x, LEN);
    backward(dx, c, y, LEN);
    for (size_t i = 0; i < LEN; i++) {
        const float eps = 1e-2f, keep = x[i];
        float yp[LEN], ym[LEN];
        x[i] = keep + eps;
        forward(yp, x, LEN);
        x[i] = keep - eps;
        forward(ym, x, LEN);
        x[i] = keep;
        const double fd = (objective(yp, c, LEN) - objective(ym, c, LEN)) / (2.0 * eps);
        if (fabs(dx[i] - fd) > 2e-3) {
            check_failures++;
            fprintf(stderr, "%s: d/dx[%zu] = %g, finite difference %g\n", name, i, dx[i], fd);
        }
    }
}

int main(void)
{
    test_dense();
    test_activation(me_relu_forward, me_relu_backward, "relu");
    test_activation(me_tanh_forward, me_tanh_backward, "tanh");
    test_activation(me_sigmoid_forward, me_sigmoid_backward, "sigmoid");
    float y[3];
    const float x[3] = {-1.f, 0.f, 2.f};
    me_sigmoid_forward(y, x, 3);
    CHECK_CLOSE(y[1], 0.5, 0);
    CHECK_CLOSE(y[2], 0.880797, 1e-6);
    me_relu_forward(y, x, 3);
    CHECK(y[0] == 0.f && y[2] == 2.f);
    return check_report("test_layers");
}
