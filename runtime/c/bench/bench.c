/* Adaptation latency of the compiled-in sinusoid MLP (examples/firmware/model_data.h, 1-40-40-1, MAML):
 * reset + adapt on 10 shots for 5 guarded steps + predict 100 points, single thread, median over repeats.
 * Prints the FLOP count of one repeat (from the layer table) and the achieved rate.
 * --model reads another model.mebin (e.g. a bundle's) instead; it must take one input and give one output.
 * --intervals N instead times me_predict_interval (level 0.95), me_suggest and me_plan_points (a 3-point plan
 * from the prior) on N query points / candidates after
 * adapting on K shots, for a ridge model with fitted intervals (format 4; any input width, one output): the inputs
 * are spread over x_mean +- 1.5 x_std per column (the model's own normalisation), so no data file is needed.
 * --control instead times one step of the device's control loop for a dynamics model with a control section
 * (format 5, --model a bundle's model.mebin): me_plan, and me_observe with its re-adaptation every K observations,
 * on states spread over the model's input normalisation; prints N x H, the arena, the operation count of one
 * step and a Cortex-M4F / M7 estimate from it (cycle costs stated in docs/results.md, "control step in C").
 * --no-guard adapts without the guard (every step taken), as the scaling benchmark compares backends; the arena
 * of a model or support set too large for the static one (wide models, up to ME_MAX_SHOTS shots) is malloc'd.
 *   me_bench [--repeats N] [--shots K] [--steps S] [--model model.mebin] [--intervals N] [--control] [--no-guard] */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metaedge.h"
#include "model_data.h"

#define MAX_REPEATS 1000000
static unsigned char arena[1 << 20];
static unsigned char model_file[1 << 22];

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* FLOPs of forward/backward over one row: dense 2*in*out + out (bias); backward dW 2*in*out + db out, dx 2*in*out
 * below the first adapted layer's input; activations ignored (elementwise, ~1% here) */
static void flops_per_row(const me_model *m, double *fwd, double *bwd)
{
    *fwd = *bwd = 0.0;
    uint32_t first = m->n_layers;
    for (uint32_t l = 0; l < m->n_layers; l++)
        if (m->layers[l].flags && first == m->n_layers) first = l;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const me_layer *L = &m->layers[l];
        if (L->kind != ME_LAYER_DENSE && L->kind != ME_LAYER_SKIP) continue;
        const double mac = (double)L->in * L->out;
        *fwd += 2.0 * mac + L->out;
        if (l >= first) *bwd += 2.0 * mac + L->out + (l > first && L->kind == ME_LAYER_DENSE ? 2.0 * mac : 0.0);
    }
}

static double median_of(double *times, int repeats)
{
    qsort(times, (size_t)repeats, sizeof(double), by_value);
    return times[repeats / 2];
}

/* Times me_predict_interval, me_suggest and me_plan_points (a 3-point plan) on a session adapted on `shots`
 * points; returns the exit status. */
