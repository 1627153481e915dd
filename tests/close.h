/* The tests' one rule for "equal to float rounding": |got - want| <= tol (1 + |want|), relative
 * for large values and absolute near zero. Batched and single calls may round differently
 * (OpenBLAS picks kernels by row count on some CPUs), so such checks compare with this. */
#ifndef MN_TEST_CLOSE_H
#define MN_TEST_CLOSE_H

#include <math.h>

static inline int close_to(double got, double want, double tol) {
    return fabs(got - want) <= tol * (1.0 + fabs(want));
}

#endif
