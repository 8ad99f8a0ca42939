/* 1-D convolution and max pooling (prototype embeddings): kernels against naive references, a whole conv
 * prototype model against a reference forward, and the parser's refusals of bad conv / pool records. */
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "check.h"

static uint32_t rng = 12345u;

static void fill(float *v, size_t count)
{
    for (size_t i = 0; i < count; i++) v[i] = check_uniform(&rng);
}

/* torch.nn.Conv1d(cin, cout, 3, padding=1) in double */
static void ref_conv(double *y, const double *x, const float *w, const float *b, uint32_t cin, uint32_t cout,
                     uint32_t len)
{
    for (uint32_t o = 0; o < cout; o++)
        for (uint32_t t = 0; t < len; t++) {
            double acc = b[o];
            for (uint32_t i = 0; i < cin; i++)
                for (uint32_t k = 0; k < 3u; k++) {
                    const long at = (long)t + (long)k - 1;
                    if (at >= 0 && at < (long)len) acc += (double)w[(o * cin + i) * 3u + k] * x[i * len + (uint32_t)at];
                }
            y[o * len + t] = acc;
        }
}

static void ref_pool(double *y, const double *x, uint32_t channels, uint32_t len)
{
    for (uint32_t c = 0; c < channels; c++)
        for (uint32_t t = 0; t < len / 2u; t++) {
            const double a = x[c * len + 2u * t], d = x[c * len + 2u * t + 1u];
            y[c * (len / 2u) + t] = a > d ? a : d;
        }
}

static void test_kernels(void)
{
    static const uint32_t lens[] = {1, 2, 3, 5, 31, 32};
    enum { N = 2, CIN = 3, COUT = 4, LMAX = 32 };
    float x[N * CIN * LMAX], w[COUT * CIN * 3], b[COUT], y[N * COUT * LMAX], p[N * COUT * LMAX];
    double xd[CIN * LMAX], yd[COUT * LMAX], pd[COUT * LMAX];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const uint32_t len = lens[li];
        fill(x, N * CIN * len);
        fill(w, sizeof w / sizeof w[0]);
        fill(b, COUT);
        for (int relu = 0; relu < 2; relu++) {
            me_conv1d_forward(y, x, w, b, N, CIN, COUT, len, relu);
            for (uint32_t r = 0; r < N; r++) {
                for (uint32_t i = 0; i < CIN * len; i++) xd[i] = x[r * CIN * len + i];
                ref_conv(yd, xd, w, b, CIN, COUT, len);
                for (uint32_t i = 0; i < COUT * len; i++) {
                    const double want = relu && yd[i] < 0 ? 0.0 : yd[i];
                    CHECK_CLOSE(y[r * COUT * len + i], want, 1e-5);
                }
            }
        }
        if (len < 2u) continue;
        me_maxpool1d_forward(p, y, N, COUT, len);
        for (uint32_t r = 0; r < N; r++) {
            for (uint32_t i = 0; i < COUT * len; i++) yd[i] = y[r * COUT * len + i];
            ref_pool(pd, yd, COUT, len);
            for (uint32_t i = 0; i < COUT * (len / 2u); i++)
                CHECK(p[r * COUT * (len / 2u) + i] == (float)pd[i]); /* exact: a max picks an input */
        }
    }
}

/* (2, 9) -> conv 4 -> relu -> pool (4, 4) -> conv 3 -> relu -> pool (3, 2) -> dense 6 -> 5 */
enum { C0 = 2, L0 = 9, C1 = 4, L1 = 4, C2 = 3, L2 = 2, EMB = 5 };
static const tb_layer convnet[] = {
    {ME_LAYER_CONV1D, 0, C0 * L0, C1 * L0}, {ME_LAYER_RELU, 0, C1 * L0, C1 * L0},
    {ME_LAYER_MAXPOOL1D, 0, C1 * L0, C1 * L1}, {ME_LAYER_CONV1D, 0, C1 * L1, C2 * L1},
    {ME_LAYER_RELU, 0, C2 * L1, C2 * L1}, {ME_LAYER_MAXPOOL1D, 0, C2 * L1, C2 * L2},
    {ME_LAYER_DENSE, 0, C2 * L2, EMB},
};
static const uint32_t convnet_lengths[] = {L0, 0, L0, L1, 0, L1, 0};
#define N_PARAMS (C1 * C0 * 3 + C1 + C2 * C1 * 3 + C2 + EMB * C2 * L2 + EMB)
static float params[N_PARAMS];

