/* A/B slots for the adapted state: see slots.h. */
#include "slots.h"

#include <string.h>

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (unsigned i = 0; i < 4u; i++) p[i] = (unsigned char)(v >> (8u * i));
}

/* whether the slot's prefix is intact; then its sequence number and state length */
static int prefix_ok(const slot_store *st, unsigned slot, uint32_t *seq, uint32_t *len)
{
    const unsigned char *p = st->slot[slot];
    *seq = get_u32(p);
    *len = get_u32(p + 4);
    return me_crc32(p, 8u) == get_u32(p + 8) && *len <= st->slot_bytes - SLOT_PREFIX_BYTES;
}

/* slots in the order to try: the valid prefix with the newer sequence number first (wrap-around safe) */
static void order(const slot_store *st, unsigned first_second[2], int valid[2], uint32_t seq[2], uint32_t len[2])
{
    for (unsigned i = 0; i < 2u; i++) valid[i] = prefix_ok(st, i, &seq[i], &len[i]);
    unsigned newest = 0u;
    if (valid[0] && valid[1]) newest = (int32_t)(seq[1] - seq[0]) > 0 ? 1u : 0u;
    else if (valid[1]) newest = 1u;
    first_second[0] = newest;
    first_second[1] = 1u - newest;
}

me_status slot_load(const slot_store *st, me_session *s, unsigned *slot_used, uint32_t *sequence)
{
    if (!st || !s) return ME_ERR_NULL;
    unsigned try_[2];
    int valid[2];
    uint32_t seq[2], len[2];
    order(st, try_, valid, seq, len);
    me_status first = ME_OK; /* the first refusal */
    for (unsigned k = 0; k < 2u; k++) {
        const unsigned i = try_[k];
        if (!valid[i]) continue;
        /* me_state_read checks the state's own CRC, model and contents and leaves s alone on a refusal */
        const me_status got = me_state_read(s, st->slot[i] + SLOT_PREFIX_BYTES, len[i]);
        if (got == ME_OK) {
            if (slot_used) *slot_used = i;
            if (sequence) *sequence = seq[i];
            return ME_OK;
        }
        if (first == ME_OK) first = got;
    }
    return first == ME_OK ? ME_ERR_MAGIC : first; /* no valid prefix at all: erased or never written */
}

me_status slot_save(const slot_store *st, const me_session *s)
{
    if (!st || !s || !st->scratch || !st->erase || !st->program) return ME_ERR_NULL;
    if (st->slot_bytes <= SLOT_PREFIX_BYTES) return ME_ERR_ARENA;
    unsigned try_[2];
    int valid[2];
    uint32_t seq[2], len[2];
    order(st, try_, valid, seq, len);
    /* the target is the slot that does not hold the newest valid prefix (the prefix is programmed last, so it
     * vouches for a complete state) */
    const unsigned newest = try_[0];
    const unsigned target = valid[newest] ? 1u - newest : 0u;
    const uint32_t next = valid[newest] ? seq[newest] + 1u : 1u;
    size_t n = 0;
    me_status status = me_state_write(s, st->scratch + SLOT_PREFIX_BYTES, st->slot_bytes - SLOT_PREFIX_BYTES, &n);
    if (status == ME_ERR_ARGUMENT) return ME_ERR_ARENA; /* larger than a slot */
    if (status != ME_OK) return status;
    put_u32(st->scratch, next);
    put_u32(st->scratch + 4, (uint32_t)n);
    put_u32(st->scratch + 8, me_crc32(st->scratch, 8u));
    /* the state first, the prefix that validates it last */
    if (st->erase(st->ctx, target) != 0 ||
        st->program(st->ctx, target, SLOT_PREFIX_BYTES, st->scratch + SLOT_PREFIX_BYTES, n) != 0 ||
        st->program(st->ctx, target, 0u, st->scratch, SLOT_PREFIX_BYTES) != 0)
        return ME_ERR_ARGUMENT;
    return ME_OK;
}
