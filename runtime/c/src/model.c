/* model.mebin parsing: every count, offset and length is checked against the buffer before use
 * (docs/firmware.md has the layout). Nothing is copied: the model keeps a pointer to the buffer. */
#include <string.h>

#include "internal.h"

#define HEADER_BYTES 64u
#define LAYER_BYTES 16u

/* a section of count floats (or bytes_per items) at off must lie inside [HEADER_BYTES, total) */
static int section_ok(uint32_t off, uint64_t bytes, uint32_t total)
{
    return off >= HEADER_BYTES && off % 4u == 0u && (uint64_t)off + bytes <= (uint64_t)total;
}

static int floats_finite(const unsigned char *p, uint32_t count, int nonzero)
{
    for (uint32_t i = 0; i < count; i++) {
        float v;
        me_read_f32(&v, p + 4u * i, 1u);
        if (!me_all_finite(&v, 1u) || (nonzero && v == 0.f)) return 0;
    }
    return 1;
}

/* walk the layer table: widths chain, parameter and adapted offsets in model order */
static me_status parse_layers(me_model *m, const unsigned char *table, uint32_t version)
{
    uint64_t params = 0, theta = 0;
    uint32_t width = m->in_dim;
    m->max_width = m->in_dim;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const unsigned char *e = table + (size_t)l * LAYER_BYTES;
        me_layer *L = &m->layers[l];
        memset(L, 0, sizeof *L);
        L->kind = e[0];
        L->flags = e[1];
        L->in = me_read_u32(e + 4);
        L->out = me_read_u32(e + 8);
        const uint32_t field = me_read_u16(e + 2), len = me_read_u32(e + 12);
        const int spatial = L->kind == ME_LAYER_CONV1D || L->kind == ME_LAYER_MAXPOOL1D;
        if (spatial && version < 2u) return ME_ERR_FORMAT; /* version 1 has no such kinds */
        if (!spatial && (field != 0u || len != 0u)) return ME_ERR_FORMAT;
        if (L->out == 0u || L->out > ME_MAX_DIM || L->in == 0u || L->in > ME_MAX_DIM) return ME_ERR_FORMAT;
        switch (L->kind) {
        case ME_LAYER_DENSE:
        case ME_LAYER_SKIP: {
            const int skip = L->kind == ME_LAYER_SKIP;
            if (L->flags & ~(ME_ADAPT_WEIGHT | ME_ADAPT_BIAS)) return ME_ERR_FORMAT;
            if (skip && (l + 1u != m->n_layers || l == 0u || L->in != m->in_dim || L->out != width))
                return ME_ERR_FORMAT; /* the linear skip path comes last and maps the input to the output */
            if (!skip && L->in != width) return ME_ERR_FORMAT;
            L->w_param = (uint32_t)params;
            params += (uint64_t)L->in * L->out;
            L->b_param = (uint32_t)params;
            params += L->out;
            if (L->flags & ME_ADAPT_WEIGHT) {
                L->w_theta = (uint32_t)theta;
                theta += (uint64_t)L->in * L->out;
            }
            if (L->flags & ME_ADAPT_BIAS) {
                L->b_theta = (uint32_t)theta;
                theta += L->out;
            }
            if (params > m->n_params) return ME_ERR_FORMAT;
            width = L->out;
            break;
        }
        case ME_LAYER_CONV1D: {
            /* kernel 3; (C_in, L) -> (C_out, L); forward only, so prototype embeddings only */
            if (m->solver != ME_SOLVER_PROTOTYPES) return ME_ERR_UNSUPPORTED;
            if (field != 3u || L->flags != 0u || len == 0u || L->in != width || L->in % len != 0u ||
                L->out % len != 0u)
                return ME_ERR_FORMAT;
            const uint32_t cin = L->in / len, cout = L->out / len;
            L->len = len;
            L->w_param = (uint32_t)params;
            params += 3ull * cin * cout;
            L->b_param = (uint32_t)params;
            params += cout;
            if (params > m->n_params) return ME_ERR_FORMAT;
            width = L->out;
            break;
        }
        case ME_LAYER_MAXPOOL1D:
            /* window 2, stride 2; (C, L) -> (C, floor(L / 2)) */
            if (m->solver != ME_SOLVER_PROTOTYPES) return ME_ERR_UNSUPPORTED;
            if (field != 2u || L->flags != 0u || len < 2u || L->in != width || L->in % len != 0u ||
                (uint64_t)(L->in / len) * (len / 2u) != L->out)
                return ME_ERR_FORMAT;
            L->len = len;
            width = L->out;
            break;
        case ME_LAYER_RELU:
        case ME_LAYER_TANH:
        case ME_LAYER_SIGMOID:
            if (L->flags != 0u || L->in != width || L->out != width) return ME_ERR_FORMAT;
            break;
        default:
            return ME_ERR_UNSUPPORTED;
        }
        if (L->out > m->max_width) m->max_width = L->out;
    }
    if (width != m->out_dim || params != m->n_params || theta != m->n_theta) return ME_ERR_FORMAT;
    return ME_OK;
}

