/* See ids.h. xoshiro256** per thread, seeded from getrandom(); the generation
 * counter makes every thread reseed after a fork. */
#include "ids.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static unsigned dds_id_generation = 1;
static __thread uint64_t rng_s[4];
static __thread unsigned rng_gen;

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

static uint64_t rng_next(void)
{
    if (rng_gen != __atomic_load_n(&dds_id_generation, __ATOMIC_RELAXED))
        rng_seed();
    uint64_t *s = rng_s;
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

uint64_t dds_id_span(void)
{
    uint64_t id;
    do
        id = rng_next() & 0x7fffffffffffffffULL;
    while (id == 0);
    return id;
}

void dds_id_trace(int use_128, uint64_t *hi, uint64_t *lo)
{
    if (use_128) {
        uint64_t l;
        do
            l = rng_next();
        while (l == 0);
        *lo = l;
        *hi = ((uint64_t)(uint32_t)time(NULL)) << 32;
    } else {
        *hi = 0;
        *lo = dds_id_span();
    }
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