static int bench_intervals(me_session *s, const me_model *m, unsigned shots, unsigned n, int repeats)
{
    const unsigned d = m->in_dim;
    const float *mean = s->norm, *std = s->norm + d, *y_mean = s->norm + 2u * d, *y_std = y_mean + m->out_dim;
    float *xs = malloc(sizeof(float) * shots * d), *ys = malloc(sizeof(float) * shots);
    float *xq = malloc(sizeof(float) * n * d), *out = malloc(sizeof(float) * n * 3u), *scores = malloc(sizeof(float) * n);
    double *times = malloc(sizeof(double) * (size_t)repeats);
    float *work = malloc(sizeof(float) * n * m->n_theta);
    uint32_t plan[3] = {0u, 0u, 0u};
    const uint32_t planned = n < 3u ? n : 3u;
    /* deterministic points: column c of row i at fraction (i * (2c + 1) mod rows) / rows of the +-1.5 std range */
    for (unsigned i = 0; i < shots; i++) {
        for (unsigned c = 0; c < d; c++)
            xs[i * d + c] = mean[c] + std[c] * (-1.5f + 3.f * (float)((i * (2u * c + 1u)) % shots) / (float)shots);
        ys[i] = y_mean[0] + y_std[0] * (-1.f + 2.f * (float)i / (float)shots);
    }
    for (unsigned i = 0; i < n; i++)
        for (unsigned c = 0; c < d; c++)
            xq[i * d + c] = mean[c] + std[c] * (-1.5f + 3.f * (float)((i * (2u * c + 1u)) % n) / (float)n);
    me_adapt_info info;
    me_status st = me_adapt(s, xs, ys, shots, me_default_steps(m), ME_GUARD, &info);
    uint32_t best = 0;
    double t[3] = {0.0, 0.0, 0.0};
    for (int pass = 0; pass < 3 && st == ME_OK; pass++) {
        for (int r = -repeats / 10 - 1; r < repeats && st == ME_OK; r++) {
            const double t0 = now_us();
            st = pass == 0   ? me_predict_interval(s, xs, shots, xq, n, 0.95f, out, out + n, out + 2u * n)
                 : pass == 1 ? me_suggest(s, xs, shots, xq, n, &best, scores)
                             : me_plan_points(s, NULL, 0u, xq, n, planned, NULL, plan, work);
            if (r >= 0) times[r] = now_us() - t0;
        }
        if (st == ME_OK) t[pass] = median_of(times, repeats);
    }
    if (st != ME_OK) fprintf(stderr, "%s\n", me_strerror(st));
    else {
        printf("model %u-...-%u, %u parameters (%u adapted); %u shots, %u query points / candidates\n", d,
               (unsigned)m->out_dim, (unsigned)m->n_params, (unsigned)m->n_theta, shots, n);
        printf("median me_predict_interval %.2f us  me_suggest %.2f us  me_plan_points (%u of %u, no support) %.2f us"
               "  (%d repeats; suggested %u; planned %u %u %u)\n", t[0], t[1], (unsigned)planned, n, t[2], repeats,
               (unsigned)best, (unsigned)plan[0], (unsigned)plan[1], (unsigned)plan[2]);
    }
    free(xs);
    free(ys);
    free(xq);
    free(out);
    free(scores);
    free(times);
    free(work);
    return st == ME_OK ? 0 : 1;
}

/* multiply-adds of one network row (forward), of one backward row through the adapted layers (weight gradient,
 * and the input gradient above the first adapted layer), and the tanh / sigmoid evaluations of a forward row */
static void macs_per_row(const me_model *m, double *fwd, double *bwd, double *transcendental)
{
    *fwd = *bwd = *transcendental = 0.0;
    uint32_t first = m->n_layers;
    for (uint32_t l = 0; l < m->n_layers; l++)
        if (m->layers[l].flags && first == m->n_layers) first = l;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const me_layer *L = &m->layers[l];
        if (L->kind == ME_LAYER_TANH || L->kind == ME_LAYER_SIGMOID) *transcendental += L->out;
        if (L->kind != ME_LAYER_DENSE && L->kind != ME_LAYER_SKIP) continue;
        const double mac = (double)L->in * L->out;
        *fwd += mac;
        if (l >= first) *bwd += mac + (l > first && L->kind == ME_LAYER_DENSE ? mac : 0.0);
    }
}

/* Cortex-M cycles per operation. The profiles hold no clock or MAC data, so: Cortex-M4F = instructions measured
 * on the qemu mps2-an386 board model (examples/firmware/control_cycles.c, the -Os library: 9.4 per float MAC of a
 * network row with its overhead, 108 per tanhf, 5,947 per Box-Muller normal with soft-float log / cos / sqrt) times
 * 1.3 cycles per instruction (loads 2, VMLA 3), soft-float double MAC and uniform draw (splitmix64 on a 32-bit
 * core) estimated; Cortex-M7 = the same float code at 0.7 cycles per instruction (dual issue) and its
 * double-precision FPU for the double work. See docs/results.md, "control step in C". */
typedef struct mcu {
    const char *name;
    double mhz, mac, dmac, uniform, normal, tanh;
} mcu;
static const mcu MCUS[2] = {{"Cortex-M4F @ 168 MHz", 168.0, 12.0, 100.0, 200.0, 7700.0, 140.0},
                            {"Cortex-M7 @ 480 MHz", 480.0, 6.5, 3.0, 60.0, 600.0, 75.0}};

