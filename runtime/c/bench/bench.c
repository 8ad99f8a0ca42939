/* Adaptation latency of the compiled-in sinusoid MLP (examples/firmware/model_data.h, 1-40-40-1, MAML):
 * reset + adapt on 10 shots for 5 guarded steps + predict 100 points, single thread, median over repeats.
 * Prints the FLOP count of one repeat (from the layer table) and the achieved rate.
 * --model reads another model.mebin (e.g. a bundle's) instead; it must take one input and give one output.
 *   me_bench [--repeats N] [--shots K] [--steps S] [--model model.mebin] */
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

int main(int argc, char **argv)
{
    int repeats = 20000;
    unsigned shots = 10, steps = 5, queries = 100;
    const unsigned char *data = me_model_data;
    size_t data_len = me_model_data_len;
    for (int i = 1; i + 1 < argc; i += 2) {
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
    }
    if (repeats < 1 || repeats > MAX_REPEATS || shots < 1 || shots > 1000) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    me_model m;
    me_session s;
    me_status st = me_model_load(&m, data, data_len);
    if (st == ME_OK && (m.in_dim != 1 || m.out_dim != 1)) {
        fprintf(stderr, "the benchmark's task needs a model with one input and one output\n");
        return 2;
    }
    if (st == ME_OK) st = me_session_init(&s, &m, arena, sizeof arena, shots);
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
        me_adapt(&s, xs, ys, shots, steps, ME_GUARD, &info);
        me_predict(&s, xq, queries, out);
        const double t1 = now_us();
        if (r >= 0) times[r] = t1 - t0;
    }
    qsort(times, (size_t)repeats, sizeof(double), by_value);
    double fwd, bwd;
    flops_per_row(&m, &fwd, &bwd);
    const double kept = info.steps_kept, tried = info.steps_run;
    const double flops = fwd * shots * (tried + 1.0) + bwd * shots * tried + 2.0 * m.n_theta * tried + fwd * queries;
    const double median = times[repeats / 2];
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
    return 0;
}
