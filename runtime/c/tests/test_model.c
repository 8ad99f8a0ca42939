/* model.mebin parsing: CRC-32, a valid model, and refusals of truncated, corrupt and inconsistent buffers. */
#include <math.h>
#include <string.h>

#include "check.h"

static const tb_layer mlp[] = {
    {ME_LAYER_DENSE, 3, 2, 8}, {ME_LAYER_TANH, 0, 8, 8}, {ME_LAYER_DENSE, 3, 8, 1}, {ME_LAYER_SKIP, 3, 2, 1},
};

static size_t build(unsigned char *buf, size_t cap)
{
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_SGD, 5, 2, 1, mlp, 4, NULL, NULL, 0.5f, 0.01f, 7u};
    return tb_build(buf, cap, &sp);
}

static void test_crc(void)
{
    CHECK(me_crc32("123456789", 9) == 0xCBF43926u); /* the standard check value */
    CHECK(me_crc32("", 0) == 0u);
}

static void test_valid(void)
{
    unsigned char buf[2048];
    const size_t len = build(buf, sizeof buf);
    me_model m;
    CHECK(len > 0);
    CHECK_STATUS(me_model_load(&m, buf, len), ME_OK);
    CHECK(m.n_layers == 4 && m.in_dim == 2 && m.out_dim == 1 && m.default_steps == 5);
    CHECK(m.n_params == 2 * 8 + 8 + 8 + 1 + 2 + 1 && m.n_theta == m.n_params);
    CHECK(m.layers[3].w_theta == 33 && m.layers[3].b_theta == 35);
    CHECK(me_arena_bytes(&m, 10) > 0 && me_arena_bytes(&m, 0) == 0 && me_arena_bytes(&m, ME_MAX_SHOTS + 1) == 0);
    CHECK(me_arena_bytes(&m, 20) > me_arena_bytes(&m, 10));
    /* trailing bytes after the declared size are ignored */
    CHECK_STATUS(me_model_load(&m, buf, sizeof buf), ME_OK);
    CHECK_STATUS(me_model_load(NULL, buf, len), ME_ERR_NULL);
    CHECK_STATUS(me_model_load(&m, NULL, len), ME_ERR_NULL);
}

static void test_truncated_and_corrupt(void)
{
    unsigned char buf[2048], bad[2048];
    const size_t len = build(buf, sizeof buf);
    me_model m;
    for (size_t cut = 0; cut < len; cut++) {
        me_status st = me_model_load(&m, buf, cut);
        if (st != ME_ERR_TRUNCATED) {
            check_failures++;
            fprintf(stderr, "truncated to %zu of %zu bytes: %s\n", cut, len, me_strerror(st));
        }
    }
    for (size_t i = 16; i < len; i++) { /* every flipped payload byte is caught by the CRC */
        memcpy(bad, buf, len);
        bad[i] ^= 0x5Au;
        if (me_model_load(&m, bad, len) != ME_ERR_CRC) {
            check_failures++;
            fprintf(stderr, "byte %zu flipped: not refused by the CRC\n", i);
        }
    }
    memcpy(bad, buf, len);
    bad[0] = 'X';
    CHECK_STATUS(me_model_load(&m, bad, len), ME_ERR_MAGIC);
    memcpy(bad, buf, len);
    bad[4] = (unsigned char)(ME_FORMAT_VERSION + 1u); /* newer than this library */
    CHECK_STATUS(me_model_load(&m, bad, len), ME_ERR_VERSION);
    bad[4] = 0;
    CHECK_STATUS(me_model_load(&m, bad, len), ME_ERR_VERSION);
    bad[4] = 2; /* version 2 readers take version-1 content (MLPs) as it is */
    tb_fix_crc(bad, len);
    CHECK_STATUS(me_model_load(&m, bad, len), ME_OK);
    memcpy(bad, buf, len);
    tb_put_u32(bad + 12, me_crc32(bad + 16, len - 16) ^ 1u);
    CHECK_STATUS(me_model_load(&m, bad, len), ME_ERR_CRC);
}