/* version 4: u32 n_levels, f32 noise_scale[out_dim], f32 levels[n_levels] (increasing, in (0, 1)),
 * f32 factors[n_levels] (positive), after the rates; Gauss-Newton regression models only */
static me_status parse_uncertainty(me_model *m, uint32_t off, uint32_t total)
{
    if (m->solver != ME_SOLVER_GAUSS_NEWTON) return ME_ERR_FORMAT;
    if (!section_ok(off, 4u, total)) return ME_ERR_TRUNCATED;
    const uint32_t n = me_read_u32(m->buf + off);
    if (n == 0u || n > ME_MAX_LEVELS) return ME_ERR_FORMAT;
    if ((uint64_t)off < (uint64_t)m->off_rates + 4ull * m->n_theta) return ME_ERR_FORMAT;
    if (!section_ok(off, 4ull + 4ull * (m->out_dim + 2ull * n), total)) return ME_ERR_TRUNCATED;
    m->off_uncertainty = off;
    m->n_levels = n;
    const unsigned char *noise = m->buf + off + 4u; /* then the levels and the factors */
    float prev = 0.f;
    for (uint32_t i = 0; i < m->out_dim + 2u * n; i++) {
        float v;
        me_read_f32(&v, noise + 4u * i, 1u);
        if (!me_all_finite(&v, 1u) || !(v > 0.f)) return ME_ERR_FORMAT;
        const int is_level = i >= m->out_dim && i < m->out_dim + n;
        if (is_level && (!(v < 1.f) || !(v > prev))) return ME_ERR_FORMAT;
        if (is_level) prev = v;
    }
    return ME_OK;
}

static me_status check_solver(const me_model *m)
{
    const int regression = m->task == ME_TASK_REGRESSION;
    if ((m->loss == ME_LOSS_MSE) != regression) return ME_ERR_FORMAT;
    switch (m->solver) {
    case ME_SOLVER_SGD: return m->n_theta > 0u ? ME_OK : ME_ERR_FORMAT;
    case ME_SOLVER_GAUSS_NEWTON: return regression && m->n_theta > 0u ? ME_OK : ME_ERR_FORMAT;
    case ME_SOLVER_PROTOTYPES: return !regression && m->n_theta == 0u ? ME_OK : ME_ERR_FORMAT;
    default: return ME_ERR_UNSUPPORTED;
    }
}