/* one control step: me_plan, plus me_observe (its re-adaptation every K-th call); returns the exit status */
static int bench_control(me_session *s, const me_model *m, int repeats)
{
    me_control_info_t c;
    me_status st = me_control_info(m, &c);
    if (st != ME_OK) {
        fprintf(stderr, "--control needs a model.mebin with a control section (format 5): %s\n", me_strerror(st));
        return 2;
    }
    const unsigned d = m->in_dim, sd = c.state_dim, a = c.action_dim;
    const float *mean = s->norm, *std = s->norm + d;
    float state[64], next[64], action[64], delta[64], x[128];
    if (d > 128) {
        fprintf(stderr, "--control takes models of up to 128 inputs\n");
        return 2;
    }
    double *t_plan = malloc(sizeof(double) * (size_t)repeats), *t_obs = malloc(sizeof(double) * (size_t)repeats);
    double *t_adapt = malloc(sizeof(double) * (size_t)repeats);
    int n_obs = 0, n_adapt = 0;
    for (int r = -repeats / 10 - 1; r < repeats && st == ME_OK; r++) {
        const unsigned i = (unsigned)(r + repeats) % 97u; /* states spread over +-1.5 std of the inputs */
        for (unsigned k = 0; k < sd; k++)
            state[k] = mean[k] + std[k] * (-1.5f + 3.f * (float)((i * (2u * k + 1u)) % 97u) / 97.f);
        double t0 = now_us();
        st = me_plan(s, state, action);
        const double t1 = now_us();
        if (st != ME_OK) break;
        memcpy(x, state, sizeof(float) * sd); /* the plant: the model's own prediction */
        memcpy(x + sd, action, sizeof(float) * a);
        st = me_predict(s, x, 1, delta);
        for (unsigned k = 0; k < sd && st == ME_OK; k++) next[k] = state[k] + delta[k];
        const double t2 = now_us();
        if (st == ME_OK) st = me_observe(s, state, action, next);
        const double t3 = now_us();
        if (r < 0) continue;
        t_plan[r] = t1 - t0;
        const int adapted = (unsigned)(r + repeats / 10 + 2) % c.adapt_every == 0u;
        if (adapted) t_adapt[n_adapt++] = t3 - t2;
        else t_obs[n_obs++] = t3 - t2;
    }
    if (st != ME_OK) {
        fprintf(stderr, "%s\n", me_strerror(st));
        return 1;
    }
    const double plan = median_of(t_plan, repeats), obs = n_obs ? median_of(t_obs, n_obs) : 0.0;
    const double adapt = n_adapt ? median_of(t_adapt, n_adapt) : 0.0;
    const double step = plan + obs * (c.adapt_every - 1.0) / c.adapt_every + adapt / c.adapt_every;
    /* operation count: rollouts of N x H (x rounds) network rows; re-adaptation on M rows */
    double fwd, bwd, trans;
    macs_per_row(m, &fwd, &bwd, &trans);
    const double rounds = c.planner ? c.iterations : 1.0, rows = (double)c.candidates * c.horizon * rounds;
    const double draws = rows * a, regen = c.planner ? (double)c.elites * c.horizon * a * rounds : (double)c.horizon * a;
    const double plan_macs = rows * fwd, plan_dmacs = rows * (sd + a), plan_trans = rows * trans;
    const double steps = me_default_steps(m), n = c.window, p = m->n_theta, out = m->out_dim;
    double adapt_macs, adapt_dmacs;
    const double adapt_trans = (2.0 * steps + 1.0) * n * trans; /* a forward before and after each step */
    if (m->solver == ME_SOLVER_GAUSS_NEWTON) { /* Jacobian by backward rows; normal equations and Cholesky in double */
        adapt_macs = steps * n * out * bwd + (2.0 * steps + 1.0) * n * fwd;
        adapt_dmacs = steps * (n * out * p * (p + 1.0) / 2.0 + p * n * out + p * p * p / 6.0 + p * p);
    } else {
        adapt_macs = steps * n * bwd + (2.0 * steps + 1.0) * n * fwd;
        adapt_dmacs = 0.0;
    }
    printf("control: %s, N x H = %u x %u%s, M = %u, K = %u; model %u-...-%u, %u adapted (%s, %u steps)\n",
           c.planner ? "CEM" : "random shooting", (unsigned)c.candidates, (unsigned)c.horizon,
           c.planner ? " x rounds" : "", (unsigned)c.window, (unsigned)c.adapt_every, d, (unsigned)m->out_dim,
           (unsigned)m->n_theta, m->solver == ME_SOLVER_GAUSS_NEWTON ? "gauss-newton" : "sgd", (unsigned)steps);
    if (c.planner) printf("CEM rounds %u, elites %u\n", (unsigned)c.iterations, (unsigned)c.elites);
    printf("median me_plan %.1f us, me_observe %.2f us, me_observe with re-adaptation %.1f us (%d repeats)\n", plan,
           obs, adapt, repeats);
    printf("one control step (plan + adapt every K, amortised) %.1f us\n", step);
    me_model plain = *m; /* the same network without its control section (white-box, as the FLOP counts) */
    plain.off_control = 0u;
    const size_t arena_all = me_arena_bytes(m, s->max_shots), arena_plain = me_arena_bytes(&plain, s->max_shots);
    printf("arena %zu bytes at max_shots %u, of which the planner and the window %zu\n", arena_all,
           (unsigned)s->max_shots, arena_all - arena_plain);
    printf("per step: plan %.0f MAC (float) + %.0f MAC (double) + %.0f tanh/sigmoid + %.0f draws (%s) + %.0f "
           "redrawn; adapt %.0f MAC (float) + %.0f MAC (double) + %.0f tanh/sigmoid every %u steps\n",
           plan_macs, plan_dmacs, plan_trans, draws, c.planner ? "normal" : "uniform", regen, adapt_macs,
           adapt_dmacs, adapt_trans, (unsigned)c.adapt_every);
    for (int k = 0; k < 2; k++) {
        const mcu *u = &MCUS[k];
        const double draw = c.planner ? u->normal : u->uniform;
        const double plan_cycles = plan_macs * u->mac + plan_dmacs * u->dmac + (draws + regen) * draw +
                                   plan_trans * u->tanh;
        const double adapt_cycles = adapt_macs * u->mac + adapt_dmacs * u->dmac + adapt_trans * u->tanh;
        printf("estimate %s: plan %.1f ms, adapt %.1f ms, step %.1f ms (amortised)\n", u->name,
               plan_cycles / u->mhz * 1e-3, adapt_cycles / u->mhz * 1e-3,
               (plan_cycles + adapt_cycles / c.adapt_every) / u->mhz * 1e-3);
    }
    free(t_plan);
    free(t_obs);
    free(t_adapt);
    return 0;
}