/* edit one header or table field, fix the CRC, expect `want` */
static void expect_field(const unsigned char *good, size_t len, size_t at, uint32_t value, int bytes, me_status want)
{
    unsigned char bad[2048];
    memcpy(bad, good, len);
    if (bytes == 1) bad[at] = (unsigned char)value;
    else tb_put_u32(bad + at, value);
    tb_fix_crc(bad, len);
    me_model m;
    me_status got = me_model_load(&m, bad, len);
    if (got != want) {
        check_failures++;
        fprintf(stderr, "field at %zu = %u: got %s, expected %s\n", at, value, me_strerror(got), me_strerror(want));
    }
}

static void test_inconsistent(void)
{
    unsigned char buf[2048];
    const size_t len = build(buf, sizeof buf);
    const size_t table = 64;
    expect_field(buf, len, 16, 7, 1, ME_ERR_UNSUPPORTED);         /* task */
    expect_field(buf, len, 18, 9, 1, ME_ERR_UNSUPPORTED);         /* solver */
    expect_field(buf, len, 17, ME_LOSS_CROSS_ENTROPY, 1, ME_ERR_FORMAT); /* loss does not fit the task */
    expect_field(buf, len, 19, 1, 1, ME_ERR_FORMAT);              /* reserved */
    expect_field(buf, len, 20, 0, 1, ME_ERR_FORMAT);              /* no layers */
    expect_field(buf, len, 20, 200, 1, ME_ERR_FORMAT);            /* too many layers */
    expect_field(buf, len, 24, 3, 4, ME_ERR_FORMAT);              /* in_dim: the sections overlap */
    expect_field(buf, len, 28, 0, 4, ME_ERR_FORMAT);              /* out_dim 0 */
    expect_field(buf, len, 32, 0xFFFFFFF0u, 4, ME_ERR_TRUNCATED); /* n_params beyond the buffer */
    expect_field(buf, len, 32, 3, 4, ME_ERR_FORMAT);              /* n_params < n_theta */
    expect_field(buf, len, 36, 0xFFFFFFFFu, 4, ME_ERR_FORMAT);    /* n_theta huge */
    expect_field(buf, len, 40, 0xFFFFFFF0u, 4, ME_ERR_TRUNCATED); /* layer table outside the buffer */
    expect_field(buf, len, 44, 2, 4, ME_ERR_TRUNCATED);           /* section inside the header */
    expect_field(buf, len, 48, 66, 4, ME_ERR_TRUNCATED);          /* misaligned section */
    expect_field(buf, len, 52, (uint32_t)len, 4, ME_ERR_TRUNCATED);
    expect_field(buf, len, 56, 1, 4, ME_ERR_FORMAT);              /* reserved */
    expect_field(buf, len, table + 0, 9, 1, ME_ERR_UNSUPPORTED);  /* unknown layer kind */
    expect_field(buf, len, table + 1, 4, 1, ME_ERR_FORMAT);       /* unknown adapt flag */
    expect_field(buf, len, table + 4, 3, 4, ME_ERR_FORMAT);       /* first layer's input width */
    expect_field(buf, len, table + 8, 9, 4, ME_ERR_FORMAT);       /* widths no longer chain */
    expect_field(buf, len, table + 16 + 1, 1, 1, ME_ERR_FORMAT);  /* flags on an activation */
    expect_field(buf, len, table + 16 * 2 + 1, 1, 1, ME_ERR_FORMAT); /* adapted count no longer matches */
    expect_field(buf, len, table + 16 * 3 + 4, 1, 4, ME_ERR_FORMAT); /* skip's input is not the network input */
    expect_field(buf, len, table + 16 * 3 + 12, 1, 4, ME_ERR_FORMAT); /* reserved */
    /* a NaN parameter and a zero standard deviation are refused */
    const size_t off_norm = table + 16 * 4, off_params = off_norm + 4 * 6;
    expect_field(buf, len, off_params + 8, 0x7FC00000u, 4, ME_ERR_FORMAT);
    expect_field(buf, len, off_norm + 8, 0u, 4, ME_ERR_FORMAT);
    /* a prototype solver with adapted parameters, Gauss-Newton for classification */
    expect_field(buf, len, 18, ME_SOLVER_PROTOTYPES, 1, ME_ERR_FORMAT);
}

