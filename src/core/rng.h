/* Explicit, seedable RNG (xoshiro256**): its whole state is 4 words, stored in checkpoints
 * so that a resumed run draws the same numbers. */
#ifndef MN_RNG_H
#define MN_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} mn_rng;

void mn_rng_seed(mn_rng *rng, uint64_t seed);
uint64_t mn_rng_next(mn_rng *rng);
/* uniform in [0, 1) with 24 random bits */
float mn_rng_uniform(mn_rng *rng);
/* uniform integer in [0, n), n > 0, without modulo bias */
uint64_t mn_rng_below(mn_rng *rng, uint64_t n);
/* standard normal (Box-Muller) */
float mn_rng_normal(mn_rng *rng);
/* Fisher-Yates shuffle of n int32 values */
void mn_rng_shuffle_i32(mn_rng *rng, int32_t *values, int64_t n);

#endif
