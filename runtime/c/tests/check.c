#include "check.h"

#include <string.h>

int check_failures = 0;
const uint32_t *tb_lengths = NULL;

int check_report(const char *name)
{
    if (check_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

float check_uniform(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 8388608.f - 1.f;
}

void tb_put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_f32(unsigned char *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    tb_put_u32(p, bits);
}

void tb_fix_crc(unsigned char *buf, size_t len) { tb_put_u32(buf + 12, me_crc32(buf + 16, len - 16)); }

size_t tb_build(unsigned char *buf, size_t cap, const tb_spec *sp)
{
    uint32_t n_params = 0, n_theta = 0;
    for (uint32_t l = 0; l < sp->n_layers; l++) {
        const tb_layer *L = &sp->layers[l];
        const uint32_t len = tb_lengths ? tb_lengths[l] : 0u;
        if (L->kind == ME_LAYER_CONV1D && len) { /* weight (C_out, C_in, 3), bias (C_out) */
            n_params += 3u * (L->in / len) * (L->out / len) + L->out / len;
            continue;
        }
        if (L->kind != ME_LAYER_DENSE && L->kind != ME_LAYER_SKIP) continue;
        n_params += L->in * L->out + L->out;
        n_theta += (L->flags & ME_ADAPT_WEIGHT ? L->in * L->out : 0u) + (L->flags & ME_ADAPT_BIAS ? L->out : 0u);
    }
    const uint32_t ny = sp->task == ME_TASK_REGRESSION ? sp->out_dim : 0u;
    const uint32_t off_layers = 64, off_norm = off_layers + 16u * sp->n_layers;
    const uint32_t off_params = off_norm + 4u * (2u * sp->in_dim + 2u * ny);
    const uint32_t off_rates = off_params + 4u * n_params, total = off_rates + 4u * n_theta;
    if (total > cap) return 0;
    memset(buf, 0, total);
    memcpy(buf, "MEBN", 4);
    int spatial = 0;
    for (uint32_t l = 0; l < sp->n_layers; l++)
        spatial |= sp->layers[l].kind == ME_LAYER_CONV1D || sp->layers[l].kind == ME_LAYER_MAXPOOL1D;
    put_u16(buf + 4, spatial ? 2u : 1u); /* the lowest version that holds the model, as the exporter writes */
    put_u16(buf + 6, 64);
    tb_put_u32(buf + 8, total);
    buf[16] = sp->task;
    buf[17] = sp->loss;
    buf[18] = sp->solver;
    put_u16(buf + 20, sp->n_layers);
    put_u16(buf + 22, sp->steps);
    tb_put_u32(buf + 24, sp->in_dim);
    tb_put_u32(buf + 28, sp->out_dim);
    tb_put_u32(buf + 32, n_params);
    tb_put_u32(buf + 36, n_theta);
    tb_put_u32(buf + 40, off_layers);
    tb_put_u32(buf + 44, off_norm);
    tb_put_u32(buf + 48, off_params);
    tb_put_u32(buf + 52, off_rates);
    for (uint32_t l = 0; l < sp->n_layers; l++) {
        unsigned char *e = buf + off_layers + 16u * l;
        e[0] = sp->layers[l].kind;
        e[1] = sp->layers[l].flags;
        tb_put_u32(e + 4, sp->layers[l].in);
        tb_put_u32(e + 8, sp->layers[l].out);
        if (sp->layers[l].kind == ME_LAYER_CONV1D || sp->layers[l].kind == ME_LAYER_MAXPOOL1D) {
            put_u16(e + 2, sp->layers[l].kind == ME_LAYER_CONV1D ? 3u : 2u);
            tb_put_u32(e + 12, tb_lengths ? tb_lengths[l] : 0u);
        }
    }
    for (uint32_t i = 0; i < 2u * sp->in_dim + 2u * ny; i++) {
        const int is_std = (i >= sp->in_dim && i < 2u * sp->in_dim) || i >= 2u * sp->in_dim + ny;
        put_f32(buf + off_norm + 4u * i, sp->norm ? sp->norm[i] : (is_std ? 1.f : 0.f));
    }
    uint32_t rng = sp->seed;
    for (uint32_t i = 0; i < n_params; i++)
        put_f32(buf + off_params + 4u * i, sp->params ? sp->params[i] : sp->scale * check_uniform(&rng));
    for (uint32_t i = 0; i < n_theta; i++) put_f32(buf + off_rates + 4u * i, sp->rate);
    tb_fix_crc(buf, total);
    return total;
}