me_status me_model_load(me_model *m, const void *buffer, size_t len)
{
    const unsigned char *p = (const unsigned char *)buffer;
    if (!m || !p) return ME_ERR_NULL;
    memset(m, 0, sizeof *m);
    if (len < HEADER_BYTES) return ME_ERR_TRUNCATED;
    if (memcmp(p, "MEBN", 4) != 0) return ME_ERR_MAGIC;
    const uint32_t version = me_read_u16(p + 4);
    /* 1 (MLPs), 2 (+ conv1d), 3 (+ min_damping), 4 (+ the interval section) */
    if (version == 0u || version > ME_FORMAT_VERSION) return ME_ERR_VERSION;
    const uint32_t total = me_read_u32(p + 8);
    /* version 5 adds a u32 at offset 64 (the control section's offset): a 68-byte header */
    const uint32_t header = version >= 5u ? HEADER_BYTES + 4u : HEADER_BYTES;
    if (me_read_u16(p + 6) != header || total < header) return ME_ERR_FORMAT;
    if (total > len) return ME_ERR_TRUNCATED;
    if (me_crc32(p + 16, total - 16u) != me_read_u32(p + 12)) return ME_ERR_CRC;

    m->buf = p;
    m->bytes = total;
    m->crc = me_read_u32(p + 12);
    m->version = (uint8_t)version;
    m->task = p[16];
    m->loss = p[17];
    m->solver = p[18];
    m->n_layers = me_read_u16(p + 20);
    m->default_steps = me_read_u16(p + 22);
    m->in_dim = me_read_u32(p + 24);
    m->out_dim = me_read_u32(p + 28);
    m->n_params = me_read_u32(p + 32);
    m->n_theta = me_read_u32(p + 36);
    const uint32_t off_layers = me_read_u32(p + 40);
    m->off_norm = me_read_u32(p + 44);
    m->off_params = me_read_u32(p + 48);
    m->off_rates = me_read_u32(p + 52);
    if (m->task > ME_TASK_CLASSIFICATION || m->loss > ME_LOSS_CROSS_ENTROPY || m->solver > ME_SOLVER_PROTOTYPES)
        return ME_ERR_UNSUPPORTED;
    /* offset 60: reserved (0) before version 4, then the offset of the interval section (0: none) */
    const uint32_t off_unc = me_read_u32(p + 60);
    if (p[19] != 0u || (version < 4u && off_unc != 0u)) return ME_ERR_FORMAT;
    /* offset 56: reserved (0) before version 3, then the Gauss-Newton damping floor (0 for other solvers) */
    m->min_damping = 0.f;
    if (version >= 3u) {
        me_read_f32(&m->min_damping, p + 56, 1u);
        const int newton = m->solver == ME_SOLVER_GAUSS_NEWTON;
        if (newton ? !(m->min_damping > 0.f && me_all_finite(&m->min_damping, 1u)) : me_read_u32(p + 56) != 0u)
            return ME_ERR_FORMAT;
    } else {
        if (me_read_u32(p + 56) != 0u) return ME_ERR_FORMAT;
        if (m->solver == ME_SOLVER_GAUSS_NEWTON) m->min_damping = ME_LEGACY_MIN_DAMPING;
    }
    const uint32_t off_ctl = version >= 5u ? me_read_u32(p + HEADER_BYTES) : 0u;
    if (m->n_layers == 0u || m->n_layers > ME_MAX_LAYERS) return ME_ERR_FORMAT;
    if (m->in_dim == 0u || m->in_dim > ME_MAX_DIM || m->out_dim == 0u || m->out_dim > ME_MAX_DIM)
        return ME_ERR_FORMAT;
    if (m->n_theta > m->n_params) return ME_ERR_FORMAT;

    const uint32_t ny = m->task == ME_TASK_REGRESSION ? m->out_dim : 0u;
    const uint64_t norm_floats = 2ull * m->in_dim + 2ull * ny;
    if (off_layers < header) return ME_ERR_FORMAT; /* the other sections follow the table */
    if (!section_ok(off_layers, (uint64_t)m->n_layers * LAYER_BYTES, total) ||
        !section_ok(m->off_norm, 4ull * norm_floats, total) ||
        !section_ok(m->off_params, 4ull * m->n_params, total) ||
        !section_ok(m->off_rates, 4ull * m->n_theta, total))
        return ME_ERR_TRUNCATED;
    /* the sections follow each other without overlapping */
    if ((uint64_t)off_layers + (uint64_t)m->n_layers * LAYER_BYTES > m->off_norm ||
        (uint64_t)m->off_norm + 4ull * norm_floats > m->off_params ||
        (uint64_t)m->off_params + 4ull * m->n_params > m->off_rates)
        return ME_ERR_FORMAT;

    me_status st = parse_layers(m, p + off_layers, version);
    if (st == ME_OK) st = check_solver(m);
    if (st == ME_OK && off_unc != 0u) st = parse_uncertainty(m, off_unc, total);
    if (st == ME_OK && off_ctl != 0u) { /* after the rates and the interval section (control.c) */
        const uint64_t end = m->n_levels ? (uint64_t)off_unc + 4ull + 4ull * (m->out_dim + 2ull * m->n_levels)
                                         : (uint64_t)m->off_rates + 4ull * m->n_theta;
        st = (uint64_t)off_ctl < end ? ME_ERR_FORMAT : me_control_parse(m, off_ctl, total);
    }
    if (st != ME_OK) return st;
    const unsigned char *norm = p + m->off_norm;
    if (!floats_finite(norm, m->in_dim, 0) || !floats_finite(norm + 4u * m->in_dim, m->in_dim, 1) ||
        !floats_finite(norm + 8u * m->in_dim, ny, 0) || !floats_finite(norm + 8u * m->in_dim + 4u * ny, ny, 1) ||
        !floats_finite(p + m->off_params, m->n_params, 0) || !floats_finite(p + m->off_rates, m->n_theta, 0))
        return ME_ERR_FORMAT;
    return ME_OK;
}

