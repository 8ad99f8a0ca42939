/* A tiny test harness for the C unit tests and a builder of model.mebin buffers for them. */
#ifndef METAEDGE_TEST_CHECK_H
#define METAEDGE_TEST_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "metaedge.h"

extern int check_failures;

#define CHECK(cond)                                                                                        \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            check_failures++;                                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                       \
        }                                                                                                  \
    } while (0)
#define CHECK_STATUS(expr, want)                                                                           \
    do {                                                                                                   \
        me_status got_ = (expr);                                                                           \
        if (got_ != (want)) {                                                                              \
            check_failures++;                                                                              \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d\n", __FILE__, __LINE__, #expr, got_,  \
                    me_strerror(got_), (int)(want));                                                       \
        }                                                                                                  \
    } while (0)
#define CHECK_CLOSE(a, b, tol)                                                                             \
    do {                                                                                                   \
        double a_ = (a), b_ = (b);                                                                         \
        if (!(a_ - b_ <= (tol) && b_ - a_ <= (tol))) {                                                     \
            check_failures++;                                                                              \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g (tolerance %g)\n", __FILE__, __LINE__, #a, a_, #b,  \
                    b_, (double)(tol));                                                                    \
        }                                                                                                  \
    } while (0)

int check_report(const char *name);
float check_uniform(uint32_t *state); /* deterministic uniform in [-1, 1) */

typedef struct tb_layer {
    uint8_t kind, flags;
    uint32_t in, out;
} tb_layer;
/* per-layer input lengths of conv1d / maxpool1d entries for tb_build (their u16 field gets 3 / 2); NULL: none */
extern const uint32_t *tb_lengths;

typedef struct tb_spec {
    uint8_t task, loss, solver;
    uint16_t steps;
    uint32_t in_dim, out_dim;
    const tb_layer *layers;
    uint32_t n_layers;
    const float *norm;   /* x_mean, x_std, y_mean, y_std; NULL: identity */
    const float *params; /* all parameters in model order; NULL: uniform(-scale, scale) */
    float scale;
    float rate;          /* every rate */
    uint32_t seed;
} tb_spec;

/* write the model into buf (cap bytes); returns its size, 0 if it does not fit */
size_t tb_build(unsigned char *buf, size_t cap, const tb_spec *spec);
/* recompute the CRC-32 of a buffer whose payload was edited */
void tb_fix_crc(unsigned char *buf, size_t len);
void tb_put_u32(unsigned char *p, uint32_t v);

#endif
