/* me_journal_format: the exact line for a known entry (golden text), escaping, nulls, the size query when the
 * buffer is too small (nothing half-written), and the refusals with their codes. */
#include <math.h>
#include <string.h>

#include "check.h"

static const float xs[] = {20.5f, 101.325f, 0.1f, -3.0f};
static const float ys[] = {1.25f, 1e-7f};

static me_journal_entry entry(void)
{
    me_journal_entry e;
    memset(&e, 0, sizeof e);
    e.record_id = "00112233445566778899aabbccddeeff";
    e.unit = "SN-0042";
    e.device_profile = "cortex-m4";
    e.host_id = "mcu-7";
    e.manifest_sha256 = "ab01";
    e.time = "2026-12-01T09:42:01Z";
    e.support_x = xs;
    e.support_y = ys;
    e.n = 2u;
    e.in_dim = 2u;
    e.out_dim = 1u;
    e.info.steps_run = 5u;
    e.info.steps_kept = 4u;
    e.info.loss_before = 0.5f;
    e.info.loss_after = NAN;
    return e;
}

static const char golden[] =
    "{\"schema\":\"metaedge.journal/1\",\"kind\":\"adaptation\",\"record_id\":\"00112233445566778899aabbccddeeff\","
    "\"unit\":\"SN-0042\",\"device\":{\"profile\":\"cortex-m4\",\"host_id\":\"mcu-7\"},\"bundle\":"
    "{\"manifest_sha256\":\"ab01\",\"signing_key_id\":null},\"time\":\"2026-12-01T09:42:01Z\","
    "\"support_x\":[[20.5,101.324997],[0.100000001,-3]],\"support_y\":[[1.25],[1.00000001e-07]],"
    "\"steps_run\":5,\"steps_kept\":4,\"loss_before\":0.5,\"loss_after\":null,\"state_sha256\":null,"
    "\"start_state_sha256\":null}\n";

int main(void)
{
    char buf[1024];
    size_t len = 0;
    me_journal_entry e = entry();

    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_OK);
    CHECK(len == strlen(golden) && strcmp(buf, golden) == 0);
    if (strcmp(buf, golden) != 0) fprintf(stderr, "got:  %s\nwant: %s", buf, golden);

    /* too small, by one (no room for the NUL) and by a lot: the needed size, and no partial line left */
    const size_t need = len;
    for (size_t cap = 0; cap <= need; cap += (cap + 1u < need ? 37u : 1u)) {
        memset(buf, 'x', sizeof buf);
        len = 0;
        CHECK_STATUS(me_journal_format(&e, buf, cap, &len), ME_ERR_ARGUMENT);
        CHECK(len == need);
        CHECK(cap == 0u ? buf[0] == 'x' : buf[0] == '\0');
    }
    CHECK_STATUS(me_journal_format(&e, buf, need + 1u, &len), ME_OK);
    CHECK(len == need && buf[need] == '\0');

    /* escaping: quotes, backslashes, control bytes; optional fields present */
    e.unit = "a\"b\\c\n\x01";
    e.signing_key_id = "k1";
    e.state_sha256 = "s1";
    e.start_state_sha256 = "s0";
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_OK);
    CHECK(strstr(buf, "\"unit\":\"a\\\"b\\\\c\\u000a\\u0001\"") != NULL);
    CHECK(strstr(buf, "\"signing_key_id\":\"k1\"") != NULL);
    CHECK(strstr(buf, "\"state_sha256\":\"s1\",\"start_state_sha256\":\"s0\"}\n") != NULL);

    /* refusals */
    e = entry();
    CHECK_STATUS(me_journal_format(NULL, buf, sizeof buf, &len), ME_ERR_NULL);
    CHECK_STATUS(me_journal_format(&e, NULL, sizeof buf, &len), ME_ERR_NULL);
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, NULL), ME_ERR_NULL);
    e.unit = NULL;
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_NULL);
    e.unit = "";
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_ARGUMENT);
    static char long_text[600];
    memset(long_text, 'a', sizeof long_text - 1u);
    e = entry();
    e.host_id = long_text;
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_ARGUMENT);
    e = entry();
    e.n = 0u;
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_ARGUMENT);
    e = entry();
    e.info.steps_kept = 6u;
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_ARGUMENT);
    e = entry();
    const float bad[] = {1.f, INFINITY, 0.f, 0.f};
    e.support_x = bad;
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_NONFINITE);
    e = entry();
    e.support_y = NULL;
    CHECK_STATUS(me_journal_format(&e, buf, sizeof buf, &len), ME_ERR_NULL);
    return check_report("test_journal");
}