static size_t build_convnet(unsigned char *buf, size_t cap)
{
    tb_spec sp = {ME_TASK_CLASSIFICATION, ME_LOSS_CROSS_ENTROPY, ME_SOLVER_PROTOTYPES, 0, C0 * L0, EMB, convnet,
                  sizeof convnet / sizeof convnet[0], NULL, params, 0.f, 0.f, 1u};
    tb_lengths = convnet_lengths;
    const size_t len = tb_build(buf, cap, &sp);
    tb_lengths = NULL;
    return len;
}

static void ref_embed(double *z, const float *x)
{
    double a[C0 * L0], h1[C1 * L0], p1[C1 * L1], h2[C2 * L1], p2[C2 * L2];
    const float *w1 = params, *b1 = w1 + C1 * C0 * 3, *w2 = b1 + C1, *b2 = w2 + C2 * C1 * 3, *wd = b2 + C2,
                *bd = wd + EMB * C2 * L2;
    for (int i = 0; i < C0 * L0; i++) a[i] = x[i];
    ref_conv(h1, a, w1, b1, C0, C1, L0);
    for (int i = 0; i < C1 * L0; i++) h1[i] = h1[i] > 0 ? h1[i] : 0;
    ref_pool(p1, h1, C1, L0);
    ref_conv(h2, p1, w2, b2, C1, C2, L1);
    for (int i = 0; i < C2 * L1; i++) h2[i] = h2[i] > 0 ? h2[i] : 0;
    ref_pool(p2, h2, C2, L1);
    for (int o = 0; o < EMB; o++) {
        double acc = bd[o];
        for (int i = 0; i < C2 * L2; i++) acc += (double)wd[o * C2 * L2 + i] * p2[i];
        z[o] = acc;
    }
}

/* adapt on `shots` samples of `ways` classes and predict 5 queries, against the double-precision reference;
 * the model is loaded from `data` (4-byte aligned: weights read in place; misaligned: copied into the arena) */
