/* See ids.h. xoshiro256** per thread, seeded from getrandom(); the generation
 * counter makes every thread reseed after a fork. */
#include "ids.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static unsigned dds_id_generation = 1;
static __thread uint64_t rng_s[4] __attribute__((tls_model("initial-exec")));
static __thread unsigned rng_gen __attribute__((tls_model("initial-exec")));

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(void)
{
    uint64_t seed[4];
    if (getrandom(seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ ((uint64_t)getpid() << 16) ^
                     (uint64_t)(uintptr_t)&seed;
        for (int i = 0; i < 4; i++)
            seed[i] = splitmix64(&x);
    }
    memcpy(rng_s, seed, sizeof seed);
    if ((rng_s[0] | rng_s[1] | rng_s[2] | rng_s[3]) == 0)
        rng_s[0] = 1;
    rng_gen = __atomic_load_n(&dds_id_generation, __ATOMIC_RELAXED);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* One xoshiro256** step. */
static inline __attribute__((always_inline)) uint64_t rng_step(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The thread's state, reseeded first after a fork (or on first use). */
static inline __attribute__((always_inline)) uint64_t *rng_state(void)
{
    if (__builtin_expect(rng_gen != __atomic_load_n(&dds_id_generation, __ATOMIC_RELAXED), 0))
        rng_seed();
    return rng_s;
}

static uint64_t rng_next(void)
{
    return rng_step(rng_state());
}

uint64_t dds_id_span(void)
{
    uint64_t id;
    do
        id = rng_next() & 0x7fffffffffffffffULL;
    while (id == 0);
    return id;
}

/* A trace id's random low half; a 64-bit one has its MSB clear. */
static inline __attribute__((always_inline)) uint64_t trace_low(uint64_t *s, int use_128)
{
    uint64_t l;
    do
        l = use_128 ? rng_step(s) : rng_step(s) & 0x7fffffffffffffffULL;
    while (l == 0);
    return l;
}

void dds_id_trace(int use_128, uint64_t *hi, uint64_t *lo)
{
    *lo = trace_low(rng_state(), use_128);
    *hi = use_128 ? ((uint64_t)(uint32_t)time(NULL)) << 32 : 0;
}

void dds_id_root(int use_128, int64_t wall_ns, uint64_t *hi, uint64_t *lo, uint64_t *span_id)
{
    uint64_t *s = rng_state();
    *lo = trace_low(s, use_128);
    uint64_t id;
    do
        id = rng_step(s) & 0x7fffffffffffffffULL;
    while (id == 0);
    *span_id = id;
    uint64_t secs = wall_ns > 0 ? (uint64_t)wall_ns / 1000000000ULL : 0;
    *hi = use_128 ? ((uint64_t)(uint32_t)secs) << 32 : 0;
}

void dds_id_uuid4(char out[37])
{
    uint64_t a = rng_next(), b = rng_next();
    unsigned char u[16];
    memcpy(u, &a, 8);
    memcpy(u + 8, &b, 8);
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

void dds_id_reseed(void)
{
    __atomic_add_fetch(&dds_id_generation, 1, __ATOMIC_RELAXED);
}

void dds_hex16(uint64_t v, char out[17])
{
#ifdef __SSE2__
    /* The 16 nibbles, most significant first, each to '0'-'9'/'a'-'f' in
     * one go (three of these per injected request). */
    __m128i x = _mm_cvtsi64_si128((long long)__builtin_bswap64(v));
    const __m128i low4 = _mm_set1_epi8(0x0f);
    __m128i n = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), low4), _mm_and_si128(x, low4));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
    _mm_storeu_si128((__m128i *)(void *)out, _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8('0')), letter));
    out[16] = '\0';
#else
    static const char pairs[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int i = 14; i >= 0; i -= 2, v >>= 8)
        memcpy(out + i, pairs + 2 * (v & 0xff), 2);
    out[16] = '\0';
#endif
}
