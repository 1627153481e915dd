/* Helpers for the CPU ops' elementwise kernels (internal to src/cpu).
 *
 * The library is built for the baseline x86-64 (SSE2) so that one binary runs anywhere; the hot
 * row kernels are compiled twice with MN_VEC_CLONES (AVX2+FMA and baseline) and the loader picks
 * one per machine (GCC ifunc). A given machine always runs the same clone, so results stay
 * deterministic for a fixed thread count. */
#ifndef MN_CPU_VEC_H
#define MN_CPU_VEC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MN_VEC_CLONES \
    __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MN_VEC_CLONES
#endif

/* 8-lane float vectors (GCC vector extensions): AVX registers in the x86-64-v3 clone, pairs of
 * SSE registers in the baseline one. Plain C loops around an exp do not vectorise here: with
 * -ftrapping-math (the default) GCC will not if-convert the range clamps once arithmetic
 * follows them, so the kernels that need exp are written on these vectors explicitly. */
/* Vectors are only returned by always-inline helpers (no ABI is crossed); GCC's -Wpsabi warning
 * about that is silenced here, its note about vector *arguments* cannot be, so helpers that
 * take a vector are macros. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float mn_v8f __attribute__((vector_size(32)));
typedef int32_t mn_v8i __attribute__((vector_size(32)));
typedef uint32_t mn_v8u __attribute__((vector_size(32)));

#define MN_ALWAYS_INLINE static inline __attribute__((always_inline))

MN_ALWAYS_INLINE mn_v8f mn_v8f_load(const float *p) {
    mn_v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

#define mn_v8f_store(p, v)                                                                         \
    do {                                                                                           \
        mn_v8f s_ = (v);                                                                           \
        memcpy((p), &s_, sizeof s_);                                                               \
    } while (0)

MN_ALWAYS_INLINE mn_v8f mn_v8f_set1(float x) { return (mn_v8f){x, x, x, x, x, x, x, x}; }

/* Lane-wise m ? a : b, m from a vector comparison (all ones or all zeros per lane); horizontal
 * sum and max in a fixed lane order (deterministic). */
#define mn_v8f_select(m, a, b) ((mn_v8f)(((m) & (mn_v8i)(a)) | (~(m) & (mn_v8i)(b))))
#define mn_v8f_sum(v)                                                                              \
    ({                                                                                             \
        mn_v8f v_ = (v);                                                                           \
        ((v_[0] + v_[4]) + (v_[1] + v_[5])) + ((v_[2] + v_[6]) + (v_[3] + v_[7]));                 \
    })
#define mn_v8f_max(v)                                                                              \
    ({                                                                                             \
        mn_v8f v_ = (v);                                                                           \
        float m_ = v_[0];                                                                          \
        for (int i_ = 1; i_ < 8; i_++)                                                             \
            m_ = v_[i_] > m_ ? v_[i_] : m_;                                                        \
        m_;                                                                                        \
    })

/* max of x[0..n) (-inf for n = 0): 8 lanes, then the tail, in a fixed order (deterministic).
 * The first pass of every stable softmax. Four running maxima, merged at the end: with one, each
 * step waited for the previous compare and select (the loop ran at their latency, a third of the
 * cross-entropy's time); a max is exact, so the grouping does not change it. */
#define mn_v8f_max2(a, b) mn_v8f_select((b) > (a), (b), (a))
MN_ALWAYS_INLINE float mn_max_row(const float *x, int n) {
    int i = 0;
    mn_v8f vmax = mn_v8f_set1(-INFINITY), vmax1 = vmax, vmax2 = vmax, vmax3 = vmax;
    for (; i + 32 <= n; i += 32) {
        vmax = mn_v8f_max2(vmax, mn_v8f_load(x + i));
        vmax1 = mn_v8f_max2(vmax1, mn_v8f_load(x + i + 8));
        vmax2 = mn_v8f_max2(vmax2, mn_v8f_load(x + i + 16));
        vmax3 = mn_v8f_max2(vmax3, mn_v8f_load(x + i + 24));
    }
    for (; i + 8 <= n; i += 8)
        vmax = mn_v8f_max2(vmax, mn_v8f_load(x + i));
    vmax = mn_v8f_max2(mn_v8f_max2(vmax, vmax1), mn_v8f_max2(vmax2, vmax3));
    float m = mn_v8f_max(vmax);
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* exp without libm's scalar call: Cephes' degree-6 polynomial on x - n ln2, n = rint(x log2e),
 * |error| <= 2 ulp for x in [-87.3, 88.3]. Below about -87.7 it returns exactly 0 (2^n flushes
 * to 0; the true value is < 1e-38), above about 88.38 +inf (2^128; true value > 2.4e38: the
 * ops only feed it x <= 0 or an e that ends up in 1 / (1 + e)). NaN stays NaN. The scalar
 * mn_expf does the same operations in the same order, so tails give the same bits as lanes.
 * t = x log2e + 1.5 * 2^23 holds n in its low mantissa bits (|n| <= 128 after the clamps), so
 * 2^n's exponent field is t's bits - bits(1.5 * 2^23) + 127, shifted: no float-to-int convert. */
#define MN_EXP_BODY(T, xc, t, n, r, p)                                                            \
    T t = xc * 1.44269504088896341f + 12582912.0f;                                              \
    T n = t - 12582912.0f; /* rint(xc log2e): 1.5 * 2^23 rounds */                              \
    T r = xc - n * 0.693359375f;                                                                \
    r = r - n * -2.12194440e-4f;                                                                \
    T p = r * 1.9875691500e-4f + 1.3981999507e-3f;                                              \
    p = p * r + 8.3334519073e-3f;                                                               \
    p = p * r + 4.1665795894e-2f;                                                               \
    p = p * r + 1.6666665459e-1f;                                                               \
    p = p * r + 5.0000001201e-1f;                                                               \
    p = p * r * r + r + 1.0f;
#define MN_EXP_BIAS (0x4B400000 - 127) /* bits(1.5 * 2^23) - the exponent bias */

/* exp of lanes at most 89 (or NaN): the lower clamp, the body, 2^n through the exponent bits
 * (n = -127 gives +0, n = 128 gives +inf). The ops call it for x <= 0 (x - max of a softmax
 * row, x - its log-sum-exp), where mn_exp8's upper clamp is the identity (NaN passes either
 * way): the same bits without that compare and select. */
#define mn_exp8_nonpos(x_in)                                                                       \
    ({                                                                                             \
        mn_v8f xl_ = (x_in);                                                                       \
        mn_v8f xc = mn_v8f_select(xl_ < -88.0f, mn_v8f_set1(-88.0f), xl_);                         \
        MN_EXP_BODY(mn_v8f, xc, t, n, r, p)                                                        \
        p * (mn_v8f)(((mn_v8u)t - (uint32_t)MN_EXP_BIAS) << 23);                                   \
    })
#define mn_exp8(x_in)                                                                              \
    ({                                                                                             \
        mn_v8f x_ = (x_in);                                                                        \
        mn_exp8_nonpos(mn_v8f_select(x_ > 89.0f, mn_v8f_set1(89.0f), x_));                         \
    })

MN_ALWAYS_INLINE float mn_expf(float x) {
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -88.0f ? -88.0f : xc;
    MN_EXP_BODY(float, xc, t, n, r, p)
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int32_t)(((uint32_t)bits - (uint32_t)MN_EXP_BIAS) << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
