/* Firmware-style control loop: the compiled-in pendulum dynamics model (control_model_data.h, format 5: Meta-SGD
 * 3-16-16-2 tanh with a CEM controller, N x H = 48 x 8, 3 rounds, M = 16, K = 4) plans each action with me_plan,
 * a stand-in plant (the model's own prediction plus a unit-specific push on the speed) moves, me_observe keeps
 * the transitions and re-adapts every K-th step. No malloc: the arena is a static array. Actions and states are
 * printed with 4 decimals so the host and the Cortex-M4 build (qemu-system-arm) print the same text. */
#include <stdio.h>

#include "control_model_data.h"
#include "metaedge.h"

static unsigned char arena[24 * 1024];

static int fail(const char *what, me_status st)
{
    printf("%s: %s\n", what, me_strerror(st));
    return 1;
}

int main(void)
{
    me_model model;
    me_session s;
    me_control_info_t c;
    me_status st = me_model_load(&model, me_control_model_data, me_control_model_data_len);
    if (st != ME_OK) return fail("model", st);
    if ((st = me_control_info(&model, &c)) != ME_OK) return fail("control section", st);
    if ((st = me_session_init(&s, &model, arena, sizeof arena, 1)) != ME_OK) return fail("session", st);
    printf("controller: %s, N x H = %u x %u, %u rounds, M = %u, K = %u; arena %u bytes\n",
           c.planner ? "CEM" : "random shooting", (unsigned)c.candidates, (unsigned)c.horizon,
           (unsigned)c.iterations, (unsigned)c.window, (unsigned)c.adapt_every,
           (unsigned)me_arena_bytes(&model, 1));
    float state[2] = {0.2f, 0.f}, x[3], change[2], next[2], action[1];
    for (int t = 0; t < 12; t++) {
        if ((st = me_plan(&s, state, action)) != ME_OK) return fail("plan", st);
        x[0] = state[0];
        x[1] = state[1];
        x[2] = action[0];
        if ((st = me_predict(&s, x, 1, change)) != ME_OK) return fail("predict", st);
        next[0] = state[0] + change[0];
        next[1] = state[1] + change[1] + 0.05f * action[0]; /* this unit's motor is stronger than the model's */
        if ((st = me_observe(&s, state, action, next)) != ME_OK) return fail("observe", st);
        printf("step %2d: action %+.4f -> angle %+.4f speed %+.4f%s\n", t, (double)action[0], (double)next[0],
               (double)next[1], (t + 1) % (int)c.adapt_every == 0 ? " (re-adapted)" : "");
        state[0] = next[0];
        state[1] = next[1];
    }
    me_adapt_info info;
    me_last_adapt_info(&s, &info);
    printf("last re-adaptation: %u of %u steps kept, support loss %.4f -> %.4f\n", (unsigned)info.steps_kept,
           (unsigned)info.steps_run, (double)info.loss_before, (double)info.loss_after);
    return 0;
}
