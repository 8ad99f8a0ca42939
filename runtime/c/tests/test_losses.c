/* Losses: golden values (as torch computes them) and gradients against finite differences. */
#include <string.h>

#include "../src/internal.h"
#include "check.h"

static void test_mse(void)
{
    const float pred[4] = {1.f, 2.f, 3.f, 4.f}, target[4] = {0.f, 2.f, 5.f, 3.f};
    CHECK_CLOSE(me_mse_forward(pred, target, 4), 1.5, 1e-7); /* (1 + 0 + 4 + 1) / 4 */
    float d[4];
    me_mse_backward(d, pred, target, 4);
    CHECK_CLOSE(d[0], 0.5, 1e-7);
    CHECK_CLOSE(d[2], -1.0, 1e-7);
}

static void test_cross_entropy(void)
{
    const float logits[6] = {1.f, 2.f, 3.f, 0.5f, -1.f, 0.f}, labels[2] = {2.f, 0.f};
    /* torch.nn.functional.cross_entropy([[1, 2, 3], [0.5, -1, 0]], [2, 0]) = 0.5058683 */
    CHECK_CLOSE(me_cross_entropy_forward(logits, labels, 2, 3), 0.5058683, 1e-6);
    float d[6], z[6];
    me_cross_entropy_backward(d, logits, labels, 2, 3);
    memcpy(z, logits, sizeof z);
    for (int i = 0; i < 6; i++) {
        const float eps = 1e-2f, keep = z[i];
        z[i] = keep + eps;
        const double plus = me_cross_entropy_forward(z, labels, 2, 3);
        z[i] = keep - eps;
        const double minus = me_cross_entropy_forward(z, labels, 2, 3);
        z[i] = keep;
        CHECK_CLOSE(d[i], (plus - minus) / (2.0 * eps), 1e-4);
    }
    /* large logits stay finite (the row maximum is subtracted) */
    const float big[2] = {1000.f, -1000.f}, label0[1] = {0.f};
    CHECK_CLOSE(me_cross_entropy_forward(big, label0, 1, 2), 0.0, 1e-6);
}

int main(void)
{
    test_mse();
    test_cross_entropy();
    return check_report("test_losses");
}
