#include "core/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void mn_rng_seed(mn_rng *rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mn_rng_next(mn_rng *rng) {
    uint64_t *s = rng->s;
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

float mn_rng_uniform(mn_rng *rng) { return (float)(mn_rng_next(rng) >> 40) * 0x1.0p-24f; }

uint64_t mn_rng_below(mn_rng *rng, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = mn_rng_next(rng);
    } while (x >= limit);
    return x % n;
}

float mn_rng_normal(mn_rng *rng) {
    /* 1 - u keeps the log argument in (0, 1] */
    double u1 = 1.0 - (double)(mn_rng_next(rng) >> 11) * 0x1.0p-53;
    double u2 = (double)(mn_rng_next(rng) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void mn_rng_shuffle_i32(mn_rng *rng, int32_t *values, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mn_rng_below(rng, (uint64_t)i + 1);
        int32_t tmp = values[i];
        values[i] = values[j];
        values[j] = tmp;
    }
}
