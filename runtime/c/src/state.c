/* Adapted state, format 2: the session's state to and from a caller buffer (docs/firmware.md has the layout).
 * The reader checks every field, the CRC and every float before it touches the session, so a torn or corrupt
 * state is refused with the session as it was. */
#include <string.h>

#include "internal.h"

#define STATE_MAGIC "MEST"
#define IDENTITY_BYTES 32u

/* floats a state of this session may hold: n_theta, or whole prototypes up to max_shots of them */
static me_status check_count(const me_session *s, uint32_t n)
{
    const me_model *m = s->model;
    if (m->solver != ME_SOLVER_PROTOTYPES) return n == m->n_theta ? ME_OK : ME_ERR_FORMAT;
    if (n == 0u || n % m->out_dim != 0u) return ME_ERR_FORMAT;
    return n / m->out_dim <= s->max_shots ? ME_OK : ME_ERR_ARGUMENT;
}

me_status me_state_write(const me_session *s, uint8_t *buf, size_t cap, size_t *len)
{
    if (!s || !s->model || !buf || !len) return ME_ERR_NULL;
    const uint32_t n = me_theta_size(s);
    if (n == 0u) return ME_ERR_STATE; /* prototypes: nothing adapted yet */
    const uint64_t body = (uint64_t)ME_STATE_HEADER_BYTES + 4ull * n, total = body + 4u;
    if (total > UINT32_MAX) return ME_ERR_ARGUMENT;
    *len = (size_t)total;
    if (cap < total) return ME_ERR_ARGUMENT;
    memset(buf, 0, ME_STATE_HEADER_BYTES); /* reserved fields and the identity (unknown here) are zero */
    memcpy(buf, STATE_MAGIC, 4u);
    me_write_u16(buf + 4, (uint16_t)ME_STATE_VERSION);
    me_write_u16(buf + 6, (uint16_t)ME_STATE_HEADER_BYTES);
    me_write_u32(buf + 8, (uint32_t)total);
    me_write_u32(buf + 12, s->model->crc);
    me_write_u32(buf + 16, n);
    me_write_u32(buf + 20, s->last.steps_run);
    me_write_u32(buf + 24, s->last.steps_kept);
    me_write_f32(buf + 28, &s->last.loss_before, 1u);
    me_write_f32(buf + 32, &s->last.loss_after, 1u);
    me_write_f32(buf + ME_STATE_HEADER_BYTES, me_theta(s), n);
    me_write_u32(buf + body, me_crc32(buf, (size_t)body));
    return ME_OK;
}

me_status me_state_read(me_session *s, const uint8_t *buf, size_t len)
{
    if (!s || !s->model || !buf) return ME_ERR_NULL;
    const me_model *m = s->model;
    if (len < ME_STATE_HEADER_BYTES + 4u) return ME_ERR_TRUNCATED;
    if (memcmp(buf, STATE_MAGIC, 4u) != 0) return ME_ERR_MAGIC;
    if (me_read_u16(buf + 4) != ME_STATE_VERSION) return ME_ERR_VERSION; /* format 1 is the Python .npz */
    const uint32_t total = me_read_u32(buf + 8), n = me_read_u32(buf + 16);
    if (me_read_u16(buf + 6) != ME_STATE_HEADER_BYTES || total < ME_STATE_HEADER_BYTES + 4u) return ME_ERR_FORMAT;
    if (total > len) return ME_ERR_TRUNCATED;
    if (me_crc32(buf, total - 4u) != me_read_u32(buf + total - 4u)) return ME_ERR_CRC;
    /* behind the CRC: the fields agree with each other and with this model and session */
    if ((uint64_t)ME_STATE_HEADER_BYTES + 4ull * n + 4u != total) return ME_ERR_FORMAT;
    if (me_read_u32(buf + 12) != m->crc) return ME_ERR_MODEL;
    for (uint32_t off = 36u; off < 48u; off += 4u)
        if (me_read_u32(buf + off) != 0u) return ME_ERR_FORMAT;
    me_adapt_info info;
    info.steps_run = me_read_u32(buf + 20);
    info.steps_kept = me_read_u32(buf + 24);
    me_read_f32(&info.loss_before, buf + 28, 1u);
    me_read_f32(&info.loss_after, buf + 32, 1u);
    if (info.steps_kept > info.steps_run) return ME_ERR_FORMAT;
    me_status st = check_count(s, n);
    if (st != ME_OK) return st;
    const unsigned char *payload = buf + ME_STATE_HEADER_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        float v;
        me_read_f32(&v, payload + 4u * i, 1u);
        if (!me_all_finite(&v, 1u)) return ME_ERR_NONFINITE;
    }
    /* everything checked: the state goes in */
    if (m->solver == ME_SOLVER_PROTOTYPES) {
        me_read_f32(s->protos, payload, n);
        s->ways = n / m->out_dim;
    } else {
        me_read_f32(s->theta, payload, n);
        me_refresh_transposed(s, 0);
    }
    s->last = info;
    return ME_OK;
}
