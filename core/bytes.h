/*
 * bytes.h — a copy of a short byte string without a call to memcpy.
 */
#ifndef DDS_BYTES_H
#define DDS_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* d[0..n) = s[0..n): up to 32 bytes as two overlapping moves of a fixed
 * size (tag values are mostly short: a method, a status, a host), longer
 * ones by memcpy. Reads nothing outside s[0..n). Without a call, a caller
 * that copies short strings needs no stack frame (span tags, the encoder's
 * strings and pre-encoded blocks). */
static inline __attribute__((always_inline)) void dds_copy_bytes(char *d, const char *s, size_t n)
{
    if (n > 32) {
        memcpy(d, s, n);
    } else if (n >= 16) {
        memcpy(d, s, 16);
        memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n > 0) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

#endif
