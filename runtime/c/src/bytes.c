/* Little-endian reads and writes of byte buffers of any alignment, and a finiteness check. */
#include <math.h>
#include <string.h>

#include "internal.h"

uint16_t me_read_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

uint32_t me_read_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void me_read_f32(float *dst, const unsigned char *src, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        uint32_t bits = me_read_u32(src + 4u * i);
        memcpy(&dst[i], &bits, sizeof bits);
    }
}

int me_all_finite(const float *v, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

void me_write_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v & 0xFFu);
    p[1] = (unsigned char)(v >> 8);
}

void me_write_u32(unsigned char *p, uint32_t v)
{
    for (unsigned i = 0; i < 4u; i++) p[i] = (unsigned char)(v >> (8u * i));
}

void me_write_f32(unsigned char *dst, const float *src, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        me_write_u32(dst + 4u * i, bits);
    }
}
