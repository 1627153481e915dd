/* XXH64, the 64-bit content checksum of shards, session-store journals, model fingerprints and
 * tokenizer hashes: one-shot and streaming. Bit-identical to the reference xxHash XXH64. */
#ifndef MN_HASH_H
#define MN_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t v[4], total;
    uint8_t buf[32];
    size_t buf_len;
    uint64_t seed;
} mn_xxh64_state;
void mn_xxh64_init(mn_xxh64_state *s, uint64_t seed);
void mn_xxh64_update(mn_xxh64_state *s, const void *data, size_t len);
uint64_t mn_xxh64_digest(const mn_xxh64_state *s);
uint64_t mn_xxh64(const void *data, size_t len, uint64_t seed);

#endif
