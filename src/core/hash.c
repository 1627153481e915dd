/* XXH64 (core/hash.h): the streaming form; mn_xxh64 is init, update, digest. */
#include "core/hash.h"

#include <string.h>

#define XP1 0x9E3779B185EBCA87ull
#define XP2 0xC2B2AE3D27D4EB4Full
#define XP3 0x165667B19E3779F9ull
#define XP4 0x85EBCA77C2B2AE63ull
#define XP5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xround(uint64_t acc, uint64_t in) {
    acc += in * XP2;
    return rotl64(acc, 31) * XP1;
}
static inline uint64_t xmerge(uint64_t h, uint64_t v) {
    h ^= xround(0, v);
    return h * XP1 + XP4;
}

void mn_xxh64_init(mn_xxh64_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->v[0] = seed + XP1 + XP2;
    s->v[1] = seed + XP2;
    s->v[2] = seed;
    s->v[3] = seed - XP1;
}

static void xxh_stripe(uint64_t v[4], const uint8_t *p) {
    v[0] = xround(v[0], rd64(p));
    v[1] = xround(v[1], rd64(p + 8));
    v[2] = xround(v[2], rd64(p + 16));
    v[3] = xround(v[3], rd64(p + 24));
}

void mn_xxh64_update(mn_xxh64_state *s, const void *data, size_t len) {
    const uint8_t *p = data;
    s->total += len;
    if (s->buf_len + len < 32) {
        if (len)
            memcpy(s->buf + s->buf_len, p, len);
        s->buf_len += len;
        return;
    }
    if (s->buf_len) {
        size_t fill = 32 - s->buf_len;
        memcpy(s->buf + s->buf_len, p, fill);
        xxh_stripe(s->v, s->buf);
        p += fill;
        len -= fill;
        s->buf_len = 0;
    }
    while (len >= 32) {
        xxh_stripe(s->v, p);
        p += 32;
        len -= 32;
    }
    if (len)
        memcpy(s->buf, p, len);
    s->buf_len = len;
}

uint64_t mn_xxh64_digest(const mn_xxh64_state *s) {
    uint64_t h;
    if (s->total >= 32) {
        h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) + rotl64(s->v[3], 18);
        for (int i = 0; i < 4; i++)
            h = xmerge(h, s->v[i]);
    } else {
        h = s->seed + XP5;
    }
    h += s->total;
    const uint8_t *p = s->buf;
    size_t n = s->buf_len;
    while (n >= 8) {
        h ^= xround(0, rd64(p));
        h = rotl64(h, 27) * XP1 + XP4;
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        h ^= (uint64_t)rd32(p) * XP1;
        h = rotl64(h, 23) * XP2 + XP3;
        p += 4;
        n -= 4;
    }
    while (n--) {
        h ^= (*p++) * XP5;
        h = rotl64(h, 11) * XP1;
    }
    h ^= h >> 33;
    h *= XP2;
    h ^= h >> 29;
    h *= XP3;
    h ^= h >> 32;
    return h;
}

uint64_t mn_xxh64(const void *data, size_t len, uint64_t seed) {
    mn_xxh64_state s;
    mn_xxh64_init(&s, seed);
    mn_xxh64_update(&s, data, len);
    return mn_xxh64_digest(&s);
}
