/* One adaptation as a JSON Lines journal record (docs/journal.md), formatted into a caller buffer: firmware emits
 * it over a serial line or appends it to a file, and `metaedge kb ingest` reads it like the Python runtime's
 * records (runtime/journal_records.py: the same fields, in the same order).
 * The writer counts every byte even past the buffer's end, so one pass gives both the line and, when it does not
 * fit, the size the caller needs. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_TEXT 512u      /* longest string field runtime/journal_records.py accepts */
#define MAX_ROWS 10000u    /* most support rows of one record (journal_records.MAX_ROWS) */

typedef struct writer {
    char *buf;
    size_t cap, len; /* len counts everything written or that would have been */
} writer;

static void put(writer *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, w->len++)
        if (w->len < w->cap) w->buf[w->len] = s[i];
}

static void put_str(writer *w, const char *s) { put(w, s, strlen(s)); }

/* a JSON string: quotes, backslashes and control bytes escaped; other bytes (UTF-8) as they are */
static void put_json_string(writer *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(w, "\"", 1u);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            const char esc[2] = {'\\', (char)*p};
            put(w, esc, 2u);
        } else if (*p < 0x20u) {
            const char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15u]};
            put(w, esc, 6u);
        } else {
            put(w, (const char *)p, 1u);
        }
    }
    put(w, "\"", 1u);
}

static void put_field(writer *w, const char *name, const char *value)
{
    put(w, ",\"", 2u);
    put_str(w, name);
    put(w, "\":", 2u);
    if (value) put_json_string(w, value);
    else put_str(w, "null");
}

static void put_float(writer *w, float v)
{
    char tmp[32];
    if (!isfinite(v)) { /* JSON has no NaN: a loss the device could not compute */
        put_str(w, "null");
        return;
    }
    const int n = snprintf(tmp, sizeof tmp, "%.9g", (double)v);
    put(w, tmp, n > 0 ? (size_t)n : 0u);
}

static void put_u32(writer *w, uint32_t v)
{
    char tmp[12];
    const int n = snprintf(tmp, sizeof tmp, "%lu", (unsigned long)v);
    put(w, tmp, n > 0 ? (size_t)n : 0u);
}

/* [[r0c0,r0c1,...],[r1c0,...],...] of rows x cols floats */
static void put_matrix(writer *w, const char *name, const float *v, uint32_t rows, uint32_t cols)
{
    put(w, ",\"", 2u);
    put_str(w, name);
    put(w, "\":[", 3u);
    for (uint32_t r = 0; r < rows; r++) {
        put(w, r ? ",[" : "[", r ? 2u : 1u);
        for (uint32_t c = 0; c < cols; c++) {
            if (c) put(w, ",", 1u);
            put_float(w, v[(size_t)r * cols + c]);
        }
        put(w, "]", 1u);
    }
    put(w, "]", 1u);
}

/* ME_OK for a required string of 1..MAX_TEXT bytes, or an optional one that is NULL */
static me_status check_text(const char *s, int required)
{
    if (!s) return required ? ME_ERR_NULL : ME_OK;
    const size_t n = strlen(s);
    return n >= 1u && n <= MAX_TEXT ? ME_OK : ME_ERR_ARGUMENT;
}

static me_status check_entry(const me_journal_entry *e)
{
    const char *required[] = {e->record_id, e->unit, e->host_id, e->manifest_sha256, e->time};
    const char *optional[] = {e->device_profile, e->signing_key_id, e->state_sha256, e->start_state_sha256};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        const me_status st = check_text(required[i], 1);
        if (st != ME_OK) return st;
    }
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++) {
        const me_status st = check_text(optional[i], 0);
        if (st != ME_OK) return st;
    }
    if (!e->support_x || !e->support_y) return ME_ERR_NULL;
    if (e->n == 0u || e->n > MAX_ROWS || e->in_dim == 0u || e->out_dim == 0u) return ME_ERR_ARGUMENT;
    if (e->info.steps_kept > e->info.steps_run) return ME_ERR_ARGUMENT;
    if (!me_all_finite(e->support_x, (size_t)e->n * e->in_dim) || !me_all_finite(e->support_y,
                                                                                  (size_t)e->n * e->out_dim))
        return ME_ERR_NONFINITE;
    return ME_OK;
}

me_status me_journal_format(const me_journal_entry *entry, char *buf, size_t cap, size_t *len)
{
    if (!entry || !buf || !len) return ME_ERR_NULL;
    const me_status st = check_entry(entry);
    if (st != ME_OK) return st;
    writer w = {buf, cap, 0u};
    put_str(&w, "{\"schema\":\"metaedge.journal/1\",\"kind\":\"adaptation\"");
    put_field(&w, "record_id", entry->record_id);
    put_field(&w, "unit", entry->unit);
    put_str(&w, ",\"device\":{\"profile\":");
    if (entry->device_profile) put_json_string(&w, entry->device_profile);
    else put_str(&w, "null");
    put_field(&w, "host_id", entry->host_id);
    put_str(&w, "},\"bundle\":{\"manifest_sha256\":");
    put_json_string(&w, entry->manifest_sha256);
    put_field(&w, "signing_key_id", entry->signing_key_id);
    put_str(&w, "}");
    put_field(&w, "time", entry->time);
    put_matrix(&w, "support_x", entry->support_x, entry->n, entry->in_dim);
    put_matrix(&w, "support_y", entry->support_y, entry->n, entry->out_dim);
    put_str(&w, ",\"steps_run\":");
    put_u32(&w, entry->info.steps_run);
    put_str(&w, ",\"steps_kept\":");
    put_u32(&w, entry->info.steps_kept);
    put_str(&w, ",\"loss_before\":");
    put_float(&w, entry->info.loss_before);
    put_str(&w, ",\"loss_after\":");
    put_float(&w, entry->info.loss_after);
    put_field(&w, "state_sha256", entry->state_sha256);
    put_field(&w, "start_state_sha256", entry->start_state_sha256);
    put_str(&w, "}\n");
    *len = w.len;
    if (w.len >= cap) { /* no room for the NUL as well: nothing half-written is left looking like a line */
        if (cap) buf[0] = '\0';
        return ME_ERR_ARGUMENT;
    }
    buf[w.len] = '\0';
    return ME_OK;
}
