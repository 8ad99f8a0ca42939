/* A/B state slots with the example's model: every power cut during a save (after 0, 1, ... all bytes
 * programmed, on erased flash and on memory that keeps its old bytes) and a flipped bit at every byte of either
 * slot's record load the last good state or the newest intact one, never another; prints the figures. (Every
 * bit of every byte of the state itself: runtime/c/tests/test_state.c.) */
#include <stdio.h>
#include <string.h>

#include "metaedge.h"
#include "model_data.h"
#include "slots.h"

#define SLOT_BYTES 8192u
#define SHOTS 3u
static unsigned char arena[64 * 1024];
static unsigned char flash[2][SLOT_BYTES], scratch[SLOT_BYTES], saved[2][SLOT_BYTES];
static long budget = -1;  /* bytes that may still be programmed before the power cut; -1: no cut */
static int erase_to_ff = 1; /* flash erases to 0xFF; 0: memory that keeps its bytes until written (FRAM) */
static int failures = 0;

#define CHECK(c)                                                                                            \
    do {                                                                                                    \
        if (!(c)) {                                                                                         \
            failures++;                                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                           \
        }                                                                                                   \
    } while (0)

static int sim_erase(void *ctx, unsigned slot)
{
    (void)ctx;
    if (erase_to_ff) memset(flash[slot], 0xFF, SLOT_BYTES);
    return 0;
}

static int sim_program(void *ctx, unsigned slot, size_t offset, const unsigned char *data, size_t len)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++) {
        if (budget == 0) return -1; /* power cut */
        flash[slot][offset + i] = data[i];
        if (budget > 0) budget--;
    }
    return 0;
}

static const slot_store store = {{flash[0], flash[1]}, SLOT_BYTES, sim_erase, sim_program, NULL, scratch};

/* which of the n_states reference states the session holds, or -1 */
static int which(const me_session *s, float states[][2048], uint32_t n, int n_states)
{
    for (int k = 0; k < n_states; k++)
        if (me_theta_size(s) == n && memcmp(me_theta(s), states[k], 4u * n) == 0) return k;
    return -1;
}

static float states[4][2048];

int main(void)
{
    me_model model;
    me_session s;
    if (me_model_load(&model, me_model_data, me_model_data_len) != ME_OK) return 1;
    if (me_session_init(&s, &model, arena, sizeof arena, SHOTS) != ME_OK) return 1;
    const uint32_t n = me_theta_size(&s);
    CHECK(n <= 2048);
    const float xs[SHOTS] = {-3.0f, 0.0f, 2.5f}, ys[SHOTS] = {0.70156646f, -0.95885110f, 1.81859480f};
    /* state 0: theta0 (what a reset session holds); 1, 2, 3: three successive adaptations */
    memcpy(states[0], me_theta(&s), 4u * n);
    for (int k = 1; k <= 3; k++) {
        CHECK(me_adapt(&s, xs, ys, SHOTS, (uint32_t)k, ME_GUARD, NULL) == ME_OK);
        memcpy(states[k], me_theta(&s), 4u * n);
        CHECK(which(&s, states, n, k) == -1); /* each differs from the ones before */
    }

    memset(flash, 0xFF, sizeof flash);
    CHECK(me_reset(&s) == ME_OK);
    CHECK(slot_load(&store, &s, NULL, NULL) == ME_ERR_MAGIC); /* blank flash: nothing to load */
    CHECK(which(&s, states, n, 1) == 0);
    /* save states 1 and 2: slot A holds 1 (sequence 1), slot B 2 (sequence 2) */
    for (int k = 1; k <= 2; k++) {
        CHECK(me_set_theta(&s, states[k], n) == ME_OK);
        CHECK(slot_save(&store, &s) == ME_OK);
    }
    unsigned used = 9;
    uint32_t seq = 0;
    CHECK(me_reset(&s) == ME_OK && slot_load(&store, &s, &used, &seq) == ME_OK);
    CHECK(which(&s, states, n, 4) == 2 && used == 1 && seq == 2);
    memcpy(saved, flash, sizeof flash);
    const size_t record = SLOT_PREFIX_BYTES + ME_STATE_HEADER_BYTES + 4u * n + 4u;

    /* a power cut after every byte count of saving state 3 (into slot A, the older), both memory kinds */
    unsigned long cuts = 0, wrong = 0, old_kept = 0, new_loaded = 0;
    for (int mode = 0; mode < 2; mode++) {
        erase_to_ff = mode == 0;
        for (size_t k = 0; k <= record; k++) {
            memcpy(flash, saved, sizeof flash);
            CHECK(me_set_theta(&s, states[3], n) == ME_OK);
            budget = (long)k;
            const me_status st = slot_save(&store, &s);
            budget = -1;
            CHECK((st == ME_OK) == (k == record));
            CHECK(me_reset(&s) == ME_OK); /* reboot */
            cuts++;
            const me_status got = slot_load(&store, &s, NULL, NULL);
            const int held = got == ME_OK ? which(&s, states, n, 4) : -1;
            const int want = k == record ? 3 : 2;
            if (held != want) wrong++;
            old_kept += held == 2;
            new_loaded += held == 3;
        }
    }
    erase_to_ff = 1;
    CHECK(wrong == 0 && new_loaded == 2 && old_kept == cuts - 2);

    /* a flipped bit at every byte of either slot's record: the newest intact state loads */
    unsigned long flips = 0, flip_wrong = 0, refused = 0;
    for (unsigned slot = 0; slot < 2u; slot++)
        for (size_t at = 0; at < record; at++) {
            memcpy(flash, saved, sizeof flash);
            flash[slot][at] ^= (unsigned char)(1u << (at % 8u)); /* one bit per byte, each position in turn */
            CHECK(me_reset(&s) == ME_OK);
            flips++;
            const me_status got = slot_load(&store, &s, NULL, NULL);
            const int held = got == ME_OK ? which(&s, states, n, 4) : -1;
            if (got != ME_OK) refused++;
            /* slot B (state 2) damaged: state 1 is the newest intact one; slot A damaged: state 2 */
            if (held != (slot == 1u ? 1 : 2)) flip_wrong++;
        }
    CHECK(flip_wrong == 0 && refused == 0);
    printf("A/B slots: %zu-byte record; %lu power cuts while saving (every byte count, erased and unerased "
           "memory): %lu kept the last good state, %lu loaded the new one, %lu wrong; %lu bit flips (one at "
           "every byte of either slot): %lu wrong states returned, %lu refused\n",
           record, cuts, old_kept, new_loaded, wrong, flips, flip_wrong, refused);
    if (failures) {
        fprintf(stderr, "test_slots: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_slots: all checks passed\n");
    return 0;
}
