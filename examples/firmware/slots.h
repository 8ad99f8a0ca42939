/* Two flash slots (A/B) for the adapted state, so that a power cut during a save leaves the last good state.
 *
 * A slot holds a record: u32 sequence number, u32 state length, u32 CRC-32 of those 8 bytes (the prefix), then
 * the state (me_state_write, which has its own CRC). A save erases the slot NOT holding the newest valid record,
 * programs the state, and programs the prefix with the next sequence number LAST, so a valid prefix means the
 * state under it was complete. A load takes the valid record with the highest sequence number, and falls back
 * to the other slot when that one's state is refused (a torn or decayed write). Flash is reached only through
 * the two callbacks, so the same code runs on a board and in the host test (RAM, with torn writes). */
#ifndef METAEDGE_EXAMPLE_SLOTS_H
#define METAEDGE_EXAMPLE_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#include "metaedge.h"

#define SLOT_PREFIX_BYTES 12u

/* erase slot `slot`; program `len` bytes of `data` at `offset` in it, in order; 0 on success */
typedef int (*slot_erase_fn)(void *ctx, unsigned slot);
typedef int (*slot_program_fn)(void *ctx, unsigned slot, size_t offset, const unsigned char *data, size_t len);

typedef struct slot_store {
    const unsigned char *slot[2]; /* memory-mapped slots, for reading */
    size_t slot_bytes;            /* size of each slot */
    slot_erase_fn erase;
    slot_program_fn program;
    void *ctx;
    unsigned char *scratch;       /* slot_bytes of RAM: the record is built here before it is programmed */
} slot_store;

/* Load the newest valid state into s. ME_OK (and *slot_used, *sequence if non-NULL), or the refusal of the
 * newest record's state when neither slot holds a valid one (ME_ERR_MAGIC for erased flash); s is then left as
 * it was. */
me_status slot_load(const slot_store *st, me_session *s, unsigned *slot_used, uint32_t *sequence);
/* Save s's state into the older slot with the next sequence number. ME_ERR_ARENA when the record does not fit a
 * slot, ME_ERR_ARGUMENT when erasing or programming failed (the newer slot is untouched either way). */
me_status slot_save(const slot_store *st, const me_session *s);

#endif