static void run_model_forward(const unsigned char *data, size_t len, uint32_t shots, uint32_t ways, int in_place)
{
    enum { QUERIES = 5, MAX_SHOTS = 80, MAX_WAYS = 8 };
    me_model m;
    me_session s;
    CHECK(shots <= MAX_SHOTS && ways <= MAX_WAYS && ways <= shots);
    CHECK_STATUS(me_model_load(&m, data, len), ME_OK);
    CHECK(m.n_params == N_PARAMS && m.layers[0].len == L0 && m.layers[2].len == L0 && m.layers[3].len == L1);
    const size_t need = me_arena_bytes(&m, shots);
    unsigned char *arena = (unsigned char *)malloc(need); /* exactly the size: ASan sees any overrun */
    CHECK(arena != NULL);
    if (!arena) return;
    CHECK_STATUS(me_session_init(&s, &m, arena, need - 1u, shots), ME_ERR_ARENA);
    CHECK_STATUS(me_session_init(&s, &m, arena, need, shots), ME_OK);
    /* in place: the first conv weight is the buffer's own parameter section, not an arena copy */
    CHECK((s.w[0] == (const float *)(const void *)(data + m.off_params)) == in_place);
    CHECK((s.w[0] >= (float *)(void *)arena && s.w[0] < (float *)(void *)(arena + need)) == !in_place);
    static float xs[MAX_SHOTS * C0 * L0], ys[MAX_SHOTS], xq[QUERIES * C0 * L0], out[QUERIES * MAX_WAYS];
    fill(xs, (size_t)shots * C0 * L0);
    fill(xq, sizeof xq / sizeof xq[0]);
    for (uint32_t r = 0; r < shots; r++) ys[r] = (float)((r * 5u + 3u) % ways); /* every class, shuffled */
    CHECK_STATUS(me_adapt(&s, xs, ys, shots, 0, 0, NULL), ME_OK);
    CHECK(me_classes(&s) == ways && me_theta_size(&s) == ways * EMB);
    double protos[MAX_WAYS][EMB] = {{0}}, count[MAX_WAYS] = {0}, z[EMB];
    for (uint32_t r = 0; r < shots; r++) count[(int)ys[r]] += 1.0;
    for (uint32_t r = 0; r < shots; r++) {
        ref_embed(z, xs + r * C0 * L0);
        for (int j = 0; j < EMB; j++) protos[(int)ys[r]][j] += z[j] / count[(int)ys[r]];
    }
    for (uint32_t c = 0; c < ways; c++)
        for (int j = 0; j < EMB; j++) CHECK_CLOSE(me_theta(&s)[c * EMB + j], protos[c][j], 1e-5);
    CHECK_STATUS(me_predict(&s, xq, QUERIES, out), ME_OK); /* one sample at a time */
    for (int r = 0; r < QUERIES; r++) {
        ref_embed(z, xq + r * C0 * L0);
        for (uint32_t c = 0; c < ways; c++) {
            double d = 0;
            for (int j = 0; j < EMB; j++) d += (z[j] - protos[c][j]) * (z[j] - protos[c][j]);
            CHECK_CLOSE(out[r * ways + c], -d, 1e-4);
        }
    }
    /* errors leave the prototypes as they were */
    const float kept = me_theta(&s)[0];
    ys[0] = (float)shots;
    CHECK_STATUS(me_adapt(&s, xs, ys, shots, 0, 0, NULL), ME_ERR_LABEL);
    CHECK(me_classes(&s) == ways && me_theta(&s)[0] == kept);
    free(arena);
}

static void test_model_forward(void)
{
    static float storage[1024]; /* float-aligned bytes for the model */
    unsigned char *aligned = (unsigned char *)storage;
    const uint32_t one = 1u;
    unsigned char first;
    memcpy(&first, &one, 1u);
    fill(params, N_PARAMS);
    const size_t len = build_convnet(aligned + 4, sizeof storage - 4u); /* built one byte later, then moved */
    CHECK(len > 0 && aligned[4 + 4] == 2u);
    memmove(aligned, aligned + 4, len);
    me_model m, mis;
    CHECK_STATUS(me_model_load(&m, aligned, len), ME_OK);
    /* the arena no longer grows with shots beyond a prototype and a count per sample: one sample's activations */
    const size_t a4 = me_arena_bytes(&m, 4u), a80 = me_arena_bytes(&m, 80u);
    CHECK(a4 > 0u && a80 - a4 <= 76u * 4u * (EMB + 1u) + 32u);
    run_model_forward(aligned, len, 4u, 2u, first == 1u);
    run_model_forward(aligned, len, 80u, 7u, first == 1u); /* shots far above any earlier arena sizing */
    /* a misaligned buffer: the weights are copied into the arena, which grows by the parameters */
    memmove(aligned + 1, aligned, len);
    CHECK_STATUS(me_model_load(&mis, aligned + 1, len), ME_OK);
    CHECK(me_arena_bytes(&mis, 4u) >= a4 + 4u * N_PARAMS);
    run_model_forward(aligned + 1, len, 4u, 2u, 0);
    run_model_forward(aligned + 1, len, 80u, 7u, 0);
}

static void expect(const unsigned char *good, size_t len, size_t at, uint32_t value, int bytes, me_status want)
{
    unsigned char bad[4096];
    memcpy(bad, good, len);
    if (bytes == 1) bad[at] = (unsigned char)value;
    else if (bytes == 2) {
        bad[at] = (unsigned char)value;
        bad[at + 1] = (unsigned char)(value >> 8);
    } else tb_put_u32(bad + at, value);
    tb_fix_crc(bad, len);
    me_model m;
    const me_status got = me_model_load(&m, bad, len);
    if (got != want) {
        check_failures++;
        fprintf(stderr, "field at %zu = %u: got %s, expected %s\n", at, value, me_strerror(got), me_strerror(want));
    }
}

