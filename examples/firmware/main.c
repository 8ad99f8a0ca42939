/* Firmware-style example: a sinusoid "unit" (amplitude 2, phase 0.5) calibrates the compiled-in meta-learned
 * model from 3 reference points, predicts, saves the adapted state into A/B slots (slots.c; two RAM buffers
 * stand in for flash sectors here) and, after a simulated reboot, restores it, then prints the adaptation's
 * journal record (docs/journal.md) as it would go out over a serial line. No malloc: the arena is a static array. The numbers are printed with 4 decimals so the host and the Cortex-M4 build (qemu-system-arm) print
 * the same text. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metaedge.h"
#include "model_data.h"
#include "slots.h"

#define SHOTS 3u
#define SLOT_BYTES 8192u
/* the bundle's identity in journal records: sha256 hex of its manifest.json, fixed when the firmware is built
 * (-DME_BUNDLE_SHA256=\"...\"; the manifest lists model_data.h's digest, so it cannot live inside that file) */
#ifndef ME_BUNDLE_SHA256
#define ME_BUNDLE_SHA256 "0000000000000000000000000000000000000000000000000000000000000000"
#endif
static unsigned char arena[64 * 1024];
static unsigned char flash[2][SLOT_BYTES], scratch[SLOT_BYTES];

static int ram_erase(void *ctx, unsigned slot)
{
    (void)ctx;
    memset(flash[slot], 0xFF, SLOT_BYTES);
    return 0;
}

static int ram_program(void *ctx, unsigned slot, size_t offset, const unsigned char *data, size_t len)
{
    (void)ctx;
    memcpy(flash[slot] + offset, data, len);
    return 0;
}

int main(void)
{
    /* x and 2 sin(x - 0.5) as literals, so every platform's libm sees the same data */
    static const float xs[SHOTS] = {-3.0f, 0.0f, 2.5f};
    static const float ys[SHOTS] = {0.70156646f, -0.95885110f, 1.81859480f};
    static const float xq[5] = {-4.0f, -2.0f, 0.5f, 2.0f, 4.0f};
    static const float yq[5] = {1.95506f, -1.19694f, 0.0f, 1.99499f, -0.70157f};
    me_model model;
    me_session s;
    me_adapt_info info;
    me_model_info_t about;
    float pred[5], again[5];
    const slot_store store = {{flash[0], flash[1]}, SLOT_BYTES, ram_erase, ram_program, NULL, scratch};

    me_status st = me_model_info(me_model_data, me_model_data_len, &about);
    if (st == ME_OK) st = me_model_load(&model, me_model_data, me_model_data_len);
    if (st != ME_OK) {
        printf("load: %s\n", me_strerror(st));
        return 1;
    }
    const size_t need = me_arena_bytes(&model, SHOTS);
    printf("model: %u bytes, %u parameters, %u adapted, arena %u bytes\n", (unsigned)about.bytes,
           (unsigned)about.n_params, (unsigned)about.n_theta, (unsigned)need);
    memset(flash, 0xFF, sizeof flash);
    st = me_session_init(&s, &model, arena, sizeof arena, SHOTS);
    if (st == ME_OK) st = me_adapt(&s, xs, ys, SHOTS, 5u, ME_GUARD, &info);
    if (st == ME_OK) st = me_predict(&s, xq, 5u, pred);
    if (st != ME_OK) {
        printf("error: %s\n", me_strerror(st));
        return 1;
    }
    printf("adapted on %u points: %u of %u steps kept, support loss %.4f -> %.4f\n", SHOTS,
           (unsigned)info.steps_kept, (unsigned)info.steps_run, (double)info.loss_before, (double)info.loss_after);
    for (unsigned i = 0; i < 5u; i++)
        printf("x = %7.4f  predicted %7.4f  true %7.4f\n", (double)xq[i], (double)pred[i], (double)yq[i]);

    /* save, "reboot" (back to theta0), restore the newest valid slot */
    unsigned slot = 0;
    uint32_t seq = 0;
    st = slot_save(&store, &s);
    if (st == ME_OK) st = me_reset(&s);
    if (st == ME_OK) st = slot_load(&store, &s, &slot, &seq);
    if (st == ME_OK) st = me_predict(&s, xq, 5u, again);
    if (st != ME_OK) {
        printf("state: %s\n", me_strerror(st));
        return 1;
    }
    printf("state saved to slot %c (sequence %u), restored after a reboot: predictions %s\n", slot ? 'B' : 'A',
           (unsigned)seq, memcmp(pred, again, sizeof pred) == 0 ? "identical" : "DIFFERENT");

    /* the journal record: unique id from the device's id and the slot sequence (a counter that survives
     * reboots); the time from the device's clock (a fixed one here) */
    static char record_id[40], line[1024];
    size_t len = 0;
    snprintf(record_id, sizeof record_id, "mcu-0001-%08lx", (unsigned long)seq);
    me_journal_entry entry = {0};
    entry.record_id = record_id;
    entry.unit = "SIN-A2-P05";
    entry.device_profile = "cortex-m4";
    entry.host_id = "mcu-0001";
    entry.manifest_sha256 = ME_BUNDLE_SHA256;
    entry.time = "2026-12-01T09:00:00Z";
    entry.support_x = xs;
    entry.support_y = ys;
    entry.n = SHOTS;
    entry.in_dim = 1u;
    entry.out_dim = 1u;
    entry.info = info;
    /* printed here with the losses rounded to 4 decimals like the lines above, so that the host and the Cortex-M4
     * build print the same text (their float32 losses differ in the 7th digit); a device journals them as they are */
    entry.info.loss_before = roundf(info.loss_before * 1e4f) / 1e4f;
    entry.info.loss_after = roundf(info.loss_after * 1e4f) / 1e4f;
    st = me_journal_format(&entry, line, sizeof line, &len);
    if (st != ME_OK) {
        printf("journal: %s\n", me_strerror(st));
        return 1;
    }
    printf("journal record (%u bytes): %s", (unsigned)len, line);
    return memcmp(pred, again, sizeof pred) == 0 ? 0 : 1;
}
