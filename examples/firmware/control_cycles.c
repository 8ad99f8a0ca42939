/* Instructions per control step on the Cortex-M4 board model: me_plan and me_observe (with and without its
 * re-adaptation) on the two compiled-in pendulum dynamics models (control_model_data.h: Meta-SGD, CEM;
 * control_ridge_data.h: ridge, random shooting), and the instructions of the operations the estimate in
 * docs/results.md counts (a tanhf, a Box-Muller normal in double, a network row), timed by SysTick. Under
 * `qemu-system-arm -M mps2-an386 -icount shift=0` every instruction takes 1 ns of virtual time and SysTick counts
 * the board's 25 MHz clock, so one tick is 40 instructions (checked on a loop of known length). QEMU is not
 * cycle-accurate: these are instruction counts, a lower bound on Cortex-M4 cycles (loads take 2, VMLA 3).
 * Bare metal only. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "control_model_data.h"
#include "control_ridge_data.h"
#include "metaedge.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define INSTRUCTIONS_PER_TICK 40u /* 1 ns per instruction, 25 MHz SysTick */

static unsigned char arena[24 * 1024];
static volatile float sink_f;
static volatile double sink_d;

static uint32_t ticks(void) { return SYST_CVR; } /* counts down from 0xFFFFFF */

static uint32_t elapsed(uint32_t start) { return ((start - ticks()) & 0xFFFFFFu) * INSTRUCTIONS_PER_TICK; }

static int run(const unsigned char *data, unsigned len)
{
    me_model model;
    me_session s;
    me_control_info_t c;
    if (me_model_load(&model, data, len) != ME_OK || me_control_info(&model, &c) != ME_OK ||
        me_session_init(&s, &model, arena, sizeof arena, 1) != ME_OK) {
        printf("model refused\n");
        return 1;
    }
    float state[2] = {0.2f, 0.f}, x[3 * 16], change[2 * 16], next[2], action[1];
    uint32_t plan = 0, observe = 0, adapt = 0;
    /* until a re-adaptation on a full window: the first multiple of K at or after M observations */
    const uint32_t steps = (c.window + c.adapt_every - 1u) / c.adapt_every * c.adapt_every;
    for (uint32_t t = 0; t < steps; t++) {
        uint32_t t0 = ticks();
        me_plan(&s, state, action);
        const uint32_t p = elapsed(t0);
        x[0] = state[0];
        x[1] = state[1];
        x[2] = action[0];
        me_predict(&s, x, 1, change);
        next[0] = state[0] + change[0];
        next[1] = state[1] + change[1];
        t0 = ticks();
        me_observe(&s, state, action, next);
        const uint32_t o = elapsed(t0);
        plan = p > plan ? p : plan;
        if (t + 1 == steps) adapt = o;
        else if ((t + 1) % c.adapt_every != 0u) observe = o;
        state[0] = next[0];
        state[1] = next[1];
    }
    for (uint32_t i = 0; i < 3 * 16; i++) x[i] = 0.01f * (float)i - 0.2f;
    uint32_t t0 = ticks();
    me_predict(&s, x, 16, change);
    const uint32_t rows = elapsed(t0) / 16u;
    printf("%s N x H = %u x %u x %u rounds, M = %u, K = %u: me_plan %lu instructions, me_observe %lu, with "
           "re-adaptation on the full window %lu; me_predict %lu per row\n",
           c.planner ? "CEM" : "random shooting", (unsigned)c.candidates, (unsigned)c.horizon,
           (unsigned)c.iterations, (unsigned)c.window, (unsigned)c.adapt_every, (unsigned long)plan,
           (unsigned long)observe, (unsigned long)adapt, (unsigned long)rows);
    return 0;
}

int main(void)
{
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
    /* calibration: a loop of exactly 2 instructions (subs, bne) per iteration, 1,000,000 iterations */
    uint32_t t0 = ticks();
    __asm volatile("ldr r0, =1000000\n1:\n\tsubs r0, r0, #1\n\tbne 1b" ::: "r0", "cc");
    printf("calibration: a 2,000,000-instruction loop measured %lu\n", (unsigned long)elapsed(t0));
    t0 = ticks();
    for (int i = 0; i < 1000; i++) sink_f = tanhf(0.003f * (float)i - 1.5f);
    const uint32_t t_tanh = elapsed(t0) / 1000u;
    t0 = ticks();
    for (int i = 0; i < 1000; i++) {
        const double u0 = (double)i / 1000.0, u1 = (double)((i * 7) % 1000) / 1000.0;
        sink_d = sqrt(-2.0 * log(1.0 - u0)) * cos(2.0 * 3.14159265358979323846 * u1);
    }
    const uint32_t t_normal = elapsed(t0) / 1000u;
    printf("tanhf %lu instructions, Box-Muller normal in double %lu\n", (unsigned long)t_tanh,
           (unsigned long)t_normal);
    return run(me_control_model_data, me_control_model_data_len) |
           run(me_control_ridge_data, me_control_ridge_data_len);
}