static void test_refusals(void)
{
    unsigned char buf[4096], bad[4096];
    const size_t len = build_convnet(buf, sizeof buf);
    me_model m;
    for (size_t cut = 0; cut < len; cut++) /* every truncation */
        if (me_model_load(&m, buf, cut) != ME_ERR_TRUNCATED) {
            check_failures++;
            fprintf(stderr, "conv model truncated to %zu of %zu bytes: not refused as truncated\n", cut, len);
        }
    for (size_t i = 64; i < 64u + 16u * 7u; i++) { /* every flipped layer-table byte, CRC left alone */
        memcpy(bad, buf, len);
        bad[i] ^= 0x21u;
        if (me_model_load(&m, bad, len) != ME_ERR_CRC) {
            check_failures++;
            fprintf(stderr, "table byte %zu flipped: not refused by the CRC\n", i);
        }
    }
    const size_t conv = 64, pool = 64 + 16 * 2, conv2 = 64 + 16 * 3;
    expect(buf, len, 4, 1, 1, ME_ERR_FORMAT);               /* conv / pool kinds in a version-1 file */
    expect(buf, len, 18, ME_SOLVER_SGD, 1, ME_ERR_UNSUPPORTED); /* forward only: prototypes solver only */
    expect(buf, len, conv + 1, ME_ADAPT_WEIGHT, 1, ME_ERR_FORMAT); /* adapted conv */
    expect(buf, len, conv + 2, 5, 2, ME_ERR_FORMAT);        /* kernel 5 */
    expect(buf, len, conv + 2, 0, 2, ME_ERR_FORMAT);
    expect(buf, len, conv + 12, 0, 4, ME_ERR_FORMAT);       /* length 0 */
    expect(buf, len, conv + 12, 7, 4, ME_ERR_FORMAT);       /* 18 inputs are not channels x 7 */
    expect(buf, len, conv + 12, 0xFFFFFFFFu, 4, ME_ERR_FORMAT);
    expect(buf, len, conv + 12, 18, 4, ME_ERR_FORMAT);      /* 1 channel x 18: the widths no longer chain */
    expect(buf, len, conv + 4, 0xFFFFFFFFu, 4, ME_ERR_FORMAT); /* huge input width */
    expect(buf, len, conv + 8, C1 * L0 + 1, 4, ME_ERR_FORMAT); /* output not channels x length */
    expect(buf, len, conv + 8, 8 * L0, 4, ME_ERR_FORMAT);   /* 8 output channels: the parameter count is off */
    expect(buf, len, conv2 + 8, 60 * L1, 4, ME_ERR_FORMAT); /* channels beyond n_params */
    expect(buf, len, pool + 2, 3, 2, ME_ERR_FORMAT);        /* window 3 */
    expect(buf, len, pool + 1, 1, 1, ME_ERR_FORMAT);        /* flags on a pool */
    expect(buf, len, pool + 12, 1, 4, ME_ERR_FORMAT);       /* length 1 */
    expect(buf, len, pool + 12, 0, 4, ME_ERR_FORMAT);
    expect(buf, len, pool + 12, 12, 4, ME_ERR_FORMAT);      /* 3 channels x 12: output is not 3 x 6 */
    expect(buf, len, pool + 8, C1 * L1 + 4, 4, ME_ERR_FORMAT); /* output not floor(L / 2) */
    expect(buf, len, 64 + 16 + 2, 3, 2, ME_ERR_FORMAT);     /* the u16 field of a ReLU stays reserved */
    expect(buf, len, 64 + 16 * 6 + 12, 4, 4, ME_ERR_FORMAT); /* the length field of a dense layer too */
    expect(buf, len, 32, N_PARAMS - 1, 4, ME_ERR_FORMAT);   /* n_params below the table's count */
    memcpy(bad, buf, len); /* still fine as given */
    CHECK_STATUS(me_model_load(&m, bad, len), ME_OK);
}

int main(void)
{
    test_kernels();
    test_model_forward();
    test_refusals();
    return check_report("test_conv1d");
}