static void test_arena(void)
{
    unsigned char buf[2048];
    static unsigned char arena[1 << 16];
    const size_t len = build(buf, sizeof buf);
    me_model m;
    me_session s;
    CHECK_STATUS(me_model_load(&m, buf, len), ME_OK);
    const size_t need = me_arena_bytes(&m, 4);
    CHECK(need > 0 && need < sizeof arena);
    CHECK_STATUS(me_session_init(&s, &m, arena, need - 1, 4), ME_ERR_ARENA);
    CHECK_STATUS(me_session_init(&s, &m, arena + 3, need, 4), ME_OK); /* any alignment */
    CHECK_STATUS(me_session_init(&s, &m, arena, need, 0), ME_ERR_SHOTS);
    CHECK_STATUS(me_session_init(&s, &m, NULL, need, 4), ME_ERR_NULL);
    CHECK(me_theta_size(&s) == m.n_theta);
    for (int st = 0; st <= ME_ERR_MODEL; st++) CHECK(me_strerror((me_status)st)[0] != '\0');
}

static void put_f32(unsigned char *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    tb_put_u32(p, bits);
}

/* version 3: the Gauss-Newton damping floor at offset 56; versions 1 and 2 use the constant they were written
 * with (1e-6); me_model_info reports what the parser read */
static void test_damping_field_and_info(void)
{
    static const tb_layer head[] = {{ME_LAYER_DENSE, 0, 2, 4}, {ME_LAYER_TANH, 0, 4, 4}, {ME_LAYER_DENSE, 3, 4, 1}};
    tb_spec sp = {ME_TASK_REGRESSION, ME_LOSS_MSE, ME_SOLVER_GAUSS_NEWTON, 2, 2, 1, head, 3, NULL, NULL, 0.5f, 0.f,
                  3u};
    unsigned char buf[2048], bad[2048];
    const size_t len = tb_build(buf, sizeof buf, &sp);
    me_model_info_t info;
    CHECK_STATUS(me_model_info(buf, len, &info), ME_OK);
    CHECK(info.format_version == 1 && info.min_damping == 1e-6f && info.solver == ME_SOLVER_GAUSS_NEWTON);
    CHECK(info.bytes == len && info.crc == me_crc32(buf + 16, len - 16) && info.default_steps == 2);
    CHECK(info.in_dim == 2 && info.out_dim == 1 && info.n_layers == 3 && info.n_theta == 5);
    CHECK(info.n_params == 2 * 4 + 4 + 4 + 1 && info.in_channels == 0 && info.in_length == 0);
    const float floors[] = {0.25f, 0.f, -1.f, NAN, INFINITY};
    const me_status want[] = {ME_OK, ME_ERR_FORMAT, ME_ERR_FORMAT, ME_ERR_FORMAT, ME_ERR_FORMAT};
    for (int i = 0; i < 5; i++) {
        memcpy(bad, buf, len);
        bad[4] = 3;
        put_f32(bad + 56, floors[i]);
        tb_fix_crc(bad, len);
        CHECK_STATUS(me_model_info(bad, len, &info), want[i]);
        if (want[i] == ME_OK) CHECK(info.format_version == 3 && info.min_damping == 0.25f);
        else CHECK(info.bytes == 0 && info.min_damping == 0.f); /* zeroed on an error */
    }
    memcpy(bad, buf, len);
    put_f32(bad + 56, 0.25f); /* version 1: offset 56 is reserved */
    tb_fix_crc(bad, len);
    CHECK_STATUS(me_model_info(bad, len, &info), ME_ERR_FORMAT);
    /* other solvers: zero in version 3 too */
    unsigned char sgd[2048];
    const size_t slen = build(sgd, sizeof sgd);
    sgd[4] = 3;
    tb_fix_crc(sgd, slen);
    CHECK_STATUS(me_model_info(sgd, slen, &info), ME_OK);
    CHECK(info.min_damping == 0.f && info.format_version == 3);
    put_f32(sgd + 56, 0.25f);
    tb_fix_crc(sgd, slen);
    CHECK_STATUS(me_model_info(sgd, slen, &info), ME_ERR_FORMAT);
    CHECK_STATUS(me_model_info(buf, len, NULL), ME_ERR_NULL);
    CHECK_STATUS(me_model_info(NULL, len, &info), ME_ERR_NULL);
}

int main(void)
{
    test_crc();
    test_damping_field_and_info();
    test_valid();
    test_truncated_and_corrupt();
    test_inconsistent();
    test_arena();
    return check_report("test_model");
}
