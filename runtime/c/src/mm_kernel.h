/* The vector tiles of me_matmul (layers.c), written once and included once per instruction set: the including
 * file defines
 *   MK_VF, MK_VI     float and int32 vector types of MK_VLEN lanes (gcc/clang vector_size types)
 *   MK_VLEN          lanes (4 or 8)
 *   MK_NAME(x)       the name of this copy's function x
 *   MK_ATTR          attributes of every function here (e.g. a target("...") attribute), may be empty
 *   MK_MADD(a, s, b) a + s * b for a scalar s
 * and gets MK_NAME(run)(const me_mm *t, uint32_t m), which computes all m rows of t. Each output's sum runs
 * over q in order whatever the tile, so the tiling changes nothing in the results. */

MK_ATTR static inline __attribute__((always_inline)) MK_VF MK_NAME(load)(const float *p)
{
    MK_VF v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* rows x nv vectors of outputs at (r0, j0), accumulated in registers */
MK_ATTR static inline __attribute__((always_inline)) void MK_NAME(tile)(const me_mm *t, uint32_t r0, uint32_t j0,
                                                                      uint32_t rows, uint32_t nv)
{
    MK_VF acc[ME_ROWS][5];
    const uint32_t p = t->p, k = t->k;
    const MK_VF zero = {0.f};
    for (uint32_t v = 0; v < nv; v++) {
        const MK_VF init = t->bias ? MK_NAME(load)(t->bias + j0 + v * MK_VLEN) : zero;
        for (uint32_t r = 0; r < rows; r++) acc[r][v] = init;
    }
    const float *a = t->a + (size_t)r0 * t->ars;
    const float *b = t->b + j0;
    for (uint32_t q = 0; q < k; q++) {
        const float *bq = b + (size_t)q * p;
        MK_VF bv[5];
        for (uint32_t v = 0; v < nv; v++) bv[v] = MK_NAME(load)(bq + v * MK_VLEN);
        for (uint32_t r = 0; r < rows; r++) {
            const float s = a[(size_t)r * t->ars + (size_t)q * t->aks];
            for (uint32_t v = 0; v < nv; v++) acc[r][v] = MK_MADD(acc[r][v], s, bv[v]);
        }
    }
    float *c = t->c + (size_t)r0 * p + j0;
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t v = 0; v < nv; v++) {
            MK_VF y = acc[r][v];
            if (t->mask) /* NaN > 0 is false: zero, as the plain ReLU backward */
                y = (MK_VF)((MK_VI)y & (MK_NAME(load)(t->mask + (size_t)(r0 + r) * p + j0 + v * MK_VLEN) > zero));
            else if (t->relu)
                y = (MK_VF)((MK_VI)y & (y > zero));
            memcpy(c + (size_t)r * p + v * MK_VLEN, &y, sizeof y);
        }
}

/* columns [j0, j0 + nv * MK_VLEN) of all m rows, in tiles of up to `rows` rows (rows <= ME_ROWS) */
MK_ATTR static inline __attribute__((always_inline)) void MK_NAME(cols)(const me_mm *t, uint32_t m, uint32_t j0,
                                                                      uint32_t nv, uint32_t rows)
{
    uint32_t r = 0;
    for (; r + rows <= m; r += rows) MK_NAME(tile)(t, r, j0, rows, nv);
    if (rows > 4u && r + 4u <= m) {
        MK_NAME(tile)(t, r, j0, 4u, nv);
        r += 4u;
    }
    if (rows > 2u && r + 2u <= m) {
        MK_NAME(tile)(t, r, j0, 2u, nv);
        r += 2u;
    }
    if (rows > 1u && r < m) MK_NAME(tile)(t, r, j0, 1u, nv);
}

/* Column blocks of as many vectors as keep about 10-12 accumulators in registers: 8 lanes, 2 rows x 5 vectors
 * (a 40-wide layer in one block), 3 x 4, 4 x 3, 6 x 2, 6 x 1; 4 lanes, 6 x 2 and 6 x 1. The last p % MK_VLEN
 * columns, plain C. */
MK_ATTR static void MK_NAME(run)(const me_mm *t, uint32_t m)
{
    const uint32_t p = t->p;
    uint32_t j = 0;
#if MK_VLEN == 8
    for (; j + 5u * MK_VLEN <= p; j += 5u * MK_VLEN) MK_NAME(cols)(t, m, j, 5u, 2u);
    switch ((p - j) / MK_VLEN) {
    case 4u: MK_NAME(cols)(t, m, j, 4u, 3u); break;
    case 3u: MK_NAME(cols)(t, m, j, 3u, 4u); break;
    case 2u: MK_NAME(cols)(t, m, j, 2u, 6u); break;
    case 1u: MK_NAME(cols)(t, m, j, 1u, 6u); break;
    default: break;
    }
    j += (p - j) / MK_VLEN * MK_VLEN;
#else
    for (; j + 2u * MK_VLEN <= p; j += 2u * MK_VLEN) MK_NAME(cols)(t, m, j, 2u, ME_ROWS);
    if (j + MK_VLEN <= p) {
        MK_NAME(cols)(t, m, j, 1u, ME_ROWS);
        j += MK_VLEN;
    }
#endif
    if (j < p) mm_tail(t, m, j);
}