uint32_t me_default_steps(const me_model *m) { return m ? m->default_steps : 0u; }

uint32_t me_api_version(void) { return ME_API_VERSION; }

me_status me_model_info(const uint8_t *buf, size_t len, me_model_info_t *info)
{
    if (!info) return ME_ERR_NULL;
    memset(info, 0, sizeof *info);
    me_model m; /* the one parser: everything it validates, then the fields copied out */
    const me_status st = me_model_load(&m, buf, len);
    if (st != ME_OK) return st;
    info->format_version = m.version;
    info->bytes = m.bytes;
    info->crc = m.crc;
    info->task = m.task;
    info->loss = m.loss;
    info->solver = m.solver;
    info->default_steps = m.default_steps;
    info->in_dim = m.in_dim;
    info->out_dim = m.out_dim;
    info->n_params = m.n_params;
    info->n_theta = m.n_theta;
    info->n_layers = m.n_layers;
    if (m.layers[0].kind == ME_LAYER_CONV1D) {
        info->in_channels = m.in_dim / m.layers[0].len;
        info->in_length = m.layers[0].len;
    }
    info->min_damping = m.min_damping;
    return ME_OK;
}

const char *me_strerror(me_status status)
{
    switch (status) {
    case ME_OK: return "ok";
    case ME_ERR_NULL: return "a required pointer is NULL";
    case ME_ERR_TRUNCATED: return "buffer is truncated: shorter than the header or the sizes it declares";
    case ME_ERR_MAGIC: return "not a metaedge model or state (bad magic); export a model with `metaedge export "
                              "--format c`";
    case ME_ERR_VERSION: return "model or state format version not supported by this library; re-export or update";
    case ME_ERR_CRC: return "CRC-32 mismatch: the model or state is corrupt or was modified";
    case ME_ERR_FORMAT: return "model or state is inconsistent (counts, offsets, shapes or values)";
    case ME_ERR_UNSUPPORTED: return "model uses a layer, loss or solver this library does not support";
    case ME_ERR_ARENA: return "arena too small or misaligned; size it with me_arena_bytes";
    case ME_ERR_SHOTS: return "sample count is zero or above the session's max_shots";
    case ME_ERR_NONFINITE: return "input holds NaN or infinite values";
    case ME_ERR_LABEL: return "class labels must be whole numbers 0..classes-1, each class with a sample";
    case ME_ERR_ARGUMENT: return "invalid argument (size or count)";
    case ME_ERR_SINGULAR: return "Gauss-Newton system not positive definite";
    case ME_ERR_STATE: return "no prototypes yet: adapt or set a state first";
    case ME_ERR_MODEL: return "the saved state belongs to another model (model CRC differs); adapt again";
    }
    return "unknown status";
}