int main(int argc, char **argv)
{
    int repeats = 20000;
    unsigned shots = 10, steps = 5, queries = 100, intervals = 0, control = 0, flags = ME_GUARD;
    const unsigned char *data = me_model_data;
    size_t data_len = me_model_data_len;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--control") || !strcmp(argv[i], "--no-guard")) { /* flags */
            if (argv[i][2] == 'c') control = 1u;
            else flags = 0u;
            i--;
            continue;
        }
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "--model")) {
            FILE *f = fopen(argv[i + 1], "rb");
            if (!f) {
                fprintf(stderr, "cannot open %s\n", argv[i + 1]);
                return 2;
            }
            data_len = fread(model_file, 1, sizeof model_file, f);
            fclose(f);
            data = model_file;
        }
        if (!strcmp(argv[i], "--repeats")) repeats = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shots")) shots = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--intervals")) intervals = (unsigned)atoi(argv[i + 1]);
    }
    if (repeats < 1 || repeats > MAX_REPEATS || shots < 1 || shots > ME_MAX_SHOTS || intervals > 1000) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    me_model m;
    me_session s;
    me_status st = me_model_load(&m, data, data_len);
    if (st == ME_OK && control) {
        st = me_session_init(&s, &m, arena, sizeof arena, shots);
        if (st != ME_OK) {
            fprintf(stderr, "%s\n", me_strerror(st));
            return 1;
        }
        return bench_control(&s, &m, repeats);
    }
    if (st == ME_OK && intervals) {
        st = me_session_init(&s, &m, arena, sizeof arena, shots > intervals ? shots : intervals);
        if (st != ME_OK) {
            fprintf(stderr, "%s\n", me_strerror(st));
            return 1;
        }
        return bench_intervals(&s, &m, shots, intervals, repeats);
    }
    if (st == ME_OK && (m.in_dim != 1 || m.out_dim != 1)) {
        fprintf(stderr, "the benchmark's task needs a model with one input and one output\n");
        return 2;
    }
    const size_t need = st == ME_OK ? me_arena_bytes(&m, shots) : 0u;
    unsigned char *work = need > sizeof arena ? malloc(need) : arena;
    if (st == ME_OK) st = work ? me_session_init(&s, &m, work, need > sizeof arena ? need : sizeof arena, shots)
                               : ME_ERR_ARENA;
    if (st != ME_OK) {
        fprintf(stderr, "%s\n", me_strerror(st));
        return 1;
    }
    float *xs = malloc(sizeof(float) * shots), *ys = malloc(sizeof(float) * shots);
    float *xq = malloc(sizeof(float) * queries), *out = malloc(sizeof(float) * queries);
    double *times = malloc(sizeof(double) * (size_t)repeats);
    for (unsigned i = 0; i < shots; i++) { /* a fixed task: 1.5 sin(x - 1) sampled on [-5, 5] by a cubic map */
        const float u = -1.f + 2.f * (float)i / (float)(shots > 1 ? shots - 1 : 1);
        xs[i] = 5.f * u * (0.6f + 0.4f * u * u);
        const float t = xs[i] - 1.f; /* sin by a 9th-order Taylor series of the wrapped argument: no libm needed */
        const float w = t - 6.2831853f * (float)(int)((t + (t > 0 ? 3.1415927f : -3.1415927f)) / 6.2831853f);
        const float w2 = w * w;
        ys[i] = 1.5f * w * (1.f - w2 / 6.f * (1.f - w2 / 20.f * (1.f - w2 / 42.f * (1.f - w2 / 72.f))));
    }
    for (unsigned i = 0; i < queries; i++) xq[i] = -5.f + 10.f * (float)i / (float)(queries - 1);
    me_adapt_info info = {0, 0, 0.f, 0.f};
    for (int r = -repeats / 10 - 1; r < repeats; r++) { /* the first tenth warms caches and clocks */
        const double t0 = now_us();
        me_reset(&s);
        me_adapt(&s, xs, ys, shots, steps, flags, &info);
        me_predict(&s, xq, queries, out);
        const double t1 = now_us();
        if (r >= 0) times[r] = t1 - t0;
    }
    const double median = median_of(times, repeats);
    double fwd, bwd;
    flops_per_row(&m, &fwd, &bwd);
    const double kept = info.steps_kept, tried = info.steps_run;
    const double flops = fwd * shots * (tried + 1.0) + bwd * shots * tried + 2.0 * m.n_theta * tried + fwd * queries;
    printf("model %u-...-%u, %u parameters (%u adapted); %u shots, %u steps (%.0f kept), predict %u\n",
           (unsigned)m.in_dim, (unsigned)m.out_dim, (unsigned)m.n_params, (unsigned)m.n_theta, shots, steps, kept,
           queries);
    printf("median %.2f us  p10 %.2f us  p90 %.2f us  min %.2f us  (%d repeats)\n", median, times[repeats / 10],
           times[repeats * 9 / 10], times[0], repeats);
    printf("flops %.0f per repeat -> %.2f GFLOP/s at the median\n", flops, flops / median * 1e-3);
    printf("arena %zu bytes; prediction at x=0: %.4f\n", me_arena_bytes(&m, shots), (double)out[queries / 2]);
    free(xs);
    free(ys);
    free(xq);
    free(out);
    free(times);
    if (work != arena) free(work);
    return 0;
}
